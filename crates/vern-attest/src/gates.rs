//! Promotion gates: per environment, the evidence an artifact needs before
//! it may be promoted into it, kept behind the barrier view `attest/` under
//! `gates/<tenant>/<project>/<environment>`, and the evaluation of a gate
//! against the evidence found about a subject.
//!
//! A gate is a list of requirements, each met by verified evidence of one
//! predicate type, optionally signed by a named principal, and for
//! vulnerability scans optionally with at most so many critical findings.
//! Gates are declared whole (`vern apply`), like clients: the declared set
//! is planned here into one batch the caller commits with the rest of the
//! declaration.
//!
//! What counts as evidence is decided before evaluation: only envelopes
//! that verified against trusted keys valid when they were signed and whose
//! statement names the subject reach [`evaluate`]. Among several envelopes
//! meeting a requirement's type and signer, the newest decides its
//! critical-findings limit: a newer scan's findings are not outweighed by
//! an older, cleaner one (and of scans signed in the same second, the one
//! with the most critical findings decides).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use vern_core::{EnvironmentId, ProjectId, Scope, TenantId};
use vern_crypto::SecretBytes;
use vern_seal::{Barrier, BarrierWrite, Expect, SealError, ViewBatch};

use crate::digest::{shown, Sha256Digest};
use crate::statement::{critical_findings, Statement};
use crate::{view, AttestError};

/// Where gates are stored in the view.
const GATES: &str = "gates/";
/// The most requirements one gate holds.
const MAX_REQUIREMENTS: usize = 64;
/// The longest predicate type or signer accepted in a requirement.
const MAX_FIELD: usize = 512;
/// The most gates one listing reads.
const MAX_GATES: usize = 100_000;

/// One requirement of a gate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Requirement {
    /// The predicate type the evidence must have.
    pub predicate_type: String,
    /// Who must have had it signed (a principal id such as
    /// `svc.acme.ci.prod.builder`); anyone when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signer: Option<String>,
    /// At most this many critical findings in the newest such evidence,
    /// read as a vulnerability scan ([`critical_findings`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_critical: Option<u64>,
}

impl Requirement {
    fn describe(&self) -> String {
        let mut s = format!("`{}`", self.predicate_type);
        if let Some(signer) = &self.signer {
            s.push_str(&format!(" signed by `{signer}`"));
        }
        if let Some(max) = self.max_critical {
            s.push_str(&format!(" with at most {max} critical findings"));
        }
        s
    }
}

/// A promotion gate: the requirements of one environment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Gate {
    /// The environment promoted into.
    pub environment: Scope,
    /// Every requirement; all must be met.
    pub require: Vec<Requirement>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct StoredGate {
    require: Vec<Requirement>,
}

impl Gate {
    /// A gate, checked: one to [`MAX_REQUIREMENTS`] requirements, each with
    /// a predicate type URI and, if given, a non-empty signer.
    pub fn new(environment: Scope, require: Vec<Requirement>) -> Result<Self, AttestError> {
        let bad = |why: String| {
            Err(AttestError::BadGate(format!(
                "gate of {environment}: {why}"
            )))
        };
        if require.is_empty() || require.len() > MAX_REQUIREMENTS {
            return bad(format!(
                "`require` lists 1 to {MAX_REQUIREMENTS} requirements"
            ));
        }
        for (i, r) in require.iter().enumerate() {
            let n = i.saturating_add(1);
            if !well_formed(&r.predicate_type) {
                return bad(format!(
                    "requirement {n}: predicate_type `{}` is not a URI of at most {MAX_FIELD} bytes",
                    shown(&r.predicate_type)
                ));
            }
            if let Some(s) = &r.signer {
                if !well_formed(s) {
                    return bad(format!(
                        "requirement {n}: signer `{}` is not a principal id or SPIFFE ID",
                        shown(s)
                    ));
                }
            }
        }
        Ok(Self {
            environment,
            require,
        })
    }
}

fn well_formed(s: &str) -> bool {
    !s.is_empty() && s.len() <= MAX_FIELD && !s.chars().any(|c| c.is_whitespace() || c.is_control())
}

/// Parses `tenant/project/environment`.
pub fn parse_environment(s: &str) -> Result<Scope, AttestError> {
    let bad = || {
        AttestError::BadGate(format!(
            "environment `{}` is not tenant/project/environment",
            shown(s)
        ))
    };
    let mut parts = s.split('/');
    let (Some(t), Some(p), Some(e), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(bad());
    };
    Ok(Scope {
        tenant: TenantId::parse(t).map_err(|_| bad())?,
        project: ProjectId::parse(p).map_err(|_| bad())?,
        environment: EnvironmentId::parse(e).map_err(|_| bad())?,
    })
}

/// What applying the declared gates does (or, dry, would do); each entry
/// an environment `tenant/project/environment`.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct GatePlan {
    /// Gates created.
    pub create: Vec<String>,
    /// Gates whose requirements change.
    pub update: Vec<String>,
    /// Gates deleted (only with prune).
    pub delete: Vec<String>,
    /// Gates already as declared.
    pub unchanged: Vec<String>,
    /// Gates not declared, kept (prune off, or not the caller's).
    pub kept: Vec<String>,
}

/// The promotion gates; see the module documentation.
#[derive(Debug, Clone, Copy, Default)]
pub struct GateStore;

impl GateStore {
    /// The gate of `environment`, if one is set.
    pub async fn get(&self, b: &Barrier, environment: &Scope) -> Result<Option<Gate>, AttestError> {
        let key = gate_key(environment);
        let Some(plain) = view(b)?.get(&key).await? else {
            return Ok(None);
        };
        let stored: StoredGate = serde_json::from_slice(plain.value.expose())
            .map_err(|_| SealError::Corrupt(format!("{}{key}", crate::VIEW_PREFIX)))?;
        Ok(Some(Gate {
            environment: environment.clone(),
            require: stored.require,
        }))
    }

    /// Plans the declared gates against the stored ones: each declared gate
    /// is created, changed or left as it is; a stored gate not declared is
    /// deleted with `prune` when `manages` says it is the caller's, and kept
    /// otherwise. The writes come back as one batch, every one of them
    /// conditional on what was read, for the caller to commit with the rest
    /// of its declaration. The caller has already decided it may set every
    /// declared gate.
    pub async fn plan(
        &self,
        b: &Barrier,
        declared: &[Gate],
        prune: bool,
        manages: &(dyn Fn(&Scope) -> bool + Sync),
    ) -> Result<(GatePlan, ViewBatch), AttestError> {
        let mut desired = BTreeMap::new();
        for g in declared {
            if desired.insert(g.environment.clone(), g).is_some() {
                return Err(AttestError::BadGate(format!(
                    "the gate of {} is declared twice",
                    g.environment
                )));
            }
        }
        let v = view(b)?;
        let mut plan = GatePlan::default();
        let mut writes = Vec::new();
        for (env, gate) in &desired {
            let key = gate_key(env);
            let value = serde_json::to_vec(&StoredGate {
                require: gate.require.clone(),
            })
            .map_err(|e| AttestError::Internal(e.to_string()))?;
            match v.get(&key).await? {
                None => {
                    plan.create.push(env.to_string());
                    writes.push(put(key, value, Expect::Absent));
                }
                Some(plain) => {
                    let stored: Option<StoredGate> =
                        serde_json::from_slice(plain.value.expose()).ok();
                    if stored.is_some_and(|s| s.require == gate.require) {
                        plan.unchanged.push(env.to_string());
                    } else {
                        plan.update.push(env.to_string());
                        writes.push(put(key, value, Expect::Version(plain.version)));
                    }
                }
            }
        }
        for key in v.list(GATES, None, MAX_GATES).await? {
            let Some(env) = key
                .strip_prefix(GATES)
                .and_then(|rest| parse_environment(rest).ok())
            else {
                return Err(SealError::Corrupt(format!("{}{key}", crate::VIEW_PREFIX)).into());
            };
            if desired.contains_key(&env) {
                continue;
            }
            if prune && manages(&env) {
                let version = v.get(&key).await?.map(|p| p.version);
                writes.push(BarrierWrite {
                    key,
                    value: None,
                    expect: version.map_or(Expect::Any, Expect::Version),
                });
                plan.delete.push(env.to_string());
            } else {
                plan.kept.push(env.to_string());
            }
        }
        Ok((plan, v.batch(writes)?))
    }
}

fn gate_key(env: &Scope) -> String {
    format!("{GATES}{}/{}/{}", env.tenant, env.project, env.environment)
}

fn put(key: String, value: Vec<u8>, expect: Expect) -> BarrierWrite {
    BarrierWrite {
        key,
        value: Some(SecretBytes::new(value)),
        expect,
    }
}

/// One envelope that verified and names the subject, as a gate weighs it.
#[derive(Debug, Clone)]
pub struct Counted {
    /// Its address in the evidence store.
    pub address: Sha256Digest,
    /// Who had it signed, in this site's own record.
    pub signer: String,
    /// When it was signed, in this site's own record.
    pub signed_at: u64,
    /// Its statement.
    pub statement: Statement,
}

/// The evidence one requirement was met with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Used {
    /// The requirement, counted from 1.
    pub requirement: usize,
    /// The envelope's address.
    pub address: Sha256Digest,
    /// Its predicate type.
    pub predicate_type: String,
    /// Who had it signed.
    pub signer: String,
    /// Its critical findings, when the requirement limits them.
    pub critical: Option<u64>,
}

/// A gate's verdict on a subject.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// Whether every requirement is met.
    pub allowed: bool,
    /// The evidence each met requirement was met with.
    pub used: Vec<Used>,
    /// Each requirement not met, named with why.
    pub missing: Vec<String>,
}

/// Weighs `evidence` against every requirement of `gate`.
pub fn evaluate(gate: &Gate, evidence: &[Counted]) -> Outcome {
    let mut used = Vec::new();
    let mut missing = Vec::new();
    for (i, r) in gate.require.iter().enumerate() {
        let n = i.saturating_add(1);
        let of_type: Vec<&Counted> = evidence
            .iter()
            .filter(|e| e.statement.predicate_type == r.predicate_type)
            .collect();
        let candidates: Vec<&Counted> = of_type
            .iter()
            .copied()
            .filter(|e| r.signer.as_ref().is_none_or(|s| *s == e.signer))
            .collect();
        // Signing times are whole seconds: of envelopes signed in the same
        // second, the worst scan decides, so the order of arrival cannot
        // hide a finding.
        let rank = |e: &Counted| match r.max_critical {
            Some(_) => critical_findings(&e.statement.predicate).unwrap_or(u64::MAX),
            None => 0,
        };
        let newest = candidates.iter().copied().max_by(|a, b| {
            (a.signed_at, rank(a), &a.address).cmp(&(b.signed_at, rank(b), &b.address))
        });
        let Some(newest) = newest else {
            let mut why = format!(
                "requirement {n} ({}): no verified `{}` evidence about the subject",
                r.describe(),
                r.predicate_type
            );
            if let Some(signer) = &r.signer {
                why = format!(
                    "requirement {n} ({}): no verified `{}` evidence about the subject signed by `{signer}`",
                    r.describe(),
                    r.predicate_type
                );
                if !of_type.is_empty() {
                    let mut others: Vec<&str> = of_type.iter().map(|e| e.signer.as_str()).collect();
                    others.sort_unstable();
                    others.dedup();
                    why.push_str(&format!(
                        " ({} signed by {} does not count)",
                        of_type.len(),
                        others.join(", ")
                    ));
                }
            }
            missing.push(why);
            continue;
        };
        let critical = match r.max_critical {
            None => None,
            Some(max) => match critical_findings(&newest.statement.predicate) {
                None => {
                    missing.push(format!(
                        "requirement {n} ({}): the newest such evidence {} is not a vulnerability scan (no `scanner.result` list)",
                        r.describe(),
                        newest.address
                    ));
                    continue;
                }
                Some(c) if c > max => {
                    missing.push(format!(
                        "requirement {n} ({}): the newest scan {} has {c} critical findings, more than the {max} allowed",
                        r.describe(),
                        newest.address
                    ));
                    continue;
                }
                Some(c) => Some(c),
            },
        };
        used.push(Used {
            requirement: n,
            address: newest.address.clone(),
            predicate_type: r.predicate_type.clone(),
            signer: newest.signer.clone(),
            critical,
        });
    }
    Outcome {
        allowed: missing.is_empty(),
        used,
        missing,
    }
}

/// The predicate of Vern's promotion record
/// ([`crate::statement::PROMOTION_V1`]): the environment, the gate's
/// requirements, the evidence each was met with, who asked and when.
pub fn promotion_predicate(
    gate: &Gate,
    outcome: &Outcome,
    decider: &str,
    decided_at: u64,
) -> Value {
    json!({
        "environment": gate.environment.to_string(),
        "requirements": gate.require,
        "evidence": outcome.used.iter().map(|u| json!({
            "requirement": u.requirement,
            "address": u.address,
            "predicateType": u.predicate_type,
            "signer": u.signer,
        })).collect::<Vec<_>>(),
        "decider": decider,
        "decidedAt": decided_at,
    })
}

#[cfg(test)]
mod tests;
