//! The Helm chart (charts/nodeeni), checked with the real helm and kubectl that scripts/install-deps
//! unpacks: `helm lint --strict`; the default values and every documented toggle (charts/nodeeni/ci/)
//! rendered and checked with kubernetes-validate --strict and yamllint, the pools and NodeENIs through
//! `validate-config`; bad values refused by values.schema.json; a monitor of a loopback listener
//! refused; deploy/ byte for byte the chart's rendering (scripts/render-deploy); the kustomize base the
//! default install and its example overlay in effect; the default image what scripts/image tags.

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use nodeeni_tests::tools::{cached_tool, output_text, repo, venv_tool};
use serde_json::Value;

fn chart() -> PathBuf {
    repo().join("charts/nodeeni")
}

/// The documented toggles: one values file each in charts/nodeeni/ci/ (helm's convention).
fn toggles() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(chart().join("ci"))
        .expect("charts/nodeeni/ci")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.ends_with("-values.yaml")))
        .collect();
    files.sort();
    assert!(files.len() >= 7, "a values file per toggle: {files:?}");
    files
}

/// The sets of values files the chart is checked with: none (the defaults), each toggle alone, and
/// every toggle at once (but those that turn something off, `no-*`, which the others contradict, and
/// alternatives to another toggle, `alt-*`).
fn value_sets() -> Vec<(String, Vec<PathBuf>)> {
    let mut sets = vec![("defaults".to_string(), vec![])];
    for t in toggles() {
        sets.push((t.file_name().expect("name").to_string_lossy().into_owned(), vec![t.clone()]));
    }
    let all: Vec<PathBuf> = toggles()
        .into_iter()
        .filter(|t| {
            let name = t.file_name().expect("name").to_string_lossy().into_owned();
            !name.starts_with("no-") && !name.starts_with("alt-")
        })
        .collect();
    sets.push(("every toggle on".to_string(), all));
    sets
}

/// Command-line arguments.
fn os(args: &[&str]) -> Vec<OsString> {
    args.iter().map(OsString::from).collect()
}

fn values_args(values: &[PathBuf]) -> Vec<OsString> {
    values.iter().flat_map(|v| [OsString::from("-f"), v.clone().into_os_string()]).collect()
}

/// `helm template nodeeni charts/nodeeni --namespace nodeeni` with `args` after it.
fn helm_template(helm: &Path, args: &[OsString]) -> Output {
    Command::new(helm)
        .arg("template")
        .arg("nodeeni")
        .arg(chart())
        .args(["--namespace", "nodeeni"])
        .args(args)
        .output()
        .expect("helm template")
}

/// A rendering that must succeed: its text.
fn render(helm: &Path, args: &[OsString]) -> String {
    let out = helm_template(helm, args);
    assert!(out.status.success(), "helm template {args:?}: {}", output_text(&out));
    String::from_utf8(out.stdout).expect("utf-8")
}

/// Every YAML document of a stream that is an object (not comments only), as JSON values.
fn objects(text: &str) -> Vec<Value> {
    let mut out = Vec::new();
    for doc in serde_yaml_ng::Deserializer::from_str(text) {
        let v: Value = serde::Deserialize::deserialize(doc).unwrap_or_else(|e| panic!("{e}: {text}"));
        if !v.is_null() {
            out.push(v);
        }
    }
    out
}

/// `v` with every integral float as an integer (kustomize writes the CRDs' `127.0` as `127`).
fn normalized(v: Value) -> Value {
    match v {
        Value::Number(n) => match n.as_f64() {
            Some(f) if n.is_f64() && f.fract() == 0.0 && f.abs() < 9.0e15 => Value::from(f as i64),
            _ => Value::Number(n),
        },
        Value::Array(items) => Value::Array(items.into_iter().map(normalized).collect()),
        Value::Object(map) => Value::Object(map.into_iter().map(|(k, v)| (k, normalized(v))).collect()),
        other => other,
    }
}

/// Objects by (kind, namespace, name), numbers normalized.
fn by_key(objects: Vec<Value>) -> BTreeMap<(String, String, String), Value> {
    let mut map = BTreeMap::new();
    for o in objects.into_iter().map(normalized) {
        let s = |v: &Value| v.as_str().unwrap_or_default().to_string();
        let key = (s(&o["kind"]), s(&o["metadata"]["namespace"]), s(&o["metadata"]["name"]));
        assert!(map.insert(key.clone(), o).is_none(), "two objects {key:?}");
    }
    map
}

#[test]
fn helm_lint_strict_passes_with_the_defaults_each_toggle_and_every_toggle_on() {
    let Some(helm) = cached_tool("helm") else { return };
    for (name, values) in value_sets() {
        let out = Command::new(&helm)
            .args(["lint", "--strict"])
            .arg(chart())
            .args(values_args(&values))
            .output()
            .expect("helm lint");
        let text = output_text(&out);
        assert!(out.status.success(), "{name}: {text}");
        assert!(text.contains("1 chart(s) linted, 0 chart(s) failed"), "{name}: {text}");
    }
}

/// Kinds kubernetes-validate has no schema for: the Prometheus Operator's (no CRD schemas in it) and
/// our NodeENI (checked against its CRD and by validate-config instead).
const NO_SCHEMA: [&str; 4] = ["NodeENI", "PodMonitor", "PrometheusRule", "ServiceMonitor"];

/// The NodeENI CRD's openAPIV3Schema verdict on each NodeENI of `file` (`name ok` or the fields
/// refused), by the venv's JSON Schema validator.
fn nodeeni_crd_verdicts(python: &Path, file: &Path) -> String {
    let script = r#"
import sys, yaml, jsonschema
crds = [d for d in yaml.safe_load_all(open(sys.argv[1])) if d]
crd = next(c for c in crds if c["spec"]["names"]["kind"] == "NodeENI")
version = next(v for v in crd["spec"]["versions"] if v["served"])
validator = jsonschema.Draft4Validator(version["schema"]["openAPIV3Schema"])
for doc in yaml.safe_load_all(open(sys.argv[2])):
    if doc and doc.get("kind") == "NodeENI":
        assert doc["apiVersion"] == crd["spec"]["group"] + "/" + version["name"], doc["apiVersion"]
        errors = sorted(".".join(str(p) for p in e.absolute_path) for e in validator.iter_errors(doc))
        print(doc["metadata"]["name"], "ok" if not errors else " ".join(errors))
"#;
    let out = Command::new(python)
        .arg("-c")
        .arg(script)
        .arg(chart().join("crds/crds.yaml"))
        .arg(file)
        .output()
        .expect("python");
    assert!(out.status.success(), "schema check failed: {}", output_text(&out));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn validate_config(file: &Path) -> String {
    let out = Command::new(nodeeni_tests::bins::path("nodeeni-device-plugin"))
        .arg("validate-config")
        .arg(file)
        .output()
        .expect("validate-config");
    let text = output_text(&out);
    assert!(out.status.success(), "{}: {text}", file.display());
    text
}

#[test]
fn every_toggle_renders_manifests_that_pass_kubernetes_validate_yamllint_and_validate_config() {
    let Some(helm) = cached_tool("helm") else { return };
    let Some(validate) = venv_tool("kubernetes-validate") else { return };
    let Some(yamllint) = venv_tool("yamllint") else { return };
    let Some(python) = venv_tool("python") else { return };
    let dir = tempfile::tempdir().expect("tempdir");
    let mut rendered_kinds = BTreeSet::new();
    for (i, (name, values)) in value_sets().into_iter().enumerate() {
        let args = values_args(&values);
        // The whole install, CRDs first, against the Kubernetes schemas.
        let mut with_crds = args.clone();
        with_crds.push("--include-crds".into());
        let text = render(&helm, &with_crds);
        let file = dir.path().join(format!("{i}-all.yaml"));
        std::fs::write(&file, &text).expect("write");
        let out = Command::new(&validate).arg("--strict").arg(&file).output().expect("kubernetes-validate");
        let report = output_text(&out);
        assert!(out.status.success(), "{name}: {report}");
        let skipped: BTreeSet<String> = report
            .lines()
            .filter_map(|l| l.split("Couldn't find schema for kind ").nth(1))
            .filter_map(|l| l.split(' ').next())
            .map(str::to_string)
            .collect();
        let docs = objects(&text);
        let unschemed: BTreeSet<String> = docs
            .iter()
            .filter_map(|o| o["kind"].as_str())
            .filter(|k| NO_SCHEMA.contains(k))
            .map(str::to_string)
            .collect();
        assert_eq!(skipped, unschemed, "{name}: only kinds without a schema are skipped: {report}");
        for o in &docs {
            let kind = o["kind"].as_str().expect("kind");
            rendered_kinds.insert(kind.to_string());
            if NO_SCHEMA.contains(&kind) {
                continue;
            }
            let resource = format!(
                "passed for resource {}/{}",
                kind.to_lowercase(),
                o["metadata"]["name"].as_str().expect("name")
            );
            assert!(report.contains(&resource), "{name}: {resource}: {report}");
        }
        // The templates' own YAML (without crds/, which deploy/crds.yaml's test lints) is yamllint-clean.
        let templates = dir.path().join(format!("{i}-templates.yaml"));
        std::fs::write(&templates, render(&helm, &args)).expect("write");
        let out = Command::new(&yamllint)
            .args(["--strict", "-c"])
            .arg(repo().join(".yamllint"))
            .arg(&templates)
            .output()
            .expect("yamllint");
        assert!(out.status.success(), "{name}: {}", output_text(&out));
        daemonset_runs_what_it_is_given(&name, &docs, dir.path(), i);
        // The pools the ConfigMap carries, and the NodeENIs, are what the daemon accepts.
        let pools = docs
            .iter()
            .find(|o| o["kind"] == "ConfigMap" && o["metadata"]["name"] == "nodeeni-pools")
            .unwrap_or_else(|| panic!("{name}: the pools' ConfigMap"));
        let pools_file = dir.path().join(format!("{i}-pools.yaml"));
        std::fs::write(&pools_file, pools["data"]["pools.yaml"].as_str().expect("pools.yaml")).expect("write");
        validate_config(&pools_file);
        let nodeenis: Vec<&Value> = docs.iter().filter(|o| o["kind"] == "NodeENI").collect();
        if !nodeenis.is_empty() {
            let stream: String =
                nodeenis.iter().map(|o| format!("---\n{}", serde_yaml_ng::to_string(o).expect("yaml"))).collect();
            let nodeeni_file = dir.path().join(format!("{i}-nodeenis.yaml"));
            std::fs::write(&nodeeni_file, stream).expect("write");
            validate_config(&nodeeni_file);
            let verdicts = nodeeni_crd_verdicts(&python, &nodeeni_file);
            assert_eq!(verdicts.lines().count(), nodeenis.len(), "{name}: {verdicts}");
            assert!(verdicts.lines().all(|l| l.ends_with(" ok")), "{name}: {verdicts}");
        }
    }
    // Every optional object was rendered by some toggle.
    for kind in NO_SCHEMA.iter().copied().chain(["PriorityClass", "Service", "Namespace"]) {
        assert!(rendered_kinds.contains(kind), "a toggle renders a {kind}: {rendered_kinds:?}");
    }
}

/// What every rendering's DaemonSet must hold whatever the values: the daemon accepts its command
/// line (clap checks it before anything runs: `--help` proves it), the probes reach the metrics
/// listener it is given, the state folder its ConfigMap names is mounted at that path and passed to
/// install-cni, the kubelet's folder and /host/sys are mounted, only NET_ADMIN is added, and cluster
/// mode (NODE_NAME, the token, the roles) is there exactly when it is on.
fn daemonset_runs_what_it_is_given(name: &str, docs: &[Value], dir: &Path, i: usize) {
    let ds = docs.iter().find(|o| o["kind"] == "DaemonSet").unwrap_or_else(|| panic!("{name}: a DaemonSet"));
    let spec = &ds["spec"]["template"]["spec"];
    let main = &spec["containers"][0];
    let command: Vec<String> = serde_json::from_value(main["command"].clone()).expect("command");
    let mut args = command[1..].to_vec();
    args.push("--help".into());
    let out = Command::new(nodeeni_tests::bins::path("nodeeni-device-plugin")).args(&args).output().expect("run");
    assert!(out.status.success(), "{name}: the daemon refuses {args:?}: {}", output_text(&out));
    let addr = &command[command.iter().position(|a| a == "--metrics-addr").expect("--metrics-addr") + 1];
    let (host, port) = addr.rsplit_once(':').expect("host:port");
    // A listener on every address is reached on the loopback of its family.
    let probe_host = match host.trim_matches(['[', ']']) {
        "0.0.0.0" => "127.0.0.1",
        "::" => "::1",
        h => h,
    };
    for (probe, path) in [("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")] {
        let get = &main[probe]["httpGet"];
        assert_eq!(get["port"].to_string(), port, "{name}: {probe} on the metrics port");
        assert_eq!(get["host"], probe_host, "{name}: {probe} reaches the listener's address");
        assert_eq!(get["path"], path, "{name}: {probe}");
    }
    let pools = docs.iter().find(|o| o["kind"] == "ConfigMap").expect("ConfigMap");
    let file = dir.join(format!("{i}-ds-pools.yaml"));
    std::fs::write(&file, pools["data"]["pools.yaml"].as_str().expect("pools.yaml")).expect("write");
    let config = nodeeni_conf::PoolConfig::from_text(
        &std::fs::read_to_string(&file).expect("read"),
        &nodeeni_conf::load::LoadOptions::default(),
    )
    .unwrap_or_else(|e| panic!("{name}: {e}"));
    let state_dir = config.state_dir.display().to_string();
    let mounts: Vec<&str> =
        main["volumeMounts"].as_array().expect("mounts").iter().filter_map(|m| m["mountPath"].as_str()).collect();
    for path in [state_dir.as_str(), "/var/lib/kubelet/device-plugins", "/host/sys"] {
        assert!(mounts.contains(&path), "{name}: {path} is mounted: {mounts:?}");
    }
    let unique: BTreeSet<&&str> = mounts.iter().collect();
    assert_eq!(unique.len(), mounts.len(), "{name}: no mount path twice: {mounts:?}");
    let volumes = spec["volumes"].as_array().expect("volumes");
    let state = volumes.iter().find(|v| v["name"] == "state").expect("state volume");
    assert_eq!(state["hostPath"]["path"], state_dir.as_str(), "{name}: the host's state folder");
    let init: Vec<String> = serde_json::from_value(spec["initContainers"][0]["command"].clone()).expect("init");
    let passed = init.windows(2).find(|w| w[0] == "--state-dir").map(|w| w[1].clone());
    let expected = (state_dir != "/var/lib/nodeeni").then(|| state_dir.clone());
    assert_eq!(passed, expected, "{name}: install-cni is told a state folder other than the default");
    assert_eq!(main["securityContext"]["capabilities"]["add"], serde_json::json!(["NET_ADMIN"]), "{name}");
    assert_eq!(main["securityContext"]["capabilities"]["drop"], serde_json::json!(["ALL"]), "{name}");
    assert!(main["securityContext"]["privileged"].is_null(), "{name}: not privileged");
    let node_name = main["env"].as_array().into_iter().flatten().find(|e| e["name"] == "NODE_NAME");
    let cluster = node_name.is_some();
    if let Some(node_name) = node_name {
        assert_eq!(node_name["valueFrom"]["fieldRef"]["fieldPath"], "spec.nodeName", "{name}: the downward API");
        let binding = docs.iter().find(|o| o["kind"] == "ClusterRoleBinding").expect("ClusterRoleBinding");
        assert_eq!(binding["subjects"][0]["name"], spec["serviceAccountName"], "{name}: the roles are the pod's");
        assert_eq!(binding["subjects"][0]["namespace"], ds["metadata"]["namespace"], "{name}");
        let account = docs.iter().find(|o| o["kind"] == "ServiceAccount").expect("ServiceAccount");
        assert_ne!(account["automountServiceAccountToken"], false, "{name}: the account's token is mounted");
    }
    assert_eq!(init.get(1).map(String::as_str), Some("install-cni"), "{name}: the init container installs the CNI");
    let roles = docs.iter().any(|o| {
        ["ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding", "ValidatingAdmissionPolicy"]
            .contains(&o["kind"].as_str().unwrap_or(""))
    });
    assert_eq!(roles, cluster, "{name}: the API roles exist exactly in cluster mode");
    assert_eq!(spec["automountServiceAccountToken"] != false, cluster, "{name}: the token only in cluster mode");
}

#[test]
fn bad_values_are_refused_by_the_schema() {
    let Some(helm) = cached_tool("helm") else { return };
    let dir = tempfile::tempdir().expect("tempdir");
    let bad = dir.path().join("bad.yaml");
    std::fs::write(
        &bad,
        "logFormat: xml\nmetrics:\n  port: 70000\nimage:\n  pullPolicy: Sometimes\n  digest: sha256:abc\n\
         logFromat: json\nmonitoring:\n  serviceMonitor:\n    enable: true\n",
    )
    .expect("write");
    let out = helm_template(&helm, &values_args(&[bad]));
    let text = output_text(&out);
    assert!(!out.status.success(), "{text}");
    assert!(text.contains("values don't meet the specifications of the schema"), "{text}");
    for refused in [
        "'/logFormat'",
        "'/metrics/port'",
        "'/image/pullPolicy'",
        "'/image/digest'",
        "'logFromat' not allowed",
        "'enable' not allowed",
    ] {
        assert!(text.contains(refused), "{refused} is refused: {text}");
    }
}

/// Values that would give the pod more of the host than the plain manifests do, or break it, are
/// refused: host paths of the root, a top-level folder or with `..`; a state folder over one the pod
/// mounts; AppArmor or seccomp annotations; both monitors at once; an https OTLP endpoint the daemon
/// cannot use; pools that select nodes without cluster mode or node labels. A security group name
/// with a comma stays one name.
#[test]
fn values_that_widen_the_pods_hold_on_the_host_are_refused_and_odd_strings_stay_whole() {
    let Some(helm) = cached_tool("helm") else { return };
    let refused = |args: &[&str], says: &str| {
        let out = helm_template(&helm, &os(args));
        let text = output_text(&out);
        assert!(!out.status.success(), "{args:?} is refused: {text}");
        assert!(text.contains(says), "{args:?}: the error says {says:?}: {text}");
    };
    for path in ["/", "/etc", "/var/lib/../../etc", "relative/dir", "/var/lib/nodeeni/", "/opt/cni,bin"] {
        for key in ["config.stateDir", "cni.binDir", "kubeletDevicePluginDir"] {
            let value = format!("{key}={}", Value::from(path));
            refused(&["--set-json", &value], "values don't meet the specifications of the schema");
        }
    }
    refused(&["--set", "config.stateDir=/etc/nodeeni"], "config.stateDir /etc/nodeeni overlaps /etc/nodeeni");
    refused(&["--set", "config.stateDir=/var/lib/kubelet/nodeeni"], "overlaps /var/lib/kubelet");
    refused(
        &["--set-string", r"podAnnotations.container\.apparmor\.security\.beta\.kubernetes\.io/nodeeni=unconfined"],
        "values don't meet the specifications of the schema",
    );
    refused(&["--set", "otlpEndpoint=https://collector:4318"], "'/otlpEndpoint'");
    // Without cluster mode, the shipped pools' nodeSelector could meet no label: said, not rendered.
    refused(&["--set", "clusterMode.enabled=false"], "without cluster mode only config.node.labels can meet it");
    refused(
        &[
            "--set",
            "metrics.host=0.0.0.0",
            "--set",
            "monitoring.serviceMonitor.enabled=true",
            "--set",
            "monitoring.podMonitor.enabled=true",
        ],
        "choose one",
    );

    // A comma is data, not YAML syntax.
    let dir = tempfile::tempdir().expect("tempdir");
    let values = dir.path().join("odd.yaml");
    std::fs::write(
        &values,
        "config:\n  clusterName: c\n  pools:\n    - name: fast\n      mode: kernel\n\
         \x20     resourceName: nodeeni.io/fast\n      subnetIds: [subnet-0123456789abcdef0]\n\
         \x20     securityGroupNames: [\"web, prod\"]\n",
    )
    .expect("write");
    let rendered = by_key(objects(&render(&helm, &values_args(&[values]))));
    let cm = rendered.values().find(|o| o["kind"] == "ConfigMap").expect("ConfigMap");
    let pools: Value = serde_yaml_ng::from_str(cm["data"]["pools.yaml"].as_str().expect("pools.yaml")).expect("yaml");
    assert_eq!(pools["pools"][0]["securityGroupNames"], serde_json::json!(["web, prod"]), "{pools}");
}

#[test]
fn a_monitor_of_a_loopback_listener_is_refused_and_one_of_every_address_scrapes_the_metrics_port() {
    let Some(helm) = cached_tool("helm") else { return };
    for (monitor, kind) in [("serviceMonitor", "ServiceMonitor"), ("podMonitor", "PodMonitor")] {
        let on = format!("monitoring.{monitor}.enabled=true");
        let out = helm_template(&helm, &os(&["--set", on.as_str()]));
        let text = output_text(&out);
        assert!(!out.status.success(), "{monitor} of 127.0.0.1: {text}");
        assert!(
            text.contains(&format!("monitoring.{monitor}.enabled needs metrics.host reachable from Prometheus")),
            "{text}"
        );
        let rendered = by_key(objects(&render(&helm, &os(&["--set", on.as_str(), "--set", "metrics.host=0.0.0.0"]))));
        let ds = rendered.values().find(|o| o["kind"] == "DaemonSet").expect("DaemonSet");
        let container = &ds["spec"]["template"]["spec"]["containers"][0];
        let ports = container["ports"].as_array().expect("ports");
        assert!(ports.iter().any(|p| p["name"] == "metrics" && p["containerPort"] == 9464), "{ports:?}");
        let command: Vec<String> = serde_json::from_value(container["command"].clone()).expect("command");
        assert!(command.windows(2).any(|w| w[0] == "--metrics-addr" && w[1] == "0.0.0.0:9464"), "{command:?}");
        assert_eq!(container["livenessProbe"]["httpGet"]["host"], "127.0.0.1", "probes still use the loopback");
        let monitor_object = rendered.values().find(|o| o["kind"] == kind).unwrap_or_else(|| panic!("a {kind}"));
        let endpoints = if kind == "ServiceMonitor" {
            &monitor_object["spec"]["endpoints"]
        } else {
            &monitor_object["spec"]["podMetricsEndpoints"]
        };
        assert_eq!(endpoints[0]["port"], "metrics");
        let pod_labels = &ds["spec"]["template"]["metadata"]["labels"];
        let selects =
            |selector: &Value| selector.as_object().expect("matchLabels").iter().all(|(k, v)| &pod_labels[k] == v);
        if kind == "ServiceMonitor" {
            let service = rendered.values().find(|o| o["kind"] == "Service").expect("the monitor's Service");
            assert_eq!(service["spec"]["clusterIP"], "None", "headless");
            assert!(selects(&service["spec"]["selector"]), "the Service selects the daemon's pods");
            assert_eq!(service["spec"]["ports"][0]["name"], "metrics");
            assert_eq!(service["spec"]["ports"][0]["targetPort"], "metrics");
            let service_labels = &service["metadata"]["labels"];
            let matched = monitor_object["spec"]["selector"]["matchLabels"].as_object().expect("matchLabels");
            assert!(matched.iter().all(|(k, v)| &service_labels[k] == v), "the monitor selects the Service");
        } else {
            assert!(selects(&monitor_object["spec"]["selector"]["matchLabels"]), "the monitor selects the pods");
        }
    }
}

#[test]
fn deploy_is_the_charts_rendering_byte_for_byte() {
    // Without any tool: the chart's CRDs and monitoring files are deploy/'s.
    let same = |a: &str, b: &str| {
        let (x, y) = (std::fs::read(repo().join(a)).expect(a), std::fs::read(repo().join(b)).expect(b));
        assert!(x == y, "{a} differs from {b}: run scripts/render-deploy");
    };
    same("charts/nodeeni/crds/crds.yaml", "deploy/crds.yaml");
    same("charts/nodeeni/files/dashboard.json", "deploy/monitoring/dashboard.json");
    same("charts/nodeeni/files/nodeeni.rules.yaml", "deploy/monitoring/nodeeni.rules.yaml");
    let Some(helm) = cached_tool("helm") else { return };
    let dir = tempfile::tempdir().expect("tempdir");
    let out = Command::new(repo().join("scripts/render-deploy"))
        .arg("--out")
        .arg(dir.path())
        .env("HELM", &helm)
        .output()
        .expect("render-deploy");
    assert!(out.status.success(), "{}", output_text(&out));
    let written: Vec<String> = String::from_utf8_lossy(&out.stdout).lines().map(str::to_string).collect();
    for f in [
        "charts/nodeeni/crds/crds.yaml",
        "deploy/00-namespace.yaml",
        "deploy/10-rbac.yaml",
        "deploy/10-serviceaccount.yaml",
        "deploy/configmap.yaml",
        "deploy/daemonset.yaml",
        "deploy/monitoring/dashboard.json",
        "deploy/monitoring/nodeeni.rules.yaml",
        "deploy/monitoring/prometheusrule.yaml",
        "deploy/kustomize/base/nodeeni.yaml",
    ] {
        assert!(written.iter().any(|w| w == f), "render-deploy writes {f}: {written:?}");
    }
    let differ: Vec<&String> = written
        .iter()
        .filter(|f| std::fs::read(dir.path().join(f)).ok() != std::fs::read(repo().join(f)).ok())
        .collect();
    assert!(differ.is_empty(), "differ from the chart's rendering (run scripts/render-deploy): {differ:?}");
    // Each rendered deploy/ file says where it comes from.
    for f in written.iter().filter(|f| f.starts_with("deploy/") && f.ends_with(".yaml") && !f.ends_with("rules.yaml")) {
        let text = std::fs::read_to_string(repo().join(f)).expect("read");
        assert!(text.starts_with("# Rendered from charts/nodeeni by scripts/render-deploy"), "{f}");
    }
    // --check agrees.
    let out =
        Command::new(repo().join("scripts/render-deploy")).arg("--check").env("HELM", &helm).output().expect("check");
    assert!(out.status.success(), "{}", output_text(&out));
}

/// `kubectl kustomize DIR`, as objects by kind, namespace and name.
fn kustomize(kubectl: &Path, dir: &str) -> BTreeMap<(String, String, String), Value> {
    let out = Command::new(kubectl).arg("kustomize").arg(repo().join(dir)).output().expect("kubectl kustomize");
    assert!(out.status.success(), "{dir}: {}", output_text(&out));
    by_key(objects(&String::from_utf8_lossy(&out.stdout)))
}

#[test]
fn the_kustomize_base_is_the_default_install_and_the_example_overlay_pins_the_image_and_the_role() {
    let (Some(helm), Some(kubectl)) = (cached_tool("helm"), cached_tool("kubectl")) else { return };
    let base = kustomize(&kubectl, "deploy/kustomize/base");
    let install = by_key(objects(&render(&helm, &os(&["--set", "namespace.create=true", "--include-crds"]))));
    assert_eq!(base.keys().collect::<Vec<_>>(), install.keys().collect::<Vec<_>>(), "the same objects");
    for (key, object) in &install {
        assert_eq!(&base[key], object, "{key:?}");
    }

    let overlay_dir = "deploy/kustomize/overlays/example";
    let kustomization: Value = serde_yaml_ng::from_str(
        &std::fs::read_to_string(repo().join(overlay_dir).join("kustomization.yaml")).expect("kustomization"),
    )
    .expect("yaml");
    let pin = &kustomization["images"][0];
    let image = format!("{}@{}", pin["newName"].as_str().expect("newName"), pin["digest"].as_str().expect("digest"));
    let overlay = kustomize(&kubectl, overlay_dir);
    assert_eq!(overlay.keys().collect::<Vec<_>>(), base.keys().collect::<Vec<_>>(), "the same objects");
    let mut changed = BTreeSet::new();
    for (key, object) in &overlay {
        if object != &base[key] {
            changed.insert(key.0.clone());
        }
    }
    let expected = BTreeSet::from(["DaemonSet", "ServiceAccount"].map(String::from));
    assert_eq!(changed, expected, "only the image and the role");
    let ds = overlay.values().find(|o| o["kind"] == "DaemonSet").expect("DaemonSet");
    let pod = &ds["spec"]["template"]["spec"];
    for container in pod["initContainers"].as_array().into_iter().chain(pod["containers"].as_array()).flatten() {
        assert_eq!(container["image"], image.as_str(), "{}", container["name"]);
    }
    let sa = overlay.values().find(|o| o["kind"] == "ServiceAccount").expect("ServiceAccount");
    let role = sa["metadata"]["annotations"]["eks.amazonaws.com/role-arn"].as_str().expect("the IRSA annotation");
    assert!(role.starts_with("arn:aws:iam::") && role.contains(":role/"), "{role}");
}

#[test]
fn the_charts_default_image_is_what_scripts_image_tags() {
    // The tests crate's version is the workspace's ([workspace.package]), which scripts/image reads.
    let version = env!("CARGO_PKG_VERSION");
    // What scripts/image tags when not told otherwise, asked of the script itself.
    let out = Command::new("bash").arg(repo().join("scripts/image")).arg("--print-tag").output().expect("image");
    assert!(out.status.success(), "{}", output_text(&out));
    let expected = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert!(expected.ends_with(&format!(":{version}")), "scripts/image tags the workspace's version: {expected}");
    let chart_yaml: Value =
        serde_yaml_ng::from_str(&std::fs::read_to_string(chart().join("Chart.yaml")).expect("Chart.yaml"))
            .expect("yaml");
    assert_eq!(chart_yaml["appVersion"], version, "the chart's appVersion is the workspace's version");
    let values: Value =
        serde_yaml_ng::from_str(&std::fs::read_to_string(chart().join("values.yaml")).expect("values")).expect("yaml");
    assert_eq!(
        values["image"]["repository"].as_str().map(|r| format!("{r}:{version}")),
        Some(expected.clone()),
        "the chart's repository is the script's"
    );
    assert_eq!(values["image"]["tag"], "", "the tag defaults to appVersion");
    assert_eq!(values["image"]["digest"], "");
    let Some(helm) = cached_tool("helm") else { return };
    let docs = objects(&render(&helm, &os(&[])));
    let ds = docs.iter().find(|o| o["kind"] == "DaemonSet").expect("DaemonSet");
    let pod = &ds["spec"]["template"]["spec"];
    for container in pod["initContainers"].as_array().into_iter().chain(pod["containers"].as_array()).flatten() {
        assert_eq!(container["image"], expected.as_str(), "{}", container["name"]);
    }
}

/// The key paths of values.yaml (`image.tag`), each with whether a comment line is right above it.
/// List items and what they hold are values, not keys: skipped.
fn values_keys(text: &str) -> BTreeMap<String, bool> {
    let mut keys = BTreeMap::new();
    let mut stack: Vec<(usize, String)> = Vec::new();
    let mut commented = false;
    let mut list_under: Option<usize> = None;
    for line in text.lines() {
        let trimmed = line.trim_start();
        let indent = line.len() - trimmed.len();
        if trimmed.is_empty() || trimmed == "---" {
            commented = false;
            continue;
        }
        if trimmed.starts_with('#') {
            commented = true;
            continue;
        }
        if let Some(list) = list_under {
            if indent > list || (indent == list && trimmed.starts_with("- ")) {
                commented = false;
                continue;
            }
            list_under = None;
        }
        if trimmed.starts_with("- ") {
            list_under = Some(indent.saturating_sub(1));
            commented = false;
            continue;
        }
        let Some((key, _)) = trimmed.split_once(':') else { continue };
        while stack.last().is_some_and(|(i, _)| *i >= indent) {
            stack.pop();
        }
        let path = stack.iter().map(|(_, k)| k.as_str()).chain([key.trim_matches('"')]).collect::<Vec<_>>().join(".");
        keys.insert(path.clone(), commented);
        stack.push((indent, key.trim_matches('"').to_string()));
        commented = false;
    }
    keys
}

/// The key paths the schema defines: the properties of every object it closes (additionalProperties
/// false), walked down through closed objects only.
fn schema_keys(schema: &Value, prefix: &str, out: &mut BTreeSet<String>) {
    if schema["additionalProperties"] != false {
        return;
    }
    for (key, sub) in schema["properties"].as_object().into_iter().flatten() {
        let path = if prefix.is_empty() { key.clone() } else { format!("{prefix}.{key}") };
        out.insert(path.clone());
        schema_keys(sub, &path, out);
    }
}

#[test]
fn values_yaml_documents_every_key_the_schema_defines() {
    let keys = values_keys(&std::fs::read_to_string(chart().join("values.yaml")).expect("values.yaml"));
    let schema: Value =
        serde_json::from_str(&std::fs::read_to_string(chart().join("values.schema.json")).expect("schema"))
            .expect("json");
    assert_eq!(schema["$schema"], "http://json-schema.org/draft-07/schema#");
    let mut defined = BTreeSet::new();
    schema_keys(&schema, "", &mut defined);
    assert!(defined.len() > 40, "{defined:?}");
    // A key is documented by its own comment, an ancestor's, or its children's (all of them).
    fn documented(path: &str, keys: &BTreeMap<String, bool>) -> bool {
        if keys.get(path).copied().unwrap_or(false) {
            return true;
        }
        let mut ancestor = path;
        while let Some((parent, _)) = ancestor.rsplit_once('.') {
            if keys.get(parent).copied().unwrap_or(false) {
                return true;
            }
            ancestor = parent;
        }
        let children: Vec<&String> = keys
            .keys()
            .filter(|k| k.strip_prefix(path).is_some_and(|r| r.starts_with('.') && !r[1..].contains('.')))
            .collect();
        !children.is_empty() && children.iter().all(|c| documented(c, keys))
    }
    for path in &defined {
        let parent = path.rsplit_once('.').map(|(p, _)| p);
        // A key is in values.yaml when its parent is given there as a block of keys (not `{}`).
        let parent_listed = parent.is_none_or(|p| keys.keys().any(|k| k.starts_with(&format!("{p}."))));
        if path == "global" || !parent_listed {
            continue;
        }
        assert!(keys.contains_key(path), "values.yaml sets {path}, with a comment");
        assert!(documented(path, &keys), "values.yaml documents {path}");
    }
    for path in keys.keys() {
        let parent = path.rsplit_once('.').map(|(p, _)| p.to_string());
        if parent.as_ref().is_none_or(|p| defined.contains(p) && !path.starts_with("config.")) {
            // Keys of closed objects only (config, labels, nodeSelector and the like are open maps).
            let closed_parent = parent.as_ref().is_none_or(|p| {
                let mut node = &schema;
                for part in p.split('.') {
                    node = &node["properties"][part];
                }
                node["additionalProperties"] == false
            });
            if closed_parent {
                assert!(defined.contains(path), "the schema defines {path}");
            }
        }
    }
}
