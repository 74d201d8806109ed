//! An in-memory EC2 behind the pool's [`Ec2`] trait, so pool behaviour runs in milliseconds under
//! tokio's paused clock. It keeps what the pool needs of EC2's model — subnets, security groups,
//! instances with their device indexes and ENI limits, ENIs with tags, attachments and client-token
//! idempotency — and lets a test break it the ways EC2 breaks:
//!
//! - a fault on the Nth call of an operation: an error before EC2 acts, an answer lost after EC2
//!   acted (a reset), or a crash of the caller after EC2 acted (the call never returns; the test drops
//!   the pass, as a killed process would stop);
//! - latency per operation, a detach that takes time or never finishes;
//! - eventual consistency: a new ENI is missing from tag listings for a while.
//!
//! Every call goes through the real [`Resilient`] layer, as the real client's do, so retries, the
//! breaker and the call counts behave as in production. moto stays for what only a real
//! implementation proves: the SDK's wire format, filters and error codes.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Mutex;
use std::time::Duration;

use nodeeni_conf::pool::Ec2Settings;
use nodeeni_conf::{EniId, InstanceId, MacAddr, SecurityGroupId, SubnetId};
use nodeeni_ipam::ec2::{Attachment, CreateEni, Ec2, Ec2Error, Ec2Result, Eni, Instance, InstanceLimits, Subnet};
use nodeeni_ipam::resilience::Resilient;
use tokio::sync::watch;
use tokio::time::Instant;

/// EC2's limit on a client token.
pub const MAX_CLIENT_TOKEN: usize = 64;

/// How one call goes wrong.
#[derive(Debug, Clone)]
pub enum Fault {
    /// EC2 answers with this error and does nothing.
    Error(Ec2Error),
    /// EC2 does the work; the answer is lost (the caller sees a connection reset).
    LostAnswer,
    /// EC2 does the work; then the caller dies: the call never returns.
    CrashAfter,
}

impl Fault {
    pub fn throttled() -> Self {
        Fault::Error(error("RequestLimitExceeded", "Request limit exceeded.", 503))
    }
    pub fn server_error() -> Self {
        Fault::Error(error("InternalError", "An internal error has occurred", 500))
    }
}

#[derive(Debug)]
struct Rule {
    op: &'static str,
    /// Calls of `op` to let through before the fault applies.
    skip: u64,
    /// How many calls it applies to (u64::MAX: from then on).
    times: u64,
    fault: Fault,
}

#[derive(Debug, Clone)]
struct FakeEni {
    eni: Eni,
    created: Instant,
    client_token: Option<String>,
    /// When a detach in progress completes (None: never, a stuck detach).
    detaching_until: Option<Option<Instant>>,
}

#[derive(Debug, Clone)]
struct FakeInstance {
    instance_type: String,
    az: String,
    state: String,
}

#[derive(Debug, Default)]
struct World {
    subnets: Vec<Subnet>,
    groups: Vec<(String, SecurityGroupId, String)>,
    instances: BTreeMap<InstanceId, FakeInstance>,
    types: BTreeMap<String, InstanceLimits>,
    enis: BTreeMap<EniId, FakeEni>,
    next: u64,
    calls: BTreeMap<&'static str, u64>,
    /// Every call that reached EC2, in order.
    log: Vec<&'static str>,
    rules: Vec<Rule>,
    latency: BTreeMap<&'static str, Duration>,
    listing_lag: Duration,
    detach_takes: Option<Duration>,
}

/// The in-memory EC2. Share it with `Arc`: the pool and the test see the same world.
#[derive(Debug)]
pub struct FakeEc2 {
    pub resilience: Resilient,
    world: Mutex<World>,
    crashes: watch::Sender<u64>,
}

fn error(code: &str, message: &str, status: u16) -> Ec2Error {
    Ec2Error { code: Some(code.into()), message: message.into(), status: Some(status), no_response: false }
}

fn client_error(code: &str, message: impl Into<String>) -> Ec2Error {
    error(code, &message.into(), 400)
}

impl FakeEc2 {
    /// An empty region; the resilience layer as `settings` declare it.
    pub fn new(settings: &Ec2Settings) -> Self {
        let mut world = World { detach_takes: Some(Duration::ZERO), ..World::default() };
        world.types.insert("c5.large".into(), InstanceLimits { max_enis: 3, network_cards: 1, ipv4_per_eni: 10 });
        world.types.insert("c5.xlarge".into(), InstanceLimits { max_enis: 4, network_cards: 1, ipv4_per_eni: 15 });
        world.types.insert("c5.18xlarge".into(), InstanceLimits { max_enis: 15, network_cards: 1, ipv4_per_eni: 50 });
        Self {
            resilience: Resilient::new(settings.retry.clone(), settings.circuit_breaker.clone(), &settings.rate_limit),
            world: Mutex::new(world),
            crashes: watch::channel(0).0,
        }
    }

    fn world(&self) -> std::sync::MutexGuard<'_, World> {
        self.world.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn id(w: &mut World, prefix: &str) -> String {
        w.next += 1;
        format!("{prefix}-{:017x}", w.next)
    }

    pub fn add_subnet(&self, cidr: &str, az: &str, name: Option<&str>) -> SubnetId {
        let mut w = self.world();
        let id: SubnetId = Self::id(&mut w, "subnet").parse().expect("subnet id");
        w.subnets.push(Subnet {
            id: id.clone(),
            cidr: cidr.parse().expect("cidr"),
            availability_zone: az.into(),
            vpc_id: "vpc-fake".into(),
            name: name.map(str::to_string),
        });
        id
    }

    pub fn add_security_group(&self, name: &str) -> SecurityGroupId {
        let mut w = self.world();
        let id: SecurityGroupId = Self::id(&mut w, "sg").parse().expect("sg id");
        w.groups.push((name.into(), id.clone(), "vpc-fake".into()));
        id
    }

    pub fn add_instance(&self, instance_type: &str, az: &str) -> InstanceId {
        let mut w = self.world();
        let id: InstanceId = Self::id(&mut w, "i").parse().expect("instance id");
        w.instances.insert(
            id.clone(),
            FakeInstance { instance_type: instance_type.into(), az: az.into(), state: "running".into() },
        );
        id
    }

    pub fn terminate(&self, instance: &InstanceId) {
        if let Some(i) = self.world().instances.get_mut(instance) {
            i.state = "terminated".into();
        }
    }

    /// The next `times` calls of `op`, after `skip` good ones, go wrong as `fault` says.
    pub fn fail(&self, op: &'static str, skip: u64, times: u64, fault: Fault) {
        self.world().rules.push(Rule { op, skip, times, fault });
    }

    /// Every call of `op` takes `latency` (in tokio's clock).
    pub fn set_latency(&self, op: &'static str, latency: Duration) {
        self.world().latency.insert(op, latency);
    }

    /// New ENIs are missing from tag listings for `lag` after their create.
    pub fn set_listing_lag(&self, lag: Duration) {
        self.world().listing_lag = lag;
    }

    /// How long a detach takes; None: detaches never finish.
    pub fn set_detach_time(&self, takes: Option<Duration>) {
        self.world().detach_takes = takes;
    }

    /// Calls of `op` that reached EC2 (retries included, faults included).
    pub fn calls(&self, op: &str) -> u64 {
        self.world().calls.iter().filter(|(o, _)| **o == op).map(|(_, n)| n).sum()
    }

    /// Every call that reached EC2 so far, in order (retries and faults included).
    pub fn call_log(&self) -> Vec<&'static str> {
        self.world().log.clone()
    }

    /// How many calls have crashed their caller so far.
    pub fn crashes(&self) -> u64 {
        *self.crashes.borrow()
    }

    /// Waits until `n` calls have crashed their caller in all.
    pub async fn crashed(&self, n: u64) {
        let mut rx = self.crashes.subscribe();
        let _ = rx.wait_for(|c| *c >= n).await;
    }

    /// Every ENI, as a describe by ID would show it.
    pub fn enis(&self) -> Vec<Eni> {
        let mut w = self.world();
        let now = Instant::now();
        settle(&mut w, now);
        w.enis.values().map(|e| e.eni.clone()).collect()
    }

    /// Changes an ENI behind nodeeni's back.
    pub fn edit(&self, id: &EniId, f: impl FnOnce(&mut Eni)) {
        if let Some(e) = self.world().enis.get_mut(id) {
            f(&mut e.eni);
        }
    }

    /// Creates an ENI as someone else would (the console, another tool).
    pub fn create_outside(&self, subnet: &SubnetId, tags: BTreeMap<String, String>) -> EniId {
        let req = CreateEni {
            subnet_id: subnet.clone(),
            security_groups: Vec::new(),
            description: None,
            secondary_ip_count: 0,
            tags,
            client_token: String::new(),
        };
        let mut w = self.world();
        create(&mut w, &req, Instant::now()).expect("create outside").id
    }

    /// Attaches an ENI as someone else would.
    pub fn attach_outside(&self, eni: &EniId, instance: &InstanceId, index: u32) {
        let mut w = self.world();
        attach(&mut w, eni, instance, index).expect("attach outside");
    }

    /// Deletes an ENI as someone else would (detached first, forcibly).
    pub fn delete_outside(&self, eni: &EniId) {
        self.world().enis.remove(eni);
    }

    /// One attempt of `op`: latency, then a fault or the change `f` makes to the world.
    async fn attempt<T>(
        &self,
        op: &'static str,
        f: &(impl Fn(&mut World, Instant) -> Result<T, Ec2Error> + Sync),
    ) -> Result<T, Ec2Error> {
        let latency = self.world().latency.get(op).copied().unwrap_or_default();
        if !latency.is_zero() {
            tokio::time::sleep(latency).await;
        }
        let (fault, out) = {
            let mut w = self.world();
            *w.calls.entry(op).or_default() += 1;
            w.log.push(op);
            let fault = w.rules.iter_mut().find(|r| r.op == op && (r.skip > 0 || r.times > 0)).and_then(|r| {
                if r.skip > 0 {
                    r.skip -= 1;
                    None
                } else {
                    if r.times != u64::MAX {
                        r.times -= 1;
                    }
                    Some(r.fault.clone())
                }
            });
            if let Some(Fault::Error(e)) = fault {
                return Err(e);
            }
            let now = Instant::now();
            settle(&mut w, now);
            (fault, f(&mut w, now))
        };
        match fault {
            Some(Fault::LostAnswer) => Err(Ec2Error {
                code: None,
                message: "connection reset by peer".into(),
                status: None,
                no_response: true,
            }),
            Some(Fault::CrashAfter) => {
                self.crashes.send_modify(|c| *c += 1);
                std::future::pending().await
            }
            _ => out,
        }
    }

    async fn call<T>(
        &self,
        op: &'static str,
        mutating: bool,
        f: impl Fn(&mut World, Instant) -> Result<T, Ec2Error> + Sync,
    ) -> Ec2Result<T> {
        self.resilience.call(op, mutating, || self.attempt(op, &f)).await
    }
}

/// Detaches whose time has come complete.
fn settle(w: &mut World, now: Instant) {
    for e in w.enis.values_mut() {
        if let Some(Some(until)) = e.detaching_until
            && now >= until
        {
            e.eni.attachment = None;
            e.eni.status = "available".into();
            e.detaching_until = None;
        }
    }
}

fn create(w: &mut World, r: &CreateEni, now: Instant) -> Result<Eni, Ec2Error> {
    if r.client_token.len() > MAX_CLIENT_TOKEN {
        return Err(client_error(
            "InvalidParameterValue",
            format!(
                "Value ({}) for parameter clientToken is invalid. Length exceeds {MAX_CLIENT_TOKEN}",
                r.client_token
            ),
        ));
    }
    if !r.client_token.is_empty()
        && let Some(e) = w.enis.values().find(|e| e.client_token.as_deref() == Some(r.client_token.as_str()))
    {
        return Ok(e.eni.clone());
    }
    let subnet = w.subnets.iter().find(|s| s.id == r.subnet_id).cloned().ok_or_else(|| {
        client_error("InvalidSubnetID.NotFound", format!("The subnet ID '{}' does not exist", r.subnet_id))
    })?;
    for g in &r.security_groups {
        if !w.groups.iter().any(|(_, id, _)| id == g) {
            return Err(client_error("InvalidGroup.NotFound", format!("The security group '{g}' does not exist")));
        }
    }
    w.next += 1;
    let n = w.next;
    let id: EniId = format!("eni-{n:017x}").parse().map_err(|_| client_error("InternalError", "bad id"))?;
    let ip = |k: u64| -> IpAddr {
        match subnet.cidr.addr {
            IpAddr::V4(base) => IpAddr::V4(Ipv4Addr::from(u32::from(base) + 4 + (k as u32 % 250))),
            v6 => v6,
        }
    };
    let host = (n * 8) % 240;
    let eni = Eni {
        id: id.clone(),
        subnet_id: Some(subnet.id.clone()),
        mac: Some(MacAddr([0x0a, 0xfe, (n >> 16) as u8, (n >> 8) as u8, n as u8, 0x01])),
        primary_ip: Some(ip(host)),
        secondary_ips: (1..=u64::from(r.secondary_ip_count)).map(|k| ip(host + k)).collect(),
        status: "available".into(),
        attachment: None,
        description: r.description.clone(),
        security_groups: r.security_groups.iter().map(|g| g.to_string()).collect(),
        tags: r.tags.clone(),
    };
    let token = (!r.client_token.is_empty()).then(|| r.client_token.clone());
    w.enis.insert(id, FakeEni { eni: eni.clone(), created: now, client_token: token, detaching_until: None });
    Ok(eni)
}

fn used_indexes(w: &World, instance: &InstanceId) -> Vec<u32> {
    let mut used = vec![0]; // the primary ENI
    used.extend(w.enis.values().filter_map(|e| {
        let a = e.eni.attachment.as_ref()?;
        (a.instance_id.as_deref() == Some(instance.as_str())).then_some(a.device_index?)
    }));
    used.sort_unstable();
    used
}

fn attach(w: &mut World, eni: &EniId, instance: &InstanceId, index: u32) -> Result<String, Ec2Error> {
    let inst = w.instances.get(instance).cloned().ok_or_else(|| {
        client_error("InvalidInstanceID.NotFound", format!("The instance ID '{instance}' does not exist"))
    })?;
    let limits = w.types.get(&inst.instance_type).copied().unwrap_or(InstanceLimits {
        max_enis: 2,
        network_cards: 1,
        ipv4_per_eni: 4,
    });
    let used = used_indexes(w, instance);
    let Some(e) = w.enis.get(eni) else {
        return Err(client_error(
            "InvalidNetworkInterfaceID.NotFound",
            format!("The networkInterface ID '{eni}' does not exist"),
        ));
    };
    if e.eni.attachment.is_some() {
        return Err(client_error("InvalidNetworkInterface.InUse", format!("Interface: {eni} in use.")));
    }
    if used.contains(&index) {
        return Err(client_error(
            "InvalidParameterValue",
            format!("Instance '{instance}' already has an interface attached at device index '{index}'."),
        ));
    }
    if used.len() as u32 >= limits.max_enis {
        return Err(client_error(
            "AttachmentLimitExceeded",
            format!("Interface count {} exceeds the limit for {}", used.len() + 1, inst.instance_type),
        ));
    }
    let attachment = format!("eni-attach-{:017x}", w.next + 1);
    w.next += 1;
    if let Some(e) = w.enis.get_mut(eni) {
        e.eni.status = "in-use".into();
        e.eni.attachment = Some(Attachment {
            id: attachment.clone(),
            instance_id: Some(instance.to_string()),
            device_index: Some(index),
            status: "attached".into(),
            delete_on_termination: Some(false),
        });
    }
    Ok(attachment)
}

fn by_attachment<'a>(w: &'a mut World, attachment: &str) -> Option<&'a mut FakeEni> {
    w.enis.values_mut().find(|e| e.eni.attachment.as_ref().is_some_and(|a| a.id == attachment))
}

fn no_eni(id: &EniId) -> Ec2Error {
    client_error("InvalidNetworkInterfaceID.NotFound", format!("The networkInterface ID '{id}' does not exist"))
}

impl Ec2 for FakeEc2 {
    async fn describe_subnets(&self, ids: &[SubnetId], names: &[String]) -> Ec2Result<Vec<Subnet>> {
        self.call("DescribeSubnets", false, |w, _| {
            if let Some(missing) = ids.iter().find(|id| !w.subnets.iter().any(|s| &s.id == *id)) {
                return Err(client_error(
                    "InvalidSubnetID.NotFound",
                    format!("The subnet ID '{missing}' does not exist"),
                ));
            }
            Ok(w.subnets
                .iter()
                .filter(|s| ids.contains(&s.id) || s.name.as_ref().is_some_and(|n| names.contains(n)))
                .cloned()
                .collect())
        })
        .await
    }

    async fn security_group_ids(&self, vpc_id: &str, names: &[String]) -> Ec2Result<Vec<(String, SecurityGroupId)>> {
        self.call("DescribeSecurityGroups", false, |w, _| {
            Ok(w.groups
                .iter()
                .filter(|(n, _, v)| v == vpc_id && names.contains(n))
                .map(|(n, id, _)| (n.clone(), id.clone()))
                .collect())
        })
        .await
    }

    async fn describe_instance(&self, id: &InstanceId) -> Ec2Result<Option<Instance>> {
        self.call("DescribeInstances", false, |w, _| {
            Ok(w.instances.get(id).map(|i| Instance {
                id: id.clone(),
                availability_zone: Some(i.az.clone()),
                instance_type: Some(i.instance_type.clone()),
                state: Some(i.state.clone()),
                used_device_indexes: used_indexes(w, id),
            }))
        })
        .await
    }

    async fn instance_limits(&self, instance_type: &str) -> Ec2Result<InstanceLimits> {
        self.call("DescribeInstanceTypes", false, |w, _| {
            w.types.get(instance_type).copied().ok_or_else(|| {
                client_error(
                    "InvalidInstanceType",
                    format!("The following supplied instance types do not exist: [{instance_type}]"),
                )
            })
        })
        .await
    }

    async fn create_eni(&self, req: &CreateEni) -> Ec2Result<Eni> {
        self.call("CreateNetworkInterface", true, |w, now| create(w, req, now)).await
    }

    async fn attach_eni(&self, eni: &EniId, instance: &InstanceId, device_index: u32) -> Ec2Result<String> {
        self.call("AttachNetworkInterface", true, |w, _| attach(w, eni, instance, device_index)).await
    }

    async fn set_delete_on_termination(&self, eni: &EniId, attachment_id: &str, delete: bool) -> Ec2Result<()> {
        self.call("ModifyNetworkInterfaceAttribute", true, |w, _| {
            let e = w.enis.get_mut(eni).ok_or_else(|| no_eni(eni))?;
            match e.eni.attachment.as_mut() {
                Some(a) if a.id == attachment_id => {
                    a.delete_on_termination = Some(delete);
                    Ok(())
                }
                _ => Err(client_error("InvalidAttachmentID.NotFound", format!("'{attachment_id}' does not exist"))),
            }
        })
        .await
    }

    async fn set_security_groups(&self, eni: &EniId, groups: &[SecurityGroupId]) -> Ec2Result<()> {
        self.call("ModifyNetworkInterfaceAttribute", true, |w, _| {
            let e = w.enis.get_mut(eni).ok_or_else(|| no_eni(eni))?;
            e.eni.security_groups = groups.iter().map(|g| g.to_string()).collect();
            Ok(())
        })
        .await
    }

    async fn set_description(&self, eni: &EniId, description: &str) -> Ec2Result<()> {
        self.call("ModifyNetworkInterfaceAttribute", true, |w, _| {
            let e = w.enis.get_mut(eni).ok_or_else(|| no_eni(eni))?;
            e.eni.description = Some(description.into());
            Ok(())
        })
        .await
    }

    async fn detach_eni(&self, attachment_id: &str, _force: bool) -> Ec2Result<()> {
        self.call("DetachNetworkInterface", true, |w, now| {
            let takes = w.detach_takes;
            // As the real adapter does: an attachment already gone is a detach done.
            if let Some(e) = by_attachment(w, attachment_id)
                && e.detaching_until.is_none()
            {
                if let Some(a) = e.eni.attachment.as_mut() {
                    a.status = "detaching".into();
                }
                e.detaching_until = Some(takes.map(|d| now + d));
            }
            settle(w, now);
            Ok(())
        })
        .await
    }

    async fn delete_eni(&self, eni: &EniId) -> Ec2Result<()> {
        self.call("DeleteNetworkInterface", true, |w, _| match w.enis.get(eni) {
            None => Ok(()),
            Some(e) if e.eni.attachment.is_some() => {
                Err(client_error("InvalidNetworkInterface.InUse", format!("Interface: {eni} in use.")))
            }
            Some(_) => {
                w.enis.remove(eni);
                Ok(())
            }
        })
        .await
    }

    async fn enis_tagged(&self, tag: &str, value: Option<&str>) -> Ec2Result<Vec<Eni>> {
        self.call("DescribeNetworkInterfaces", false, |w, now| {
            let lag = w.listing_lag;
            Ok(w.enis
                .values()
                .filter(|e| now.duration_since(e.created) >= lag)
                .filter(|e| e.eni.tags.get(tag).is_some_and(|v| value.is_none_or(|want| v == want)))
                .map(|e| e.eni.clone())
                .collect())
        })
        .await
    }

    async fn describe_eni(&self, id: &EniId) -> Ec2Result<Option<Eni>> {
        self.call("DescribeNetworkInterfaces", false, |w, _| Ok(w.enis.get(id).map(|e| e.eni.clone()))).await
    }
}
