//! State on the node's disk that the daemon and the CNI binary share, and the rules for touching it
//! from many processes at once. No EC2 here: the CNI links this crate.
//!
//! - [`atomic`]: write a file so a crash leaves the old or the new content, never half;
//! - [`lock`]: cross-process locks (flock) with a bounded wait, whose files do not pile up;
//! - [`node`]: the node state: every pool ENI and who has it;
//! - [`attachment`]: what CNI ADD did for one (container, ifname), so DEL can undo it without help.

pub mod atomic;
pub mod attachment;
pub mod lock;
pub mod node;
