//! The in-toto Statement v1 an envelope carries, and the predicates Vern
//! reads. Unknown predicate types are signed, stored and verified like any
//! other, never interpreted.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::digest::{shown, Sha256Digest, SubjectRef};
use crate::AttestError;

/// The `_type` of an in-toto Statement v1.
pub const STATEMENT_V1: &str = "https://in-toto.io/Statement/v1";
/// The DSSE payload type of in-toto statements.
pub const IN_TOTO_PAYLOAD_TYPE: &str = "application/vnd.in-toto+json";
/// SLSA provenance v1.
pub const SLSA_PROVENANCE_V1: &str = "https://slsa.dev/provenance/v1";
/// in-toto's vulnerability scan predicate.
pub const VULNS_V01: &str = "https://in-toto.io/attestation/vulns/v0.1";
/// in-toto's test result predicate.
pub const TEST_RESULT_V01: &str = "https://in-toto.io/attestation/test-result/v0.1";
/// Vern's own record of a promotion it allowed.
pub const PROMOTION_V1: &str = "https://vern.dev/attestation/promotion/v1";

/// The longest predicate type URI accepted.
const MAX_PREDICATE_TYPE: usize = 512;
/// The most subjects one statement may name.
const MAX_SUBJECTS: usize = 1024;

/// One subject of a statement: a name and its digests by algorithm.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatementSubject {
    /// The artifact's name.
    #[serde(default)]
    pub name: String,
    /// Digests by algorithm name; Vern requires `sha256`.
    pub digest: BTreeMap<String, String>,
}

/// An in-toto Statement v1, its fields in the spec's order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Statement {
    /// Always [`STATEMENT_V1`].
    #[serde(rename = "_type")]
    pub type_: String,
    /// What the statement is about.
    pub subject: Vec<StatementSubject>,
    /// The predicate's type URI.
    #[serde(rename = "predicateType")]
    pub predicate_type: String,
    /// The predicate, any JSON object.
    #[serde(default)]
    pub predicate: Value,
}

impl Statement {
    /// A statement about one subject.
    pub fn new(
        subject: &SubjectRef,
        predicate_type: &str,
        predicate: Value,
    ) -> Result<Self, AttestError> {
        let statement = Self {
            type_: STATEMENT_V1.to_owned(),
            subject: vec![StatementSubject {
                name: subject.name.clone(),
                digest: BTreeMap::from([("sha256".to_owned(), subject.digest.hex().to_owned())]),
            }],
            predicate_type: predicate_type.to_owned(),
            predicate,
        };
        statement.check()?;
        Ok(statement)
    }

    /// Parses a payload as a statement and checks it.
    pub fn parse(payload: &[u8]) -> Result<Self, AttestError> {
        let statement: Self = serde_json::from_slice(payload).map_err(|e| {
            AttestError::Malformed(format!("the payload is not an in-toto statement: {e}"))
        })?;
        statement.check()?;
        Ok(statement)
    }

    /// The statement's JSON bytes, the payload signed.
    pub fn to_bytes(&self) -> Result<Vec<u8>, AttestError> {
        serde_json::to_vec(self).map_err(|e| AttestError::Internal(e.to_string()))
    }

    /// The SHA-256 digests of every subject, deduplicated and sorted.
    pub fn subject_digests(&self) -> Vec<Sha256Digest> {
        let mut out: Vec<Sha256Digest> = self
            .subject
            .iter()
            .filter_map(|s| s.digest.get("sha256"))
            .filter_map(|h| Sha256Digest::parse_hex(h))
            .collect();
        out.sort();
        out.dedup();
        out
    }

    /// Whether a subject has `digest`.
    pub fn names(&self, digest: &Sha256Digest) -> bool {
        self.subject
            .iter()
            .any(|s| s.digest.get("sha256").map(String::as_str) == Some(digest.hex()))
    }

    fn check(&self) -> Result<(), AttestError> {
        let bad = |why: String| Err(AttestError::Malformed(why));
        if self.type_ != STATEMENT_V1 {
            return bad(format!(
                "statement `_type` is `{}`, not `{STATEMENT_V1}`",
                shown(&self.type_)
            ));
        }
        if self.subject.is_empty() || self.subject.len() > MAX_SUBJECTS {
            return bad(format!("a statement names 1 to {MAX_SUBJECTS} subjects"));
        }
        for s in &self.subject {
            match s.digest.get("sha256") {
                Some(h) if Sha256Digest::parse_hex(h).is_some() => {}
                Some(h) => {
                    return bad(format!(
                        "subject `{}` has sha256 `{}`, not 64 lowercase hex digits",
                        shown(&s.name),
                        shown(h)
                    ))
                }
                None => return bad(format!("subject `{}` has no sha256 digest", shown(&s.name))),
            }
        }
        if self.predicate_type.is_empty()
            || self.predicate_type.len() > MAX_PREDICATE_TYPE
            || self
                .predicate_type
                .chars()
                .any(|c| c.is_whitespace() || c.is_control())
        {
            return bad(format!(
                "predicateType `{}` is not a URI of at most {MAX_PREDICATE_TYPE} bytes",
                shown(&self.predicate_type)
            ));
        }
        if !self.predicate.is_object() {
            return bad("the predicate must be a JSON object".into());
        }
        Ok(())
    }
}

/// The number of critical findings in a vulnerability scan predicate
/// ([`VULNS_V01`]): results one of whose severities is `CRITICAL` (any
/// case) or a numeric CVSS score of 9.0 or more. `None` when the predicate
/// does not have the predicate's shape (`scanner.result` a list).
pub fn critical_findings(predicate: &Value) -> Option<u64> {
    let results = predicate.get("scanner")?.get("result")?.as_array()?;
    let critical = results
        .iter()
        .filter(|r| {
            r.get("severity")
                .and_then(Value::as_array)
                .is_some_and(|sev| sev.iter().any(is_critical))
        })
        .count();
    u64::try_from(critical).ok()
}

fn is_critical(severity: &Value) -> bool {
    match severity.get("score") {
        Some(Value::String(s)) => {
            s.eq_ignore_ascii_case("critical") || s.parse::<f64>().is_ok_and(|n| n >= 9.0)
        }
        Some(Value::Number(n)) => n.as_f64().is_some_and(|n| n >= 9.0),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn statements_are_checked() {
        let hex = "c".repeat(64);
        let subject = SubjectRef::parse(&format!("web@sha256:{hex}")).unwrap();
        let s =
            Statement::new(&subject, SLSA_PROVENANCE_V1, json!({"buildDefinition": {}})).unwrap();
        let back = Statement::parse(&s.to_bytes().unwrap()).unwrap();
        assert_eq!(back, s);
        assert!(back.names(&subject.digest));
        assert_eq!(back.subject_digests(), vec![subject.digest.clone()]);

        for bad in [
            json!({"_type": "https://in-toto.io/Statement/v0.1", "subject": [{"name": "a", "digest": {"sha256": hex}}], "predicateType": "x", "predicate": {}}),
            json!({"_type": STATEMENT_V1, "subject": [], "predicateType": "x", "predicate": {}}),
            json!({"_type": STATEMENT_V1, "subject": [{"name": "a", "digest": {"sha512": hex}}], "predicateType": "x", "predicate": {}}),
            json!({"_type": STATEMENT_V1, "subject": [{"name": "a", "digest": {"sha256": "ABC"}}], "predicateType": "x", "predicate": {}}),
            json!({"_type": STATEMENT_V1, "subject": [{"name": "a", "digest": {"sha256": hex}}], "predicateType": "", "predicate": {}}),
            json!({"_type": STATEMENT_V1, "subject": [{"name": "a", "digest": {"sha256": hex}}], "predicateType": "x", "predicate": [1]}),
        ] {
            let bytes = serde_json::to_vec(&bad).unwrap();
            assert!(
                matches!(Statement::parse(&bytes), Err(AttestError::Malformed(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn counts_critical_findings() {
        let scan = json!({"scanner": {"uri": "pkg:github/aquasecurity/trivy", "result": [
            {"id": "CVE-1", "severity": [{"method": "nvd", "score": "CRITICAL"}]},
            {"id": "CVE-2", "severity": [{"method": "cvss_score", "score": "9.8"}]},
            {"id": "CVE-3", "severity": [{"method": "nvd", "score": "HIGH"}]},
            {"id": "CVE-4", "severity": [{"method": "cvss_score", "score": 9.1}]},
            {"id": "CVE-5"}
        ]}});
        assert_eq!(critical_findings(&scan), Some(3));
        assert_eq!(
            critical_findings(&json!({"scanner": {"result": []}})),
            Some(0)
        );
        assert_eq!(critical_findings(&json!({"other": 1})), None);
    }
}
