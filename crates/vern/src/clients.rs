//! `vern client`: the token authority's clients.

use std::process::ExitCode;

use anyhow::Context as _;
use reqwest::Method;
use serde_json::{json, Value};

use crate::cli::{ClientCommand, Output};
use crate::client::{at, field, print_json, print_table, Client};

fn print_client(output: Output, v: &Value) -> anyhow::Result<ExitCode> {
    if output == Output::Json {
        print_json(at(v, "/data"))?;
        return Ok(ExitCode::SUCCESS);
    }
    let d = at(v, "/data");
    let mut rows = vec![
        ("client_id", field(d, "client_id")),
        ("kind", field(d, "kind")),
    ];
    for f in [
        "tenant",
        "project",
        "environment",
        "roles",
        "scopes",
        "dpop_bound",
        "token_ttl",
        "nats",
    ] {
        if d.get(f).is_some_and(|x| !x.is_null()) {
            rows.push((f, field(d, f)));
        }
    }
    if d.get("client_secret").is_some() {
        rows.push(("client_secret", field(d, "client_secret")));
    }
    print_table(&rows);
    if d.get("client_secret").is_some() {
        println!("\nThe secret is shown only now; store it where the service reads it.");
    }
    Ok(ExitCode::SUCCESS)
}

/// Runs a `vern client` command.
pub(crate) async fn run(cmd: ClientCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        ClientCommand::Create(args) => {
            let crate::cli::ClientCreateArgs {
                client,
                tenant,
                project,
                environment,
                name,
                scopes,
                roles,
                dpop_bound,
                jwks,
                token_ttl,
                tls_client_auth_san,
                nats_publish,
                nats_subscribe,
                node,
            } = *args;
            let mut keys = Vec::new();
            for path in &jwks {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("cannot read {}", path.display()))?;
                let key: Value = serde_json::from_str(&text)
                    .with_context(|| format!("{} is not a JSON JWK", path.display()))?;
                keys.push(key);
            }
            let body = json!({
                "tenant": tenant, "project": project, "environment": environment,
                "name": node.as_ref().or(name.as_ref()),
                "scopes": scopes, "roles": roles, "dpop_bound": dpop_bound, "jwks": keys, "token_ttl": token_ttl,
                "tls_client_auth_san": tls_client_auth_san, "node": node.is_some(),
                "nats": { "publish": nats_publish, "subscribe": nats_subscribe },
            });
            let v = Client::new(&client)?
                .expect_ok(Method::POST, "/v1/auth/clients", Some(body))
                .await?;
            print_client(client.output, &v)
        }
        ClientCommand::List(client) => {
            let v = Client::new(&client)?
                .expect_ok(Method::GET, "/v1/auth/clients", None)
                .await?;
            if client.output == Output::Json {
                print_json(at(&v, "/data"))?;
            } else {
                for k in at(&v, "/data/keys").as_array().into_iter().flatten() {
                    println!("{}", k.as_str().unwrap_or_default());
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        ClientCommand::Get { client, client_id } => {
            let v = Client::new(&client)?
                .expect_ok(Method::GET, &format!("/v1/auth/clients/{client_id}"), None)
                .await?;
            print_client(client.output, &v)
        }
        ClientCommand::Delete { client, client_id } => {
            Client::new(&client)?
                .expect_ok(
                    Method::DELETE,
                    &format!("/v1/auth/clients/{client_id}"),
                    None,
                )
                .await?;
            if client.output == Output::Json {
                print_json(&json!({ "deleted": client_id }))?;
            } else {
                println!("Success! Client {client_id} deleted.");
            }
            Ok(ExitCode::SUCCESS)
        }
        ClientCommand::RotateKeys(client) => {
            let v = Client::new(&client)?
                .expect_ok(Method::POST, "/v1/auth/keys/rotate", None)
                .await?;
            if client.output == Output::Json {
                print_json(at(&v, "/data"))?;
            } else {
                println!(
                    "New signing key {} is published and signs after the publish delay.",
                    field(at(&v, "/data"), "kid")
                );
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// The platform file: what `vern apply` declares. Unknown keys are
/// refused, so a typo cannot silently drop a declaration.
#[derive(Debug, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
struct PlatformFile {
    /// The clients; a file without this section leaves them alone, even
    /// with `--prune`.
    #[serde(default)]
    clients: Option<Value>,
    /// The auth methods' roles (`auth: {jwt: {roles: […]}}`), checked by
    /// the server.
    #[serde(default)]
    auth: Option<Value>,
    /// The promotion gates (`promotion: [{environment, require}]`),
    /// checked by the server.
    #[serde(default)]
    promotion: Option<Value>,
    /// Registration entries of `vern agent` nodes (`workloads: […]`, each
    /// with `node`, `selectors`, `service` and optionally `ttl`), checked
    /// by the server.
    #[serde(default)]
    workloads: Option<Value>,
    /// NATS: this site (`site`, `gateway_port`), the sites it links to
    /// (`sites: [{name, gateway, leafnode}]`) and tenants' subject
    /// mappings (`mappings: [{tenant, from, to}]`), checked by the server.
    #[serde(default)]
    nats: Option<Value>,
}

/// `vern apply -f FILE`.
/// The names in one section (`jwt_roles`, `promotion`, `nats`) of an apply plan
/// under `k` (`create`, `update`, `delete`, `kept`, `unchanged`).
fn plan_names(plan: &Value, section: &str, k: &str) -> Vec<String> {
    at(plan, &format!("/{section}/{k}"))
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|x| x.as_str().map(str::to_owned))
        .collect()
}

/// Prints one such section: `+`, `~` and `-` lines for the names created,
/// updated and deleted, and the ones kept because the file left them out
/// without `--prune`.
fn print_named_plan(plan: &Value, section: &str, what: &str) {
    for (sign, k) in [("+", "create"), ("~", "update"), ("-", "delete")] {
        for name in plan_names(plan, section, k) {
            println!("{sign} {what} {name}");
        }
    }
    for name in plan_names(plan, section, "kept") {
        println!("  {what} {name} (not declared; kept, use --prune to delete)");
    }
}

pub(crate) async fn apply(
    client: &crate::cli::ClientArgs,
    file: &std::path::Path,
    prune: bool,
    dry_run: bool,
) -> anyhow::Result<ExitCode> {
    let text =
        std::fs::read_to_string(file).with_context(|| format!("cannot read {}", file.display()))?;
    let platform: PlatformFile = serde_yaml_ng::from_str(&text)
        .with_context(|| format!("{} is not a valid platform file", file.display()))?;
    let mut body = json!({ "prune": prune, "dry_run": dry_run });
    if let Some(map) = body.as_object_mut() {
        if let Some(clients) = platform.clients {
            map.insert("clients".to_owned(), clients);
        }
        if let Some(auth) = platform.auth {
            map.insert("auth".to_owned(), auth);
        }
        if let Some(promotion) = platform.promotion {
            map.insert("promotion".to_owned(), promotion);
        }
        if let Some(workloads) = platform.workloads {
            map.insert("workloads".to_owned(), workloads);
        }
        if let Some(nats) = platform.nats {
            map.insert("nats".to_owned(), nats);
        }
    }
    let v = Client::new(client)?
        .expect_ok(Method::POST, "/v1/auth/apply", Some(body))
        .await?;
    let d = at(&v, "/data");
    if client.output == Output::Json {
        print_json(d)?;
        return Ok(ExitCode::SUCCESS);
    }
    let list = |k: &str| -> Vec<String> {
        d[k].as_array()
            .into_iter()
            .flatten()
            .filter_map(|x| x.as_str().map(str::to_owned))
            .collect()
    };
    for id in list("create") {
        println!("+ {id}");
    }
    for u in at(d, "/update").as_array().into_iter().flatten() {
        let changes: Vec<&str> = at(u, "/changes")
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect();
        println!("~ {} ({})", field(u, "client_id"), changes.join(", "));
    }
    for id in list("delete") {
        println!("- {id}");
    }
    for id in list("kept") {
        println!("  {id} (not declared; kept, use --prune to delete)");
    }
    print_named_plan(d, "jwt_roles", "JWT role");
    print_named_plan(d, "promotion", "promotion gate");
    print_named_plan(d, "nats", "NATS");
    let nats = |k: &str| plan_names(d, "nats", k);
    let roles = |k: &str| plan_names(d, "jwt_roles", k);
    let gates = |k: &str| plan_names(d, "promotion", k);
    let entries = |k: &str| -> Vec<String> {
        at(d, &format!("/workloads/{k}"))
            .as_array()
            .into_iter()
            .flatten()
            .map(|e| {
                let selectors: Vec<&str> = at(e, "/selectors")
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(Value::as_str)
                    .collect();
                format!(
                    "{} on {} for {}",
                    selectors.join(" "),
                    field(e, "node"),
                    field(e, "service")
                )
            })
            .collect()
    };
    for (sign, k) in [("+", "create"), ("-", "delete")] {
        for e in entries(k) {
            println!("{sign} workload {e}");
        }
    }
    for e in entries("kept") {
        println!("  workload {e} (not declared; kept, use --prune to delete)");
    }
    let (c, u, del) = (
        list("create").len()
            + roles("create").len()
            + gates("create").len()
            + nats("create").len()
            + entries("create").len(),
        at(d, "/update").as_array().map_or(0, Vec::len)
            + roles("update").len()
            + gates("update").len()
            + nats("update").len(),
        list("delete").len()
            + roles("delete").len()
            + gates("delete").len()
            + nats("delete").len()
            + entries("delete").len(),
    );
    if dry_run {
        println!("\nDry run: {c} to create, {u} to update, {del} to delete.");
    } else {
        println!(
            "\nApplied: {c} created, {u} updated, {del} deleted, {} unchanged.",
            list("unchanged").len()
                + roles("unchanged").len()
                + gates("unchanged").len()
                + nats("unchanged").len()
                + entries("unchanged").len()
        );
        if let Some(secrets) = at(d, "/secrets").as_object().filter(|s| !s.is_empty()) {
            println!("\nSecrets of the new clients (shown once):");
            for (id, s) in secrets {
                println!("  {id}: {}", s.as_str().unwrap_or_default());
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
