//! Log set-up: readable text on a terminal, JSON lines otherwise.

use std::io::IsTerminal;

use clap::ValueEnum;
use tracing_appender::non_blocking::{NonBlockingBuilder, WorkerGuard};
use tracing_subscriber::EnvFilter;

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum LogFormat {
    /// Text on a terminal, JSON otherwise.
    Auto,
    /// Human-readable text.
    Text,
    /// One JSON object per line.
    Json,
}

/// Log lines waiting for the writer at most. The library's default (128,000)
/// let a burst of requests queue tens of megabytes of lines (the memory
/// benchmark measured it); past this many, a request waits for the writer.
const QUEUED_LINES: usize = 4_096;

/// Installs the global subscriber, writing to stderr from a thread of its
/// own: a request formats its lines and queues them, and never waits on the
/// write itself. The queue is not lossy: when it is full (stderr blocked),
/// callers wait rather than drop lines. `VERN_LOG` takes an `EnvFilter`
/// directive such as `info` or `vern_server=debug`. Dropping the returned
/// guard writes out every line still queued, so hold it until the command
/// ends.
#[must_use = "dropping the guard stops logging"]
pub(crate) fn init(format: LogFormat) -> WorkerGuard {
    let (writer, guard) = NonBlockingBuilder::default()
        .lossy(false)
        .buffered_lines_limit(QUEUED_LINES)
        .thread_name("vern-log")
        .finish(std::io::stderr());
    let filter = EnvFilter::try_from_env("VERN_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    let json = match format {
        LogFormat::Auto => !std::io::stderr().is_terminal(),
        LogFormat::Text => false,
        LogFormat::Json => true,
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer);
    let result = if json {
        builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .try_init()
    } else {
        builder.try_init()
    };
    if let Err(e) = result {
        eprintln!("warning: logging was already initialised: {e}");
    }
    guard
}
