//! The resources this node advertises to the kubelet, one supervised task each: health watch
//! (ListAndWatch pushes), the gRPC service and its registration (again after kubelet restarts), and
//! device-info upkeep. Tasks start, stop and restart as the configuration changes.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use nodeeni_conf::{Mode, PoolConfig, ResourceName};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::{Settings, Shared};
use crate::allocate::AllocateSettings;
use crate::health::{self, HealthSource};
use crate::registration::{Endpoint, serve_and_register_reporting};
use crate::service::PluginService;

/// The resources this node advertises: resource → (mode, pools).
pub fn advertised(
    config: &PoolConfig,
    labels: &BTreeMap<String, String>,
) -> BTreeMap<ResourceName, (Mode, Vec<String>)> {
    let mut out: BTreeMap<ResourceName, (Mode, Vec<String>)> = BTreeMap::new();
    for pool in config.pools_for(labels) {
        if pool.mode == Mode::Host {
            continue;
        }
        if let Some(resource) = &pool.resource_name {
            out.entry(resource.clone()).or_insert_with(|| (pool.mode, Vec::new())).1.push(pool.name.clone());
        }
    }
    out
}

/// One advertised resource's task.
#[derive(Debug)]
struct ResourceTask {
    mode: Mode,
    pools: Vec<String>,
    stop: CancellationToken,
    handle: JoinHandle<()>,
}

/// Starts, stops and restarts the per-resource tasks as the configuration changes. Each task's token
/// is a child of the supervisor's, so a shutdown stops them all.
#[derive(Debug)]
pub struct Resources {
    settings: Settings,
    shared: Arc<Shared>,
    stop: CancellationToken,
    running: BTreeMap<ResourceName, ResourceTask>,
    /// Guards what the tasks report of their registration (the probes, the gauge) against this
    /// supervisor stopping and forgetting a resource: a task decides whether it may still report,
    /// and reports, under it; the supervisor cancels and forgets under it. A late report of a task
    /// that was stopped can then neither bring a forgotten resource back nor overwrite its successor.
    registration: Arc<std::sync::Mutex<()>>,
}

impl Resources {
    pub fn new(settings: Settings, shared: Arc<Shared>, stop: CancellationToken) -> Self {
        Self { settings, shared, stop, running: BTreeMap::new(), registration: Arc::default() }
    }

    /// Brings the running tasks in line with what `config` advertises for a node with `labels`.
    pub fn apply(&mut self, config: &PoolConfig, labels: &BTreeMap<String, String>) {
        let want = advertised(config, labels);
        let stale: Vec<ResourceName> = self
            .running
            .iter()
            .filter(|(r, t)| want.get(*r).is_none_or(|(mode, pools)| *mode != t.mode || *pools != t.pools))
            .map(|(r, _)| r.clone())
            .collect();
        let _registration = self.registration.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        for resource in stale {
            if let Some(task) = self.running.remove(&resource) {
                tracing::info!(%resource, "resource no longer advertised as it was; stopping it");
                task.stop.cancel();
                self.shared.probes.forget_resource(resource.as_str());
                self.shared.metrics.forget_resource(resource.as_str());
            }
        }
        for (resource, (mode, pools)) in want {
            if self.running.contains_key(&resource) {
                continue;
            }
            tracing::info!(%resource, mode = mode.as_str(), ?pools, "advertising resource");
            self.shared.probes.resource(resource.as_str(), false);
            let stop = self.stop.child_token();
            let handle = tokio::spawn(serve_resource(
                resource.clone(),
                mode,
                pools.clone(),
                self.settings.clone(),
                self.shared.clone(),
                stop.clone(),
                self.registration.clone(),
            ));
            self.running.insert(resource, ResourceTask { mode, pools, stop, handle });
        }
    }

    /// Waits (bounded) for every task once the supervisor's token is cancelled.
    pub async fn wait_stopped(&mut self) {
        self.stop.cancel();
        for (_, task) in std::mem::take(&mut self.running) {
            let _ = tokio::time::timeout(Duration::from_secs(5), task.handle).await;
        }
    }
}

/// Health watch, gRPC service and registration, and device-info upkeep for one resource, until `stop`.
async fn serve_resource(
    resource: ResourceName,
    mode: Mode,
    pools: Vec<String>,
    settings: Settings,
    shared: Arc<Shared>,
    stop: CancellationToken,
    registration: Arc<std::sync::Mutex<()>>,
) {
    let source = HealthSource {
        store: shared.store.clone(),
        sysfs_root: settings.sysfs_root.clone(),
        netns: settings.node_netns.clone(),
        pools,
    };
    // The first list is judged before serving, so the kubelet's first ListAndWatch answer is real.
    let first = {
        let s = source.clone();
        tokio::task::spawn_blocking(move || s.devices()).await.ok().and_then(Result::ok).unwrap_or_default()
    };
    let (tx, rx) = watch::channel(first);
    let allocate = AllocateSettings {
        resource: resource.clone(),
        mode,
        dev_root: settings.dev_root.clone(),
        devinfo_dir: settings.devinfo_dir.clone(),
    };

    let health = {
        let stop = stop.clone();
        let interval = settings.health_interval;
        tokio::spawn(async move { health::watch(source, tx, interval, &stop).await })
    };

    let service = PluginService::new(allocate, rx.clone()).with_metrics(shared.metrics.clone());

    // Device-info files of devices that left, and the device gauges, follow the list.
    let upkeep = {
        let (mut rx, files, metrics) = (rx, service.devinfo_files(), shared.metrics.clone());
        let resource = resource.clone();
        tokio::spawn(async move {
            loop {
                let (healthy, all) = {
                    let devices = rx.borrow_and_update();
                    (devices.iter().filter(|d| d.healthy).count(), devices.len())
                };
                metrics.devices(resource.as_str(), healthy, all - healthy);
                match files.tidy() {
                    Ok(removed) if !removed.is_empty() => {
                        tracing::info!(?removed, "removed device-info files of departed devices")
                    }
                    Ok(_) => {}
                    Err(e) => tracing::warn!(error = %e, "cannot tidy device-info files"),
                }
                if rx.changed().await.is_err() {
                    return;
                }
            }
        })
    };

    let serve = {
        let ep = Endpoint::for_resource(&settings.device_plugin_dir, resource.clone());
        let (stop, shared, resource) = (stop.clone(), shared.clone(), resource.clone());
        tokio::spawn(async move {
            loop {
                let report = |registered: bool| {
                    // A stopped resource was forgotten: its last words must not bring it back. Decided
                    // under the lock the supervisor stops it under (see Resources::registration).
                    let _guard = registration.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                    if stop.is_cancelled() {
                        return;
                    }
                    shared.metrics.registration(resource.as_str(), registered);
                    shared.probes.resource(resource.as_str(), registered);
                };
                match serve_and_register_reporting(service.clone(), ep.clone(), &stop, report).await {
                    Ok(()) => return,
                    Err(e) => {
                        tracing::error!(%resource, error = %e, "cannot serve the resource; trying again in 5 s");
                        tokio::select! {
                            _ = tokio::time::sleep(Duration::from_secs(5)) => {}
                            _ = stop.cancelled() => return,
                        }
                    }
                }
            }
        })
    };

    stop.cancelled().await;
    let _ = serve.await;
    let _ = health.await;
    upkeep.abort();
    tracing::info!(%resource, "stopped serving resource");
}
