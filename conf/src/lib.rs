//! nodeeni's configuration and wire types, validated where they are parsed.
//!
//! - [`pool`]: the node's pool configuration (and [`nodeeni`], NodeENI manifests read as pools);
//! - [`cni`]: the CNI spec's network configuration, results, errors and environment;
//! - [`names`] and [`pci`]: the validated names every crate passes around;
//! - [`problems`]: how validation reports everything wrong at once, with paths.

mod fields;

pub mod cni;
pub mod names;
pub mod net;
pub mod nodeeni;
pub mod pci;
pub mod pool;
pub mod problems;

pub use names::{EniId, IfName, InstanceId, MacAddr, NameError, ResourceName, SecurityGroupId, SubnetId};
pub use pci::PciAddress;
pub use pool::{Mode, Pool, PoolConfig};
pub use problems::{Problem, Problems};
