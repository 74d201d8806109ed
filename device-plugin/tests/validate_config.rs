//! `validate-config`: a valid file is summarized; an invalid one lists every problem and exits 1.

use std::process::Command;

fn run(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_nodeeni-device-plugin")).args(args).output().expect("run");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn a_valid_file_is_summarized() {
    let dir = tempfile::tempdir().expect("tempdir");
    let f = dir.path().join("pools.yaml");
    std::fs::write(
        &f,
        "clusterName: c\npools:\n  - {name: fast, mode: kernel, resourceName: nodeeni.io/fast, subnetIds: [subnet-12345678], enisPerSubnet: 2}\n",
    )
    .expect("write");
    let (ok, out, err) = run(&["validate-config", f.to_str().expect("utf8")]);
    assert!(ok, "{err}");
    assert!(out.contains("1 pool(s)") && out.contains("nodeeni.io/fast") && out.contains("2 ENI(s)"), "{out}");
}

#[test]
fn every_problem_is_printed_and_the_exit_code_is_1() {
    let dir = tempfile::tempdir().expect("tempdir");
    let f = dir.path().join("bad.yaml");
    let manifest = concat!(env!("CARGO_MANIFEST_DIR"), "/../conf/tests/fixtures/nodeeni/invalid.yaml");
    std::fs::copy(manifest, &f).expect("copy");
    let (ok, _, err) = run(&["validate-config", "--cluster-name", "c", f.to_str().expect("utf8")]);
    assert!(!ok);
    for field in
        ["subnetID", "securityGroupIDs[0]", "deviceIndex", "mtu", "dpdkDriver", "dpdkResourceName", "dpdkPCIAddress"]
    {
        assert!(err.contains(&format!("NodeENI(broken).spec.{field}")), "{field} missing from:\n{err}");
    }
    assert!(err.contains("7 problems"), "{err}");
    let (ok, _, err) = run(&["validate-config", "/nonexistent/pools.yaml"]);
    assert!(!ok && err.contains("/nonexistent/pools.yaml"), "{err}");
}

#[test]
fn help_names_the_commands() {
    let (ok, out, _) = run(&["--help"]);
    assert!(ok && out.contains("validate-config"), "{out}");
    let (ok, out, _) = run(&["validate-config", "--help"]);
    assert!(ok && out.contains("--cluster-name"), "{out}");
}
