//! The daemon's metrics, rendered in the Prometheus text format (version 0.0.4) on each scrape.
//!
//! Counters the daemon bumps live here; gauges that have one home elsewhere are read at scrape time
//! (pool ENIs from the node state, EC2 calls and the breaker from the client's resilience layer), so
//! nothing is copied and nothing drifts.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::time::Duration;

use nodeeni_ipam::resilience::{BreakerState, LATENCY_BUCKETS, Resilient};
use nodeeni_state::node::{Lifecycle, NodeStore};

/// Counters and small gauges the daemon keeps.
#[derive(Debug, Default)]
pub struct Metrics {
    inner: Mutex<Counters>,
}

#[derive(Debug, Default)]
struct Counters {
    reconciles: BTreeMap<&'static str, u64>,
    reconcile_errors: BTreeMap<String, u64>,
    last_reconcile_seconds: f64,
    leaks_deleted: u64,
    paused_turns: u64,
    allocations: BTreeMap<String, u64>,
    allocation_errors: BTreeMap<String, u64>,
    registrations: BTreeMap<String, u64>,
    config_reloads: BTreeMap<&'static str, u64>,
    /// resource → (healthy, unhealthy)
    devices: BTreeMap<String, (u64, u64)>,
}

impl Metrics {
    fn with<T>(&self, f: impl FnOnce(&mut Counters) -> T) -> T {
        f(&mut self.inner.lock().unwrap_or_else(|p| p.into_inner()))
    }

    pub fn reconciled(&self, ok: bool, error_kind: Option<&str>, took: Duration) {
        self.with(|c| {
            *c.reconciles.entry(if ok { "ok" } else { "error" }).or_default() += 1;
            if let Some(kind) = error_kind {
                *c.reconcile_errors.entry(kind.to_string()).or_default() += 1;
            }
            c.last_reconcile_seconds = took.as_secs_f64();
        });
    }

    /// The pool loop turned without a pass: the node is drained.
    pub fn paused_turn(&self) {
        self.with(|c| c.paused_turns += 1);
    }

    pub fn leaks_deleted(&self, n: usize) {
        self.with(|c| c.leaks_deleted += n as u64);
    }

    pub fn allocated(&self, resource: &str, devices: usize) {
        self.with(|c| *c.allocations.entry(resource.to_string()).or_default() += devices as u64);
    }

    pub fn allocation_failed(&self, resource: &str) {
        self.with(|c| *c.allocation_errors.entry(resource.to_string()).or_default() += 1);
    }

    pub fn registered(&self, resource: &str) {
        self.with(|c| *c.registrations.entry(resource.to_string()).or_default() += 1);
    }

    pub fn registrations(&self, resource: &str) -> u64 {
        self.with(|c| c.registrations.get(resource).copied().unwrap_or(0))
    }

    pub fn config_reload(&self, ok: bool) {
        self.with(|c| *c.config_reloads.entry(if ok { "ok" } else { "invalid" }).or_default() += 1);
    }

    pub fn devices(&self, resource: &str, healthy: usize, unhealthy: usize) {
        self.with(|c| {
            c.devices.insert(resource.to_string(), (healthy as u64, unhealthy as u64));
        });
    }

    pub fn forget_resource(&self, resource: &str) {
        self.with(|c| {
            c.devices.remove(resource);
        });
    }

    /// The whole exposition: ours, the pool's ENIs from `store`, EC2's from `ec2`.
    pub fn render(&self, store: Option<&NodeStore>, ec2: Option<&Resilient>) -> String {
        let mut out = String::new();

        if let Some(store) = store {
            let mut by_state: BTreeMap<(String, &'static str), u64> = BTreeMap::new();
            let mut allocated: BTreeMap<String, u64> = BTreeMap::new();
            if let Ok(state) = store.load(Duration::from_secs(2)) {
                for e in &state.enis {
                    *by_state.entry((e.pool.clone(), lifecycle_label(e.lifecycle))).or_default() += 1;
                    let held = allocated.entry(e.pool.clone()).or_default();
                    if e.allocation.is_some() {
                        *held += 1;
                    }
                }
            }
            family(
                &mut out,
                "nodeeni_pool_enis",
                "gauge",
                "ENIs of each pool on this node, by lifecycle state.",
                by_state
                    .into_iter()
                    .map(|((p, s), n)| (labels(&[("pool", &p), ("state", s)]), n.to_string()))
                    .collect(),
            );
            family(
                &mut out,
                "nodeeni_pool_enis_held",
                "gauge",
                "ENIs of each pool held by pods.",
                allocated.into_iter().map(|(p, n)| (labels(&[("pool", &p)]), n.to_string())).collect(),
            );
        }

        if let Some(ec2) = ec2 {
            family(
                &mut out,
                "nodeeni_ec2_calls_total",
                "counter",
                "EC2 call attempts by operation and outcome (ok, throttled, transient, not_found, fatal, breaker_open).",
                ec2.stats
                    .snapshot()
                    .into_iter()
                    .map(|((op, outcome), n)| (labels(&[("operation", op), ("outcome", outcome)]), n.to_string()))
                    .collect(),
            );
            // A histogram's samples are `_bucket` (cumulative, with `le`), `_sum` and `_count`.
            let name = "nodeeni_ec2_call_duration_seconds";
            let _ = writeln!(out, "# HELP {name} Latency of each EC2 call attempt, by operation.");
            let _ = writeln!(out, "# TYPE {name} histogram");
            for (op, l) in ec2.stats.latency() {
                let mut cumulative = 0;
                let bounds = LATENCY_BUCKETS.iter().map(f64::to_string).chain(["+Inf".to_string()]);
                for (count, bound) in l.buckets.iter().zip(bounds) {
                    cumulative += count;
                    let _ = writeln!(out, "{name}_bucket{} {cumulative}", labels(&[("operation", op), ("le", &bound)]));
                }
                let _ = writeln!(out, "{name}_sum{} {}", labels(&[("operation", op)]), l.sum_seconds);
                let _ = writeln!(out, "{name}_count{} {}", labels(&[("operation", op)]), l.count);
            }
            let state = ec2.breaker.state();
            family(
                &mut out,
                "nodeeni_ec2_circuit_breaker_state",
                "gauge",
                "1 for the EC2 circuit breaker's current state (closed, open, half_open), 0 for the others.",
                [(BreakerState::Closed, "closed"), (BreakerState::Open, "open"), (BreakerState::HalfOpen, "half_open")]
                    .into_iter()
                    .map(|(s, name)| (labels(&[("state", name)]), u8::from(s == state).to_string()))
                    .collect(),
            );
        }

        let c = self.with(|c| {
            (
                c.reconciles.clone(),
                c.reconcile_errors.clone(),
                c.last_reconcile_seconds,
                c.leaks_deleted,
                c.paused_turns,
                c.allocations.clone(),
                c.allocation_errors.clone(),
                c.registrations.clone(),
                c.config_reloads.clone(),
                c.devices.clone(),
            )
        });
        let (reconciles, errors, last, leaks, paused, allocations, allocation_errors, registrations, reloads, devices) =
            c;
        family(
            &mut out,
            "nodeeni_reconcile_total",
            "counter",
            "Reconcile passes by result.",
            ["ok", "error"]
                .into_iter()
                .map(|r| (labels(&[("result", r)]), reconciles.get(r).copied().unwrap_or(0).to_string()))
                .collect(),
        );
        family(
            &mut out,
            "nodeeni_reconcile_errors_total",
            "counter",
            "Failed reconcile passes by kind (ec2, state, refused, no_instance, host).",
            errors.into_iter().map(|(k, n)| (labels(&[("kind", &k)]), n.to_string())).collect(),
        );
        family(
            &mut out,
            "nodeeni_reconcile_paused_total",
            "counter",
            "Turns of the pool loop without a pass because the node is drained.",
            vec![(String::new(), paused.to_string())],
        );
        family(
            &mut out,
            "nodeeni_reconcile_last_duration_seconds",
            "gauge",
            "How long the last reconcile pass took.",
            vec![(String::new(), last.to_string())],
        );
        family(
            &mut out,
            "nodeeni_leaked_enis_deleted_total",
            "counter",
            "ENIs of dead nodes of this cluster deleted by leak collection.",
            vec![(String::new(), leaks.to_string())],
        );
        family(
            &mut out,
            "nodeeni_allocations_total",
            "counter",
            "Devices handed to containers by Allocate, per resource.",
            allocations.into_iter().map(|(r, n)| (labels(&[("resource", &r)]), n.to_string())).collect(),
        );
        family(
            &mut out,
            "nodeeni_allocation_errors_total",
            "counter",
            "Allocate requests refused (unknown or unhealthy device, missing vfio node), per resource.",
            allocation_errors.into_iter().map(|(r, n)| (labels(&[("resource", &r)]), n.to_string())).collect(),
        );
        family(
            &mut out,
            "nodeeni_kubelet_registrations_total",
            "counter",
            "Registrations with the kubelet, per resource (more than one: the kubelet restarted).",
            registrations.into_iter().map(|(r, n)| (labels(&[("resource", &r)]), n.to_string())).collect(),
        );
        family(
            &mut out,
            "nodeeni_config_reloads_total",
            "counter",
            "Configuration reloads by result (ok; invalid: the old configuration was kept).",
            ["ok", "invalid"]
                .into_iter()
                .map(|r| (labels(&[("result", r)]), reloads.get(r).copied().unwrap_or(0).to_string()))
                .collect(),
        );
        family(
            &mut out,
            "nodeeni_devices",
            "gauge",
            "Devices advertised to the kubelet, per resource and health.",
            devices
                .into_iter()
                .flat_map(|(r, (h, u))| {
                    [
                        (labels(&[("resource", &r), ("health", "healthy")]), h.to_string()),
                        (labels(&[("resource", &r), ("health", "unhealthy")]), u.to_string()),
                    ]
                })
                .collect(),
        );
        out
    }
}

/// One metric family: HELP, TYPE and its samples (`labels` already rendered, may be empty).
fn family(out: &mut String, name: &str, kind: &str, help: &str, samples: Vec<(String, String)>) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
    for (labels, value) in samples {
        let _ = writeln!(out, "{name}{labels} {value}");
    }
}

fn lifecycle_label(l: Lifecycle) -> &'static str {
    match l {
        Lifecycle::Creating => "creating",
        Lifecycle::Attaching => "attaching",
        Lifecycle::Ready => "ready",
        Lifecycle::Draining => "draining",
        Lifecycle::Detaching => "detaching",
        Lifecycle::Deleting => "deleting",
    }
}

/// `{a="x",b="y"}` with label values escaped as the text format requires.
fn labels(pairs: &[(&str, &str)]) -> String {
    let inner: Vec<String> = pairs
        .iter()
        .map(|(k, v)| format!("{k}=\"{}\"", v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")))
        .collect();
    format!("{{{}}}", inner.join(","))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(labels(&[("a", "x\"y\\z\n")]), "{a=\"x\\\"y\\\\z\\n\"}");
    }

    #[test]
    fn counters_render_with_their_labels() {
        let m = Metrics::default();
        m.allocated("nodeeni.io/fast", 2);
        m.allocated("nodeeni.io/fast", 1);
        m.config_reload(false);
        m.reconciled(false, Some("ec2"), Duration::from_millis(1500));
        let text = m.render(None, None);
        assert!(text.contains("nodeeni_allocations_total{resource=\"nodeeni.io/fast\"} 3\n"), "{text}");
        assert!(text.contains("nodeeni_config_reloads_total{result=\"invalid\"} 1\n"), "{text}");
        assert!(text.contains("nodeeni_config_reloads_total{result=\"ok\"} 0\n"), "{text}");
        assert!(text.contains("nodeeni_reconcile_errors_total{kind=\"ec2\"} 1\n"), "{text}");
        assert!(text.contains("nodeeni_reconcile_last_duration_seconds 1.5\n"), "{text}");
    }
}
