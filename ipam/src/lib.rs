//! The ENI pool: keeps each node's ENIs as declared, through EC2.
//!
//! - [`resilience`]: the one layer every EC2 call goes through: error classes, retries with jittered
//!   exponential backoff, a circuit breaker, a token bucket with bounded concurrency for mutations,
//!   and per-operation call counts;
//! - [`store`]: the node state the pool keeps and the CNI reads and updates under its lock (from
//!   nodeeni-state, which the CNI links without the AWS SDK).
//!
//! Still to come (see the README's status section): the EC2 client behind a narrow trait, reconcile,
//! adoption after a crash, leak collection.

pub mod ec2;
pub mod host;
pub mod identity;
pub mod reconcile;
pub mod resilience;

pub use nodeeni_state::node as store;
