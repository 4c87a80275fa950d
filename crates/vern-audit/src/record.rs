//! Records and checkpoints, and exactly which bytes are hashed and signed.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// The `prev` of record 1: 32 zero bytes in hex.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// Domain separation of record hashes.
const RECORD_CONTEXT: &[u8] = b"vern-audit-record-v1\0";
/// Domain separation of checkpoint signatures.
const CHECKPOINT_CONTEXT: &[u8] = b"vern-audit-checkpoint-v1\0";

/// Who made a request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Actor {
    /// `operator` or `service`.
    pub kind: String,
    /// The client id (`root` for the root token).
    pub id: String,
    /// Whether this is the root token (break-glass).
    pub root: bool,
    /// A service's tenant.
    pub tenant: Option<String>,
    /// A service's project.
    pub project: Option<String>,
    /// A service's environment.
    pub environment: Option<String>,
}

/// The authorization decision of a request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Verdict {
    /// Allowed or denied.
    pub allowed: bool,
    /// The ids of the policies that decided.
    pub policies: Vec<String>,
    /// The cross-tenant grant that opened the resource, if one did.
    pub grant: Option<String>,
}

/// The credential a request came with. The token itself is never kept.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenRef {
    /// HMAC-SHA256 of the presented token (`vern audit hash` finds it).
    pub hmac: String,
    /// The token's id (`jti`), when it has one.
    pub id: Option<String>,
    /// How the token is bound: `dpop`, `mtls` or `none`.
    pub binding: String,
}

/// What the server knows of one request; the log adds sequence, time and
/// hashes when it appends.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Event {
    /// The request's correlation id.
    pub request_id: String,
    /// Method and route template, such as `GET /v1/{mount}/data/{*path}`.
    pub operation: String,
    /// The authenticated caller, if authentication got that far.
    pub principal: Option<Actor>,
    /// The Cedar action (or the operation's own name where no policy
    /// decides, such as `sys.unseal` or `token.issue`).
    pub action: Option<String>,
    /// The resource, such as `secret:secret/acme/web/prod/db`.
    pub resource: Option<String>,
    /// The tenant that owns the resource, when it has one.
    pub resource_tenant: Option<String>,
    /// The authorization decision, when one was made.
    pub decision: Option<Verdict>,
    /// The HTTP status of the response.
    pub status: u16,
    /// The caller's network address.
    pub source: String,
    /// The presented token, as HMAC and id.
    pub token: Option<TokenRef>,
    /// Other sensitive values of the request, as HMACs by name (an issued
    /// token, a generated client secret).
    pub hmacs: BTreeMap<String, String>,
}

impl Event {
    /// The tenants this event belongs to: the principal's and the
    /// resource's.
    pub fn concerns_tenant(&self, tenant: &str) -> bool {
        self.resource_tenant.as_deref() == Some(tenant)
            || self.principal.as_ref().and_then(|p| p.tenant.as_deref()) == Some(tenant)
    }
}

/// One link of the chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditRecord {
    /// Position in the chain, from 1, without gaps.
    pub seq: u64,
    /// Hash of record `seq - 1` ([`GENESIS`] for record 1).
    pub prev: String,
    /// When the record was appended (RFC 3339, milliseconds, UTC).
    pub time: String,
    /// What happened.
    pub event: Event,
    /// SHA-256 over the fields above; see [`AuditRecord::compute_hash`].
    pub hash: String,
}

#[derive(Serialize)]
struct Hashed<'a> {
    seq: u64,
    prev: &'a str,
    time: &'a str,
    event: &'a Event,
}

impl AuditRecord {
    /// Chains `event` after `prev`.
    pub fn chain(seq: u64, prev: &str, time: String, event: Event) -> Self {
        let mut record = Self {
            seq,
            prev: prev.to_owned(),
            time,
            event,
            hash: String::new(),
        };
        record.hash = hex::encode(record.compute_hash());
        record
    }

    /// Chains `event` after `prev` straight into its stored form, with one
    /// serialization: returns the record's hash (hex) and its bytes, which
    /// are exactly `serde_json::to_vec` of the record.
    pub fn encode(seq: u64, prev: &str, time: &str, event: &Event) -> (String, Vec<u8>) {
        let body = Hashed {
            seq,
            prev,
            time,
            event,
        };
        let mut bytes = serde_json::to_vec(&body).unwrap_or_default();
        let mut h = Sha256::new();
        h.update(RECORD_CONTEXT);
        h.update(&bytes);
        let hash = hex::encode(h.finalize());
        bytes.pop();
        bytes.extend_from_slice(br#","hash":""#);
        bytes.extend_from_slice(hash.as_bytes());
        bytes.extend_from_slice(br#""}"#);
        (hash, bytes)
    }

    /// SHA-256 of a context string and the canonical JSON of every field
    /// but `hash` (struct fields in declaration order, maps sorted).
    pub fn compute_hash(&self) -> [u8; 32] {
        let body = Hashed {
            seq: self.seq,
            prev: &self.prev,
            time: &self.time,
            event: &self.event,
        };
        let mut h = Sha256::new();
        h.update(RECORD_CONTEXT);
        // Serializing plain strings, numbers and sorted maps cannot fail.
        h.update(serde_json::to_vec(&body).unwrap_or_default());
        h.finalize().into()
    }
}

/// How a record's line in a sink file starts; the record's own JSON
/// follows, without its opening brace.
pub(crate) const RECORD_LINE: &[u8] = br#"{"type":"record","#;

/// The sink line of a record's stored bytes (what `Line::Record`
/// serializes to, without serializing again).
pub(crate) fn record_line(stored: &[u8]) -> Vec<u8> {
    let mut line = RECORD_LINE.to_vec();
    line.extend_from_slice(stored.get(1..).unwrap_or_default());
    line
}

/// The tail every stored record ends with: `,"hash":"<64 hex>"}`.
const HASH_SUFFIX_LEN: usize = 75;

/// The hash of a record computed from its stored bytes, without parsing:
/// `inner` is the record's JSON after its opening `{` (and after a
/// `"type":"record",` tag). Bytes in canonical form hash exactly as
/// [`AuditRecord::compute_hash`]; any other bytes (a reordered, reformatted
/// or edited record) hash differently or are refused (`None`).
pub fn raw_hash(inner: &[u8]) -> Option<[u8; 32]> {
    let cut = inner.len().checked_sub(HASH_SUFFIX_LEN)?;
    if !inner[cut..].starts_with(br#","hash":""#) || !inner.ends_with(br#""}"#) {
        return None;
    }
    let mut h = Sha256::new();
    h.update(RECORD_CONTEXT);
    h.update(b"{");
    h.update(&inner[..cut]);
    h.update(b"}");
    Some(h.finalize().into())
}

/// A signed statement that the chain had `head` as the hash of record
/// `seq`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Checkpoint {
    /// The sequence number of the last record covered.
    pub seq: u64,
    /// That record's hash.
    pub head: String,
    /// When it was signed.
    pub time: String,
    /// The signing public key (`ed25519:<base64url>`).
    pub key: String,
    /// Ed25519 signature (base64url) over [`Checkpoint::signed_bytes`].
    pub signature: String,
}

#[derive(Serialize)]
struct Signed<'a> {
    seq: u64,
    head: &'a str,
    time: &'a str,
    key: &'a str,
}

impl Checkpoint {
    /// The bytes the signature covers: a context string and the canonical
    /// JSON of every field but the signature.
    pub fn signed_bytes(&self) -> Vec<u8> {
        let body = Signed {
            seq: self.seq,
            head: &self.head,
            time: &self.time,
            key: &self.key,
        };
        let mut out = CHECKPOINT_CONTEXT.to_vec();
        out.extend(serde_json::to_vec(&body).unwrap_or_default());
        out
    }
}

/// One line of a JSON-lines sink.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Line {
    /// A record.
    Record(Box<AuditRecord>),
    /// A checkpoint.
    Checkpoint(Checkpoint),
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event() -> Event {
        Event {
            request_id: "r1".to_owned(),
            operation: "GET /v1/{mount}/data/{*path}".to_owned(),
            status: 200,
            ..Event::default()
        }
    }

    #[test]
    fn lines_round_trip_and_refuse_unknown_fields() {
        let r = AuditRecord::chain(1, GENESIS, "2026-01-01T00:00:00.000Z".to_owned(), event());
        let text = serde_json::to_string(&Line::Record(Box::new(r.clone()))).unwrap();
        assert!(text.starts_with(r#"{"type":"record""#), "{text}");
        assert_eq!(
            serde_json::from_str::<Line>(&text).unwrap(),
            Line::Record(Box::new(r))
        );
        let extra = text.replacen(r#""seq":1"#, r#""seq":1,"extra":true"#, 1);
        assert!(serde_json::from_str::<Line>(&extra).is_err());
    }

    #[test]
    fn stored_bytes_hash_like_the_canonical_form() {
        let r = AuditRecord::chain(3, GENESIS, "t".to_owned(), event());
        let stored = serde_json::to_vec(&r).unwrap();
        assert_eq!(raw_hash(&stored[1..]), Some(r.compute_hash()));
        let line = serde_json::to_vec(&Line::Record(Box::new(r.clone()))).unwrap();
        assert_eq!(line, record_line(&stored));
        assert_eq!(raw_hash(&line[RECORD_LINE.len()..]), Some(r.compute_hash()));
        let pretty = serde_json::to_vec_pretty(&r).unwrap();
        assert_ne!(raw_hash(&pretty[1..]), Some(r.compute_hash()));
    }

    #[test]
    fn encoding_matches_serialization() {
        let r = AuditRecord::chain(9, GENESIS, "t".to_owned(), event());
        let (hash, bytes) = AuditRecord::encode(9, GENESIS, "t", &r.event);
        assert_eq!(hash, r.hash);
        assert_eq!(bytes, serde_json::to_vec(&r).unwrap());
    }

    #[test]
    fn every_field_is_covered_by_the_hash() {
        let r = AuditRecord::chain(7, GENESIS, "t".to_owned(), event());
        let mut changed = r.clone();
        changed.event.status = 201;
        assert_ne!(changed.compute_hash(), r.compute_hash());
        let mut changed = r.clone();
        changed.time = "u".to_owned();
        assert_ne!(changed.compute_hash(), r.compute_hash());
        assert_eq!(hex::encode(r.compute_hash()), r.hash);
    }
}
