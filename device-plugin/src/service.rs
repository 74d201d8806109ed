//! The kubelet device-plugin API v1beta1 for one resource. The device list lives in a
//! `tokio::sync::watch`: ListAndWatch sends it whole at once and again on every change (a push, not a
//! poll), so a health change reaches the kubelet as soon as it is published.

use std::collections::{BTreeMap, BTreeSet};
use std::pin::Pin;
use std::sync::Arc;

use nodeeni_proto::deviceplugin::v1beta1 as api;
use tokio::sync::watch;
use tokio_stream::{Stream, StreamExt, wrappers::WatchStream};
use tonic::{Request, Response, Status};

use crate::allocate::{AllocateError, AllocateSettings, DevInfoFiles, container_response};
use crate::devices::Device;
use crate::metrics::Metrics;

#[derive(Debug, Clone)]
pub struct PluginService {
    settings: Arc<AllocateSettings>,
    devices: watch::Receiver<Vec<Device>>,
    devinfo: DevInfoFiles,
    metrics: Option<Arc<Metrics>>,
}

impl PluginService {
    pub fn new(settings: AllocateSettings, devices: watch::Receiver<Vec<Device>>) -> Self {
        let settings = Arc::new(settings);
        let devinfo = DevInfoFiles::new(settings.clone(), devices.clone());
        Self { settings, devices, devinfo, metrics: None }
    }

    /// The resource's device-info files, for whoever tidies them as devices leave.
    pub fn devinfo_files(&self) -> DevInfoFiles {
        self.devinfo.clone()
    }

    /// Counts allocations and refusals in `metrics`.
    pub fn with_metrics(self, metrics: Arc<Metrics>) -> Self {
        Self { metrics: Some(metrics), ..self }
    }

    fn refused(&self, status: Status) -> Status {
        if let Some(m) = &self.metrics {
            m.allocation_failed(self.settings.resource.as_str());
        }
        tracing::warn!(resource = %self.settings.resource, error = status.message(), "allocation refused");
        status
    }

    pub fn options() -> api::DevicePluginOptions {
        api::DevicePluginOptions { pre_start_required: false, get_preferred_allocation_available: true }
    }
}

/// The preference rule: keep every must-include device; then take devices from as few NUMA nodes as
/// possible (those the must-include devices already use first, then the nodes with the most free
/// devices), and within them from as few network cards as possible; ties go to the lower ENI ID.
pub fn preferred(devices: &[Device], available: &[String], must: &[String], size: usize) -> Vec<String> {
    let by_id: BTreeMap<&str, &Device> = devices.iter().map(|d| (d.eni_id.as_str(), d)).collect();
    let mut chosen: Vec<String> = must.to_vec();
    let numa = |id: &str| by_id.get(id).and_then(|d| d.numa_node);
    let card = |id: &str| by_id.get(id).map_or(0, |d| d.network_card);
    let candidates: Vec<&str> = available
        .iter()
        .map(String::as_str)
        .filter(|id| !must.iter().any(|m| m == id) && by_id.get(id).is_some_and(|d| d.healthy))
        .collect();
    let mut free_per_numa: BTreeMap<Option<u32>, usize> = BTreeMap::new();
    for id in &candidates {
        *free_per_numa.entry(numa(id)).or_default() += 1;
    }
    let mut remaining: Vec<&str> = candidates;
    while chosen.len() < size && !remaining.is_empty() {
        let used_numa: BTreeSet<Option<u32>> = chosen.iter().map(|id| numa(id)).collect();
        let used_cards: BTreeSet<u32> = chosen.iter().map(|id| card(id)).collect();
        let (i, _) = remaining
            .iter()
            .enumerate()
            .min_by_key(|(_, id)| {
                let n = numa(id);
                (
                    !used_numa.contains(&n),
                    std::cmp::Reverse(free_per_numa.get(&n).copied().unwrap_or(0)),
                    !used_cards.contains(&card(id)),
                    card(id),
                    id.to_string(),
                )
            })
            .unwrap_or((0, &""));
        chosen.push(remaining.remove(i).to_string());
    }
    chosen
}

type DeviceStream = Pin<Box<dyn Stream<Item = Result<api::ListAndWatchResponse, Status>> + Send>>;

#[tonic::async_trait]
impl api::device_plugin_server::DevicePlugin for PluginService {
    #[tracing::instrument(name = "rpc", skip_all, fields(method = "GetDevicePluginOptions", resource = %self.settings.resource))]
    async fn get_device_plugin_options(
        &self,
        _: Request<api::Empty>,
    ) -> Result<Response<api::DevicePluginOptions>, Status> {
        Ok(Response::new(Self::options()))
    }

    type ListAndWatchStream = DeviceStream;

    #[tracing::instrument(name = "rpc", skip_all, fields(method = "ListAndWatch", resource = %self.settings.resource))]
    async fn list_and_watch(&self, _: Request<api::Empty>) -> Result<Response<Self::ListAndWatchStream>, Status> {
        let stream = WatchStream::new(self.devices.clone())
            .map(|devices| Ok(api::ListAndWatchResponse { devices: devices.iter().map(Device::to_api).collect() }));
        Ok(Response::new(Box::pin(stream)))
    }

    #[tracing::instrument(name = "rpc", skip_all, fields(method = "GetPreferredAllocation", resource = %self.settings.resource))]
    async fn get_preferred_allocation(
        &self,
        req: Request<api::PreferredAllocationRequest>,
    ) -> Result<Response<api::PreferredAllocationResponse>, Status> {
        let devices = self.devices.borrow().clone();
        let container_responses = req
            .into_inner()
            .container_requests
            .into_iter()
            .map(|c| api::ContainerPreferredAllocationResponse {
                device_i_ds: preferred(
                    &devices,
                    &c.available_device_i_ds,
                    &c.must_include_device_i_ds,
                    c.allocation_size.max(0) as usize,
                ),
            })
            .collect();
        Ok(Response::new(api::PreferredAllocationResponse { container_responses }))
    }

    #[tracing::instrument(name = "rpc", skip_all, fields(method = "Allocate", resource = %self.settings.resource))]
    async fn allocate(&self, req: Request<api::AllocateRequest>) -> Result<Response<api::AllocateResponse>, Status> {
        let devices = self.devices.borrow().clone();
        let mut container_responses = Vec::new();
        for c in req.into_inner().container_requests {
            let mut picked = Vec::new();
            for id in &c.devices_ids {
                let d = devices.iter().find(|d| d.eni_id.as_str() == id).ok_or_else(|| {
                    self.refused(Status::not_found(format!("{id} is not a device of {}", self.settings.resource)))
                })?;
                if !d.healthy {
                    return Err(self.refused(Status::failed_precondition(format!("{id} is unhealthy"))));
                }
                picked.push(d);
            }
            let response = container_response(&self.settings, &picked)
                .map_err(|e| self.refused(Status::failed_precondition(e.to_string())))?;
            self.devinfo.write(&picked).map_err(|e| {
                self.refused(match e {
                    AllocateError::Departed { .. } => Status::not_found(e.to_string()),
                    _ => Status::internal(e.to_string()),
                })
            })?;
            if let Some(m) = &self.metrics {
                m.allocated(self.settings.resource.as_str(), picked.len());
            }
            tracing::info!(resource = %self.settings.resource, devices = ?c.devices_ids, "allocated");
            container_responses.push(response);
        }
        Ok(Response::new(api::AllocateResponse { container_responses }))
    }

    #[tracing::instrument(name = "rpc", skip_all, fields(method = "PreStartContainer", resource = %self.settings.resource))]
    async fn pre_start_container(
        &self,
        _: Request<api::PreStartContainerRequest>,
    ) -> Result<Response<api::PreStartContainerResponse>, Status> {
        Ok(Response::new(api::PreStartContainerResponse {}))
    }
}
