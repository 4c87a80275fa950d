//! The nats-server configuration Vern's state implies: one account per
//! tenant (isolation by account, never by subject prefix), the system
//! account `SYS`, the callout's account `AUTH`, and `auth_callout` naming
//! Vern's issuer key, xkey and the two users that bypass the callout (their
//! passwords bcrypt-hashed).

use std::collections::BTreeSet;
use std::fmt::Write as _;

use crate::keys::{NatsKeys, CALLOUT_USER, SYSTEM_USER};
use crate::paths::CrossAccount;
use crate::sites::{Topology, DEFAULT_GATEWAY_PORT, LEAF_ALWAYS_DENIED};
use crate::NatsError;

/// The system account.
pub const SYSTEM_ACCOUNT: &str = "SYS";
/// The account the callout service connects to.
pub const AUTH_ACCOUNT: &str = "AUTH";

/// Renders the configuration for `tenants` (tenant names are accounts
/// as they are: their alphabet, lowercase letters, digits, `-` and `_`,
/// never collides with the upper-case `SYS` and `AUTH`), with an export
/// and an import for each granted cross-account path and nothing else,
/// the accounts' subject mappings, and the gateway and leafnode remotes of
/// the declared sites.
pub fn render(
    keys: &NatsKeys,
    tenants: &BTreeSet<String>,
    cross: &[CrossAccount],
    topology: &Topology,
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
    if let Some(local) = &topology.local {
        w(&mut out, format!("server_name: {}", quoted(&local.name)?));
    }
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
    let named = topology.accounts();
    accounts.extend(named.iter());
    for t in accounts {
        let mappings: Vec<String> = topology
            .mappings_of(t)
            .map(|m| {
                format!(
                    "{}: {}",
                    subject_literal(m.from.as_str()),
                    subject_literal(m.to.as_str())
                )
            })
            .collect();
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
        if exports.is_empty() && imports.is_empty() && mappings.is_empty() {
            w(&mut out, format!("  {}: {{}}", quoted(t)?));
            continue;
        }
        w(&mut out, format!("  {}: {{", quoted(t)?));
        if !mappings.is_empty() {
            w(
                &mut out,
                format!("    mappings: {{ {} }}", mappings.join(", ")),
            );
        }
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
    render_sites(&mut out, topology)?;
    Ok(out)
}

/// The files of nats-server's client TLS: its own certificate and key,
/// and the CA bundle client certificates must chain to (Vern's trust
/// anchors, so that a workload's X.509-SVID is its NATS credential).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// nats-server's certificate chain (PEM).
    pub cert_file: String,
    /// nats-server's private key (PEM).
    pub key_file: String,
    /// The CA bundle clients are verified against.
    pub ca_file: String,
}

/// The `tls` block for `files`, to append to [`render`]'s configuration.
/// nats-server has no optional client certificates: `verify: true`
/// requires one of every client, token clients included, and the callout
/// then authenticates by the certificate, the token, or both.
pub fn render_tls(files: &TlsFiles) -> Result<String, NatsError> {
    let path = |what: &str, p: &str| -> Result<String, NatsError> {
        if p.is_empty() || p.chars().any(|c| c.is_control() || c == '"' || c == '\\') {
            return Err(NatsError::BadPath(format!(
                "the {what} path `{}` cannot be written into the configuration: \
                 use one without quotes, backslashes or control characters",
                p.escape_default()
            )));
        }
        Ok(format!("\"{p}\""))
    };
    let mut out = String::from("tls {\n");
    let _ = writeln!(
        out,
        "  cert_file: {}",
        path("certificate", &files.cert_file)?
    );
    let _ = writeln!(out, "  key_file: {}", path("key", &files.key_file)?);
    let _ = writeln!(out, "  ca_file: {}", path("CA bundle", &files.ca_file)?);
    out.push_str("  verify: true\n}\n");
    Ok(out)
}

/// The gateway block (every account crosses a gateway, the system
/// account included: that is how a supercluster works) and the leafnode
/// remotes (one per linked account, each denying the privileged subjects
/// both ways besides what the site declares).
fn render_sites(out: &mut String, topology: &Topology) -> Result<(), NatsError> {
    let strings = |v: &mut dyn Iterator<Item = &str>| -> String {
        v.map(subject_literal).collect::<Vec<_>>().join(", ")
    };
    let gateways: Vec<String> = topology
        .sites
        .iter()
        .filter_map(|s| s.gateway.as_ref().map(|g| (s, g)))
        .map(|(s, g)| {
            format!(
                "    {{ name: {}, urls: [ {} ] }}",
                subject_literal(&s.name),
                strings(&mut g.urls.iter().map(String::as_str))
            )
        })
        .collect();
    let local = topology.local.as_ref();
    if !gateways.is_empty() || local.is_some_and(|l| l.gateway_port.is_some()) {
        let Some(local) = local else {
            return Err(NatsError::Internal(
                "a gateway is stored without this site's name".to_owned(),
            ));
        };
        let _ = writeln!(out, "gateway {{");
        let _ = writeln!(out, "  name: {}", subject_literal(&local.name));
        let _ = writeln!(
            out,
            "  port: {}",
            local.gateway_port.unwrap_or(DEFAULT_GATEWAY_PORT)
        );
        if !gateways.is_empty() {
            let _ = writeln!(out, "  gateways: [\n{}\n  ]", gateways.join(",\n"));
        }
        let _ = writeln!(out, "}}");
    }
    let mut remotes = Vec::new();
    for s in &topology.sites {
        let Some(l) = &s.leafnode else { continue };
        let deny = |declared: &[crate::Subject]| {
            let mut all: Vec<&str> = LEAF_ALWAYS_DENIED.to_vec();
            for d in declared {
                if !all.contains(&d.as_str()) {
                    all.push(d.as_str());
                }
            }
            strings(&mut all.into_iter())
        };
        for account in &l.accounts {
            let credentials = l
                .credentials
                .as_ref()
                .map(|c| format!(", credentials: {}", subject_literal(c)))
                .unwrap_or_default();
            remotes.push(format!(
                "    {{ urls: [ {} ], account: {}{credentials}, deny_exports: [ {} ], deny_imports: [ {} ] }}",
                subject_literal(&l.url),
                subject_literal(account),
                deny(&l.deny_exports),
                deny(&l.deny_imports),
            ));
        }
    }
    if !remotes.is_empty() {
        let _ = writeln!(
            out,
            "leafnodes {{\n  remotes: [\n{}\n  ]\n}}",
            remotes.join(",\n")
        );
    }
    Ok(())
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
        let conf = render(&keys, &tenants, &[], &Topology::default()).unwrap();
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
        assert!(render(&keys, &bad, &[], &Topology::default()).is_err());
    }

    #[test]
    fn renders_a_verifying_tls_block() {
        let files = TlsFiles {
            cert_file: "/etc/nats/server.pem".to_owned(),
            key_file: "/etc/nats/server.key".to_owned(),
            ca_file: "/etc/nats/vern-ca.pem".to_owned(),
        };
        let block = render_tls(&files).unwrap();
        assert_eq!(
            block,
            "tls {\n  cert_file: \"/etc/nats/server.pem\"\n  key_file: \"/etc/nats/server.key\"\n  ca_file: \"/etc/nats/vern-ca.pem\"\n  verify: true\n}\n"
        );
        for bad in ["", "a\"}\nauthorization {", "a\\b", "a\nb"] {
            let files = TlsFiles {
                cert_file: bad.to_owned(),
                ..files.clone()
            };
            assert!(matches!(render_tls(&files), Err(NatsError::BadPath(_))));
        }
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
        let conf = render(&keys, &tenants, &cross, &Topology::default()).unwrap();
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

    #[test]
    fn renders_sites_and_mappings() {
        let keys = NatsKeys::generate();
        let section: crate::sites::NatsSection = serde_json::from_value(serde_json::json!({
            "site": "dc1",
            "sites": [{"name": "dc2",
                       "gateway": {"urls": ["nats://dc2.example:7222"]},
                       "leafnode": {"url": "nats-leaf://dc2.example:7422", "accounts": ["acme"],
                                    "deny_exports": ["secret.>", "$SYS.>"],
                                    "credentials": "/etc/nats/dc2.creds"}}],
            "mappings": [{"tenant": "globex", "from": "orders.v1.>", "to": "orders.>"}],
        }))
        .unwrap();
        section.check().unwrap();
        let topology = Topology {
            local: Some(crate::sites::LocalSite {
                name: "dc1".to_owned(),
                gateway_port: None,
            }),
            sites: section.sites,
            mappings: section.mappings,
        };
        let conf = render(&keys, &BTreeSet::new(), &[], &topology).unwrap();
        assert!(conf.contains("server_name: \"dc1\""), "{conf}");
        assert!(conf.contains("  \"acme\": {}"), "{conf}");
        assert!(
            conf.contains("    mappings: { \"orders.v1.>\": \"orders.>\" }"),
            "{conf}"
        );
        assert!(conf.contains("gateway {\n  name: \"dc1\"\n  port: 7222\n  gateways: [\n    { name: \"dc2\", urls: [ \"nats://dc2.example:7222\" ] }\n  ]\n}"), "{conf}");
        assert!(conf.contains("{ urls: [ \"nats-leaf://dc2.example:7422\" ], account: \"acme\", credentials: \"/etc/nats/dc2.creds\", deny_exports: [ \"$SYS.>\", \"$JS.API.>\", \"secret.>\" ], deny_imports: [ \"$SYS.>\", \"$JS.API.>\" ] }"), "{conf}");
    }
}
