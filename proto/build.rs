//! Generates the gRPC code from proto/ with protox, a pure-Rust .proto compiler, so a fresh machine
//! builds offline without protoc.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protos = ["k8s.io/deviceplugin/v1beta1/api.proto"];
    for p in &protos {
        println!("cargo:rerun-if-changed=proto/{p}");
    }
    let descriptors = protox::compile(protos, ["proto"])?;
    tonic_prost_build::configure().build_client(true).build_server(true).compile_fds(descriptors)?;
    Ok(())
}
