//! Leak collection: ENIs of this cluster left behind by nodes that are gone.

use nodeeni_conf::{EniId, InstanceId};
use nodeeni_state::node::now_unix;

use super::{PoolError, Reconciler};
use crate::ec2::{Ec2, tags};
use crate::host::HostPrep;

impl<E: Ec2, H: HostPrep> Reconciler<E, H> {
    /// Deletes ENIs of this cluster that are `available`, older than the grace period, and whose node
    /// instance is terminated or gone (asked of EC2, not guessed). Returns what it deleted.
    pub async fn collect_leaks(&self) -> Result<Vec<EniId>, PoolError> {
        let grace = self.config.leak_grace_secs;
        let now = now_unix();
        let mut deleted = Vec::new();
        // One describe per owner, however many of its ENIs are left.
        let mut owners_alive = std::collections::BTreeMap::new();
        for eni in self.ec2.available_enis_tagged(tags::CLUSTER, &self.config.cluster_name).await? {
            if eni.status != "available" {
                continue;
            }
            let created = eni.tags.get(tags::CREATED).and_then(|c| c.parse::<u64>().ok()).unwrap_or(now);
            if now.saturating_sub(created) < grace {
                continue;
            }
            let Some(owner) = eni.tags.get(tags::NODE).and_then(|i| i.parse::<InstanceId>().ok()) else { continue };
            if owner == self.node.instance_id {
                // This node's own (a create not yet attached): its pool's to adopt, and alive.
                continue;
            }
            let alive = match owners_alive.get(&owner) {
                Some(alive) => *alive,
                None => {
                    let alive = match self.ec2.describe_instance(&owner).await? {
                        Some(i) => !matches!(i.state.as_deref(), Some("terminated") | Some("shutting-down")),
                        None => false,
                    };
                    owners_alive.insert(owner.clone(), alive);
                    alive
                }
            };
            if alive {
                continue;
            }
            tracing::warn!(eni = %eni.id, owner = %owner, "leaked ENI: its node is gone; deleting");
            self.ec2.delete_eni(&eni.id).await?;
            deleted.push(eni.id);
        }
        Ok(deleted)
    }
}
