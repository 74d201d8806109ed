//! An emulated `/sys` PCI tree, for DPDK binding without PCI hardware. The layout is the kernel's:
//! `bus/pci/devices/<addr>/{driver -> …, driver_override, iommu_group -> …, numa_node, net/<if>/}`,
//! `bus/pci/drivers/<drv>/{bind,unbind}`, `class/net/<if>/device -> …`. A kernel stand-in thread
//! honours writes to `bind` and `unbind` as the kernel would: it moves the `driver` link, and a kernel
//! network driver's netdev disappears on unbind and comes back on bind.

use std::collections::{HashMap, HashSet};
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

/// Drivers whose devices carry a netdev while bound.
const NET_DRIVERS: &[&str] = &["ena"];
const DRIVERS: &[&str] = &["ena", "vfio-pci", "igb_uio", "uio_pci_generic"];

#[derive(Debug, Default)]
struct Shared {
    /// Netdev names to give back when a device returns to a kernel network driver.
    netdev_names: HashMap<String, String>,
    /// Drivers whose probe fails: a bind write is swallowed and the device stays unbound.
    failing: HashSet<String>,
}

#[derive(Debug)]
pub struct FakeSysfs {
    dir: tempfile::TempDir,
    shared: Arc<Mutex<Shared>>,
    stop: Arc<AtomicBool>,
    kernel: Option<JoinHandle<()>>,
}

impl Default for FakeSysfs {
    fn default() -> Self {
        Self::new()
    }
}

impl FakeSysfs {
    pub fn new() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path();
        std::fs::create_dir_all(root.join("bus/pci/devices")).expect("mkdir");
        std::fs::create_dir_all(root.join("class/net")).expect("mkdir");
        std::fs::create_dir_all(root.join("kernel/iommu_groups")).expect("mkdir");
        for d in DRIVERS {
            let dd = root.join("bus/pci/drivers").join(d);
            std::fs::create_dir_all(&dd).expect("mkdir");
            std::fs::write(dd.join("bind"), b"").expect("bind");
            std::fs::write(dd.join("unbind"), b"").expect("unbind");
        }
        let shared = Arc::new(Mutex::new(Shared::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let kernel = {
            let (root, shared, stop) = (root.to_path_buf(), shared.clone(), stop.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    kernel_tick(&root, &shared);
                    std::thread::sleep(Duration::from_micros(500));
                }
            })
        };
        Self { dir, shared, stop, kernel: Some(kernel) }
    }

    pub fn root(&self) -> &Path {
        self.dir.path()
    }

    fn dev(&self, pci: &str) -> PathBuf {
        self.root().join("bus/pci/devices").join(pci)
    }

    /// Adds a device bound to `driver`, with netdev `netdev` when the driver is a network driver. It is
    /// an ENA device (vendor 0x1d0f, class 0x020000) unless [`FakeSysfs::set_ids`] says otherwise.
    pub fn add_device(&self, pci: &str, driver: Option<&str>, netdev: &str, iommu_group: u32, numa_node: i32) {
        let dev = self.dev(pci);
        std::fs::create_dir_all(&dev).expect("mkdir dev");
        std::fs::write(dev.join("driver_override"), b"(null)\n").expect("override");
        self.set_ids(pci, 0x1d0f, 0x020000);
        std::fs::write(dev.join("numa_node"), format!("{numa_node}\n")).expect("numa");
        let group = self.root().join("kernel/iommu_groups").join(iommu_group.to_string());
        std::fs::create_dir_all(&group).expect("group");
        symlink(format!("../../../kernel/iommu_groups/{iommu_group}"), dev.join("iommu_group")).expect("group link");
        self.shared.lock().expect("lock").netdev_names.insert(pci.to_string(), netdev.to_string());
        if let Some(d) = driver {
            attach(self.root(), pci, d, &self.shared);
        }
    }

    /// Makes the device another kind: its `vendor` and `class` files, as the kernel writes them.
    pub fn set_ids(&self, pci: &str, vendor: u16, class: u32) {
        let dev = self.dev(pci);
        std::fs::write(dev.join("vendor"), format!("{vendor:#06x}\n")).expect("vendor");
        std::fs::write(dev.join("class"), format!("{class:#08x}\n")).expect("class");
    }

    /// From now on, binding to `driver` fails the way a failed probe does (the device stays unbound).
    pub fn fail_binds_to(&self, driver: &str) {
        self.shared.lock().expect("lock").failing.insert(driver.to_string());
    }

    /// Removes a driver's `bind` file, so writing it fails with an I/O error.
    pub fn break_bind_file(&self, driver: &str) {
        std::fs::remove_file(self.root().join("bus/pci/drivers").join(driver).join("bind")).expect("rm bind");
    }

    pub fn driver_of(&self, pci: &str) -> Option<String> {
        std::fs::read_link(self.dev(pci).join("driver")).ok()?.file_name().map(|n| n.to_string_lossy().into_owned())
    }

    pub fn netdevs_of(&self, pci: &str) -> Vec<String> {
        std::fs::read_dir(self.dev(pci).join("net"))
            .map(|d| d.filter_map(|e| e.ok()).map(|e| e.file_name().to_string_lossy().into_owned()).collect())
            .unwrap_or_default()
    }

    /// Removes a device as a hot unplug does: its driver lets go, its netdev and its folder vanish.
    pub fn remove_device(&self, pci: &str) {
        detach(self.root(), pci);
        let _ = std::fs::remove_dir_all(self.dev(pci));
        self.shared.lock().expect("lock").netdev_names.remove(pci);
    }

    pub fn driver_override_of(&self, pci: &str) -> String {
        std::fs::read_to_string(self.dev(pci).join("driver_override")).unwrap_or_default().trim().to_string()
    }
}

impl Drop for FakeSysfs {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(k) = self.kernel.take() {
            let _ = k.join();
        }
    }
}

fn attach(root: &Path, pci: &str, driver: &str, shared: &Mutex<Shared>) {
    let dev = root.join("bus/pci/devices").join(pci);
    let _ = symlink(format!("../../../bus/pci/drivers/{driver}"), dev.join("driver"));
    if NET_DRIVERS.contains(&driver) {
        let name = shared.lock().expect("lock").netdev_names.get(pci).cloned();
        if let Some(name) = name {
            let _ = std::fs::create_dir_all(dev.join("net").join(&name));
            let link = root.join("class/net").join(&name);
            let _ = std::fs::create_dir_all(&link);
            let _ = symlink(format!("../../../bus/pci/devices/{pci}"), link.join("device"));
        }
    }
}

fn detach(root: &Path, pci: &str) {
    let dev = root.join("bus/pci/devices").join(pci);
    let _ = std::fs::remove_file(dev.join("driver"));
    if let Ok(entries) = std::fs::read_dir(dev.join("net")) {
        for e in entries.filter_map(|e| e.ok()) {
            let _ = std::fs::remove_dir_all(root.join("class/net").join(e.file_name()));
        }
    }
    let _ = std::fs::remove_dir_all(dev.join("net"));
}

/// One pass of the kernel stand-in over every driver's bind/unbind file.
fn kernel_tick(root: &Path, shared: &Mutex<Shared>) {
    for driver in DRIVERS {
        let dd = root.join("bus/pci/drivers").join(driver);
        for (file, binding) in [("unbind", false), ("bind", true)] {
            let path = dd.join(file);
            let Ok(content) = std::fs::read_to_string(&path) else { continue };
            let pci = content.trim();
            if pci.is_empty() {
                continue;
            }
            let dev = root.join("bus/pci/devices").join(pci);
            let current = std::fs::read_link(dev.join("driver"))
                .ok()
                .and_then(|t| t.file_name().map(|n| n.to_string_lossy().into_owned()));
            if binding {
                let overridden = std::fs::read_to_string(dev.join("driver_override")).unwrap_or_default();
                let overridden = overridden.trim();
                let allowed = overridden.is_empty() || overridden == "(null)" || overridden == *driver;
                let failing = shared.lock().expect("lock").failing.contains(*driver);
                if current.is_none() && allowed && !failing && dev.is_dir() {
                    attach(root, pci, driver, shared);
                }
            } else if current.as_deref() == Some(*driver) {
                detach(root, pci);
            }
            let _ = std::fs::write(&path, b"");
        }
    }
}
