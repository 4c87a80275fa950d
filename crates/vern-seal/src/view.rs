//! Barrier views: the barrier scoped to one domain's prefix.
//!
//! OpenBao gives every mount a `BarrierView` so that a secrets engine
//! cannot read another's keys by mistake; Vern does the same for each
//! domain (`kv/<mount>/`, `authority/`, `core/audit/`). A view is built
//! from a prefix fixed at construction; every key it takes is relative to
//! that prefix and is refused if it could name anything else (a leading
//! `/`, a `.` or `..` segment), and every key it lists comes back relative.
//! Values pass through the [`Barrier`], so encryption, the associated data
//! (the absolute storage key) and the refusal of the seal's own keys are
//! unchanged.

use vern_crypto::SecretBytes;
use vern_store::{Expect, Key};

use crate::barrier::{Barrier, Plain, RawWrite};
use crate::layout::RESERVED_PREFIX;
use crate::SealError;

/// One write through a view: `Some(value)` to store, `None` to delete.
#[derive(Debug)]
pub struct BarrierWrite {
    /// The key, relative to the view's prefix.
    pub key: String,
    /// The plaintext to encrypt, or `None` for a delete.
    pub value: Option<SecretBytes>,
    /// The compare-and-set precondition.
    pub expect: Expect,
}

/// Writes of one view, already checked against it ([`BarrierView::batch`]),
/// waiting to be committed with other views' writes.
#[derive(Debug, Default)]
pub struct ViewBatch {
    pub(crate) writes: Vec<RawWrite>,
}

impl ViewBatch {
    /// Whether the batch writes nothing.
    pub fn is_empty(&self) -> bool {
        self.writes.is_empty()
    }
}

/// The barrier scoped to one prefix; see the module documentation.
#[derive(Debug)]
pub struct BarrierView<'a> {
    barrier: &'a Barrier,
    prefix: String,
}

impl<'a> BarrierView<'a> {
    pub(crate) fn new(barrier: &'a Barrier, prefix: &str) -> Result<Self, SealError> {
        let bad = |reason: &str| SealError::BadKey {
            key: prefix.to_owned(),
            reason: reason.to_owned(),
        };
        let Some(inner) = prefix.strip_suffix('/') else {
            return Err(bad("a view's prefix must end with `/`"));
        };
        // The prefix is itself a storage key's beginning: same characters.
        Key::new(prefix).map_err(|e| bad(&e.to_string()))?;
        if inner
            .split('/')
            .any(|s| s.is_empty() || s == "." || s == "..")
        {
            return Err(bad(
                "a view's prefix may not hold empty, `.` or `..` segments",
            ));
        }
        if prefix.starts_with(RESERVED_PREFIX) {
            return Err(bad("the seal's own keys are reserved"));
        }
        Ok(Self {
            barrier,
            prefix: prefix.to_owned(),
        })
    }

    /// The prefix every key of this view lies under.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// Reads and decrypts the value at `key` (relative to the prefix).
    pub async fn get(&self, key: &str) -> Result<Option<Plain>, SealError> {
        self.barrier.get(&self.key(key)?).await
    }

    /// Reads several keys (relative to the prefix) from one snapshot, in
    /// one read transaction; entries in the order of `keys`.
    pub async fn get_many(&self, keys: &[&str]) -> Result<Vec<Option<Plain>>, SealError> {
        let keys = keys
            .iter()
            .map(|k| self.key(k))
            .collect::<Result<Vec<_>, _>>()?;
        self.barrier.get_many(&keys).await
    }

    /// Keys under `under` (relative to the prefix: empty for the whole view,
    /// else ending with `/`), strictly after `after` (also relative), at
    /// most `limit`, in byte order, returned relative to the prefix.
    pub async fn list(
        &self,
        under: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<String>, SealError> {
        if !under.is_empty() {
            let Some(folder) = under.strip_suffix('/') else {
                return Err(self.refused(under, "a listing prefix must end with `/`"));
            };
            self.check_relative(folder)?;
        }
        let prefix = format!("{}{under}", self.prefix);
        let after = after.map(|a| format!("{}{a}", self.prefix));
        let keys = self.barrier.list(&prefix, after.as_deref(), limit).await?;
        // The store lists by prefix, so every key lies under the view; a key
        // that did not would be skipped rather than shown with its prefix.
        Ok(keys
            .into_iter()
            .filter_map(|k| k.strip_prefix(&self.prefix).map(str::to_owned))
            .collect())
    }

    /// Encrypts and commits a batch of writes (keys relative to the
    /// prefix) atomically. A lost compare-and-set is
    /// [`SealError::Conflict`], and nothing of the batch is written; so is
    /// nothing when any key is refused.
    pub async fn commit(&self, writes: Vec<BarrierWrite>) -> Result<Vec<u64>, SealError> {
        let raw = writes
            .into_iter()
            .map(|w| {
                Ok(RawWrite {
                    key: self.key(&w.key)?,
                    value: w.value,
                    expect: w.expect,
                })
            })
            .collect::<Result<Vec<_>, SealError>>()?;
        self.barrier.commit(raw).await
    }

    /// Checks a batch of writes against this view (keys relative to its
    /// prefix) without committing it, so that another domain's batch can
    /// be committed with it in one transaction ([`Barrier::commit_batches`]):
    /// a declaration that spans domains is then stored whole or not at all,
    /// while each domain still names only its own keys.
    pub fn batch(&self, writes: Vec<BarrierWrite>) -> Result<ViewBatch, SealError> {
        let writes = writes
            .into_iter()
            .map(|w| {
                Ok(RawWrite {
                    key: self.key(&w.key)?,
                    value: w.value,
                    expect: w.expect,
                })
            })
            .collect::<Result<Vec<_>, SealError>>()?;
        Ok(ViewBatch { writes })
    }

    /// The absolute storage key of a relative one.
    fn key(&self, relative: &str) -> Result<Key, SealError> {
        self.check_relative(relative)?;
        Key::new(format!("{}{relative}", self.prefix))
            .map_err(|e| self.refused(relative, &e.to_string()))
    }

    /// Refuses what could name a key outside the view, were keys ever read
    /// as paths: nothing empty, no leading `/`, no `.` or `..` segment.
    fn check_relative(&self, relative: &str) -> Result<(), SealError> {
        if relative.is_empty() {
            return Err(self.refused(relative, "a key must not be empty"));
        }
        if relative.starts_with('/') {
            return Err(self.refused(relative, "a key must not start with `/`"));
        }
        if relative.split('/').any(|s| s == "." || s == "..") {
            return Err(self.refused(relative, "`.` and `..` segments would leave the view"));
        }
        Ok(())
    }

    fn refused(&self, relative: &str, reason: &str) -> SealError {
        SealError::BadKey {
            key: format!("{}{relative}", self.prefix),
            reason: reason.to_owned(),
        }
    }
}

#[cfg(test)]
mod tests;
