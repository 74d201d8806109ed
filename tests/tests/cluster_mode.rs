//! Cluster mode on a node in a box: the daemon as a process against moto and the API-server stand-in,
//! its identity and labels from its Node, its ENIs declared as NodeENI objects, its NodeENIState read
//! back from the stand-in.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use nodeeni_state::node::{Lifecycle, NodeState};
use nodeeni_tests::apiserver::{ApiServer, Kind};
use nodeeni_tests::bins;
use nodeeni_tests::ec2world::cluster_enis;
use nodeeni_tests::netns::TestNs;
use nodeeni_tests::nodebox::{CLUSTER, KERNEL_RESOURCE, NodeBox, PodNet};
use nodeeni_tests::poll::eventually;
use nodeeni_tests::root::require_root;
use serde_json::{Value, json};

const WARM: Duration = Duration::from_secs(120);
const NODE: &str = "ip-10-0-1-10.ec2.internal";

fn ready_in(s: &NodeState, pool: &str) -> Vec<String> {
    let mut ids: Vec<String> = s
        .enis
        .iter()
        .filter(|e| e.pool == pool && e.lifecycle == Lifecycle::Ready)
        .filter_map(|e| e.eni_id.as_ref().map(ToString::to_string))
        .collect();
    ids.sort();
    ids
}

/// A kernel NodeENI: one ENI in `subnet` at `index`, advertised as nodeeni.io/fast, on nodes with
/// role=upf.
fn kernel_nodeeni(nb: &NodeBox, name: &str, subnet: &str, index: u32) -> Value {
    json!({
        "apiVersion": "networking.k8s.aws/v1alpha1", "kind": "NodeENI", "metadata": {"name": name},
        "spec": {"nodeSelector": {"role": "upf"}, "subnetID": subnet, "securityGroupIDs": [nb.world.sg],
                 "deviceIndex": index, "dpdkResourceName": KERNEL_RESOURCE, "mtu": 9001},
    })
}

/// The box in cluster mode, its Node (role=upf) in the stand-in, the file with no pools.
async fn cluster_box(label: &str) -> Option<(NodeBox, ApiServer)> {
    let mut nb = NodeBox::start(label).await?;
    let api = ApiServer::start().await;
    api.put_node(NODE, "us-east-1a", &nb.world.instance, &nb.instance_type, &[("role", "upf")]);
    nb.cluster_mode(&api, NODE);
    nb.write_config("[]");
    Some((nb, api))
}

/// Waits until this node's NodeENIState satisfies `check`.
/// A daemon started in cluster mode with `nodeenis` (name, device index) applied in subnet A, each
/// with its ENI ready, reported Ready, and saved in the converged view: the ready ENIs by NodeENI
/// name and the saved view's path.
async fn converged_box(
    label: &str,
    nodeenis: &[(&str, u32)],
) -> Option<(NodeBox, ApiServer, BTreeMap<String, Vec<String>>, PathBuf)> {
    let (mut nb, api) = cluster_box(label).await?;
    nb.start_daemon();
    let a = nb.world.subnet_a.clone();
    for (name, index) in nodeenis {
        api.apply(Kind::NodeENI, kernel_nodeeni(&nb, name, &a, *index));
    }
    let state = nb
        .wait_for_state("every NodeENI's ENI ready", WARM, |s| nodeenis.iter().all(|(n, _)| ready_in(s, n).len() == 1))
        .await;
    let enis = nodeenis.iter().map(|(n, _)| (n.to_string(), ready_in(&state, n))).collect();
    wait_for_node_state(&nb, &api, "Ready", |o| status_is(o, "Ready", "True")).await;
    let saved = nb.state_dir().join(nodeeni_cluster::saved::FILE_NAME);
    eventually(
        "the converged view saved",
        Duration::from_secs(20),
        async || {
            std::fs::read_to_string(&saved)
                .ok()
                .filter(|t| nodeenis.iter().all(|(n, _)| t.contains(&format!("\"{n}\""))))
        },
        || nb.daemon_log(),
    )
    .await;
    Some((nb, api, enis, saved))
}

async fn wait_for_node_state(nb: &NodeBox, api: &ApiServer, what: &str, check: impl Fn(&Value) -> bool) -> Value {
    let context = || {
        format!(
            "NodeENIState: {}\n--- daemon log ---\n{}",
            serde_json::to_string_pretty(&api.get(Kind::NodeENIState, NODE)).unwrap_or_default(),
            nb.daemon_log()
        )
    };
    eventually(what, WARM, async || api.get(Kind::NodeENIState, NODE).filter(|o| check(o)), context).await
}

fn condition<'a>(object: &'a Value, type_: &str) -> Option<&'a Value> {
    object.pointer("/status/conditions")?.as_array()?.iter().find(|c| c["type"] == type_)
}

fn status_is(object: &Value, type_: &str, status: &str) -> bool {
    condition(object, type_).is_some_and(|c| c["status"] == status)
}

async fn ec2_ids(nb: &NodeBox) -> Vec<String> {
    let mut ids: Vec<String> = cluster_enis(&nb.raw, CLUSTER).await.into_iter().map(|(id, _)| id).collect();
    ids.sort();
    ids
}

/// Apply NodeENIs selecting the node → ENIs created and the NodeENIState Ready; one in another AZ →
/// Degraded with the reason and an Event while the others stay converged; relabel the node → its
/// pools drain, the ENI a pod holds stays until DEL; label back, then delete the NodeENIs → gone in EC2.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_1_nodeenis_converge_degrade_drain_and_go() {
    if !require_root("cluster_1_nodeenis_converge_degrade_drain_and_go") {
        return;
    }
    let Some(driver) = bins::libcni_driver() else { return };
    let Some((mut nb, api)) = cluster_box("cl-flow").await else { return };
    nb.start_daemon();
    let (a, b) = (nb.world.subnet_a.clone(), nb.world.subnet_b.clone());
    api.apply(Kind::NodeENI, kernel_nodeeni(&nb, "fast", &a, 1));
    // spare is a routing NodeENI: EC2's source/destination check off on its ENI.
    let mut routing = kernel_nodeeni(&nb, "spare", &a, 2);
    routing["spec"]["sourceDestCheck"] = json!(false);
    api.apply(Kind::NodeENI, routing);

    let state = nb
        .wait_for_state("both NodeENIs' ENIs ready", WARM, |s| {
            ready_in(s, "fast").len() == 1 && ready_in(s, "spare").len() == 1
        })
        .await;
    let held = ready_in(&state, "fast").remove(0);
    let spare = ready_in(&state, "spare").remove(0);
    let mut both = vec![held.clone(), spare.clone()];
    both.sort();
    assert_eq!(ec2_ids(&nb).await, both, "exactly the declared ENIs exist in EC2");
    assert!(nb.daemon_log().contains(&nb.world.instance), "the identity came from the Node's providerID");
    let object = wait_for_node_state(&nb, &api, "Ready with 2 ENIs", |o| {
        status_is(o, "Ready", "True") && o["status"]["eniCount"] == 2
    })
    .await;
    assert_eq!(object["spec"]["instanceID"], nb.world.instance.as_str());
    assert_eq!(object["status"]["observedGenerations"], json!({"fast": 1, "spare": 1}));
    let node_uid = api.get(Kind::Node, NODE).expect("node")["metadata"]["uid"].clone();
    assert_eq!(object["metadata"]["ownerReferences"][0]["uid"], node_uid);
    let enis = object["status"]["enis"].as_array().expect("enis");
    assert!(enis.iter().all(|e| e["declaredBy"] == "NodeENI" && e["lifecycle"] == "Ready"), "{enis:?}");
    let check_of = |pool: &str| enis.iter().find(|e| e["pool"] == pool).map(|e| e["sourceDestCheck"].clone());
    assert_eq!(check_of("spare"), Some(json!(false)), "applied and shown: {enis:?}");
    assert_eq!(check_of("fast"), Some(json!(true)), "EC2's default, shown as listed: {enis:?}");
    assert!(enis.iter().all(|e| e["networkCardIndex"] == json!(0)), "the card of each ENI: {enis:?}");

    // A NodeENI for a subnet in another AZ: Degraded with the reason, an Event on it; the rest stay.
    api.apply(Kind::NodeENI, kernel_nodeeni(&nb, "far", &b, 3));
    let object = wait_for_node_state(&nb, &api, "Degraded: subnet in another AZ", |o| {
        condition(o, "Degraded").is_some_and(|c| c["status"] == "True" && c["reason"] == "SubnetInAnotherAZ")
    })
    .await;
    assert!(condition(&object, "Degraded").expect("degraded")["message"].as_str().expect("message").contains("far"));
    eventually(
        "an Event on the NodeENI far",
        Duration::from_secs(20),
        async || {
            api.list(Kind::Event)
                .into_iter()
                .find(|e| e["involvedObject"]["name"] == "far" && e["reason"] == "SubnetInAnotherAZ")
        },
        || format!("{:?}", api.list(Kind::Event)),
    )
    .await;
    assert_eq!(ec2_ids(&nb).await, both, "the others stay converged, nothing made for far");
    api.delete(Kind::NodeENI, "far");
    wait_for_node_state(&nb, &api, "Ready again without far", |o| status_is(o, "Ready", "True")).await;

    // A pod holds fast's ENI.
    let pod = TestNs::new("cl-flow-pod");
    let at =
        PodNet { conf: nb.write_cni_conf("fast"), container: "pod-1".into(), pod: pod.path(), ifname: "net1".into() };
    let cap = format!("deviceID={held}");
    let (ok, out) = nb.cni(&driver, "add", &at, &[&cap]);
    assert!(ok, "ADD: {out}");

    // The node no longer matches: the free ENI is deleted, the held one waits for its pod.
    api.set_node_labels(NODE, &[("role", "cp")]);
    eventually(
        "the free ENI deleted, the held one kept",
        WARM,
        async || (ec2_ids(&nb).await == std::slice::from_ref(&held)).then_some(()),
        || nb.daemon_log(),
    )
    .await;
    nb.wait_for_passes(2).await;
    assert_eq!(ec2_ids(&nb).await, std::slice::from_ref(&held), "the held ENI stays while its pod runs");
    assert!(pod.has_link("net1"), "the pod keeps its interface");
    let (ok, out) = nb.cni(&driver, "del", &at, &[&cap]);
    assert!(ok, "DEL: {out}");
    eventually(
        "the released ENI deleted",
        WARM,
        async || ec2_ids(&nb).await.is_empty().then_some(()),
        || nb.daemon_log(),
    )
    .await;

    // Labelled back: both warm again. Then the NodeENIs are deleted: their ENIs go from EC2.
    api.set_node_labels(NODE, &[("role", "upf")]);
    nb.wait_for_state("warm again", WARM, |s| ready_in(s, "fast").len() == 1 && ready_in(s, "spare").len() == 1).await;
    api.delete(Kind::NodeENI, "fast");
    api.delete(Kind::NodeENI, "spare");
    eventually(
        "deleted NodeENIs' ENIs gone from EC2",
        WARM,
        async || ec2_ids(&nb).await.is_empty().then_some(()),
        || nb.daemon_log(),
    )
    .await;
    wait_for_node_state(&nb, &api, "no ENIs reported", |o| o["status"]["eniCount"] == 0).await;

    // Every Node request named this node.
    for s in api.seen().iter().filter(|s| s.path.starts_with("/api/v1/nodes")) {
        assert!(s.query.contains("fieldSelector=metadata.name%3D"), "{s:?}");
    }
}

/// The API is down for 30 s while the daemon restarts: nothing is removed and the kubelet is still
/// served (the saved view is in force); a NodeENI deleted meanwhile is converged to once the API is
/// back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_2_the_api_down_across_a_restart_removes_nothing() {
    if !require_root("cluster_2_the_api_down_across_a_restart_removes_nothing") {
        return;
    }
    let Some((mut nb, api, mut enis, _)) = converged_box("cl-down", &[("fast", 1)]).await else { return };
    let eni = enis.remove("fast").expect("fast").remove(0);

    // The API goes away; the daemon restarts without it; the NodeENI is deleted meanwhile.
    api.go_away();
    nb.daemon.as_mut().expect("daemon").terminate();
    let registrations = nb.kubelet.registrations().iter().filter(|r| r.resource_name == KERNEL_RESOURCE).count();
    api.delete(Kind::NodeENI, "fast");
    nb.start_daemon();
    let reg = nb.kubelet.wait_registered(KERNEL_RESOURCE, registrations + 1, Duration::from_secs(30)).await;
    assert!(reg.endpoint.contains("fast"), "the kubelet is served from the saved view: {reg:?}");
    // For 30 s without the API, every look finds the ENI where it was, while passes keep running.
    let down = std::time::Instant::now();
    let passes_before = nb.metrics().get("nodeeni_reconcile_total{result=\"ok\"}").copied().unwrap_or(0.0);
    while down.elapsed() < Duration::from_secs(30) {
        assert_eq!(
            ec2_ids(&nb).await,
            std::slice::from_ref(&eni),
            "nothing removed while the API is down\n{}",
            nb.daemon_log()
        );
        assert_eq!(ready_in(&nb.state(), "fast"), std::slice::from_ref(&eni), "the node state keeps it");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let passes_after = nb.metrics().get("nodeeni_reconcile_total{result=\"ok\"}").copied().unwrap_or(0.0);
    assert!(passes_after >= passes_before + 5.0, "passes ran meanwhile: {passes_before} → {passes_after}");

    // Back: the deletion is converged to.
    api.come_back().await;
    eventually(
        "the deleted NodeENI's ENI gone",
        WARM,
        async || ec2_ids(&nb).await.is_empty().then_some(()),
        || nb.daemon_log(),
    )
    .await;
    wait_for_node_state(&nb, &api, "no ENIs reported", |o| o["status"]["eniCount"] == 0).await;
}

/// Passes the running daemon has finished with `result="ok"` (None before it serves /metrics).
fn ok_passes(nb: &NodeBox) -> Option<f64> {
    let (status, body) = nb.http_get("/metrics").ok()?;
    let metrics = (status == 200).then(|| nodeeni_tests::nodebox::parse_metrics(&body).ok()).flatten()?;
    Some(metrics.get("nodeeni_reconcile_total{result=\"ok\"}").copied().unwrap_or(0.0))
}

/// An edit that makes a NodeENI collide (the device index of another) is refused: an Event on it and
/// a Degraded condition, its version in force stays and so does its ENI. Across a daemon restart the
/// saved view keeps that version in force, so the refused edit is refused again, not run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_3_a_colliding_edit_is_refused_and_stays_refused_across_a_restart() {
    if !require_root("cluster_3_a_colliding_edit_is_refused_and_stays_refused_across_a_restart") {
        return;
    }
    let Some((mut nb, api, mut enis, _)) = converged_box("cl-clash", &[("fast", 1), ("spare", 2)]).await else {
        return;
    };
    let spare = enis.remove("spare").expect("spare");
    let a = nb.world.subnet_a.clone();

    // spare edited onto fast's device index: refused, generation 1 stays in force.
    api.apply(Kind::NodeENI, kernel_nodeeni(&nb, "spare", &a, 1));
    let object = wait_for_node_state(&nb, &api, "Degraded: NodeENIRefused", |o| {
        condition(o, "Degraded").is_some_and(|c| c["status"] == "True" && c["reason"] == "NodeENIRefused")
    })
    .await;
    let message = condition(&object, "Degraded").expect("degraded")["message"].as_str().expect("message").to_string();
    assert!(message.contains("spare generation 2") && message.contains("generation 1 stays in force"), "{message}");
    assert_eq!(object["status"]["observedGenerations"]["spare"], 1);
    eventually(
        "an Event on the NodeENI spare",
        Duration::from_secs(20),
        async || {
            api.list(Kind::Event).into_iter().find(|e| {
                e["involvedObject"]["name"] == "spare" && e["reason"] == "NodeENIRefused" && e["type"] == "Warning"
            })
        },
        || format!("{:?}", api.list(Kind::Event)),
    )
    .await;

    // A restart: the first composition starts from the saved view, so generation 1 stays in force.
    nb.daemon.as_mut().expect("daemon").terminate();
    nb.start_daemon();
    eventually(
        "two passes by the restarted daemon",
        WARM,
        async || ok_passes(&nb).filter(|n| *n >= 2.0),
        || nb.daemon_log(),
    )
    .await;
    assert_eq!(ready_in(&nb.state(), "spare"), spare, "spare's ENI stays\n{}", nb.daemon_log());
    assert_eq!(ec2_ids(&nb).await.len(), 2, "nothing drained in EC2");
    let object = wait_for_node_state(&nb, &api, "still refused after the restart", |o| {
        condition(o, "Degraded").is_some_and(|c| c["reason"] == "NodeENIRefused")
    })
    .await;
    assert_eq!(object["status"]["observedGenerations"]["spare"], 1);
}

/// Without the NodeENI CRD (its resource answered 404) and no saved view, the pool does not wait for
/// a list that cannot come: it runs the file's pools, says why, and takes NodeENIs once the CRD is
/// installed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_4_without_the_crd_the_file_pools_run_and_nodeenis_follow_its_install() {
    if !require_root("cluster_4_without_the_crd_the_file_pools_run_and_nodeenis_follow_its_install") {
        return;
    }
    let Some((mut nb, api)) = cluster_box("cl-nocrd").await else { return };
    api.serve_kind(Kind::NodeENI, false);
    nb.start_daemon();
    eventually("a pass without NodeENIs", WARM, async || ok_passes(&nb).filter(|n| *n >= 1.0), || nb.daemon_log())
        .await;
    assert!(nb.daemon_log().contains("is its CRD installed"), "the log says why\n{}", nb.daemon_log());

    api.serve_kind(Kind::NodeENI, true);
    api.apply(Kind::NodeENI, kernel_nodeeni(&nb, "fast", &nb.world.subnet_a.clone(), 1));
    nb.wait_for_state("the NodeENI's ENI ready", WARM, |s| ready_in(s, "fast").len() == 1).await;
}

/// A 404 on the NodeENIs is no proof they are gone (an API server that is starting answers it too).
/// With no saved view to stand in and the node state lost as well (the ENI known only from its EC2
/// tags), the file's pools run but a NodeENI's ENI stays; once the NodeENIs list, it is the same ENI.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_5_a_404_without_a_saved_view_drains_nothing_the_node_holds() {
    if !require_root("cluster_5_a_404_without_a_saved_view_drains_nothing_the_node_holds") {
        return;
    }
    let Some((mut nb, api, mut enis, saved)) = converged_box("cl-404", &[("fast", 1)]).await else { return };
    let eni = enis.remove("fast").expect("fast");

    // Restart with the saved view and the node state gone and the NodeENI resource answering 404.
    nb.daemon.as_mut().expect("daemon").terminate();
    std::fs::remove_file(&saved).expect("remove the saved view");
    std::fs::remove_file(nb.store().path()).expect("remove the node state");
    api.serve_kind(Kind::NodeENI, false);
    let earlier = nb.daemon_log().len();
    nb.start_daemon();
    eventually("two passes under the 404", WARM, async || ok_passes(&nb).filter(|n| *n >= 2.0), || nb.daemon_log())
        .await;
    let log = nb.daemon_log()[earlier..].to_string();
    assert!(log.contains("is its CRD installed"), "the 404 was met\n{log}");
    assert_eq!(ec2_ids(&nb).await, eni, "nothing removed in EC2\n{log}");
    let kept: Vec<String> = nb
        .state()
        .enis
        .iter()
        .filter(|e| e.pool == "fast")
        .filter_map(|e| e.eni_id.as_ref().map(ToString::to_string))
        .collect();
    assert_eq!(kept, eni, "the ENI adopted back into the node state by its tags, and kept");
    assert!(log.contains("keeping the ENIs of pools not declared here"), "and said what is kept\n{log}");

    // Served again: the NodeENI lists, passes run with it, and the ENI is the one it had.
    api.serve_kind(Kind::NodeENI, true);
    eventually(
        "the NodeENIs listed",
        WARM,
        async || nb.daemon_log()[earlier..].contains("NodeENIs listed").then_some(()),
        || nb.daemon_log(),
    )
    .await;
    nb.wait_for_passes(2).await;
    assert_eq!(ready_in(&nb.state(), "fast"), eni, "the same ENI\n{}", nb.daemon_log());
    assert_eq!(ec2_ids(&nb).await, eni, "and no other in EC2");
}
