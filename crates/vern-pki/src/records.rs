//! Issued-certificate records: one per X.509-SVID, written in the same
//! request that signs it and before the certificate is handed out, under
//! `pki/issued/<not after, 20 digits>/<serial>`, so a listing by expiry is
//! a range read and pruning deletes from the front. A record names the
//! serial, the SPIFFE ID, who asked and when the certificate expires;
//! never a key.

use serde::{Deserialize, Serialize};
use vern_crypto::SecretBytes;
use vern_seal::{Barrier, BarrierWrite, Expect};

use crate::ca::view;
use crate::PkiError;

const PREFIX: &str = "issued/";
/// Keys listed per storage read.
const PAGE: usize = 500;
/// Expired records are kept this long (a day), then pruned.
const KEEP_EXPIRED: u64 = 24 * 3600;

/// One issued X.509-SVID.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IssuedCertificate {
    /// The serial number, lowercase hex.
    pub serial: String,
    /// The SPIFFE ID the certificate carries.
    pub spiffe_id: String,
    /// The DNS names it carries besides.
    #[serde(default)]
    pub dns_names: Vec<String>,
    /// The IP addresses it carries (keepers' serving certificates only).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ip_addresses: Vec<String>,
    /// The principal that obtained it (a client id, or `vern` for Vern's
    /// own components).
    pub principal: String,
    /// The CA that signed it.
    pub ca: String,
    /// Issue time (Unix seconds).
    pub issued_at: u64,
    /// `notBefore` (Unix seconds).
    pub not_before: u64,
    /// `notAfter` (Unix seconds).
    pub not_after: u64,
}

/// Which records a listing wants.
#[derive(Debug, Clone, Default)]
pub struct CertFilter {
    /// Only certificates expiring within this many seconds from now.
    pub expiring_within: Option<u64>,
    /// Also expired certificates not yet pruned.
    pub include_expired: bool,
    /// The cursor of the previous page (its `next`).
    pub after: Option<String>,
    /// Most records returned.
    pub limit: usize,
}

/// One page of records, soonest expiry first.
#[derive(Debug, Clone)]
pub struct CertPage {
    /// The records.
    pub certificates: Vec<IssuedCertificate>,
    /// The cursor of the next page, when there may be more.
    pub next: Option<String>,
}

fn key_of(record: &IssuedCertificate) -> String {
    format!("{PREFIX}{:020}/{}", record.not_after, record.serial)
}

/// The `not_after` a record key starts with.
fn not_after_of(key: &str) -> Option<u64> {
    key.strip_prefix(PREFIX)?.split('/').next()?.parse().ok()
}

/// The record as a write that must not exist yet (serials are random, so
/// a collision means something is badly wrong and must not overwrite).
pub(crate) fn write_of(record: &IssuedCertificate) -> Result<BarrierWrite, PkiError> {
    let bytes = serde_json::to_vec(record).map_err(|e| PkiError::Internal(e.to_string()))?;
    Ok(BarrierWrite {
        key: key_of(record),
        value: Some(SecretBytes::new(bytes)),
        expect: Expect::Absent,
    })
}

/// A page of records by `filter` at `now`.
pub(crate) async fn list(
    barrier: &Barrier,
    now: u64,
    filter: &CertFilter,
) -> Result<CertPage, PkiError> {
    let view = view(barrier)?;
    let limit = filter.limit.clamp(1, 10_000);
    let until = filter.expiring_within.map(|w| now.saturating_add(w));
    // Keys sort by expiry, so the unexpired start right after `now`.
    let mut after = match (&filter.after, filter.include_expired) {
        (Some(cursor), _) => Some(cursor.clone()),
        (None, true) => None,
        (None, false) => Some(format!("{PREFIX}{now:020}/~")),
    };
    let mut out = Vec::new();
    loop {
        let keys = view.list(PREFIX, after.as_deref(), PAGE).await?;
        let Some(last) = keys.last().cloned() else {
            return Ok(CertPage {
                certificates: out,
                next: None,
            });
        };
        for key in keys {
            let not_after = not_after_of(&key).ok_or_else(|| PkiError::corrupt(&key))?;
            if until.is_some_and(|u| not_after > u) {
                return Ok(CertPage {
                    certificates: out,
                    next: None,
                });
            }
            if let Some(plain) = view.get(&key).await? {
                let record: IssuedCertificate = serde_json::from_slice(plain.value.expose())
                    .map_err(|_| PkiError::corrupt(&key))?;
                out.push(record);
            }
            if out.len() >= limit {
                return Ok(CertPage {
                    certificates: out,
                    next: Some(key),
                });
            }
        }
        after = Some(last);
    }
}

/// Deletes records whose certificates expired more than [`KEEP_EXPIRED`]
/// before `now`; returns how many.
pub(crate) async fn prune(barrier: &Barrier, now: u64) -> Result<usize, PkiError> {
    let view = view(barrier)?;
    let cutoff = now.saturating_sub(KEEP_EXPIRED);
    let mut removed = 0;
    loop {
        let keys = view.list(PREFIX, None, PAGE).await?;
        let old: Vec<String> = keys
            .into_iter()
            .take_while(|k| not_after_of(k).is_some_and(|t| t < cutoff))
            .collect();
        if old.is_empty() {
            return Ok(removed);
        }
        let n = old.len();
        view.commit(
            old.into_iter()
                .map(|key| BarrierWrite {
                    key,
                    value: None,
                    expect: Expect::Any,
                })
                .collect(),
        )
        .await?;
        removed += n;
    }
}

/// For every SPIFFE ID with an unexpired certificate, when its last one
/// expires, soonest first; at most `limit` of them, and how many there are
/// in all.
pub(crate) async fn identity_expiries(
    barrier: &Barrier,
    now: u64,
    limit: usize,
) -> Result<(Vec<(String, u64)>, usize), PkiError> {
    let mut last: std::collections::HashMap<String, u64> = std::collections::HashMap::new();
    let mut after = None;
    loop {
        let page = list(
            barrier,
            now,
            &CertFilter {
                after,
                limit: 10_000,
                ..CertFilter::default()
            },
        )
        .await?;
        for r in &page.certificates {
            let entry = last.entry(r.spiffe_id.clone()).or_insert(r.not_after);
            *entry = (*entry).max(r.not_after);
        }
        match page.next {
            Some(next) => after = Some(next),
            None => break,
        }
    }
    let total = last.len();
    let mut soonest: Vec<(String, u64)> = last.into_iter().collect();
    soonest.sort_by(|a, b| a.1.cmp(&b.1).then_with(|| a.0.cmp(&b.0)));
    soonest.truncate(limit);
    Ok((soonest, total))
}
