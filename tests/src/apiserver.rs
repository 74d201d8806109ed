//! A Kubernetes API-server stand-in: plain HTTP/1.1 on 127.0.0.1, speaking the real wire protocol for
//! exactly the calls nodeeni's daemon makes — GET, LIST and WATCH (resourceVersion, bookmarks, 410
//! Gone for a compacted version) of Nodes and NodeENIs, GET and server-side apply PATCH of
//! NodeENIStates including the status subresource, Events POST — with a bearer token required.
//!
//! Tests feed it YAML (as `kubectl apply` would), change labels, delete objects, drop every watch,
//! compact the history, or make it go away and come back on the same port. Every request is recorded,
//! so a test can check what the daemon asked for (never a cluster-wide Node list, say).

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, StreamBody, combinators::BoxBody};
use hyper::body::{Frame, Incoming};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use tokio::sync::{broadcast, mpsc};
use tokio_util::sync::CancellationToken;

/// The token the stand-in accepts (the kubeconfig it writes carries it).
pub const TOKEN: &str = "nodeeni-test-token";
const GROUP_PATH: &str = "/apis/networking.k8s.aws/v1alpha1";

/// The kinds served, by their collection path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    Node,
    NodeENI,
    NodeENIState,
    Event,
}

impl Kind {
    fn api_version(self) -> &'static str {
        match self {
            Kind::Node | Kind::Event => "v1",
            Kind::NodeENI | Kind::NodeENIState => "networking.k8s.aws/v1alpha1",
        }
    }
    fn name(self) -> &'static str {
        match self {
            Kind::Node => "Node",
            Kind::NodeENI => "NodeENI",
            Kind::NodeENIState => "NodeENIState",
            Kind::Event => "Event",
        }
    }
    fn of_kind(kind: &str) -> Option<Self> {
        [Kind::Node, Kind::NodeENI, Kind::NodeENIState, Kind::Event].into_iter().find(|k| k.name() == kind)
    }
}

/// One change, as a watch sends it.
#[derive(Debug, Clone)]
struct Change {
    rv: u64,
    kind: Kind,
    type_: &'static str,
    object: Value,
}

/// A request the daemon made: method, path and query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seen {
    pub method: String,
    pub path: String,
    pub query: String,
    pub content_type: String,
}

#[derive(Debug, Default)]
struct Store {
    rv: u64,
    uid: u64,
    objects: BTreeMap<(Kind, String), Value>,
    history: Vec<Change>,
    /// Watches from a version older than this get 410 Gone.
    oldest: u64,
    seen: Vec<Seen>,
    /// Kinds answered 404, as an API server without their CRD does.
    unserved: std::collections::BTreeSet<Kind>,
}

impl Store {
    fn next_rv(&mut self) -> u64 {
        self.rv += 1;
        self.rv
    }

    /// Stores `object` (its metadata filled as the API server does) and records the change.
    fn put(&mut self, kind: Kind, mut object: Value) -> Value {
        let name = object.pointer("/metadata/name").and_then(Value::as_str).unwrap_or_default().to_string();
        let rv = self.next_rv();
        let existing = self.objects.get(&(kind, name.clone())).cloned();
        let meta = object["metadata"].as_object_mut().expect("metadata");
        match &existing {
            Some(old) => {
                for key in ["uid", "creationTimestamp"] {
                    meta.insert(key.into(), old["metadata"][key].clone());
                }
                let generation = old["metadata"]["generation"].as_i64().unwrap_or(1);
                let spec_changed = old.get("spec") != object.get("spec");
                object["metadata"]["generation"] = json!(if spec_changed { generation + 1 } else { generation });
            }
            None => {
                self.uid += 1;
                meta.insert("uid".into(), json!(format!("00000000-0000-0000-0000-{:012}", self.uid)));
                meta.insert(
                    "creationTimestamp".into(),
                    json!(format!("2026-01-01T00:{:02}:{:02}Z", rv / 60 % 60, rv % 60)),
                );
                object["metadata"]["generation"] = json!(1);
            }
        }
        object["metadata"]["resourceVersion"] = json!(rv.to_string());
        object["apiVersion"] = json!(kind.api_version());
        object["kind"] = json!(kind.name());
        let type_ = if existing.is_some() { "MODIFIED" } else { "ADDED" };
        self.objects.insert((kind, name), object.clone());
        self.history.push(Change { rv, kind, type_, object: object.clone() });
        object
    }

    fn delete(&mut self, kind: Kind, name: &str) -> Option<Value> {
        let mut object = self.objects.remove(&(kind, name.to_string()))?;
        let rv = self.next_rv();
        object["metadata"]["resourceVersion"] = json!(rv.to_string());
        self.history.push(Change { rv, kind, type_: "DELETED", object: object.clone() });
        Some(object)
    }
}

/// The running stand-in. Dropping it stops it.
#[derive(Debug)]
pub struct ApiServer {
    pub addr: SocketAddr,
    store: Arc<Mutex<Store>>,
    changes: broadcast::Sender<Change>,
    /// Cancelled to go away (listener and every connection closed).
    up: Mutex<Option<CancellationToken>>,
    /// Cancelled to drop every open watch (the server stays up).
    watches: Arc<Mutex<CancellationToken>>,
}

impl ApiServer {
    /// Starts on a free port.
    pub async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let server = Self {
            addr,
            store: Arc::default(),
            changes: broadcast::channel(1024).0,
            up: Mutex::new(None),
            watches: Arc::new(Mutex::new(CancellationToken::new())),
        };
        server.serve(listener);
        server
    }

    fn serve(&self, listener: tokio::net::TcpListener) {
        let token = CancellationToken::new();
        *self.up.lock().unwrap_or_else(PoisonError::into_inner) = Some(token.clone());
        let ctx = Ctx { store: self.store.clone(), changes: self.changes.clone(), watches: self.watches.clone() };
        tokio::spawn(async move {
            loop {
                // Biased: once away, nothing more is accepted or served.
                let (stream, _) = tokio::select! {
                    biased;
                    _ = token.cancelled() => return,
                    accepted = listener.accept() => match accepted { Ok(a) => a, Err(_) => continue },
                };
                let (ctx, token) = (ctx.clone(), token.clone());
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |req| {
                        let ctx = ctx.clone();
                        async move { Ok::<_, Infallible>(ctx.handle(req).await) }
                    });
                    let conn =
                        hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), service);
                    tokio::select! {
                        biased;
                        _ = token.cancelled() => {}
                        _ = conn => {}
                    }
                });
            }
        });
    }

    /// The server goes away: the port refuses connections, open ones (watches too) are cut.
    pub fn go_away(&self) {
        // Watches first: a change made after this call is never sent, whatever a connection is
        // doing at the moment it is cut.
        self.drop_watches();
        if let Some(t) = self.up.lock().unwrap_or_else(PoisonError::into_inner).take() {
            t.cancel();
        }
    }

    /// The server comes back on the same port, with the same objects.
    pub async fn come_back(&self) {
        let listener = loop {
            match tokio::net::TcpListener::bind(self.addr).await {
                Ok(l) => break l,
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        };
        self.serve(listener);
    }

    /// Ends every open watch (clients must watch again from their last version).
    pub fn drop_watches(&self) {
        let mut w = self.watches.lock().unwrap_or_else(PoisonError::into_inner);
        w.cancel();
        *w = CancellationToken::new();
    }

    /// Serves `kind` or not: unserved, its every request gets 404 Not Found, as from an API server
    /// without its CRD installed.
    pub fn serve_kind(&self, kind: Kind, served: bool) {
        let mut s = self.lock();
        if served {
            s.unserved.remove(&kind);
        } else {
            s.unserved.insert(kind);
        }
    }

    /// Forgets the history: a watch from any version seen so far gets 410 Gone and must relist.
    pub fn compact(&self) {
        let mut s = self.lock();
        s.oldest = s.rv + 1;
        s.history.clear();
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Store> {
        self.store.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Creates or updates every object of a YAML stream, as `kubectl apply` does (spec changes bump
    /// the generation).
    pub fn apply_yaml(&self, text: &str) {
        for doc in serde_yaml_ng::Deserializer::from_str(text) {
            let object: Value = serde::Deserialize::deserialize(doc).expect("YAML document");
            if object.is_null() {
                continue;
            }
            let kind = object["kind"].as_str().and_then(Kind::of_kind).expect("a kind the stand-in serves");
            self.apply(kind, object);
        }
    }

    /// Creates or updates one object.
    pub fn apply(&self, kind: Kind, object: Value) -> Value {
        let mut s = self.lock();
        let object = s.put(kind, object);
        let change = s.history.last().cloned().expect("just put");
        let _ = self.changes.send(change);
        object
    }

    pub fn delete(&self, kind: Kind, name: &str) {
        let mut s = self.lock();
        if s.delete(kind, name).is_some() {
            let change = s.history.last().cloned().expect("just deleted");
            let _ = self.changes.send(change);
        }
    }

    /// A Node named `name` for instance `instance` in `az`, with `labels`.
    pub fn put_node(&self, name: &str, az: &str, instance: &str, instance_type: &str, labels: &[(&str, &str)]) {
        let mut all: BTreeMap<String, String> = labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        all.insert("kubernetes.io/hostname".into(), name.into());
        all.insert("node.kubernetes.io/instance-type".into(), instance_type.into());
        all.insert("topology.kubernetes.io/zone".into(), az.into());
        self.apply(
            Kind::Node,
            json!({"metadata": {"name": name, "labels": all}, "spec": {"providerID": format!("aws:///{az}/{instance}")}}),
        );
    }

    /// Replaces a Node's labels (the kubelet's own ones are kept).
    pub fn set_node_labels(&self, name: &str, labels: &[(&str, &str)]) {
        let mut node = self.get(Kind::Node, name).expect("the Node");
        let kept: BTreeMap<String, Value> = node["metadata"]["labels"]
            .as_object()
            .map(|m| {
                m.iter().filter(|(k, _)| k.contains("kubernetes.io/")).map(|(k, v)| (k.clone(), v.clone())).collect()
            })
            .unwrap_or_default();
        let mut all = serde_json::Map::from_iter(kept);
        for (k, v) in labels {
            all.insert(k.to_string(), json!(v));
        }
        node["metadata"]["labels"] = Value::Object(all);
        self.apply(Kind::Node, node);
    }

    pub fn get(&self, kind: Kind, name: &str) -> Option<Value> {
        self.lock().objects.get(&(kind, name.to_string())).cloned()
    }

    pub fn list(&self, kind: Kind) -> Vec<Value> {
        self.lock().objects.iter().filter(|((k, _), _)| *k == kind).map(|(_, v)| v.clone()).collect()
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.lock().seen.clone()
    }

    /// A kubeconfig that reaches this stand-in with its token.
    pub fn kubeconfig(&self) -> String {
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: stand-in\n  cluster: {{server: \"http://{addr}\"}}\n\
             users:\n- name: nodeeni\n  user: {{token: {TOKEN}}}\ncontexts:\n- name: stand-in\n  context: {{cluster: stand-in, user: nodeeni}}\n\
             current-context: stand-in\n",
            addr = self.addr
        )
    }
}

impl Drop for ApiServer {
    fn drop(&mut self) {
        self.go_away();
    }
}

type Body = BoxBody<Bytes, Infallible>;

#[derive(Debug, Clone)]
struct Ctx {
    store: Arc<Mutex<Store>>,
    changes: broadcast::Sender<Change>,
    watches: Arc<Mutex<CancellationToken>>,
}

fn full(status: StatusCode, body: Value) -> Response<Body> {
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.to_string())).boxed())
        .expect("response")
}

fn status(code: StatusCode, reason: &str, message: &str) -> Response<Body> {
    full(
        code,
        json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "message": message, "reason": reason, "code": code.as_u16()}),
    )
}

/// The parsed query string.
fn query_of(q: &str) -> BTreeMap<String, String> {
    q.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (k.to_string(), percent_decode(v))
        })
        .collect()
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).ok();
                if let Some(b) = hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                    out.push(b);
                    i += 3;
                    continue;
                }
                out.push(b'%');
            }
            b'+' => out.push(b' '),
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Which objects a field selector picks (only `metadata.name=` is served, as the daemon uses).
fn selects(selector: Option<&String>, object: &Value) -> bool {
    match selector.and_then(|s| s.strip_prefix("metadata.name=")) {
        Some(name) => object.pointer("/metadata/name").and_then(Value::as_str) == Some(name),
        None => true,
    }
}

impl Ctx {
    fn lock(&self) -> std::sync::MutexGuard<'_, Store> {
        self.store.lock().unwrap_or_else(PoisonError::into_inner)
    }

    async fn handle(&self, req: Request<Incoming>) -> Response<Body> {
        let method = req.method().clone();
        let path = req.uri().path().to_string();
        let raw_query = req.uri().query().unwrap_or("").to_string();
        let content_type = req.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
        self.lock().seen.push(Seen {
            method: method.to_string(),
            path: path.clone(),
            query: raw_query.clone(),
            content_type: content_type.clone(),
        });
        let authorized = req
            .headers()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v == format!("Bearer {TOKEN}"));
        if !authorized {
            return status(StatusCode::UNAUTHORIZED, "Unauthorized", "Unauthorized");
        }
        let query = query_of(&raw_query);
        let body = match req.into_body().collect().await {
            Ok(b) => b.to_bytes(),
            Err(_) => return status(StatusCode::BAD_REQUEST, "BadRequest", "unreadable body"),
        };
        let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
        let group: Vec<&str> = GROUP_PATH.trim_start_matches('/').split('/').collect();
        let (kind, rest): (Kind, &[&str]) = match segments.as_slice() {
            ["api", "v1", "nodes", rest @ ..] => (Kind::Node, rest),
            ["api", "v1", "namespaces", _, "events", rest @ ..] => (Kind::Event, rest),
            [a, b, c, "nodeenis", rest @ ..] if [*a, *b, *c] == group[..] => (Kind::NodeENI, rest),
            [a, b, c, "nodeenistates", rest @ ..] if [*a, *b, *c] == group[..] => (Kind::NodeENIState, rest),
            _ => return status(StatusCode::NOT_FOUND, "NotFound", &format!("the server could not find {path}")),
        };
        if self.lock().unserved.contains(&kind) {
            return status(StatusCode::NOT_FOUND, "NotFound", "the server could not find the requested resource");
        }
        match (method, rest) {
            (Method::GET, []) if matches!(query.get("watch").map(String::as_str), Some("true" | "1")) => {
                self.watch(kind, &query)
            }
            (Method::GET, []) => self.list(kind, &query),
            (Method::GET, [name]) => match self.lock().objects.get(&(kind, name.to_string())) {
                Some(o) => full(StatusCode::OK, o.clone()),
                None => status(StatusCode::NOT_FOUND, "NotFound", &format!("{} {name:?} not found", kind.name())),
            },
            (Method::POST, []) if kind == Kind::Event => self.post_event(&body),
            (Method::PATCH, [name]) if kind == Kind::NodeENIState => {
                self.apply_patch(name, false, &query, &content_type, &body)
            }
            (Method::PATCH, [name, "status"]) if kind == Kind::NodeENIState => {
                self.apply_patch(name, true, &query, &content_type, &body)
            }
            (m, _) => status(
                StatusCode::METHOD_NOT_ALLOWED,
                "MethodNotAllowed",
                &format!("{m} {path} is not served by the stand-in"),
            ),
        }
    }

    fn list(&self, kind: Kind, query: &BTreeMap<String, String>) -> Response<Body> {
        let s = self.lock();
        let items: Vec<Value> = s
            .objects
            .iter()
            .filter(|((k, _), o)| *k == kind && selects(query.get("fieldSelector"), o))
            .map(|(_, o)| o.clone())
            .collect();
        full(
            StatusCode::OK,
            json!({"kind": format!("{}List", kind.name()), "apiVersion": kind.api_version(), "metadata": {"resourceVersion": s.rv.to_string()}, "items": items}),
        )
    }

    fn watch(&self, kind: Kind, query: &BTreeMap<String, String>) -> Response<Body> {
        let from: u64 = query.get("resourceVersion").and_then(|v| v.parse().ok()).unwrap_or(0);
        let bookmarks = query.get("allowWatchBookmarks").is_some_and(|v| v == "true");
        let timeout = query.get("timeoutSeconds").and_then(|v| v.parse().ok()).map(Duration::from_secs);
        let selector = query.get("fieldSelector").cloned();
        let (tx, rx) = mpsc::channel::<Result<Frame<Bytes>, Infallible>>(64);
        let line = |v: Value| Ok(Frame::data(Bytes::from(format!("{v}\n"))));
        let (backlog, mut live, gone, rv_now) = {
            let s = self.lock();
            let gone = from != 0 && from < s.oldest;
            let backlog: Vec<Change> = s.history.iter().filter(|c| c.kind == kind && c.rv > from).cloned().collect();
            (backlog, self.changes.subscribe(), gone, s.rv)
        };
        let dropped = self.watches.lock().unwrap_or_else(PoisonError::into_inner).clone();
        tokio::spawn(async move {
            if gone {
                let _ = tx
                    .send(line(json!({"type": "ERROR", "object": {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "message": format!("too old resource version: {from}"), "reason": "Expired", "code": 410}})))
                    .await;
                return;
            }
            let event = |c: &Change| json!({"type": c.type_, "object": c.object});
            let mut last = from.max(if from == 0 { rv_now } else { 0 });
            for c in backlog.iter().filter(|c| selects(selector.as_ref(), &c.object)) {
                last = last.max(c.rv);
                if tx.send(line(event(c))).await.is_err() {
                    return;
                }
            }
            let deadline = tokio::time::sleep(timeout.unwrap_or(Duration::from_secs(3600)));
            tokio::pin!(deadline);
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            loop {
                tokio::select! {
                    // A dropped watch sends nothing more, even a change already waiting.
                    biased;
                    _ = dropped.cancelled() => return,
                    _ = &mut deadline => return,
                    _ = tick.tick(), if bookmarks => {
                        let mark = json!({"type": "BOOKMARK", "object": {"kind": kind.name(), "apiVersion": kind.api_version(), "metadata": {"resourceVersion": last.to_string()}}});
                        if tx.send(line(mark)).await.is_err() { return; }
                    }
                    change = live.recv() => match change {
                        Ok(c) if c.kind == kind && c.rv > last => {
                            last = c.rv;
                            if selects(selector.as_ref(), &c.object) && tx.send(line(event(&c))).await.is_err() {
                                return;
                            }
                        }
                        Ok(_) => {}
                        Err(broadcast::error::RecvError::Lagged(_)) => return,
                        Err(broadcast::error::RecvError::Closed) => return,
                    },
                }
            }
        });
        let stream = tokio_stream::wrappers::ReceiverStream::new(rx);
        Response::builder()
            .status(StatusCode::OK)
            .header("content-type", "application/json")
            .body(BodyExt::boxed(StreamBody::new(stream)))
            .expect("response")
    }

    fn post_event(&self, body: &[u8]) -> Response<Body> {
        let Ok(mut event) = serde_json::from_slice::<Value>(body) else {
            return status(StatusCode::BAD_REQUEST, "BadRequest", "not JSON");
        };
        for field in ["involvedObject", "reason", "message"] {
            if event.get(field).is_none() {
                return status(StatusCode::UNPROCESSABLE_ENTITY, "Invalid", &format!("Event.{field}: Required value"));
            }
        }
        let mut s = self.lock();
        if event.pointer("/metadata/name").is_none() {
            let Some(prefix) = event.pointer("/metadata/generateName").and_then(Value::as_str).map(String::from) else {
                return status(StatusCode::UNPROCESSABLE_ENTITY, "Invalid", "metadata.name: Required value");
            };
            let n = s.rv + 1;
            event["metadata"]["name"] = json!(format!("{prefix}{n:05x}"));
        }
        let object = s.put(Kind::Event, event);
        let change = s.history.last().cloned().expect("just put");
        let _ = self.changes.send(change);
        full(StatusCode::CREATED, object)
    }

    /// Server-side apply of a NodeENIState (the object, or its status subresource).
    fn apply_patch(
        &self,
        name: &str,
        subresource_status: bool,
        query: &BTreeMap<String, String>,
        content_type: &str,
        body: &[u8],
    ) -> Response<Body> {
        if content_type != "application/apply-patch+yaml" {
            return status(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "UnsupportedMediaType",
                &format!("the stand-in takes server-side apply only, not {content_type}"),
            );
        }
        let Some(manager) = query.get("fieldManager").filter(|m| !m.is_empty()) else {
            return status(StatusCode::BAD_REQUEST, "BadRequest", "PATCH with apply requires a fieldManager");
        };
        let Ok(patch) = serde_yaml_ng::from_slice::<Value>(body) else {
            return status(StatusCode::BAD_REQUEST, "BadRequest", "the apply body is not YAML or JSON");
        };
        if patch.pointer("/metadata/name").and_then(Value::as_str) != Some(name) {
            return status(StatusCode::BAD_REQUEST, "BadRequest", "metadata.name must match the URL");
        }
        let mut s = self.lock();
        let existing = s.objects.get(&(Kind::NodeENIState, name.to_string())).cloned();
        let mut object = match (existing, subresource_status) {
            (None, true) => {
                return status(StatusCode::NOT_FOUND, "NotFound", &format!("nodeenistates {name:?} not found"));
            }
            (None, false) => json!({"metadata": {"name": name}}),
            (Some(o), _) => o,
        };
        if subresource_status {
            object["status"] = patch.get("status").cloned().unwrap_or(Value::Null);
        } else {
            for key in ["labels", "ownerReferences"] {
                if let Some(v) = patch.pointer(&format!("/metadata/{key}")) {
                    object["metadata"][key] = v.clone();
                }
            }
            object["spec"] = patch.get("spec").cloned().unwrap_or(Value::Null);
        }
        let managers = object["metadata"]["managedFields"].as_array().cloned().unwrap_or_default();
        let entry = json!({"manager": manager, "operation": "Apply", "subresource": if subresource_status { "status" } else { "" }});
        if !managers.contains(&entry) {
            let mut m = managers;
            m.push(entry);
            object["metadata"]["managedFields"] = Value::Array(m);
        }
        let object = s.put(Kind::NodeENIState, object);
        let change = s.history.last().cloned().expect("just put");
        let _ = self.changes.send(change);
        full(StatusCode::OK, object)
    }
}
