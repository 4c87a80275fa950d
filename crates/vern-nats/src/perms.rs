//! From what a client declares to what its user JWT carries. Each declared
//! subject is decided on by the caller (Vern's Cedar policies); only the
//! allowed ones are kept. Request/reply needs no wildcard: a subscriber may
//! answer the requests it receives through response permissions, and a
//! client that publishes may read replies on its own inbox prefix only
//! (`_INBOX.<client id>.>`), never on every `_INBOX`.

use serde::{Deserialize, Serialize};

use crate::{NatsError, Subject};

/// Publish or subscribe.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    /// Sending messages on a subject.
    Publish,
    /// Receiving messages on a subject.
    Subscribe,
}

impl Direction {
    /// `publish` or `subscribe`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Publish => "publish",
            Self::Subscribe => "subscribe",
        }
    }

    /// The Cedar action that decides this direction.
    pub fn action(self) -> &'static str {
        match self {
            Self::Publish => "nats.publish",
            Self::Subscribe => "nats.subscribe",
        }
    }
}

/// What a client declares, in its tenant's account.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Declared {
    /// Subjects it publishes on.
    pub publish: Vec<Subject>,
    /// Subjects it subscribes to.
    pub subscribe: Vec<Subject>,
    /// Subjects of other tenants' accounts it imports.
    pub imports: Vec<Import>,
}

/// How an account imports another's subject.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ImportKind {
    /// The importer receives the exporter's messages.
    Stream,
    /// The importer sends requests the exporter answers.
    Service,
}

impl ImportKind {
    /// Parses `stream` or `service`.
    pub fn parse(s: &str) -> Result<Self, NatsError> {
        match s {
            "stream" => Ok(Self::Stream),
            "service" => Ok(Self::Service),
            other => Err(NatsError::BadSubject(format!(
                "import kind `{}` is not stream or service",
                other.escape_default()
            ))),
        }
    }

    /// `stream` or `service`, as nats-server's configuration names it.
    pub fn name(self) -> &'static str {
        match self {
            Self::Stream => "stream",
            Self::Service => "service",
        }
    }

    /// What the importing client does on the subject, and so the Cedar
    /// action that decides the import.
    pub fn direction(self) -> Direction {
        match self {
            Self::Stream => Direction::Subscribe,
            Self::Service => Direction::Publish,
        }
    }
}

/// A subject of another tenant's account, imported into the client's.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Import {
    /// The exporting tenant (its account).
    pub tenant: String,
    /// The subject, as both accounts name it.
    pub subject: Subject,
    /// Stream or service.
    pub kind: ImportKind,
}

/// The most subjects one client may declare per direction.
const MAX_DECLARED: usize = 64;

impl Declared {
    /// Parses declared subjects, refusing malformed ones, duplicates and
    /// more than 64 per direction.
    pub fn parse(publish: &[String], subscribe: &[String]) -> Result<Self, NatsError> {
        Self::parse_with_imports(publish, subscribe, &[])
    }

    /// Like [`Declared::parse`], with imports as `(tenant, subject, kind)`.
    /// A privileged subject cannot be imported, whatever a policy says.
    pub fn parse_with_imports(
        publish: &[String],
        subscribe: &[String],
        imports: &[(String, String, String)],
    ) -> Result<Self, NatsError> {
        let list = |v: &[String], what: &str| -> Result<Vec<Subject>, NatsError> {
            if v.len() > MAX_DECLARED {
                return Err(NatsError::BadSubject(format!(
                    "at most {MAX_DECLARED} {what} subjects per client"
                )));
            }
            let mut out: Vec<Subject> = Vec::with_capacity(v.len());
            for s in v {
                let s = Subject::parse(s)?;
                if out.contains(&s) {
                    return Err(NatsError::BadSubject(format!(
                        "{what} subject `{s}` is declared twice"
                    )));
                }
                out.push(s);
            }
            Ok(out)
        };
        if imports.len() > MAX_DECLARED {
            return Err(NatsError::BadSubject(format!(
                "at most {MAX_DECLARED} imports per client"
            )));
        }
        let mut parsed: Vec<Import> = Vec::with_capacity(imports.len());
        for (tenant, subject, kind) in imports {
            let ok_tenant = !tenant.is_empty()
                && tenant.len() <= 63
                && tenant.bytes().all(|b| {
                    b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_'
                });
            if !ok_tenant {
                return Err(NatsError::BadSubject(format!(
                    "import tenant `{}` is not a tenant name",
                    tenant.escape_default()
                )));
            }
            let subject = Subject::parse(subject)?;
            if subject.is_privileged() {
                return Err(NatsError::BadSubject(format!(
                    "privileged subject `{subject}` cannot be imported"
                )));
            }
            let import = Import {
                tenant: tenant.clone(),
                subject,
                kind: ImportKind::parse(kind)?,
            };
            if parsed.contains(&import) {
                return Err(NatsError::BadSubject(format!(
                    "import of `{}` from {} is declared twice",
                    import.subject, import.tenant
                )));
            }
            parsed.push(import);
        }
        Ok(Self {
            publish: list(publish, "publish")?,
            subscribe: list(subscribe, "subscribe")?,
            imports: parsed,
        })
    }

    /// Whether nothing is declared.
    pub fn is_empty(&self) -> bool {
        self.publish.is_empty() && self.subscribe.is_empty() && self.imports.is_empty()
    }
}

/// The permissions a user JWT carries.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Permissions {
    /// Subjects it may publish on.
    pub publish: Vec<Subject>,
    /// Subjects it may subscribe to.
    pub subscribe: Vec<Subject>,
    /// Whether it may answer requests it receives.
    pub responses: bool,
    /// Declared subjects the policies refused.
    pub refused: Vec<(Direction, Subject)>,
    /// Imports a policy grants (their subjects are in `publish` or
    /// `subscribe` too).
    pub imports: Vec<Import>,
    /// Declared imports no policy grants.
    pub refused_imports: Vec<Import>,
}

/// The inbox prefix of a client: `_INBOX.<client id>`. Clients that make
/// requests set it as their inbox prefix (nats-py `inbox_prefix`, nats.go
/// `CustomInboxPrefix`).
pub fn inbox_prefix(client_id: &str) -> Result<Subject, NatsError> {
    Subject::parse(&format!("_INBOX.{client_id}"))
}

/// Derives the permissions of `client_id` from its declaration, keeping
/// each subject `allow` lets through: `allow(direction, tenant, subject)`
/// asks about a subject of the client's own account (`tenant` none) or of
/// the account an import names.
pub fn derive(
    client_id: &str,
    declared: &Declared,
    mut allow: impl FnMut(Direction, Option<&str>, &Subject) -> bool,
) -> Result<Permissions, NatsError> {
    let mut p = Permissions::default();
    for import in &declared.imports {
        let dir = import.kind.direction();
        if allow(dir, Some(&import.tenant), &import.subject) {
            match dir {
                Direction::Publish => p.publish.push(import.subject.clone()),
                Direction::Subscribe => p.subscribe.push(import.subject.clone()),
            }
            p.imports.push(import.clone());
        } else {
            p.refused_imports.push(import.clone());
        }
    }
    for (dir, list) in [
        (Direction::Publish, &declared.publish),
        (Direction::Subscribe, &declared.subscribe),
    ] {
        for s in list {
            if allow(dir, None, s) {
                match dir {
                    Direction::Publish => p.publish.push(s.clone()),
                    Direction::Subscribe => p.subscribe.push(s.clone()),
                }
            } else {
                p.refused.push((dir, s.clone()));
            }
        }
    }
    if !p.publish.is_empty() {
        p.subscribe
            .push(Subject::parse(&format!("{}.>", inbox_prefix(client_id)?))?);
    }
    p.responses = !p.subscribe.is_empty();
    Ok(p)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derive_keeps_allowed_and_adds_own_inbox() {
        let d = Declared::parse(
            &["orders.>".to_owned(), "$SYS.REQ.>".to_owned()],
            &["orders.created".to_owned()],
        )
        .unwrap();
        let p = derive("svc.acme.web.prod.api", &d, |_, _, s| !s.is_privileged()).unwrap();
        assert_eq!(p.publish, vec![Subject::parse("orders.>").unwrap()]);
        assert_eq!(
            p.subscribe,
            vec![
                Subject::parse("orders.created").unwrap(),
                Subject::parse("_INBOX.svc.acme.web.prod.api.>").unwrap()
            ]
        );
        assert!(p.responses);
        assert_eq!(
            p.refused,
            vec![(Direction::Publish, Subject::parse("$SYS.REQ.>").unwrap())]
        );
    }

    #[test]
    fn nothing_declared_nothing_granted() {
        let p = derive("c", &Declared::default(), |_, _, _| true).unwrap();
        assert!(p.publish.is_empty() && p.subscribe.is_empty() && !p.responses);
    }

    #[test]
    fn imports_need_a_grant() {
        let imports = vec![
            (
                "globex".to_owned(),
                "prices.>".to_owned(),
                "stream".to_owned(),
            ),
            (
                "initech".to_owned(),
                "quotes.get".to_owned(),
                "service".to_owned(),
            ),
        ];
        let d = Declared::parse_with_imports(&[], &[], &imports).unwrap();
        let p = derive("c", &d, |_, t, _| t == Some("globex")).unwrap();
        assert_eq!(p.subscribe, vec![Subject::parse("prices.>").unwrap()]);
        assert_eq!(p.imports.len(), 1);
        assert_eq!(p.refused_imports[0].tenant, "initech");
        assert!(p.publish.is_empty());
        let bad = |t: &str, s: &str, k: &str| {
            Declared::parse_with_imports(&[], &[], &[(t.to_owned(), s.to_owned(), k.to_owned())])
                .is_err()
        };
        assert!(bad("Globex", "a", "stream"));
        assert!(bad("globex", "$SYS.>", "stream"));
        assert!(bad("globex", ">", "stream"));
        assert!(bad("globex", "a", "pipe"));
    }

    #[test]
    fn parse_refuses_duplicates_and_garbage() {
        assert!(Declared::parse(&["a".to_owned(), "a".to_owned()], &[]).is_err());
        assert!(Declared::parse(&[], &["a..b".to_owned()]).is_err());
        let many: Vec<String> = (0..65).map(|i| format!("s{i}")).collect();
        assert!(Declared::parse(&many, &[]).is_err());
    }
}
