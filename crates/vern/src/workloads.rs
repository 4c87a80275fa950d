//! `vern workload`: registration entries of `vern agent` nodes, over the
//! HTTP API.

use std::process::ExitCode;

use reqwest::Method;
use serde_json::{json, Value};

use crate::cli::{Output, WorkloadCommand};
use crate::client::{at, print_json, Client};

/// Runs a `vern workload` command.
pub(crate) async fn run(cmd: WorkloadCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        WorkloadCommand::Register {
            client,
            node,
            selectors,
            service,
            ttl,
        } => {
            let ttl = match ttl {
                Some(t) => json!(crate::serve::duration_secs("--ttl", &t)?),
                None => Value::Null,
            };
            let v = Client::new(&client)?
                .expect_ok(
                    Method::POST,
                    "/v1/pki/workloads",
                    Some(json!({
                        "node": node, "selectors": selectors, "service": service, "ttl": ttl,
                    })),
                )
                .await?;
            if client.output == Output::Json {
                print_json(at(&v, "/data"))?;
            } else {
                println!("{}", at(&v, "/data/id").as_str().unwrap_or_default());
            }
            Ok(ExitCode::SUCCESS)
        }
        WorkloadCommand::List { client, node } => {
            let path = match node {
                Some(n) => format!(
                    "/v1/pki/workloads?{}",
                    form_urlencoded::Serializer::new(String::new())
                        .append_pair("node", &n)
                        .finish()
                ),
                None => "/v1/pki/workloads".to_owned(),
            };
            let v = Client::new(&client)?
                .expect_ok(Method::GET, &path, None)
                .await?;
            if client.output == Output::Json {
                print_json(at(&v, "/data"))?;
            } else {
                for e in at(&v, "/data/entries").as_array().into_iter().flatten() {
                    let selectors: Vec<&str> = at(e, "/selectors")
                        .as_array()
                        .into_iter()
                        .flatten()
                        .filter_map(Value::as_str)
                        .collect();
                    println!(
                        "{}  {}  {}  {}",
                        at(e, "/id").as_str().unwrap_or_default(),
                        at(e, "/node").as_str().unwrap_or_default(),
                        at(e, "/service").as_str().unwrap_or_default(),
                        selectors.join(" "),
                    );
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        WorkloadCommand::Delete { client, id } => {
            Client::new(&client)?
                .expect_ok(Method::DELETE, &format!("/v1/pki/workloads/{id}"), None)
                .await?;
            if client.output == Output::Json {
                print_json(&json!({ "deleted": id }))?;
            } else {
                println!("Deleted entry {id}.");
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}
