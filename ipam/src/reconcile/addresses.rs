//! Addresses on host ENIs: each ready ENI of a host pool with `warmIpTarget` keeps that many free
//! secondary IPs for `nodeeni-ipam` to hand out, within `maxIpsPerEni` and the instance type's
//! per-ENI limit. Short of free ones, more are assigned (AssignPrivateIpAddresses); with more than
//! the target free for the pool's cool-down, the extras go back (UnassignPrivateIpAddresses).
//!
//! Intents first, so a crash leaves no address assigned and unrecorded, nor recorded and unassigned:
//! - before an assign, `ipsAssigningSince` is written; EC2's listing (each pass takes the ENI's
//!   addresses from it) has whatever the call assigned, so a restart records it;
//! - before an unassign, the addresses are marked `ipsReleasing` under the node-state lock, and only
//!   ones no pod holds at that moment (`nodeeni-ipam` takes its addresses under the same lock and
//!   never takes a releasing one); a restart returns the marked ones still listed, then forgets them.

use std::net::IpAddr;

use nodeeni_conf::{EniId, Mode, Pool};
use nodeeni_state::node::{EniRecord, Lifecycle, now_unix};

use super::{PoolError, Reconciler, Report};
use crate::ec2::{Ec2, Eni, InstanceLimits};
use crate::host::HostPrep;

/// The most secondary IPs `pool` may keep on one ENI: its `maxIpsPerEni`, within the type's limit
/// (which counts the primary).
pub fn ip_cap(pool: &Pool, limits: &InstanceLimits) -> u32 {
    let by_type = limits.ipv4_per_eni.saturating_sub(1);
    pool.max_ips_per_eni.map_or(by_type, |m| m.min(by_type))
}

/// What an ENI's addresses need now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IpNeed {
    /// Assign this many more.
    Assign(u32),
    /// This many free ones are above the target (or the cap).
    Surplus(u32),
    Nothing,
}

/// Decides from a record, its pool and the type's limits.
pub fn ip_need(rec: &EniRecord, pool: &Pool, limits: &InstanceLimits) -> IpNeed {
    let cap = ip_cap(pool, limits);
    let have = rec.secondary_ips.len() as u32;
    let free = rec.free_ipv4().len() as u32;
    let warm = pool.warm_ip_target;
    if free < warm && have < cap {
        return IpNeed::Assign((warm - free).min(cap - have));
    }
    let surplus = free.saturating_sub(warm).max(have.saturating_sub(cap)).min(free);
    if surplus > 0 { IpNeed::Surplus(surplus) } else { IpNeed::Nothing }
}

/// Whether `pool` keeps addresses on its ENIs.
pub fn managed(pool: &Pool) -> bool {
    pool.mode == Mode::Host && (pool.warm_ip_target > 0 || pool.max_ips_per_eni.is_some())
}

impl<E: Ec2, H: HostPrep> Reconciler<E, H> {
    /// From the node state alone (no EC2 call): whether some ready host ENI has fewer free addresses
    /// than its pool's target and room for more, and the addresses' tally (held, assigned). The loop
    /// runs a pass between its intervals when addresses are wanted and the tally moved since the
    /// last pass (pods took some): one that could not be helped is not retried in a tight loop.
    pub fn addresses_wanted(&self) -> Result<(bool, (usize, usize)), PoolError> {
        let state = self.load()?;
        let tally = state.enis.iter().fold((0, 0), |(h, a), r| (h + r.ip_holds.len(), a + r.secondary_ips.len()));
        let Some(limits) = self.lookups.kept_limits(&self.node.instance_type) else { return Ok((false, tally)) };
        let wanted = state.enis.iter().any(|r| {
            r.lifecycle == Lifecycle::Ready
                && self
                    .config
                    .pool(&r.pool)
                    .is_some_and(|p| managed(p) && matches!(ip_need(r, p, &limits), IpNeed::Assign(_)))
        });
        Ok((wanted, tally))
    }

    /// One round for every ready ENI of the host pools that keep addresses; `listed` is the pass's
    /// listing (what EC2 has on each ENI).
    pub(super) async fn keep_addresses(
        &self,
        listed: &[Eni],
        limits: &InstanceLimits,
        report: &mut Report,
    ) -> Result<(), PoolError> {
        let state = self.load()?;
        let mut first_error = None;
        for rec in &state.enis {
            let (Some(id), Some(pool)) = (&rec.eni_id, self.config.pool(&rec.pool)) else { continue };
            // Returns interrupted by a restart are finished whatever the pool says now.
            if !rec.ips_releasing.is_empty() {
                let still: Vec<IpAddr> = listed
                    .iter()
                    .find(|e| &e.id == id)
                    .map(|e| rec.ips_releasing.iter().filter(|ip| e.secondary_ips.contains(ip)).copied().collect())
                    .unwrap_or_default();
                if let Err(e) = self.give_back(id, &still, &rec.ips_releasing, report).await {
                    first_error.get_or_insert(e);
                }
                continue;
            }
            if !managed(pool) || rec.lifecycle != Lifecycle::Ready {
                continue;
            }
            let result = match ip_need(rec, pool, limits) {
                IpNeed::Assign(_) => self.assign(id, pool, limits, report).await,
                IpNeed::Surplus(_) => self.maybe_release(id, pool, limits, report).await,
                IpNeed::Nothing if rec.ip_surplus_since.is_some() => self.clear_surplus(id),
                IpNeed::Nothing => Ok(()),
            };
            if let Err(e) = result {
                tracing::error!(eni = %id, error = %e, "keeping the ENI's addresses failed; the next pass tries again");
                first_error.get_or_insert(e);
            }
        }
        match first_error {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    async fn assign(
        &self,
        id: &EniId,
        pool: &Pool,
        limits: &InstanceLimits,
        report: &mut Report,
    ) -> Result<(), PoolError> {
        // Intent first; how many is decided under the lock, from the holds as they are then (pods
        // may have taken or given back addresses since the snapshot).
        let count = self.update(|s| match s.eni_mut(id) {
            Some(r) if r.lifecycle == Lifecycle::Ready => match ip_need(r, pool, limits) {
                IpNeed::Assign(n) => {
                    r.ips_assigning_since = Some(now_unix());
                    r.ip_surplus_since = None;
                    Some(n)
                }
                _ => None,
            },
            _ => None,
        })?;
        let Some(count) = count else { return Ok(()) };
        let ips = self.ec2.assign_private_ips(id, count).await?;
        tracing::info!(eni = %id, ?ips, reason = "free addresses below the pool's warmIpTarget", "assigned secondary IPs");
        self.update(|s| {
            if let Some(r) = s.eni_mut(id) {
                for ip in &ips {
                    // Never the primary, whatever an answer says: it is the ENI's own.
                    if !r.secondary_ips.contains(ip) && r.primary_ip != Some(*ip) {
                        r.secondary_ips.push(*ip);
                    }
                }
                r.ips_assigning_since = None;
            }
        })?;
        report.ips_assigned.push(format!("{id}: {} assigned", ips.len()));
        Ok(())
    }

    /// Extras go back once they have been extra for the pool's cool-down; which ones is decided under
    /// the lock, from the holds as they are then.
    async fn maybe_release(
        &self,
        id: &EniId,
        pool: &Pool,
        limits: &InstanceLimits,
        report: &mut Report,
    ) -> Result<(), PoolError> {
        let now = now_unix();
        let cooldown = u64::from(pool.ip_cooldown_secs);
        let chosen = self.update(|s| {
            let r = s.eni_mut(id)?;
            let IpNeed::Surplus(n) = ip_need(r, pool, limits) else {
                r.ip_surplus_since = None;
                return None;
            };
            let since = *r.ip_surplus_since.get_or_insert(now);
            if now.saturating_sub(since) < cooldown || r.lifecycle != Lifecycle::Ready {
                return None;
            }
            // The last free ones: the first stay, as the ones pods most likely had before.
            let free = r.free_ipv4();
            let chosen: Vec<IpAddr> = free[free.len() - n as usize..].to_vec();
            r.ips_releasing.extend(&chosen);
            Some(chosen)
        })?;
        let Some(chosen) = chosen else { return Ok(()) };
        self.give_back(id, &chosen, &chosen, report).await
    }

    /// Returns `unassign` (the marked addresses EC2 still has) and forgets every one of `marked`.
    async fn give_back(
        &self,
        id: &EniId,
        unassign: &[IpAddr],
        marked: &[IpAddr],
        report: &mut Report,
    ) -> Result<(), PoolError> {
        if !unassign.is_empty() {
            self.ec2.unassign_private_ips(id, unassign).await?;
            tracing::info!(eni = %id, ips = ?unassign, reason = "free addresses above the pool's warmIpTarget after its cool-down", "returned secondary IPs");
            report.ips_released.push(format!("{id}: {} returned", unassign.len()));
        }
        self.update(|s| {
            if let Some(r) = s.eni_mut(id) {
                r.secondary_ips.retain(|ip| !marked.contains(ip));
                r.ips_releasing.retain(|ip| !marked.contains(ip));
                r.ip_surplus_since = None;
            }
        })?;
        Ok(())
    }

    /// The surplus ended before its cool-down did (pods took addresses again).
    fn clear_surplus(&self, id: &EniId) -> Result<(), PoolError> {
        self.update(|s| {
            if let Some(r) = s.eni_mut(id) {
                r.ip_surplus_since = None;
            }
        })
    }
}
