//! The plugin's errors, and the one place they become CNI error codes (see `codes` in nodeeni-conf).

use nodeeni_conf::cni::{CniError, codes};
use nodeeni_host::netlink::NetlinkError;
use nodeeni_host::netns::NetnsError;
use nodeeni_host::pci::PciError;
use nodeeni_state::attachment::AttachmentError;
use nodeeni_state::lock::LockError;
use nodeeni_state::node::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum PluginError {
    /// Already has its code (bad config, bad environment, unsupported version).
    #[error(transparent)]
    Cni(#[from] CniError),
    #[error("{0}")]
    DeviceNotFound(String),
    #[error("{0}")]
    DeviceInUse(String),
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
    Cleanup(String),
    /// A step failed and undoing it failed as well: both are reported.
    #[error("{error}; undoing it also failed: {undo}")]
    UndoFailed { error: Box<PluginError>, undo: String },
}

impl PluginError {
    pub fn to_cni(&self) -> CniError {
        let code = match self {
            PluginError::Cni(e) => return e.clone(),
            PluginError::DeviceNotFound(_) => codes::DEVICE_NOT_FOUND,
            PluginError::DeviceInUse(_) => codes::DEVICE_IN_USE,
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
            PluginError::Cleanup(_) => codes::CLEANUP,
            PluginError::UndoFailed { error, .. } => return CniError { msg: self.to_string(), ..error.to_cni() },
        };
        CniError::new(code, self.to_string(), "")
    }
}

pub type Result<T> = std::result::Result<T, PluginError>;
