//! Generates the gRPC code of the example interfaces' go-plugin halves from the same `.proto`
//! files the Go fixtures in `tests/go` are built from, with a vendored `protoc`.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    // SAFETY: build scripts are single-threaded; nothing else reads the environment meanwhile.
    unsafe { std::env::set_var("PROTOC", protoc) };
    tonic_prost_build::configure().compile_protos(
        &[
            "../tests/go/proto/kv.proto",
            "../tests/go/proto/counter.proto",
        ],
        &["../tests/go/proto"],
    )?;
    Ok(())
}
