//! The decision cache of one loaded policy set.
//!
//! A decision is a pure function of the query and the policies, so the
//! same query against the same set may be answered from memory. The cache
//! lives inside the loaded set: a reload swaps the set and its cache
//! together, so a changed policy takes effect at once and no stale entry
//! can outlive its policies. Each process has its own cache and the set is
//! loaded from files, so there is nothing to invalidate across replicas.
//!
//! The key holds everything a decision reads except the request time,
//! because the cache is off when any policy reads `context.time` (or an
//! unknown context attribute, or `context` as a whole): such a decision
//! may change while the query stays the same. The caller's address is in
//! the key only when a policy reads `context.source_ip`; otherwise it
//! cannot change a decision, and leaving it out lets requests from many
//! addresses share entries.
//!
//! Storage is `quick_cache`'s sharded concurrent cache: memory is bounded
//! by a fixed number of entries, each shard has its own short-held lock
//! (taken for a hash lookup or insert, never while deciding), and its
//! CLOCK-Pro-like eviction keeps frequently asked decisions while a scan of
//! one-off queries (for example many distinct secret paths) passes through
//! without flushing them, which a map cleared when full would not do.

use cedar_policy::PolicySet;
use serde_json::Value;

use crate::engine::Decision;
use crate::model::{Binding, Query, Resource, SubjectKind};

/// Entries kept at most by default. An entry (the query as its key, the
/// decision with its policy names) takes one to two kilobytes with the
/// allocator's overhead, as the memory benchmark measured (65,536 entries
/// cost some 60 MB after a bulk load of distinct secrets), so this bounds
/// the cache to about 15 MB.
pub(crate) const DEFAULT_CAPACITY: usize = 8_192;

/// How the decision cache of the policies in force is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CacheStats {
    /// Whether decisions are cached at all: not when a policy reads the
    /// time or the context as a whole, nor with a capacity of zero.
    pub enabled: bool,
    /// Whether the caller's address is part of the key (a policy reads
    /// `context.source_ip`).
    pub keyed_on_source_ip: bool,
    /// Decisions held now.
    pub entries: usize,
    /// Decisions held at most.
    pub capacity: usize,
    /// Lookups answered from the cache since the policies were loaded.
    pub hits: u64,
    /// Lookups that had to decide since the policies were loaded.
    pub misses: u64,
}

/// Which parts of `context` a policy set reads, found by walking each
/// policy's JSON form (Cedar's own syntax tree), never its text.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct ContextReads {
    /// A policy reads something that is not in the cache key: the time,
    /// an attribute this code does not know, or `context` as a whole.
    pub(crate) uncacheable: bool,
    /// A policy reads the caller's address.
    pub(crate) source_ip: bool,
}

impl ContextReads {
    /// What the policies of `set` read.
    pub(crate) fn of(set: &PolicySet) -> Self {
        let mut reads = Self::default();
        for p in set.policies() {
            match p.to_json() {
                Ok(json) => reads.walk(&json),
                // A policy that cannot be shown as JSON cannot be proven
                // time-independent.
                Err(_) => reads.uncacheable = true,
            }
        }
        reads
    }

    fn walk(&mut self, v: &Value) {
        match v {
            Value::Object(map) => {
                for (k, inner) in map {
                    // `context.a` is {".": {"left": {"Var": "context"},
                    // "attr": "a"}}, `context has a` the same under "has".
                    if k == "." || k == "has" {
                        if let Some(attr) = context_attr(inner) {
                            self.note(attr);
                            continue;
                        }
                    }
                    // Any other use of `context` may read any attribute.
                    if k == "Var" && inner.as_str() == Some("context") {
                        self.uncacheable = true;
                    }
                    self.walk(inner);
                }
            }
            Value::Array(items) => items.iter().for_each(|i| self.walk(i)),
            _ => {}
        }
    }

    fn note(&mut self, attr: &str) {
        match attr {
            "source_ip" => self.source_ip = true,
            // The binding and the DNS names are in the key; the grant flag
            // is derived from the rest of the key by the engine itself.
            "binding" | "dns_names" | "cross_tenant_grant" => {}
            _ => self.uncacheable = true,
        }
    }
}

/// The attribute of `{"left": {"Var": "context"}, "attr": a}`, if that is
/// what `v` is.
fn context_attr(v: &Value) -> Option<&str> {
    let left = v.get("left")?;
    if left.get("Var")?.as_str()? != "context" {
        return None;
    }
    v.get("attr")?.as_str()
}

/// The decision cache of one loaded set.
pub(crate) struct DecisionCache {
    entries: quick_cache::sync::Cache<Vec<u8>, Decision>,
    source_ip: bool,
    capacity: usize,
}

impl DecisionCache {
    /// A cache for a set that reads `reads`, or none when its decisions
    /// may not be cached or `capacity` is zero.
    pub(crate) fn new(capacity: usize, reads: ContextReads) -> Option<Self> {
        if capacity == 0 || reads.uncacheable {
            return None;
        }
        Some(Self {
            entries: quick_cache::sync::Cache::new(capacity),
            source_ip: reads.source_ip,
            capacity,
        })
    }

    pub(crate) fn get(&self, key: &[u8]) -> Option<Decision> {
        self.entries.get(key)
    }

    pub(crate) fn insert(&self, key: Vec<u8>, decision: Decision) {
        self.entries.insert(key, decision);
    }

    pub(crate) fn stats(&self) -> CacheStats {
        CacheStats {
            enabled: true,
            keyed_on_source_ip: self.source_ip,
            entries: self.entries.len(),
            capacity: self.capacity,
            hits: self.entries.hits(),
            misses: self.entries.misses(),
        }
    }

    /// The key of `q`: every field of the query but the time, and the
    /// address only if a policy reads it. Each string is length-prefixed
    /// and each variant tagged, so two different queries never share a key.
    pub(crate) fn key(&self, q: &Query) -> Vec<u8> {
        let mut k = Key(Vec::with_capacity(160));
        k.str(&q.subject.id);
        match &q.subject.kind {
            SubjectKind::Service { scope, scopes } => {
                k.tag(0);
                k.scope(scope);
                k.list(scopes);
            }
            SubjectKind::Operator {
                roles,
                tenant,
                root,
            } => {
                k.tag(1);
                k.list(roles);
                k.opt(tenant.as_ref().map(|t| t.as_str()));
                k.tag(u8::from(*root));
            }
            SubjectKind::Node { services } => {
                k.tag(2);
                k.list(services);
            }
        }
        k.str(&q.action);
        match &q.resource {
            Resource::Platform => k.tag(0),
            Resource::Tenant(t) => {
                k.tag(1);
                k.str(t.as_str());
            }
            Resource::Project(t, p) => {
                k.tag(2);
                k.str(t.as_str());
                k.str(p.as_str());
            }
            Resource::Environment(s) => {
                k.tag(3);
                k.scope(s);
            }
            Resource::Service { id, scope } => {
                k.tag(4);
                k.str(id);
                k.scope(scope);
            }
            Resource::Operator { id, tenant } => {
                k.tag(5);
                k.str(id);
                k.opt(tenant.as_ref().map(|t| t.as_str()));
            }
            Resource::Secret { mount, path, scope } => {
                k.tag(6);
                k.str(mount);
                k.str(path);
                k.scope(scope);
            }
            Resource::NatsSubject {
                tenant,
                subject,
                privileged,
            } => {
                k.tag(7);
                k.str(tenant.as_str());
                k.str(subject);
                k.tag(u8::from(*privileged));
            }
            Resource::Node { id } => {
                k.tag(8);
                k.str(id);
            }
        }
        k.tag(match q.binding {
            Binding::None => 0,
            Binding::Dpop => 1,
            Binding::Mtls => 2,
        });
        k.list(&q.dns_names);
        k.opt(self.source_ip.then_some(q.source_ip.as_str()));
        k.0
    }
}

/// An unambiguous byte encoding of a query's fields.
struct Key(Vec<u8>);

impl Key {
    fn tag(&mut self, t: u8) {
        self.0.push(t);
    }

    fn str(&mut self, s: &str) {
        self.0.extend_from_slice(&(s.len() as u64).to_le_bytes());
        self.0.extend_from_slice(s.as_bytes());
    }

    fn opt(&mut self, s: Option<&str>) {
        match s {
            None => self.tag(0),
            Some(s) => {
                self.tag(1);
                self.str(s);
            }
        }
    }

    fn list(&mut self, items: &[String]) {
        self.0
            .extend_from_slice(&(items.len() as u64).to_le_bytes());
        for i in items {
            self.str(i);
        }
    }

    fn scope(&mut self, s: &vern_core::Scope) {
        self.str(s.tenant.as_str());
        self.str(s.project.as_str());
        self.str(s.environment.as_str());
    }
}

#[cfg(test)]
mod tests {
    use std::str::FromStr;

    use super::*;

    fn reads(text: &str) -> ContextReads {
        ContextReads::of(&PolicySet::from_str(text).unwrap())
    }

    #[test]
    fn context_reads_are_found_in_the_syntax_tree() {
        let none = ContextReads::default();
        let ip = ContextReads {
            uncacheable: false,
            source_ip: true,
        };
        let whole = ContextReads {
            uncacheable: true,
            source_ip: false,
        };
        for (policy, want) in [
            ("permit (principal, action, resource);", none),
            ("permit (principal, action, resource) when { context.binding == \"dpop\" };", none),
            ("permit (principal, action, resource) unless { context.cross_tenant_grant };", none),
            // Text that merely mentions the time is not a read.
            ("@note(\"context.time\") permit (principal, action, resource) when { \"context.time\" == \"x\" };", none),
            ("permit (principal, action, resource) when { context.source_ip == \"10.0.0.1\" };", ip),
            ("permit (principal, action, resource) when { ip(context[\"source_ip\"]).isLoopback() };", ip),
            ("permit (principal, action, resource) when { context.time < 100 };", whole),
            ("permit (principal, action, resource) when { context has time };", whole),
            ("permit (principal, action, resource) when { context has binding };", none),
            ("permit (principal, action, resource) when { context.dns_names.contains(\"a.example\") };", none),
            ("forbid (principal, action, resource) when { context.time > 0 || context.source_ip == \"x\" };", ContextReads { uncacheable: true, source_ip: true }),
            ("permit (principal, action, resource) when { context == {} };", whole),
            ("permit (principal, action, resource) when { {c: context}.c.binding == \"none\" };", whole),
            ("permit (principal, action, resource) when { context.nothing_known == 1 };", whole),
        ] {
            assert_eq!(reads(policy), want, "{policy}");
        }
    }
}
