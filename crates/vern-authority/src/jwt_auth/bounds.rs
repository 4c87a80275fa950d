//! A role's `bound_claims`: claims the JWT must carry with one of the
//! expected values, matched exactly or (with `bound_claims_type: glob`) as
//! patterns where `*` stands for any run of characters, as Vault matches
//! them. The glob has no other metacharacter and matches in time
//! proportional to the pattern's length times the value's, so a hostile
//! pattern or claim cannot make a login slow.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// How expected values are compared with a claim's values.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ClaimMatch {
    /// Equal strings.
    #[default]
    String,
    /// `*` matches any run of characters (none included).
    Glob,
}

impl ClaimMatch {
    /// The name Vault's `bound_claims_type` uses.
    pub fn name(self) -> &'static str {
        match self {
            Self::String => "string",
            Self::Glob => "glob",
        }
    }
}

/// Why a JWT's claims fail a role's bounds. Names the claim, never its
/// value or the expected ones.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Mismatch {
    /// The claim is absent (or not a string, number, boolean or list of
    /// them).
    Missing(String),
    /// The claim holds no expected value.
    Differs(String),
}

/// The values of claim `name` as strings: a JSON pointer (`/a/b`) reaches
/// into nested objects, any other name is a top-level claim. A list gives
/// each of its scalar members; numbers and booleans are compared as
/// their JSON text.
pub(crate) fn claim_values(claims: &Map<String, Value>, name: &str) -> Option<Vec<String>> {
    let value = if name.starts_with('/') {
        let mut current: Option<&Value> = None;
        for (i, segment) in name.split('/').skip(1).enumerate() {
            // RFC 6901 escapes.
            let key = segment.replace("~1", "/").replace("~0", "~");
            current = match (i, current) {
                (0, _) => claims.get(&key),
                (_, Some(Value::Object(map))) => map.get(&key),
                _ => None,
            };
        }
        current?
    } else {
        claims.get(name)?
    };
    let scalar = |v: &Value| match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    };
    match value {
        Value::Array(items) => Some(items.iter().filter_map(scalar).collect()),
        other => scalar(other).map(|s| vec![s]),
    }
}

/// Checks every bound claim: each must be present and one of its values
/// must match one of the expected values.
pub(crate) fn check(
    claims: &Map<String, Value>,
    bounds: &BTreeMap<String, Vec<String>>,
    how: ClaimMatch,
) -> Result<(), Mismatch> {
    for (name, expected) in bounds {
        let actual = claim_values(claims, name).ok_or_else(|| Mismatch::Missing(name.clone()))?;
        let hit = actual.iter().any(|a| {
            expected.iter().any(|e| match how {
                ClaimMatch::String => e == a,
                ClaimMatch::Glob => glob(e, a),
            })
        });
        if !hit {
            return Err(Mismatch::Differs(name.clone()));
        }
    }
    Ok(())
}

/// Whether `text` matches `pattern`, in which `*` stands for any run of
/// characters and every other character for itself. The pieces between
/// stars are found left to right at their first occurrence, which is
/// enough: taking a later occurrence never leaves more room for what
/// follows.
pub(crate) fn glob(pattern: &str, text: &str) -> bool {
    let mut pieces = pattern.split('*');
    let Some(first) = pieces.next() else {
        return text.is_empty();
    };
    let Some(mut rest) = text.strip_prefix(first) else {
        return false;
    };
    let middle: Vec<&str> = pieces.collect();
    let Some((last, between)) = middle.split_last() else {
        // No star at all: the whole text must be the pattern.
        return rest.is_empty();
    };
    for piece in between {
        match rest.find(piece) {
            Some(at) => {
                rest = rest
                    .get(at.saturating_add(piece.len())..)
                    .unwrap_or_default()
            }
            None => return false,
        }
    }
    rest.ends_with(last)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use serde_json::json;

    use super::*;

    /// The textbook dynamic-programming matcher, as the reference.
    fn reference(pattern: &str, text: &str) -> bool {
        let p: Vec<char> = pattern.chars().collect();
        let t: Vec<char> = text.chars().collect();
        let mut m = vec![vec![false; t.len() + 1]; p.len() + 1];
        m[0][0] = true;
        for i in 1..=p.len() {
            m[i][0] = m[i - 1][0] && p[i - 1] == '*';
            for j in 1..=t.len() {
                m[i][j] = if p[i - 1] == '*' {
                    m[i - 1][j] || m[i][j - 1]
                } else {
                    m[i - 1][j - 1] && p[i - 1] == t[j - 1]
                };
            }
        }
        m[p.len()][t.len()]
    }

    #[test]
    fn globs_by_example() {
        for (pattern, text, want) in [
            ("*", "", true),
            ("*", "anything", true),
            ("", "", true),
            ("", "a", false),
            ("a", "a", true),
            ("a", "ab", false),
            (
                "system:serviceaccount:web:*",
                "system:serviceaccount:web:api",
                true,
            ),
            (
                "system:serviceaccount:web:*",
                "system:serviceaccount:webx:api",
                false,
            ),
            ("*:web:*", "system:serviceaccount:web:api", true),
            ("a*b*c", "abc", true),
            ("a*b*c", "acb", false),
            ("ab*ba", "aba", false),
            ("a**a", "a", false),
            ("a**a", "aa", true),
            ("*x*", "ééxé", true),
        ] {
            assert_eq!(glob(pattern, text), want, "{pattern} ~ {text}");
        }
    }

    #[test]
    fn claims_are_read_as_vault_reads_them() {
        let claims = json!({
            "sub": "system:serviceaccount:web:api",
            "groups": ["dev", "ops", 7],
            "admin": true,
            "kubernetes.io": {"namespace": "web", "a/b": "slash"},
            "nested": [{"x": 1}],
        });
        let claims = claims.as_object().unwrap();
        assert_eq!(
            claim_values(claims, "sub").unwrap(),
            ["system:serviceaccount:web:api"]
        );
        assert_eq!(claim_values(claims, "groups").unwrap(), ["dev", "ops", "7"]);
        assert_eq!(claim_values(claims, "admin").unwrap(), ["true"]);
        assert_eq!(
            claim_values(claims, "/kubernetes.io/namespace").unwrap(),
            ["web"]
        );
        assert_eq!(
            claim_values(claims, "/kubernetes.io/a~1b").unwrap(),
            ["slash"]
        );
        assert_eq!(claim_values(claims, "kubernetes.io"), None);
        assert_eq!(claim_values(claims, "/missing/x"), None);
        assert_eq!(
            claim_values(claims, "nested").unwrap(),
            Vec::<String>::new()
        );

        let bounds = |k: &str, v: &[&str]| {
            BTreeMap::from([(k.to_owned(), v.iter().map(|s| (*s).to_owned()).collect())])
        };
        assert_eq!(
            check(claims, &bounds("groups", &["ops"]), ClaimMatch::String),
            Ok(())
        );
        assert_eq!(
            check(claims, &bounds("groups", &["op*"]), ClaimMatch::String),
            Err(Mismatch::Differs("groups".into()))
        );
        assert_eq!(
            check(claims, &bounds("groups", &["op*"]), ClaimMatch::Glob),
            Ok(())
        );
        assert_eq!(
            check(claims, &bounds("team", &["x"]), ClaimMatch::Glob),
            Err(Mismatch::Missing("team".into()))
        );
        assert_eq!(
            check(claims, &bounds("nested", &["*"]), ClaimMatch::Glob),
            Err(Mismatch::Differs("nested".into()))
        );
    }

    proptest! {
        /// The matcher agrees with the reference on patterns and texts from
        /// a small alphabet, where stars and repeats collide most often.
        #[test]
        fn glob_agrees_with_the_reference(pattern in "[ab*é]{0,10}", text in "[abé]{0,12}") {
            prop_assert_eq!(glob(&pattern, &text), reference(&pattern, &text));
        }

        /// Without a star, a glob is an exact comparison.
        #[test]
        fn a_glob_without_stars_is_equality(pattern in "[a-c:]{0,8}", text in "[a-c:]{0,8}") {
            prop_assert_eq!(glob(&pattern, &text), pattern == text);
        }

        /// Every text without stars matches itself, and itself between
        /// stars.
        #[test]
        fn a_text_matches_itself_between_stars(text in "\\PC{0,16}") {
            let starless: String = text.chars().filter(|c| *c != '*').collect();
            let pattern = format!("*{starless}*");
            prop_assert!(glob(&pattern, &starless));
            prop_assert!(glob(&starless, &starless));
        }
    }
}
