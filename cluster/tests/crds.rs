//! deploy/crds.yaml is what the Rust types generate.

use std::path::Path;

#[test]
fn the_checked_in_crds_are_the_generated_ones() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/crds.yaml");
    let generated = nodeeni_cluster::crd::crds_yaml();
    let checked_in = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        checked_in == generated,
        "{} differs from the CRDs cluster/src/crd.rs generates; regenerate it with \
         `cargo run -p nodeeni-device-plugin -- crds > deploy/crds.yaml`",
        path.display()
    );
}
