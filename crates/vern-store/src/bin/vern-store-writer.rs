//! Durability probe used by the crash tests: writes numbered two-key batches
//! to a store and prints each batch number on stdout only after the commit
//! returned. A test kills this process with SIGKILL at a random moment and
//! checks that every printed (acknowledged) batch is in the store. A third
//! argument `exclusive` holds a SQLite file as the server does.
#![forbid(unsafe_code)]

use std::io::Write as _;
use std::process::ExitCode;

use vern_store::{Expect, Key, Write};

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let (Some(url), Some(prefix)) = (args.next(), args.next()) else {
        eprintln!("usage: vern-store-writer STORAGE_URL KEY_PREFIX [exclusive]");
        return ExitCode::from(2);
    };
    let locking = match args.next().as_deref() {
        None => vern_store::Locking::Shared,
        Some("exclusive") => vern_store::Locking::Exclusive,
        Some(other) => {
            eprintln!("unknown locking `{other}`; give `exclusive` or nothing");
            return ExitCode::from(2);
        }
    };
    let store = match vern_store::open_with(&url, 1, locking).await {
        Ok(s) => s,
        Err(e) => {
            eprintln!("cannot open storage: {e}");
            return ExitCode::FAILURE;
        }
    };
    let mut stdout = std::io::stdout().lock();
    for i in 0u64.. {
        let batch = ["a", "b"].map(|side| {
            Key::new(format!("{prefix}/{side}/{i:010}"))
                .map(|k| Write::put(k, format!("value-{i}").into_bytes()).expecting(Expect::Absent))
        });
        let batch = match batch.into_iter().collect::<Result<Vec<_>, _>>() {
            Ok(b) => b,
            Err(e) => {
                eprintln!("bad key: {e}");
                return ExitCode::FAILURE;
            }
        };
        if let Err(e) = store.commit(batch).await {
            eprintln!("commit failed: {e}");
            return ExitCode::FAILURE;
        }
        if writeln!(stdout, "{i}")
            .and_then(|()| stdout.flush())
            .is_err()
        {
            return ExitCode::FAILURE;
        }
    }
    ExitCode::SUCCESS
}
