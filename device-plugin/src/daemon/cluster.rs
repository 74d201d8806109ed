//! Cluster mode: the daemon's side of the Kubernetes API. It composes the configuration the pool runs
//! from the file (the embedded default) and what the API says (this node's labels, the NodeENIs),
//! keeps what the node last converged to for starts without the API, publishes the NodeENIState
//! after passes, and posts rate-limited Events for refusals and repairs.
//!
//! Nothing the API does (being down, slow, restarting, a watch dropped) takes an ENI away: the views
//! change only on complete lists or single-object events (see `nodeeni_cluster::api`), and until the
//! first list the saved view is in force; with neither, the pool waits.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use nodeeni_cluster::api::{ApiError, ClusterClient, EventLimiter, EventSubject, NodeView, Watched};
use nodeeni_cluster::compose::{Composition, Declared, compose};
use nodeeni_cluster::crd::{NodeENIStateSpec, NodeENIStateStatus};
use nodeeni_cluster::report::{PassOutcome, degraded_reason, status_of};
use nodeeni_cluster::saved::{self, SavedView};
use nodeeni_conf::PoolConfig;
use nodeeni_conf::pool::NodeIdentity as Configured;
use nodeeni_ipam::identity::NodeIdentity;
use nodeeni_state::node::NodeStore;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// How long the first start waits for the Node before asking IMDS for the identity; with a saved
/// view the wait is short (the saved identity is as good, and the kubelet should be served soon).
const NODE_WAIT: Duration = Duration::from_secs(10);
const NODE_WAIT_WITH_SAVED: Duration = Duration::from_secs(2);
/// The NodeENIState is applied when it changes, and at least this often (a deleted object returns).
const STATUS_RESYNC: Duration = Duration::from_secs(300);
/// After a failed apply, the next try.
const STATUS_RETRY: Duration = Duration::from_secs(10);
/// Events: the same one at most every 10 minutes, at most 20 in 5 minutes.
const EVENT_REPEAT: Duration = Duration::from_secs(600);
const EVENT_WINDOW: Duration = Duration::from_secs(300);
const EVENT_BURST: usize = 20;
/// How long a node-state read for the status may wait for the lock.
const STATE_READ_WAIT: Duration = Duration::from_secs(5);
/// Compositions kept to pair a pass with the one it ran (a pass may finish under an older one).
const COMPOSITIONS_KEPT: usize = 8;

/// Where cluster mode reaches the API (the `run` flags).
#[derive(Debug, Clone)]
pub struct ClusterSettings {
    pub node_name: String,
    pub kubeconfig: Option<PathBuf>,
}

/// What a pass said, as cluster mode needs it.
#[derive(Debug, Clone)]
pub(super) struct PassNews {
    pub config: Arc<PoolConfig>,
    pub outcome: PassOutcome,
    pub repaired: Vec<String>,
}

/// What the status publisher needs after a pass.
#[derive(Debug, Clone)]
struct Publication {
    composition: Arc<Composition>,
    outcome: PassOutcome,
}

pub(super) struct Cluster {
    client: ClusterClient,
    node: Watched<NodeView>,
    nodeenis: Watched<Vec<Declared>>,
    state_dir: PathBuf,
    saved: Option<SavedView>,
    /// The latest compositions, newest last. The newest is in force: its NodeENI versions are
    /// `compose`'s `previous`; older ones pair with a pass that ran them.
    compositions: VecDeque<Arc<Composition>>,
    /// The node's identity, once resolved (for the saved view and the NodeENIState spec).
    identity: Option<NodeIdentity>,
    events: Arc<EventLimiter>,
    publications: watch::Sender<Option<Publication>>,
    stop: CancellationToken,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster").field("client", &self.client).finish_non_exhaustive()
    }
}

impl Cluster {
    /// Builds the client and starts the two watches. The API is not needed for this.
    pub(super) async fn start(
        settings: &ClusterSettings,
        state_dir: &Path,
        stop: CancellationToken,
    ) -> Result<Self, ApiError> {
        let client = ClusterClient::new(settings.kubeconfig.as_deref(), settings.node_name.clone()).await?;
        let saved = match saved::load(state_dir) {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(error = %e, "the saved cluster view is unreadable; waiting for the API's first lists instead");
                None
            }
        };
        tracing::info!(
            node = settings.node_name,
            saved = saved.is_some(),
            "cluster mode: watching this node's Node and the NodeENIs"
        );
        Ok(Self {
            node: client.watch_node(stop.child_token()),
            nodeenis: client.watch_nodeenis(stop.child_token()),
            client,
            state_dir: state_dir.to_path_buf(),
            saved,
            compositions: VecDeque::new(),
            identity: None,
            events: Arc::new(EventLimiter::new(EVENT_REPEAT, EVENT_WINDOW, EVENT_BURST)),
            publications: watch::channel(None).0,
            stop,
        })
    }

    /// The identity to resolve: the file's values first, then the Node's providerID and
    /// instance-type label, then the saved view's; IMDS fills what is still missing.
    pub(super) async fn identity_hints(&mut self, configured: &Configured) -> Configured {
        let mut out = configured.clone();
        out.name.get_or_insert_with(|| self.client.node_name().to_string());
        if out.instance_id.is_some() && out.availability_zone.is_some() && out.instance_type.is_some() {
            return out;
        }
        let wait = if self.saved.is_some() { NODE_WAIT_WITH_SAVED } else { NODE_WAIT };
        let node = tokio::time::timeout(wait, self.node.view.wait_for(Option::is_some))
            .await
            .ok()
            .and_then(|r| r.ok().and_then(|v| v.clone()));
        if node.is_none() {
            tracing::warn!(waited = ?wait, "the Node could not be read yet; the identity comes from the saved view or IMDS");
        }
        let saved = self.saved.as_ref();
        if out.instance_id.is_none() {
            out.instance_id = node
                .as_ref()
                .and_then(|n| n.instance_id.clone())
                .or_else(|| saved.and_then(|s| s.instance_id.clone()))
                .and_then(|i| i.parse().ok());
        }
        if out.availability_zone.is_none() {
            out.availability_zone = node
                .as_ref()
                .and_then(|n| n.availability_zone.clone())
                .or_else(|| saved.and_then(|s| s.availability_zone.clone()));
        }
        if out.instance_type.is_none() {
            out.instance_type = node
                .as_ref()
                .and_then(|n| n.instance_type.clone())
                .or_else(|| saved.and_then(|s| s.instance_type.clone()));
        }
        out
    }

    pub(super) fn set_identity(&mut self, identity: NodeIdentity, store: NodeStore) {
        let spec = NodeENIStateSpec {
            node_name: self.client.node_name().to_string(),
            instance_id: identity.instance_id.to_string(),
            availability_zone: identity.availability_zone.clone(),
        };
        self.identity = Some(identity);
        spawn_publisher(
            self.client.clone(),
            store,
            self.node.view.clone(),
            spec,
            self.publications.subscribe(),
            self.stop.child_token(),
        );
    }

    /// Whether there is something to act on: a saved view, or the Node read and the NodeENIs
    /// listed (or their resource not served at all: the file's pools run, and the ENIs of any
    /// other pool stay, see `compose`).
    pub(super) fn ready(&self) -> bool {
        self.waiting_for().is_none()
    }

    /// What the pool still waits for before it can run, for the log; None when ready.
    pub(super) fn waiting_for(&self) -> Option<String> {
        if self.saved.is_some() {
            return None;
        }
        let mut missing = Vec::new();
        if self.node.view.borrow().is_none() {
            let health = self.node.health.borrow();
            missing.push(match (&health.last_error, health.not_found) {
                (_, true) => format!("the Node {:?} (the API has no Node of this name)", self.client.node_name()),
                (Some(e), _) => format!("the Node {:?} (last error: {e})", self.client.node_name()),
                (None, _) => format!("the Node {:?}", self.client.node_name()),
            });
        }
        if self.nodeenis.view.borrow().is_none() && !self.nodeenis.health.borrow().not_found {
            missing.push(match &self.nodeenis.health.borrow().last_error {
                Some(e) => format!("the NodeENI list (last error: {e})"),
                None => "the NodeENI list".to_string(),
            });
        }
        (!missing.is_empty()).then(|| missing.join("; "))
    }

    /// Waits until a view changes, or whether the NodeENI resource is served (pending forever once
    /// the watches ended).
    pub(super) async fn changed(&mut self) {
        let not_found = self.nodeenis.health.borrow().not_found;
        let nodeeni_resource = async {
            loop {
                if self.nodeenis.health.changed().await.is_err() {
                    return std::future::pending::<()>().await;
                }
                if self.nodeenis.health.borrow().not_found != not_found {
                    return;
                }
            }
        };
        tokio::select! {
            Ok(()) = self.node.view.changed() => {}
            Ok(()) = self.nodeenis.view.changed() => {}
            () = nodeeni_resource => {}
            else => std::future::pending().await,
        }
    }

    fn in_force(&self) -> Option<&Arc<Composition>> {
        self.compositions.back()
    }

    /// The configuration to run now, from `file` and the views (the saved view standing in for a
    /// view not listed yet). Refusals are logged, and posted as Events on their NodeENI.
    pub(super) fn compose(&mut self, file: &PoolConfig) -> PoolConfig {
        let node = self.node.view.borrow().clone();
        let listed = self.nodeenis.view.borrow().clone();
        let listed_yet = listed.is_some();
        let saved = self.saved.as_ref();
        let labels = match (&node, saved) {
            (Some(n), _) => n.labels.clone(),
            (None, Some(s)) => s.labels.clone(),
            (None, None) => file.node.labels.clone(),
        };
        let declared = listed.unwrap_or_else(|| saved.map(|s| s.in_force.clone()).unwrap_or_default());
        // The versions in force: the last composition's, or at a start the saved view's, so an edit
        // refused before a restart is refused again instead of replacing the version in force.
        let previous = match (self.in_force(), saved) {
            (Some(c), _) => c.in_force.clone(),
            (None, Some(s)) => s.versions_in_force(),
            (None, None) => Default::default(),
        };
        let mut composition = compose(file, &labels, &declared, &previous);
        // Until the NodeENIs are listed, neither a saved view (it may predate the last NodeENIs
        // created) nor a 404 (an API server starting answers it too) proves a pool is gone: the
        // ENIs of pools missing here stay until a list says.
        composition.config.keep_undeclared = !listed_yet;
        let before: Vec<(String, i64)> = self
            .in_force()
            .map(|c| c.refused.iter().map(|r| (r.nodeeni.clone(), r.generation)).collect())
            .unwrap_or_default();
        for r in &composition.refused {
            if before.contains(&(r.nodeeni.clone(), r.generation)) {
                continue;
            }
            tracing::error!(nodeeni = r.nodeeni, generation = r.generation, kept = ?r.kept_generation, problems = %r.problems, "NodeENI refused");
            if r.selects_node
                && let Some(d) = declared.iter().find(|d| d.name == r.nodeeni)
            {
                let kept = r.kept_generation.map(|g| format!(" (generation {g} stays in force)")).unwrap_or_default();
                self.event(
                    EventSubject::nodeeni(d),
                    true,
                    "NodeENIRefused",
                    format!("generation {}{kept}: {}", r.generation, r.problems),
                );
            }
        }
        let config = composition.config.clone();
        if self.in_force().is_none_or(|c| **c != composition) {
            self.compositions.push_back(Arc::new(composition));
        }
        if self.compositions.len() > COMPOSITIONS_KEPT {
            self.compositions.pop_front();
        }
        config
    }

    /// After a pass: the status publisher is told, Events go out for refusals and repairs, and a
    /// good pass under the composition in force saves it as what the node converged to.
    pub(super) fn pass_done(&mut self, news: PassNews) {
        // The composition the pass ran: a pass started before the latest reload or watch event
        // reports on the configuration it had, not on the newest.
        let Some(composition) = self.compositions.iter().rev().find(|c| c.config == *news.config).cloned() else {
            tracing::debug!("a pass under a configuration no longer kept; the next pass reports");
            return;
        };
        let node = self.node.view.borrow().clone();
        let node_subject =
            EventSubject::node(self.client.node_name(), node.as_ref().map(|n| n.uid.as_str()).unwrap_or(""));
        if let PassOutcome::Done { refused } = &news.outcome {
            for r in refused {
                let pool = r.split_once(':').map(|(p, _)| p.trim()).unwrap_or(r);
                let subject =
                    composition.in_force.get(pool).map(EventSubject::nodeeni).unwrap_or_else(|| node_subject.clone());
                self.event(subject, true, degraded_reason(r), format!("on node {}: {r}", self.client.node_name()));
            }
        }
        for repair in &news.repaired {
            self.event(node_subject.clone(), false, "Repaired", repair.clone());
        }
        let _ = self
            .publications
            .send(Some(Publication { composition: composition.clone(), outcome: news.outcome.clone() }));

        // Saved only when the pass ran the composition in force (an older one is history).
        let in_force = self.in_force().is_some_and(|c| Arc::ptr_eq(c, &composition));
        if !matches!(news.outcome, PassOutcome::Done { .. }) || !in_force {
            return;
        }
        let identity = self.identity.as_ref();
        let view = SavedView {
            labels: composition.config.node.labels.clone(),
            in_force: composition.in_force.values().cloned().collect(),
            instance_id: identity.map(|i| i.instance_id.to_string()),
            availability_zone: identity.map(|i| i.availability_zone.clone()),
            instance_type: identity.map(|i| i.instance_type.clone()),
        };
        if self.saved.as_ref() == Some(&view) {
            return;
        }
        match saved::save(&self.state_dir, &view) {
            Ok(()) => {
                tracing::info!(
                    nodeenis = view.in_force.len(),
                    "cluster view saved: a start without the API acts on it"
                );
                self.saved = Some(view);
            }
            Err(e) => tracing::error!(error = %e, "cannot save the cluster view"),
        }
    }

    /// Posts an Event in the background, if the limiter lets it.
    fn event(&self, about: EventSubject, warning: bool, reason: &str, message: String) {
        if !self.events.allow(&about, reason, &message, Instant::now()) {
            tracing::debug!(reason, message, "event not posted (rate limit)");
            return;
        }
        let (client, reason) = (self.client.clone(), reason.to_string());
        tokio::spawn(async move {
            if let Err(e) = client.post_event(&about, warning, &reason, &message).await {
                tracing::warn!(error = %e, reason, "cannot post an Event");
            }
        });
    }
}

/// Applies this node's NodeENIState after each pass when it changed (and every STATUS_RESYNC), once
/// the Node is known (its UID is the owner reference). Runs apart from the main loop: a slow API
/// delays only this.
fn spawn_publisher(
    client: ClusterClient,
    store: NodeStore,
    mut node: watch::Receiver<Option<NodeView>>,
    spec: NodeENIStateSpec,
    mut publications: watch::Receiver<Option<Publication>>,
    stop: CancellationToken,
) {
    tokio::spawn(async move {
        let mut applied: Option<(NodeENIStateStatus, Instant)> = None;
        let mut next_try = tokio::time::Instant::now() + STATUS_RESYNC;
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                Ok(()) = publications.changed() => {}
                Ok(()) = node.changed() => {}
                _ = tokio::time::sleep_until(next_try) => {}
            }
            next_try = tokio::time::Instant::now() + STATUS_RESYNC;
            let Some(publication) = publications.borrow_and_update().clone() else { continue };
            let Some(uid) = node.borrow_and_update().as_ref().map(|n| n.uid.clone()) else { continue };
            let read = store.clone();
            let state = match tokio::task::spawn_blocking(move || read.load(STATE_READ_WAIT)).await {
                Ok(Ok(state)) => state,
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, "cannot read the node state for the NodeENIState");
                    next_try = tokio::time::Instant::now() + STATUS_RETRY;
                    continue;
                }
                Err(_) => continue,
            };
            let now = rfc3339_now();
            let previous = applied.as_ref().map(|(s, _)| s);
            let status = status_of(&state, &publication.composition, &publication.outcome, previous, &now);
            if applied.as_ref().is_some_and(|(s, at)| *s == status && at.elapsed() < STATUS_RESYNC) {
                continue;
            }
            match client.apply_state(&uid, &spec, &status).await {
                Ok(()) => {
                    tracing::debug!(enis = status.eni_count, "NodeENIState applied");
                    applied = Some((status, Instant::now()));
                }
                Err(e) => {
                    tracing::warn!(error = %e, "cannot apply the NodeENIState; trying again");
                    next_try = tokio::time::Instant::now() + STATUS_RETRY;
                }
            }
        }
    });
}

/// Now in RFC 3339 with seconds, as Kubernetes writes times.
fn rfc3339_now() -> String {
    nodeeni_cluster::api::now().strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}
