//! The host side of a pool without a host: for tests and simulations about EC2 and the node state.

use nodeeni_conf::Pool;
use nodeeni_ipam::host::{HostError, HostFacts, HostPrep};
use nodeeni_ipam::store::EniRecord;

/// The host as the kernel would answer for a prepared ENI (its netdev, named by device index), at
/// no cost.
#[derive(Debug)]
pub struct NamedNetdevs;

impl HostPrep for NamedNetdevs {
    async fn prepare(&self, _pool: &Pool, record: &EniRecord) -> Result<HostFacts, HostError> {
        Ok(HostFacts { ifname: Some(format!("eth{}", record.device_index.unwrap_or(0))), ..HostFacts::default() })
    }
}
