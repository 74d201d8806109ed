//! Which ENI a call is about, and how it is handed over. The config names it by ENI ID, PCI address,
//! host ifname, MAC, or a pool to take a free one from. ENIs the node state knows are claimed there
//! (under its lock) so no two pods get the same one; a device the node state does not know is used
//! standalone, as host-device would, where the node file allows it.
//!
//! What a config may take:
//! - an ENI of a kernel or DPDK pool (advertised to the kubelet under the pool's `resourceName`) only
//!   as the kubelet allocated it: a `runtimeConfig.deviceID`, `deviceID` or `pciBusID` that the
//!   kubelet's checkpoint lists for this pod (`K8S_POD_UID`), under the ENI's ID or its PCI address
//!   (the SR-IOV device plugin names devices by PCI address). `runtimeConfig` is checked like the rest:
//!   libcni passes a config's own `runtimeConfig` through when the runtime injects no capability, so a
//!   NetworkAttachmentDefinition can write one. `pool`, `device`, `mac` and a device ID of another
//!   pod's never take one, so no config takes an ENI the kubelet gave another pod; without a
//!   checkpoint to read, none is taken at all (fail closed);
//! - never a host pool's ENI, the primary ENI (device index 0), or the interface of a default route;
//! - in DPDK mode only a network device (PCI class 0x02) of Amazon's ENA vendor (0x1d0f), unless the
//!   node file allows other vendors.

use nodeeni_conf::cni::{CniError, ContainerId, DeviceSelector, DeviceSource, HandOver, NetConf};
use nodeeni_conf::pool::DpdkDriver;
use nodeeni_conf::{EniId, MacAddr, Mode, PciAddress};
use nodeeni_host::netlink::Link;
use nodeeni_state::node::{Allocation, EniRecord, NodeState, StoreError, now_unix};

use crate::context::Ctx;
use crate::error::{PluginError, Result};
use crate::kubelet;
use crate::link_ops::LinkOps;

#[derive(Debug, Clone)]
pub struct Target {
    pub mode: HandOver,
    pub mac: Option<MacAddr>,
    pub pci: Option<PciAddress>,
    pub eni_id: Option<EniId>,
    /// The node state's record, when the ENI belongs to a pool.
    pub record: Option<EniRecord>,
    /// This call set the record's allocation, and must clear it if ADD fails.
    pub claimed: bool,
    pub dpdk_driver: DpdkDriver,
}

impl Target {
    pub fn lock_keys(&self) -> Vec<String> {
        lock_keys(self.mac, self.pci, self.eni_id.as_ref())
    }
}

/// The per-device locks' keys: every identity of the device that is known, the MAC and the PCI
/// address (the ENI ID only when neither is), in one order. A kernel ADD and a DPDK ADD of one device
/// (two configs may name it in either mode) then share the PCI address's lock, and a DEL whose record
/// kept only the MAC shares that one with any ADD of the device. Taken in this order by everyone, so
/// no two callers wait on each other.
pub fn lock_keys(mac: Option<MacAddr>, pci: Option<PciAddress>, eni: Option<&EniId>) -> Vec<String> {
    let mut keys: Vec<String> = mac.map(|m| m.to_string()).into_iter().chain(pci.map(|p| p.to_string())).collect();
    if keys.is_empty() {
        keys.extend(eni.map(ToString::to_string));
    }
    keys.sort();
    keys
}

/// Claims `pick`'s record for this attachment in the node state, in one locked pass, refusing one
/// held by another pod. `None` when `pick` finds no record, or there is no node state (standalone use,
/// which must not create any file).
fn claim(ctx: &Ctx, pick: impl FnOnce(&NodeState) -> Result<Option<usize>>) -> Result<Option<EniRecord>> {
    if !ctx.node.exists() {
        return Ok(None);
    }
    let (container, ifname) = ctx.attachment_key()?;
    ctx.node.update(ctx.lock_timeout, |state| {
        let Some(i) = pick(state)? else { return Ok(None) };
        may_take(ctx, &state.enis[i])?;
        let rec = &mut state.enis[i];
        let id = rec.eni_id.as_ref().map_or("an ENI".to_string(), |e| e.to_string());
        match &rec.allocation {
            Some(a) if a.container_id == *container && a.ifname == ifname => {}
            Some(a) => {
                return Err(PluginError::DeviceInUse(format!(
                    "{id} is already given to container {} ({})",
                    a.container_id, a.ifname
                )));
            }
            None if rec.lifecycle != nodeeni_state::node::Lifecycle::Ready => {
                return Err(PluginError::DeviceNotFound(format!("{id} is {:?}, not ready to hand out", rec.lifecycle)));
            }
            None => {}
        }
        rec.allocation = Some(Allocation {
            container_id: container.clone(),
            ifname: ifname.to_string(),
            netns: ctx.netns_path().map(|p| p.display().to_string()),
            since_unix: now_unix(),
        });
        rec.updated_unix = now_unix();
        Ok(Some(rec.clone()))
    })
}

/// Whether this call may take `rec` (see the module's doc): refused for host pools, the primary ENI,
/// and, in pools the kubelet accounts for, anything but the kubelet's allocation for this pod.
fn may_take(ctx: &Ctx, rec: &EniRecord) -> Result<()> {
    let id = rec.eni_id.as_ref().map_or("an ENI".to_string(), |e| e.to_string());
    if rec.mode == Mode::Host {
        return Err(PluginError::DeviceNotFound(format!(
            "{id} belongs to host pool {}: host pools stay on the node (Multus masters) and are not handed to pods",
            rec.pool
        )));
    }
    if rec.device_index == Some(0) {
        return Err(PluginError::Refused(format!(
            "{id} is at device index 0, the instance's primary ENI: it is never handed to a pod"
        )));
    }
    // Kernel and DPDK pools all have a resourceName (the pool config requires it) and the daemon
    // advertises each: the kubelet decides which pod has which ENI.
    let accounted = || {
        format!(
            "{id} belongs to {} pool {}, which the kubelet accounts for: only the pod the kubelet allocated it to may \
             take it, through runtimeConfig.deviceID (the deviceID capability) or Multus' deviceID",
            rec.mode, rec.pool
        )
    };
    let source = ctx.conf.device_source.unwrap_or(DeviceSource::Pool);
    match source {
        DeviceSource::RuntimeConfig | DeviceSource::DeviceId | DeviceSource::PciBusId => {
            allocated_to_this_pod(ctx, rec).map_err(|why| {
                PluginError::Refused(format!(
                    "{}; a {} is taken only when the kubelet's checkpoint lists it for this pod, and {why}",
                    accounted(),
                    source.key()
                ))
            })
        }
        DeviceSource::Device | DeviceSource::Mac | DeviceSource::Pool => {
            Err(PluginError::Refused(format!("{}; {} cannot select it", accounted(), source.key())))
        }
    }
}

/// Whether the kubelet's checkpoint lists `rec` for this call's pod, under its ENI ID or its PCI
/// address (whichever the device plugin that allocated it used); `Err` says why not.
fn allocated_to_this_pod(ctx: &Ctx, rec: &EniRecord) -> std::result::Result<(), String> {
    let uid = ctx.pod_uid().ok_or("CNI_ARGS has no K8S_POD_UID")?;
    if rec.eni_id.is_none() && rec.pci.is_none() {
        return Err("the node state knows neither its ENI ID nor its PCI address".into());
    }
    let is_it = |id: &str| {
        rec.eni_id.as_ref().is_some_and(|e| e.as_str() == id)
            || rec.pci.is_some_and(|p| id.parse::<PciAddress>().is_ok_and(|listed| listed == p))
    };
    let checkpoint = &ctx.settings.kubelet_checkpoint;
    match kubelet::allocated_to(checkpoint, uid, is_it) {
        Ok(true) => Ok(()),
        Ok(false) => Err(format!("the kubelet's checkpoint {} does not list it for pod {uid}", checkpoint.display())),
        Err(e) => Err(format!("{e} (refused: nothing proves the kubelet allocated it)")),
    }
}

/// Clears this attachment's allocation in the node state (no-op when there is none or no state).
pub fn release(ctx: &Ctx, container: &ContainerId, ifname: &str) -> Result<Option<EniId>> {
    if !ctx.node.exists() {
        return Ok(None);
    }
    ctx.node.update(ctx.lock_timeout, |state| {
        let mut released = None;
        for rec in &mut state.enis {
            if rec.allocation.as_ref().is_some_and(|a| a.container_id == *container && a.ifname == ifname) {
                rec.allocation = None;
                rec.updated_unix = now_unix();
                released = rec.eni_id.clone();
            }
        }
        Ok::<_, PluginError>(released)
    })
}

fn index_where(state: &NodeState, f: impl Fn(&EniRecord) -> bool) -> Option<usize> {
    state.enis.iter().position(f)
}

/// Finds and, for pool ENIs, claims the device, then checks it may be handed over at all (see the
/// module's doc). Touches nothing on the host; a claim is released again when the device is refused.
pub fn resolve(ctx: &Ctx, host: &mut impl LinkOps) -> Result<Target> {
    let outcome = find(ctx, host).and_then(|target| {
        refuse_node_devices(ctx, host, &target)?;
        Ok(target)
    });
    if let Err(e) = &outcome
        && let Ok((container, ifname)) = ctx.attachment_key()
    {
        // Whatever this call claimed (an unfinished earlier ADD was undone before resolving).
        if let Err(release) = release(ctx, container, ifname) {
            tracing::warn!(error = %release, refused = %e, "could not release the claim of a refused device");
        }
    }
    outcome
}

/// The node's own devices and what DPDK may not bind: the interface of a default route, and in DPDK
/// mode a device that is not a network device, or (unless the node file allows) not ENA.
fn refuse_node_devices(ctx: &Ctx, host: &mut impl LinkOps, target: &Target) -> Result<()> {
    let netdevs = match target.pci {
        Some(p) if ctx.bus.exists(p) => ctx.bus.netdevs(p)?,
        _ => Vec::new(),
    };
    let mut links = Vec::new();
    if let Some(mac) = target.mac {
        links.extend(host.links_by_mac(mac)?);
    }
    for name in &netdevs {
        links.extend(host.link_by_name(name)?);
    }
    let default = host.default_route_links()?;
    if let Some(l) = links.iter().find(|l| default.contains(&l.index)) {
        return Err(PluginError::Refused(format!(
            "{} carries a default route: it is the node's own way out, never handed to a pod",
            l.name
        )));
    }
    if target.mode == HandOver::Dpdk
        && let Some(pci) = target.pci
    {
        let ids = ctx.bus.ids(pci)?;
        if !ids.is_network() {
            return Err(PluginError::Refused(format!(
                "PCI device {pci} is not a network device (class {:#08x}): DPDK mode binds only network devices",
                ids.class
            )));
        }
        if !ids.is_ena_vendor() && !ctx.settings.allow_non_ena_dpdk {
            return Err(PluginError::Refused(format!(
                "PCI device {pci} is not an ENA device (vendor {:#06x}, ENA is 0x1d0f): DPDK mode binds only ENIs \
                 unless the node file sets allowNonEnaDpdk",
                ids.vendor
            )));
        }
    }
    Ok(())
}

/// Finds and, for pool ENIs, claims the device.
fn find(ctx: &Ctx, host: &mut impl LinkOps) -> Result<Target> {
    let conf = ctx.conf;
    let selector = conf.device.clone().ok_or_else(|| {
        nodeeni_conf::cni::CniError::invalid_config(
            "no device: set deviceID (Multus adds it from the pod's allocation), pciBusID, device, mac or pool",
        )
    })?;
    let (record, claimed, mut pci, mut mac, link): (
        Option<EniRecord>,
        bool,
        Option<PciAddress>,
        Option<MacAddr>,
        Option<Link>,
    ) = match &selector {
        DeviceSelector::Pool(pool) => {
            if !ctx.node.exists() {
                return Err(PluginError::Store(StoreError::Read {
                    path: ctx.node.path(),
                    source: std::io::Error::new(
                        std::io::ErrorKind::NotFound,
                        "no node state: is the nodeeni daemon running?",
                    ),
                }));
            }
            let (container, ifname) = ctx.attachment_key()?;
            let rec = claim(ctx, |s| {
                if let Some(e) = s.enis.iter().find(|e| e.pool == *pool && e.mode != Mode::Host) {
                    return Err(PluginError::Refused(format!(
                        "pool {pool} is a {} pool, advertised to the kubelet: its ENIs go only to the pods the kubelet \
                         allocates them to (request the pool's resource; the runtime passes runtimeConfig.deviceID). \
                         `pool` takes only ENIs no kubelet accounts for",
                        e.mode
                    )));
                }
                // Already ours (a retried ADD), else the first free one.
                index_where(s, |e| {
                    e.pool == *pool
                        && e.allocation.as_ref().is_some_and(|a| a.container_id == *container && a.ifname == ifname)
                })
                .or_else(|| index_where(s, |e| e.pool == *pool && e.is_free()))
                .map(Some)
                .ok_or_else(|| {
                    let total = s.enis.iter().filter(|e| e.pool == *pool).count();
                    PluginError::PoolExhausted(format!("pool {pool} has no free ENI ({total} in the pool)"))
                })
            })?
            .ok_or_else(|| PluginError::PoolExhausted(format!("pool {pool} has no ENI")))?;
            (Some(rec.clone()), true, rec.pci, rec.mac, None)
        }
        DeviceSelector::Eni(id) => {
            let rec = claim(ctx, |s| Ok(index_where(s, |e| e.eni_id.as_ref() == Some(id))))?
                .ok_or_else(|| PluginError::DeviceNotFound(format!("ENI {id} is not in this node's state")))?;
            (Some(rec.clone()), true, rec.pci, rec.mac, None)
        }
        DeviceSelector::Pci(p) => {
            let p = *p;
            if let Some(rec) = claim(ctx, |s| Ok(index_where(s, |e| e.pci == Some(p))))? {
                (Some(rec.clone()), true, Some(p), rec.mac, None)
            } else {
                if !ctx.bus.exists(p) {
                    return Err(PluginError::DeviceNotFound(format!(
                        "PCI device {p} does not exist (under {})",
                        ctx.bus.root().display()
                    )));
                }
                let link = match ctx.bus.netdevs(p)?.first() {
                    Some(name) => host.link_by_name(name)?,
                    None => None,
                };
                (None, false, Some(p), link.as_ref().and_then(|l| l.mac), link)
            }
        }
        DeviceSelector::Ifname(name) => {
            let link = host.link_by_name(name.as_str())?;
            let Some(link) = link else {
                return Err(not_on_host(ctx, &selector.to_string(), |r| {
                    r.host.as_ref().is_some_and(|h| h.name == name.as_str())
                }));
            };
            let mac = link.mac;
            let rec = pool_record_by_mac(ctx, mac)?;
            (rec.clone(), rec.is_some(), ctx.bus.pci_of_netdev(&link.name), mac, Some(link))
        }
        DeviceSelector::Mac(m) => {
            let link = host.links_by_mac(*m)?.into_iter().find(|l| l.mac == Some(*m));
            // A host link, in the node's own namespace: no pod can have made it.
            if link.is_none() {
                return Err(not_on_host(ctx, &selector.to_string(), |r| r.mac == Some(*m)));
            }
            let rec = pool_record_by_mac(ctx, Some(*m))?;
            let pci = link.as_ref().and_then(|l| ctx.bus.pci_of_netdev(&l.name));
            (rec.clone(), rec.is_some(), pci, Some(*m), link)
        }
    };

    if record.is_none() && !ctx.settings.allow_standalone_devices {
        let file = match (&ctx.settings.node_file, &ctx.settings.daemon_state) {
            (Some(f), _) => format!("the node file ({})", f.display()),
            (None, Some(state)) => format!(
                "without a node file, where the daemon's node state ({}) says it runs, the node file's default",
                state.display()
            ),
            (None, None) => "the node file".into(),
        };
        return Err(PluginError::Refused(format!(
            "{selector} is not an ENI of this node's pools, and {file} does not allow standalone devices \
             (allowStandaloneDevices)"
        )));
    }
    if pci.is_none()
        && let Some(l) = &link
    {
        pci = ctx.bus.pci_of_netdev(&l.name);
    }
    let current_driver = match pci {
        Some(p) if ctx.bus.exists(p) => ctx.bus.driver(p)?,
        _ => None,
    };
    let bound_to_dpdk = current_driver.as_ref().is_some_and(|d| d.as_str().parse::<DpdkDriver>().is_ok());
    let mode = match (conf.mode, record.as_ref().map(|r| r.mode)) {
        (Some(m), _) => m,
        (None, Some(Mode::Dpdk)) => HandOver::Dpdk,
        (None, _) if bound_to_dpdk => HandOver::Dpdk,
        _ => HandOver::Kernel,
    };
    // The config's driver, else the pool's (checked when the node state was read).
    let dpdk_driver = match (conf_dpdk_driver(conf)?, record.as_ref().and_then(|r| r.dpdk_driver)) {
        (Some(d), _) => d,
        (None, Some(d)) if mode == HandOver::Dpdk => d,
        _ => DpdkDriver::default(),
    };
    if mode == HandOver::Dpdk && pci.is_none() {
        return Err(PluginError::DeviceNotFound(format!(
            "{selector} has no PCI address, which DPDK mode needs (is it a real ENA device?)"
        )));
    }
    if mode == HandOver::Kernel && mac.is_none() {
        // A PCI device without a netdev is bound to a userspace driver: not usable as a kernel netdev.
        let link = match pci {
            Some(p) => ctx.bus.netdevs(p)?.first().map(|n| host.link_by_name(n)).transpose()?.flatten(),
            None => None,
        };
        mac = link.and_then(|l| l.mac);
        if mac.is_none() {
            return Err(PluginError::DeviceNotFound(format!(
                "{selector} has no netdev in the host network namespace (driver {:?})",
                current_driver.as_ref().map(|d| d.as_str())
            )));
        }
    }
    Ok(Target { mode, mac, pci, eni_id: record.as_ref().and_then(|r| r.eni_id.clone()), record, claimed, dpdk_driver })
}

/// The config's `dpdkDriver` (checked when the config was parsed).
pub fn conf_dpdk_driver(conf: &NetConf) -> Result<Option<DpdkDriver>> {
    match conf.dpdk_driver.as_deref() {
        Some(d) => Ok(Some(d.parse().map_err(|e: String| CniError::invalid_config(format!("dpdkDriver: {e}")))?)),
        None => Ok(None),
    }
}

fn pool_record_by_mac(ctx: &Ctx, mac: Option<MacAddr>) -> Result<Option<EniRecord>> {
    let Some(mac) = mac else { return Ok(None) };
    claim(ctx, |s| Ok(index_where(s, |e| e.mac == Some(mac))))
}

/// A device missing from the host: in use by another attachment, or unknown.
fn not_on_host(
    ctx: &Ctx,
    what: &str,
    held: impl Fn(&nodeeni_state::attachment::AttachmentRecord) -> bool,
) -> PluginError {
    match ctx.attachments.list() {
        Ok(records) => match records.iter().find(|r| held(r)) {
            Some(r) => PluginError::DeviceInUse(format!(
                "{what} is already given to container {} ({})",
                r.container_id, r.ifname
            )),
            None => PluginError::DeviceNotFound(format!("{what} not found in the host network namespace")),
        },
        Err(e) => e.into(),
    }
}
