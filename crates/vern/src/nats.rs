//! `vern nats`: the rendered nats-server configuration and the path
//! report, over the HTTP API.

use std::path::Path;
use std::process::ExitCode;

use anyhow::Context as _;
use reqwest::Method;
use vern_nats::paths::PathReport;

use crate::cli::{ClientArgs, NatsCommand, NatsPathsArgs, Output, PathsOutput};
use crate::client::{at, print_json, Client};

/// The CA bundle's file name, next to the configuration: the trust
/// anchors client certificates must chain to.
const CA_BUNDLE: &str = "vern-ca.pem";

/// Runs a `vern nats` command.
pub(crate) async fn run(cmd: NatsCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        NatsCommand::Config {
            client,
            out,
            tls_cert,
            tls_key,
        } => {
            // nats-server reads these paths from its own working directory:
            // they are written absolute.
            let tls = match (&tls_cert, &tls_key, &out) {
                (Some(cert), Some(key), Some(out)) => {
                    let abs = |p: &Path| {
                        std::path::absolute(p)
                            .with_context(|| format!("cannot resolve {}", p.display()))
                    };
                    let dir = abs(out)?
                        .parent()
                        .map(Path::to_path_buf)
                        .context("--out names no file")?;
                    Some((abs(cert)?, abs(key)?, dir.join(CA_BUNDLE)))
                }
                _ => None,
            };
            let path = match &tls {
                Some((cert, key, ca)) => {
                    let q = |p: &Path| {
                        form_urlencoded::byte_serialize(p.to_string_lossy().as_bytes())
                            .collect::<String>()
                    };
                    format!(
                        "/v1/nats/config?tls_cert={}&tls_key={}&tls_ca={}",
                        q(cert),
                        q(key),
                        q(ca)
                    )
                }
                None => "/v1/nats/config".to_owned(),
            };
            let v = Client::new(&client)?
                .expect_ok(Method::GET, &path, None)
                .await?;
            let config = at(&v, "/data/config")
                .as_str()
                .context("the server's answer holds no configuration")?;
            if let Some((_, _, ca)) = &tls {
                let pem = at(&v, "/data/ca_pem")
                    .as_str()
                    .context("the server's answer holds no CA bundle")?;
                std::fs::write(ca, pem)
                    .with_context(|| format!("cannot write {}", ca.display()))?;
            }
            match out {
                Some(path) => {
                    write_private(&path, config.as_bytes())?;
                    if client.output == Output::Json {
                        print_json(at(&v, "/data/accounts"))?;
                    } else {
                        let accounts = at(&v, "/data/accounts")
                            .as_array()
                            .map(|a| {
                                a.iter()
                                    .filter_map(|x| x.as_str())
                                    .collect::<Vec<_>>()
                                    .join(", ")
                            })
                            .unwrap_or_default();
                        println!("Wrote {} (tenant accounts: {accounts}).", path.display());
                    }
                }
                None => print!("{config}"),
            }
            Ok(ExitCode::SUCCESS)
        }
        NatsCommand::Paths(args) => paths(args).await,
    }
}

async fn paths(args: NatsPathsArgs) -> anyhow::Result<ExitCode> {
    let client = ClientArgs {
        address: args.address,
        token: args.token,
        ca_cert: args.ca_cert,
        output: Output::Json,
    };
    let path = match &args.tenant {
        Some(t) => format!(
            "/v1/nats/paths?tenant={}",
            form_urlencoded::byte_serialize(t.as_bytes()).collect::<String>()
        ),
        None => "/v1/nats/paths".to_owned(),
    };
    let v = Client::new(&client)?
        .expect_ok(Method::GET, &path, None)
        .await?;
    let data = at(&v, "/data");
    if args.output == PathsOutput::Json {
        print_json(data)?;
        return Ok(ExitCode::SUCCESS);
    }
    let report: PathReport =
        serde_json::from_value(data.clone()).context("the server's path report is malformed")?;
    match args.output {
        PathsOutput::Dot => print!("{}", report.dot()),
        PathsOutput::Table | PathsOutput::Json => print!("{}", report.table()),
    }
    Ok(ExitCode::SUCCESS)
}

/// Writes the configuration readable by its owner only: it holds the
/// callout and system users' passwords.
fn write_private(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    use std::io::Write as _;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options
        .open(path)
        .with_context(|| format!("cannot write {}", path.display()))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        file.set_permissions(std::fs::Permissions::from_mode(0o600))
            .with_context(|| format!("cannot restrict {}", path.display()))?;
    }
    file.write_all(bytes)?;
    file.sync_all()?;
    Ok(())
}
