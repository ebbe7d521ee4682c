//! Compiles `proto/courier.proto` (the client protocol) and `proto/cluster.proto`
//! (between nodes) with protox (pure Rust) so the build needs no `protoc`.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto/courier.proto");
    println!("cargo:rerun-if-changed=proto/cluster.proto");
    let descriptors = protox::compile(["proto/courier.proto", "proto/cluster.proto"], ["proto"])?;
    prost_build::Config::new()
        .bytes(["."])
        .compile_fds(descriptors)?;
    Ok(())
}
