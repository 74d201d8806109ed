//! The ENI pool: keeps each node's ENIs as declared, through EC2.
//!
//! What is here today is the node state the pool keeps and the CNI reads and updates under its lock
//! ([`store`], from nodeeni-state, which the CNI links without the AWS SDK). The EC2 side — create,
//! tag, attach, detach, delete with retries and a circuit breaker, reconcile, leak collection — is the
//! pool work still to come (see the README's status section).

pub use nodeeni_state::node as store;
