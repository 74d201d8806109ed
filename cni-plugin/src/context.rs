//! What every command works with: the runtime's environment, the config, the node's settings (from
//! the node file, see `settings`), and the node's stores.

use std::path::Path;
use std::time::Duration;

use nodeeni_conf::cni::{CniEnv, CniError, ContainerId, NetConf, NodeSettings};
use nodeeni_host::pci::PciBus;
use nodeeni_state::attachment::AttachmentStore;
use nodeeni_state::lock::DeviceLocks;
use nodeeni_state::node::NodeStore;

/// How long a driver bind/unbind, or a netdev's return, may take.
pub const DRIVER_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug)]
pub struct Ctx<'a> {
    pub env: &'a CniEnv,
    pub conf: &'a NetConf,
    pub settings: &'a NodeSettings,
    pub attachments: AttachmentStore,
    pub node: NodeStore,
    pub locks: DeviceLocks,
    pub bus: PciBus,
    pub lock_timeout: Duration,
}

impl<'a> Ctx<'a> {
    pub fn new(env: &'a CniEnv, conf: &'a NetConf, settings: &'a NodeSettings) -> Self {
        let dir = &settings.state_dir;
        Self {
            env,
            conf,
            settings,
            attachments: AttachmentStore::new(dir),
            node: NodeStore::new(dir),
            locks: DeviceLocks::new(dir.join("locks")),
            bus: PciBus::new(&settings.sysfs_root),
            lock_timeout: Duration::from_secs(conf.lock_timeout_secs),
        }
    }

    /// The container ID and ifname, which the environment checks guarantee for ADD, CHECK and DEL.
    pub fn attachment_key(&self) -> Result<(&ContainerId, &str), CniError> {
        match (&self.env.container_id, &self.env.ifname) {
            (Some(c), Some(i)) => Ok((c, i.as_str())),
            _ => Err(CniError::invalid_env("CNI_CONTAINERID and CNI_IFNAME are required")),
        }
    }

    /// The pod's UID, as runtimes (and Multus, for its delegates) pass it in CNI_ARGS.
    pub fn pod_uid(&self) -> Option<&str> {
        self.env.args.get("K8S_POD_UID").map(String::as_str).filter(|u| !u.is_empty())
    }

    pub fn netns_path(&self) -> Option<&Path> {
        self.env.netns.as_deref()
    }
}
