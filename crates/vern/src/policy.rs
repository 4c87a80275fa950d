//! `vern policy`: Cedar policy files checked offline, for authors and CI.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context as _};
use serde::Deserialize;
use serde_json::json;
use vern_policy::{Binding, Decision, PolicyEngine, Query, Resource, Subject};

use crate::cli::{Output, PolicyCommand};
use crate::client::{print_json, set};

/// A cases file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CasesFile {
    /// The policy directory, relative to the cases file.
    policies: Option<PathBuf>,
    cases: Vec<Case>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Case {
    name: String,
    principal: String,
    action: String,
    resource: String,
    /// The DNS names of an `svid.issue` case.
    #[serde(default)]
    dns_names: Vec<String>,
    expect: Expect,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
enum Expect {
    Allow,
    Deny,
}

fn engine(dir: Option<&Path>) -> anyhow::Result<PolicyEngine> {
    Ok(match dir {
        Some(d) => PolicyEngine::from_dir(d)?,
        None => PolicyEngine::builtin()?,
    })
}

fn query(
    principal: &str,
    action: &str,
    resource: &str,
    dns_names: &[String],
) -> anyhow::Result<Query> {
    Ok(Query {
        subject: Subject::parse_spec(principal).map_err(anyhow::Error::msg)?,
        action: action.to_owned(),
        resource: Resource::parse_spec(resource).map_err(anyhow::Error::msg)?,
        source_ip: "127.0.0.1".to_owned(),
        time: 0,
        binding: Binding::None,
        dns_names: dns_names.to_vec(),
    })
}

fn decision_json(d: &Decision) -> serde_json::Value {
    json!({
        "decision": if d.allowed { "allow" } else { "deny" },
        "policies": d.policies,
        "cross_tenant_grant": d.grant,
        "errors": d.errors,
    })
}

fn why(d: &Decision) -> String {
    let mut s = if d.policies.is_empty() {
        "no policy permits it (default deny)".to_owned()
    } else {
        format!("determined by {}", d.policies.join(", "))
    };
    if let Some(g) = &d.grant {
        s.push_str(&format!("; cross-tenant grant {g}"));
    }
    if !d.errors.is_empty() {
        s.push_str(&format!("; errors: {}", d.errors.join("; ")));
    }
    s
}

/// Runs a `vern policy` command.
pub(crate) fn run(cmd: PolicyCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        PolicyCommand::Validate { dir } => {
            let n = PolicyEngine::builtin()?.check_dir(&dir)?;
            println!(
                "{n} policies in {} are valid against Vern's schema (strict mode).",
                dir.display()
            );
            Ok(ExitCode::SUCCESS)
        }
        PolicyCommand::Explain {
            policies,
            principal,
            action,
            resource,
            dns_names,
            output,
        } => {
            let e = engine(policies.as_deref())?;
            let q = query(&principal, &action, &resource, &dns_names)?;
            let d = e.decide(&q);
            // What the principal's roles or scopes hold from the built-in
            // tables: also everything it may hand on to clients it creates.
            let holds = vern_policy::Holdings::of(&q.subject).describe();
            if output == Output::Json {
                let mut v = decision_json(&d);
                set(&mut v, "holds", serde_json::json!(holds));
                print_json(&v)?;
            } else {
                println!("{}: {}", if d.allowed { "ALLOW" } else { "DENY" }, why(&d));
                if holds.is_empty() {
                    println!("The principal's roles and scopes hold nothing.");
                } else {
                    println!("The principal's roles and scopes hold (and may grant):");
                    for h in holds {
                        println!("  {h}");
                    }
                }
            }
            Ok(if d.allowed {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(2)
            })
        }
        PolicyCommand::Test {
            cases,
            policies,
            output,
        } => {
            let text = std::fs::read_to_string(&cases)
                .with_context(|| format!("cannot read {}", cases.display()))?;
            let file: CasesFile = serde_yaml_ng::from_str(&text)
                .with_context(|| format!("{} is not a valid cases file", cases.display()))?;
            let base = cases.parent().unwrap_or(Path::new("."));
            let dir = policies.or_else(|| file.policies.map(|p| base.join(p)));
            let e = engine(dir.as_deref())?;
            if file.cases.is_empty() {
                bail!("{} has no cases", cases.display());
            }
            let mut failed = 0;
            let mut results = Vec::new();
            for case in &file.cases {
                let d = e.decide(
                    &query(
                        &case.principal,
                        &case.action,
                        &case.resource,
                        &case.dns_names,
                    )
                    .with_context(|| format!("case `{}`", case.name))?,
                );
                let ok = d.allowed == (case.expect == Expect::Allow);
                failed += usize::from(!ok);
                if output == Output::Json {
                    let mut v = decision_json(&d);
                    set(&mut v, "name", json!(case.name));
                    set(&mut v, "passed", json!(ok));
                    results.push(v);
                } else {
                    let mark = if ok { "ok  " } else { "FAIL" };
                    println!(
                        "{mark} {} — {}: {}",
                        case.name,
                        if d.allowed { "allow" } else { "deny" },
                        why(&d)
                    );
                }
            }
            let passed = file.cases.len() - failed;
            if output == Output::Json {
                print_json(&json!({ "passed": passed, "failed": failed, "cases": results }))?;
            } else {
                println!("\n{passed} passed, {failed} failed");
            }
            Ok(if failed == 0 {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
    }
}
