//! Reading records back with filters, page by page.

use std::time::SystemTime;

use crate::backing::LogStore;
use crate::record::AuditRecord;
use crate::AuditError;

/// Records read per storage round trip.
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

pub(crate) async fn run(store: &LogStore, filter: &Filter) -> Result<Page, AuditError> {
    let limit = filter.limit.clamp(1, MAX_LIMIT);
    let head = store.head_seq().await?;
    let mut records = Vec::new();
    let mut scanned = 0;
    let mut last_seq = filter.after;
    loop {
        let batch = store.records_after(last_seq, PAGE).await?;
        if batch.is_empty() {
            return Ok(Page {
                records,
                next_after: None,
                head,
            });
        }
        for (seq, bytes) in batch {
            scanned += 1;
            // The cursor follows where records are kept, whatever a
            // (possibly tampered) record claims; a record that does not
            // parse is skipped here and reported by verification.
            last_seq = seq;
            let Ok(record) = serde_json::from_slice::<AuditRecord>(&bytes) else {
                tracing::warn!(
                    seq,
                    "An audit record does not parse; run `vern audit verify`."
                );
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
    }
}
