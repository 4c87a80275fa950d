//! Workload attestation from the socket peer: the kernel's credentials of
//! the connecting process (`SO_PEERCRED`: uid, gid, pid, read by tokio),
//! and from the pid its executable (`/proc/<pid>/exe`) and that file's
//! SHA-256. Nothing the workload says about itself is used.

// The error is tonic's `Status`, which the Workload API's calls return.
#![allow(clippy::result_large_err)]

use std::collections::HashMap;
use std::os::unix::fs::MetadataExt as _;
use std::sync::Mutex;

use sha2::{Digest as _, Sha256};
use tonic::Status;
use vern_pki::AttestedWorkload;

/// Hashes of executables already read, by device, inode, size and
/// modification time, so a busy workload's binary is hashed once.
#[derive(Default)]
pub(crate) struct HashCache(Mutex<HashMap<FileKey, String>>);

/// Entries kept at most before the cache starts over.
const MAX_CACHED: usize = 1024;

/// The attested properties of the peer of a request.
pub(crate) async fn peer<T>(
    req: &tonic::Request<T>,
    cache: &HashCache,
    hash: bool,
) -> Result<AttestedWorkload, Status> {
    let cred = req
        .extensions()
        .get::<super::authority::PeerCred>()
        .and_then(|i| i.0)
        .ok_or_else(|| Status::internal("the peer's credentials are unavailable"))?;
    let mut w = AttestedWorkload {
        uid: cred.uid(),
        gid: cred.gid(),
        path: None,
        sha256: None,
    };
    // Without a pid (another kernel) only the uid and gid can be matched.
    let Some(pid) = cred.pid().filter(|p| *p > 0) else {
        return Ok(w);
    };
    let exe = format!("/proc/{pid}/exe");
    w.path = std::fs::read_link(&exe)
        .ok()
        .and_then(|p| p.to_str().map(str::to_owned));
    if hash {
        let key = cache_key(&exe);
        let cached = key.and_then(|k| cache.get(&k));
        w.sha256 = match cached {
            Some(digest) => Some(digest),
            None => {
                let digest = tokio::task::spawn_blocking(move || hash_file(&exe))
                    .await
                    .ok()
                    .flatten();
                if let (Some(k), Some(d)) = (key, &digest) {
                    cache.put(k, d.clone());
                }
                digest
            }
        };
    }
    Ok(w)
}

type FileKey = (u64, u64, u64, i64, i64);

impl HashCache {
    fn get(&self, key: &FileKey) -> Option<String> {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(key)
            .cloned()
    }

    fn put(&self, key: FileKey, digest: String) {
        let mut held = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if held.len() >= MAX_CACHED {
            held.clear();
        }
        held.insert(key, digest);
    }
}

fn cache_key(path: &str) -> Option<FileKey> {
    let m = std::fs::metadata(path).ok()?;
    Some((m.dev(), m.ino(), m.size(), m.mtime(), m.mtime_nsec()))
}

/// The SHA-256 of the file behind `/proc/<pid>/exe` (the executable the
/// process runs, even if it was since replaced on disk).
fn hash_file(path: &str) -> Option<String> {
    let mut file = std::fs::File::open(path).ok()?;
    let mut hasher = Sha256::new();
    std::io::copy(&mut file, &mut hasher).ok()?;
    Some(hex::encode(hasher.finalize()))
}
