//! Compiles `proto/courier.proto` (the client protocol) and `proto/cluster.proto`
//! (between nodes), and the MIMC web SDK's schemas (`proto/mimc/`), with protox (pure Rust) so the build needs no `protoc`.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto/courier.proto");
    println!("cargo:rerun-if-changed=proto/cluster.proto");
    println!("cargo:rerun-if-changed=proto/mimc");
    let descriptors = protox::compile(
        [
            "proto/courier.proto",
            "proto/cluster.proto",
            "proto/mimc/ims.proto",
            "proto/mimc/mimc.proto",
        ],
        ["proto"],
    )?;
    prost_build::Config::new()
        .bytes(["."])
        .compile_fds(descriptors)?;
    Ok(())
}
