//! Durability probe used by the crash tests: writes numbered two-key batches
//! to a store and prints each batch number on stdout only after the commit
//! returned. A test kills this process with SIGKILL at a random moment and
//! checks that every printed (acknowledged) batch is in the store.
#![forbid(unsafe_code)]

use std::io::Write as _;
use std::process::ExitCode;

use vern_store::{Expect, Key, Write};

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let (Some(url), Some(prefix)) = (args.next(), args.next()) else {
        eprintln!("usage: vern-store-writer STORAGE_URL KEY_PREFIX");
        return ExitCode::from(2);
    };
    let store = match vern_store::open(&url, 1).await {
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
