//! Reading records back with filters, page by page.

use std::time::SystemTime;

use vern_store::Store;

use crate::layout;
use crate::log::read_head;
use crate::record::AuditRecord;
use crate::AuditError;

/// Keys read per storage round trip.
const PAGE: usize = 256;
/// Most records one query examines before it returns a cursor.
const SCAN_LIMIT: usize = 10_000;
/// Most records one page returns.
pub const MAX_LIMIT: usize = 1000;

/// Which records to return. Every set field must match.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    /// Records after this sequence number (the cursor).
    pub after: u64,
    /// Appended at or after.
    pub since: Option<SystemTime>,
    /// Appended before.
    pub until: Option<SystemTime>,
    /// The principal's id.
    pub principal: Option<String>,
    /// The principal's or the resource's tenant.
    pub tenant: Option<String>,
    /// The action.
    pub action: Option<String>,
    /// The decision: `Some(true)` allowed, `Some(false)` denied.
    pub allowed: Option<bool>,
    /// Most records to return (at most [`MAX_LIMIT`]).
    pub limit: usize,
}

impl Filter {
    fn matches(&self, r: &AuditRecord) -> bool {
        let e = &r.event;
        if let Some(p) = &self.principal {
            if e.principal.as_ref().map(|a| &a.id) != Some(p) {
                return false;
            }
        }
        if let Some(t) = &self.tenant {
            if !e.concerns_tenant(t) {
                return false;
            }
        }
        if let Some(a) = &self.action {
            if e.action.as_ref() != Some(a) {
                return false;
            }
        }
        if let Some(allowed) = self.allowed {
            if e.decision.as_ref().map(|d| d.allowed) != Some(allowed) {
                return false;
            }
        }
        if self.since.is_some() || self.until.is_some() {
            let Ok(time) = humantime::parse_rfc3339(&r.time) else {
                return false;
            };
            if self.since.is_some_and(|s| time < s) || self.until.is_some_and(|u| time >= u) {
                return false;
            }
        }
        true
    }
}

/// One page of a query.
#[derive(Debug, Clone)]
pub struct Page {
    /// Matching records, oldest first.
    pub records: Vec<AuditRecord>,
    /// Pass as `after` to continue; `None` when the log was read to its end.
    pub next_after: Option<u64>,
    /// The sequence number of the newest record.
    pub head: u64,
}

pub(crate) async fn run(store: &dyn Store, filter: &Filter) -> Result<Page, AuditError> {
    let limit = filter.limit.clamp(1, MAX_LIMIT);
    let head = read_head(store).await?.seq;
    let mut records = Vec::new();
    let mut cursor = (filter.after > 0).then(|| layout::record(filter.after));
    let mut scanned = 0;
    let mut last_seq = filter.after;
    loop {
        let keys = store.list(layout::RECORDS, cursor.as_deref(), PAGE).await?;
        if keys.is_empty() {
            return Ok(Page {
                records,
                next_after: None,
                head,
            });
        }
        for k in &keys {
            let Some(entry) = store.get(&crate::storage_key(k)?).await? else {
                continue;
            };
            scanned += 1;
            // The cursor follows the keys, whatever a (possibly tampered)
            // record claims; a record that does not parse is skipped here
            // and reported by verification.
            last_seq = k
                .strip_prefix(layout::RECORDS)
                .and_then(|s| s.parse().ok())
                .unwrap_or(last_seq);
            let Ok(record) = serde_json::from_slice::<AuditRecord>(&entry.value) else {
                tracing::warn!(key = %k, "An audit record does not parse; run `vern audit verify`.");
                continue;
            };
            if filter.matches(&record) {
                records.push(record);
                if records.len() >= limit {
                    return Ok(Page {
                        records,
                        next_after: Some(last_seq),
                        head,
                    });
                }
            }
            if scanned >= SCAN_LIMIT {
                return Ok(Page {
                    records,
                    next_after: Some(last_seq),
                    head,
                });
            }
        }
        cursor = keys.last().cloned();
    }
}
