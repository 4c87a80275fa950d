//! `vern kv`: the KV v2 API from the command line, in the style of
//! `vault kv`.

use std::io::Read as _;
use std::process::ExitCode;

use anyhow::{bail, Context as _};
use reqwest::{Method, StatusCode};
use serde_json::{json, Map, Value};

use crate::cli::{KvCommand, KvMetadataCommand, KvTargetArgs, Output};
use crate::client::{at, field, print_json, print_table, set, Client};

fn url(t: &KvTargetArgs, op: &str) -> String {
    format!("/v1/{}/{op}/{}", t.mount, t.path.trim_matches('/'))
}

/// Builds a data object from `key=value` and `key=@file` pairs, or reads a
/// JSON object from stdin when there are none (or the only one is `-`).
fn data_from(pairs: &[String]) -> anyhow::Result<Map<String, Value>> {
    if pairs.is_empty() || pairs == ["-"] {
        let mut text = String::new();
        std::io::stdin()
            .read_to_string(&mut text)
            .context("cannot read JSON from standard input")?;
        return match serde_json::from_str::<Value>(&text).context("standard input is not JSON")? {
            Value::Object(map) => Ok(map),
            _ => bail!("standard input must hold a JSON object"),
        };
    }
    let mut map = Map::new();
    for pair in pairs {
        let Some((k, v)) = pair.split_once('=') else {
            bail!("`{pair}` is not key=value (use key=@file to read a value from a file)");
        };
        if k.is_empty() {
            bail!("`{pair}` has an empty key");
        }
        let value = match v.strip_prefix('@') {
            Some(file) => std::fs::read_to_string(file)
                .with_context(|| format!("cannot read the value of `{k}` from {file}"))?,
            None => v.to_owned(),
        };
        map.insert(k.to_owned(), Value::String(value));
    }
    Ok(map)
}

fn value_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn print_version(out: Output, v: &Value) -> anyhow::Result<()> {
    if out == Output::Json {
        return print_json(v);
    }
    let d = at(v, "/data");
    print_table(&[
        ("created_time", field(d, "created_time")),
        ("deletion_time", value_text(at(d, "/deletion_time"))),
        ("destroyed", field(d, "destroyed")),
        ("version", field(d, "version")),
    ]);
    Ok(())
}

async fn get(t: &KvTargetArgs, version: Option<u64>) -> anyhow::Result<ExitCode> {
    let client = Client::new(&t.client)?;
    let mut path = url(t, "data");
    if let Some(v) = version {
        path.push_str(&format!("?version={v}"));
    }
    let (status, body) = client.call(Method::GET, &path, None).await?;
    if status == StatusCode::NOT_FOUND {
        let meta = at(&body, "/data/metadata");
        if meta.is_object() {
            let version = field(meta, "version");
            if at(meta, "/destroyed") == &Value::Bool(true) {
                bail!("version {version} of {} was destroyed", t.path);
            }
            bail!(
                "version {version} of {} was deleted at {}",
                t.path,
                value_text(at(meta, "/deletion_time"))
            );
        }
        bail!("no secret at {}", t.path);
    }
    if !status.is_success() {
        // Let the shared error path format the server's message.
        client.expect_ok(Method::GET, &path, None).await?;
    }
    if t.client.output == Output::Json {
        print_json(&body)?;
        return Ok(ExitCode::SUCCESS);
    }
    let meta = at(&body, "/data/metadata");
    println!("====== Metadata ======");
    print_table(&[
        ("created_time", field(meta, "created_time")),
        ("custom_metadata", value_text(at(meta, "/custom_metadata"))),
        ("deletion_time", value_text(at(meta, "/deletion_time"))),
        ("destroyed", field(meta, "destroyed")),
        ("version", field(meta, "version")),
    ]);
    println!("\n====== Data ======");
    let data = at(&body, "/data/data")
        .as_object()
        .cloned()
        .unwrap_or_default();
    let rows: Vec<(&str, String)> = data
        .iter()
        .map(|(k, v)| (k.as_str(), value_text(v)))
        .collect();
    print_table(&rows);
    Ok(ExitCode::SUCCESS)
}

async fn write(
    t: &KvTargetArgs,
    method: Method,
    cas: Option<u64>,
    pairs: &[String],
) -> anyhow::Result<ExitCode> {
    let data = data_from(pairs)?;
    let mut body = json!({ "data": data });
    if let Some(cas) = cas {
        set(&mut body, "options", json!({ "cas": cas }));
    }
    let v = Client::new(&t.client)?
        .expect_ok(method, &url(t, "data"), Some(body))
        .await?;
    print_version(t.client.output, &v)?;
    Ok(ExitCode::SUCCESS)
}

async fn list(t: &KvTargetArgs) -> anyhow::Result<ExitCode> {
    let client = Client::new(&t.client)?;
    let list = Method::from_bytes(b"LIST").context("LIST method")?;
    let path = format!("/v1/{}/metadata/{}", t.mount, t.path.trim_matches('/'));
    let (status, body) = client.call(list.clone(), &path, None).await?;
    if status == StatusCode::NOT_FOUND {
        bail!("no secrets under {}", t.path);
    }
    let v = if status.is_success() {
        body
    } else {
        client.expect_ok(list, &path, None).await?
    };
    if t.client.output == Output::Json {
        print_json(&v)?;
    } else {
        println!("Keys\n----");
        for k in at(&v, "/data/keys").as_array().into_iter().flatten() {
            println!("{}", value_text(k));
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn versions_op(t: &KvTargetArgs, op: &str, versions: &[u64]) -> anyhow::Result<ExitCode> {
    let client = Client::new(&t.client)?;
    if op == "delete" && versions.is_empty() {
        client
            .expect_ok(Method::DELETE, &url(t, "data"), None)
            .await?;
    } else {
        client
            .expect_ok(
                Method::POST,
                &url(t, op),
                Some(json!({ "versions": versions })),
            )
            .await?;
    }
    done(t.client.output, &format!("{op} of {} done", t.path))
}

fn done(out: Output, message: &str) -> anyhow::Result<ExitCode> {
    if out == Output::Json {
        print_json(&json!({ "success": true }))?;
    } else {
        println!("Success! {message}.");
    }
    Ok(ExitCode::SUCCESS)
}

async fn metadata(cmd: KvMetadataCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        KvMetadataCommand::Get { target } => {
            let v = Client::new(&target.client)?
                .expect_ok(Method::GET, &url(&target, "metadata"), None)
                .await?;
            if target.client.output == Output::Json {
                print_json(&v)?;
            } else {
                let d = at(&v, "/data");
                print_table(&[
                    ("cas_required", field(d, "cas_required")),
                    ("created_time", field(d, "created_time")),
                    ("current_version", field(d, "current_version")),
                    ("custom_metadata", value_text(at(d, "/custom_metadata"))),
                    ("delete_version_after", field(d, "delete_version_after")),
                    ("max_versions", field(d, "max_versions")),
                    ("oldest_version", field(d, "oldest_version")),
                    ("updated_time", field(d, "updated_time")),
                ]);
                for (n, ver) in at(d, "/versions").as_object().into_iter().flatten() {
                    println!(
                        "\nVersion {n}: created {}, deleted {}, destroyed {}",
                        field(ver, "created_time"),
                        value_text(at(ver, "/deletion_time")),
                        field(ver, "destroyed")
                    );
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        KvMetadataCommand::Put {
            target,
            max_versions,
            cas_required,
            delete_version_after,
            custom_metadata,
        } => {
            let mut body = Map::new();
            if let Some(m) = max_versions {
                body.insert("max_versions".into(), json!(m));
            }
            if let Some(c) = cas_required {
                body.insert("cas_required".into(), json!(c));
            }
            if let Some(d) = delete_version_after {
                body.insert("delete_version_after".into(), json!(d));
            }
            if !custom_metadata.is_empty() {
                body.insert(
                    "custom_metadata".into(),
                    Value::Object(data_from(&custom_metadata)?),
                );
            }
            Client::new(&target.client)?
                .expect_ok(
                    Method::POST,
                    &url(&target, "metadata"),
                    Some(Value::Object(body)),
                )
                .await?;
            done(
                target.client.output,
                &format!("metadata of {} written", target.path),
            )
        }
        KvMetadataCommand::Delete { target } => {
            Client::new(&target.client)?
                .expect_ok(Method::DELETE, &url(&target, "metadata"), None)
                .await?;
            done(
                target.client.output,
                &format!("{} and all its versions deleted", target.path),
            )
        }
    }
}

/// Runs a `vern kv` command.
pub(crate) async fn run(cmd: KvCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        KvCommand::Put { target, cas, pairs } => write(&target, Method::POST, cas, &pairs).await,
        KvCommand::Patch { target, cas, pairs } => write(&target, Method::PATCH, cas, &pairs).await,
        KvCommand::Get { target, version } => get(&target, version).await,
        KvCommand::List { target } => list(&target).await,
        KvCommand::Delete { target, versions } => versions_op(&target, "delete", &versions).await,
        KvCommand::Undelete { target, versions } => {
            versions_op(&target, "undelete", &versions).await
        }
        KvCommand::Destroy { target, versions } => versions_op(&target, "destroy", &versions).await,
        KvCommand::Metadata(cmd) => metadata(cmd).await,
    }
}
