//! nodeeni's configuration and wire types, validated where they are parsed.
//!
//! - [`pool`]: the node's pool configuration; [`nodeeni`]: NodeENI manifests read as pools;
//! - [`load`]: a configuration file read, its documents merged into one [`PoolConfig`] (it uses `pool`
//!   and `nodeeni`; `nodeeni` uses `pool`'s types; `pool` uses neither);
//! - [`cni`]: the CNI spec's network configuration, results, errors and environment;
//! - [`names`] and [`pci`]: the validated names every crate passes around;
//! - [`problems`]: how validation reports everything wrong at once, with paths.

mod fields;

pub mod cni;
pub mod load;
pub mod names;
pub mod net;
pub mod nodeeni;
pub mod pci;
pub mod pool;
pub mod problems;

pub use load::{ConfigError, LoadOptions};
pub use names::{DriverName, EniId, IfName, InstanceId, MacAddr, NameError, ResourceName, SecurityGroupId, SubnetId};
pub use pci::PciAddress;
pub use pool::{Mode, Pool, PoolConfig};
pub use problems::{Problem, Problems};
