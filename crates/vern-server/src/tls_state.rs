//! A TLS identity from Vern's CA kept on disk, outside the barrier, so
//! that it can be presented while Vern is sealed (the server's
//! keeper-client identity) or after a restart (a keeper's serving
//! certificate): `identity.pem` (chain, leaf first), `identity.key`
//! (PKCS#8, mode 0600) and `anchors.pem` (the CA roots trusted beside the
//! operator's files). Every file is replaced through a temporary file and
//! a rename, so a crash leaves the old one or the new one, never half.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::PrivateKeyDer;
use zeroize::Zeroizing;

const IDENTITY: &str = "identity.pem";
const KEY: &str = "identity.key";
const ANCHORS: &str = "anchors.pem";

/// A certificate chain and its key.
pub(crate) struct Identity {
    /// DER certificates, leaf first.
    pub(crate) chain: Vec<Vec<u8>>,
    /// PKCS#8 DER.
    pub(crate) key: Zeroizing<Vec<u8>>,
    /// The leaf's `notBefore` and `notAfter` (Unix seconds).
    pub(crate) not_before: u64,
    pub(crate) not_after: u64,
}

impl Identity {
    /// The identity `chain` + `key`, its validity read from the leaf.
    pub(crate) fn new(chain: Vec<Vec<u8>>, key: Zeroizing<Vec<u8>>) -> Option<Self> {
        let (not_before, not_after) = vern_pki::validity(chain.first()?)?;
        Some(Self {
            chain,
            key,
            not_before,
            not_after,
        })
    }

    /// When to renew it: half its lifetime.
    pub(crate) fn renew_at(&self) -> u64 {
        self.not_before
            .saturating_add(self.not_after.saturating_sub(self.not_before) / 2)
    }
}

/// The directory's contents.
pub(crate) struct Stored {
    /// The identity, `None` when there is none or it does not read back.
    pub(crate) identity: Option<Identity>,
    /// The CA roots (DER).
    pub(crate) anchors: Vec<Vec<u8>>,
}

/// Reads what `dir` holds; missing files are an empty state, unreadable
/// ones an error naming the file.
pub(crate) fn load(dir: &Path) -> Result<Stored, String> {
    let read = |name: &str| -> Result<Option<Zeroizing<String>>, String> {
        match std::fs::read_to_string(dir.join(name)) {
            Ok(s) => Ok(Some(Zeroizing::new(s))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(format!("cannot read {}: {e}", dir.join(name).display())),
        }
    };
    let bad = |name: &str, e: String| format!("{}: {e}", dir.join(name).display());
    let anchors = match read(ANCHORS)? {
        Some(pem) => vern_pki::certs_from_pem(&pem).map_err(|e| bad(ANCHORS, e))?,
        None => Vec::new(),
    };
    let identity = match (read(IDENTITY)?, read(KEY)?) {
        (Some(chain), Some(key)) => {
            let chain = vern_pki::certs_from_pem(&chain).map_err(|e| bad(IDENTITY, e))?;
            let key = match PrivateKeyDer::from_pem_slice(key.as_bytes()) {
                Ok(PrivateKeyDer::Pkcs8(k)) => Zeroizing::new(k.secret_pkcs8_der().to_vec()),
                _ => return Err(bad(KEY, "not a PKCS#8 PEM key".to_owned())),
            };
            let fits = chain
                .first()
                .is_some_and(|leaf| vern_pki::certifies_key(leaf, &key));
            if !fits {
                return Err(bad(
                    IDENTITY,
                    "does not certify the key beside it".to_owned(),
                ));
            }
            Identity::new(chain, key)
        }
        _ => None,
    };
    Ok(Stored { identity, anchors })
}

/// Creates `dir` (mode 0700) when missing.
pub(crate) fn ensure_dir(dir: &Path) -> Result<(), String> {
    use std::os::unix::fs::DirBuilderExt as _;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| format!("cannot create {}: {e}", dir.display()))
}

/// Stores `identity` (key first, so a certificate on disk always has its
/// key beside it when both were written).
pub(crate) fn save_identity(dir: &Path, identity: &Identity) -> Result<(), String> {
    ensure_dir(dir)?;
    let key = Zeroizing::new(pem("PRIVATE KEY", &[identity.key.as_slice()]));
    replace(dir, KEY, key.as_bytes(), 0o600)?;
    let chain: Vec<&[u8]> = identity.chain.iter().map(Vec::as_slice).collect();
    replace(dir, IDENTITY, pem("CERTIFICATE", &chain).as_bytes(), 0o600)
}

/// Stores the CA roots.
pub(crate) fn save_anchors(dir: &Path, anchors: &[Vec<u8>]) -> Result<(), String> {
    ensure_dir(dir)?;
    let ders: Vec<&[u8]> = anchors.iter().map(Vec::as_slice).collect();
    replace(dir, ANCHORS, pem("CERTIFICATE", &ders).as_bytes(), 0o600)
}

/// Writes `name` in `dir` through a temporary file created with `mode`,
/// flushed to disk, then renamed over the old one.
fn replace(dir: &Path, name: &str, data: &[u8], mode: u32) -> Result<(), String> {
    use std::os::unix::fs::OpenOptionsExt as _;
    let tmp: PathBuf = dir.join(format!(".{name}.tmp"));
    let _ = std::fs::remove_file(&tmp);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&tmp)
        .map_err(|e| format!("cannot create {}: {e}", tmp.display()))?;
    f.write_all(data)
        .and_then(|()| f.sync_all())
        .map_err(|e| format!("cannot write {}: {e}", tmp.display()))?;
    std::fs::rename(&tmp, dir.join(name))
        .map_err(|e| format!("cannot rename {} into place: {e}", tmp.display()))
}

/// PEM blocks of `label` for `ders`.
pub(crate) fn pem(label: &str, ders: &[&[u8]]) -> String {
    let mut out = String::new();
    for der in ders {
        out.push_str(&format!("-----BEGIN {label}-----\n"));
        let b64 = B64.encode(der);
        let mut rest = b64.as_str();
        while !rest.is_empty() {
            let (line, tail) = rest.split_at(rest.len().min(64));
            out.push_str(line);
            out.push('\n');
            rest = tail;
        }
        out.push_str(&format!("-----END {label}-----\n"));
    }
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn an_identity_reads_back_and_its_key_is_private() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let sub = dir.path().join("state");
        assert!(load(&sub).unwrap().identity.is_none());
        let (_, key) = vern_pki::keeper_csr().unwrap();
        let cert = self_signed(&key);
        let identity = Identity::new(vec![cert], key).unwrap();
        save_identity(&sub, &identity).unwrap();
        save_anchors(&sub, &identity.chain).unwrap();
        let back = load(&sub).unwrap();
        let got = back.identity.unwrap();
        assert_eq!(got.chain, identity.chain);
        assert_eq!(*got.key, *identity.key);
        assert_eq!(back.anchors, identity.chain);
        let mode = std::fs::metadata(sub.join(KEY))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        std::fs::write(sub.join(IDENTITY), "junk").unwrap();
        assert!(load(&sub).is_err());
    }

    /// A self-signed certificate for the PKCS#8 `key`.
    fn self_signed(key: &[u8]) -> Vec<u8> {
        let kp = rcgen::KeyPair::try_from(key).unwrap();
        rcgen::CertificateParams::new(vec!["keeper.test".to_owned()])
            .unwrap()
            .self_signed(&kp)
            .unwrap()
            .der()
            .to_vec()
    }
}
