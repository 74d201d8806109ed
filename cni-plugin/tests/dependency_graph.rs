//! The CNI binary must start fast and stay small: the AWS SDK and the Kubernetes client must never
//! enter its dependency graph (only the daemon talks to EC2 and the API server).

use std::process::Command;

#[test]
fn the_cni_binary_never_links_the_aws_sdk_or_the_kubernetes_client() {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = Command::new(cargo)
        .args(["tree", "--offline", "-p", "nodeeni-cni", "-e", "normal,build", "--prefix", "none"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("cargo tree");
    let tree = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "cargo tree failed: {}", String::from_utf8_lossy(&out.stderr));
    assert!(tree.lines().any(|l| l.starts_with("nodeeni-state")), "the tree is read: {tree}");
    let aws: Vec<&str> = tree.lines().filter(|l| l.starts_with("aws-")).collect();
    assert!(aws.is_empty(), "AWS crates in the CNI's graph: {aws:?}");
    for heavy in ["tokio ", "tonic ", "hyper ", "kube", "k8s-openapi ", "nodeeni-cluster "] {
        assert!(!tree.lines().any(|l| l.starts_with(heavy)), "{heavy}is in the CNI's graph");
    }
}
