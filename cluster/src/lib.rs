//! The Kubernetes API side of the node daemon. Only the daemon links this crate (the CNI binary never
//! does: its dependency-graph test keeps `kube` and `k8s-openapi` out).
//!
//! - [`crd`]: the `NodeENI` and `NodeENIState` custom resources and their generated CRDs;
//! - [`compose`]: the configuration a node runs: the file's pools, the NodeENIs admitted one by one, the
//!   Node's labels;
//! - [`report`]: the NodeENIState status one node publishes: its ENIs, Ready and Degraded (with the
//!   reason), the NodeENI generations converged to.
//!
//! - [`api`]: the API calls themselves (the watches, the server-side apply, Events);
//! - [`saved`]: what the node last converged to, for starts without the API.
//!
//! compose and report are pure; api is the only module that talks to the API server.
pub mod api;
pub mod compose;
pub mod crd;
pub mod report;
pub mod saved;
