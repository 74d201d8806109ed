//! The node-in-a-box test harness. Everything it creates it removes on drop, also when a test fails.
//!
//! - [`root`]: privileged tests skip without root, and fail under CI;
//! - [`netns`]: uniquely named network namespaces (/run/netns is shared with other processes);
//! - [`vpc`]: a "VPC" namespace with one bridge per subnet holding the gateway, and veth stand-ins for
//!   ENIs whose node side carries the ENI's MAC;
//! - [`sysfs`]: an emulated /sys/bus/pci tree with a kernel stand-in that honours bind/unbind.

pub mod fault_proxy;
pub mod imds;
pub mod moto;
pub mod netns;
pub mod root;
pub mod sysfs;
pub mod vpc;
