//! The one home of Kubernetes API calls: the client, the watches of this node's Node and of the
//! NodeENIs, the server-side apply of this node's NodeENIState, and Events.
//!
//! Safety first: a watch that fails or restarts never empties what it reports. A view is `None`
//! until the first complete list, then changes only on a complete relist (buffered from `Init` to
//! `InitDone`, so a 410 Gone relist swaps the whole set at once) or on an event for one object.
//! Errors restart the watch with kube's default backoff while the last good view stays in force.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use k8s_openapi::api::core::v1::{Event, EventSource, Node, ObjectReference};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta, Time};
use kube::api::{ApiResource, DynamicObject, Patch, PatchParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event as WatchEvent};
use kube::{Api, Client, Config};
use serde_json::{Value, json};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::compose::Declared;
use crate::crd::{NodeENI, NodeENIState, NodeENIStateSpec, NodeENIStateStatus};

/// The label the kubelet sets with the node's EC2 instance type.
pub const INSTANCE_TYPE_LABEL: &str = "node.kubernetes.io/instance-type";
/// The namespace Events about cluster-scoped objects go to (as the API server's own do).
pub const EVENTS_NAMESPACE: &str = "default";
/// The component Events name.
pub const COMPONENT: &str = "nodeeni";

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("kubeconfig {path}: {source}")]
    Kubeconfig { path: String, source: kube::config::KubeconfigError },
    #[error("in-cluster configuration (no --kubeconfig given): {0}")]
    InCluster(#[from] kube::config::InClusterError),
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    #[error("node name {0:?}: {1}")]
    NodeName(String, &'static str),
}

/// Checks a node name as Kubernetes does (a DNS subdomain, RFC 1123): it names the Node watched, the
/// NodeENIState written and the field manager, so a bad one is refused at start.
pub fn check_node_name(name: &str) -> Result<(), ApiError> {
    let bad = |why| Err(ApiError::NodeName(name.to_string(), why));
    if name.is_empty() {
        return bad("empty (set NODE_NAME from the downward API, or --node-name)");
    }
    if name.len() > 253 {
        return bad("longer than 253 characters");
    }
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    if !name.split('.').all(label_ok) {
        return bad(
            "not a DNS subdomain (lowercase letters, digits, '-' and '.', each part starting and ending with a letter or digit)",
        );
    }
    Ok(())
}

/// This node as its Node object says.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct NodeView {
    pub uid: String,
    pub labels: BTreeMap<String, String>,
    /// From `spec.providerID` (`aws:///<az>/<instance-id>`), when it has that form.
    pub availability_zone: Option<String>,
    pub instance_id: Option<String>,
    /// From the `node.kubernetes.io/instance-type` label.
    pub instance_type: Option<String>,
}

impl NodeView {
    pub fn of(node: &Node) -> Self {
        let labels: BTreeMap<String, String> = node.metadata.labels.clone().unwrap_or_default();
        let (availability_zone, instance_id) =
            node.spec.as_ref().and_then(|s| s.provider_id.as_deref()).and_then(parse_provider_id).unzip();
        Self {
            uid: node.metadata.uid.clone().unwrap_or_default(),
            instance_type: labels.get(INSTANCE_TYPE_LABEL).cloned(),
            labels,
            availability_zone,
            instance_id,
        }
    }
}

/// `aws:///us-east-1a/i-0123456789abcdef0` → (AZ, instance ID). Anything else (another cloud, a
/// malformed ID) gives None: the identity then comes from elsewhere.
pub fn parse_provider_id(provider_id: &str) -> Option<(String, String)> {
    let rest = provider_id.strip_prefix("aws:///")?;
    let (az, instance) = rest.split_once('/')?;
    let valid_az = !az.is_empty() && az.chars().all(|c| c.is_ascii_alphanumeric() || c == '-');
    (valid_az && instance.parse::<nodeeni_conf::InstanceId>().is_ok()).then(|| (az.to_string(), instance.to_string()))
}

/// A watch's view and how the watch is doing.
#[derive(Debug, Clone)]
pub struct Watched<T> {
    /// None until the first complete list.
    pub view: watch::Receiver<Option<T>>,
    pub health: watch::Receiver<WatchHealth>,
}

/// How a watch is doing: what an operator (and a test) reads to know the API was tried.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WatchHealth {
    /// Failed requests (lists and watches) since the start.
    pub failures: u64,
    /// The last failure, as the client said it.
    pub last_error: Option<String>,
    /// The last list said the thing is not there: the NodeENI resource not served (its CRD not
    /// installed), or no Node of this name. Cleared by a list that finds it.
    pub not_found: bool,
}

impl WatchHealth {
    fn failed(&mut self, error: &watcher::Error) -> bool {
        self.failures += 1;
        self.last_error = Some(error.to_string());
        let not_found = matches!(error, watcher::Error::InitialListFailed(kube::Error::Api(s)) if s.code == 404);
        let newly = not_found && !self.not_found;
        self.not_found |= not_found;
        newly
    }
}

/// The client, and which node this daemon is on.
#[derive(Clone)]
pub struct ClusterClient {
    client: Client,
    node_name: String,
}

impl std::fmt::Debug for ClusterClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterClient").field("node_name", &self.node_name).finish_non_exhaustive()
    }
}

impl ClusterClient {
    /// A client from `kubeconfig`, or the in-cluster service account when None. Nothing is called
    /// yet: an API that is down does not stop the daemon from starting.
    pub async fn new(kubeconfig: Option<&Path>, node_name: String) -> Result<Self, ApiError> {
        check_node_name(&node_name)?;
        let config = match kubeconfig {
            Some(path) => {
                let to_error = |source| ApiError::Kubeconfig { path: path.display().to_string(), source };
                let kc = Kubeconfig::read_from(path).map_err(to_error)?;
                Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default()).await.map_err(to_error)?
            }
            None => Config::incluster()?,
        };
        Ok(Self { client: Client::try_from(config)?, node_name })
    }

    pub fn node_name(&self) -> &str {
        &self.node_name
    }

    /// Watches this node's Node (a field selector on its name: never a cluster-wide list) until
    /// `stop`. The view is None until the Node has been read once.
    pub fn watch_node(&self, stop: CancellationToken) -> Watched<NodeView> {
        let (tx, rx) = watch::channel(None);
        let (health_tx, health) = watch::channel(WatchHealth::default());
        let api: Api<Node> = Api::all(self.client.clone());
        let config = watcher::Config::default().fields(&format!("metadata.name={}", self.node_name));
        let name = self.node_name.clone();
        tokio::spawn(async move {
            let mut events = watcher::watcher(api, config).default_backoff().boxed();
            let mut listed: Option<Node> = None;
            loop {
                let event = tokio::select! {
                    _ = stop.cancelled() => return,
                    e = events.next() => e,
                };
                match event {
                    None => return,
                    Some(Err(e)) => {
                        health_tx.send_modify(|h| {
                            h.failed(&e);
                        });
                        tracing::warn!(error = %e, node = name, "the Node watch failed; retrying with backoff, the last view stays in force")
                    }
                    Some(Ok(WatchEvent::Init)) => listed = None,
                    Some(Ok(WatchEvent::InitApply(node))) if node.metadata.name.as_deref() == Some(name.as_str()) => {
                        listed = Some(node)
                    }
                    Some(Ok(WatchEvent::InitApply(_))) => {}
                    Some(Ok(WatchEvent::InitDone)) => match listed.take() {
                        Some(node) => {
                            health_tx.send_if_modified(|h| std::mem::replace(&mut h.not_found, false));
                            publish(&tx, NodeView::of(&node))
                        }
                        None => {
                            health_tx.send_if_modified(|h| !std::mem::replace(&mut h.not_found, true));
                            tracing::error!(
                                node = name,
                                "no Node of this name: is NODE_NAME (--node-name) right? The last view stays in force"
                            )
                        }
                    },
                    // The field selector names this node; anything else is not taken as it.
                    Some(Ok(WatchEvent::Apply(node))) if node.metadata.name.as_deref() == Some(name.as_str()) => {
                        publish(&tx, NodeView::of(&node))
                    }
                    Some(Ok(WatchEvent::Apply(node))) => {
                        tracing::warn!(node = name, got = ?node.metadata.name, "the Node watch sent another node; ignored")
                    }
                    Some(Ok(WatchEvent::Delete(_))) => {
                        tracing::warn!(
                            node = name,
                            "the Node was deleted; its labels stay as last seen (leak collection handles a node that is gone)"
                        )
                    }
                }
            }
        });
        Watched { view: rx, health }
    }

    /// Watches every NodeENI until `stop`. The view is None until they have been listed once; each
    /// relist replaces it whole at its end.
    pub fn watch_nodeenis(&self, stop: CancellationToken) -> Watched<Vec<Declared>> {
        let (tx, rx) = watch::channel(None);
        let (health_tx, health) = watch::channel(WatchHealth::default());
        // Dynamic objects: one that does not fit the Rust type is refused by conf with its problems,
        // instead of failing the watch's decoding.
        let resource = ApiResource::erase::<NodeENI>(&());
        let api: Api<DynamicObject> = Api::all_with(self.client.clone(), &resource);
        tokio::spawn(async move {
            let mut events = watcher::watcher(api, watcher::Config::default()).default_backoff().boxed();
            let mut current: BTreeMap<String, Declared> = BTreeMap::new();
            let mut buffer: Option<BTreeMap<String, Declared>> = None;
            loop {
                let event = tokio::select! {
                    _ = stop.cancelled() => return,
                    e = events.next() => e,
                };
                let declared = |o: DynamicObject| serde_json::to_value(o).ok().and_then(Declared::of);
                match event {
                    None => return,
                    Some(Err(e)) => {
                        let mut newly_missing = false;
                        health_tx.send_modify(|h| newly_missing = h.failed(&e));
                        if newly_missing {
                            tracing::error!(error = %e, "the NodeENI resource is not served: is its CRD installed (deploy/crds.yaml)? Retrying with backoff")
                        } else {
                            tracing::warn!(error = %e, "the NodeENI watch failed; retrying with backoff, the last view stays in force")
                        }
                    }
                    Some(Ok(WatchEvent::Init)) => buffer = Some(BTreeMap::new()),
                    Some(Ok(WatchEvent::InitApply(o))) => {
                        if let (Some(b), Some(d)) = (buffer.as_mut(), declared(o)) {
                            b.insert(d.name.clone(), d);
                        }
                    }
                    Some(Ok(WatchEvent::InitDone)) => {
                        // Only a list seen from its start replaces the view: an end without a
                        // start would publish an empty list and take every NodeENI's ENIs away.
                        let Some(listed) = buffer.take() else {
                            tracing::warn!(
                                "a NodeENI list ended that was not seen to start; the last view stays in force"
                            );
                            continue;
                        };
                        health_tx.send_if_modified(|h| std::mem::replace(&mut h.not_found, false));
                        current = listed;
                        tracing::info!(count = current.len(), "NodeENIs listed");
                        publish(&tx, current.values().cloned().collect());
                    }
                    Some(Ok(WatchEvent::Apply(o))) => {
                        if let Some(d) = declared(o) {
                            current.insert(d.name.clone(), d);
                            publish(&tx, current.values().cloned().collect());
                        }
                    }
                    Some(Ok(WatchEvent::Delete(o))) => {
                        if let Some(d) = declared(o) {
                            tracing::info!(nodeeni = d.name, "NodeENI deleted");
                            current.remove(&d.name);
                            publish(&tx, current.values().cloned().collect());
                        }
                    }
                }
            }
        });
        Watched { view: rx, health }
    }

    /// The field manager of this node's writes: one per node, so nodes never fight over fields.
    /// At most 128 characters, as the API allows (the name is ASCII: `check_node_name`).
    fn field_manager(&self) -> String {
        let mut manager = format!("nodeeni-{}", self.node_name);
        manager.truncate(128);
        manager
    }

    /// Applies this node's NodeENIState (server-side apply: the object with an owner reference to
    /// the Node, so it goes when the node goes; then its status subresource).
    pub async fn apply_state(
        &self,
        node_uid: &str,
        spec: &NodeENIStateSpec,
        status: &NodeENIStateStatus,
    ) -> Result<(), ApiError> {
        let api: Api<NodeENIState> = Api::all(self.client.clone());
        let params = PatchParams::apply(&self.field_manager()).force();
        let object = json!({
            "apiVersion": "networking.k8s.aws/v1alpha1",
            "kind": "NodeENIState",
            "metadata": {
                "name": self.node_name,
                "ownerReferences": [{"apiVersion": "v1", "kind": "Node", "name": self.node_name, "uid": node_uid}],
            },
            "spec": spec,
        });
        api.patch(&self.node_name, &params, &Patch::Apply(&object)).await?;
        let status = json!({
            "apiVersion": "networking.k8s.aws/v1alpha1",
            "kind": "NodeENIState",
            "metadata": {"name": self.node_name},
            "status": status,
        });
        api.patch_status(&self.node_name, &params, &Patch::Apply(&status)).await?;
        Ok(())
    }

    /// Posts one core/v1 Event about `about` (no rate limit here: see [`EventLimiter`]).
    pub async fn post_event(
        &self,
        about: &EventSubject,
        warning: bool,
        reason: &str,
        message: &str,
    ) -> Result<(), ApiError> {
        let api: Api<Event> = Api::namespaced(self.client.clone(), EVENTS_NAMESPACE);
        let now = now();
        let mut message = message.to_string();
        // The API refuses Event messages over 1 KiB.
        if message.len() > 1000 {
            let mut cut = 1000;
            while !message.is_char_boundary(cut) {
                cut -= 1;
            }
            message.truncate(cut);
            message.push('…');
        }
        let event = Event {
            metadata: ObjectMeta {
                generate_name: Some(format!("{}.", about.name)),
                namespace: Some(EVENTS_NAMESPACE.into()),
                ..ObjectMeta::default()
            },
            involved_object: ObjectReference {
                api_version: Some(about.api_version.clone()),
                kind: Some(about.kind.clone()),
                name: Some(about.name.clone()),
                uid: (!about.uid.is_empty()).then(|| about.uid.clone()),
                ..ObjectReference::default()
            },
            reason: Some(reason.into()),
            message: Some(message),
            type_: Some(if warning { "Warning" } else { "Normal" }.into()),
            source: Some(EventSource { component: Some(COMPONENT.into()), host: Some(self.node_name.clone()) }),
            reporting_component: Some(format!("{COMPONENT}.io/device-plugin")),
            // At most 128 characters, as the API allows (the name is ASCII).
            reporting_instance: Some(self.node_name.chars().take(128).collect()),
            first_timestamp: Some(Time(now)),
            last_timestamp: Some(Time(now)),
            event_time: Some(MicroTime(now)),
            action: Some(if warning { "Refused" } else { "Repaired" }.into()),
            count: Some(1),
            ..Event::default()
        };
        api.create(&PostParams::default(), &event).await?;
        Ok(())
    }
}

/// Now, as the API's time types hold it.
pub fn now() -> k8s_openapi::jiff::Timestamp {
    k8s_openapi::jiff::Timestamp::now()
}

/// What an Event is about.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct EventSubject {
    pub api_version: String,
    pub kind: String,
    pub name: String,
    pub uid: String,
}

impl EventSubject {
    pub fn nodeeni(d: &Declared) -> Self {
        Self {
            api_version: "networking.k8s.aws/v1alpha1".into(),
            kind: "NodeENI".into(),
            name: d.name.clone(),
            uid: d.object.pointer("/metadata/uid").and_then(Value::as_str).unwrap_or_default().to_string(),
        }
    }

    pub fn node(name: &str, uid: &str) -> Self {
        Self { api_version: "v1".into(), kind: "Node".into(), name: name.into(), uid: uid.into() }
    }
}

/// Rate limits Events: the same subject, reason and message at most once per `repeat_after`, and at
/// most `burst` Events per `window` in all, so a flapping pool cannot flood the API.
#[derive(Debug)]
pub struct EventLimiter {
    repeat_after: Duration,
    window: Duration,
    burst: usize,
    inner: Mutex<LimiterState>,
}

#[derive(Debug, Default)]
struct LimiterState {
    last_sent: HashMap<(EventSubject, String, String), Instant>,
    recent: Vec<Instant>,
}

impl EventLimiter {
    pub fn new(repeat_after: Duration, window: Duration, burst: usize) -> Self {
        Self { repeat_after, window, burst, inner: Mutex::default() }
    }

    /// Whether an Event may go now; when it may, it counts as sent.
    pub fn allow(&self, about: &EventSubject, reason: &str, message: &str, now: Instant) -> bool {
        let mut s = self.inner.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let window = self.window;
        s.recent.retain(|t| now.duration_since(*t) < window);
        let repeat_after = self.repeat_after;
        s.last_sent.retain(|_, t| now.duration_since(*t) < repeat_after);
        let key = (about.clone(), reason.to_string(), message.to_string());
        if s.last_sent.contains_key(&key) || s.recent.len() >= self.burst {
            return false;
        }
        s.last_sent.insert(key, now);
        s.recent.push(now);
        true
    }
}

fn publish<T: PartialEq>(tx: &watch::Sender<Option<T>>, value: T) {
    tx.send_if_modified(|current| {
        if current.as_ref() == Some(&value) {
            return false;
        }
        *current = Some(value);
        true
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_provider_id_gives_the_az_and_instance_and_nothing_else_does() {
        assert_eq!(
            parse_provider_id("aws:///us-east-1a/i-0123456789abcdef0"),
            Some(("us-east-1a".into(), "i-0123456789abcdef0".into()))
        );
        for bad in [
            "gce://p/z/n",
            "aws:///us-east-1a/",
            "aws:///us-east-1a/not-an-instance",
            "aws:////i-0123456789abcdef0",
            "aws:///../i-0123456789abcdef0",
            "aws://us-east-1a/i-0123456789abcdef0",
        ] {
            assert_eq!(parse_provider_id(bad), None, "{bad}");
        }
    }

    #[test]
    fn node_names_are_dns_subdomains() {
        for good in ["ip-10-0-0-1.ec2.internal", "node1", "a", &"a".repeat(253)] {
            assert!(check_node_name(good).is_ok(), "{good}");
        }
        for bad in ["", "Node1", "-a", "a-", "a..b", ".a", "a/b", "a b", "ä", &"a".repeat(254)] {
            assert!(matches!(check_node_name(bad), Err(ApiError::NodeName(..))), "{bad:?}");
        }
    }

    #[test]
    fn the_limiter_drops_repeats_and_caps_a_burst() {
        let limiter = EventLimiter::new(Duration::from_secs(600), Duration::from_secs(60), 3);
        let t0 = Instant::now();
        let a = EventSubject::node("n1", "u1");
        assert!(limiter.allow(&a, "R", "m1", t0));
        assert!(!limiter.allow(&a, "R", "m1", t0 + Duration::from_secs(1)), "a repeat is dropped");
        assert!(limiter.allow(&a, "R", "m2", t0 + Duration::from_secs(2)), "another message goes");
        assert!(limiter.allow(&a, "R", "m3", t0 + Duration::from_secs(3)));
        assert!(!limiter.allow(&a, "R", "m4", t0 + Duration::from_secs(4)), "over the burst");
        assert!(limiter.allow(&a, "R", "m4", t0 + Duration::from_secs(70)), "the window moved on");
        assert!(limiter.allow(&a, "R", "m1", t0 + Duration::from_secs(601)), "a repeat goes after its interval");
    }
}
