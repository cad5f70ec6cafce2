//! Generates the `hodei.v1` protobuf code at build time with protox (a pure-Rust
//! protobuf compiler), so no system `protoc` is needed. Only runs with the
//! `proto` feature.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    #[cfg(feature = "proto")]
    generate()?;
    Ok(())
}

#[cfg(feature = "proto")]
fn generate() -> Result<(), Box<dyn std::error::Error>> {
    use std::path::PathBuf;

    let root = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?).join("../proto");
    let files = [
        "hodei/v1/common.proto",
        "hodei/v1/worker_agent.proto",
        "hodei/v1/job_execution.proto",
        "hodei/v1/scheduler.proto",
        "hodei/v1/provider.proto",
        "hodei/v1/logs.proto",
        "hodei/v1/metrics.proto",
        "hodei/v1/templates.proto",
        "hodei/v1/artifacts.proto",
    ];
    for f in &files {
        println!("cargo:rerun-if-changed={}", root.join(f).display());
    }
    let fds = protox::compile(files, [&root])?;
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    // The descriptor set feeds gRPC server reflection.
    std::fs::write(
        out_dir.join("hodei_v1_descriptor.bin"),
        prost::Message::encode_to_vec(&fds),
    )?;
    tonic_prost_build::configure()
        .bytes(".hodei.v1.LogEntry.data")
        // Artifact chunks travel as `Bytes`: no copy between the wire and the store.
        .bytes(".hodei.v1.UploadArtifactRequest")
        .bytes(".hodei.v1.DownloadArtifactResponse")
        // One buffer reservation per encoded message (see `proto::codec`).
        .codec_path("crate::proto::codec::Codec")
        .server_mod_attribute(".", "#[cfg(feature = \"server\")]")
        .compile_fds(fds)?;
    Ok(())
}
