//! Compiles `proto/` with protox (pure Rust, no `protoc`) and generates the
//! tonic services; also writes the descriptor set that reflection serves.
use prost::Message as _;

fn main() -> anyhow::Result<()> {
    println!("cargo:rerun-if-changed=proto");
    let files = [
        "samband/v1/samband.proto",
        "samband/v1/envelope.proto",
        "samband/v1/federation.proto",
        "samband/v1/bench.proto",
    ];
    let fds = protox::compile(files, ["proto"])?;
    let bytes = fds.encode_to_vec();
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(out.join("samband_descriptor.bin"), &bytes)?;
    let fds = prost_types::FileDescriptorSet::decode(bytes.as_slice())?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_fds(fds)?;
    Ok(())
}
