//! Loading policies and deciding.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::{Arc, RwLock};

use cedar_policy::{
    Authorizer, Decision as CedarDecision, Effect, EntityId, EntityTypeName, EntityUid, PolicyId,
    PolicySet, Request, Response, Schema, ValidationMode, Validator,
};

use crate::cache::{CacheStats, ContextReads, DecisionCache, DEFAULT_CAPACITY};
use crate::model::{uid, Binding, Query, ACTIONS};
use crate::partition::{Partitioned, PrincipalKind, RequestKeys};

const SCHEMA: &str = include_str!("schema.cedarschema");
const BUILTIN: &str = include_str!("builtin.cedar");
/// The annotation that makes a file's permit a cross-tenant grant.
const GRANT: &str = "cross_tenant_grant";
/// Policy ids starting with this are Vern's own.
const RESERVED: &str = "vern.";

/// Why policies could not be loaded. The old set keeps serving.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PolicyError {
    /// A file could not be read.
    #[error("cannot read {path}: {detail}")]
    Read {
        /// The file or directory.
        path: String,
        /// What went wrong.
        detail: String,
    },
    /// Parse or validation errors, one line each, naming the file.
    #[error("policies are invalid:\n{}", .0.join("\n"))]
    Invalid(Vec<String>),
    /// The built-in schema or policies are broken (a build defect).
    #[error("built-in policies are broken: {0}")]
    Builtin(String),
    /// Valid policies could not be split by tenant (a defect, not the
    /// caller's: Cedar refused a policy it had accepted).
    #[error("policies could not be indexed by tenant: {0}")]
    Index(String),
}

/// One decision and why. The same query against the same policies always
/// gives an equal decision, whether or not it came from the cache.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// Allowed or denied (default deny).
    pub allowed: bool,
    /// The policies that determined it, sorted by id: the permits that
    /// allowed it, or the forbids that denied it (empty: nothing permitted
    /// it).
    pub policies: Vec<String>,
    /// The cross-tenant grant that lifted isolation, if one did (the first
    /// by id, when several match).
    pub grant: Option<String>,
    /// Evaluation errors, sorted (a policy that errors is skipped, never
    /// allows).
    pub errors: Vec<String>,
}

/// One loaded policy set: what `policies()` lists and validation checked,
/// the same policies split by tenant for deciding, and the decision cache
/// of exactly these policies (so a reload replaces it with them).
struct Loaded {
    main: PolicySet,
    grants: PolicySet,
    files: Vec<PathBuf>,
    main_parts: Partitioned,
    grant_parts: Partitioned,
    reads: ContextReads,
    cache: Option<DecisionCache>,
}

impl Loaded {
    fn new(
        main: PolicySet,
        grants: PolicySet,
        files: Vec<PathBuf>,
        cache_capacity: usize,
    ) -> Result<Self, PolicyError> {
        // Grants are permits of `main` too, so `main` holds every policy.
        let reads = ContextReads::of(&main);
        Ok(Self {
            main_parts: Partitioned::new(&main).map_err(PolicyError::Index)?,
            grant_parts: Partitioned::new(&grants).map_err(PolicyError::Index)?,
            cache: DecisionCache::new(cache_capacity, reads),
            reads,
            main,
            grants,
            files,
        })
    }
}

/// Which policies a decision evaluates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Sets {
    /// The global policies and those of the request's tenants.
    Partitioned,
    /// Every policy, as before partitioning: the reference.
    Whole,
}

/// `set` as a list of sets to evaluate, empty if it has no policies.
fn non_empty(set: &PolicySet) -> Vec<&PolicySet> {
    if set.is_empty() {
        Vec::new()
    } else {
        vec![set]
    }
}

/// The merged outcome of evaluating one request against several disjoint
/// policy sets.
struct Outcome {
    allowed: bool,
    reasons: Vec<String>,
    errors: Vec<String>,
}

/// Merges the responses of disjoint policy sets into the response their
/// union would give (Cedar can only evaluate one set at a time): a
/// satisfied forbid in any set denies, with every satisfied forbid as the
/// reasons; otherwise any satisfied permit allows, with every satisfied
/// permit as the reasons; errors are all the sets' errors. A set's denial
/// names its satisfied forbids, or nothing when none was, and an allowing
/// set has none, so the forbids are exactly the reasons of denying sets.
/// Reasons and errors are sorted, so a decision does not depend on hash
/// order or on how the policies were split.
fn merge(responses: impl IntoIterator<Item = Response>) -> Outcome {
    let (mut permits, mut forbids, mut errors) = (Vec::new(), Vec::new(), Vec::new());
    for r in responses {
        let reasons = r.diagnostics().reason().map(policy_name);
        match r.decision() {
            CedarDecision::Allow => permits.extend(reasons),
            CedarDecision::Deny => forbids.extend(reasons),
        }
        errors.extend(r.diagnostics().errors().map(ToString::to_string));
    }
    let allowed = forbids.is_empty() && !permits.is_empty();
    let mut reasons = if forbids.is_empty() { permits } else { forbids };
    reasons.sort_unstable();
    errors.sort_unstable();
    Outcome {
        allowed,
        reasons,
        errors,
    }
}

/// A policy's id as Cedar displays it, escaped; an id that needs no
/// escaping (every usual one) is copied without running the formatter,
/// which was a noticeable part of a decision.
fn policy_name(id: &PolicyId) -> String {
    let raw: &str = id.as_ref();
    if raw
        .bytes()
        .all(|b| (b' '..=b'~').contains(&b) && !matches!(b, b'\\' | b'"' | b'\''))
    {
        raw.to_owned()
    } else {
        id.to_string()
    }
}

/// The policy engine of one process; reloads swap the whole set, with its
/// decision cache, at once.
pub struct PolicyEngine {
    schema: Schema,
    applies: HashMap<&'static str, Applies>,
    authorizer: Authorizer,
    cache_capacity: usize,
    current: RwLock<Arc<Loaded>>,
}

/// The principal and resource types one action applies to, per the schema.
struct Applies {
    principals: Vec<EntityTypeName>,
    resources: Vec<EntityTypeName>,
}

/// What each action applies to. Checking a request against this table is
/// what validating it against the schema checks (declared types, the
/// action's principal and resource types; Vern's schema has no enumerated
/// entity types whose ids would be checked too), except its context, whose
/// shape is the same for every request and is checked here, once per
/// action. So a request that passes the table needs no validation of its
/// own (it costs about a tenth of a decision), and one that does not is
/// validated, to fail with Cedar's own message.
fn applicability(schema: &Schema) -> Result<HashMap<&'static str, Applies>, PolicyError> {
    let builtin = |e: String| PolicyError::Builtin(e);
    let mut out = HashMap::with_capacity(ACTIONS.len());
    for &name in ACTIONS {
        let action = uid("Vern::Action", name).map_err(builtin)?;
        let applies = Applies {
            principals: schema
                .principals_for_action(&action)
                .map(|ts| ts.cloned().collect())
                .unwrap_or_default(),
            resources: schema
                .resources_for_action(&action)
                .map(|ts| ts.cloned().collect())
                .unwrap_or_default(),
        };
        let (Some(p), Some(r)) = (applies.principals.first(), applies.resources.first()) else {
            return Err(builtin(format!("action `{name}` applies to nothing")));
        };
        let any =
            |t: &EntityTypeName| EntityUid::from_type_name_and_id(t.clone(), EntityId::new("x"));
        for grant in [false, true] {
            let context = crate::model::context("0.0.0.0", 0, Binding::None, &[], grant);
            Request::new(any(p), action.clone(), any(r), context, Some(schema)).map_err(|e| {
                builtin(format!("the request context does not fit the schema: {e}"))
            })?;
        }
        out.insert(name, applies);
    }
    Ok(out)
}

fn builtin_set() -> Result<PolicySet, PolicyError> {
    let text = format!("{BUILTIN}\n{}", crate::roles::cedar());
    let parsed = PolicySet::from_str(&text).map_err(|e| PolicyError::Builtin(e.to_string()))?;
    let mut set = PolicySet::new();
    for p in parsed.policies() {
        let id = p
            .annotation("id")
            .ok_or_else(|| PolicyError::Builtin("a built-in policy lacks @id".to_owned()))?;
        set.add(p.new_id(PolicyId::new(id)))
            .map_err(|e| PolicyError::Builtin(e.to_string()))?;
    }
    Ok(set)
}

impl PolicyEngine {
    /// An engine with the built-in policies only.
    pub fn builtin() -> Result<Self, PolicyError> {
        let (schema, _) = Schema::from_cedarschema_str(SCHEMA)
            .map_err(|e| PolicyError::Builtin(e.to_string()))?;
        let engine = Self {
            applies: applicability(&schema)?,
            authorizer: Authorizer::new(),
            cache_capacity: DEFAULT_CAPACITY,
            current: RwLock::new(Arc::new(Loaded::new(
                builtin_set()?,
                PolicySet::new(),
                Vec::new(),
                DEFAULT_CAPACITY,
            )?)),
            schema,
        };
        let loaded = engine.current();
        engine.validate(&loaded.main, &loaded.grants)?;
        Ok(engine)
    }

    /// An engine with the built-ins and every `*.cedar` file of `dir`.
    pub fn from_dir(dir: &Path) -> Result<Self, PolicyError> {
        let engine = Self::builtin()?;
        engine.reload(dir)?;
        Ok(engine)
    }

    /// The same engine with a decision cache of at most `entries` decisions
    /// (0: no cache), for this and every later reload. The default is
    /// 8,192.
    pub fn with_decision_cache_capacity(mut self, entries: usize) -> Result<Self, PolicyError> {
        self.cache_capacity = entries;
        let old = self.current();
        let loaded = Loaded::new(
            old.main.clone(),
            old.grants.clone(),
            old.files.clone(),
            entries,
        )?;
        self.current = RwLock::new(Arc::new(loaded));
        Ok(self)
    }

    /// How the decision cache of the policies in force is doing.
    pub fn cache_stats(&self) -> CacheStats {
        let loaded = self.current();
        match &loaded.cache {
            Some(c) => c.stats(),
            None => CacheStats {
                enabled: false,
                keyed_on_source_ip: loaded.reads.source_ip,
                entries: 0,
                capacity: 0,
                hits: 0,
                misses: 0,
            },
        }
    }

    fn current(&self) -> Arc<Loaded> {
        Arc::clone(&self.current.read().unwrap_or_else(|e| e.into_inner()))
    }

    fn validate(&self, main: &PolicySet, grants: &PolicySet) -> Result<(), PolicyError> {
        let validator = Validator::new(self.schema.clone());
        let mut errors = Vec::new();
        for set in [main, grants] {
            let result = validator.validate(set, ValidationMode::Strict);
            errors.extend(
                result
                    .validation_errors()
                    .map(|e| format!("policy {}: {e}", e.policy_id())),
            );
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(PolicyError::Invalid(errors))
        }
    }

    /// Reads and validates `dir`'s policies, then swaps them in at once.
    /// On any error nothing changes and the old policies keep serving.
    /// Returns the number of file policies now in force.
    pub fn reload(&self, dir: &Path) -> Result<usize, PolicyError> {
        let (main, grants, files) = self.parse_dir(dir)?;
        self.validate(&main, &grants)?;
        let n = main.policies().count() - builtin_set()?.policies().count();
        let loaded = Loaded::new(main, grants, files, self.cache_capacity)?;
        let (global, tenants) = loaded.main_parts.shape();
        let cached = loaded.cache.is_some();
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(loaded);
        tracing::info!(
            policies = n,
            global,
            tenants,
            decision_cache = cached,
            dir = %dir.display(),
            "Policies loaded."
        );
        Ok(n)
    }

    /// Parses and validates `dir` without loading it.
    pub fn check_dir(&self, dir: &Path) -> Result<usize, PolicyError> {
        let (main, grants, _) = self.parse_dir(dir)?;
        self.validate(&main, &grants)?;
        Ok(main.policies().count() - builtin_set()?.policies().count())
    }

    /// Every policy in force, built-in and from files: its id and text.
    pub fn policies(&self) -> Vec<(String, String)> {
        self.current()
            .main
            .policies()
            .map(|p| (p.id().to_string(), p.to_string()))
            .collect()
    }

    /// The policy files in force.
    pub fn files(&self) -> Vec<PathBuf> {
        self.current().files.clone()
    }

    fn parse_dir(&self, dir: &Path) -> Result<(PolicySet, PolicySet, Vec<PathBuf>), PolicyError> {
        let read_err = |e: std::io::Error| PolicyError::Read {
            path: dir.display().to_string(),
            detail: e.to_string(),
        };
        let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
            .map_err(read_err)?
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "cedar"))
            .collect();
        files.sort();
        let mut main = builtin_set()?;
        let mut grants = PolicySet::new();
        let mut errors = Vec::new();
        for file in &files {
            let name = file
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            let text = std::fs::read_to_string(file).map_err(|e| PolicyError::Read {
                path: file.display().to_string(),
                detail: e.to_string(),
            })?;
            let parsed = match PolicySet::from_str(&text) {
                Ok(p) => p,
                Err(e) => {
                    errors.push(format!("{name}: {e}"));
                    continue;
                }
            };
            for (i, p) in parsed.policies().enumerate() {
                let id = p
                    .annotation("id")
                    .map_or_else(|| format!("{name}#{i}"), str::to_owned);
                if id.starts_with(RESERVED) {
                    errors.push(format!(
                        "{name}: policy id `{id}` is reserved for built-in policies"
                    ));
                    continue;
                }
                let is_grant = p.annotation(GRANT).is_some();
                if is_grant && p.effect() != Effect::Permit {
                    errors.push(format!(
                        "{name}: `{id}` is a cross-tenant grant, so it must be a permit"
                    ));
                    continue;
                }
                // A grant also permits: it lifts isolation in the first stage
                // and allows the request in the second.
                if is_grant {
                    if let Err(e) = grants.add(p.new_id(PolicyId::new(&id))) {
                        errors.push(format!("{name}: {e}"));
                    }
                }
                if let Err(e) = main.add(p.new_id(PolicyId::new(&id))) {
                    errors.push(format!("{name}: {e}"));
                }
            }
        }
        if errors.is_empty() {
            Ok((main, grants, files))
        } else {
            Err(PolicyError::Invalid(errors))
        }
    }

    /// Decides one query. Default deny; any error denies. Answered from
    /// the decision cache when the policies in force allow it.
    pub fn decide(&self, q: &Query) -> Decision {
        let loaded = self.current();
        let Some(cache) = &loaded.cache else {
            return self.evaluate(&loaded, q, Sets::Partitioned);
        };
        let key = cache.key(q);
        if let Some(d) = cache.get(&key) {
            return d;
        }
        // Two threads missing the same key both decide and the second
        // insert overwrites an equal decision: cheaper than making one wait.
        let d = self.evaluate(&loaded, q, Sets::Partitioned);
        cache.insert(key, d.clone());
        d
    }

    /// Decides one query without the decision cache (for tests and
    /// benchmarks; the decision is the same as [`Self::decide`]'s).
    pub fn decide_uncached(&self, q: &Query) -> Decision {
        self.evaluate(&self.current(), q, Sets::Partitioned)
    }

    /// Decides one query by evaluating every policy in force, as the
    /// engine did before it split policies by tenant: the reference the
    /// other two must equal, and the baseline of the benchmark.
    pub fn decide_unpartitioned(&self, q: &Query) -> Decision {
        self.evaluate(&self.current(), q, Sets::Whole)
    }

    fn evaluate(&self, loaded: &Loaded, q: &Query, sets: Sets) -> Decision {
        let deny = |e: String| Decision {
            allowed: false,
            policies: Vec::new(),
            grant: None,
            errors: vec![e],
        };
        let (principal, resource, entities) = match q.to_cedar() {
            Ok(parts) => parts,
            Err(e) => return deny(e),
        };
        if !ACTIONS.contains(&q.action.as_str()) {
            return deny(format!("unknown action `{}`", q.action));
        }
        let action = match uid("Vern::Action", &q.action) {
            Ok(a) => a,
            Err(e) => return deny(e),
        };
        let (main, grants) = match sets {
            Sets::Partitioned => {
                let keys = RequestKeys::new(q.subject.tenant(), q.resource.tenant(), &resource);
                let kind = PrincipalKind::of(&q.subject);
                (
                    loaded.main_parts.sets(&keys, &q.action, kind),
                    loaded.grant_parts.sets(&keys, &q.action, kind),
                )
            }
            Sets::Whole => (non_empty(&loaded.main), non_empty(&loaded.grants)),
        };
        // The request is validated against the schema: an action on a kind
        // of principal or resource it does not apply to is an error (deny),
        // so no broad permit can allow a meaningless combination. The table
        // of what applies stands in for the validation when it passes (see
        // `applicability`).
        let fits = self.applies.get(q.action.as_str()).is_some_and(|a| {
            a.principals.contains(principal.type_name())
                && a.resources.contains(resource.type_name())
        });
        let schema = if fits { None } else { Some(&self.schema) };
        let request = |cross_tenant_grant: bool| -> Result<Request, String> {
            let context = q.context(cross_tenant_grant);
            Request::new(
                principal.clone(),
                action.clone(),
                resource.clone(),
                context,
                schema,
            )
            .map_err(|e| e.to_string())
        };
        let run = |request: &Request, sets: &[&PolicySet]| {
            merge(
                sets.iter()
                    .map(|set| self.authorizer.is_authorized(request, set, &entities)),
            )
        };
        // Without a grant the request of both stages is the same.
        let plain = match request(false) {
            Ok(r) => r,
            Err(e) => return deny(e),
        };
        // Stage 1, only for a request across tenants: does an explicit
        // cross-tenant grant cover it? (Grants' errors only mean they do
        // not apply, as before.)
        let mut grant = None;
        if q.crosses_tenants() && !grants.is_empty() {
            let o = run(&plain, &grants);
            if o.allowed {
                grant = o.reasons.into_iter().next();
            }
        }
        // Stage 2: the policies, with isolation lifted only by a grant.
        let lifted;
        let stage2 = if grant.is_some() {
            lifted = match request(true) {
                Ok(r) => r,
                Err(e) => return deny(e),
            };
            &lifted
        } else {
            &plain
        };
        let o = run(stage2, &main);
        Decision {
            allowed: o.allowed,
            grant: if o.allowed { grant } else { None },
            policies: o.reasons,
            errors: o.errors,
        }
    }
}

#[cfg(test)]
mod tests {
    use vern_core::{EnvironmentId, ProjectId, Scope, TenantId};

    use super::*;
    use crate::model::{Resource, Subject, SubjectKind};

    proptest::proptest! {
        /// Ids named without the formatter read exactly as Cedar displays
        /// them, whatever the id holds.
        #[test]
        fn policy_names_read_as_cedar_displays_them(id in "\\PC*|[ -~]*|[a-z\\\\\"'\n\t-]*") {
            let id = PolicyId::new(id);
            proptest::prop_assert_eq!(policy_name(&id), id.to_string());
        }
    }

    /// The table of what applies accepts exactly the requests that schema
    /// validation accepts, for every action and every kind of principal
    /// and resource.
    #[test]
    fn the_table_of_what_applies_agrees_with_schema_validation() {
        let engine = PolicyEngine::builtin().unwrap();
        let scope = Scope {
            tenant: TenantId::parse("acme").unwrap(),
            project: ProjectId::parse("web").unwrap(),
            environment: EnvironmentId::parse("prod").unwrap(),
        };
        let subjects = [
            Subject {
                id: "svc".into(),
                kind: SubjectKind::Service {
                    scope: scope.clone(),
                    scopes: Vec::new(),
                },
            },
            Subject {
                id: "op".into(),
                kind: SubjectKind::Operator {
                    roles: Vec::new(),
                    tenant: None,
                    root: false,
                },
            },
        ];
        let resources = [
            Resource::Platform,
            Resource::Tenant(scope.tenant.clone()),
            Resource::Project(scope.tenant.clone(), scope.project.clone()),
            Resource::Environment(scope.clone()),
            Resource::Service {
                id: "other".into(),
                scope: scope.clone(),
            },
            Resource::Operator {
                id: "other".into(),
                tenant: None,
            },
            Resource::Secret {
                mount: "secret".into(),
                path: "acme/web/prod/db".into(),
                scope: scope.clone(),
            },
        ];
        let mut checked = 0;
        for action in ACTIONS {
            for subject in &subjects {
                for resource in &resources {
                    let q = Query {
                        subject: subject.clone(),
                        action: (*action).to_owned(),
                        resource: resource.clone(),
                        source_ip: "10.0.0.1".into(),
                        time: 0,
                        binding: Binding::None,
                        dns_names: Vec::new(),
                    };
                    let (principal, resource_uid, _) = q.to_cedar().unwrap();
                    let validated = Request::new(
                        principal.clone(),
                        uid("Vern::Action", action).unwrap(),
                        resource_uid.clone(),
                        q.context(false),
                        Some(&engine.schema),
                    )
                    .is_ok();
                    let fits = engine.applies.get(action).is_some_and(|a| {
                        a.principals.contains(principal.type_name())
                            && a.resources.contains(resource_uid.type_name())
                    });
                    assert_eq!(fits, validated, "{action} {subject:?} {resource:?}");
                    checked += usize::from(fits);
                }
            }
        }
        assert!(checked > 20, "only {checked} combinations apply");
    }
}
