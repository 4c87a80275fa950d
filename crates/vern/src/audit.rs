//! `vern audit`: verify, query and follow the audit log, and hash a known
//! value the way records do.

use std::io::Read as _;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context as _};
use indicatif::{ProgressBar, ProgressStyle};
use reqwest::Method;
use serde_json::{json, Value};
use vern_audit::verify::Report;
use vern_audit::PublicKey;
use zeroize::Zeroizing;

use crate::cli::{AuditCommand, AuditFilterArgs, AuditVerifyArgs, ClientArgs, Output};
use crate::client::{at, print_json, print_table, set, Client};

/// Exit code when the log does not verify.
const EXIT_BROKEN: u8 = 2;

pub(crate) async fn run(cmd: AuditCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        AuditCommand::Verify(args) => verify(&args).await,
        AuditCommand::Query {
            client,
            filter,
            after,
            limit,
        } => query(&client, &filter, after, limit).await,
        AuditCommand::Tail {
            client,
            filter,
            follow,
            lines,
        } => tail(&client, &filter, follow, lines).await,
        AuditCommand::Hash { client, value } => hash(&client, value).await,
        AuditCommand::PublicKey(client) => public_key(&client).await,
    }
}

async fn fetch_public_key(client: &ClientArgs) -> anyhow::Result<String> {
    let v = Client::new(client)?
        .expect_ok(Method::GET, "/v1/audit/public-key", None)
        .await
        .context("cannot get the audit public key from the server; give --public-key")?;
    at(&v, "/data/public_key")
        .as_str()
        .map(str::to_owned)
        .context("the server's answer has no public key")
}

async fn public_key(client: &ClientArgs) -> anyhow::Result<ExitCode> {
    let key = fetch_public_key(client).await?;
    match client.output {
        Output::Json => print_json(&json!({ "public_key": key }))?,
        Output::Table => println!("{key}"),
    }
    Ok(ExitCode::SUCCESS)
}

fn bar(len: u64, unit: &str) -> ProgressBar {
    let bar = ProgressBar::new(len);
    let template = format!(
        "{{elapsed_precise}} [{{bar:40}}] {{pos}}/{{len}} {unit} ({{per_sec}}, eta {{eta}})"
    );
    if let Ok(style) = ProgressStyle::with_template(&template) {
        bar.set_style(style.progress_chars("=> "));
    }
    bar
}

async fn verify(args: &AuditVerifyArgs) -> anyhow::Result<ExitCode> {
    let key_text = match &args.public_key {
        Some(k) => k.clone(),
        None => {
            eprintln!(
                "note: checking against the key the server gives; pin it with --public-key, since \
                 a server whose storage was rewritten could give another"
            );
            fetch_public_key(&args.client).await?
        }
    };
    let trusted = PublicKey::parse(&key_text)?;
    let started = std::time::Instant::now();
    let report = if let Some(path) = &args.file {
        let size = std::fs::metadata(path)
            .with_context(|| format!("cannot read {}", path.display()))?
            .len();
        let bar = bar(size, "bytes");
        let path = path.clone();
        let report = tokio::task::spawn_blocking({
            let bar = bar.clone();
            move || vern_audit::verify::verify_file(&path, trusted, &mut |n| bar.set_position(n))
        })
        .await??;
        bar.finish_and_clear();
        report
    } else if let Some(url) = &args.storage {
        if let Some(path) = sqlite_path(url) {
            if !std::path::Path::new(path).exists() {
                bail!("{path} does not exist; give the server's database file");
            }
        }
        // A SQLite server keeps its log in segment files beside the main
        // database; one that never ran this version still has it in a
        // database of its own beside it, or in the main file.
        if let Some(dir) = crate::serve::audit_dir(url).filter(|d| d.is_dir()) {
            let bar = bar(vern_audit::verify::segments_len(&dir)?, "bytes");
            let report = tokio::task::spawn_blocking({
                let bar = bar.clone();
                move || {
                    vern_audit::verify::verify_segments(&dir, trusted, &mut |n| {
                        bar.set_position(n);
                    })
                }
            })
            .await??;
            bar.finish_and_clear();
            report
        } else {
            let url = match vern_store::sibling_url(url, "audit") {
                Some(beside)
                    if sqlite_path(&beside).is_some_and(|p| std::path::Path::new(p).exists()) =>
                {
                    beside
                }
                _ => url.clone(),
            };
            let store = vern_store::open(&url, 2)
                .await
                .with_context(|| format!("cannot open storage {}", vern_store::redact_url(&url)))?;
            let head = vern_audit::verify::head_seq(store.as_ref()).await?;
            let bar = bar(head, "records");
            let report = vern_audit::verify::verify_store(store.as_ref(), trusted, &mut |n| {
                bar.set_position(n);
            })
            .await?;
            bar.finish_and_clear();
            report
        }
    } else {
        bail!("give --storage or --file");
    };
    let elapsed = started.elapsed();
    print_report(args.client.output, &report, &key_text, elapsed)?;
    Ok(if report.intact() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(EXIT_BROKEN)
    })
}

/// The file of a `sqlite:` URL.
fn sqlite_path(url: &str) -> Option<&str> {
    url.strip_prefix("sqlite:")
        .map(|p| p.strip_prefix("//").unwrap_or(p))
}

fn print_report(
    output: Output,
    report: &Report,
    key: &str,
    elapsed: Duration,
) -> anyhow::Result<()> {
    let per_sec = report.records as f64 / elapsed.as_secs_f64().max(1e-9);
    if output == Output::Json {
        let mut v = serde_json::to_value(report)?;
        set(&mut v, "intact", json!(report.intact()));
        set(
            &mut v,
            "first_broken",
            json!(report.first_broken().map(|p| p.seq)),
        );
        set(&mut v, "public_key", json!(key));
        set(&mut v, "seconds", json!(elapsed.as_secs_f64()));
        return print_json(&v);
    }
    match report.first_broken() {
        None => println!(
            "The audit log verifies: {} records, {} signed checkpoints, head {} ({}).",
            report.records, report.checkpoints, report.head_seq, report.head_hash
        ),
        Some(p) => println!("The audit log is BROKEN at record {}: {}", p.seq, p.reason),
    }
    match report.last_checkpoint {
        Some(seq) if report.unsigned_tail > 0 => println!(
            "Last checkpoint at record {seq}; the {} records after it are chained but not yet signed.",
            report.unsigned_tail
        ),
        Some(seq) => println!("Last checkpoint at record {seq}, the head."),
        None if report.records > 0 => {
            println!("No signed checkpoint yet: the chain is checked, but nothing signs it.");
        }
        None => {}
    }
    for p in report.problems.iter().skip(1).take(9) {
        println!("  also at record {}: {}", p.seq, p.reason);
    }
    if report.problems.len() > 10 {
        println!("  … {} problems in all", report.problems.len());
    }
    println!(
        "Checked in {:.2} s ({per_sec:.0} records/s).",
        elapsed.as_secs_f64()
    );
    Ok(())
}

fn records_path(filter: &AuditFilterArgs, after: u64, limit: usize) -> String {
    let mut q = form_urlencoded::Serializer::new(String::new());
    q.append_pair("after", &after.to_string());
    q.append_pair("limit", &limit.to_string());
    let pairs = [
        ("since", &filter.since),
        ("until", &filter.until),
        ("principal", &filter.principal),
        ("tenant", &filter.tenant),
        ("action", &filter.action),
        ("decision", &filter.decision),
    ];
    for (name, value) in pairs {
        if let Some(v) = value {
            q.append_pair(name, v);
        }
    }
    format!("/v1/audit/records?{}", q.finish())
}

/// A field for the terminal: control characters (escape sequences a
/// caller may have put into a recorded name) replaced.
fn opt(v: &Value) -> String {
    v.as_str().map_or_else(
        || "-".to_owned(),
        |s| {
            s.chars()
                .map(|c| if c.is_control() { '?' } else { c })
                .collect()
        },
    )
}

fn print_record(output: Output, r: &Value) -> anyhow::Result<()> {
    if output == Output::Json {
        println!("{}", serde_json::to_string(r)?);
        return Ok(());
    }
    let e = at(r, "/event");
    let decision = match at(e, "/decision/allowed").as_bool() {
        Some(true) => "allow",
        Some(false) => "deny",
        None => "-",
    };
    println!(
        "{:>8}  {}  {:<5}  {:<3}  {:<22}  {:<28}  {}  {}",
        at(r, "/seq"),
        opt(at(r, "/time")),
        decision,
        at(e, "/status"),
        opt(at(e, "/action")),
        opt(at(e, "/principal/id")),
        opt(at(e, "/resource")),
        opt(at(e, "/request_id")),
    );
    Ok(())
}

/// One page of records and the cursor after it.
async fn page(
    client: &Client,
    filter: &AuditFilterArgs,
    after: u64,
    limit: usize,
) -> anyhow::Result<(Vec<Value>, Option<u64>, u64)> {
    let v = client
        .expect_ok(Method::GET, &records_path(filter, after, limit), None)
        .await?;
    let data = at(&v, "/data");
    let records = at(data, "/records").as_array().cloned().unwrap_or_default();
    Ok((
        records,
        at(data, "/next_after").as_u64(),
        at(data, "/head").as_u64().unwrap_or(0),
    ))
}

async fn query(
    args: &ClientArgs,
    filter: &AuditFilterArgs,
    after: u64,
    limit: usize,
) -> anyhow::Result<ExitCode> {
    let client = Client::new(args)?;
    let mut after = after;
    let mut printed = 0;
    // The server examines a bounded number of records per call, so a sparse
    // filter may need several pages to fill `limit`.
    while printed < limit {
        let (records, next, _) = page(&client, filter, after, limit - printed).await?;
        for r in &records {
            print_record(args.output, r)?;
        }
        printed += records.len();
        match next {
            Some(n) => after = n,
            None => break,
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn tail(
    args: &ClientArgs,
    filter: &AuditFilterArgs,
    follow: bool,
    lines: u64,
) -> anyhow::Result<ExitCode> {
    // Reading the log is itself audited; the follower leaves its own reads
    // out by their request ids.
    let own = format!(
        "vern-audit-tail-{}-",
        hex::encode(rand::random::<[u8; 16]>())
    );
    let client = Client::new(args)?.with_request_ids(own.trim_end_matches('-').to_owned());
    let (_, _, head) = page(&client, filter, u64::MAX - 1, 1).await?;
    let mut after = head.saturating_sub(lines);
    loop {
        loop {
            let (records, next, head) = page(&client, filter, after, 1000).await?;
            for r in &records {
                let mine = at(r, "/event/client_request_id")
                    .as_str()
                    .is_some_and(|id| id.starts_with(&own));
                if !mine {
                    print_record(args.output, r)?;
                }
            }
            match next {
                Some(n) => after = n,
                None => {
                    // The server read the head before scanning, so every
                    // record up to it has been seen.
                    let last = records.last().and_then(|r| at(r, "/seq").as_u64());
                    after = after.max(head).max(last.unwrap_or(0));
                    break;
                }
            }
        }
        if !follow {
            return Ok(ExitCode::SUCCESS);
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

async fn hash(args: &ClientArgs, value: Option<String>) -> anyhow::Result<ExitCode> {
    let value = Zeroizing::new(match value.as_deref() {
        None | Some("-") => {
            let mut text = String::new();
            std::io::stdin()
                .read_to_string(&mut text)
                .context("cannot read the value from standard input")?;
            text.trim_end_matches(['\r', '\n']).to_owned()
        }
        Some(v) => v.to_owned(),
    });
    let client = Client::new(args)?;
    let v = client
        .expect_ok(
            Method::POST,
            "/v1/audit/hash",
            Some(json!({ "input": value.as_str() })),
        )
        .await?;
    let hash = at(&v, "/data/hash").as_str().unwrap_or_default().to_owned();
    match args.output {
        Output::Json => print_json(&json!({ "hash": hash }))?,
        Output::Table => print_table(&[("hash", hash)]),
    }
    Ok(ExitCode::SUCCESS)
}
