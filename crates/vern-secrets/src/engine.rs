//! The engine's operations.

use std::collections::BTreeMap;
use std::fmt;
use std::hash::{BuildHasher, RandomState};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use vern_core::Clock;
use vern_crypto::SecretBytes;
use vern_seal::{Barrier, BarrierView, BarrierWrite, Expect, Plain, SealError};

use crate::metadata::{Metadata, MetadataUpdate, MetadataView, VersionInfo};
use crate::path::{ListPrefix, SecretPath};
use crate::KvError;

/// Versions kept when neither the secret nor the mount says, as in Vault.
pub const DEFAULT_MAX_VERSIONS: u32 = 10;
/// Attempts of one change before giving up under write contention.
const ATTEMPTS: usize = 16;
/// Keys fetched per storage round trip when listing.
const LIST_PAGE: usize = 1000;
/// Slots of the latest-version guesses (8 bytes each), shared by all
/// secrets of a mount through a hash of their paths.
const GUESS_SLOTS: usize = 4096;

/// A secret's key/value data. `Debug` never shows it.
#[derive(Clone, PartialEq)]
pub struct SecretData(Map<String, Value>);

impl SecretData {
    /// Wraps a JSON object.
    pub fn new(map: Map<String, Value>) -> Self {
        Self(map)
    }

    /// The JSON object.
    pub fn into_inner(self) -> Map<String, Value> {
        self.0
    }

    /// The JSON object, borrowed.
    pub fn as_map(&self) -> &Map<String, Value> {
        &self.0
    }
}

impl fmt::Debug for SecretData {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SecretData([redacted]; {} keys)", self.0.len())
    }
}

/// One version's metadata, as the data endpoints report it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VersionView {
    /// The version number.
    pub version: u64,
    /// Creation time (ns since the epoch).
    pub created: u64,
    /// Deletion time, when set (may be in the future).
    pub deleted: Option<u64>,
    /// Whether the data was destroyed.
    pub destroyed: bool,
    /// The secret's custom metadata.
    pub custom_metadata: BTreeMap<String, String>,
}

/// The outcome of reading a version.
#[derive(Debug)]
pub enum Read {
    /// The data is there.
    Live {
        /// The secret data.
        data: SecretData,
        /// Its version metadata.
        version: VersionView,
    },
    /// The version was soft-deleted (and may be undeleted).
    Deleted(VersionView),
    /// The version was destroyed.
    Destroyed(VersionView),
}

/// Options of a data write.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WriteOptions {
    /// Check-and-set: the write applies only if the current version is this
    /// (0: only if the secret does not exist yet).
    pub cas: Option<u64>,
}

/// Mount-wide settings (`config`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KvConfig {
    /// Versions kept per secret (0: the default of 10).
    pub max_versions: u32,
    /// Whether every write needs `cas`.
    pub cas_required: bool,
    /// Delete versions this long after writing (zero: never), in ns.
    pub delete_version_after_nanos: u64,
}

/// One KV v2 mount. It reaches storage only through a view of the barrier
/// scoped to `kv/<mount>/`, so one mount cannot name another's keys, nor
/// any other domain's.
pub struct KvEngine {
    mount: String,
    /// `kv/<mount>/`: the prefix of this mount's barrier view.
    prefix: String,
    clock: Arc<dyn Clock>,
    /// The latest version last seen per slot of paths. A read of the
    /// latest version fetches the metadata and the guessed version's data
    /// together (one round trip on a networked store instead of two). The
    /// metadata decides: a wrong guess (a colliding path, a write through
    /// another replica) costs the second read it saves, never a wrong
    /// answer.
    guesses: Box<[AtomicU64]>,
    hasher: RandomState,
}

/// Within a mount's view: a secret's metadata is under this folder.
const META: &str = "meta/";
/// Within a mount's view: a secret's versions are under this folder.
const DATA: &str = "data/";
/// Within a mount's view: the mount's settings.
const CONFIG: &str = "config";

fn decode_meta(path: &SecretPath, plain: &Plain) -> Result<(Metadata, u64), KvError> {
    let meta = serde_json::from_slice(plain.value.expose())
        .map_err(|_| SealError::Corrupt(format!("metadata of {}", path.as_str())))?;
    Ok((meta, plain.version))
}

fn is_conflict(e: &KvError) -> bool {
    matches!(e, KvError::Seal(SealError::Conflict { .. }))
}

fn view(version: u64, info: &VersionInfo, meta: &Metadata) -> VersionView {
    VersionView {
        version,
        created: info.created,
        deleted: info.deleted,
        destroyed: info.destroyed,
        custom_metadata: meta.custom_metadata.clone(),
    }
}

fn encode<T: Serialize>(value: &T) -> Result<SecretBytes, KvError> {
    serde_json::to_vec(value)
        .map(SecretBytes::new)
        .map_err(|e| KvError::Internal(e.to_string()))
}

/// A change computed from the current metadata: the new metadata (or
/// `None` to delete it), further writes in the same batch, and a result.
type Change<T> = (Option<Metadata>, Vec<BarrierWrite>, T);

impl KvEngine {
    /// An engine for the mount named `mount` (`secret` by default).
    pub fn new(mount: &str, clock: Arc<dyn Clock>) -> Result<Self, KvError> {
        let ok = !mount.is_empty()
            && mount.len() <= 64
            && mount
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
        if !ok {
            return Err(KvError::BadMount(mount.to_owned()));
        }
        Ok(Self {
            mount: mount.to_owned(),
            prefix: format!("kv/{mount}/"),
            clock,
            guesses: (0..GUESS_SLOTS).map(|_| AtomicU64::new(0)).collect(),
            hasher: RandomState::new(),
        })
    }

    fn guess(&self, path: &SecretPath) -> Option<&AtomicU64> {
        let slot = self.hasher.hash_one(path.as_str()) % GUESS_SLOTS as u64;
        self.guesses.get(usize::try_from(slot).ok()?)
    }

    /// The mount's name.
    pub fn mount(&self) -> &str {
        &self.mount
    }

    fn now(&self) -> u64 {
        self.clock
            .now()
            .duration_since(UNIX_EPOCH)
            .map(|d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
            .unwrap_or(0)
    }

    /// This mount's view of the barrier.
    fn view<'b>(&self, b: &'b Barrier) -> Result<BarrierView<'b>, KvError> {
        Ok(b.view(&self.prefix)?)
    }

    fn meta_key(path: &SecretPath) -> String {
        format!("{META}{}", path.as_str())
    }

    fn data_key(path: &SecretPath, version: u64) -> String {
        format!("{DATA}{}/{version:020}", path.as_str())
    }

    async fn load_meta(
        &self,
        b: &BarrierView<'_>,
        path: &SecretPath,
    ) -> Result<Option<(Metadata, u64)>, KvError> {
        b.get(&Self::meta_key(path))
            .await?
            .map(|plain| decode_meta(path, &plain))
            .transpose()
    }

    /// The mount's settings.
    pub async fn config(&self, b: &Barrier) -> Result<KvConfig, KvError> {
        self.config_in(&self.view(b)?).await
    }

    async fn config_in(&self, b: &BarrierView<'_>) -> Result<KvConfig, KvError> {
        match b.get(CONFIG).await? {
            None => Ok(KvConfig::default()),
            Some(plain) => serde_json::from_slice(plain.value.expose())
                .map_err(|_| KvError::Seal(SealError::Corrupt("kv config".to_owned()))),
        }
    }

    /// Replaces the mount's settings.
    pub async fn set_config(&self, b: &Barrier, config: KvConfig) -> Result<(), KvError> {
        self.view(b)?
            .commit(vec![BarrierWrite {
                key: CONFIG.to_owned(),
                value: Some(encode(&config)?),
                expect: Expect::Any,
            }])
            .await?;
        Ok(())
    }

    /// Runs `change` against the current metadata and commits the result
    /// atomically, guarded by compare-and-set on the metadata; re-runs it
    /// when another writer got there first.
    async fn mutate<T>(
        &self,
        b: &Barrier,
        path: &SecretPath,
        mut change: impl FnMut(Option<Metadata>, u64, KvConfig) -> Result<Change<T>, KvError>,
    ) -> Result<T, KvError> {
        let b = &self.view(b)?;
        let meta_key = Self::meta_key(path);
        for _ in 0..ATTEMPTS {
            let config = self.config_in(b).await?;
            let current = self.load_meta(b, path).await?;
            let expect = current
                .as_ref()
                .map_or(Expect::Absent, |(_, v)| Expect::Version(*v));
            let (next, mut writes, out) = change(current.map(|(m, _)| m), self.now(), config)?;
            writes.insert(
                0,
                BarrierWrite {
                    key: meta_key.clone(),
                    value: next.as_ref().map(encode).transpose()?,
                    expect,
                },
            );
            match b.commit(writes).await {
                Ok(_) => return Ok(out),
                Err(e) => {
                    let e = KvError::from(e);
                    if !is_conflict(&e) {
                        return Err(e);
                    }
                }
            }
        }
        Err(KvError::Contention)
    }

    /// Reads `version` (latest when `None` or 0).
    pub async fn read(
        &self,
        b: &Barrier,
        path: &SecretPath,
        version: Option<u64>,
    ) -> Result<Read, KvError> {
        let b = &self.view(b)?;
        let asked = version.filter(|v| *v > 0);
        let guess = self.guess(path);
        let guessed = asked.or_else(|| guess.map(|g| g.load(Ordering::Relaxed)).filter(|v| *v > 0));
        let (meta, fetched) = match guessed {
            Some(g) => {
                let [meta, data] = <[_; 2]>::try_from(
                    b.get_many(&[&Self::meta_key(path), &Self::data_key(path, g)])
                        .await?,
                )
                .map_err(|_| {
                    KvError::Internal("a read of two keys answered otherwise".to_owned())
                })?;
                (meta, Some((g, data)))
            }
            None => (b.get(&Self::meta_key(path)).await?, None),
        };
        let (meta, _) = decode_meta(path, &meta.ok_or(KvError::NotFound)?)?;
        if let Some(g) = guess {
            g.store(meta.current_version, Ordering::Relaxed);
        }
        let v = asked.unwrap_or(meta.current_version);
        let info = meta.versions.get(&v).ok_or(KvError::NotFound)?;
        let version_view = view(v, info, &meta);
        if info.destroyed {
            return Ok(Read::Destroyed(version_view));
        }
        if info.is_deleted(self.now()) {
            return Ok(Read::Deleted(version_view));
        }
        let data = match fetched {
            Some((g, data)) if g == v => data,
            _ => b.get(&Self::data_key(path, v)).await?,
        };
        let Some(plain) = data else {
            tracing::error!(
                version = v,
                "Secret version listed in metadata has no data."
            );
            return Err(KvError::NotFound);
        };
        let data: Map<String, Value> = serde_json::from_slice(plain.value.expose())
            .map_err(|_| SealError::Corrupt(format!("data of {}", path.as_str())))?;
        Ok(Read::Live {
            data: SecretData(data),
            version: version_view,
        })
    }

    /// Writes a new version.
    pub async fn write(
        &self,
        b: &Barrier,
        path: &SecretPath,
        data: SecretData,
        options: WriteOptions,
    ) -> Result<VersionView, KvError> {
        let bytes = encode(&data.0)?;
        let written = self
            .mutate(b, path, |current, now, config| {
                self.new_version(path, current, now, config, options, bytes.clone())
            })
            .await?;
        if let Some(g) = self.guess(path) {
            g.store(written.version, Ordering::Relaxed);
        }
        Ok(written)
    }

    /// Applies a JSON merge patch (RFC 7386) to the latest version and
    /// writes the result as a new version.
    pub async fn patch(
        &self,
        b: &Barrier,
        path: &SecretPath,
        patch: Map<String, Value>,
        options: WriteOptions,
    ) -> Result<VersionView, KvError> {
        for _ in 0..ATTEMPTS {
            let Read::Live { data, version } = self.read(b, path, None).await? else {
                return Err(KvError::NotFound);
            };
            let mut merged = Value::Object(data.0);
            merge_patch(&mut merged, &Value::Object(patch.clone()));
            let Value::Object(merged) = merged else {
                return Err(KvError::Internal(
                    "patch did not produce an object".to_owned(),
                ));
            };
            let bytes = encode(&merged)?;
            let based_on = version.version;
            let result = self
                .mutate(b, path, |current, now, config| {
                    // The patch was computed from `based_on`; if another
                    // writer moved the secret on, compute it again.
                    if current.as_ref().map(|m| m.current_version) != Some(based_on) {
                        return Err(KvError::Seal(SealError::Conflict {
                            key: path.as_str().to_owned(),
                        }));
                    }
                    self.new_version(path, current, now, config, options, bytes.clone())
                })
                .await;
            match result {
                Err(e) if is_conflict(&e) => continue,
                other => return other,
            }
        }
        Err(KvError::Contention)
    }

    fn new_version(
        &self,
        path: &SecretPath,
        current: Option<Metadata>,
        now: u64,
        config: KvConfig,
        options: WriteOptions,
        bytes: SecretBytes,
    ) -> Result<Change<VersionView>, KvError> {
        let mut meta = current.unwrap_or_else(|| Metadata {
            created: now,
            ..Metadata::default()
        });
        if (meta.cas_required || config.cas_required) && options.cas.is_none() {
            return Err(KvError::CasRequired);
        }
        if let Some(cas) = options.cas {
            if cas != meta.current_version {
                return Err(KvError::CasMismatch);
            }
        }
        let version = meta
            .current_version
            .checked_add(1)
            .ok_or(KvError::VersionsExhausted)?;
        let dva = if meta.delete_version_after > 0 {
            meta.delete_version_after
        } else {
            config.delete_version_after_nanos
        };
        let info = VersionInfo {
            created: now,
            deleted: (dva > 0).then(|| now.saturating_add(dva)),
            destroyed: false,
        };
        meta.versions.insert(version, info);
        meta.current_version = version;
        meta.updated = now;
        let mut writes = vec![BarrierWrite {
            key: Self::data_key(path, version),
            value: Some(bytes),
            expect: Expect::Absent,
        }];
        let max = match (meta.max_versions, config.max_versions) {
            (0, 0) => DEFAULT_MAX_VERSIONS,
            (0, m) | (m, _) => m,
        };
        while meta.versions.len() > max as usize {
            let Some((&oldest, _)) = meta.versions.iter().next() else {
                break;
            };
            meta.versions.remove(&oldest);
            writes.push(BarrierWrite {
                key: Self::data_key(path, oldest),
                value: None,
                expect: Expect::Any,
            });
        }
        meta.oldest_version = meta.versions.keys().next().copied().unwrap_or(version);
        let out = view(version, &info, &meta);
        Ok((Some(meta), writes, out))
    }

    /// Soft-deletes the latest version.
    pub async fn delete_latest(&self, b: &Barrier, path: &SecretPath) -> Result<(), KvError> {
        self.mutate(b, path, |current, now, _| {
            let mut meta = current.ok_or(KvError::NotFound)?;
            let latest = meta.current_version;
            if let Some(info) = meta.versions.get_mut(&latest) {
                if !info.is_deleted(now) && !info.destroyed {
                    info.deleted = Some(now);
                }
            }
            meta.updated = now;
            Ok((Some(meta), Vec::new(), ()))
        })
        .await
    }

    /// Soft-deletes the given versions (unknown versions are ignored).
    pub async fn delete_versions(
        &self,
        b: &Barrier,
        path: &SecretPath,
        versions: &[u64],
    ) -> Result<(), KvError> {
        self.mutate(b, path, |current, now, _| {
            let mut meta = current.ok_or(KvError::NotFound)?;
            for v in versions {
                if let Some(info) = meta.versions.get_mut(v) {
                    if !info.is_deleted(now) && !info.destroyed {
                        info.deleted = Some(now);
                    }
                }
            }
            meta.updated = now;
            Ok((Some(meta), Vec::new(), ()))
        })
        .await
    }

    /// Restores soft-deleted versions (destroyed ones stay destroyed).
    pub async fn undelete_versions(
        &self,
        b: &Barrier,
        path: &SecretPath,
        versions: &[u64],
    ) -> Result<(), KvError> {
        self.mutate(b, path, |current, now, _| {
            let mut meta = current.ok_or(KvError::NotFound)?;
            for v in versions {
                if let Some(info) = meta.versions.get_mut(v) {
                    if !info.destroyed {
                        info.deleted = None;
                    }
                }
            }
            meta.updated = now;
            Ok((Some(meta), Vec::new(), ()))
        })
        .await
    }

    /// Destroys versions: their data is removed for good.
    pub async fn destroy_versions(
        &self,
        b: &Barrier,
        path: &SecretPath,
        versions: &[u64],
    ) -> Result<(), KvError> {
        self.mutate(b, path, |current, now, _| {
            let mut meta = current.ok_or(KvError::NotFound)?;
            let mut writes = Vec::new();
            for v in versions {
                if let Some(info) = meta.versions.get_mut(v) {
                    if !info.destroyed {
                        info.destroyed = true;
                        writes.push(BarrierWrite {
                            key: Self::data_key(path, *v),
                            value: None,
                            expect: Expect::Any,
                        });
                    }
                }
            }
            meta.updated = now;
            Ok((Some(meta), writes, ()))
        })
        .await
    }

    /// The secret's metadata.
    pub async fn read_metadata(
        &self,
        b: &Barrier,
        path: &SecretPath,
    ) -> Result<MetadataView, KvError> {
        let (meta, _) = self
            .load_meta(&self.view(b)?, path)
            .await?
            .ok_or(KvError::NotFound)?;
        Ok(MetadataView::from(&meta))
    }

    /// Changes the secret's settings. `create` allows creating metadata
    /// for a secret without versions (Vault's POST); otherwise (PATCH) the
    /// secret must exist.
    pub async fn write_metadata(
        &self,
        b: &Barrier,
        path: &SecretPath,
        update: &MetadataUpdate,
        create: bool,
    ) -> Result<(), KvError> {
        self.mutate(b, path, |current, now, _| {
            let mut meta = match current {
                Some(m) => m,
                None if create => Metadata {
                    created: now,
                    ..Metadata::default()
                },
                None => return Err(KvError::NotFound),
            };
            meta.apply(update, !create)
                .map_err(KvError::InvalidRequest)?;
            meta.updated = now;
            Ok((Some(meta), Vec::new(), ()))
        })
        .await
    }

    /// Deletes the secret: all versions and the metadata.
    pub async fn delete_metadata(&self, b: &Barrier, path: &SecretPath) -> Result<(), KvError> {
        self.mutate(b, path, |current, _, _| {
            let Some(meta) = current else {
                return Ok((None, Vec::new(), ()));
            };
            let writes = meta
                .versions
                .keys()
                .map(|v| {
                    Ok(BarrierWrite {
                        key: Self::data_key(path, *v),
                        value: None,
                        expect: Expect::Any,
                    })
                })
                .collect::<Result<Vec<_>, KvError>>()?;
            Ok((None, writes, ()))
        })
        .await
    }

    /// The names directly under `prefix`: secrets as `name`, folders as
    /// `name/`, in byte order.
    pub async fn list(&self, b: &Barrier, prefix: &ListPrefix) -> Result<Vec<String>, KvError> {
        let b = self.view(b)?;
        let base = if prefix.as_str().is_empty() {
            META.to_owned()
        } else {
            format!("{META}{}/", prefix.as_str())
        };
        let mut out = Vec::new();
        let mut after: Option<String> = None;
        loop {
            let keys = b.list(&base, after.as_deref(), LIST_PAGE).await?;
            let Some(last) = keys.last().cloned() else {
                break;
            };
            let full = keys.len() == LIST_PAGE;
            let mut skip_to = None;
            for k in keys {
                // Listed keys start with `base`; anything else is skipped.
                let Some(rest) = k.strip_prefix(&base) else {
                    continue;
                };
                match rest.split_once('/') {
                    Some((folder, _)) => {
                        out.push(format!("{folder}/"));
                        // Everything under this folder sorts below this bound.
                        skip_to = Some(format!("{base}{folder}/\u{10FFFF}"));
                        break;
                    }
                    None => out.push(rest.to_owned()),
                }
            }
            match skip_to {
                Some(bound) => after = Some(bound),
                None if full => after = Some(last),
                None => break,
            }
        }
        out.dedup();
        Ok(out)
    }

    /// The secret's key structure with every leaf value replaced by null,
    /// to `depth` levels (0: all).
    pub async fn subkeys(
        &self,
        b: &Barrier,
        path: &SecretPath,
        version: Option<u64>,
        depth: usize,
    ) -> Result<(Value, VersionView), KvError> {
        match self.read(b, path, version).await? {
            Read::Live { data, version } => {
                Ok((subkeys(&Value::Object(data.0), depth, 1), version))
            }
            Read::Deleted(_) | Read::Destroyed(_) => Err(KvError::NotFound),
        }
    }
}

fn subkeys(value: &Value, depth: usize, level: usize) -> Value {
    match value {
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(k, v)| {
                    let inner = match v {
                        Value::Object(_) if depth == 0 || level < depth => {
                            subkeys(v, depth, level + 1)
                        }
                        _ => Value::Null,
                    };
                    (k.clone(), inner)
                })
                .collect(),
        ),
        _ => Value::Null,
    }
}

/// RFC 7386 JSON merge patch.
fn merge_patch(target: &mut Value, patch: &Value) {
    let Value::Object(patch) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    if let Value::Object(t) = target {
        for (k, v) in patch {
            if v.is_null() {
                t.remove(k);
            } else {
                merge_patch(t.entry(k.clone()).or_insert(Value::Null), v);
            }
        }
    }
}

/// Formats a duration as Go does (`0s`, `1h30m0s`), which Vault clients
/// expect in `delete_version_after`.
pub fn go_duration(d: Duration) -> String {
    let secs = d.as_secs();
    if secs == 0 {
        return "0s".to_owned();
    }
    let (h, m, s) = (secs / 3600, (secs % 3600) / 60, secs % 60);
    match (h, m) {
        (0, 0) => format!("{s}s"),
        (0, _) => format!("{m}m{s}s"),
        _ => format!("{h}h{m}m{s}s"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn merge_patch_follows_rfc_7386() {
        // Cases from RFC 7386, appendix A.
        let cases = [
            (json!({"a":"b"}), json!({"a":"c"}), json!({"a":"c"})),
            (json!({"a":"b"}), json!({"b":"c"}), json!({"a":"b","b":"c"})),
            (json!({"a":"b"}), json!({"a":null}), json!({})),
            (
                json!({"a":{"b":"c"}}),
                json!({"a":{"b":"d","c":null}}),
                json!({"a":{"b":"d"}}),
            ),
            (json!({"a":[{"b":"c"}]}), json!({"a":[1]}), json!({"a":[1]})),
            (json!({"e":null}), json!({"a":1}), json!({"e":null,"a":1})),
            (
                json!({}),
                json!({"a":{"bb":{"ccc":null}}}),
                json!({"a":{"bb":{}}}),
            ),
        ];
        for (mut target, patch, want) in cases {
            merge_patch(&mut target, &patch);
            assert_eq!(target, want);
        }
    }

    #[test]
    fn subkeys_respect_depth() {
        let v = json!({"a": {"b": {"c": 1}}, "d": 2});
        assert_eq!(
            subkeys(&v, 0, 1),
            json!({"a": {"b": {"c": null}}, "d": null})
        );
        assert_eq!(subkeys(&v, 1, 1), json!({"a": null, "d": null}));
        assert_eq!(subkeys(&v, 2, 1), json!({"a": {"b": null}, "d": null}));
    }

    #[test]
    fn go_durations() {
        assert_eq!(go_duration(Duration::ZERO), "0s");
        assert_eq!(go_duration(Duration::from_secs(45)), "45s");
        assert_eq!(go_duration(Duration::from_secs(90)), "1m30s");
        assert_eq!(go_duration(Duration::from_secs(3 * 3600 + 5)), "3h0m5s");
    }

    #[test]
    fn secret_data_debug_is_redacted() {
        let data = SecretData::new(json!({"password": "hunter2"}).as_object().cloned().unwrap());
        assert!(!format!("{data:?}").contains("hunter2"));
    }
}
