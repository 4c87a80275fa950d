//! `vern pki`: the CA of the trust domain, over the HTTP API.

use std::process::ExitCode;
use std::time::{Duration, UNIX_EPOCH};

use anyhow::Context as _;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::cli::{Output, PkiCommand};
use crate::client::{at, failure, field, print_json, print_table, Client};

fn time(v: &Value) -> String {
    v.as_u64().map_or_else(
        || "n/a".to_owned(),
        |secs| {
            humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_secs(secs)).to_string()
        },
    )
}

fn print_rotation(output: Output, v: &Value) -> anyhow::Result<ExitCode> {
    if output == Output::Json {
        print_json(at(v, "/data"))?;
        return Ok(ExitCode::SUCCESS);
    }
    let ca = at(v, "/data/ca");
    print_table(&[
        ("ca", field(ca, "id")),
        ("signs_from", time(at(ca, "/signs_from"))),
        ("not_after", time(at(ca, "/not_after"))),
        ("imported", field(ca, "imported")),
        ("jwt_kid", field(at(v, "/data"), "jwt_kid")),
        ("bundle_sequence", field(at(v, "/data"), "sequence")),
    ]);
    Ok(ExitCode::SUCCESS)
}

/// The body's `signs_after`, when given.
fn delay(signs_after: Option<String>) -> anyhow::Result<Value> {
    Ok(match signs_after {
        Some(d) => json!(crate::serve::duration_secs("--signs-after", &d)?),
        None => Value::Null,
    })
}

/// Runs a `vern pki` command.
pub(crate) async fn run(cmd: PkiCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        PkiCommand::Rotate {
            client,
            signs_after,
        } => {
            let v = Client::new(&client)?
                .expect_ok(
                    Method::POST,
                    "/v1/pki/rotate",
                    Some(json!({ "signs_after": delay(signs_after)? })),
                )
                .await?;
            print_rotation(client.output, &v)
        }
        PkiCommand::Import {
            client,
            cert,
            key,
            signs_after,
        } => {
            let certificate = std::fs::read_to_string(&cert)
                .with_context(|| format!("cannot read {}", cert.display()))?;
            let key_pem = zeroize::Zeroizing::new(
                std::fs::read_to_string(&key)
                    .with_context(|| format!("cannot read {}", key.display()))?,
            );
            let body = json!({
                "certificate": certificate,
                "key": key_pem.as_str(),
                "signs_after": delay(signs_after)?,
            });
            let v = Client::new(&client)?
                .expect_ok(Method::POST, "/v1/pki/import", Some(body))
                .await?;
            print_rotation(client.output, &v)
        }
        PkiCommand::Certs {
            client,
            expiring_within,
            include_expired,
            limit,
        } => {
            let mut query = form_urlencoded::Serializer::new(String::new());
            if let Some(w) = &expiring_within {
                query.append_pair("expiring_within", w);
            }
            if include_expired {
                query.append_pair("include_expired", "true");
            }
            query.append_pair("limit", &limit.to_string());
            let v = Client::new(&client)?
                .expect_ok(
                    Method::GET,
                    &format!("/v1/pki/certs?{}", query.finish()),
                    None,
                )
                .await?;
            let certs = at(&v, "/data/certificates");
            if client.output == Output::Json {
                print_json(certs)?;
                return Ok(ExitCode::SUCCESS);
            }
            let rows: Vec<[String; 3]> = certs
                .as_array()
                .map(|list| {
                    list.iter()
                        .map(|c| {
                            [
                                time(at(c, "/not_after")),
                                field(c, "serial"),
                                field(c, "spiffe_id"),
                            ]
                        })
                        .collect()
                })
                .unwrap_or_default();
            println!("{:20}  {:40}  SPIFFE ID", "NOT AFTER", "SERIAL");
            for [t, serial, id] in &rows {
                println!("{t:20}  {serial:40}  {id}");
            }
            Ok(ExitCode::SUCCESS)
        }
        PkiCommand::Bundle(client) => {
            let c = Client::new(&client)?;
            if client.output == Output::Json {
                let v = c.expect_ok(Method::GET, "/v1/pki/bundle", None).await?;
                print_json(&v)?;
                return Ok(ExitCode::SUCCESS);
            }
            let (status, pem) = c.get_text("/v1/pki/ca.pem").await?;
            if status != StatusCode::OK {
                let v: Value = serde_json::from_str(&pem).unwrap_or(Value::Null);
                return Err(failure(status, &v));
            }
            print!("{pem}");
            Ok(ExitCode::SUCCESS)
        }
    }
}
