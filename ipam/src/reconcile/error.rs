//! What can stop a pass, or one slot of it.

use nodeeni_conf::{EniId, InstanceId};
use nodeeni_state::node::StoreError;

use crate::ec2::Ec2Error;
use crate::host::HostError;
use crate::resilience::CallError;

#[derive(Debug, thiserror::Error)]
pub enum PoolError {
    #[error(transparent)]
    Ec2(#[from] CallError<Ec2Error>),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("pool {pool}: {msg}")]
    Refused { pool: String, msg: String },
    #[error("instance {0} not found in EC2")]
    NoInstance(InstanceId),
    #[error("host side of {eni}: {source}")]
    Host {
        eni: EniId,
        #[source]
        source: HostError,
    },
}

impl PoolError {
    /// What went wrong, as a short stable word (a metric label).
    pub fn kind(&self) -> &'static str {
        match self {
            PoolError::Ec2(_) => "ec2",
            PoolError::Store(_) => "state",
            PoolError::Refused { .. } => "refused",
            PoolError::NoInstance(_) => "no_instance",
            PoolError::Host { .. } => "host",
        }
    }
}
