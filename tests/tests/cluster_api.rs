//! The daemon's Kubernetes client (nodeeni_cluster::api, kube-rs) against the API-server stand-in,
//! on the real wire protocol: the Node watched by name, the NodeENIs listed and watched, a watch
//! dropped, a 410 Gone relist, the server gone and back; the NodeENIState applied server-side with
//! its status; Events.

use std::collections::BTreeMap;
use std::time::Duration;

use nodeeni_cluster::api::{ClusterClient, EventSubject, NodeView};
use nodeeni_cluster::compose::Declared;
use nodeeni_cluster::crd::{Condition, NodeENIStateSpec, NodeENIStateStatus};
use nodeeni_tests::apiserver::{ApiServer, Kind};
use serde_json::{Value, json};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

const NODE: &str = "ip-10-0-0-1.ec2.internal";
const INSTANCE: &str = "i-0123456789abcdef0";
const WAIT: Duration = Duration::from_secs(20);

async fn client(api: &ApiServer) -> (ClusterClient, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("kubeconfig");
    std::fs::write(&path, api.kubeconfig()).expect("kubeconfig");
    (ClusterClient::new(Some(&path), NODE.into()).await.expect("client"), dir)
}

fn nodeeni(name: &str, index: u32) -> Value {
    json!({"apiVersion": "networking.k8s.aws/v1alpha1", "kind": "NodeENI", "metadata": {"name": name},
           "spec": {"subnetID": "subnet-0aaaabbbbcccceeee", "deviceIndex": index}})
}

async fn node_view_where(
    rx: &mut watch::Receiver<Option<NodeView>>,
    what: &str,
    check: impl Fn(&NodeView) -> bool,
) -> NodeView {
    let last = format!("{:?}", rx.borrow());
    tokio::time::timeout(WAIT, rx.wait_for(|v| v.as_ref().is_some_and(&check)))
        .await
        .unwrap_or_else(|_| panic!("{what}: not within {WAIT:?}; last {last}"))
        .expect("watch alive")
        .clone()
        .expect("some")
}

async fn nodeenis_where(
    rx: &mut watch::Receiver<Option<Vec<Declared>>>,
    what: &str,
    check: impl Fn(&[Declared]) -> bool,
) -> Vec<Declared> {
    tokio::time::timeout(WAIT, rx.wait_for(|v| v.as_deref().is_some_and(&check)))
        .await
        .unwrap_or_else(|_| panic!("{what}: not within {WAIT:?}"))
        .expect("watch alive")
        .clone()
        .expect("some")
}

fn names(list: &[Declared]) -> Vec<(&str, i64)> {
    list.iter().map(|d| (d.name.as_str(), d.generation)).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_node_is_watched_by_name_through_drops_relists_and_outages() {
    let api = ApiServer::start().await;
    api.put_node(NODE, "us-east-1a", INSTANCE, "c5.4xlarge", &[("role", "upf")]);
    api.put_node("another-node", "us-east-1b", "i-0fedcba9876543210", "m5.large", &[("role", "upf")]);
    let (client, _dir) = client(&api).await;
    let stop = CancellationToken::new();
    let mut node = client.watch_node(stop.clone());

    let view = node_view_where(&mut node.view, "the Node read", |_| true).await;
    assert_eq!(view.labels.get("role").map(String::as_str), Some("upf"));
    assert_eq!(view.instance_id.as_deref(), Some(INSTANCE));
    assert_eq!(view.availability_zone.as_deref(), Some("us-east-1a"));
    assert_eq!(view.instance_type.as_deref(), Some("c5.4xlarge"));
    assert_eq!(view.uid, api.get(Kind::Node, NODE).expect("node")["metadata"]["uid"].as_str().expect("uid"));

    // A label change arrives through the watch.
    api.set_node_labels(NODE, &[("role", "cp")]);
    node_view_where(&mut node.view, "relabelled", |v| v.labels.get("role").map(String::as_str) == Some("cp")).await;

    // Every Node request names this node: never a cluster-wide list or watch.
    let node_requests: Vec<_> = api.seen().into_iter().filter(|s| s.path.starts_with("/api/v1/nodes")).collect();
    assert!(!node_requests.is_empty());
    for s in &node_requests {
        assert!(s.query.contains(&format!("fieldSelector=metadata.name%3D{NODE}")), "{s:?}");
    }
    assert!(
        node_requests.iter().any(|s| s.query.contains("watch=true")),
        "the change came by a watch: {node_requests:?}"
    );

    // A dropped watch is watched again from its version: a change made after flows in.
    let watches = |api: &ApiServer| {
        api.seen().iter().filter(|s| s.path == "/api/v1/nodes" && s.query.contains("watch=true")).count()
    };
    let before = watches(&api);
    api.drop_watches();
    api.set_node_labels(NODE, &[("role", "cp"), ("gen", "1")]);
    node_view_where(&mut node.view, "after the drop", |v| v.labels.get("gen").map(String::as_str) == Some("1")).await;
    assert!(watches(&api) > before, "watched again after the drop");

    // The server goes away: the client's tries fail, and the view stays as it was.
    let failures = node.health.borrow().failures;
    api.go_away();
    tokio::time::timeout(WAIT, node.health.wait_for(|h| h.failures > failures))
        .await
        .expect("a failed try while the server is away")
        .expect("watch alive");
    assert_eq!(node.view.borrow().as_ref().and_then(|v| v.labels.get("gen").cloned()).as_deref(), Some("1"));
    // Meanwhile the history is compacted and the Node changes: back, the client's watch from its
    // version gets 410 Gone, so it lists again and sees the Node as it is.
    api.compact();
    api.set_node_labels(NODE, &[("gen", "2")]);
    let lists = |api: &ApiServer| {
        api.seen().iter().filter(|s| s.path == "/api/v1/nodes" && !s.query.contains("watch=true")).count()
    };
    let lists_before = lists(&api);
    api.come_back().await;
    let back =
        node_view_where(&mut node.view, "after the outage", |v| v.labels.get("gen").map(String::as_str) == Some("2"))
            .await;
    assert!(!back.labels.contains_key("role"), "the view is the Node as it is: {back:?}");
    assert!(lists(&api) > lists_before, "the 410 Gone made the client list again");
    assert!(
        node.health.borrow().last_error.as_deref().is_some_and(|e| e.contains("410") || e.contains("too old")),
        "the 410 was the last failure: {:?}",
        node.health.borrow()
    );
    stop.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodeenis_are_listed_then_followed_and_a_relist_replaces_the_set_whole() {
    let api = ApiServer::start().await;
    api.apply(Kind::NodeENI, nodeeni("a", 2));
    let (client, _dir) = client(&api).await;
    let stop = CancellationToken::new();
    let nodeenis = client.watch_nodeenis(stop.clone());
    let (mut rx, mut health) = (nodeenis.view, nodeenis.health);

    let listed = nodeenis_where(&mut rx, "the first list", |_| true).await;
    assert_eq!(names(&listed), [("a", 1)]);
    assert!(listed[0].object.pointer("/spec/subnetID").is_some(), "the whole object: {:?}", listed[0].object);

    api.apply(Kind::NodeENI, nodeeni("b", 3));
    nodeenis_where(&mut rx, "b added", |l| names(l) == [("a", 1), ("b", 1)]).await;
    api.apply(Kind::NodeENI, nodeeni("a", 4));
    nodeenis_where(&mut rx, "a's spec changed", |l| names(l) == [("a", 2), ("b", 1)]).await;
    api.delete(Kind::NodeENI, "b");
    nodeenis_where(&mut rx, "b deleted", |l| names(l) == [("a", 2)]).await;

    // Deleted while the watch was down and the history gone: the relist drops it.
    let failures = health.borrow().failures;
    api.go_away();
    api.compact();
    api.delete(Kind::NodeENI, "a");
    api.apply(Kind::NodeENI, nodeeni("c", 5));
    tokio::time::timeout(WAIT, health.wait_for(|h| h.failures > failures))
        .await
        .expect("a failed try while the server is away")
        .expect("watch alive");
    assert_eq!(
        names(rx.borrow().as_deref().expect("listed")),
        [("a", 2)],
        "an outage changes nothing: {:?} {:#?}",
        health.borrow(),
        api.seen()
    );
    api.come_back().await;
    nodeenis_where(&mut rx, "the relist", |l| names(l) == [("c", 1)]).await;
    let watches =
        api.seen().into_iter().filter(|s| s.path.ends_with("/nodeenis") && s.query.contains("watch=true")).count();
    assert!(watches >= 2, "watched again after the outage");
    stop.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_node_state_object_is_applied_server_side_with_its_owner_and_status_and_events_post() {
    let api = ApiServer::start().await;
    api.put_node(NODE, "us-east-1a", INSTANCE, "c5.4xlarge", &[]);
    let node_uid = api.get(Kind::Node, NODE).expect("node")["metadata"]["uid"].as_str().expect("uid").to_string();
    let (client, _dir) = client(&api).await;
    let spec = NodeENIStateSpec {
        node_name: NODE.into(),
        instance_id: INSTANCE.into(),
        availability_zone: "us-east-1a".into(),
    };
    let ready = |status: &str| NodeENIStateStatus {
        eni_count: 0,
        enis: vec![],
        conditions: vec![Condition {
            type_: "Ready".into(),
            status: status.into(),
            reason: "Converged".into(),
            message: String::new(),
            last_transition_time: "2026-12-06T00:00:00Z".into(),
        }],
        observed_generations: BTreeMap::from([("a".into(), 3)]),
    };
    client.apply_state(&node_uid, &spec, &ready("False")).await.expect("first apply");
    client.apply_state(&node_uid, &spec, &ready("True")).await.expect("second apply");
    let object = api.get(Kind::NodeENIState, NODE).expect("the NodeENIState");
    assert_eq!(object["spec"]["instanceID"], INSTANCE);
    assert_eq!(object["metadata"]["ownerReferences"][0]["uid"], node_uid.as_str());
    assert_eq!(object["metadata"]["ownerReferences"][0]["kind"], "Node");
    assert_eq!(object["status"]["conditions"][0]["status"], "True");
    assert_eq!(object["status"]["observedGenerations"]["a"], 3);
    let patches: Vec<_> = api.seen().into_iter().filter(|s| s.method == "PATCH").collect();
    assert_eq!(patches.len(), 4, "object then status, twice: {patches:?}");
    for p in &patches {
        assert_eq!(p.content_type, "application/apply-patch+yaml", "server-side apply: {p:?}");
        assert!(p.query.contains(&format!("fieldManager=nodeeni-{NODE}")) && p.query.contains("force=true"), "{p:?}");
    }
    assert!(patches[1].path.ends_with("/status") && patches[3].path.ends_with("/status"));

    let about = EventSubject::node(NODE, &node_uid);
    client.post_event(&about, false, "Repaired", "eni-1: re-attached").await.expect("event");
    let events = api.list(Kind::Event);
    assert_eq!(events.len(), 1);
    assert_eq!(events[0]["involvedObject"]["uid"], node_uid.as_str());
    assert_eq!(events[0]["reason"], "Repaired");
    assert_eq!(events[0]["type"], "Normal");
    assert_eq!(events[0]["source"]["host"], NODE);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_token_is_refused() {
    let api = ApiServer::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("kubeconfig");
    std::fs::write(&path, api.kubeconfig().replace(nodeeni_tests::apiserver::TOKEN, "wrong")).expect("kubeconfig");
    let client = ClusterClient::new(Some(&path), NODE.into()).await.expect("client");
    let spec = NodeENIStateSpec::default();
    let err = client.apply_state("u", &spec, &NodeENIStateStatus::default()).await.expect_err("unauthorized");
    assert!(err.to_string().contains("401") || err.to_string().contains("Unauthorized"), "{err}");
    assert!(api.get(Kind::NodeENIState, NODE).is_none(), "nothing stored");
}

/// Where a permission holds: in every namespace (a ClusterRole) or in one (a Role). Cluster-scoped
/// resources are granted only by a ClusterRole.
type Scope = Option<String>;
/// (where, API group, resource, verb).
type Permission = (Scope, String, String, String);

/// The permission a request needs, as the API server's RBAC authorizer reads it.
fn permission(seen: &nodeeni_tests::apiserver::Seen) -> Permission {
    let parts: Vec<&str> = seen.path.trim_start_matches('/').split('/').collect();
    let (namespace, group, rest): (Scope, &str, &[&str]) = match parts.as_slice() {
        ["api", "v1", "namespaces", ns, rest @ ..] => (Some(ns.to_string()), "", rest),
        ["api", "v1", rest @ ..] => (None, "", rest),
        ["apis", group, _, rest @ ..] => (None, group, rest),
        _ => panic!("unexpected path {seen:?}"),
    };
    let resource = match rest {
        [r] | [r, _] => r.to_string(),
        [r, _, sub] => format!("{r}/{sub}"),
        _ => panic!("unexpected path {seen:?}"),
    };
    let verb = match (seen.method.as_str(), rest.len()) {
        ("GET", 1) if seen.query.contains("watch=true") => "watch",
        ("GET", 1) => "list",
        ("GET", _) => "get",
        ("POST", _) => "create",
        ("PATCH", _) => "patch",
        (m, _) => panic!("unexpected method {m}"),
    };
    (namespace, group.to_string(), resource, verb.to_string())
}

/// What deploy/10-rbac.yaml grants the daemon's service account: its ClusterRole everywhere (None),
/// each Role in its namespace — each only through a binding to the account.
fn granted_by_the_deploy_roles() -> std::collections::BTreeSet<Permission> {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy/10-rbac.yaml")).expect("rbac");
    let docs: Vec<Value> = serde_yaml_ng::Deserializer::from_str(&text)
        .map(|d| serde::Deserialize::deserialize(d).expect("yaml"))
        .collect();
    let bound = |binding_kind: &str, role: &Value| {
        docs.iter().any(|b| {
            b["kind"] == binding_kind
                && b["roleRef"]["kind"] == role["kind"]
                && b["roleRef"]["name"] == role["metadata"]["name"]
                && b["metadata"]["namespace"] == role["metadata"]["namespace"]
                && b["subjects"].as_array().is_some_and(|s| {
                    s.iter()
                        .any(|s| s["kind"] == "ServiceAccount" && s["name"] == "nodeeni" && s["namespace"] == "nodeeni")
                })
        })
    };
    let mut granted = std::collections::BTreeSet::new();
    for role in &docs {
        let scope: Scope = match role["kind"].as_str() {
            Some("ClusterRole") if bound("ClusterRoleBinding", role) => None,
            Some("Role") if bound("RoleBinding", role) => {
                Some(role["metadata"]["namespace"].as_str().expect("ns").into())
            }
            Some("ClusterRole" | "Role") => panic!("a role bound to nothing: {role}"),
            _ => continue,
        };
        for rule in role["rules"].as_array().expect("rules") {
            assert!(rule.get("resourceNames").is_none() && rule.get("nonResourceURLs").is_none(), "{rule}");
            for group in rule["apiGroups"].as_array().expect("groups") {
                for resource in rule["resources"].as_array().expect("resources") {
                    for verb in rule["verbs"].as_array().expect("verbs") {
                        let s = |v: &Value| v.as_str().expect("string").to_string();
                        granted.insert((scope.clone(), s(group), s(resource), s(verb)));
                    }
                }
            }
        }
    }
    granted
}

/// Every call the client makes (both watches, the apply, an Event) is replayed against
/// deploy/10-rbac.yaml's roles: each is granted, and they grant nothing beyond what the issue of
/// cluster mode lists (its first server-side apply creates, so create is needed beside patch), with
/// Events only in the namespace they go to.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_roles_grant_what_the_client_calls_and_no_more() {
    let api = ApiServer::start().await;
    api.put_node(NODE, "us-east-1a", INSTANCE, "c5.4xlarge", &[]);
    api.apply(Kind::NodeENI, nodeeni("a", 2));
    let (client, _dir) = client(&api).await;
    let stop = CancellationToken::new();
    let mut node = client.watch_node(stop.clone()).view;
    let mut nodeenis = client.watch_nodeenis(stop.clone()).view;
    node_view_where(&mut node, "the Node", |_| true).await;
    nodeenis_where(&mut nodeenis, "the NodeENIs", |_| true).await;
    api.set_node_labels(NODE, &[("x", "1")]);
    api.apply(Kind::NodeENI, nodeeni("a", 3));
    node_view_where(&mut node, "watched", |v| v.labels.contains_key("x")).await;
    nodeenis_where(&mut nodeenis, "watched", |l| l.first().is_some_and(|d| d.generation == 2)).await;
    let spec = NodeENIStateSpec {
        node_name: NODE.into(),
        instance_id: INSTANCE.into(),
        availability_zone: "us-east-1a".into(),
    };
    client.apply_state("uid", &spec, &NodeENIStateStatus::default()).await.expect("apply");
    client.post_event(&EventSubject::node(NODE, "uid"), true, "R", "m").await.expect("event");
    stop.cancel();

    let mut needed: std::collections::BTreeSet<Permission> = api.seen().iter().map(permission).collect();
    // Server-side apply of an object that does not exist yet creates it.
    needed.insert((None, "networking.k8s.aws".into(), "nodeenistates".into(), "create".into()));
    assert!(needed.iter().any(|(_, _, r, _)| r == "events"), "an Event was posted: {needed:?}");

    let granted = granted_by_the_deploy_roles();
    let missing: Vec<_> = needed
        .iter()
        .filter(|(scope, g, r, v)| {
            let everywhere = (None, g.clone(), r.clone(), v.clone());
            !granted.contains(&everywhere)
                && (scope.is_none() || !granted.contains(&(scope.clone(), g.clone(), r.clone(), v.clone())))
        })
        .collect();
    assert!(missing.is_empty(), "the client calls what the roles do not grant: {missing:?}");
    let events_in = Some(nodeeni_cluster::api::EVENTS_NAMESPACE.to_string());
    let allowed: std::collections::BTreeSet<Permission> = [
        (None, "", "nodes", &["get", "list", "watch"][..]),
        (None, "networking.k8s.aws", "nodeenis", &["get", "list", "watch"]),
        (None, "networking.k8s.aws", "nodeenistates", &["get", "create", "patch"]),
        (None, "networking.k8s.aws", "nodeenistates/status", &["get", "create", "patch"]),
        (events_in, "", "events", &["create", "patch"]),
    ]
    .iter()
    .flat_map(|(scope, g, r, verbs)| {
        verbs.iter().map(move |v| (scope.clone(), g.to_string(), r.to_string(), v.to_string()))
    })
    .collect();
    let extra: Vec<_> = granted.difference(&allowed).collect();
    assert!(extra.is_empty(), "the roles grant more than cluster mode needs: {extra:?}");
}
