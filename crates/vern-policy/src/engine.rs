//! Loading policies and deciding.

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::{Arc, RwLock};

use cedar_policy::{
    Authorizer, Decision as CedarDecision, Effect, PolicyId, PolicySet, Request, Schema,
    ValidationMode, Validator,
};

use crate::model::{uid, Query};

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
}

/// One decision and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// Allowed or denied (default deny).
    pub allowed: bool,
    /// The policies that determined it: the permits that allowed it, or the
    /// forbids that denied it (empty: nothing permitted it).
    pub policies: Vec<String>,
    /// The cross-tenant grant that lifted isolation, if one did.
    pub grant: Option<String>,
    /// Evaluation errors (a policy that errors is skipped, never allows).
    pub errors: Vec<String>,
}

struct Loaded {
    main: PolicySet,
    grants: PolicySet,
    files: Vec<PathBuf>,
}

/// The policy engine of one process; reloads swap the whole set at once.
pub struct PolicyEngine {
    schema: Schema,
    authorizer: Authorizer,
    current: RwLock<Arc<Loaded>>,
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
            authorizer: Authorizer::new(),
            current: RwLock::new(Arc::new(Loaded {
                main: builtin_set()?,
                grants: PolicySet::new(),
                files: Vec::new(),
            })),
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
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(Loaded {
            main,
            grants,
            files,
        });
        tracing::info!(policies = n, dir = %dir.display(), "Policies loaded.");
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

    /// Decides one query. Default deny; any error denies.
    pub fn decide(&self, q: &Query) -> Decision {
        let loaded = self.current();
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
        if !crate::model::ACTIONS.contains(&q.action.as_str()) {
            return deny(format!("unknown action `{}`", q.action));
        }
        let action = match uid("Vern::Action", &q.action) {
            Ok(a) => a,
            Err(e) => return deny(e),
        };
        let evaluate =
            |cross_tenant_grant: bool, set: &PolicySet| -> Result<cedar_policy::Response, String> {
                let context = q.context(cross_tenant_grant)?;
                // The request is validated against the schema: an action on a
                // kind of resource it does not apply to is an error (deny),
                // so no broad permit can allow a meaningless combination.
                let request = Request::new(
                    principal.clone(),
                    action.clone(),
                    resource.clone(),
                    context,
                    Some(&self.schema),
                )
                .map_err(|e| e.to_string())?;
                Ok(self.authorizer.is_authorized(&request, set, &entities))
            };
        // Stage 1, only for a request across tenants: does an explicit
        // cross-tenant grant cover it?
        let mut grant = None;
        if q.crosses_tenants() && loaded.grants.policies().next().is_some() {
            match evaluate(false, &loaded.grants) {
                Ok(r) if r.decision() == CedarDecision::Allow => {
                    grant = r.diagnostics().reason().next().map(ToString::to_string);
                }
                Ok(_) => {}
                Err(e) => return deny(e),
            }
        }
        // Stage 2: the policies, with isolation lifted only by a grant.
        match evaluate(grant.is_some(), &loaded.main) {
            Ok(r) => Decision {
                allowed: r.decision() == CedarDecision::Allow,
                policies: r.diagnostics().reason().map(ToString::to_string).collect(),
                grant: if r.decision() == CedarDecision::Allow {
                    grant
                } else {
                    None
                },
                errors: r.diagnostics().errors().map(ToString::to_string).collect(),
            },
            Err(e) => deny(e),
        }
    }
}
