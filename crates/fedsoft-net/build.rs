//! Compiles proto/fedsoft.proto into the gRPC client and server (protox parses it, so no `protoc`).

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto/fedsoft.proto");
    let descriptors = protox::compile(["proto/fedsoft.proto"], ["proto"])?;
    tonic_prost_build::configure().build_client(true).build_server(true).compile_fds(descriptors)?;
    Ok(())
}
