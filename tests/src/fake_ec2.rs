//! An in-memory EC2 behind the pool's [`Ec2`] trait, so pool behaviour runs in milliseconds under
//! tokio's paused clock. It keeps what the pool needs of EC2's model — subnets, security groups,
//! instances with their device indexes and ENI limits, ENIs with tags, attachments and client-token
//! idempotency — and lets a test break it the ways EC2 breaks:
//!
//! - a fault on the Nth call of an operation: an error before EC2 acts, an answer lost after EC2
//!   acted (a reset), or a crash of the caller after EC2 acted (the call never returns; the test drops
//!   the pass, as a killed process would stop);
//! - latency per operation, a detach that takes time or never finishes;
//! - eventual consistency: a new ENI is missing from tag listings for a while;
//! - the account's request buckets ([`AccountLimits`], as AWS publishes them): a call finding its
//!   bucket empty is throttled (RequestLimitExceeded), whichever node's client made it.
//!
//! Several nodes share one account: [`FakeEc2::client`] gives another node its own client (its own
//! resilience layer, as each node's daemon has) on the same world.
//!
//! Every call goes through the real [`Resilient`] layer, as the real client's do, so retries, the
//! breaker and the call counts behave as in production. moto stays for what only a real
//! implementation proves: the SDK's wire format, filters and error codes.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::{IpAddr, Ipv4Addr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nodeeni_conf::pool::Ec2Settings;
use nodeeni_conf::{EniId, InstanceId, MacAddr, SecurityGroupId, SubnetId};
use nodeeni_ipam::ec2::{
    Attachment, CreateEni, Ec2, Ec2Error, Ec2Result, Eni, Instance, InstanceLimits, Place, Subnet, tags,
};
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
        Fault::Error(Self::throttled_error())
    }
    fn throttled_error() -> Ec2Error {
        error("RequestLimitExceeded", "Request limit exceeded.", 503)
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
    /// When a detach in progress completes (None: never, a stuck detach).
    detaching_until: Option<Option<Instant>>,
}

/// One of the account's token buckets.
#[derive(Debug, Clone, Copy)]
pub struct Bucket {
    pub capacity: f64,
    pub refill_per_second: f64,
}

/// The account's request buckets per Region, by EC2 action.
#[derive(Debug, Clone)]
pub struct AccountLimits {
    /// (bucket name, its limits, the actions charged to it).
    pub buckets: Vec<(&'static str, Bucket, &'static [&'static str])>,
}

impl AccountLimits {
    /// "Request throttling for the Amazon EC2 API": the resource-intensive actions have buckets of
    /// their own; attach and detach fall under the other mutating actions; describes share one
    /// (every listing nodeeni makes is filtered, so none falls under the smaller unfiltered bucket).
    pub fn published() -> Self {
        let b = |capacity: f64, refill_per_second: f64| Bucket { capacity, refill_per_second };
        Self {
            buckets: vec![
                ("CreateNetworkInterface", b(100.0, 5.0), &["CreateNetworkInterface"]),
                ("DeleteNetworkInterface", b(100.0, 5.0), &["DeleteNetworkInterface"]),
                ("ModifyNetworkInterfaceAttribute", b(100.0, 5.0), &["ModifyNetworkInterfaceAttribute"]),
                (
                    "AssignPrivateIpAddresses",
                    b(100.0, 5.0),
                    &["AssignPrivateIpAddresses", "UnassignPrivateIpAddresses"],
                ),
                ("CreateTags", b(100.0, 10.0), &["CreateTags"]),
                ("mutating", b(50.0, 5.0), &["AttachNetworkInterface", "DetachNetworkInterface"]),
                (
                    "describe",
                    b(100.0, 20.0),
                    &[
                        "DescribeNetworkInterfaces",
                        "DescribeInstances",
                        "DescribeInstanceTypes",
                        "DescribeSubnets",
                        "DescribeSecurityGroups",
                    ],
                ),
            ],
        }
    }

    /// The bucket `op` is charged to.
    pub fn bucket_of(&self, op: &str) -> Option<(&'static str, Bucket)> {
        self.buckets.iter().find(|(_, _, ops)| ops.contains(&op)).map(|(n, b, _)| (*n, *b))
    }
}

#[derive(Debug)]
struct BucketState {
    limits: Bucket,
    tokens: f64,
    at: Instant,
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
    /// Each call of an op takes between the two, uniformly.
    latency: BTreeMap<&'static str, (Duration, Duration)>,
    listing_lag: Duration,
    detach_takes: Option<Duration>,
    /// Detaches not yet settled: only then is there anything to settle.
    detaching: usize,
    /// ENIs by the value of their node tag, at create (the listing a pass makes, without a scan).
    by_node: HashMap<String, BTreeSet<EniId>>,
    limits: Option<AccountLimits>,
    buckets: BTreeMap<&'static str, BucketState>,
    /// Calls answered RequestLimitExceeded because their bucket was empty, per op.
    throttled: BTreeMap<&'static str, u64>,
    /// Listings return at most this many ENIs per call, as EC2's pages do.
    page_size: usize,
    by_token: HashMap<String, EniId>,
}

/// The in-memory EC2 and one node's client of it. Share it with `Arc`: the pool and the test see
/// the same world; [`FakeEc2::client`] is another node's client of that world.
#[derive(Debug)]
pub struct FakeEc2 {
    pub resilience: Resilient,
    world: Arc<Mutex<World>>,
    crashes: Arc<watch::Sender<u64>>,
}

/// EC2's page size for DescribeNetworkInterfaces (MaxResults at most 1000).
pub const PAGE_SIZE: usize = 1000;

fn error(code: &str, message: &str, status: u16) -> Ec2Error {
    Ec2Error { code: Some(code.into()), message: message.into(), status: Some(status), no_response: false }
}

fn client_error(code: &str, message: impl Into<String>) -> Ec2Error {
    error(code, &message.into(), 400)
}

impl FakeEc2 {
    /// An empty region; the resilience layer as `settings` declare it.
    pub fn new(settings: &Ec2Settings) -> Self {
        let mut world = World { detach_takes: Some(Duration::ZERO), page_size: PAGE_SIZE, ..World::default() };
        world.types.insert("c5.large".into(), InstanceLimits::one_card(3, 10));
        world.types.insert("c5.xlarge".into(), InstanceLimits::one_card(4, 15));
        world.types.insert("c5.18xlarge".into(), InstanceLimits::one_card(15, 50));
        // Two network cards of 8 ENIs each, as DescribeInstanceTypes lists c6in.32xlarge.
        world.types.insert(
            "c6in.32xlarge".into(),
            InstanceLimits { enis_per_card: [(0, 8), (1, 8)].into(), ipv4_per_eni: 50, ipv6_per_eni: 50 },
        );
        Self {
            resilience: Resilient::new(settings.retry.clone(), settings.circuit_breaker.clone(), &settings.rate_limit),
            world: Arc::new(Mutex::new(world)),
            crashes: Arc::new(watch::channel(0).0),
        }
    }

    /// Another node's client of the same account: the same world, its own resilience layer.
    pub fn client(&self, settings: &Ec2Settings) -> Self {
        Self {
            resilience: Resilient::new(settings.retry.clone(), settings.circuit_breaker.clone(), &settings.rate_limit),
            world: self.world.clone(),
            crashes: self.crashes.clone(),
        }
    }

    /// From now on every call takes a token from its bucket of `limits` (full at first), or is
    /// throttled.
    pub fn set_account_limits(&self, limits: AccountLimits) {
        let mut w = self.world();
        let now = Instant::now();
        w.buckets = limits
            .buckets
            .iter()
            .map(|(name, b, _)| (*name, BucketState { limits: *b, tokens: b.capacity, at: now }))
            .collect();
        w.limits = Some(limits);
    }

    /// Calls of `op` the account's buckets throttled.
    pub fn throttled(&self, op: &str) -> u64 {
        self.world().throttled.iter().filter(|(o, _)| **o == op).map(|(_, n)| n).sum()
    }

    /// Every call that reached EC2 and every throttled one, per op.
    pub fn call_counts(&self) -> (BTreeMap<&'static str, u64>, BTreeMap<&'static str, u64>) {
        let w = self.world();
        (w.calls.clone(), w.throttled.clone())
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
            ipv6_cidr: None,
        });
        id
    }

    pub fn add_security_group(&self, name: &str) -> SecurityGroupId {
        let mut w = self.world();
        let id: SecurityGroupId = Self::id(&mut w, "sg").parse().expect("sg id");
        w.groups.push((name.into(), id.clone(), "vpc-fake".into()));
        id
    }

    /// Adds an instance type with its limits.
    pub fn add_instance_type(&self, name: &str, limits: InstanceLimits) {
        self.world().types.insert(name.into(), limits);
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
        self.world().latency.insert(op, (latency, latency));
    }

    /// Each call of `op` takes between `low` and `high`, uniformly at random.
    pub fn set_latency_range(&self, op: &'static str, low: Duration, high: Duration) {
        self.world().latency.insert(op, (low, high.max(low)));
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
        let mut w = self.world();
        if let Some(e) = w.enis.get_mut(id) {
            f(&mut e.eni);
            let node = e.eni.tags.get(tags::NODE).cloned();
            unindex(&mut w, id);
            if let Some(node) = node {
                w.by_node.entry(node).or_default().insert(id.clone());
            }
        }
    }

    /// Creates an ENI as someone else would (the console, another tool).
    pub fn create_outside(&self, subnet: &SubnetId, tags: BTreeMap<String, String>) -> EniId {
        let req = CreateEni {
            subnet_id: subnet.clone(),
            security_groups: Vec::new(),
            description: None,
            secondary_ip_count: 0,
            ipv6_address_count: 0,
            tags,
            client_token: String::new(),
        };
        let mut w = self.world();
        create(&mut w, &req, Instant::now()).expect("create outside").id
    }

    /// Attaches an ENI as someone else would, on network card 0.
    pub fn attach_outside(&self, eni: &EniId, instance: &InstanceId, index: u32) {
        let mut w = self.world();
        attach(&mut w, eni, instance, Place { network_card: 0, device_index: index }).expect("attach outside");
    }

    /// Unassigns secondary IPs as someone else would.
    pub fn unassign_outside(&self, eni: &EniId, ips: &[IpAddr]) {
        let mut w = self.world();
        if let Some(e) = w.enis.get_mut(eni) {
            e.eni.secondary_ips.retain(|ip| !ips.contains(ip));
        }
    }

    /// Deletes an ENI as someone else would (detached first, forcibly).
    pub fn delete_outside(&self, eni: &EniId) {
        let mut w = self.world();
        remove(&mut w, eni);
    }

    /// One attempt of `op`: latency, then a fault or the change `f` makes to the world.
    async fn attempt<T>(
        &self,
        op: &'static str,
        f: &(impl Fn(&mut World, Instant) -> Result<T, Ec2Error> + Sync),
    ) -> Result<T, Ec2Error> {
        let (low, high) = self.world().latency.get(op).copied().unwrap_or_default();
        let latency = if high > low { low + (high - low).mul_f64(fastrand::f64()) } else { low };
        if !latency.is_zero() {
            tokio::time::sleep(latency).await;
        }
        let (fault, out) = {
            let mut w = self.world();
            *w.calls.entry(op).or_default() += 1;
            w.log.push(op);
            if !take_token(&mut w, op, Instant::now()) {
                *w.throttled.entry(op).or_default() += 1;
                return Err(Fault::throttled_error());
            }
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

    /// A DescribeNetworkInterfaces listing of the ENIs `matches` takes, one call per page; `node`:
    /// the node tag's value the filter names (found through the index, not a scan).
    async fn list(&self, matches: impl Fn(&Eni) -> bool + Sync, node: Option<&str>) -> Ec2Result<Vec<Eni>> {
        let mut out = Vec::new();
        let mut after: Option<EniId> = None;
        loop {
            let page = self
                .call("DescribeNetworkInterfaces", false, |w, now| {
                    let lag = w.listing_lag;
                    let visible = |e: &&FakeEni| now.duration_since(e.created) >= lag && matches(&e.eni);
                    let from = |id: &EniId| after.as_ref().is_none_or(|a| id > a);
                    let page: Vec<Eni> = match node {
                        Some(n) => w
                            .by_node
                            .get(n)
                            .into_iter()
                            .flatten()
                            .filter(|id| from(id))
                            .filter_map(|id| w.enis.get(id))
                            .filter(visible)
                            .take(w.page_size)
                            .map(|e| e.eni.clone())
                            .collect(),
                        None => w
                            .enis
                            .values()
                            .filter(|e| from(&e.eni.id))
                            .filter(visible)
                            .take(w.page_size)
                            .map(|e| e.eni.clone())
                            .collect(),
                    };
                    Ok(page)
                })
                .await?;
            let full = page.len() >= self.world().page_size;
            after = page.last().map(|e| e.id.clone());
            out.extend(page);
            if !full {
                return Ok(out);
            }
        }
    }
}

/// A token from `op`'s bucket, if the account has buckets; false: the bucket is empty.
fn take_token(w: &mut World, op: &str, now: Instant) -> bool {
    let Some((name, _)) = w.limits.as_ref().and_then(|l| l.bucket_of(op)) else { return true };
    let Some(b) = w.buckets.get_mut(name) else { return true };
    let refill = now.saturating_duration_since(b.at).as_secs_f64() * b.limits.refill_per_second;
    b.tokens = (b.tokens + refill).min(b.limits.capacity);
    b.at = now;
    if b.tokens >= 1.0 {
        b.tokens -= 1.0;
        true
    } else {
        false
    }
}

/// Detaches whose time has come complete.
fn settle(w: &mut World, now: Instant) {
    if w.detaching == 0 {
        return;
    }
    let mut settled = 0;
    for e in w.enis.values_mut() {
        if let Some(Some(until)) = e.detaching_until
            && now >= until
        {
            e.eni.attachment = None;
            e.eni.status = "available".into();
            e.detaching_until = None;
            settled += 1;
        }
    }
    w.detaching -= settled.min(w.detaching);
}

fn unindex(w: &mut World, id: &EniId) {
    for ids in w.by_node.values_mut() {
        ids.remove(id);
    }
}

fn remove(w: &mut World, id: &EniId) {
    w.by_token.retain(|_, eni| eni != id);
    if let Some(e) = w.enis.remove(id) {
        if matches!(e.detaching_until, Some(Some(_))) {
            w.detaching = w.detaching.saturating_sub(1);
        }
        if let Some(node) = e.eni.tags.get(tags::NODE)
            && let Some(ids) = w.by_node.get_mut(node)
        {
            ids.remove(id);
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
        && let Some(e) = w.by_token.get(&r.client_token).and_then(|id| w.enis.get(id))
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
        // The fake's subnets are IPv4 only (moto's carry IPv6 where a test asks).
        ipv6_addresses: Vec::new(),
        status: "available".into(),
        attachment: None,
        description: r.description.clone(),
        security_groups: r.security_groups.iter().map(|g| g.to_string()).collect(),
        // EC2's default for a new ENI.
        source_dest_check: Some(true),
        tags: r.tags.clone(),
    };
    let token = (!r.client_token.is_empty()).then(|| r.client_token.clone());
    if let Some(node) = r.tags.get(tags::NODE) {
        w.by_node.entry(node.clone()).or_default().insert(id.clone());
    }
    if let Some(t) = &token {
        w.by_token.insert(t.clone(), id.clone());
    }
    w.enis.insert(id, FakeEni { eni: eni.clone(), created: now, detaching_until: None });
    Ok(eni)
}

fn used_places(w: &World, instance: &InstanceId) -> Vec<Place> {
    let mut used = vec![Place { network_card: 0, device_index: 0 }]; // the primary ENI
    used.extend(w.enis.values().filter_map(|e| {
        let a = e.eni.attachment.as_ref()?;
        (a.instance_id.as_deref() == Some(instance.as_str())).then_some(a.place()?)
    }));
    used.sort_unstable();
    used
}

fn attach(w: &mut World, eni: &EniId, instance: &InstanceId, place: Place) -> Result<String, Ec2Error> {
    let inst = w.instances.get(instance).cloned().ok_or_else(|| {
        client_error("InvalidInstanceID.NotFound", format!("The instance ID '{instance}' does not exist"))
    })?;
    let limits = w.types.get(&inst.instance_type).cloned().unwrap_or_else(|| InstanceLimits::one_card(2, 4));
    let used = used_places(w, instance);
    let Place { network_card, device_index: index } = place;
    let Some(e) = w.enis.get(eni) else {
        return Err(client_error(
            "InvalidNetworkInterfaceID.NotFound",
            format!("The networkInterface ID '{eni}' does not exist"),
        ));
    };
    if e.eni.attachment.is_some() {
        return Err(client_error("InvalidNetworkInterface.InUse", format!("Interface: {eni} in use.")));
    }
    let Some(max_enis) = limits.max_enis(network_card) else {
        return Err(client_error(
            "InvalidParameterValue",
            format!("Invalid network card index '{network_card}' for instance type {}", inst.instance_type),
        ));
    };
    if used.contains(&place) {
        return Err(client_error(
            "InvalidParameterValue",
            format!("Instance '{instance}' already has an interface attached at device index '{index}'."),
        ));
    }
    if used.iter().filter(|p| p.network_card == network_card).count() as u32 >= max_enis {
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
            network_card: Some(network_card),
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
                used_places: used_places(w, id),
            }))
        })
        .await
    }

    async fn instance_limits(&self, instance_type: &str) -> Ec2Result<InstanceLimits> {
        self.call("DescribeInstanceTypes", false, |w, _| {
            w.types.get(instance_type).cloned().ok_or_else(|| {
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

    async fn attach_eni(&self, eni: &EniId, instance: &InstanceId, place: Place) -> Ec2Result<String> {
        self.call("AttachNetworkInterface", true, |w, _| attach(w, eni, instance, place)).await
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

    async fn assign_private_ips(&self, eni: &EniId, count: u32) -> Ec2Result<Vec<IpAddr>> {
        self.call("AssignPrivateIpAddresses", true, |w, _| {
            let e = w.enis.get_mut(eni).ok_or_else(|| no_eni(eni))?;
            let IpAddr::V4(primary) = e.eni.primary_ip.unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED)) else {
                return Err(client_error("InvalidParameterValue", "no IPv4 primary"));
            };
            // The next addresses above the highest the ENI has, as a stand-in for EC2's pick.
            let mut next = e.eni.secondary_ips.iter().filter_map(|ip| match ip {
                IpAddr::V4(v4) => Some(u32::from(*v4)),
                IpAddr::V6(_) => None,
            });
            let start = next.by_ref().max().unwrap_or(u32::from(primary)).max(u32::from(primary)) + 1;
            let added: Vec<IpAddr> = (0..count).map(|k| IpAddr::V4(Ipv4Addr::from(start + k))).collect();
            e.eni.secondary_ips.extend(&added);
            Ok(added)
        })
        .await
    }

    async fn unassign_private_ips(&self, eni: &EniId, ips: &[IpAddr]) -> Ec2Result<()> {
        self.call("UnassignPrivateIpAddresses", true, |w, _| {
            let e = w.enis.get_mut(eni).ok_or_else(|| no_eni(eni))?;
            if let Some(missing) = ips.iter().find(|ip| !e.eni.secondary_ips.contains(ip)) {
                return Err(client_error(
                    "InvalidParameterValue",
                    format!("Some of the specified addresses are not assigned to interface {eni}: {missing}"),
                ));
            }
            e.eni.secondary_ips.retain(|ip| !ips.contains(ip));
            Ok(())
        })
        .await
    }

    async fn set_source_dest_check(&self, eni: &EniId, check: bool) -> Ec2Result<()> {
        self.call("ModifyNetworkInterfaceAttribute", true, |w, _| {
            let e = w.enis.get_mut(eni).ok_or_else(|| no_eni(eni))?;
            e.eni.source_dest_check = Some(check);
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
                if takes.is_some() {
                    w.detaching += 1;
                }
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
                remove(w, eni);
                Ok(())
            }
        })
        .await
    }

    async fn enis_tagged(&self, tag: &str, value: Option<&str>) -> Ec2Result<Vec<Eni>> {
        self.list(
            |e| e.tags.get(tag).is_some_and(|v| value.is_none_or(|want| v == want)),
            (tag == tags::NODE).then_some(value).flatten(),
        )
        .await
    }

    async fn available_enis_tagged(&self, tag: &str, value: &str) -> Ec2Result<Vec<Eni>> {
        self.list(
            |e| e.status == "available" && e.tags.get(tag).is_some_and(|v| v == value),
            (tag == tags::NODE).then_some(value),
        )
        .await
    }

    async fn describe_eni(&self, id: &EniId) -> Ec2Result<Option<Eni>> {
        self.call("DescribeNetworkInterfaces", false, |w, _| Ok(w.enis.get(id).map(|e| e.eni.clone()))).await
    }
}
