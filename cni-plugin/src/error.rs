//! The plugin's errors, and the one place they become CNI error codes (see `codes` in nodeeni-conf).

use std::fmt;

use nodeeni_conf::PciAddress;
use nodeeni_conf::cni::{CniError, ContainerId, codes};
use nodeeni_host::netlink::NetlinkError;
use nodeeni_host::netns::NetnsError;
use nodeeni_host::pci::PciError;
use nodeeni_state::attachment::AttachmentError;
use nodeeni_state::lock::LockError;
use nodeeni_state::node::StoreError;

use crate::kernel::StepError;

#[derive(Debug, thiserror::Error)]
pub enum PluginError {
    /// Already has its code (bad config, bad environment, unsupported version).
    #[error(transparent)]
    Cni(#[from] CniError),
    #[error("{0}")]
    DeviceNotFound(String),
    #[error("{0}")]
    DeviceInUse(String),
    /// The config asks for a device it may not have: an ENI the kubelet accounts for without the
    /// kubelet's allocation, the node's own interface, a device that is not an ENA NIC, a standalone
    /// device where the node file forbids them. Invalid config (7); the message says which rule.
    #[error("{0}")]
    Refused(String),
    #[error("interface {ifname} already exists in the pod's network namespace")]
    IfnameExists { ifname: String },
    #[error("{0}")]
    PoolExhausted(String),
    #[error(transparent)]
    Netlink(#[from] NetlinkError),
    #[error(transparent)]
    Netns(#[from] NetnsError),
    #[error(transparent)]
    Pci(#[from] PciError),
    #[error(transparent)]
    Lock(#[from] LockError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Attachment(#[from] AttachmentError),
    #[error("IPAM plugin {plugin}: {msg}")]
    Ipam { plugin: String, code: Option<u32>, msg: String },
    #[error("CHECK: {0}")]
    CheckMismatch(String),
    /// Undoing what an ADD did failed (every step was tried); the record stays so a DEL can retry.
    #[error("cleanup failed: {0}")]
    Cleanup(UndoErrors),
    /// A step failed and undoing it failed as well: both are reported.
    #[error("{error}; undoing it also failed: {undo}")]
    UndoFailed { error: Box<PluginError>, undo: UndoErrors },
    /// GC tried every stale attachment; these could not be undone (their records stay).
    #[error("GC could not release: {0}")]
    Gc(UndoErrors),
}

/// One undo step that failed, and why. Undo tries every step and gathers these in [`UndoErrors`].
#[derive(Debug, thiserror::Error)]
pub enum UndoError {
    #[error("moving it out of the pod: {0}")]
    MoveOut(#[source] StepError),
    #[error("restoring it on the host: {0}")]
    RestoreOnHost(#[source] StepError),
    /// DPDK mode: the device could not be put back on the driver it had before ADD.
    #[error("restoring the driver of {pci}: {source}")]
    RestoreDriver {
        pci: PciAddress,
        #[source]
        source: PciError,
    },
    /// DPDK mode: the record names a driver outside the known set; nothing was written to sysfs.
    #[error(
        "restoring the driver of {pci}: the record names driver {driver:?}, which is neither ena nor a DPDK driver \
         (a standalone device's own driver is rebound only where the node file sets allowNonEnaDpdk); not rebinding"
    )]
    UnknownDriver { pci: PciAddress, driver: String },
    #[error("releasing its addresses: {0}")]
    IpamDel(#[source] Box<PluginError>),
    #[error("releasing its claim in the node state: {0}")]
    Release(#[source] Box<PluginError>),
    /// GC: one stale attachment that could not be undone.
    #[error("{container}/{ifname}: {source}")]
    Attachment {
        container: ContainerId,
        ifname: String,
        #[source]
        source: Box<PluginError>,
    },
}

/// Every undo step that failed, in the order they were tried.
#[derive(Debug, Default)]
pub struct UndoErrors(Vec<UndoError>);

impl UndoErrors {
    pub fn push(&mut self, e: UndoError) {
        self.0.push(e);
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    #[cfg(test)]
    pub fn iter(&self) -> std::slice::Iter<'_, UndoError> {
        self.0.iter()
    }

    /// Ok when nothing failed.
    pub fn into_result(self) -> std::result::Result<(), UndoErrors> {
        if self.is_empty() { Ok(()) } else { Err(self) }
    }
}

impl From<UndoError> for UndoErrors {
    fn from(e: UndoError) -> Self {
        Self(vec![e])
    }
}

impl fmt::Display for UndoErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl PluginError {
    pub fn to_cni(&self) -> CniError {
        let code = match self {
            PluginError::Cni(e) => return e.clone(),
            PluginError::DeviceNotFound(_) => codes::DEVICE_NOT_FOUND,
            PluginError::DeviceInUse(_) => codes::DEVICE_IN_USE,
            PluginError::Refused(_) => codes::INVALID_CONFIG,
            PluginError::IfnameExists { .. } => codes::INVALID_ENV,
            PluginError::PoolExhausted(_) => codes::POOL_EXHAUSTED,
            PluginError::Netlink(_) => codes::NETLINK,
            PluginError::Netns(NetnsError::Open { .. } | NetnsError::NotANetns { .. }) => codes::INVALID_ENV,
            PluginError::Netns(_) => codes::NETLINK,
            PluginError::Pci(_) => codes::DRIVER_BIND,
            PluginError::Lock(LockError::Busy { .. }) => codes::TRY_AGAIN_LATER,
            PluginError::Lock(_) => codes::IO_FAILURE,
            PluginError::Store(_) => codes::NODE_STATE,
            PluginError::Attachment(_) => codes::IO_FAILURE,
            PluginError::Ipam { .. } => codes::IPAM,
            PluginError::CheckMismatch(_) => codes::CHECK_MISMATCH,
            PluginError::Cleanup(_) | PluginError::Gc(_) => codes::CLEANUP,
            PluginError::UndoFailed { error, .. } => return CniError { msg: self.to_string(), ..error.to_cni() },
        };
        CniError::new(code, self.to_string(), "")
    }
}

impl From<StepError> for PluginError {
    fn from(e: StepError) -> Self {
        match e {
            StepError::Netlink(e) => PluginError::Netlink(e),
            StepError::Ambiguous { .. } => PluginError::DeviceInUse(e.to_string()),
        }
    }
}

pub type Result<T> = std::result::Result<T, PluginError>;

#[cfg(test)]
mod tests {
    use std::io;

    use super::*;

    fn kernel(op: &str, errno: i32) -> NetlinkError {
        NetlinkError::Kernel { op: op.into(), source: io::Error::from_raw_os_error(errno) }
    }

    #[test]
    fn undo_failures_are_code_108_naming_each_step_in_order() {
        let mut undo = UndoErrors::default();
        undo.push(UndoError::MoveOut(kernel("move to namespace", 16).into()));
        undo.push(UndoError::IpamDel(Box::new(PluginError::Ipam {
            plugin: "host-local".into(),
            code: Some(11),
            msg: "busy".into(),
        })));
        let e = PluginError::Cleanup(undo);
        let cni = e.to_cni();
        assert_eq!(cni.code, codes::CLEANUP);
        assert_eq!(cni.code, 108);
        assert_eq!(
            cni.msg,
            "cleanup failed: moving it out of the pod: move to namespace failed: Device or resource busy (os error 16); \
             releasing its addresses: IPAM plugin host-local: busy"
        );
        let PluginError::Cleanup(list) = &e else { unreachable!() };
        assert!(matches!(list.iter().collect::<Vec<_>>()[..], [UndoError::MoveOut(_), UndoError::IpamDel(_)]));
    }

    #[test]
    fn a_failed_step_whose_undo_failed_keeps_the_steps_code_and_names_both() {
        let e = PluginError::UndoFailed {
            error: Box::new(PluginError::Netlink(kernel("add route 10.99.0.0/16", 101))),
            undo: UndoError::RestoreOnHost(kernel("rename to eth1", 17).into()).into(),
        };
        let cni = e.to_cni();
        assert_eq!(cni.code, codes::NETLINK);
        assert!(cni.msg.starts_with("add route 10.99.0.0/16 failed"), "{}", cni.msg);
        assert!(
            cni.msg.contains("; undoing it also failed: restoring it on the host: rename to eth1 failed"),
            "{}",
            cni.msg
        );
    }

    #[test]
    fn gc_failures_are_code_108_per_attachment() {
        let mut undo = UndoErrors::default();
        for c in ["c1", "c2"] {
            undo.push(UndoError::Attachment {
                container: c.parse().expect("id"),
                ifname: "net1".into(),
                source: Box::new(PluginError::Cleanup(
                    UndoError::RestoreOnHost(kernel("set MTU 1500", 22).into()).into(),
                )),
            });
        }
        let cni = PluginError::Gc(undo).to_cni();
        assert_eq!(cni.code, 108);
        assert!(
            cni.msg.starts_with("GC could not release: c1/net1: cleanup failed: restoring it on the host"),
            "{}",
            cni.msg
        );
        assert!(cni.msg.contains("; c2/net1: "), "{}", cni.msg);
    }
}
