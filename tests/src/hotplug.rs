//! A hot-plug stand-in: what the kernel does for ENA when EC2 attaches or detaches an ENI. It watches
//! moto for ENIs attached to the node's instance; for each new one it creates a veth in the node
//! namespace carrying the ENI's MAC (named `eth<device index>`, its peer on the ENI's subnet in the
//! VPC namespace) and a PCI device for it in the emulated sysfs (bound to `ena`); when the ENI is
//! detached, both disappear. Runs on its own thread and runtime, so it serves any test or process.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use crate::netns::ip;
use crate::sysfs::FakeSysfs;
use crate::vpc::Vpc;

/// One plugged ENI.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plugged {
    pub eni: String,
    pub mac: String,
    pub device_index: i32,
    pub pci: String,
}

#[derive(Debug)]
pub struct HotPlug {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    plugged: Arc<Mutex<BTreeMap<String, Plugged>>>,
}

/// The PCI address the stand-in gives the ENI at `device_index` (ENA devices sit at 00:05.0 and up).
pub fn pci_of_index(device_index: i32) -> String {
    format!("0000:00:{:02x}.0", 5 + device_index)
}

/// The link in namespace `ns` carrying `mac`, if any.
pub fn link_with_mac(ns: &str, mac: &str) -> Option<String> {
    let out = ip(&["-n", ns, "-o", "link", "show"]).ok()?;
    out.lines().find(|l| l.contains(&format!("link/ether {mac}"))).and_then(|l| {
        let name = l.split(": ").nth(1)?;
        Some(name.split('@').next().unwrap_or(name).to_string())
    })
}

impl HotPlug {
    /// Watches `endpoint` (moto) for ENIs attached to `instance`; plugs them into namespace `node`,
    /// wired to their subnet (`cidrs`: subnet ID → CIDR) in `vpc`, with a PCI device in `sysfs`.
    pub fn start(
        endpoint: &str,
        instance: &str,
        node: &str,
        vpc: Arc<Vpc>,
        cidrs: Vec<(String, String)>,
        sysfs: Arc<FakeSysfs>,
    ) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let plugged: Arc<Mutex<BTreeMap<String, Plugged>>> = Arc::default();
        let thread = {
            let (stop, plugged) = (stop.clone(), plugged.clone());
            let (endpoint, instance, node) = (endpoint.to_string(), instance.to_string(), node.to_string());
            let cidrs: BTreeMap<String, String> = cidrs.into_iter().collect();
            std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
                let client = crate::ec2world::sdk(&endpoint);
                while !stop.load(Ordering::SeqCst) {
                    rt.block_on(tick(&client, &instance, &node, &vpc, &cidrs, &sysfs, &plugged));
                    std::thread::sleep(Duration::from_millis(100));
                }
            })
        };
        Self { stop, thread: Some(thread), plugged }
    }

    /// Stops watching (what is plugged stays plugged): a benchmark's quiet node.
    pub fn stop(&self) {
        self.stop.store(true, Ordering::SeqCst);
    }

    /// What is plugged now, by ENI ID.
    pub fn plugged(&self) -> BTreeMap<String, Plugged> {
        self.plugged.lock().expect("lock").clone()
    }
}

async fn tick(
    client: &aws_sdk_ec2::Client,
    instance: &str,
    node: &str,
    vpc: &Vpc,
    cidrs: &BTreeMap<String, String>,
    sysfs: &FakeSysfs,
    plugged: &Mutex<BTreeMap<String, Plugged>>,
) {
    let filter = aws_sdk_ec2::types::Filter::builder().name("attachment.instance-id").values(instance).build();
    let Ok(out) = client.describe_network_interfaces().filters(filter).send().await else { return };
    let mut attached = BTreeMap::new();
    for ni in out.network_interfaces() {
        let (Some(id), Some(mac), Some(index), Some(subnet)) = (
            ni.network_interface_id(),
            ni.mac_address(),
            ni.attachment().and_then(|a| a.device_index()),
            ni.subnet_id(),
        ) else {
            continue;
        };
        if index == 0 {
            continue; // the primary ENI: the node's own eth0, not ours to emulate
        }
        attached.insert(id.to_string(), (mac.to_string(), index, subnet.to_string()));
    }
    let mut plugged = plugged.lock().expect("lock");
    // Unplugged first, as the kernel does: a detach completes before another ENI can take its
    // device index, so a new ENI at an index seen in the same tick finds its PCI slot free.
    let gone: Vec<String> = plugged.keys().filter(|id| !attached.contains_key(*id)).cloned().collect();
    for id in gone {
        if let Some(p) = plugged.remove(&id) {
            // Wherever the netdev is now in the node (renamed or not), it goes; one in a pod's
            // namespace the test's pod teardown removes.
            if let Some(name) = link_with_mac(node, &p.mac) {
                let _ = ip(&["-n", node, "link", "del", &name]);
            }
            sysfs.remove_device(&p.pci);
        }
    }
    for (id, (mac, index, subnet)) in &attached {
        if plugged.contains_key(id) {
            continue;
        }
        let Some(cidr) = cidrs.get(subnet) else { continue };
        let ifname = format!("eth{index}");
        // The PCI device first, as the kernel does: ena registers the netdev while probing the
        // device, so a netdev is never seen without its `device` link (the pool reads the PCI
        // address the moment the netdev shows up).
        let pci = pci_of_index(*index);
        sysfs.add_device(&pci, Some("ena"), &ifname, 10 + *index as u32, 0);
        vpc.plug_into(node, &ifname, mac, cidr);
        plugged.insert(id.clone(), Plugged { eni: id.clone(), mac: mac.clone(), device_index: *index, pci });
    }
}

impl Drop for HotPlug {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
