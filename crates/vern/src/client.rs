//! Client commands: they talk to a running server over its HTTP API.

use std::io::BufRead as _;
use std::process::ExitCode;

use anyhow::{bail, Context as _};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::cli::{ClientArgs, Output, RotateRootCommand, ShareSetArgs};

/// Exit code of `vern status` when the server is sealed, as in Vault.
const EXIT_SEALED: u8 = 2;

pub(crate) struct Client {
    http: reqwest::Client,
    base: String,
    token: Option<String>,
    /// When set, requests carry `X-Request-Id: <prefix>-<n>`.
    request_ids: Option<(String, std::sync::atomic::AtomicU64)>,
}

impl Client {
    pub(crate) fn new(args: &ClientArgs) -> anyhow::Result<Self> {
        let mut builder =
            reqwest::Client::builder().user_agent(concat!("vern-cli/", env!("CARGO_PKG_VERSION")));
        if let Some(path) = &args.ca_cert {
            let pem = std::fs::read(path)
                .with_context(|| format!("cannot read CA file {}", path.display()))?;
            let cert = reqwest::Certificate::from_pem(&pem)
                .with_context(|| format!("{} is not a PEM certificate", path.display()))?;
            builder = builder.add_root_certificate(cert);
        }
        Ok(Self {
            http: builder.build().context("cannot build the HTTP client")?,
            base: args.address.trim_end_matches('/').to_owned(),
            token: args.token.clone().filter(|t| !t.is_empty()),
            request_ids: None,
        })
    }

    /// Numbers this client's requests `<prefix>-1`, `<prefix>-2`, … so
    /// their audit records can be told apart.
    pub(crate) fn with_request_ids(mut self, prefix: String) -> Self {
        self.request_ids = Some((prefix, std::sync::atomic::AtomicU64::new(0)));
        self
    }

    /// Sends a request; returns status and parsed JSON body (`null` when
    /// empty). Vault-shaped errors become an `Err` with the server's words.
    pub(crate) async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> anyhow::Result<(StatusCode, Value)> {
        let (status, text) = self.call_text(method, path, body).await?;
        let value: Value = if text.trim().is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).with_context(|| {
                format!("the server answered {status} with a body that is not JSON")
            })?
        };
        Ok((status, value))
    }

    /// Sends a request; returns status and the body as sent, for answers
    /// that are not Vault-shaped JSON (PEM, stored bytes whose hash
    /// matters).
    pub(crate) async fn call_text(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> anyhow::Result<(StatusCode, String)> {
        let url = format!("{}{path}", self.base);
        let mut req = self.http.request(method, &url);
        if let Some(token) = &self.token {
            req = req.header("X-Vault-Token", token);
        }
        if let Some((prefix, n)) = &self.request_ids {
            let n = n.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
            req = req.header("X-Request-Id", format!("{prefix}-{n}"));
        }
        if let Some(body) = body {
            req = req.json(&body);
        }
        let resp = req
            .send()
            .await
            .with_context(|| format!("cannot reach Vern at {}; is VERN_ADDR right?", self.base))?;
        let status = resp.status();
        let text = resp.text().await.context("cannot read the response")?;
        Ok((status, text))
    }

    /// A `GET` of a document that is not JSON (a PEM file): its status
    /// and text.
    pub(crate) async fn get_text(&self, path: &str) -> anyhow::Result<(StatusCode, String)> {
        let url = format!("{}{path}", self.base);
        let resp =
            self.http.get(&url).send().await.with_context(|| {
                format!("cannot reach Vern at {}; is VERN_ADDR right?", self.base)
            })?;
        let status = resp.status();
        Ok((
            status,
            resp.text().await.context("cannot read the response")?,
        ))
    }

    pub(crate) async fn expect_ok(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> anyhow::Result<Value> {
        let (status, value) = self.call(method, path, body).await?;
        if status.is_success() {
            return Ok(value);
        }
        Err(failure(status, &value))
    }
}

/// The error of a failed request, in the server's words (Vault's
/// `errors` list) and with its status.
pub(crate) fn failure(status: StatusCode, value: &Value) -> anyhow::Error {
    let errors = value
        .get("errors")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .collect::<Vec<_>>()
                .join("; ")
        })
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| status.to_string());
    anyhow::anyhow!("{errors} (HTTP {})", status.as_u16())
}

pub(crate) fn print_json(value: &Value) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

pub(crate) fn print_table(rows: &[(&str, String)]) {
    let width = rows.iter().map(|(k, _)| k.len()).max().unwrap_or(3).max(3);
    println!("{:width$}    Value", "Key");
    println!("{:width$}    -----", "---");
    for (k, v) in rows {
        println!("{k:width$}    {v}");
    }
}

/// The value at a JSON pointer (`/data/keys`), or null when any member on
/// the way is missing: a server's answer is read, never trusted to have a
/// shape, and indexing (which panics on a non-object when writing) is not
/// used on it.
pub(crate) fn at<'a>(v: &'a Value, pointer: &str) -> &'a Value {
    static NULL: Value = Value::Null;
    v.pointer(pointer).unwrap_or(&NULL)
}

/// Sets a member of an object built here; a value that is not an object is
/// left as it is.
pub(crate) fn set(v: &mut Value, name: &str, value: Value) {
    if let Some(map) = v.as_object_mut() {
        map.insert(name.to_owned(), value);
    }
}

pub(crate) fn field(v: &Value, name: &str) -> String {
    match v.get(name) {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Null) | None => "n/a".to_owned(),
        Some(other) => other.to_string(),
    }
}

fn print_seal_status(args: &ClientArgs, v: &Value) -> anyhow::Result<ExitCode> {
    if args.output == Output::Json {
        print_json(v)?;
    } else {
        let mut rows = vec![
            ("Seal Type", field(v, "type")),
            ("Initialized", field(v, "initialized")),
            ("Sealed", field(v, "sealed")),
            ("Total Shares", field(v, "n")),
            ("Threshold", field(v, "t")),
        ];
        if v.get("sealed") == Some(&Value::Bool(true)) {
            rows.push((
                "Unseal Progress",
                format!("{}/{}", field(v, "progress"), field(v, "t")),
            ));
            rows.push(("Unseal Nonce", field(v, "nonce")));
        }
        rows.push(("Version", field(v, "version")));
        rows.push(("Storage Type", field(v, "storage_type")));
        if v.get("cluster_name").is_some() {
            rows.push(("Cluster Name", field(v, "cluster_name")));
            rows.push(("Cluster ID", field(v, "cluster_id")));
        }
        print_table(&rows);
    }
    let sealed = v.get("sealed") != Some(&Value::Bool(false));
    Ok(if sealed {
        ExitCode::from(EXIT_SEALED)
    } else {
        ExitCode::SUCCESS
    })
}

/// `vern status`: exit 0 unsealed, 2 sealed, 1 on error (Vault's codes).
pub(crate) async fn status(args: &ClientArgs) -> anyhow::Result<ExitCode> {
    let client = Client::new(args)?;
    let v = client
        .expect_ok(Method::GET, "/v1/sys/seal-status", None)
        .await?;
    print_seal_status(args, &v)
}

fn share_set_body(set: &ShareSetArgs) -> Value {
    json!({
        "secret_shares": set.key_shares,
        "secret_threshold": set.key_threshold,
        "share_recipients": set.share_recipients,
    })
}

/// Prints issued shares: base64 in clear, or each armored age file.
fn print_shares(v: &Value, encrypted: bool) {
    let list = if encrypted { "keys" } else { "keys_base64" };
    let keys = v
        .get(list)
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    for (i, k) in keys.iter().enumerate() {
        let k = k.as_str().unwrap_or_default();
        if encrypted {
            println!(
                "Unseal Key {} (encrypted to recipient {}):\n{}",
                i + 1,
                i + 1,
                k.trim_end()
            );
        } else {
            println!("Unseal Key {}: {k}", i + 1);
        }
    }
}

/// `vern operator init`.
pub(crate) async fn init(args: &ClientArgs, set: &ShareSetArgs) -> anyhow::Result<ExitCode> {
    let client = Client::new(args)?;
    let v = client
        .expect_ok(Method::PUT, "/v1/sys/init", Some(share_set_body(set)))
        .await?;
    if args.output == Output::Json {
        print_json(&v)?;
        return Ok(ExitCode::SUCCESS);
    }
    let (shares, threshold) = (set.key_shares, set.key_threshold);
    print_shares(&v, !set.share_recipients.is_empty());
    println!("\nInitial Root Token: {}", field(&v, "root_token"));
    println!(
        "\nVern is initialised with {shares} key shares and a threshold of {threshold}.\n\
         It is sealed: give {threshold} of the keys with `vern operator unseal` to unseal it.\n\
         The keys are shown only now: store each with a different operator."
    );
    Ok(ExitCode::SUCCESS)
}

/// The key from the command line, or one line of standard input.
/// On a terminal the key is read without echo; piped in, one line of
/// standard input is read.
fn key_or_stdin(key: Option<String>) -> anyhow::Result<String> {
    use std::io::IsTerminal as _;
    let key = match key {
        Some(k) => k,
        None if std::io::stdin().is_terminal() => {
            let typed = zeroize::Zeroizing::new(
                rpassword::prompt_password("Unseal key (will be hidden): ")
                    .context("cannot read the unseal key")?,
            );
            typed.trim().to_owned()
        }
        None => {
            let mut line = zeroize::Zeroizing::new(String::new());
            std::io::stdin()
                .lock()
                .read_line(&mut line)
                .context("cannot read the unseal key")?;
            line.trim().to_owned()
        }
    };
    if key.is_empty() {
        bail!("no unseal key given");
    }
    Ok(key)
}

/// `vern operator unseal`.
pub(crate) async fn unseal(
    args: &ClientArgs,
    key: Option<String>,
    reset: bool,
) -> anyhow::Result<ExitCode> {
    let client = Client::new(args)?;
    let body = if reset {
        json!({ "reset": true })
    } else {
        json!({ "key": key_or_stdin(key)? })
    };
    let v = client
        .expect_ok(Method::PUT, "/v1/sys/unseal", Some(body))
        .await?;
    print_seal_status(args, &v)?;
    Ok(ExitCode::SUCCESS)
}

/// `vern operator seal`.
pub(crate) async fn seal(args: &ClientArgs) -> anyhow::Result<ExitCode> {
    let client = Client::new(args)?;
    client.expect_ok(Method::PUT, "/v1/sys/seal", None).await?;
    if args.output == Output::Json {
        print_json(&json!({ "sealed": true }))?;
    } else {
        println!("Success! Vern is sealed.");
    }
    Ok(ExitCode::SUCCESS)
}

fn print_key_status(args: &ClientArgs, v: &Value) -> anyhow::Result<ExitCode> {
    if args.output == Output::Json {
        print_json(v)?;
    } else {
        print_table(&[
            ("Key Term", field(v, "term")),
            ("Install Time", field(v, "install_time")),
            ("Terms", field(v, "terms")),
        ]);
    }
    Ok(ExitCode::SUCCESS)
}

/// `vern operator rotate`.
pub(crate) async fn rotate_keyring(args: &ClientArgs) -> anyhow::Result<ExitCode> {
    let v = Client::new(args)?
        .expect_ok(Method::PUT, "/v1/sys/rotate/keyring", None)
        .await?;
    print_key_status(args, &v)
}

/// `vern operator key-status`.
pub(crate) async fn key_status(args: &ClientArgs) -> anyhow::Result<ExitCode> {
    let v = Client::new(args)?
        .expect_ok(Method::GET, "/v1/sys/key-status", None)
        .await?;
    print_key_status(args, &v)
}

fn print_rekey(args: &ClientArgs, v: &Value) -> anyhow::Result<ExitCode> {
    if args.output == Output::Json {
        print_json(v)?;
        return Ok(ExitCode::SUCCESS);
    }
    if v.get("complete") == Some(&Value::Bool(true)) {
        let encrypted = at(v, "/keys")
            .as_array()
            .and_then(|k| k.first())
            .and_then(Value::as_str)
            .is_some_and(|k| k.starts_with("-----BEGIN AGE"));
        print_shares(v, encrypted);
        println!(
            "\nThe root key was rotated. The old unseal keys no longer work; distribute these now."
        );
    } else {
        print_table(&[
            ("Nonce", field(v, "nonce")),
            ("Started", field(v, "started")),
            (
                "Rotation Progress",
                format!("{}/{}", field(v, "progress"), field(v, "required")),
            ),
            ("New Shares", field(v, "n")),
            ("New Threshold", field(v, "t")),
        ]);
    }
    Ok(ExitCode::SUCCESS)
}

/// `vern operator rotate-root …`.
pub(crate) async fn rotate_root(cmd: RotateRootCommand) -> anyhow::Result<ExitCode> {
    const PATH: &str = "/v1/sys/rotate/root/init";
    match cmd {
        RotateRootCommand::Init { client, share_set } => {
            let v = Client::new(&client)?
                .expect_ok(Method::PUT, PATH, Some(share_set_body(&share_set)))
                .await?;
            print_rekey(&client, &v)
        }
        RotateRootCommand::Update { client, nonce, key } => {
            let body = json!({ "key": key_or_stdin(key)?, "nonce": nonce });
            let v = Client::new(&client)?
                .expect_ok(Method::PUT, "/v1/sys/rotate/root/update", Some(body))
                .await?;
            print_rekey(&client, &v)
        }
        RotateRootCommand::Status(client) => {
            let v = Client::new(&client)?
                .expect_ok(Method::GET, PATH, None)
                .await?;
            print_rekey(&client, &v)
        }
        RotateRootCommand::Cancel(client) => {
            let v = Client::new(&client)?
                .expect_ok(Method::DELETE, PATH, None)
                .await?;
            print_rekey(&client, &v)
        }
    }
}
