//! Moving a log to a store of its own. With SQLite the log lives in a
//! database file beside the main one, because every commit to a SQLite file
//! drops the page cache of every other connection to it: a log appended on
//! every request would otherwise make every read of secrets and clients
//! start cold. Databases of older versions kept the log in the main file.

use vern_store::{Store, Write};

use crate::{layout, storage_key, AuditError};

/// Keys copied or deleted per transaction.
const PAGE: usize = 1000;

/// What [`relocate`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Relocation {
    /// `from` held no log.
    Nothing,
    /// `to` already had a log; `from` still holds this many log keys, left
    /// in place (an interrupted move or a downgrade) for the operator.
    LeftInPlace(usize),
    /// This many keys (records, checkpoints and the head) were moved.
    Moved(usize),
}

/// Every key of the log in `store`, in order.
async fn log_keys(store: &dyn Store) -> Result<Vec<String>, AuditError> {
    let mut keys = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let page = store.list(layout::PREFIX, after.as_deref(), PAGE).await?;
        let full = page.len() == PAGE;
        after = page.last().cloned();
        keys.extend(page);
        if !full {
            return Ok(keys);
        }
    }
}

/// Moves the log kept in `from` to `to`, unless `to` has a log already.
/// Records and checkpoints are copied first and the head last, so `to`
/// has a head only once it holds the whole log; only then are the keys
/// deleted from `from`. A move cut short before the head is copied is
/// redone from the start by the next call.
pub async fn relocate(from: &dyn Store, to: &dyn Store) -> Result<Relocation, AuditError> {
    let keys = log_keys(from).await?;
    if keys.is_empty() {
        return Ok(Relocation::Nothing);
    }
    if to.get(&storage_key(layout::HEAD)?).await?.is_some() {
        return Ok(Relocation::LeftInPlace(keys.len()));
    }
    let (head, body): (Vec<&String>, Vec<&String>) =
        keys.iter().partition(|k| k.as_str() == layout::HEAD);
    for page in body.chunks(PAGE).chain(std::iter::once(head.as_slice())) {
        let mut writes = Vec::with_capacity(page.len());
        for k in page {
            let key = storage_key(k)?;
            // Listed a moment ago by this process alone (the server is not
            // serving yet), so a key that vanished is a corrupt store.
            let entry = from
                .get(&key)
                .await?
                .ok_or_else(|| AuditError::Corrupt((*k).clone()))?;
            writes.push(Write::put(key, entry.value));
        }
        to.commit(writes).await?;
    }
    for page in keys.chunks(PAGE) {
        let writes = page
            .iter()
            .map(|k| Ok(Write::delete(storage_key(k)?)))
            .collect::<Result<Vec<_>, AuditError>>()?;
        from.commit(writes).await?;
    }
    Ok(Relocation::Moved(keys.len()))
}
