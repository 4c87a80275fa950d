//! The path report: from the declarations and the policies' decisions,
//! who may publish and who may subscribe on which subjects of which
//! account, which publisher reaches which subscriber, and every principal
//! that reaches a privileged subject. Accounts are isolated, so a flow
//! never leaves its account except through an export and an import, which
//! exist only where a policy grants a client's declared import: those are
//! the cross-account paths.
//!
//! Subject mappings (the `nats:` apply section) are modelled as nats-server
//! 2.15 applies them, checked against the real server: a message published
//! on a mapping's source is delivered on its destination, and the
//! publisher's permission is checked on the destination, not on the
//! subject it published on. A publisher so reaches a subscriber through a
//! mapping when its permission and the subscription both overlap the
//! destination; a subscription the mappings' sources cover entirely
//! receives nothing directly. Where patterns only partly overlap, the
//! report keeps the path: it may show a path that never carries a
//! message, never hide one that does.
//!
//! Links to other sites: a gateway carries every account (the system
//! account too, which the report lists as privileged); a leafnode remote
//! carries one account, minus its deny lists, which nats-server 2.15 applies
//! to every message (tested): `deny_exports` to what this site sends,
//! `deny_imports` to what it delivers from the other site, a wildcard
//! subscription included (a delivery filter, as a connection's own
//! subscribe deny list is). A path so crosses unless a deny covers the
//! whole publish permission or subscription; one covered in part crosses
//! with the rest.

use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use crate::perms::{inbox_prefix, Direction, ImportKind, Permissions};
use crate::sites::{Topology, LEAF_ALWAYS_DENIED};
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
    /// The mapping the messages go through, if any: published on its
    /// `from`, delivered on its `to`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mapping: Option<MappingPath>,
}

/// A subject mapping of an account.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct MappingPath {
    /// The account.
    pub account: String,
    /// Published on.
    pub from: Subject,
    /// Delivered on.
    pub to: Subject,
    /// The subjects it delivers on, as a pattern (`$N` as `*`).
    #[serde(skip)]
    pub(crate) delivered: Option<Subject>,
}

/// Gateway or leafnode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LinkKind {
    /// A supercluster gateway: every account.
    Gateway,
    /// A leafnode remote: one account per link.
    Leafnode,
}

impl LinkKind {
    /// `gateway` or `leafnode`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Gateway => "gateway",
            Self::Leafnode => "leafnode",
        }
    }
}

/// A link to another site.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SiteLink {
    /// The other site.
    pub site: String,
    /// Gateway or leafnode.
    pub link: LinkKind,
    /// The accounts it carries; empty for a gateway, which carries all.
    pub accounts: Vec<String>,
    /// Subjects never sent over it.
    pub deny_exports: Vec<Subject>,
    /// Subjects never received over it.
    pub deny_imports: Vec<Subject>,
    /// Whether the system account crosses it.
    pub privileged: bool,
}

/// A principal's subject that crosses to or from another site.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct CrossSite {
    /// The other site.
    pub site: String,
    /// Gateway or leafnode.
    pub link: LinkKind,
    /// The account.
    pub account: String,
    /// The client.
    pub client_id: String,
    /// Publish (sent to the site) or subscribe (received from it).
    pub direction: Direction,
    /// The subject.
    pub subject: Subject,
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
    /// Every account's subject mappings.
    pub mappings: Vec<MappingPath>,
    /// Every link to another site.
    pub sites: Vec<SiteLink>,
    /// Every principal's subject that crosses a link, in or out.
    pub cross_site: Vec<CrossSite>,
}

impl PathReport {
    /// Builds the report from each principal's account, id and decided
    /// permissions, and the stored sites and mappings.
    pub fn build(principals: Vec<(String, String, Permissions)>, topology: &Topology) -> Self {
        let mut mappings: Vec<MappingPath> = topology
            .mappings
            .iter()
            .map(|m| MappingPath {
                account: m.tenant.clone(),
                from: m.from.clone(),
                to: m.to.clone(),
                delivered: Some(m.destination()),
            })
            .collect();
        mappings.sort();
        let mut report = Self {
            mappings,
            ..Self::default()
        };
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
        let mut flows = Vec::new();
        for publisher in &report.principals {
            let mappings: Vec<&MappingPath> = report
                .mappings
                .iter()
                .filter(|m| m.account == publisher.account)
                .collect();
            let swallowed = |s: &Subject| mappings.iter().any(|m| m.from.covers(s));
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
                        if is_inbox {
                            continue;
                        }
                        let flow = |mapping: Option<&MappingPath>| Flow {
                            account: publisher.account.clone(),
                            publisher: publisher.client_id.clone(),
                            publish: pubs.clone(),
                            subscriber: subscriber.client_id.clone(),
                            subscribe: subs.clone(),
                            mapping: mapping.cloned(),
                        };
                        if pubs.overlaps(subs) && !swallowed(pubs) && !swallowed(subs) {
                            flows.push(flow(None));
                        }
                        // The permission is checked on the destination, so
                        // the delivered subject is in both patterns too.
                        for m in &mappings {
                            if pubs.overlaps(subs) && pubs.overlaps(&m.to) && subs.overlaps(&m.to) {
                                flows.push(flow(Some(m)));
                            }
                        }
                    }
                }
            }
        }
        report.flows = flows;
        report.cross_sites(topology);
        report
    }

    /// The links to other sites, and each principal's subjects crossing
    /// them.
    fn cross_sites(&mut self, topology: &Topology) {
        let always: Vec<Subject> = LEAF_ALWAYS_DENIED
            .iter()
            .filter_map(|s| Subject::parse(s).ok())
            .collect();
        for site in &topology.sites {
            let mut links = Vec::new();
            if site.gateway.is_some() {
                links.push(SiteLink {
                    site: site.name.clone(),
                    link: LinkKind::Gateway,
                    accounts: Vec::new(),
                    deny_exports: Vec::new(),
                    deny_imports: Vec::new(),
                    privileged: true,
                });
            }
            if let Some(l) = &site.leafnode {
                let deny = |declared: &[Subject]| {
                    let mut all = always.clone();
                    all.extend(declared.iter().filter(|d| !always.contains(d)).cloned());
                    all
                };
                links.push(SiteLink {
                    site: site.name.clone(),
                    link: LinkKind::Leafnode,
                    accounts: l.accounts.clone(),
                    deny_exports: deny(&l.deny_exports),
                    deny_imports: deny(&l.deny_imports),
                    privileged: false,
                });
            }
            for link in links {
                for p in &self.principals {
                    if link.link == LinkKind::Leafnode && !link.accounts.contains(&p.account) {
                        continue;
                    }
                    let inbox = inbox_prefix(&p.client_id).ok();
                    for (direction, list, deny) in [
                        (Direction::Publish, &p.publish, &link.deny_exports),
                        (Direction::Subscribe, &p.subscribe, &link.deny_imports),
                    ] {
                        for s in list {
                            let is_inbox = inbox
                                .as_ref()
                                .is_some_and(|i| s.as_str().starts_with(i.as_str()));
                            if is_inbox || deny.iter().any(|d| d.covers(s)) {
                                continue;
                            }
                            self.cross_site.push(CrossSite {
                                site: link.site.clone(),
                                link: link.link,
                                account: p.account.clone(),
                                client_id: p.client_id.clone(),
                                direction,
                                subject: s.clone(),
                            });
                        }
                    }
                }
                self.sites.push(link);
            }
        }
        self.cross_site.sort();
        for link in &self.sites {
            for a in &link.accounts {
                if !self.accounts.contains(a) {
                    self.accounts.push(a.clone());
                }
            }
        }
        for m in &self.mappings {
            if !self.accounts.contains(&m.account) {
                self.accounts.push(m.account.clone());
            }
        }
        self.accounts.sort();
    }

    /// Keeps the parts of one account: its principals, its flows, its
    /// mappings, the cross-account paths in or out of it, the links that
    /// carry it and its subjects crossing them.
    pub fn only_account(mut self, account: &str) -> Self {
        self.mappings.retain(|m| m.account == account);
        self.sites
            .retain(|l| l.link == LinkKind::Gateway || l.accounts.iter().any(|a| a == account));
        // A leafnode's other accounts are other tenants' business.
        for l in &mut self.sites {
            l.accounts.retain(|a| a == account);
        }
        self.cross_site.retain(|c| c.account == account);
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
            let via = f
                .mapping
                .as_ref()
                .map(|m| format!(" via mapping {} -> {}", m.from, m.to))
                .unwrap_or_default();
            let _ = writeln!(
                out,
                "  [{}] {} ({}) -> {} ({}){via}",
                f.account, f.publisher, f.publish, f.subscriber, f.subscribe
            );
        }
        let _ = writeln!(
            out,
            "\nSUBJECT MAPPINGS (published on -> delivered on; publish permissions apply to the latter)"
        );
        if self.mappings.is_empty() {
            let _ = writeln!(out, "  none");
        }
        for m in &self.mappings {
            let _ = writeln!(out, "  [{}] {} -> {}", m.account, m.from, m.to);
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
        let _ = writeln!(out, "\nSITE LINKS");
        if self.sites.is_empty() {
            let _ = writeln!(out, "  none: no other site is linked");
        }
        for l in &self.sites {
            let accounts = if l.link == LinkKind::Gateway {
                "every account, SYS included".to_owned()
            } else {
                l.accounts.join(",")
            };
            let list = |v: &[Subject]| v.iter().map(Subject::as_str).collect::<Vec<_>>().join(",");
            let _ = writeln!(
                out,
                "  {} to {} ({accounts}); never sent: {}; never delivered from there: {}",
                l.link.name(),
                l.site,
                if l.deny_exports.is_empty() {
                    "-".to_owned()
                } else {
                    list(&l.deny_exports)
                },
                if l.deny_imports.is_empty() {
                    "-".to_owned()
                } else {
                    list(&l.deny_imports)
                },
            );
        }
        let _ = writeln!(
            out,
            "\nCROSS-SITE PATHS (publish: sent to the site; subscribe: received from it)"
        );
        if self.cross_site.is_empty() {
            let _ = writeln!(out, "  none");
        }
        for c in &self.cross_site {
            let _ = writeln!(
                out,
                "  [{}] {} {} {} {} {}",
                c.account,
                c.client_id,
                c.direction.name(),
                c.subject,
                match c.direction {
                    Direction::Publish => "->",
                    Direction::Subscribe => "<-",
                },
                format_args!("{} {}", c.link.name(), c.site)
            );
        }
        let _ = writeln!(out, "\nPRIVILEGED SUBJECTS");
        if self.privileged.is_empty() && !self.sites.iter().any(|l| l.privileged) {
            let _ = writeln!(out, "  none");
        }
        for l in self.sites.iter().filter(|l| l.privileged) {
            let _ = writeln!(
                out,
                "  the {} to {} carries the system account SYS",
                l.link.name(),
                l.site
            );
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
        for m in &self.mappings {
            let _ = writeln!(
                out,
                "  {} -> {} [label=\"mapping\", style=dotted];",
                q(&format!("{}:{}", m.account, m.from)),
                q(&format!("{}:{}", m.account, m.to))
            );
        }
        for l in &self.sites {
            let colour = if l.privileged { ", color=red" } else { "" };
            let _ = writeln!(
                out,
                "  {} [shape=doubleoctagon, label={}{colour}];",
                q(&format!("site:{}", l.site)),
                q(&format!("site {}", l.site))
            );
        }
        for c in &self.cross_site {
            let subject = q(&format!("{}:{}", c.account, c.subject));
            let site = q(&format!("site:{}", c.site));
            let label = format!(
                "[label=\"{}\", style=dashed, color=darkgreen]",
                c.link.name()
            );
            match c.direction {
                Direction::Publish => {
                    let _ = writeln!(out, "  {subject} -> {site} {label};");
                }
                Direction::Subscribe => {
                    let _ = writeln!(out, "  {site} -> {subject} {label};");
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
        let r = PathReport::build(
            vec![
                principal("acme", "a.pub", &["orders.>"], &[]),
                principal("acme", "a.sub", &[], &["orders.created"]),
                principal("globex", "g.sub", &[], &["orders.created"]),
                principal("globex", "g.mon", &[], &["$SYS.>"]),
            ],
            &Topology::default(),
        );
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
        let r = PathReport::build(
            vec![
                ("acme".to_owned(), "a.sub".to_owned(), p),
                principal("globex", "g.pub", &["prices.>"], &[]),
                principal("initech", "i.sub", &[], &["x"]),
            ],
            &Topology::default(),
        );
        assert_eq!(r.cross_account.len(), 1);
        assert_eq!(r.cross_account[0].exporter, "globex");
        assert_eq!(r.cross_account[0].importer, "acme");
        assert!(r.dot().contains("stream import"));
        assert!(r.table().contains("stream prices.> globex -> acme"));
        let g = r.only_account("globex");
        assert_eq!(g.accounts, vec!["acme", "globex"]);
        assert_eq!(g.cross_account.len(), 1);
    }

    fn topology() -> Topology {
        let section: crate::sites::NatsSection = serde_json::from_value(serde_json::json!({
            "site": "dc1",
            "sites": [{"name": "dc2", "leafnode": {"url": "nats-leaf://dc2:7422",
                       "accounts": ["acme"], "deny_imports": ["orders.secret.>"],
                       "deny_exports": ["audit.>"]}},
                      {"name": "dc3", "gateway": {"urls": ["nats://dc3:7222"]}}],
            "mappings": [{"tenant": "acme", "from": "orders.v1.>", "to": "orders.>"}],
        }))
        .unwrap();
        section.check().unwrap();
        Topology {
            local: None,
            sites: section.sites,
            mappings: section.mappings,
        }
    }

    #[test]
    fn mappings_redirect_flows() {
        let r = PathReport::build(
            vec![
                principal("acme", "a.pub", &["orders.>"], &[]),
                principal("acme", "a.old", &["orders.v1.>"], &[]),
                principal("acme", "a.sub", &[], &["orders.created"]),
                principal("acme", "a.v1", &[], &["orders.v1.>"]),
            ],
            &topology(),
        );
        let has = |p: &str, s: &str, mapped: bool| {
            r.flows
                .iter()
                .any(|f| f.publisher == p && f.subscriber == s && f.mapping.is_some() == mapped)
        };
        assert!(has("a.pub", "a.sub", false));
        assert!(has("a.pub", "a.sub", true));
        // Published on orders.v1.x, checked and delivered on orders.x: a
        // permission on orders.v1.> reaches orders.created by no subject,
        // and orders.v1.> only through the mapping (orders.v1.v1.x is
        // delivered on orders.v1.x).
        assert!(!has("a.old", "a.sub", false) && !has("a.old", "a.sub", true));
        assert!(has("a.old", "a.v1", true));
        // Everything published on orders.v1.> is mapped before delivery:
        // nothing reaches a.v1 unmapped.
        assert!(!r
            .flows
            .iter()
            .any(|f| f.subscriber == "a.v1" && f.mapping.is_none()));
        assert!(r.table().contains("via mapping orders.v1.> -> orders.>"));
        assert!(r.dot().contains("[label=\"mapping\", style=dotted]"));
    }

    #[test]
    fn sites_carry_their_accounts_minus_the_denied() {
        let r = PathReport::build(
            vec![
                principal("acme", "a.pub", &["orders.>", "audit.x"], &[]),
                principal("acme", "a.sub", &[], &["orders.created", "orders.secret.>"]),
                principal("globex", "g.sub", &[], &["orders.created"]),
            ],
            &topology(),
        );
        let leaf: Vec<(&str, &str, &str)> = r
            .cross_site
            .iter()
            .filter(|c| c.link == LinkKind::Leafnode)
            .map(|c| (c.client_id.as_str(), c.direction.name(), c.subject.as_str()))
            .collect();
        assert_eq!(
            leaf,
            vec![
                ("a.pub", "publish", "orders.>"),
                ("a.sub", "subscribe", "orders.created"),
            ]
        );
        // The gateway carries every account, globex's too.
        assert!(r
            .cross_site
            .iter()
            .any(|c| c.link == LinkKind::Gateway && c.client_id == "g.sub"));
        assert!(r
            .sites
            .iter()
            .any(|l| l.link == LinkKind::Gateway && l.privileged));
        let leaf = r
            .sites
            .iter()
            .find(|l| l.link == LinkKind::Leafnode)
            .unwrap();
        assert!(leaf.deny_imports.iter().any(|d| d.as_str() == "$SYS.>"));
        let table = r.table();
        assert!(
            table.contains("the gateway to dc3 carries the system account SYS"),
            "{table}"
        );
        assert!(
            table.contains("[acme] a.pub publish orders.> -> leafnode dc2"),
            "{table}"
        );
        assert!(r.dot().contains("\"site:dc2\" -> \"acme:orders.created\""));
        let g = r.only_account("globex");
        assert_eq!(g.sites.len(), 1);
        assert!(g.cross_site.iter().all(|c| c.account == "globex"));
    }
}
