//! A secret's metadata: its versions and its settings. Stored as one JSON
//! document per secret behind the barrier; its storage version is the
//! compare-and-set guard of every change to the secret.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// One version's bookkeeping.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct VersionInfo {
    /// Creation time, nanoseconds since the Unix epoch.
    pub(crate) created: u64,
    /// Deletion time (nanoseconds); may lie in the future when set by
    /// `delete_version_after`, in which case the version is still live.
    pub(crate) deleted: Option<u64>,
    /// Whether the data was destroyed for good.
    pub(crate) destroyed: bool,
}

impl VersionInfo {
    pub(crate) fn is_deleted(&self, now: u64) -> bool {
        self.deleted.is_some_and(|t| t <= now)
    }
}

/// The stored metadata document.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Metadata {
    pub(crate) created: u64,
    pub(crate) updated: u64,
    pub(crate) current_version: u64,
    pub(crate) oldest_version: u64,
    pub(crate) max_versions: u32,
    pub(crate) cas_required: bool,
    pub(crate) delete_version_after: u64,
    pub(crate) custom_metadata: BTreeMap<String, String>,
    pub(crate) versions: BTreeMap<u64, VersionInfo>,
}

/// Metadata as callers see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetadataView {
    /// When the secret was first written (ns since the epoch).
    pub created: u64,
    /// When it was last changed.
    pub updated: u64,
    /// The newest version.
    pub current_version: u64,
    /// The oldest version still kept.
    pub oldest_version: u64,
    /// Versions kept (0: the mount's setting).
    pub max_versions: u32,
    /// Whether writes must carry `cas`.
    pub cas_required: bool,
    /// Versions are deleted this long after they are written (zero: never).
    pub delete_version_after: Duration,
    /// Caller-defined key/value annotations (not secret).
    pub custom_metadata: BTreeMap<String, String>,
    /// Each kept version: (created, deletion time if any, destroyed).
    pub versions: BTreeMap<u64, (u64, Option<u64>, bool)>,
}

impl From<&Metadata> for MetadataView {
    fn from(m: &Metadata) -> Self {
        Self {
            created: m.created,
            updated: m.updated,
            current_version: m.current_version,
            oldest_version: m.oldest_version,
            max_versions: m.max_versions,
            cas_required: m.cas_required,
            delete_version_after: Duration::from_nanos(m.delete_version_after),
            custom_metadata: m.custom_metadata.clone(),
            versions: m
                .versions
                .iter()
                .map(|(v, i)| (*v, (i.created, i.deleted, i.destroyed)))
                .collect(),
        }
    }
}

/// A change to a secret's settings; `None` leaves a field as it is.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MetadataUpdate {
    /// New `max_versions`.
    pub max_versions: Option<u32>,
    /// New `cas_required`.
    pub cas_required: Option<bool>,
    /// New `delete_version_after`.
    pub delete_version_after: Option<Duration>,
    /// New custom metadata: replaces the whole map, or with `merge` only the
    /// keys given (a `None` value removes a key).
    pub custom_metadata: Option<BTreeMap<String, Option<String>>>,
}

/// Limits on custom metadata, as in Vault.
const MAX_CUSTOM_KEYS: usize = 64;
const MAX_CUSTOM_KEY_LEN: usize = 128;
const MAX_CUSTOM_VALUE_LEN: usize = 512;

impl Metadata {
    /// Applies an update; with `merge`, custom metadata keys are merged
    /// rather than replaced.
    pub(crate) fn apply(&mut self, update: &MetadataUpdate, merge: bool) -> Result<(), String> {
        if let Some(m) = update.max_versions {
            self.max_versions = m;
        }
        if let Some(c) = update.cas_required {
            self.cas_required = c;
        }
        if let Some(d) = update.delete_version_after {
            self.delete_version_after = u64::try_from(d.as_nanos())
                .map_err(|_| "delete_version_after is too long".to_owned())?;
        }
        if let Some(custom) = &update.custom_metadata {
            if !merge {
                self.custom_metadata.clear();
            }
            for (k, v) in custom {
                match v {
                    Some(v) => {
                        if k.is_empty()
                            || k.len() > MAX_CUSTOM_KEY_LEN
                            || v.len() > MAX_CUSTOM_VALUE_LEN
                        {
                            return Err(format!(
                                "custom_metadata keys must be 1–{MAX_CUSTOM_KEY_LEN} bytes and values at most {MAX_CUSTOM_VALUE_LEN}"
                            ));
                        }
                        self.custom_metadata.insert(k.clone(), v.clone());
                    }
                    None => {
                        self.custom_metadata.remove(k);
                    }
                }
            }
            if self.custom_metadata.len() > MAX_CUSTOM_KEYS {
                return Err(format!(
                    "custom_metadata may hold at most {MAX_CUSTOM_KEYS} keys"
                ));
            }
        }
        Ok(())
    }
}
