//! The nats-server configuration Vern's state implies: one account per
//! tenant (isolation by account, never by subject prefix), the system
//! account `SYS`, the callout's account `AUTH`, and `auth_callout` naming
//! Vern's issuer key, xkey and the two users that bypass the callout (their
//! passwords bcrypt-hashed).

use std::collections::BTreeSet;
use std::fmt::Write as _;

use crate::keys::{NatsKeys, CALLOUT_USER, SYSTEM_USER};
use crate::paths::CrossAccount;
use crate::NatsError;

/// The system account.
pub const SYSTEM_ACCOUNT: &str = "SYS";
/// The account the callout service connects to.
pub const AUTH_ACCOUNT: &str = "AUTH";

/// Renders the configuration for `tenants` (tenant names are accounts
/// as they are: their alphabet, lowercase letters, digits, `-` and `_`,
/// never collides with the upper-case `SYS` and `AUTH`), with an export
/// and an import for each granted cross-account path and nothing else.
pub fn render(
    keys: &NatsKeys,
    tenants: &BTreeSet<String>,
    cross: &[CrossAccount],
) -> Result<String, NatsError> {
    let quoted = |s: &str| -> Result<String, NatsError> {
        if s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            && !s.is_empty()
        {
            Ok(format!("\"{s}\""))
        } else {
            Err(NatsError::Internal(format!(
                "`{}` cannot be written into the configuration",
                s.escape_default()
            )))
        }
    };
    let password = |p: &vern_crypto::SecretBytes| -> Result<String, NatsError> {
        Ok(subject_literal(&bcrypt_hash(p)?))
    };
    let mut out = String::new();
    let w = |out: &mut String, line: String| {
        out.push_str(&line);
        out.push('\n');
    };
    w(
        &mut out,
        "# Rendered by `vern nats config` from Vern's state. The callout and".to_owned(),
    );
    w(
        &mut out,
        "# system users' passwords are bcrypt hashes; their clear text stays in Vern.".to_owned(),
    );
    w(
        &mut out,
        "# Render it again after a new tenant appears.".to_owned(),
    );
    w(&mut out, "accounts {".to_owned());
    w(
        &mut out,
        format!(
            "  {SYSTEM_ACCOUNT}: {{ users: [ {{ user: {}, password: {} }} ] }}",
            quoted(SYSTEM_USER)?,
            password(keys.system_password())?
        ),
    );
    w(
        &mut out,
        format!(
            "  {AUTH_ACCOUNT}: {{ users: [ {{ user: {}, password: {} }} ] }}",
            quoted(CALLOUT_USER)?,
            password(keys.callout_password())?
        ),
    );
    let mut accounts: BTreeSet<&String> = tenants.iter().collect();
    accounts.extend(cross.iter().flat_map(|c| [&c.exporter, &c.importer]));
    for t in accounts {
        let exports: BTreeSet<(&str, &str)> = cross
            .iter()
            .filter(|c| &c.exporter == t)
            .map(|c| (c.kind.name(), c.subject.as_str()))
            .collect();
        let imports: BTreeSet<(&str, &str, &str)> = cross
            .iter()
            .filter(|c| &c.importer == t)
            .map(|c| (c.kind.name(), c.exporter.as_str(), c.subject.as_str()))
            .collect();
        if exports.is_empty() && imports.is_empty() {
            w(&mut out, format!("  {}: {{}}", quoted(t)?));
            continue;
        }
        w(&mut out, format!("  {}: {{", quoted(t)?));
        if !exports.is_empty() {
            let list: Vec<String> = exports
                .iter()
                .map(|(kind, subject)| format!("{{ {kind}: {} }}", subject_literal(subject)))
                .collect();
            w(&mut out, format!("    exports: [ {} ]", list.join(", ")));
        }
        if !imports.is_empty() {
            let list = imports
                .iter()
                .map(|(kind, from, subject)| {
                    Ok(format!(
                        "{{ {kind}: {{ account: {}, subject: {} }} }}",
                        quoted(from)?,
                        subject_literal(subject)
                    ))
                })
                .collect::<Result<Vec<_>, NatsError>>()?;
            w(&mut out, format!("    imports: [ {} ]", list.join(", ")));
        }
        w(&mut out, "  }".to_owned());
    }
    w(&mut out, "}".to_owned());
    w(&mut out, format!("system_account: {SYSTEM_ACCOUNT}"));
    w(&mut out, "authorization {".to_owned());
    w(&mut out, "  auth_callout {".to_owned());
    let _ = writeln!(out, "    issuer: {}", quoted(&keys.issuer_public())?);
    let _ = writeln!(
        out,
        "    auth_users: [ {}, {} ]",
        quoted(CALLOUT_USER)?,
        quoted(SYSTEM_USER)?
    );
    let _ = writeln!(out, "    account: {AUTH_ACCOUNT}");
    let _ = writeln!(out, "    xkey: {}", quoted(&keys.xkey_public())?);
    w(&mut out, "  }".to_owned());
    w(&mut out, "}".to_owned());
    Ok(out)
}

/// The cost nats-server's own `nats server passwd` uses.
const BCRYPT_COST: u32 = 11;

/// A password as nats-server's configuration takes it: a bcrypt hash
/// (`$2a$…`, the prefix nats-server recognizes), so that the rendered
/// file never holds a password in the clear.
fn bcrypt_hash(p: &vern_crypto::SecretBytes) -> Result<String, NatsError> {
    bcrypt::hash_with_result(p.expose(), BCRYPT_COST)
        .map(|h| h.format_for_version(bcrypt::Version::TwoA))
        .map_err(|e| NatsError::Internal(format!("cannot hash a NATS password: {e}")))
}

/// A subject as a quoted string. Subjects are visible ASCII (checked when
/// parsed); quotes and backslashes are escaped.
fn subject_literal(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_accounts_and_callout() {
        let keys = NatsKeys::generate();
        let tenants: BTreeSet<String> = ["acme".to_owned(), "globex".to_owned()].into();
        let conf = render(&keys, &tenants, &[]).unwrap();
        assert!(conf.contains("  \"acme\": {}"));
        assert!(conf.contains("  \"globex\": {}"));
        assert!(conf.contains(&format!("issuer: \"{}\"", keys.issuer_public())));
        assert!(conf.contains(&format!("xkey: \"{}\"", keys.xkey_public())));
        assert!(conf.contains("account: AUTH"));
        assert!(conf.contains("system_account: SYS"));
        for p in [keys.callout_password(), keys.system_password()] {
            let clear = std::str::from_utf8(p.expose()).unwrap();
            assert!(!conf.contains(clear), "a clear password in {conf}");
        }
        assert_eq!(conf.matches("password: \"$2a$11$").count(), 2, "{conf}");
        let bad: BTreeSet<String> = ["a\"} evil".to_owned()].into();
        assert!(render(&keys, &bad, &[]).is_err());
    }

    #[test]
    fn renders_granted_exports_and_imports() {
        use crate::perms::ImportKind;
        let keys = NatsKeys::generate();
        let tenants: BTreeSet<String> = ["acme".to_owned(), "globex".to_owned()].into();
        let cross = vec![CrossAccount {
            exporter: "globex".to_owned(),
            importer: "acme".to_owned(),
            client_id: "svc.acme.web.prod.api".to_owned(),
            subject: crate::Subject::parse("prices.>").unwrap(),
            kind: ImportKind::Stream,
        }];
        let conf = render(&keys, &tenants, &cross).unwrap();
        assert!(
            conf.contains("exports: [ { stream: \"prices.>\" } ]"),
            "{conf}"
        );
        assert!(
            conf.contains(
                "imports: [ { stream: { account: \"globex\", subject: \"prices.>\" } } ]"
            ),
            "{conf}"
        );
    }
}
