//! The dashboard and the alerting rules in deploy/monitoring: promtool checks and unit-tests the rules,
//! the PrometheusRule carries the same groups, every alert's runbook is a README section, and a real
//! Prometheus scraping the daemon on a node in a box evaluates them: break EC2 and the breaker alert
//! fires, declare more than EC2 can give and the pool alert fires, and every dashboard query parses.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::Duration;

use nodeeni_proto::deviceplugin::v1beta1 as api;
use nodeeni_state::node::{Lifecycle, NodeState};
use nodeeni_tests::fault_proxy::{Fault, FaultProxy};
use nodeeni_tests::nodebox::{KERNEL_RESOURCE, NodeBox};
use nodeeni_tests::poll::eventually;
use nodeeni_tests::prometheus::Prometheus;
use nodeeni_tests::root::require_root;
use nodeeni_tests::tools::{installed, repo, venv_tool};
use serde_json::Value;

const PROMTOOL: &str = "/usr/bin/promtool";
/// Where every alert's runbook_url points: a section of the README on the project's home.
const RUNBOOKS: &str = "https://github.com/nodeeni/nodeeni/blob/main/README.md#";

fn rules_file() -> PathBuf {
    repo().join("deploy/monitoring/nodeeni.rules.yaml")
}

fn yaml(path: &Path) -> Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_yaml_ng::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn alerts_in_rules() -> Vec<Value> {
    yaml(&rules_file())["groups"]
        .as_array()
        .expect("groups")
        .iter()
        .flat_map(|g| g["rules"].as_array().cloned().expect("rules"))
        .collect()
}

/// promtool from Debian's prometheus package.
fn promtool() -> Option<PathBuf> {
    installed(PROMTOOL)
}

#[test]
fn promtool_checks_the_rules_and_their_unit_tests_pass() {
    let Some(promtool) = promtool() else { return };
    let promtool = promtool.as_path();
    let out = Command::new(promtool).args(["check", "rules"]).arg(rules_file()).output().expect("promtool");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{text}");
    assert!(text.contains(&format!("SUCCESS: {} rules found", alerts_in_rules().len())), "{text}");

    let tests = repo().join("tests/monitoring");
    let out = Command::new(promtool)
        .args(["test", "rules", "nodeeni.rules.test.yaml"])
        .current_dir(&tests)
        .output()
        .expect("promtool test rules");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success() && text.contains("SUCCESS"), "{text}");
    // Every alert is tested firing.
    let test_text = std::fs::read_to_string(tests.join("nodeeni.rules.test.yaml")).expect("tests");
    for alert in alerts_in_rules() {
        let name = alert["alert"].as_str().expect("alert name");
        let firing = test_text.split("alertname: ").skip(1).any(|t| {
            t.starts_with(&format!("{name}\n")) && !t.lines().nth(1).is_some_and(|l| l.contains("exp_alerts: []"))
        });
        assert!(firing, "{name} has a unit test in which it fires");
    }
}

#[test]
fn the_prometheusrule_carries_the_rules_files_groups() {
    let object = yaml(&repo().join("deploy/monitoring/prometheusrule.yaml"));
    assert_eq!(object["apiVersion"], "monitoring.coreos.com/v1");
    assert_eq!(object["kind"], "PrometheusRule");
    assert_eq!(object["spec"]["groups"], yaml(&rules_file())["groups"], "the same groups, unchanged");
}

/// GitHub's anchor of a Markdown heading: lower case, punctuation dropped, spaces to hyphens.
fn anchor(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter(|c| c.is_alphanumeric() || *c == ' ' || *c == '-' || *c == '_')
        .map(|c| if c == ' ' { '-' } else { c })
        .collect()
}

#[test]
fn every_alert_has_a_severity_a_summary_and_a_runbook_section_in_the_readme() {
    let readme = std::fs::read_to_string(repo().join("README.md")).expect("README");
    let anchors: Vec<String> =
        readme.lines().filter(|l| l.starts_with('#')).map(|l| anchor(l.trim_start_matches('#'))).collect();
    let alerts = alerts_in_rules();
    assert!(alerts.len() >= 7, "{alerts:?}");
    for alert in alerts {
        let name = alert["alert"].as_str().expect("name");
        assert!(
            ["info", "warning", "critical"].contains(&alert["labels"]["severity"].as_str().unwrap_or("")),
            "{name}: a severity"
        );
        assert!(alert["annotations"]["summary"].as_str().is_some_and(|s| !s.is_empty()), "{name}: a summary");
        let url = alert["annotations"]["runbook_url"].as_str().expect("runbook_url");
        let section = url.strip_prefix(RUNBOOKS).unwrap_or_else(|| panic!("{name}: {url} is a README section"));
        assert_eq!(section, name.to_lowercase(), "{name}: its section is named after it");
        assert!(anchors.iter().any(|a| a == section), "{name}: README has a heading #{section}");
    }
}

#[test]
fn monitoring_yaml_is_yamllint_clean_and_the_dashboard_is_well_formed() {
    if let Some(yamllint) = venv_tool("yamllint") {
        let out = Command::new(yamllint)
            .args(["--strict", "-c"])
            .arg(repo().join(".yamllint"))
            .arg(repo().join("deploy/monitoring"))
            .arg(repo().join("tests/monitoring"))
            .output()
            .expect("yamllint");
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stdout));
    }
    let dashboard: Value = serde_json::from_str(
        &std::fs::read_to_string(repo().join("deploy/monitoring/dashboard.json")).expect("dashboard"),
    )
    .expect("JSON");
    let panels = dashboard["panels"].as_array().expect("panels");
    let mut ids: Vec<u64> = panels.iter().map(|p| p["id"].as_u64().expect("id")).collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), panels.len(), "panel ids are unique");
    for p in panels {
        let (x, w) = (p["gridPos"]["x"].as_u64().expect("x"), p["gridPos"]["w"].as_u64().expect("w"));
        assert!(x + w <= 24, "{}: inside Grafana's 24 columns", p["title"]);
        assert!(!p["targets"].as_array().expect("targets").is_empty(), "{}: a query", p["title"]);
    }
    for title in [
        "ENIs per pool and state",
        "Held vs free per resource",
        "EC2 calls by operation and outcome",
        "Circuit breaker state",
        "Reconcile duration",
        "Reconcile passes and errors",
        "Config reloads",
        "Kubelet registrations",
        "Allocations and Allocate refusals",
    ] {
        assert!(panels.iter().any(|p| p["title"] == title), "a panel {title:?}");
    }
}

/// The dashboard's queries, with Grafana's variables as a Prometheus server would get them.
fn dashboard_queries() -> Vec<(String, String)> {
    let dashboard: Value = serde_json::from_str(
        &std::fs::read_to_string(repo().join("deploy/monitoring/dashboard.json")).expect("dashboard"),
    )
    .expect("JSON");
    let mut out = Vec::new();
    for p in dashboard["panels"].as_array().expect("panels") {
        for t in p["targets"].as_array().expect("targets") {
            let expr = t["expr"].as_str().expect("expr").replace("$instance", ".*").replace("$__rate_interval", "1m");
            out.push((p["title"].as_str().unwrap_or("").to_string(), expr));
        }
    }
    out
}

fn ready_in(s: &NodeState, pool: &str) -> usize {
    s.enis.iter().filter(|e| e.pool == pool && e.lifecycle == Lifecycle::Ready).count()
}

/// Alerts named `name` pending or firing now.
fn active(prometheus: &Prometheus, name: &str) -> Vec<Value> {
    prometheus.alerts().into_iter().filter(|a| a["labels"]["alertname"] == name).collect()
}

/// Alerts named `name` firing now (their `for` has passed).
fn firing(prometheus: &Prometheus, name: &str) -> Vec<Value> {
    active(prometheus, name).into_iter().filter(|a| a["state"] == "firing").collect()
}

/// Waits until an alert named `name` fires; that alert.
async fn wait_firing(prometheus: &Prometheus, name: &str, context: impl Fn() -> String) -> Value {
    let what = format!("{name} firing");
    eventually(&what, Duration::from_secs(120), async || firing(prometheus, name).into_iter().next(), context).await
}

/// The id of pool `pool`'s (first) ENI in the node state.
fn eni_of(nb: &NodeBox, pool: &str) -> String {
    let state = nb.state();
    let eni = state.enis.iter().find(|e| e.pool == pool).and_then(|e| e.eni_id.as_ref());
    eni.map(ToString::to_string).unwrap_or_else(|| panic!("an ENI of {pool} with its id: {state:?}"))
}

/// The shipped rules with every `for` cut to 5 s, so an alert is seen firing within a test; the
/// expressions, labels and annotations are the file's.
fn rules_with_short_for(dir: &Path) -> PathBuf {
    let text = std::fs::read_to_string(rules_file()).expect("rules");
    let cut: String = text
        .lines()
        .map(|l| match l.trim_start().strip_prefix("for: ") {
            Some(_) => format!("{}for: 5s", &l[..l.len() - l.trim_start().len()]),
            None => l.to_string(),
        })
        .collect::<Vec<_>>()
        .join("\n");
    assert!(cut.contains("for: 5s") && !cut.contains("for: 10m"), "the rules' for durations cut");
    let path = dir.join("nodeeni.rules.short-for.yaml");
    std::fs::write(&path, cut + "\n").expect("write rules");
    path
}

fn pool(nb: &NodeBox, enis: u32) -> String {
    format!(
        "  - {{name: fast, mode: kernel, resourceName: {KERNEL_RESOURCE}, subnetIds: [{a}], securityGroupIds: [{sg}], enisPerSubnet: {enis}, firstDeviceIndex: 1}}\n",
        a = nb.world.subnet_a,
        sg = nb.world.sg
    )
}

/// EC2 as the proxy lets the daemon see it.
const EC2_UP: u8 = 0;
/// Every AttachNetworkInterface closed unanswered; the rest answered.
const EC2_NO_ATTACH: u8 = 1;
/// Every connection closed unanswered, as when moto stops.
const EC2_GONE: u8 = 2;

/// A real Prometheus scrapes the daemon and evaluates the shipped rules (their `for` cut to 5 s; the
/// promtool unit tests cover the real durations). The pool shrunk below its declaration (its ENI
/// detached behind the daemon's back while EC2 refuses attaches): the pool alert fires for it. EC2
/// gone (every connection closed unanswered, as when moto stops): the breaker alert fires for the
/// node. EC2 back: the ENI is attached again and both alerts end. Every dashboard query parses and
/// evaluates against the real series.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_prometheus_scraping_the_daemon_raises_the_breaker_and_pool_alerts() {
    if !require_root("a_real_prometheus_scraping_the_daemon_raises_the_breaker_and_pool_alerts") {
        return;
    }
    let Some(mut nb) = NodeBox::start("mon-prom").await else { return };
    let ec2 = Arc::new(AtomicU8::new(EC2_UP));
    let proxy = {
        let ec2 = ec2.clone();
        FaultProxy::start_by_action(&nb.moto.endpoint, move |_, action| match ec2.load(Ordering::SeqCst) {
            EC2_GONE => Fault::Reset,
            EC2_NO_ATTACH if action == "AttachNetworkInterface" => Fault::Reset,
            _ => Fault::Forward,
        })
    };
    nb.ec2_endpoint = proxy.endpoint.clone();
    nb.write_config(&pool(&nb, 1));
    nb.start_daemon();
    nb.wait_for_state("the ENI ready", Duration::from_secs(120), |s| ready_in(s, "fast") == 1).await;
    let target = format!("127.0.0.1:{}", nb.metrics_port);
    let rules_dir = tempfile::tempdir().expect("tempdir");
    let Some(prometheus) = Prometheus::start("monitoring", &target, &[rules_with_short_for(rules_dir.path())]) else {
        return;
    };
    let context = || {
        format!(
            "alerts: {:?}\n--- prometheus ---\n{}\n--- daemon ---\n{}",
            prometheus.alerts(),
            prometheus.log(),
            nb.daemon_log()
        )
    };

    eventually(
        "the daemon scraped: its declared pool in Prometheus",
        Duration::from_secs(60),
        async || prometheus.query("nodeeni_pool_enis_declared{pool=\"fast\"} == 1").ok().filter(|r| !r.is_empty()),
        context,
    )
    .await;
    for (title, expr) in dashboard_queries() {
        let result = prometheus.query(&expr);
        assert!(result.is_ok(), "dashboard panel {title:?}: {expr}\n{result:?}");
    }
    let with_data =
        ["ENIs per pool and state", "Declared vs ready per pool", "Held vs free per resource", "Circuit breaker state"];
    let queries = dashboard_queries();
    for title in with_data {
        let panel = queries.iter().filter(|(t, _)| t == title).collect::<Vec<_>>();
        assert!(!panel.is_empty(), "the dashboard has the panel {title:?}");
        for (_, expr) in panel {
            let result = prometheus.query(expr).expect("query");
            assert!(!result.is_empty(), "dashboard panel {title:?} shows the node's series: {expr}");
        }
    }
    // The rules judged the node's series: on a healthy node none is even pending (an expression that
    // holds makes its alert pending at the first evaluation that sees it).
    prometheus.wait_for_evaluations().await;
    let rules = prometheus.rules();
    assert_eq!(rules.len(), alerts_in_rules().len(), "every rule loaded: {rules:?}");
    let own =
        ["NodeENIEc2CircuitOpen", "NodeENIPoolBelowDeclared", "NodeENIReconcileFailing", "NodeENIKubeletNotRegistered"];
    for name in own {
        assert!(active(&prometheus, name).is_empty(), "a healthy node raises no {name}: {:?}", prometheus.alerts());
    }
    assert!(rules.iter().all(|r| r["health"] != "err"), "no rule fails to evaluate: {rules:?}");

    // The pool shrunk: its ENI detached in EC2 behind the daemon's back, and EC2 refusing the
    // re-attach. The pool alert fires, for this pool on this node.
    let eni = eni_of(&nb, "fast");
    let described = nb.raw.describe_network_interfaces().network_interface_ids(&eni).send().await.expect("describe");
    let attachment = described.network_interfaces()[0].attachment().and_then(|a| a.attachment_id()).expect("attached");
    ec2.store(EC2_NO_ATTACH, Ordering::SeqCst);
    nb.raw.detach_network_interface().attachment_id(attachment).force(true).send().await.expect("detach");
    let alert = wait_firing(&prometheus, "NodeENIPoolBelowDeclared", context).await;
    assert_eq!(
        (alert["labels"]["pool"].as_str(), alert["labels"]["instance"].as_str()),
        (Some("fast"), Some(target.as_str()))
    );

    // EC2 gone: the breaker opens and its alert fires for this node.
    ec2.store(EC2_GONE, Ordering::SeqCst);
    let alert = wait_firing(&prometheus, "NodeENIEc2CircuitOpen", context).await;
    assert_eq!(alert["labels"]["instance"], target.as_str());

    // EC2 back: the ENI attached again, and both alerts end.
    ec2.store(EC2_UP, Ordering::SeqCst);
    nb.wait_for_state("the ENI ready again", Duration::from_secs(180), |s| ready_in(s, "fast") == 1).await;
    eventually(
        "both alerts inactive",
        Duration::from_secs(120),
        async || {
            (active(&prometheus, "NodeENIPoolBelowDeclared").is_empty()
                && active(&prometheus, "NodeENIEc2CircuitOpen").is_empty())
            .then_some(())
        },
        context,
    )
    .await;
}

fn attribute<'a>(span: &'a Value, key: &str) -> Option<&'a str> {
    span["attributes"].as_array()?.iter().find(|a| a["key"] == key)?["value"]["stringValue"].as_str()
}

/// The span tree of the first trace rooted at a pass that created an ENI: (root, the trace's spans).
fn creating_pass(spans: &[Value]) -> Option<(Value, Vec<Value>)> {
    let roots = spans.iter().filter(|s| s["name"] == "pass" && s.get("parentSpanId").is_none());
    for root in roots {
        let trace: Vec<Value> = spans.iter().filter(|s| s["traceId"] == root["traceId"]).cloned().collect();
        if trace.iter().any(|s| s["name"] == "ec2" && attribute(s, "op") == Some("CreateNetworkInterface")) {
            return Some((root.clone(), trace));
        }
    }
    None
}

/// With an OTLP endpoint, the daemon exports its spans: the pass that creates the ENI is one trace,
/// the pass at its root, the pool's slot under it, the slot's EC2 calls under that (with the attempt),
/// every parent in the same trace; the kubelet registration is a span of its own, a client call.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn traces_of_a_pass_reach_an_otlp_receiver_as_one_tree() {
    if !require_root("traces_of_a_pass_reach_an_otlp_receiver_as_one_tree") {
        return;
    }
    let Some(mut nb) = NodeBox::start("mon-otlp").await else { return };
    let receiver = nodeeni_tests::otlp::OtlpReceiver::start();
    nb.extra_daemon_args.extend(["--otlp-endpoint".to_string(), receiver.endpoint.clone()]);
    nb.write_config(&pool(&nb, 1));
    nb.start_daemon();
    nb.wait_for_state("the ENI ready", Duration::from_secs(120), |s| ready_in(s, "fast") == 1).await;
    let (root, trace) = eventually(
        "the creating pass's trace received",
        Duration::from_secs(60),
        async || creating_pass(&receiver.spans()),
        || {
            format!(
                "{} spans: {:?}\n{}",
                receiver.spans().len(),
                receiver.spans().iter().map(|s| &s["name"]).collect::<Vec<_>>(),
                nb.daemon_log()
            )
        },
    )
    .await;
    assert_eq!(root["service"], "nodeeni-device-plugin");
    assert_eq!(root["kind"], 1, "a pass is internal work");
    let by_id = |id: &Value| trace.iter().find(|s| &s["spanId"] == id);
    for span in trace.iter().filter(|s| s.get("parentSpanId").is_some()) {
        assert!(by_id(&span["parentSpanId"]).is_some(), "{}'s parent is in the trace: {span}", span["name"]);
        let (start, end) = (span["startTimeUnixNano"].as_str(), span["endTimeUnixNano"].as_str());
        let (start, end): (u128, u128) =
            (start.expect("start").parse().expect("ns"), end.expect("end").parse().expect("ns"));
        assert!(start <= end, "{span}");
    }
    let create = trace
        .iter()
        .find(|s| s["name"] == "ec2" && attribute(s, "op") == Some("CreateNetworkInterface"))
        .expect("the create");
    assert_eq!(create["kind"], 3, "an EC2 call is a client call");
    assert!(attribute(create, "attempt").is_some_and(|a| a.parse::<u32>().is_ok()), "the attempt: {create}");
    // Up from the create: a slot of pool fast, then the pass.
    let slot = by_id(&create["parentSpanId"]).expect("the create's parent");
    let slot = if slot["name"] == "slot" { slot } else { by_id(&slot["parentSpanId"]).expect("a slot above") };
    assert_eq!(slot["name"], "slot", "{slot}");
    assert_eq!(attribute(slot, "pool"), Some("fast"));
    let mut up = slot.clone();
    while let Some(parent) = up.get("parentSpanId").and_then(&by_id) {
        up = parent.clone();
    }
    assert_eq!(up["spanId"], root["spanId"], "the slot is under the pass");
    let described = trace.iter().filter(|s| s["name"] == "ec2").count();
    assert!(described >= 2, "the pass's other EC2 calls are in it too: {described}");

    let registration = eventually(
        "the kubelet registration's span",
        Duration::from_secs(30),
        async || {
            receiver.spans().into_iter().find(|s| s["name"] == "rpc" && attribute(s, "method") == Some("Register"))
        },
        || nb.daemon_log(),
    )
    .await;
    assert_eq!(registration["kind"], 3, "Register is a call to the kubelet");
    assert_eq!(attribute(&registration, "resource"), Some(KERNEL_RESOURCE));

    // The kubelet hands the ENI to a container: the Allocate span, a call served, names it.
    let eni = eni_of(&nb, "fast");
    let reg = nb.kubelet.wait_registered(KERNEL_RESOURCE, 1, Duration::from_secs(30)).await;
    let mut client = nb.kubelet.client(&reg.endpoint).await;
    let request = api::AllocateRequest {
        container_requests: vec![api::ContainerAllocateRequest { devices_ids: vec![eni.clone()] }],
    };
    client.allocate(request).await.expect("allocate");
    let allocate = eventually(
        "the Allocate span naming the ENI",
        Duration::from_secs(30),
        async || {
            receiver.spans().into_iter().find(|s| {
                s["name"] == "rpc"
                    && attribute(s, "method") == Some("Allocate")
                    && s["events"].to_string().contains(&eni)
            })
        },
        || format!("{:?}", receiver.spans().iter().filter(|s| s["name"] == "rpc").collect::<Vec<_>>()),
    )
    .await;
    assert_eq!(allocate["kind"], 2, "Allocate is a call the kubelet makes to us");
    assert_eq!(attribute(&allocate, "resource"), Some(KERNEL_RESOURCE));
    assert_eq!(attribute(create, "outcome"), Some("ok"), "the create's outcome: {create}");
}
