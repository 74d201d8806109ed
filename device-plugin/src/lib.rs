//! The nodeeni node daemon's parts; `main.rs` and `cmd/` are its command line.
//!
//! - [`daemon`]: the wiring (build, start, stop) with [`daemon::resources`] (one supervised task
//!   per advertised resource), the pool task and configuration reload;
//! - [`service`], [`registration`], [`allocate`], [`devices`]: the kubelet device-plugin API v1beta1
//!   for one resource, served on our socket and registered with the kubelet; what a container gets;
//! - [`health`]: device health from the node, pushed to ListAndWatch;
//! - [`probes`], [`metrics`], [`http`]: what /healthz, /readyz and /metrics say, and the endpoint;
//! - [`folder_watch`]: the one inotify watcher (config folder, kubelet folder);
//! - [`sriov`]: the SR-IOV network device plugin's config.json, for migrations;
//! - [`install`]: the `install-cni` command's copy-then-rename.

pub mod allocate;
pub mod daemon;
pub mod devices;
pub mod folder_watch;
pub mod health;
pub mod http;
pub mod install;
pub mod metrics;
pub mod probes;
pub mod registration;
pub mod service;
pub mod sriov;
pub mod traces;
