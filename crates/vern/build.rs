//! Compiles the SPIFFE Workload API (`proto/workload.proto`) for
//! `vern agent` and `vern svid fetch`. `protox` parses the file in Rust,
//! so no `protoc` needs to be installed.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto/workload.proto");
    let descriptors = protox::compile(["workload.proto"], ["proto"])?;
    tonic_build::configure()
        .build_server(true)
        .build_client(true)
        .compile_fds(descriptors)?;
    Ok(())
}
