//! Generates the fedcsg.v1 gRPC code from proto/ with protox (a pure-Rust protobuf compiler), so
//! a fresh machine needs nothing but cargo; also writes the descriptor set for server reflection.

use std::path::PathBuf;

use prost::Message;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?).join("../../proto");
    let file = root.join("fedcsg/v1/fedcsg.proto");
    println!("cargo:rerun-if-changed={}", file.display());
    let fds = protox::compile([&file], [&root])?;
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(out.join("fedcsg_v1_descriptor.bin"), fds.encode_to_vec())?;
    tonic_prost_build::configure()
        // A round's encoded global model is built once and shared (reference-counted) by every
        // worker's download stream, not copied per stream.
        .bytes(".fedcsg.v1.ModelChunk.data")
        .build_client(true)
        .build_server(true)
        .compile_fds(fds)?;
    Ok(())
}
