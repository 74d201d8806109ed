//! The nodeeni node daemon's parts.
//!
//! - [`devices`]: what the kubelet is told about each ENI of a resource (ID, health, NUMA);
//! - [`allocate`]: what a container gets for its ENIs, in the SR-IOV device plugin's conventions
//!   (PCIDEVICE_* env, vfio device nodes, Network Plumbing WG device-info files);
//! - [`service`]: the kubelet device-plugin API v1beta1 for one resource.

pub mod allocate;
pub mod daemon;
pub mod devices;
pub mod health;
pub mod http;
pub mod install;
pub mod metrics;
pub mod registration;
pub mod service;
pub mod sriov;
