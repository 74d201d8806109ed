//! The daemon's metrics: one owned prometheus-client [`Registry`], rendered in the Prometheus text
//! format (version 0.0.4) by the crate's encoder, which also escapes label values.
//!
//! Counters and gauges the daemon bumps are families registered once in [`Metrics::new`]. Figures
//! that have one home elsewhere are [`Collector`]s that read it at scrape time, so nothing is copied
//! and nothing drifts:
//! - [`PoolSnapshot`]: ENIs per pool and state, and how many pods hold, from a snapshot of the node
//!   state that the pool loop refreshes after each turn (a scrape never takes the node-state lock,
//!   which the CNI needs exclusively);
//! - [`Ec2Collector`]: EC2 attempts, their latency and the circuit breaker, from the EC2 client's
//!   resilience layer.
//!
//! Names are the README's Metrics table (a test reads the table): counters are registered without
//! their `_total`, which the encoder adds.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use nodeeni_conf::PoolConfig;
use nodeeni_ipam::ec2::AwsEc2;
use nodeeni_ipam::resilience::{BreakerState, LATENCY_BUCKETS, RequestBucket, Resilient};
use nodeeni_state::node::{Lifecycle, NodeState};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::registry::Registry;

/// What `/metrics` answers with: the content type of [`Metrics::render`]'s text.
pub const CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ResultLabel {
    result: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct KindLabel {
    kind: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ResourceLabel {
    resource: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct DeviceLabels {
    resource: String,
    health: &'static str,
}

/// The registry and the families the daemon bumps.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    reconciles: Family<ResultLabel, Counter>,
    reconcile_errors: Family<KindLabel, Counter>,
    paused_turns: Counter,
    last_reconcile_seconds: Gauge<f64, std::sync::atomic::AtomicU64>,
    leaks_deleted: Counter,
    allocations: Family<ResourceLabel, Counter>,
    allocation_errors: Family<ResourceLabel, Counter>,
    registrations: Family<ResourceLabel, Counter>,
    registered: Family<ResourceLabel, Gauge>,
    config_reloads: Family<ResultLabel, Counter>,
    devices: Family<DeviceLabels, Gauge>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// The daemon's families, registered once; add the collectors with [`Self::collect`].
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let reconciles = Family::<ResultLabel, Counter>::default();
        registry.register("nodeeni_reconcile", "Reconcile passes by result", reconciles.clone());
        let reconcile_errors = Family::<KindLabel, Counter>::default();
        registry.register(
            "nodeeni_reconcile_errors",
            "Failed reconcile passes by kind (ec2, state, refused, no_instance, host)",
            reconcile_errors.clone(),
        );
        let paused_turns = Counter::default();
        registry.register(
            "nodeeni_reconcile_paused",
            "Turns of the pool loop without a pass because the node is drained",
            paused_turns.clone(),
        );
        let last_reconcile_seconds = Gauge::<f64, std::sync::atomic::AtomicU64>::default();
        registry.register(
            "nodeeni_reconcile_last_duration_seconds",
            "How long the last reconcile pass took",
            last_reconcile_seconds.clone(),
        );
        let leaks_deleted = Counter::default();
        registry.register(
            "nodeeni_leaked_enis_deleted",
            "ENIs of dead nodes of this cluster deleted by leak collection",
            leaks_deleted.clone(),
        );
        let allocations = Family::<ResourceLabel, Counter>::default();
        registry.register(
            "nodeeni_allocations",
            "Devices handed to containers by Allocate, per resource",
            allocations.clone(),
        );
        let allocation_errors = Family::<ResourceLabel, Counter>::default();
        registry.register(
            "nodeeni_allocation_errors",
            "Allocate requests refused (unknown or unhealthy device, missing vfio node), per resource",
            allocation_errors.clone(),
        );
        let registrations = Family::<ResourceLabel, Counter>::default();
        registry.register(
            "nodeeni_kubelet_registrations",
            "Registrations with the kubelet, per resource (more than one: the kubelet restarted)",
            registrations.clone(),
        );
        let registered = Family::<ResourceLabel, Gauge>::default();
        registry.register(
            "nodeeni_kubelet_registered",
            "1 while the kubelet holds the resource's registration, 0 before it and after a kubelet restart until registered again",
            registered.clone(),
        );
        let config_reloads = Family::<ResultLabel, Counter>::default();
        registry.register(
            "nodeeni_config_reloads",
            "Configuration reloads by result (ok; invalid: the old configuration was kept)",
            config_reloads.clone(),
        );
        let devices = Family::<DeviceLabels, Gauge>::default();
        registry.register(
            "nodeeni_devices",
            "Devices advertised to the kubelet, per resource and health",
            devices.clone(),
        );

        // Both results are shown from the start, so a rate over them is defined before the first.
        for result in ["ok", "error"] {
            reconciles.get_or_create(&ResultLabel { result }).inc_by(0);
        }
        for result in ["ok", "invalid"] {
            config_reloads.get_or_create(&ResultLabel { result }).inc_by(0);
        }
        Self {
            registry,
            reconciles,
            reconcile_errors,
            paused_turns,
            last_reconcile_seconds,
            leaks_deleted,
            allocations,
            allocation_errors,
            registrations,
            registered,
            config_reloads,
            devices,
        }
    }

    /// Adds a collector, asked for its samples at each render.
    pub fn collect(&mut self, collector: impl Collector) {
        self.registry.register_collector(Box::new(collector));
    }

    pub fn reconciled(&self, ok: bool, error_kind: Option<&str>, took: Duration) {
        self.reconciles.get_or_create(&ResultLabel { result: if ok { "ok" } else { "error" } }).inc();
        if let Some(kind) = error_kind {
            self.reconcile_errors.get_or_create(&KindLabel { kind: kind.to_string() }).inc();
        }
        self.last_reconcile_seconds.set(took.as_secs_f64());
    }

    /// The pool loop turned without a pass: the node is drained.
    pub fn paused_turn(&self) {
        self.paused_turns.inc();
    }

    pub fn leaks_deleted(&self, n: usize) {
        self.leaks_deleted.inc_by(n as u64);
    }

    pub fn allocated(&self, resource: &str, devices: usize) {
        self.allocations.get_or_create(&ResourceLabel { resource: resource.to_string() }).inc_by(devices as u64);
    }

    pub fn allocation_failed(&self, resource: &str) {
        self.allocation_errors.get_or_create(&ResourceLabel { resource: resource.to_string() }).inc();
    }

    /// The kubelet holds the resource's registration (`true`: one more registration) or lost it.
    pub fn registration(&self, resource: &str, registered: bool) {
        let label = ResourceLabel { resource: resource.to_string() };
        if registered {
            self.registrations.get_or_create(&label).inc();
        }
        self.registered.get_or_create(&label).set(i64::from(registered));
    }

    pub fn config_reload(&self, ok: bool) {
        self.config_reloads.get_or_create(&ResultLabel { result: if ok { "ok" } else { "invalid" } }).inc();
    }

    pub fn devices(&self, resource: &str, healthy: usize, unhealthy: usize) {
        for (health, n) in [("healthy", healthy), ("unhealthy", unhealthy)] {
            let labels = DeviceLabels { resource: resource.to_string(), health };
            self.devices.get_or_create(&labels).set(i64::try_from(n).unwrap_or(i64::MAX));
        }
    }

    /// The resource is no longer advertised: its device gauges go.
    pub fn forget_resource(&self, resource: &str) {
        for health in ["healthy", "unhealthy"] {
            self.devices.remove(&DeviceLabels { resource: resource.to_string(), health });
        }
        // No longer advertised: nothing to be registered (an alert must not wait for it).
        self.registered.remove(&ResourceLabel { resource: resource.to_string() });
    }

    /// The whole exposition (families and collectors), in the Prometheus text format 0.0.4.
    pub fn render(&self) -> String {
        let mut out = String::new();
        if let Err(e) = prometheus_client::encoding::prometheus_text::encode(&mut out, &self.registry) {
            // Writing to a String fails only when a collector reports an error.
            tracing::error!(error = %e, "cannot render the metrics");
        }
        out
    }
}

/// ENIs per pool as of the last refresh: by lifecycle state, and held by pods.
#[derive(Debug, Default, Clone, PartialEq)]
struct PoolCounts {
    by_state: BTreeMap<(String, &'static str), u64>,
    held: BTreeMap<String, u64>,
    /// Attachment records set aside as unreadable (`<name>.json.corrupt-<time>`).
    quarantined: u64,
}

/// The pool gauges' one home: a snapshot of the node state, refreshed by whoever has just read it
/// (the pool loop after each turn), read by each scrape without touching the node-state file or lock.
/// Before the first refresh the pool gauges are absent.
#[derive(Debug, Default)]
pub struct PoolSnapshot {
    counts: RwLock<Option<PoolCounts>>,
    /// What the configuration in force declares on this node: pool → (resource, mode, ENIs). The
    /// alerts compare it with the ready ENIs.
    declared: RwLock<BTreeMap<String, (String, &'static str, u64)>>,
}

impl PoolSnapshot {
    /// Counts `state`'s ENIs, and the attachment records quarantined beside it; the next scrape
    /// shows them.
    pub fn refresh(&self, state: &NodeState, quarantined_records: usize) {
        let mut counts = PoolCounts { quarantined: quarantined_records as u64, ..PoolCounts::default() };
        for e in &state.enis {
            *counts.by_state.entry((e.pool.clone(), Lifecycle::as_str(e.lifecycle))).or_default() += 1;
            *counts.held.entry(e.pool.clone()).or_default() += u64::from(e.allocation.is_some());
        }
        *self.counts.write().unwrap_or_else(std::sync::PoisonError::into_inner) = Some(counts);
    }

    /// The pools `config` runs on this node (its labels select them) and the ENIs each declares; a
    /// drained node declares none (`declare_none`).
    pub fn declare(&self, config: &PoolConfig) {
        let declared = config
            .pools_for(&config.node.labels)
            .map(|p| {
                let resource = p.resource_name.as_ref().map(ToString::to_string).unwrap_or_default();
                (p.name.clone(), (resource, p.mode.as_str(), u64::from(p.eni_count())))
            })
            .collect();
        *self.declared.write().unwrap_or_else(std::sync::PoisonError::into_inner) = declared;
    }

    pub fn declare_none(&self) {
        self.declared.write().unwrap_or_else(std::sync::PoisonError::into_inner).clear();
    }
}

fn gauge(n: u64) -> ConstGauge {
    ConstGauge::new(i64::try_from(n).unwrap_or(i64::MAX))
}

impl Collector for PoolSnapshot {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let declared = self.declared.read().unwrap_or_else(std::sync::PoisonError::into_inner).clone();
        if !declared.is_empty() {
            let mut family = encoder.encode_descriptor(
                "nodeeni_pool_enis_declared",
                "ENIs each pool on this node declares in the configuration in force (its resource and mode as labels).",
                None,
                MetricType::Gauge,
            )?;
            for (pool, (resource, mode, n)) in &declared {
                let labels = [("pool", pool.as_str()), ("resource", resource.as_str()), ("mode", *mode)];
                gauge(*n).encode(family.encode_family(&labels)?)?;
            }
        }
        let Some(counts) = self.counts.read().unwrap_or_else(std::sync::PoisonError::into_inner).clone() else {
            return Ok(());
        };
        let mut family = encoder.encode_descriptor(
            "nodeeni_pool_enis",
            "ENIs of each pool on this node, by lifecycle state (as of the pool loop's last turn).",
            None,
            MetricType::Gauge,
        )?;
        for ((pool, state), n) in &counts.by_state {
            gauge(*n).encode(family.encode_family(&[("pool", pool.as_str()), ("state", *state)])?)?;
        }
        let mut family = encoder.encode_descriptor(
            "nodeeni_pool_enis_held",
            "ENIs of each pool held by pods (as of the pool loop's last turn).",
            None,
            MetricType::Gauge,
        )?;
        for (pool, n) in &counts.held {
            gauge(*n).encode(family.encode_family(&[("pool", pool.as_str())])?)?;
        }
        let family = encoder.encode_descriptor(
            "nodeeni_attachment_records_quarantined",
            "CNI attachment records set aside as unreadable (as of the pool loop's last turn).",
            None,
            MetricType::Gauge,
        )?;
        gauge(counts.quarantined).encode(family)?;
        Ok(())
    }
}

/// Whatever carries the EC2 client's resilience layer: the AWS client, or the layer alone.
pub trait HasResilience: std::fmt::Debug + Send + Sync + 'static {
    fn resilience(&self) -> &Resilient;
}

impl HasResilience for Resilient {
    fn resilience(&self) -> &Resilient {
        self
    }
}

impl HasResilience for AwsEc2 {
    fn resilience(&self) -> &Resilient {
        &self.resilience
    }
}

/// EC2 attempts, their latency and the circuit breaker, read from the resilience layer at each render.
#[derive(Debug)]
pub struct Ec2Collector(pub Arc<dyn HasResilience>);

impl Collector for Ec2Collector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let layer = self.0.resilience();

        let calls = layer.stats.snapshot();
        if !calls.is_empty() {
            let mut family = encoder.encode_descriptor(
                "nodeeni_ec2_calls",
                "EC2 call attempts by operation and outcome (ok, throttled, transient, not_found, fatal, breaker_open).",
                None,
                MetricType::Counter,
            )?;
            for ((operation, outcome), n) in calls {
                ConstCounter::new(n)
                    .encode(family.encode_family(&[("operation", operation), ("outcome", outcome)])?)?;
            }
        }

        let latency = layer.stats.latency();
        if !latency.is_empty() {
            let mut family = encoder.encode_descriptor(
                "nodeeni_ec2_call_duration_seconds",
                "Latency of each EC2 call attempt, by operation.",
                None,
                MetricType::Histogram,
            )?;
            for (operation, l) in latency {
                // Per-bucket counts; the encoder makes them cumulative and adds +Inf (the count).
                let buckets: Vec<(f64, u64)> = LATENCY_BUCKETS.iter().copied().zip(l.buckets).collect();
                family.encode_family(&[("operation", operation)])?.encode_histogram::<NoLabelSet>(
                    l.sum_seconds,
                    l.count,
                    &buckets,
                    None,
                )?;
            }
        }

        // The client's own pace: below the configured rate while EC2 throttles the account, so a
        // crowded account shows here before it shows as failed passes.
        let mut family = encoder.encode_descriptor(
            "nodeeni_ec2_pace_per_second",
            "The EC2 client's current call rate per request bucket (cut when EC2 throttles, grown back after).",
            None,
            MetricType::Gauge,
        )?;
        for bucket in RequestBucket::ALL {
            ConstGauge::new(layer.limiter.rate(bucket))
                .encode(family.encode_family(&[("bucket", bucket.as_str())])?)?;
        }

        let state = layer.breaker.state();
        let mut family = encoder.encode_descriptor(
            "nodeeni_ec2_circuit_breaker_state",
            "1 for the EC2 circuit breaker's current state (closed, open, half_open), 0 for the others.",
            None,
            MetricType::Gauge,
        )?;
        for (s, name) in
            [(BreakerState::Closed, "closed"), (BreakerState::Open, "open"), (BreakerState::HalfOpen, "half_open")]
        {
            ConstGauge::new(i64::from(s == state)).encode(family.encode_family(&[("state", name)])?)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};

    use nodeeni_conf::Mode;
    use nodeeni_conf::pool::{CircuitBreakerSettings, RateLimitSettings, RetrySettings};
    use nodeeni_ipam::resilience::{Classify, ErrorClass};
    use nodeeni_state::node::EniRecord;

    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("fake EC2 error")]
    struct Fake(ErrorClass);

    impl Classify for Fake {
        fn class(&self) -> ErrorClass {
            self.0
        }
    }

    fn layer() -> Arc<Resilient> {
        Arc::new(Resilient::new(
            RetrySettings { max_attempts: 1, base_delay_ms: 1, max_delay_ms: 1 },
            CircuitBreakerSettings::default(),
            &RateLimitSettings::default(),
        ))
    }

    /// One call of `op` through the layer, answered with `outcome`.
    async fn call(layer: &Resilient, op: &'static str, outcome: Result<(), ErrorClass>) {
        let _ = layer.call(op, false, || async { outcome.map_err(Fake) }).await;
    }

    fn eni(pool: &str, lifecycle: Lifecycle, held: bool) -> EniRecord {
        let mut e = EniRecord::new(pool, Mode::Kernel, lifecycle);
        if held {
            let held = serde_json::json!({"containerId": "0123456789abcdef", "ifname": "net1", "sinceUnix": 0});
            e.allocation = Some(serde_json::from_value(held).expect("allocation"));
        }
        e
    }

    /// A daemon's metrics with every family populated: counters bumped, a node state counted, EC2
    /// calls made.
    async fn everything() -> (Metrics, String) {
        let mut m = Metrics::new();
        let snapshot = Arc::new(PoolSnapshot::default());
        m.collect(snapshot.clone());
        let ec2 = layer();
        m.collect(Ec2Collector(ec2.clone()));

        m.reconciled(true, None, Duration::from_millis(250));
        m.reconciled(false, Some("ec2"), Duration::from_millis(1500));
        m.paused_turn();
        m.leaks_deleted(2);
        m.allocated("nodeeni.io/fast", 2);
        m.allocated("nodeeni.io/fast", 1);
        m.allocation_failed("nodeeni.io/fast");
        m.registration("nodeeni.io/fast", true);
        // Registered, then lost (a kubelet restart) and not yet back.
        m.registration("nodeeni.io/dpdk", true);
        m.registration("nodeeni.io/dpdk", false);
        m.registration("nodeeni.io/gone", true);
        m.forget_resource("nodeeni.io/gone");
        m.config_reload(false);
        m.devices("nodeeni.io/fast", 2, 1);
        let state = NodeState {
            enis: vec![
                eni("fast", Lifecycle::Ready, true),
                eni("fast", Lifecycle::Ready, false),
                eni("fast", Lifecycle::Detaching, false),
                eni("dp", Lifecycle::Creating, false),
            ],
            ..NodeState::default()
        };
        snapshot.refresh(&state, 2);
        let config = PoolConfig::from_text(
            "clusterName: c\npools:\n  - {name: fast, mode: kernel, resourceName: nodeeni.io/fast, subnetIds: [subnet-12345678, subnet-87654321], enisPerSubnet: 2}\n  - {name: m, mode: host, subnetIds: [subnet-12345678], firstDeviceIndex: 5}\n  - {name: other, mode: kernel, resourceName: nodeeni.io/other, subnetIds: [subnet-12345678], firstDeviceIndex: 6, nodeSelector: {role: other}}\n",
            &nodeeni_conf::load::LoadOptions::default(),
        )
        .expect("config");
        snapshot.declare(&config);
        call(&ec2, "CreateNetworkInterface", Ok(())).await;
        call(&ec2, "CreateNetworkInterface", Ok(())).await;
        call(&ec2, "DeleteNetworkInterface", Err(ErrorClass::NotFound)).await;
        let text = m.render();
        (m, text)
    }

    #[tokio::test]
    async fn every_family_renders_with_its_labels() {
        let (_, text) = everything().await;
        for line in [
            "nodeeni_pool_enis{pool=\"fast\",state=\"ready\"} 2\n",
            "nodeeni_pool_enis{pool=\"fast\",state=\"detaching\"} 1\n",
            "nodeeni_pool_enis{pool=\"dp\",state=\"creating\"} 1\n",
            "nodeeni_pool_enis_held{pool=\"fast\"} 1\n",
            "nodeeni_pool_enis_held{pool=\"dp\"} 0\n",
            "nodeeni_attachment_records_quarantined 2\n",
            "nodeeni_pool_enis_declared{pool=\"fast\",resource=\"nodeeni.io/fast\",mode=\"kernel\"} 4\n",
            "nodeeni_pool_enis_declared{pool=\"m\",resource=\"\",mode=\"host\"} 1\n",
            "nodeeni_ec2_calls_total{operation=\"CreateNetworkInterface\",outcome=\"ok\"} 2\n",
            "nodeeni_ec2_calls_total{operation=\"DeleteNetworkInterface\",outcome=\"not_found\"} 1\n",
            "nodeeni_ec2_call_duration_seconds_bucket{operation=\"CreateNetworkInterface\",le=\"0.005\"} 2\n",
            "nodeeni_ec2_call_duration_seconds_bucket{operation=\"CreateNetworkInterface\",le=\"10\"} 2\n",
            "nodeeni_ec2_call_duration_seconds_bucket{operation=\"CreateNetworkInterface\",le=\"+Inf\"} 2\n",
            "nodeeni_ec2_call_duration_seconds_count{operation=\"CreateNetworkInterface\"} 2\n",
            // Nothing throttled: every bucket at its configured pace (mutations 5/s, describes 10/s).
            "nodeeni_ec2_pace_per_second{bucket=\"create\"} 5.0\n",
            "nodeeni_ec2_pace_per_second{bucket=\"mutating\"} 5.0\n",
            "nodeeni_ec2_pace_per_second{bucket=\"describe\"} 10.0\n",
            "nodeeni_ec2_circuit_breaker_state{state=\"closed\"} 1\n",
            "nodeeni_ec2_circuit_breaker_state{state=\"open\"} 0\n",
            "nodeeni_ec2_circuit_breaker_state{state=\"half_open\"} 0\n",
            "nodeeni_reconcile_total{result=\"ok\"} 1\n",
            "nodeeni_reconcile_total{result=\"error\"} 1\n",
            "nodeeni_reconcile_errors_total{kind=\"ec2\"} 1\n",
            "nodeeni_reconcile_paused_total 1\n",
            "nodeeni_reconcile_last_duration_seconds 1.5\n",
            "nodeeni_leaked_enis_deleted_total 2\n",
            "nodeeni_allocations_total{resource=\"nodeeni.io/fast\"} 3\n",
            "nodeeni_allocation_errors_total{resource=\"nodeeni.io/fast\"} 1\n",
            "nodeeni_kubelet_registrations_total{resource=\"nodeeni.io/fast\"} 1\n",
            "nodeeni_kubelet_registrations_total{resource=\"nodeeni.io/dpdk\"} 1\n",
            "nodeeni_kubelet_registered{resource=\"nodeeni.io/fast\"} 1\n",
            "nodeeni_kubelet_registered{resource=\"nodeeni.io/dpdk\"} 0\n",
            "nodeeni_config_reloads_total{result=\"invalid\"} 1\n",
            "nodeeni_config_reloads_total{result=\"ok\"} 0\n",
            "nodeeni_devices{resource=\"nodeeni.io/fast\",health=\"healthy\"} 2\n",
            "nodeeni_devices{resource=\"nodeeni.io/fast\",health=\"unhealthy\"} 1\n",
        ] {
            assert!(text.contains(line), "missing {line:?} in\n{text}");
        }
        let buckets = text
            .lines()
            .filter(|l| l.starts_with("nodeeni_ec2_call_duration_seconds_bucket{operation=\"Create"))
            .count();
        assert_eq!(buckets, LATENCY_BUCKETS.len() + 1, "the resilience layer's buckets, and +Inf\n{text}");
        assert!(
            !text.contains("nodeeni_kubelet_registered{resource=\"nodeeni.io/gone\"}"),
            "a resource no longer advertised has nothing to be registered\n{text}"
        );
        assert!(!text.contains("pool=\"other\""), "a pool that does not select the node is not declared\n{text}");
    }

    #[test]
    fn a_drained_node_declares_nothing() {
        let snapshot = PoolSnapshot::default();
        let config = PoolConfig::from_text(
            "clusterName: c\npools:\n  - {name: m, mode: host, subnetIds: [subnet-12345678]}\n",
            &nodeeni_conf::load::LoadOptions::default(),
        )
        .expect("config");
        let mut m = Metrics::new();
        let snapshot = Arc::new(snapshot);
        m.collect(snapshot.clone());
        snapshot.declare(&config);
        assert!(m.render().contains("nodeeni_pool_enis_declared{pool=\"m\""));
        snapshot.declare_none();
        assert!(!m.render().contains("nodeeni_pool_enis_declared"));
    }

    /// The metric names in a PromQL text (`nodeeni_…` only; others, such as kube-state-metrics',
    /// are not ours to check).
    fn nodeeni_names_in(text: &str) -> BTreeSet<String> {
        let mut names = BTreeSet::new();
        let mut rest = text;
        while let Some(at) = rest.find("nodeeni_") {
            let before = rest[..at].chars().next_back();
            let tail = &rest[at..];
            let end = tail.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).unwrap_or(tail.len());
            // A name starts where no identifier character precedes it (not inside `x_nodeeni_y`).
            if !before.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_') {
                names.insert(tail[..end].to_string());
            }
            rest = &tail[end..];
        }
        names
    }

    /// The dashboard and the alerting rules query only what the daemon exports: every `nodeeni_…`
    /// name in their queries is a family the code registers (or a histogram's series of one).
    #[tokio::test]
    async fn the_dashboard_and_the_rules_query_only_exported_metrics() {
        let (_, text) = everything().await;
        let mut exported = BTreeSet::new();
        for line in text.lines().filter_map(|l| l.strip_prefix("# TYPE ")) {
            let (name, kind) = line.split_once(' ').expect("# TYPE name type");
            match kind {
                "histogram" => {
                    for suffix in ["_bucket", "_sum", "_count"] {
                        exported.insert(format!("{name}{suffix}"));
                    }
                    true
                }
                _ => exported.insert(name.to_string()),
            };
        }
        let monitoring = concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy/monitoring");
        let dashboard: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(format!("{monitoring}/dashboard.json")).expect("dashboard.json"),
        )
        .expect("the dashboard is JSON");
        let mut queries = Vec::new();
        for panel in dashboard["panels"].as_array().expect("panels") {
            for target in panel["targets"].as_array().into_iter().flatten() {
                queries.push(target["expr"].as_str().expect("a target's expr").to_string());
            }
        }
        assert!(queries.len() >= 9, "a query per panel at least: {queries:?}");
        let rules: serde_json::Value = serde_yaml_ng::from_str(
            &std::fs::read_to_string(format!("{monitoring}/nodeeni.rules.yaml")).expect("rules"),
        )
        .expect("the rules are YAML");
        for group in rules["groups"].as_array().expect("groups") {
            for rule in group["rules"].as_array().expect("rules") {
                queries.push(rule["expr"].as_str().expect("a rule's expr").to_string());
            }
        }
        let mut used = BTreeSet::new();
        for q in &queries {
            let names = nodeeni_names_in(q);
            assert!(!names.is_empty() || q.contains("kube_"), "{q}: queries no metric we know");
            used.extend(names);
        }
        let unknown: Vec<&String> = used.iter().filter(|n| !exported.contains(*n)).collect();
        assert!(unknown.is_empty(), "queried but not exported: {unknown:?}\nexported: {exported:?}");
        assert!(used.len() >= 10, "the dashboard and rules cover the families: {used:?}");
    }

    #[test]
    fn names_are_found_in_promql() {
        let names = nodeeni_names_in(
            "sum by (pool) (rate(nodeeni_ec2_calls_total{outcome!=\"ok\"}[5m])) / x_nodeeni_no + nodeeni_up",
        );
        assert_eq!(names, BTreeSet::from(["nodeeni_ec2_calls_total".to_string(), "nodeeni_up".to_string()]));
    }

    #[tokio::test]
    async fn before_any_figure_the_counters_that_are_always_shown_are_zero() {
        let m = Metrics::new();
        let text = m.render();
        assert!(text.contains("nodeeni_reconcile_total{result=\"ok\"} 0\n"), "{text}");
        assert!(text.contains("nodeeni_config_reloads_total{result=\"invalid\"} 0\n"), "{text}");
        assert!(!text.contains("nodeeni_pool_enis"), "no pool gauges without a snapshot: {text}");
        m.devices("nodeeni.io/fast", 1, 0);
        m.forget_resource("nodeeni.io/fast");
        assert!(!m.render().contains("nodeeni.io/fast"), "a forgotten resource's gauges go");
    }

    #[tokio::test]
    async fn label_values_are_escaped_by_the_encoder() {
        let mut m = Metrics::new();
        let ec2 = layer();
        m.collect(Ec2Collector(ec2.clone()));
        let snapshot = Arc::new(PoolSnapshot::default());
        m.collect(snapshot.clone());
        let weird = "a\"b\\c\nd";
        m.allocated(weird, 1);
        let state = NodeState { enis: vec![eni(weird, Lifecycle::Ready, false)], ..NodeState::default() };
        snapshot.refresh(&state, 0);
        call(&ec2, "Describe\"Odd\\Op\n", Ok(())).await;
        let text = m.render();
        let escaped = r#"a\"b\\c\nd"#;
        for line in [
            format!("nodeeni_allocations_total{{resource=\"{escaped}\"}} 1\n"),
            format!("nodeeni_pool_enis{{pool=\"{escaped}\",state=\"ready\"}} 1\n"),
            "nodeeni_ec2_calls_total{operation=\"Describe\\\"Odd\\\\Op\\n\",outcome=\"ok\"} 1\n".to_string(),
        ] {
            assert!(text.contains(&line), "missing {line:?} in\n{text}");
        }
        assert!(!text.lines().any(|l| l == "d\"} 1"), "no raw newline splits a sample:\n{text}");
    }

    /// One sample line: its name and label names (`le` aside). Label values may hold escaped
    /// quotes, so they are walked, not split.
    fn sample(line: &str) -> (String, BTreeSet<String>) {
        let (series, _value) = line.rsplit_once(' ').expect("a sample has a value");
        let Some((name, rest)) = series.split_once('{') else { return (series.to_string(), BTreeSet::new()) };
        let mut labels = BTreeSet::new();
        let mut chars = rest.chars();
        loop {
            let key: String = chars.by_ref().take_while(|c| *c != '=').collect();
            if key.is_empty() {
                break;
            }
            assert_eq!(chars.next(), Some('"'), "{line}");
            while let Some(c) = chars.next() {
                match c {
                    '\\' => {
                        chars.next();
                    }
                    '"' => break,
                    _ => {}
                }
            }
            if key != "le" {
                labels.insert(key);
            }
            match chars.next() {
                Some(',') => continue,
                Some('}') => break,
                other => panic!("{line}: {other:?} after a label"),
            }
        }
        (name.to_string(), labels)
    }

    /// The README's Metrics table: name → (type, label names).
    fn readme_table() -> BTreeMap<String, (String, BTreeSet<String>)> {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md");
        let readme = std::fs::read_to_string(path).expect("README.md");
        let table = readme.split_once("### Metrics\n").expect("a Metrics section").1;
        let mut rows = BTreeMap::new();
        for line in table.lines().skip_while(|l| !l.starts_with('|')).take_while(|l| l.starts_with('|')) {
            let cells: Vec<&str> = line.trim_matches('|').split('|').map(str::trim).collect();
            let Some(name) = cells[0].strip_prefix('`').and_then(|n| n.strip_suffix('`')) else { continue };
            let labels = cells[2].split(',').map(str::trim).filter(|l| !l.is_empty()).map(String::from).collect();
            rows.insert(name.to_string(), (cells[1].to_string(), labels));
        }
        rows
    }

    /// The README's table and the code cannot drift: the exposition's families are exactly the
    /// table's, with the table's types and label names.
    #[tokio::test]
    async fn the_exposition_is_the_readme_table() {
        let (_, text) = everything().await;
        let table = readme_table();
        assert_eq!(table.len(), 19, "the table's rows: {table:?}");

        let mut types = BTreeMap::new();
        for line in text.lines().filter_map(|l| l.strip_prefix("# TYPE ")) {
            let (name, kind) = line.split_once(' ').expect("# TYPE name type");
            assert!(types.insert(name.to_string(), kind.to_string()).is_none(), "{name} typed twice");
        }
        let mut labels: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let (name, keys) = sample(line);
            let family = ["_bucket", "_sum", "_count"]
                .iter()
                .filter_map(|s| name.strip_suffix(s))
                .find(|base| types.get(*base).is_some_and(|t| t == "histogram"))
                .unwrap_or(&name)
                .to_string();
            assert!(types.contains_key(&family), "{line}: a sample of no typed family");
            let seen = labels.entry(family).or_insert_with(|| keys.clone());
            assert_eq!(*seen, keys, "{line}: every sample of a family has the same labels");
        }

        let exposed: BTreeSet<&String> = types.keys().collect();
        let documented: BTreeSet<&String> = table.keys().collect();
        assert_eq!(exposed, documented, "the families exposed and the README's Metrics table");
        for (name, (kind, keys)) in &table {
            assert_eq!(&types[name], kind, "{name}'s type");
            assert_eq!(&labels[name], keys, "{name}'s labels");
        }
    }
}
