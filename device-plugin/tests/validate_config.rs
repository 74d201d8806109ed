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

/// `validate-config` of a file holding `text`.
fn validate_text(text: &str) -> (bool, String, String) {
    let dir = tempfile::tempdir().expect("tempdir");
    let f = dir.path().join("pools.yaml");
    std::fs::write(&f, text).expect("write");
    run(&["validate-config", f.to_str().expect("utf8")])
}

#[test]
fn a_valid_file_is_summarized() {
    let (ok, out, err) = validate_text(
        "clusterName: c\npools:\n  - {name: fast, mode: kernel, resourceName: nodeeni.io/fast, subnetIds: [subnet-12345678], enisPerSubnet: 2}\n",
    );
    assert!(ok, "{err}");
    assert!(out.contains("1 pool(s)") && out.contains("nodeeni.io/fast") && out.contains("2 ENI(s)"), "{out}");
    assert!(!out.contains("aws:TagKeys"), "no pool tags, nothing to add to the IAM policy: {out}");
}

/// An OTLP endpoint set for other programs that the daemon cannot use (https, gRPC) turns traces off
/// with a warning; the command itself runs.
#[test]
fn an_unusable_otlp_endpoint_in_the_environment_turns_traces_off_and_the_command_runs() {
    let dir = tempfile::tempdir().expect("tempdir");
    let f = dir.path().join("pools.yaml");
    std::fs::write(&f, "clusterName: c\npools:\n  - {name: m, mode: host, subnetIds: [subnet-12345678]}\n")
        .expect("write");
    let out = Command::new(env!("CARGO_BIN_EXE_nodeeni-device-plugin"))
        .arg("validate-config")
        .arg(&f)
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", "https://collector.example:4317")
        .output()
        .expect("run");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("traces are off"), "said why: {err}");
    // The same endpoint given as the daemon's own flag is refused: the operator asked for it.
    let out = Command::new(env!("CARGO_BIN_EXE_nodeeni-device-plugin"))
        .args(["--otlp-endpoint", "https://collector.example:4317", "validate-config"])
        .arg(&f)
        .output()
        .expect("run");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("--otlp-endpoint") && err.contains("http"), "{err}");
}

#[test]
fn pool_tags_are_named_as_keys_the_iam_policy_must_allow() {
    let (ok, out, err) = validate_text(
        "clusterName: c\npools:\n  - {name: fast, mode: kernel, resourceName: nodeeni.io/fast, subnetIds: [subnet-12345678], tags: {team: ran, cost-center: \"5g\"}}\n",
    );
    assert!(ok, "{err}");
    assert!(out.contains("pools set tags cost-center, team: add these keys to aws:TagKeys"), "{out}");
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
fn nodeeni_manifests_alone_are_checked_without_a_cluster_name() {
    let fixtures = concat!(env!("CARGO_MANIFEST_DIR"), "/../conf/tests/fixtures/nodeeni");
    let (ok, out, err) = run(&["validate-config", &format!("{fixtures}/dpdk.yaml")]);
    assert!(ok, "{err}");
    assert!(out.contains("valid; NodeENI manifests, 1 pool(s)") && out.contains("user-plane"), "{out}");
    let (ok, _, err) = run(&["validate-config", &format!("{fixtures}/invalid.yaml")]);
    assert!(!ok && err.contains("NodeENI(broken).spec.mtu") && !err.contains("clusterName"), "{err}");
    // A PoolConfig without its cluster name is still refused for it.
    let (ok, _, err) = validate_text("pools: []\n");
    assert!(!ok && err.contains("clusterName"), "{err}");
}

#[test]
fn crds_prints_the_checked_in_crds() {
    let (ok, out, err) = run(&["crds"]);
    assert!(ok, "{err}");
    let checked_in =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy/crds.yaml")).expect("crds");
    assert!(out == checked_in, "`crds` prints what deploy/crds.yaml holds");
}

#[test]
fn help_names_the_commands() {
    let (ok, out, _) = run(&["--help"]);
    assert!(ok && out.contains("validate-config"), "{out}");
    let (ok, out, _) = run(&["validate-config", "--help"]);
    assert!(ok && out.contains("--cluster-name"), "{out}");
}

#[test]
fn status_shows_the_node_state_as_a_table_or_json() {
    let dir = tempfile::tempdir().expect("tempdir");
    // Claimed now, in this boot (a hold older than the boot would be read as freed by the reboot).
    let now = nodeeni_state::node::now_unix();
    let state = serde_json::json!({"version": 1, "enis": [
        {"eniId": "eni-0000000000000a021", "pool": "fast", "mode": "kernel", "lifecycle": "ready", "deviceIndex": 1,
         "networkCard": 1, "hostIfname": "eth1", "mac": "0a:00:00:00:00:21", "primaryIp": "10.0.1.20", "sourceDestCheck": false, "updatedUnix": 0,
         "allocation": {"containerId": "pod-1", "ifname": "net1", "sinceUnix": now}},
        {"eniId": "eni-0000000000000d0d1", "pool": "dp", "mode": "dpdk", "lifecycle": "draining", "pci": "0000:00:06.0", "updatedUnix": 0}
    ]});
    std::fs::write(dir.path().join("node-state.json"), state.to_string()).expect("state");
    let d = dir.path().to_str().expect("utf8");
    let (ok, out, err) = run(&["status", "--state-dir", d]);
    assert!(ok, "{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 3, "{out}");
    assert!(lines[0].starts_with("ENI") && lines[0].contains("SRC/DST") && lines[0].contains("HELD BY"));
    let column = |line: &str, name: &str| {
        line.get(lines[0].find(name).expect("column")..)
            .and_then(|rest| rest.split_whitespace().next())
            .map(str::to_string)
    };
    assert_eq!(column(lines[1], "SRC/DST").as_deref(), Some("off"), "{out}");
    assert_eq!(column(lines[2], "SRC/DST").as_deref(), Some("-"), "unknown: {out}");
    assert_eq!(
        (column(lines[1], "CARD").as_deref(), column(lines[1], "INDEX").as_deref()),
        (Some("1"), Some("1")),
        "{out}"
    );
    assert_eq!(column(lines[2], "CARD").as_deref(), Some("-"), "no place yet: {out}");
    assert!(
        lines[1].contains("eni-0000000000000a021") && lines[1].contains("eth1") && lines[1].contains("pod-1/net1"),
        "{out}"
    );
    assert!(lines[2].contains("draining") && lines[2].contains("0000:00:06.0"), "{out}");
    let (ok, out, _) = run(&["status", "--state-dir", d, "--json"]);
    assert!(ok);
    let back: serde_json::Value = serde_json::from_str(&out).expect("json");
    assert_eq!(back["enis"][1]["lifecycle"], "draining");
    assert_eq!(back["enis"][0]["sourceDestCheck"], false);
    let empty = tempfile::tempdir().expect("tempdir");
    let (ok, _, err) = run(&["status", "--state-dir", empty.path().to_str().expect("utf8")]);
    assert!(!ok && err.contains("no node state"), "{err}");
}

#[test]
fn run_refuses_an_invalid_config_and_logs_why_as_json_when_asked() {
    let dir = tempfile::tempdir().expect("tempdir");
    let f = dir.path().join("pools.yaml");
    std::fs::write(&f, "clusterName: c\npools:\n  - {name: fast, mode: warp}\n").expect("write");
    let (ok, _, err) = run(&["--log-format", "json", "run", "--config", f.to_str().expect("utf8"), "--no-metrics"]);
    assert!(!ok, "an invalid config is refused at start");
    let lines: Vec<serde_json::Value> = err
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not a JSON log line ({e}): {l}")))
        .collect();
    let refusal = lines.iter().find(|l| l["level"] == "ERROR").unwrap_or_else(|| panic!("no error logged: {err}"));
    let error = refusal["fields"]["error"].as_str().expect("the error is a field");
    assert!(error.contains("pools[0].mode"), "names the problem: {error}");
}

#[test]
fn every_command_has_help() {
    for cmd in ["run", "drain", "validate-config", "status", "install-cni", "crds"] {
        let (ok, out, err) = run(&[cmd, "--help"]);
        assert!(ok && out.contains("Usage:"), "{cmd} --help: {out}{err}");
    }
}
