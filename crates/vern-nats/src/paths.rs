//! The path report: from the declarations and the policies' decisions,
//! who may publish and who may subscribe on which subjects of which
//! account, which publisher reaches which subscriber, and every principal
//! that reaches a privileged subject. Accounts are isolated, so a flow
//! never leaves its account except through an export and an import, which
//! exist only where a policy grants a client's declared import: those are
//! the cross-account paths.

use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use crate::perms::{inbox_prefix, Direction, ImportKind, Permissions};
use crate::Subject;

/// What one principal may do, as decided.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PrincipalPaths {
    /// Its account (the tenant).
    pub account: String,
    /// The client id.
    pub client_id: String,
    /// Subjects it may publish on.
    pub publish: Vec<Subject>,
    /// Subjects it may subscribe to (its own inbox included).
    pub subscribe: Vec<Subject>,
    /// Whether it may answer requests.
    pub responses: bool,
    /// Declared subjects the policies refused.
    pub refused: Vec<Refused>,
}

/// A declared subject the policies refused.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Refused {
    /// Publish or subscribe.
    pub direction: Direction,
    /// The subject.
    pub subject: Subject,
}

/// A publisher whose messages a subscriber can receive.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Flow {
    /// The account both are in.
    pub account: String,
    /// The publishing client.
    pub publisher: String,
    /// Its publish permission.
    pub publish: Subject,
    /// The subscribing client.
    pub subscriber: String,
    /// Its subscribe permission.
    pub subscribe: Subject,
}

/// A subject one account exports and another imports, for a client a
/// policy granted it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct CrossAccount {
    /// The exporting account.
    pub exporter: String,
    /// The importing account.
    pub importer: String,
    /// The importing client.
    pub client_id: String,
    /// The subject.
    pub subject: Subject,
    /// Stream or service.
    pub kind: ImportKind,
}

/// A principal that reaches a privileged subject.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Privileged {
    /// Its account.
    pub account: String,
    /// The client id.
    pub client_id: String,
    /// Publish or subscribe.
    pub direction: Direction,
    /// The subject.
    pub subject: Subject,
}

/// The whole report.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct PathReport {
    /// Every account in the report.
    pub accounts: Vec<String>,
    /// Every principal's permissions.
    pub principals: Vec<PrincipalPaths>,
    /// Every publisher → subscriber path.
    pub flows: Vec<Flow>,
    /// Every path between accounts (an export and its import).
    pub cross_account: Vec<CrossAccount>,
    /// Every path to a privileged subject.
    pub privileged: Vec<Privileged>,
}

impl PathReport {
    /// Builds the report from each principal's account, id and decided
    /// permissions.
    pub fn build(principals: Vec<(String, String, Permissions)>) -> Self {
        let mut report = Self::default();
        for (account, client_id, p) in principals {
            if !report.accounts.contains(&account) {
                report.accounts.push(account.clone());
            }
            for i in &p.imports {
                report.cross_account.push(CrossAccount {
                    exporter: i.tenant.clone(),
                    importer: account.clone(),
                    client_id: client_id.clone(),
                    subject: i.subject.clone(),
                    kind: i.kind,
                });
            }
            for (direction, list) in [
                (Direction::Publish, &p.publish),
                (Direction::Subscribe, &p.subscribe),
            ] {
                for s in list.iter().filter(|s| s.is_privileged()) {
                    report.privileged.push(Privileged {
                        account: account.clone(),
                        client_id: client_id.clone(),
                        direction,
                        subject: s.clone(),
                    });
                }
            }
            report.principals.push(PrincipalPaths {
                account,
                client_id,
                publish: p.publish,
                subscribe: p.subscribe,
                responses: p.responses,
                refused: p
                    .refused
                    .into_iter()
                    .map(|(direction, subject)| Refused { direction, subject })
                    .collect(),
            });
        }
        for c in &report.cross_account {
            if !report.accounts.contains(&c.exporter) {
                report.accounts.push(c.exporter.clone());
            }
        }
        report.accounts.sort();
        report.cross_account.sort();
        for publisher in &report.principals {
            for subscriber in report
                .principals
                .iter()
                .filter(|s| s.account == publisher.account)
            {
                // A client's own inbox receives only replies: those are
                // answers to its own requests, not a path of their own.
                let inbox = inbox_prefix(&subscriber.client_id).ok();
                for pubs in &publisher.publish {
                    for subs in &subscriber.subscribe {
                        let is_inbox = inbox
                            .as_ref()
                            .is_some_and(|i| subs.as_str().starts_with(i.as_str()));
                        if !is_inbox && pubs.overlaps(subs) {
                            report.flows.push(Flow {
                                account: publisher.account.clone(),
                                publisher: publisher.client_id.clone(),
                                publish: pubs.clone(),
                                subscriber: subscriber.client_id.clone(),
                                subscribe: subs.clone(),
                            });
                        }
                    }
                }
            }
        }
        report
    }

    /// Keeps the parts of one account: its principals, its flows, and the
    /// cross-account paths in or out of it.
    pub fn only_account(mut self, account: &str) -> Self {
        self.cross_account
            .retain(|c| c.exporter == account || c.importer == account);
        self.accounts.retain(|a| {
            a == account
                || self
                    .cross_account
                    .iter()
                    .any(|c| &c.exporter == a || &c.importer == a)
        });
        self.principals.retain(|p| p.account == account);
        self.flows.retain(|f| f.account == account);
        self.privileged.retain(|p| p.account == account);
        self
    }

    /// A table for humans.
    pub fn table(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "{:<12} {:<40} {:<10} SUBJECT",
            "ACCOUNT", "PRINCIPAL", "DIRECTION"
        );
        for p in &self.principals {
            for (d, list) in [("publish", &p.publish), ("subscribe", &p.subscribe)] {
                for s in list {
                    let _ = writeln!(out, "{:<12} {:<40} {:<10} {s}", p.account, p.client_id, d);
                }
            }
            for r in &p.refused {
                let _ = writeln!(
                    out,
                    "{:<12} {:<40} {:<10} {} (refused by policy)",
                    p.account,
                    p.client_id,
                    r.direction.name(),
                    r.subject
                );
            }
        }
        let _ = writeln!(out, "\nFLOWS (publisher -> subscriber, within one account)");
        if self.flows.is_empty() {
            let _ = writeln!(out, "  none");
        }
        for f in &self.flows {
            let _ = writeln!(
                out,
                "  [{}] {} ({}) -> {} ({})",
                f.account, f.publisher, f.publish, f.subscriber, f.subscribe
            );
        }
        let _ = writeln!(
            out,
            "\nCROSS-ACCOUNT PATHS (export -> import, granted by policy)"
        );
        if self.cross_account.is_empty() {
            let _ = writeln!(out, "  none: every account is isolated");
        }
        for c in &self.cross_account {
            let _ = writeln!(
                out,
                "  {} {} {} -> {} (for {})",
                c.kind.name(),
                c.subject,
                c.exporter,
                c.importer,
                c.client_id
            );
        }
        let _ = writeln!(out, "\nPRIVILEGED SUBJECTS");
        if self.privileged.is_empty() {
            let _ = writeln!(out, "  none");
        }
        for p in &self.privileged {
            let _ = writeln!(
                out,
                "  [{}] {} {} {}",
                p.account,
                p.client_id,
                p.direction.name(),
                p.subject
            );
        }
        out
    }

    /// A Graphviz digraph: one cluster per account, principals and
    /// subjects as nodes, publish edges into subjects and subscribe edges
    /// out of them; privileged subjects in red.
    pub fn dot(&self) -> String {
        let q = |s: &str| format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""));
        let mut out =
            String::from("digraph nats_paths {\n  rankdir=LR;\n  node [fontname=\"Helvetica\"];\n");
        for (i, account) in self.accounts.iter().enumerate() {
            let _ = writeln!(
                out,
                "  subgraph cluster_{i} {{\n    label={};",
                q(&format!("account {account}"))
            );
            for p in self.principals.iter().filter(|p| &p.account == account) {
                let _ = writeln!(
                    out,
                    "    {} [shape=box, label={}];",
                    q(&format!("{account}/{}", p.client_id)),
                    q(&p.client_id)
                );
                for s in p.publish.iter().chain(&p.subscribe) {
                    let colour = if s.is_privileged() { ", color=red" } else { "" };
                    let _ = writeln!(
                        out,
                        "    {} [shape=ellipse, label={}{colour}];",
                        q(&format!("{account}:{s}")),
                        q(s.as_str())
                    );
                }
            }
            let _ = writeln!(out, "  }}");
            for p in self.principals.iter().filter(|p| &p.account == account) {
                let node = q(&format!("{account}/{}", p.client_id));
                for s in &p.publish {
                    let _ = writeln!(
                        out,
                        "  {node} -> {} [label=\"publish\"];",
                        q(&format!("{account}:{s}"))
                    );
                }
                for s in &p.subscribe {
                    let _ = writeln!(
                        out,
                        "  {} -> {node} [label=\"subscribe\"];",
                        q(&format!("{account}:{s}"))
                    );
                }
            }
        }
        for c in &self.cross_account {
            let node = q(&format!("{}/{}", c.importer, c.client_id));
            let subject = q(&format!("{}:{}", c.exporter, c.subject));
            let _ = writeln!(
                out,
                "  {subject} [shape=ellipse, label={}];",
                q(c.subject.as_str())
            );
            let label = format!(
                "[label=\"{} import\", style=dashed, color=blue]",
                c.kind.name()
            );
            match c.kind {
                ImportKind::Stream => {
                    let _ = writeln!(out, "  {subject} -> {node} {label};");
                }
                ImportKind::Service => {
                    let _ = writeln!(out, "  {node} -> {subject} {label};");
                }
            }
        }
        out.push_str("}\n");
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::perms::{derive, Declared};

    fn principal(
        account: &str,
        id: &str,
        publish: &[&str],
        subscribe: &[&str],
    ) -> (String, String, Permissions) {
        let own = |v: &[&str]| v.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
        let d = Declared::parse(&own(publish), &own(subscribe)).unwrap();
        (
            account.to_owned(),
            id.to_owned(),
            derive(id, &d, |_, _, _| true).unwrap(),
        )
    }

    #[test]
    fn flows_stay_in_their_account() {
        let r = PathReport::build(vec![
            principal("acme", "a.pub", &["orders.>"], &[]),
            principal("acme", "a.sub", &[], &["orders.created"]),
            principal("globex", "g.sub", &[], &["orders.created"]),
            principal("globex", "g.mon", &[], &["$SYS.>"]),
        ]);
        assert_eq!(r.accounts, vec!["acme", "globex"]);
        assert_eq!(r.flows.len(), 1);
        assert_eq!(r.flows[0].subscriber, "a.sub");
        assert_eq!(r.privileged.len(), 1);
        assert_eq!(r.privileged[0].client_id, "g.mon");
        let acme = r.clone().only_account("acme");
        assert!(acme.privileged.is_empty());
        assert!(r.dot().starts_with("digraph"));
        assert!(r.table().contains("a.pub"));
        assert!(r.cross_account.is_empty());
    }

    #[test]
    fn granted_imports_are_cross_account_paths() {
        let imports = vec![(
            "globex".to_owned(),
            "prices.>".to_owned(),
            "stream".to_owned(),
        )];
        let d = Declared::parse_with_imports(&[], &[], &imports).unwrap();
        let p = derive("a.sub", &d, |_, _, _| true).unwrap();
        let r = PathReport::build(vec![
            ("acme".to_owned(), "a.sub".to_owned(), p),
            principal("globex", "g.pub", &["prices.>"], &[]),
            principal("initech", "i.sub", &[], &["x"]),
        ]);
        assert_eq!(r.cross_account.len(), 1);
        assert_eq!(r.cross_account[0].exporter, "globex");
        assert_eq!(r.cross_account[0].importer, "acme");
        assert!(r.dot().contains("stream import"));
        assert!(r.table().contains("stream prices.> globex -> acme"));
        let g = r.only_account("globex");
        assert_eq!(g.accounts, vec!["acme", "globex"]);
        assert_eq!(g.cross_account.len(), 1);
    }
}
