//! Compiles `proto/` with protox (pure Rust, no `protoc`) and generates the
//! tonic services; also writes the descriptor set that reflection serves.
use prost::Message as _;

fn main() -> anyhow::Result<()> {
    println!("cargo:rerun-if-changed=proto");
    let files = [
        "samband/v1/samband.proto",
        "samband/v1/envelope.proto",
        "samband/v1/federation.proto",
    ];
    let fds = protox::compile(files, ["proto"])?;
    let bytes = fds.encode_to_vec();
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(out.join("samband_descriptor.bin"), &bytes)?;
    let mut fds = prost_types::FileDescriptorSet::decode(bytes.as_slice())?;
    // The Federation service is generated below with a codec of its own,
    // which bounds what a partner's frame may cost before it is decoded.
    // Reflection still serves it from the full descriptor set above.
    for file in &mut fds.file {
        if file.name() == "samband/v1/federation.proto" {
            file.service.clear();
        }
    }
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_fds(fds)?;
    let link = tonic_build::manual::Method::builder()
        .name("link")
        .route_name("Link")
        .input_type("super::LinkFrame")
        .output_type("super::LinkFrame")
        .codec_path("crate::federation::wire::LinkCodec")
        .client_streaming()
        .server_streaming()
        .build();
    let fetch_file = tonic_build::manual::Method::builder()
        .name("fetch_file")
        .route_name("FetchFile")
        .input_type("super::FileRequest")
        .output_type("super::FileChunk")
        .codec_path("tonic_prost::ProstCodec")
        .server_streaming()
        .build();
    let serve_files = tonic_build::manual::Method::builder()
        .name("serve_files")
        .route_name("ServeFiles")
        .input_type("super::FilePush")
        .output_type("super::FileRequest")
        .codec_path("tonic_prost::ProstCodec")
        .client_streaming()
        .server_streaming()
        .build();
    let federation = tonic_build::manual::Service::builder()
        .name("Federation")
        .package("samband.v1")
        .method(link)
        .method(fetch_file)
        .method(serve_files)
        .build();
    tonic_build::manual::Builder::new().compile(&[federation]);
    bench_echo()
}

/// `samband bench`'s echo service, for the binary alone (not in the
/// library's services nor in what reflection serves); its messages are
/// the library's.
fn bench_echo() -> anyhow::Result<()> {
    let echo = "samband/bench/v1/echo.proto";
    let bytes = protox::compile([echo], ["proto"])?.encode_to_vec();
    let mut fds = prost_types::FileDescriptorSet::decode(bytes.as_slice())?;
    fds.file.retain(|f| f.name() == echo);
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .extern_path(".samband.v1", "::samband::proto")
        .compile_fds(fds)?;
    Ok(())
}
