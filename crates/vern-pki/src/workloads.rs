//! Registration entries: which workloads on which node get which service's
//! SVIDs. An entry names a node (the `vern agent` that attests the
//! workload), the selectors the workload must match on that node (Unix uid,
//! gid, executable path, executable SHA-256: all of them), the service
//! whose SPIFFE ID it gets, and optionally a lifetime for its X.509-SVIDs.
//! Entries are kept behind the barrier under `pki/workloads/<node>/<id>`,
//! so a node's entries are one range read. Who may register an entry is the
//! server's policy decision (`workload.register` on the service); this
//! module only keeps them well-formed.

use std::fmt;

use serde::{Deserialize, Serialize};
use vern_core::{EnvironmentId, Principal, PrincipalKind, ProjectId, Scope, TenantId};
use vern_crypto::SecretBytes;
use vern_seal::{Barrier, BarrierWrite, Expect, ViewBatch};

use crate::ca::view;
use crate::PkiError;

const PREFIX: &str = "workloads/";
/// Keys listed per storage read.
const PAGE: usize = 500;
/// Selectors one entry may carry.
pub const MAX_SELECTORS: usize = 16;
/// Longest executable path a selector may name.
const MAX_PATH: usize = 4096;

/// One property a workload must have on its node.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Selector {
    /// `unix:uid:N`: the process's user id.
    Uid(u32),
    /// `unix:gid:N`: the process's group id.
    Gid(u32),
    /// `unix:path:/abs/path`: the process's executable.
    Path(String),
    /// `unix:sha256:HEX`: the SHA-256 of the process's executable.
    Sha256(String),
}

impl Selector {
    /// Parses `unix:uid:N`, `unix:gid:N`, `unix:path:/PATH` or
    /// `unix:sha256:HEX` (64 hex digits).
    pub fn parse(s: &str) -> Result<Self, PkiError> {
        let bad = |why: &str| {
            PkiError::InvalidRequest(format!(
                "selector `{}` {why}; use unix:uid:N, unix:gid:N, unix:path:/PATH or unix:sha256:HEX",
                s.chars().take(80).collect::<String>().escape_default()
            ))
        };
        let rest = s
            .strip_prefix("unix:")
            .ok_or_else(|| bad("is not a unix selector"))?;
        let (kind, value) = rest.split_once(':').ok_or_else(|| bad("has no value"))?;
        match kind {
            "uid" => value
                .parse()
                .map(Self::Uid)
                .map_err(|_| bad("needs a numeric uid")),
            "gid" => value
                .parse()
                .map(Self::Gid)
                .map_err(|_| bad("needs a numeric gid")),
            "path" => {
                if !value.starts_with('/')
                    || value.len() > MAX_PATH
                    || value.chars().any(char::is_control)
                {
                    return Err(bad("needs an absolute path without control characters"));
                }
                Ok(Self::Path(value.to_owned()))
            }
            "sha256" => {
                if value.len() != 64 || !value.bytes().all(|b| b.is_ascii_hexdigit()) {
                    return Err(bad("needs 64 hex digits"));
                }
                Ok(Self::Sha256(value.to_ascii_lowercase()))
            }
            _ => Err(bad("has an unknown kind")),
        }
    }

    /// Whether a workload with these attested properties has this one.
    pub fn matches(&self, w: &AttestedWorkload) -> bool {
        match self {
            Self::Uid(u) => w.uid == *u,
            Self::Gid(g) => w.gid == *g,
            Self::Path(p) => w.path.as_deref() == Some(p.as_str()),
            Self::Sha256(h) => w.sha256.as_deref() == Some(h.as_str()),
        }
    }
}

impl fmt::Display for Selector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Uid(u) => write!(f, "unix:uid:{u}"),
            Self::Gid(g) => write!(f, "unix:gid:{g}"),
            Self::Path(p) => write!(f, "unix:path:{p}"),
            Self::Sha256(h) => write!(f, "unix:sha256:{h}"),
        }
    }
}

impl Serialize for Selector {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Selector {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Self::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// What a node's agent learned of a workload from its socket peer.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AttestedWorkload {
    /// User id.
    pub uid: u32,
    /// Group id.
    pub gid: u32,
    /// The executable's path, when it could be read.
    pub path: Option<String>,
    /// The executable's SHA-256 (lowercase hex), when it could be read.
    pub sha256: Option<String>,
}

/// A registration entry as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkloadEntry {
    /// The entry's id (32 hex digits).
    pub id: String,
    /// The node's client id, `node.<name>`.
    pub node: String,
    /// What a workload must match, all of it.
    pub selectors: Vec<Selector>,
    /// The service client id whose SPIFFE ID the workload gets.
    pub service: String,
    /// Lifetime of its X.509-SVIDs in seconds, when not the default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl: Option<u64>,
    /// Creation time (Unix seconds).
    pub created: u64,
}

impl WorkloadEntry {
    /// Whether `w` matches every selector of the entry.
    pub fn matches(&self, w: &AttestedWorkload) -> bool {
        self.selectors.iter().all(|s| s.matches(w))
    }
}

/// What to register.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkloadSpec {
    /// The node: `node.<name>` or `<name>`.
    pub node: String,
    /// Selectors, at least one.
    pub selectors: Vec<Selector>,
    /// The service client id, `svc.<tenant>.<project>.<env>.<name>`.
    pub service: String,
    /// Lifetime of its X.509-SVIDs in seconds.
    pub ttl: Option<u64>,
}

/// A node's client id from `node.<name>` or `<name>`.
pub fn node_client_id(node: &str) -> Result<String, PkiError> {
    let name = node.strip_prefix("node.").unwrap_or(node);
    let name = TenantId::parse(name)
        .map_err(|e| PkiError::InvalidRequest(e.to_string().replace("tenant name", "node name")))?;
    Ok(format!("node.{name}"))
}

/// The service principal a service client id names
/// (`svc.<tenant>.<project>.<env>.<name>`), for its SPIFFE ID and for the
/// policy decision on it.
pub fn service_principal(service: &str) -> Result<Principal, PkiError> {
    let bad = || {
        PkiError::InvalidRequest(format!(
            "service `{}` is not a service client id svc.<tenant>.<project>.<env>.<name>",
            service
                .chars()
                .take(128)
                .collect::<String>()
                .escape_default()
        ))
    };
    let rest = service.strip_prefix("svc.").ok_or_else(bad)?;
    let parts: Vec<&str> = rest.split('.').collect();
    let [t, p, e, name] = parts.as_slice() else {
        return Err(bad());
    };
    let scope = Scope {
        tenant: TenantId::parse(t).map_err(|_| bad())?,
        project: ProjectId::parse(p).map_err(|_| bad())?,
        environment: EnvironmentId::parse(e).map_err(|_| bad())?,
    };
    TenantId::parse(name).map_err(|_| bad())?;
    Ok(Principal {
        id: service.to_owned(),
        kind: PrincipalKind::Service { scope },
    })
}

impl WorkloadSpec {
    /// Checks the spec; returns the node's client id and the selectors,
    /// sorted and without repeats.
    fn validate(&self) -> Result<(String, Vec<Selector>), PkiError> {
        let node = node_client_id(&self.node)?;
        service_principal(&self.service)?;
        if self.selectors.is_empty() || self.selectors.len() > MAX_SELECTORS {
            return Err(PkiError::InvalidRequest(format!(
                "an entry needs 1 to {MAX_SELECTORS} selectors"
            )));
        }
        if self.ttl == Some(0) {
            return Err(PkiError::InvalidRequest(
                "ttl must be at least one second".to_owned(),
            ));
        }
        let mut selectors = self.selectors.clone();
        selectors.sort();
        selectors.dedup();
        Ok((node, selectors))
    }
}

/// Stores a new entry; an entry with the same node, service and selectors
/// is refused.
pub(crate) async fn register(
    barrier: &Barrier,
    spec: &WorkloadSpec,
    now: u64,
) -> Result<WorkloadEntry, PkiError> {
    let (node, selectors) = spec.validate()?;
    let existing = list(barrier, Some(&node)).await?;
    if existing
        .iter()
        .any(|e| e.service == spec.service && e.selectors == selectors)
    {
        return Err(PkiError::Conflict(format!(
            "node {node} already has an entry for {} with these selectors",
            spec.service
        )));
    }
    let entry = WorkloadEntry {
        id: hex::encode(rand::random::<[u8; 16]>()),
        node,
        selectors,
        service: spec.service.clone(),
        ttl: spec.ttl,
        created: now,
    };
    let bytes = serde_json::to_vec(&entry)
        .map_err(|e| PkiError::Internal(format!("cannot encode an entry: {e}")))?;
    view(barrier)?
        .commit(vec![BarrierWrite {
            key: key_of(&entry.node, &entry.id),
            value: Some(SecretBytes::new(bytes)),
            expect: Expect::Absent,
        }])
        .await?;
    Ok(entry)
}

fn key_of(node: &str, id: &str) -> String {
    format!("{PREFIX}{node}/{id}")
}

/// Every entry, or one node's (by client id).
pub(crate) async fn list(
    barrier: &Barrier,
    node: Option<&str>,
) -> Result<Vec<WorkloadEntry>, PkiError> {
    let view = view(barrier)?;
    let prefix = match node {
        Some(n) => format!("{PREFIX}{n}/"),
        None => PREFIX.to_owned(),
    };
    let mut out = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let keys = view.list(&prefix, after.as_deref(), PAGE).await?;
        let Some(last) = keys.last().cloned() else {
            return Ok(out);
        };
        for key in keys {
            if let Some(plain) = view.get(&key).await? {
                let entry: WorkloadEntry = serde_json::from_slice(plain.value.expose())
                    .map_err(|_| PkiError::corrupt(&key))?;
                out.push(entry);
            }
        }
        after = Some(last);
    }
}

/// One entry by id.
pub(crate) async fn get(barrier: &Barrier, id: &str) -> Result<Option<WorkloadEntry>, PkiError> {
    if id.len() != 32 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Ok(None);
    }
    Ok(list(barrier, None).await?.into_iter().find(|e| e.id == id))
}

/// The deletion of every entry of `node` (a client id), as a batch for
/// the caller to commit with the node's own deletion.
pub(crate) async fn removal_of_node(barrier: &Barrier, node: &str) -> Result<ViewBatch, PkiError> {
    let writes = list(barrier, Some(node))
        .await?
        .iter()
        .map(|e| BarrierWrite {
            key: key_of(&e.node, &e.id),
            value: None,
            expect: Expect::Any,
        })
        .collect();
    Ok(view(barrier)?.batch(writes)?)
}

/// The deletion of every node's entries, one batch per node, leaving out
/// the entries in `skip` (deleted by the same commit already): for the
/// caller to commit with whichever nodes it deletes.
pub(crate) async fn removals_by_node(
    barrier: &Barrier,
    skip: &[WorkloadEntry],
) -> Result<std::collections::BTreeMap<String, ViewBatch>, PkiError> {
    let mut by_node: std::collections::BTreeMap<String, Vec<BarrierWrite>> =
        std::collections::BTreeMap::new();
    for e in list(barrier, None).await? {
        if skip.iter().any(|s| s.node == e.node && s.id == e.id) {
            continue;
        }
        by_node
            .entry(e.node.clone())
            .or_default()
            .push(BarrierWrite {
                key: key_of(&e.node, &e.id),
                value: None,
                expect: Expect::Any,
            });
    }
    let view = view(barrier)?;
    by_node
        .into_iter()
        .map(|(node, writes)| Ok((node, view.batch(writes)?)))
        .collect()
}

/// Deletes an entry.
pub(crate) async fn delete(barrier: &Barrier, entry: &WorkloadEntry) -> Result<(), PkiError> {
    view(barrier)?
        .commit(vec![BarrierWrite {
            key: key_of(&entry.node, &entry.id),
            value: None,
            expect: Expect::Any,
        }])
        .await?;
    Ok(())
}

/// What applying a declared set of entries does.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WorkloadPlan {
    /// Entries to create.
    pub create: Vec<WorkloadEntry>,
    /// Entries to delete (pruned: not declared, and the caller may manage
    /// them).
    pub delete: Vec<WorkloadEntry>,
    /// Declared entries already stored.
    pub unchanged: Vec<WorkloadEntry>,
    /// Entries not declared and kept (no pruning, or not the caller's).
    pub kept: Vec<WorkloadEntry>,
}

/// Plans a declared set of entries against the stored ones: an entry is
/// the same when its node, service, selectors and lifetime are. With
/// `prune`, stored entries not declared that `may_manage` allows are
/// deleted. Nothing is written.
pub(crate) async fn plan(
    barrier: &Barrier,
    declared: &[WorkloadSpec],
    prune: bool,
    may_manage: &(dyn Fn(&WorkloadEntry) -> bool + Sync),
    now: u64,
) -> Result<WorkloadPlan, PkiError> {
    let stored = list(barrier, None).await?;
    let mut out = WorkloadPlan::default();
    let mut wanted: Vec<(String, Vec<Selector>, &WorkloadSpec)> = Vec::new();
    for (i, spec) in declared.iter().enumerate() {
        let (node, selectors) = spec.validate().map_err(|e| match e {
            PkiError::InvalidRequest(m) => PkiError::InvalidRequest(format!("workloads[{i}]: {m}")),
            other => other,
        })?;
        if wanted
            .iter()
            .any(|(n, s, w)| *n == node && *s == selectors && w.service == spec.service)
        {
            return Err(PkiError::InvalidRequest(format!(
                "workloads[{i}] declares the same entry twice"
            )));
        }
        wanted.push((node, selectors, spec));
    }
    let same = |e: &WorkloadEntry, (n, s, w): &(String, Vec<Selector>, &WorkloadSpec)| {
        e.node == *n && e.selectors == *s && e.service == w.service && e.ttl == w.ttl
    };
    for e in stored {
        if wanted.iter().any(|w| same(&e, w)) {
            out.unchanged.push(e);
        } else if prune && may_manage(&e) {
            out.delete.push(e);
        } else {
            out.kept.push(e);
        }
    }
    for w in &wanted {
        if !out.unchanged.iter().any(|e| same(e, w)) {
            out.create.push(WorkloadEntry {
                id: hex::encode(rand::random::<[u8; 16]>()),
                node: w.0.clone(),
                selectors: w.1.clone(),
                service: w.2.service.clone(),
                ttl: w.2.ttl,
                created: now,
            });
        }
    }
    Ok(out)
}

/// The writes of a plan as a batch of the `pki/` view, for the caller to
/// commit with other domains' batches in one transaction: creations
/// expect their keys absent.
pub(crate) fn plan_batch(barrier: &Barrier, plan: &WorkloadPlan) -> Result<ViewBatch, PkiError> {
    let mut writes = Vec::with_capacity(plan.create.len() + plan.delete.len());
    for e in &plan.create {
        let bytes = serde_json::to_vec(e)
            .map_err(|err| PkiError::Internal(format!("cannot encode an entry: {err}")))?;
        writes.push(BarrierWrite {
            key: key_of(&e.node, &e.id),
            value: Some(SecretBytes::new(bytes)),
            expect: Expect::Absent,
        });
    }
    for e in &plan.delete {
        writes.push(BarrierWrite {
            key: key_of(&e.node, &e.id),
            value: None,
            expect: Expect::Any,
        });
    }
    Ok(view(barrier)?.batch(writes)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selectors_parse_and_print_back() {
        for s in [
            "unix:uid:1000",
            "unix:gid:0",
            "unix:path:/usr/bin/x",
            "unix:sha256:00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff",
        ] {
            assert_eq!(Selector::parse(s).unwrap().to_string(), s);
        }
        for bad in [
            "uid:1000",
            "unix:uid:-1",
            "unix:uid:x",
            "unix:path:relative",
            "unix:sha256:abc",
            "unix:pid:1",
            "unix:uid",
        ] {
            assert!(Selector::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn an_entry_matches_only_with_every_selector() {
        let entry = WorkloadEntry {
            id: "0".repeat(32),
            node: "node.n1".to_owned(),
            selectors: vec![Selector::Uid(1000), Selector::Path("/bin/x".to_owned())],
            service: "svc.acme.web.prod.api".to_owned(),
            ttl: None,
            created: 0,
        };
        let mut w = AttestedWorkload {
            uid: 1000,
            gid: 5,
            path: Some("/bin/x".to_owned()),
            sha256: None,
        };
        assert!(entry.matches(&w));
        w.path = Some("/bin/y".to_owned());
        assert!(!entry.matches(&w));
        w.path = Some("/bin/x".to_owned());
        w.uid = 1001;
        assert!(!entry.matches(&w));
    }

    #[test]
    fn service_ids_are_parsed_strictly() {
        let p = service_principal("svc.acme.web.prod.api").unwrap();
        assert_eq!(p.id, "svc.acme.web.prod.api");
        for bad in [
            "op.acme.x",
            "svc.acme.web.prod",
            "svc.acme.web.prod.api.x",
            "svc.ac/me.web.prod.api",
            "svc..web.prod.api",
        ] {
            assert!(service_principal(bad).is_err(), "{bad}");
        }
        assert_eq!(node_client_id("n1").unwrap(), "node.n1");
        assert_eq!(node_client_id("node.n1").unwrap(), "node.n1");
        assert!(node_client_id("node.a/b").is_err());
    }
}
