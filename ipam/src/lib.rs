//! The ENI pool: keeps each node's ENIs as declared, through EC2.
//!
//! - [`ec2`]: the EC2 operations the pool uses, as a narrow trait in nodeeni's own types, and the
//!   real client behind it (aws-sdk-ec2);
//! - [`resilience`]: the one layer every EC2 call goes through: error classes, retries with jittered
//!   exponential backoff, a circuit breaker, a token bucket with bounded concurrency for mutations,
//!   and per-operation call counts and latencies;
//! - [`reconcile`]: the pool itself — desired slots, adoption after a crash, a pure plan, the executor
//!   that carries it out, drain, leak collection, and the loop the daemon runs;
//! - [`host`]: the node side of an attached ENI: its netdev found by MAC and prepared for its pool;
//! - [`identity`]: which instance this node is (config, else IMDSv2);
//! - [`store`]: the node state the pool keeps and the CNI reads and updates under its lock (from
//!   nodeeni-state, which the CNI links without the AWS SDK).

pub mod ec2;
pub mod host;
pub mod identity;
pub mod reconcile;
pub mod resilience;

pub use nodeeni_state::node as store;
