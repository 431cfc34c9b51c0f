//! Generates the gRPC code for go-plugin's own services (broker, controller, stdio, health)
//! from `proto/`, with a vendored `protoc` so no system protobuf compiler is needed.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    // SAFETY: build scripts are single-threaded; nothing else reads the environment meanwhile.
    unsafe { std::env::set_var("PROTOC", protoc) };
    tonic_prost_build::configure().compile_protos(
        &[
            "proto/grpc_broker.proto",
            "proto/grpc_controller.proto",
            "proto/grpc_stdio.proto",
            "proto/health.proto",
        ],
        &["proto"],
    )?;
    Ok(())
}
