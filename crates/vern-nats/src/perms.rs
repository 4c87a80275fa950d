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
}

/// The most subjects one client may declare per direction.
const MAX_DECLARED: usize = 64;

impl Declared {
    /// Parses declared subjects, refusing malformed ones, duplicates and
    /// more than 64 per direction.
    pub fn parse(publish: &[String], subscribe: &[String]) -> Result<Self, NatsError> {
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
        Ok(Self {
            publish: list(publish, "publish")?,
            subscribe: list(subscribe, "subscribe")?,
        })
    }

    /// Whether nothing is declared.
    pub fn is_empty(&self) -> bool {
        self.publish.is_empty() && self.subscribe.is_empty()
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
}

/// The inbox prefix of a client: `_INBOX.<client id>`. Clients that make
/// requests set it as their inbox prefix (nats-py `inbox_prefix`, nats.go
/// `CustomInboxPrefix`).
pub fn inbox_prefix(client_id: &str) -> Result<Subject, NatsError> {
    Subject::parse(&format!("_INBOX.{client_id}"))
}

/// Derives the permissions of `client_id` from its declaration, keeping
/// each subject `allow` lets through.
pub fn derive(
    client_id: &str,
    declared: &Declared,
    mut allow: impl FnMut(Direction, &Subject) -> bool,
) -> Result<Permissions, NatsError> {
    let mut p = Permissions::default();
    for (dir, list) in [
        (Direction::Publish, &declared.publish),
        (Direction::Subscribe, &declared.subscribe),
    ] {
        for s in list {
            if allow(dir, s) {
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
        let p = derive("svc.acme.web.prod.api", &d, |_, s| !s.is_privileged()).unwrap();
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
        let p = derive("c", &Declared::default(), |_, _| true).unwrap();
        assert!(p.publish.is_empty() && p.subscribe.is_empty() && !p.responses);
    }

    #[test]
    fn parse_refuses_duplicates_and_garbage() {
        assert!(Declared::parse(&["a".to_owned(), "a".to_owned()], &[]).is_err());
        assert!(Declared::parse(&[], &["a..b".to_owned()]).is_err());
        let many: Vec<String> = (0..65).map(|i| format!("s{i}")).collect();
        assert!(Declared::parse(&many, &[]).is_err());
    }
}
