//! Generates the messages of gRPC server reflection (`proto/reflection.proto`), which
//! `plinth inspect` and `plinth call` use to learn what an executable plugin serves, with a
//! vendored `protoc` so no system protobuf compiler is needed.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    // SAFETY: build scripts are single-threaded; nothing else reads the environment meanwhile.
    unsafe { std::env::set_var("PROTOC", protoc) };
    tonic_prost_build::configure()
        .build_server(false)
        .compile_protos(&["proto/reflection.proto"], &["proto"])?;
    Ok(())
}
