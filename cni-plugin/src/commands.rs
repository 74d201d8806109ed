//! ADD, DEL, CHECK, STATUS and GC. Each step of ADD has its undo ready; DEL works from the record ADD
//! wrote, with or without the daemon, the pod's namespace, or a prevResult.

use nodeeni_conf::Mode;
use nodeeni_conf::cni::{CniError, CniResult, HandOver, codes};
use nodeeni_conf::pool::DpdkDriver;
use nodeeni_host::netlink::Netlink;
use nodeeni_host::netns::NetNs;
use nodeeni_host::pci::DriverState;
use nodeeni_state::attachment::{AttachmentRecord, DriverBefore, Phase};
use nodeeni_state::node::{Lifecycle, now_unix};

use crate::context::Ctx;
use crate::device::{self, Target};
use crate::error::{PluginError, Result, UndoError, UndoErrors};
use crate::link_ops::LinkOps;
use crate::{dpdk, ipam, kernel};

#[cfg(test)]
mod tests;

/// Our interface and addresses appended to whatever earlier plugins in the chain reported.
fn merge(prev: Option<&CniResult>, ours: CniResult) -> CniResult {
    let mut out = prev.cloned().unwrap_or_default();
    let index = out.interfaces.len();
    out.interfaces.extend(ours.interfaces);
    out.ips.extend(ours.ips.into_iter().map(|mut ip| {
        ip.interface = Some(index);
        ip
    }));
    out.routes.extend(ours.routes);
    if out.dns.is_empty() {
        out.dns = ours.dns;
    }
    out
}

pub fn add(ctx: &Ctx) -> Result<CniResult> {
    let (container, ifname) = ctx.attachment_key()?;
    // A record from an ADD that never finished: undo it first, then start clean.
    if let Some(old) = ctx.attachments.load(container, ifname)? {
        if old.phase == Phase::Added
            && let Some(result) = old.result
        {
            tracing::info!("ADD repeated for a finished attachment; returning its result");
            return Ok(result);
        }
        tracing::warn!("found an unfinished ADD for this attachment; undoing it first");
        undo_record(ctx, &old)?;
    }
    let netns = ctx.netns_path().ok_or_else(|| CniError::invalid_env("CNI_NETNS is required for ADD"))?;
    let pod_ns = NetNs::open(netns)?;
    let host_ns = NetNs::current()?;
    let mut host = Netlink::open()?;
    add_in(ctx, &mut host, || Ok(Netlink::open_in(&pod_ns)?), &host_ns, &pod_ns)
}

/// ADD from resolving the device on: through the host's link operations and, for kernel mode, the
/// pod's (`open_pod`, opened only once the device is locked); a claim this call made is released when
/// it fails.
fn add_in<P: LinkOps>(
    ctx: &Ctx,
    host: &mut impl LinkOps,
    open_pod: impl FnOnce() -> Result<P>,
    host_ns: &NetNs,
    pod_ns: &NetNs,
) -> Result<CniResult> {
    let (container, ifname) = ctx.attachment_key()?;
    let target = device::resolve(ctx, host)?;
    let shown = |v: Option<String>| v.unwrap_or_else(|| "-".into());
    let span = tracing::info_span!(
        "add",
        eni = %shown(target.eni_id.as_ref().map(ToString::to_string)),
        mac = %shown(target.mac.map(|m| m.to_string())),
        pci = %shown(target.pci.map(|p| p.to_string())),
        mode = ?target.mode,
    );
    let _enter = span.enter();
    let outcome = (|| {
        // resolve() guarantees a MAC (kernel) or a PCI address (DPDK); the ENI ID stands in otherwise.
        let _locks = lock_all(ctx, &target.lock_keys())?;
        match target.mode {
            HandOver::Kernel => {
                let mut pod = open_pod()?;
                add_kernel(ctx, &target, host, &mut pod, host_ns, pod_ns)
            }
            HandOver::Dpdk => add_dpdk(ctx, &target),
        }
    })();
    match outcome {
        Ok(result) => {
            tracing::info!(ifname, "ENI handed to the pod");
            Ok(result)
        }
        Err(e) => {
            if target.claimed
                && let Err(release) = device::release(ctx, container, ifname)
            {
                let failed = UndoError::Release(Box::new(release));
                return Err(match e {
                    PluginError::UndoFailed { error, mut undo } => {
                        undo.push(failed);
                        PluginError::UndoFailed { error, undo }
                    }
                    e => PluginError::UndoFailed { error: Box::new(e), undo: failed.into() },
                });
            }
            Err(e)
        }
    }
}

fn new_record(ctx: &Ctx, target: &Target) -> Result<AttachmentRecord> {
    let (container, ifname) = ctx.attachment_key()?;
    Ok(AttachmentRecord {
        container_id: container.clone(),
        ifname: ifname.to_string(),
        netns: ctx.netns_path().map(|p| p.display().to_string()),
        network: ctx.conf.name.clone(),
        mode: target.mode,
        phase: Phase::Adding,
        eni_id: target.eni_id.clone(),
        mac: target.mac,
        pci: target.pci,
        host: None,
        dpdk_driver: (target.mode == HandOver::Dpdk).then_some(target.dpdk_driver),
        driver_before: DriverBefore::NotCaptured,
        netdevs_before: Vec::new(),
        ipam_type: ctx.conf.ipam_type.clone(),
        claimed_from_pool: target.claimed,
        result: None,
        created_unix: now_unix(),
        network_config: Some(network_config(&ctx.conf.raw)),
    })
}

/// Refuses a device another attachment's record holds (a standalone device has no node-state claim).
fn refuse_if_held(ctx: &Ctx, target: &Target) -> Result<()> {
    let (container, ifname) = ctx.attachment_key()?;
    for r in ctx.attachments.list()? {
        let same_device =
            (target.mac.is_some() && r.mac == target.mac) || (target.pci.is_some() && r.pci == target.pci);
        if same_device && !(r.container_id == *container && r.ifname == ifname) {
            return Err(PluginError::DeviceInUse(format!(
                "the device is already given to container {} ({})",
                r.container_id, r.ifname
            )));
        }
    }
    Ok(())
}

fn this_call<'a>(ctx: &'a Ctx) -> Result<ipam::For<'a>> {
    let (container_id, ifname) = ctx.attachment_key()?;
    Ok(ipam::For { container_id: container_id.as_str(), ifname, netns: ctx.netns_path().and_then(|p| p.to_str()) })
}

fn addresses_for(ctx: &Ctx, target: &Target) -> Result<CniResult> {
    let mut result = match (&ctx.conf.ipam_type, &target.record) {
        (Some(plugin), _) => ipam::delegate(plugin, "ADD", this_call(ctx)?, ctx.env, ctx.conf)?.unwrap_or_default(),
        // DPDK apps run their own stack: the VPC addresses are reported when known, never required.
        (None, Some(record)) if target.mode == HandOver::Dpdk && record.vpc_addresses().is_empty() => {
            CniResult::default()
        }
        (None, Some(record)) => ipam::vpc_addresses(record)?,
        (None, None) => CniResult::default(),
    };
    if !ctx.conf.dns.is_empty() {
        result.dns = ctx.conf.dns.clone();
    }
    Ok(result)
}

/// The addresses, or, when getting them failed, the record forgotten (nothing was changed yet, and a
/// delegate whose ADD failed has cleaned up after itself: no IPAM DEL for it).
fn addresses_or_forget(ctx: &Ctx, target: &Target, record: &AttachmentRecord) -> Result<CniResult> {
    addresses_for(ctx, target).or_else(|e| {
        ctx.attachments.remove(&record.container_id, &record.ifname)?;
        Err(e)
    })
}

/// Kernel ADD through the host's and the pod's link operations (a netlink socket in each namespace).
fn add_kernel(
    ctx: &Ctx,
    target: &Target,
    host: &mut impl LinkOps,
    pod: &mut impl LinkOps,
    host_ns: &NetNs,
    pod_ns: &NetNs,
) -> Result<CniResult> {
    let (_, ifname) = ctx.attachment_key()?;
    let mac = target.mac.ok_or_else(|| PluginError::DeviceNotFound("the device has no MAC".into()))?;
    if pod.link_by_name(ifname)?.is_some() {
        return Err(PluginError::IfnameExists { ifname: ifname.to_string() });
    }
    // Under the device lock now: look again, the device may have moved since we resolved it.
    let link = kernel::find(host, &kernel::Identity::on_host(mac, target.pci))?
        .ok_or_else(|| PluginError::DeviceInUse(format!("{mac} left the host namespace while waiting for its lock")))?;
    refuse_if_held(ctx, target)?;
    let mut record = new_record(ctx, target)?;
    // Kept only where the kernel vouches for the device: DEL then takes nothing without that identity.
    record.pci = kernel::vouched_pci(&link, target.pci);
    record.host = Some(kernel::capture(host, &link)?);
    ctx.attachments.save(&record)?;

    let addresses = addresses_or_forget(ctx, target, &record)?;
    let steps = (|| {
        let mtu = ctx.conf.mtu.or(target.record.as_ref().and_then(|r| r.mtu));
        let moved = kernel::move_in(host, pod, pod_ns, &link, ifname, mtu, &addresses)?;
        let sandbox = pod_ns.path().display().to_string();
        let iface = kernel::interface(&moved, &sandbox, target.pci.map(|p| p.to_string()));
        Ok(merge(ctx.conf.prev_result.as_ref(), CniResult { interfaces: vec![iface], ..addresses.clone() }))
    })();
    finish_add(ctx, record, steps, |record| undo_kernel(ctx, record, Some(pod), host, host_ns))
}

fn add_dpdk(ctx: &Ctx, target: &Target) -> Result<CniResult> {
    let pci = target.pci.ok_or_else(|| PluginError::DeviceNotFound("DPDK mode needs a PCI address".into()))?;
    refuse_if_held(ctx, target)?;
    let before = ctx.bus.state(pci)?;
    let mut record = new_record(ctx, target)?;
    record.driver_before = DriverBefore::from(before.driver.clone());
    record.netdevs_before = before.netdevs.clone();
    ctx.attachments.save(&record)?;
    let addresses = addresses_or_forget(ctx, target, &record)?;
    let steps = (|| {
        dpdk::bind(ctx, pci, target.dpdk_driver)?;
        let (_, ifname) = ctx.attachment_key()?;
        let netns = ctx.netns_path().map(|p| p.display().to_string());
        let iface = dpdk::interface(ifname, netns.as_deref(), target.mac.map(|m| m.to_string()), pci);
        Ok(merge(ctx.conf.prev_result.as_ref(), CniResult { interfaces: vec![iface], ..addresses.clone() }))
    })();
    // bind() already rolled the driver back on failure; what is left to undo is IPAM.
    finish_add(ctx, record, steps, |record| ipam_del(ctx, record).map_err(|e| UndoError::IpamDel(Box::new(e)).into()))
}

/// Ends an ADD: on success the record says Added, with the result CHECK and a repeated ADD use; on
/// failure `undo` runs, and the record is forgotten only if undoing worked (a DEL retry needs it).
fn finish_add(
    ctx: &Ctx,
    mut record: AttachmentRecord,
    steps: Result<CniResult>,
    undo: impl FnOnce(&AttachmentRecord) -> std::result::Result<(), UndoErrors>,
) -> Result<CniResult> {
    match steps {
        Ok(result) => {
            record.phase = Phase::Added;
            record.result = Some(result.clone());
            ctx.attachments.save(&record)?;
            Ok(result)
        }
        Err(e) => match undo(&record) {
            Ok(()) => {
                ctx.attachments.remove(&record.container_id, &record.ifname)?;
                Err(e)
            }
            Err(undo) => Err(PluginError::UndoFailed { error: Box::new(e), undo }),
        },
    }
}

fn ipam_del(ctx: &Ctx, record: &AttachmentRecord) -> Result<()> {
    let who = ipam::For {
        container_id: record.container_id.as_str(),
        ifname: &record.ifname,
        netns: record.netns.as_deref(),
    };
    match &record.ipam_type {
        Some(plugin) => ipam::delegate(plugin, "DEL", who, ctx.env, ctx.conf).map(drop),
        None => Ok(()),
    }
}

/// Kernel undo: out of the pod (if it is there), back to its host state, IPAM released. Every step is
/// tried; the failures are gathered, in order.
fn undo_kernel(
    ctx: &Ctx,
    record: &AttachmentRecord,
    pod: Option<&mut impl LinkOps>,
    host: &mut impl LinkOps,
    host_ns: &NetNs,
) -> std::result::Result<(), UndoErrors> {
    let mut errors = UndoErrors::default();
    if let (Some(mac), Some(before)) = (record.mac, &record.host) {
        // Never the MAC alone: the pod may have given another link the ENI's MAC (kernel::find). ADD set
        // the alias to the host name before the move, recorded the ifindex, and kept the PCI device
        // only where the kernel vouched for it (then nothing without that hardware identity is taken).
        let id = kernel::Identity::recorded(mac, record.pci, before);
        if let Some(pod) = pod
            && let Err(e) = kernel::move_out(pod, host_ns, &id, &before.name)
        {
            errors.push(UndoError::MoveOut(e));
        }
        match kernel::restore_on_host(host, &id, before) {
            Ok(true) => {}
            Ok(false) => tracing::warn!(%mac, "device not found on the host (detached?); nothing to restore"),
            Err(e) => errors.push(UndoError::RestoreOnHost(e)),
        }
    }
    if let Err(e) = ipam_del(ctx, record) {
        errors.push(UndoError::IpamDel(Box::new(e)));
    }
    errors.into_result()
}

/// DPDK undo: the device back on the driver it had (waiting for its netdevs), IPAM released. As in
/// kernel mode, every step is tried and the failures are gathered, in order: a driver that cannot be
/// restored does not keep the addresses from being released.
fn undo_dpdk(ctx: &Ctx, record: &AttachmentRecord) -> std::result::Result<(), UndoErrors> {
    let mut errors = UndoErrors::default();
    if let (Some(pci), Some(driver)) = (record.pci, record.driver_before.captured()) {
        let before = DriverState { driver: driver.cloned(), netdevs: record.netdevs_before.clone() };
        match driver.filter(|d| !dpdk::may_restore(ctx, d)) {
            Some(unknown) => errors.push(UndoError::UnknownDriver { pci, driver: unknown.to_string() }),
            None => {
                if let Err(source) = dpdk::restore(ctx, pci, &before) {
                    errors.push(UndoError::RestoreDriver { pci, source });
                }
            }
        }
    }
    if let Err(e) = ipam_del(ctx, record) {
        errors.push(UndoError::IpamDel(Box::new(e)));
    }
    errors.into_result()
}

/// The device's locks, in the order of `keys` (see [`device::lock_keys`]); none known: the empty key.
fn lock_all(ctx: &Ctx, keys: &[String]) -> Result<Vec<nodeeni_state::lock::LockGuard>> {
    if keys.is_empty() {
        return Ok(vec![ctx.locks.lock("", ctx.lock_timeout)?]);
    }
    keys.iter().map(|k| Ok(ctx.locks.lock(k, ctx.lock_timeout)?)).collect()
}

fn record_locks(ctx: &Ctx, record: &AttachmentRecord) -> Result<Vec<nodeeni_state::lock::LockGuard>> {
    lock_all(ctx, &device::lock_keys(record.mac, record.pci, record.eni_id.as_ref()))
}

/// Undoes whatever `record` says was done, under the device lock, then forgets it.
fn undo_record(ctx: &Ctx, record: &AttachmentRecord) -> Result<()> {
    let _locks = record_locks(ctx, record)?;
    undo_locked(ctx, record)
}

/// GC's undo of a record it listed: decided again under the device lock, from the record as it is
/// now. Between the listing and the lock a DEL may have undone it and another pod's ADD taken the
/// device; undoing the listed copy then would take that pod's device. `Ok(false)`: left alone.
fn collect_record(ctx: &Ctx, listed: &AttachmentRecord) -> Result<bool> {
    let _locks = record_locks(ctx, listed)?;
    match ctx.attachments.load(&listed.container_id, &listed.ifname)? {
        Some(now) if now == *listed => {
            undo_locked(ctx, &now)?;
            Ok(true)
        }
        _ => {
            tracing::info!(container = %listed.container_id, ifname = listed.ifname, "GC: the record changed or went since it was listed; left alone");
            Ok(false)
        }
    }
}

/// The namespaces a kernel undo works in: the host's, its netlink socket, and the pod's socket if the
/// pod's namespace is still there.
type UndoSides<H, P> = (NetNs, H, Option<P>);

/// The real sides: this namespace and, when it still exists, the record's pod namespace.
fn open_undo_sides(record: &AttachmentRecord) -> Result<UndoSides<Netlink, Netlink>> {
    let host_ns = NetNs::current()?;
    let host = Netlink::open()?;
    // A pod namespace that is gone is normal at DEL: the kernel has returned an ENA netdev to the host
    // already, and restore_on_host finds it there (by MAC and hardware identity).
    let pod = match record.netns.as_deref().map(NetNs::open) {
        Some(Ok(ns)) => Some(Netlink::open_in(&ns)?),
        Some(Err(e)) => {
            tracing::info!(error = %e, "pod namespace gone; looking for the device on the host");
            None
        }
        None => None,
    };
    Ok((host_ns, host, pod))
}

/// [`undo_record`] with the device lock held.
fn undo_locked(ctx: &Ctx, record: &AttachmentRecord) -> Result<()> {
    undo_locked_in(ctx, record, open_undo_sides)
}

/// [`undo_locked`] through the link operations `open` gives (kernel mode): undo, release the claim,
/// forget the record, in that order, so a failed undo keeps the record for the next DEL.
fn undo_locked_in<H: LinkOps, P: LinkOps>(
    ctx: &Ctx,
    record: &AttachmentRecord,
    open: impl FnOnce(&AttachmentRecord) -> Result<UndoSides<H, P>>,
) -> Result<()> {
    match record.mode {
        HandOver::Kernel => {
            let (host_ns, mut host, mut pod) = open(record)?;
            undo_kernel(ctx, record, pod.as_mut(), &mut host, &host_ns).map_err(PluginError::Cleanup)?;
        }
        HandOver::Dpdk => undo_dpdk(ctx, record).map_err(PluginError::Cleanup)?,
    }
    device::release(ctx, &record.container_id, &record.ifname)?;
    ctx.attachments.remove(&record.container_id, &record.ifname)?;
    tracing::info!(container = %record.container_id, ifname = record.ifname, "attachment undone");
    Ok(())
}

pub fn del(ctx: &Ctx) -> Result<()> {
    let (container, ifname) = ctx.attachment_key()?;
    match ctx.attachments.load(container, ifname)? {
        Some(record) => undo_record(ctx, &record),
        None => {
            // Nothing of ours to undo (a repeated DEL, or ADD never got far): still release IPAM and any
            // pool claim, so nothing leaks, and succeed so the runtime stops retrying.
            tracing::info!("no record for this attachment; DEL has nothing to undo on the host");
            if let Some(plugin) = &ctx.conf.ipam_type {
                ipam::delegate(plugin, "DEL", this_call(ctx)?, ctx.env, ctx.conf)?;
            }
            device::release(ctx, container, ifname)?;
            Ok(())
        }
    }
}

pub fn check(ctx: &Ctx) -> Result<()> {
    let (container, ifname) = ctx.attachment_key()?;
    let record = ctx
        .attachments
        .load(container, ifname)?
        .filter(|r| r.phase == Phase::Added)
        .ok_or_else(|| PluginError::CheckMismatch(format!("no finished ADD for {container}/{ifname}")))?;
    // The chain's final result, as the runtime passes it, is what must hold now; plugins after us may
    // have changed what we set (tuning's MTU). Our own record stands in when no prevResult came.
    let expected = ctx.conf.prev_result.clone().or_else(|| record.result.clone()).unwrap_or_default();
    match record.mode {
        HandOver::Kernel => {
            let netns = ctx.netns_path().ok_or_else(|| CniError::invalid_env("CNI_NETNS is required for CHECK"))?;
            let mut pod = Netlink::open_in(&NetNs::open(netns)?)?;
            kernel::verify(&mut pod, ifname, &expected)?;
        }
        HandOver::Dpdk => {
            let pci = record.pci.ok_or_else(|| PluginError::CheckMismatch("record has no PCI address".into()))?;
            let driver = ctx.bus.driver(pci)?.map(|d| d.to_string());
            let bound = driver.as_deref().and_then(|d| d.parse::<DpdkDriver>().ok());
            // The config's driver, else the one ADD bound (records before it was kept: any DPDK driver).
            let want = device::conf_dpdk_driver(ctx.conf)?.or(record.dpdk_driver);
            let ok = match want {
                Some(w) => bound == Some(w),
                None => bound.is_some(),
            };
            if !ok {
                return Err(PluginError::CheckMismatch(format!("{pci} is bound to {driver:?}, not a DPDK driver")));
            }
        }
    }
    if let Some(plugin) = &ctx.conf.ipam_type {
        // Delegates check against the prevResult; when the caller sent none, ours is the one to use.
        let mut conf = ctx.conf.clone();
        if conf.prev_result.is_none()
            && let serde_json::Value::Object(m) = &mut conf.raw
        {
            m.insert("prevResult".into(), expected.to_json(&conf.cni_version_str));
        }
        ipam::delegate(plugin, "CHECK", this_call(ctx)?, ctx.env, &conf)?;
    }
    Ok(())
}

/// STATUS: ready unless the node state cannot be read, or the configured pool has no usable ENI.
pub fn status(ctx: &Ctx) -> Result<()> {
    let unavailable = |msg: String| PluginError::Cni(CniError::new(codes::PLUGIN_NOT_AVAILABLE, msg, ""));
    let pool = match &ctx.conf.device {
        Some(nodeeni_conf::cni::DeviceSelector::Pool(p)) => Some(p.clone()),
        _ => None,
    };
    if !ctx.node.exists() {
        return match pool {
            Some(p) => Err(unavailable(format!(
                "pool {p} is configured but there is no node state at {} (is the nodeeni daemon running?)",
                ctx.node.path().display()
            ))),
            None => Ok(()),
        };
    }
    let state = ctx.node.load(ctx.lock_timeout).map_err(|e| unavailable(format!("node state unreadable: {e}")))?;
    if let Some(p) = pool {
        let usable = state
            .enis
            .iter()
            .filter(|e| e.pool == p && e.lifecycle == Lifecycle::Ready && e.mode != Mode::Host)
            .count();
        if usable == 0 {
            return Err(unavailable(format!("pool {p} has no usable ENI")));
        }
    }
    Ok(())
}

/// Keys of a plugin's configuration that the runtime (or Multus) sets per call rather than the
/// network's author: the negotiated version, capability answers, args, the chain's result, GC's list,
/// and the device Multus adds from each pod's allocation.
const PER_CALL_KEYS: &[&str] = &[
    "cniVersion",
    "cniVersions",
    "runtimeConfig",
    "args",
    "prevResult",
    "cni.dev/valid-attachments",
    "deviceID",
    "pciBusID",
];

/// What defines the network: its configuration less [`PER_CALL_KEYS`]. ADD records it; GC compares.
pub fn network_config(raw: &serde_json::Value) -> serde_json::Value {
    let mut conf = raw.clone();
    if let Some(m) = conf.as_object_mut() {
        for key in PER_CALL_KEYS {
            m.remove(*key);
        }
    }
    conf
}

/// Why GC leaves an attachment it was not told to keep.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Keep {
    /// The record predates recorded configurations: nothing shows which network it is of.
    Unproven,
    /// Another network of the same name (another namespace's NetworkAttachmentDefinition).
    OtherConfig,
    /// Its pod's network namespace still exists (or cannot be judged): the attachment may be live.
    PodAlive(String),
}

/// Whether GC, called with configuration `ours`, may undo `record`, which the runtime did not list.
///
/// GC receives the network's configuration and the attachments still valid, nothing else (no CNI_ARGS,
/// no namespace of a NetworkAttachmentDefinition), and the spec makes GC per network: only what is
/// known to be this network's goes. Names repeat across namespaces, so a record must also carry this
/// very configuration. Two identical configurations (one copied into two namespaces) cannot be told
/// apart by anything GC receives, so the record's pod must be gone too: its network namespace no
/// longer exists. Undoing a dead attachment of an identical twin does what the twin's own GC would
/// (same configuration, same IPAM); a live attachment is never undone, whoever's it is.
fn may_collect(record: &AttachmentRecord, ours: &serde_json::Value) -> std::result::Result<(), Keep> {
    match &record.network_config {
        None => return Err(Keep::Unproven),
        Some(theirs) if theirs != ours => return Err(Keep::OtherConfig),
        Some(_) => {}
    }
    let Some(netns) = record.netns.as_deref() else {
        return Err(Keep::PodAlive("no pod namespace was recorded".into()));
    };
    match NetNs::open(netns) {
        Ok(_) => Err(Keep::PodAlive(format!("its pod's network namespace {netns} still exists"))),
        Err(nodeeni_host::netns::NetnsError::NotANetns { .. }) => Ok(()),
        Err(nodeeni_host::netns::NetnsError::Open { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
            Ok(())
        }
        Err(e) => Err(Keep::PodAlive(format!("cannot tell whether its pod is gone: {e}"))),
    }
}

/// GC: undo the attachments of this network that the runtime no longer lists and whose pods are gone
/// (see [`may_collect`] for what proves an attachment this network's).
pub fn gc(ctx: &Ctx) -> Result<()> {
    // The spec requires the key; without it an empty list would undo every attachment of the network.
    let valid = ctx.conf.valid_attachments.as_ref().ok_or_else(|| {
        CniError::invalid_config("GC needs cni.dev/valid-attachments (the attachments still in use); refusing to guess")
    })?;
    let ours = network_config(&ctx.conf.raw);
    let mut errors = UndoErrors::default();
    for record in ctx.attachments.list()? {
        if record.network != ctx.conf.name {
            continue;
        }
        let listed = valid.iter().any(|v| v.container_id == record.container_id.as_str() && v.ifname == record.ifname);
        if listed {
            continue;
        }
        match may_collect(&record, &ours) {
            Ok(()) => {}
            Err(Keep::OtherConfig) => {
                tracing::debug!(container = %record.container_id, ifname = record.ifname, "GC: another network of this name (its configuration differs); left alone");
                continue;
            }
            Err(Keep::Unproven) => {
                tracing::info!(container = %record.container_id, ifname = record.ifname, "GC: a record without its network's configuration (written before it was kept) cannot be proven this network's; left for DEL");
                continue;
            }
            Err(Keep::PodAlive(why)) => {
                tracing::info!(container = %record.container_id, ifname = record.ifname, why, "GC: not listed, but its pod may be alive; left for DEL");
                continue;
            }
        }
        tracing::info!(container = %record.container_id, ifname = record.ifname, "GC: releasing a stale attachment");
        if let Err(e) = collect_record(ctx, &record) {
            errors.push(UndoError::Attachment {
                container: record.container_id.clone(),
                ifname: record.ifname.clone(),
                source: Box::new(e),
            });
        }
    }
    errors.into_result().map_err(PluginError::Gc)
}
