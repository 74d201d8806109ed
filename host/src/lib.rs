//! The node's kernel side, shared by the CNI binary and the daemon, and nothing else: no EC2 here, so
//! the CNI links it without the AWS SDK.
//!
//! - [`netns`]: network namespace handles; run a closure inside one on the current thread;
//! - [`netlink`]: a small synchronous rtnetlink socket, one method per operation (links, addresses,
//!   routes), opened in a namespace once and then used without switching;
//! - [`pci`]: PCI devices under a configurable sysfs root: drivers, binding to a DPDK driver and back,
//!   IOMMU group, NUMA node, netdevs.

pub mod netlink;
pub mod netns;
pub mod pci;
