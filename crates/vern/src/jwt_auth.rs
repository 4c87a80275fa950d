//! `vern auth jwt role`: roles of the JWT auth method, over the same
//! Vault-compatible endpoints (`/v1/auth/jwt/role/…`) that `vault write
//! auth/jwt/role/…` and hvac use.

use std::collections::BTreeMap;
use std::process::ExitCode;

use anyhow::{bail, Context as _};
use reqwest::Method;
use serde_json::{json, Value};

use crate::cli::{JwtRoleCommand, JwtRoleWriteArgs, Output};
use crate::client::{at, failure, field, print_json, print_table, Client};

fn role_path(name: &str) -> String {
    format!("/v1/auth/jwt/role/{name}")
}

fn read_text(path: &std::path::Path) -> anyhow::Result<String> {
    std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))
}

/// The role's JSON body from the command's flags.
fn role_body(args: &JwtRoleWriteArgs) -> anyhow::Result<Value> {
    let mut claims: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for pair in &args.bound_claims {
        let Some((claim, value)) = pair.split_once('=') else {
            bail!("--bound-claim takes CLAIM=VALUE, got `{pair}`");
        };
        claims
            .entry(claim.to_owned())
            .or_default()
            .push(value.to_owned());
    }
    let pubkeys = args
        .pubkey_file
        .iter()
        .map(|p| read_text(p))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let ca = args.jwks_ca_file.as_deref().map(read_text).transpose()?;
    let mut body = json!({
        "client_id": args.client_id,
        "bound_issuer": args.bound_issuer,
        "bound_audiences": args.bound_audiences,
        "bound_claims": claims,
        "bound_claims_type": if args.glob { "glob" } else { "string" },
        "jwt_supported_algs": args.algs,
    });
    let optional = [
        ("jwks_url", args.jwks_url.clone().map(Value::from)),
        ("jwks_ca_pem", ca.map(Value::from)),
        ("bound_subject", args.bound_subject.clone().map(Value::from)),
        ("user_claim", args.user_claim.clone().map(Value::from)),
        ("token_ttl", args.token_ttl.clone().map(Value::from)),
        ("clock_skew_leeway", args.clock_skew_leeway.map(Value::from)),
        ("expiration_leeway", args.expiration_leeway.map(Value::from)),
        ("not_before_leeway", args.not_before_leeway.map(Value::from)),
    ];
    for (name, value) in optional {
        if let (Some(v), Some(map)) = (value, body.as_object_mut()) {
            map.insert(name.to_owned(), v);
        }
    }
    if !pubkeys.is_empty() {
        if let Some(map) = body.as_object_mut() {
            map.insert("jwt_validation_pubkeys".to_owned(), json!(pubkeys));
        }
    }
    Ok(body)
}

fn print_role(output: Output, v: &Value) -> anyhow::Result<ExitCode> {
    let d = at(v, "/data");
    if output == Output::Json {
        print_json(d)?;
        return Ok(ExitCode::SUCCESS);
    }
    let mut rows = Vec::new();
    for f in [
        "name",
        "client_id",
        "bound_issuer",
        "jwks_url",
        "bound_audiences",
        "bound_subject",
        "bound_claims",
        "bound_claims_type",
        "user_claim",
        "jwt_supported_algs",
        "token_ttl",
        "clock_skew_leeway",
        "expiration_leeway",
        "not_before_leeway",
    ] {
        if d.get(f).is_some_and(|x| !x.is_null()) {
            rows.push((f, field(d, f)));
        }
    }
    let keys = at(d, "/jwt_validation_pubkeys")
        .as_array()
        .map_or(0, Vec::len);
    if keys > 0 {
        rows.push(("jwt_validation_pubkeys", format!("{keys} PEM key(s)")));
    }
    if d.get("jwks_ca_pem").is_some_and(|x| !x.is_null()) {
        rows.push(("jwks_ca_pem", "set".to_owned()));
    }
    print_table(&rows);
    Ok(ExitCode::SUCCESS)
}

/// Runs a `vern auth jwt role` command.
pub(crate) async fn run(cmd: JwtRoleCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        JwtRoleCommand::Write(args) => {
            let body = role_body(&args)?;
            let v = Client::new(&args.client)?
                .expect_ok(Method::POST, &role_path(&args.name), Some(body))
                .await?;
            print_role(args.client.output, &v)
        }
        JwtRoleCommand::Read { client, name } => {
            let v = Client::new(&client)?
                .expect_ok(Method::GET, &role_path(&name), None)
                .await?;
            print_role(client.output, &v)
        }
        JwtRoleCommand::List(client) => {
            let list = Method::from_bytes(b"LIST").context("the LIST method")?;
            let (status, v) = Client::new(&client)?
                .call(list, "/v1/auth/jwt/role", None)
                .await?;
            // Vault answers a list with nothing in it with 404.
            let keys: Vec<String> = if status == reqwest::StatusCode::NOT_FOUND {
                Vec::new()
            } else if status.is_success() {
                at(&v, "/data/keys")
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|k| k.as_str().map(str::to_owned))
                    .collect()
            } else {
                return Err(failure(status, &v));
            };
            if client.output == Output::Json {
                print_json(&json!({ "keys": keys }))?;
            } else {
                for k in keys {
                    println!("{k}");
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        JwtRoleCommand::Delete { client, name } => {
            Client::new(&client)?
                .expect_ok(Method::DELETE, &role_path(&name), None)
                .await?;
            if client.output == Output::Json {
                print_json(&json!({ "deleted": name }))?;
            } else {
                println!("Success! JWT role {name} deleted.");
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}
