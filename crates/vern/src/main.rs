//! `vern`: the server (`vern serve`) and the client commands that talk to it.
#![forbid(unsafe_code)]

mod agent;
mod attest;
mod audit;
mod cli;
mod client;
mod clients;
mod config;
mod jwt_auth;
mod keeper;
mod kv;
mod logging;
mod nats;
mod pki;
mod policy;
mod serve;
mod workloads;

use std::process::ExitCode;

use clap::Parser;

/// jemalloc instead of the system allocator: a request allocates and frees
/// many small buffers across threads, and glibc's malloc and free (with its
/// consolidation of freed chunks) took about a sixth of an audited read's
/// CPU. With jemalloc the read costs about 14% less CPU, and the memory
/// benchmark's peak is lower too (137 MB against 147 MB); mimalloc was as
/// fast but more than doubled that peak.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("Error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(cli::run(cli)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("Error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
