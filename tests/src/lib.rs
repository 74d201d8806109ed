//! The node-in-a-box test harness. Everything it creates it removes on drop, also when a test fails.
//!
//! - [`root`]: privileged tests skip without root, and fail under CI;
//! - [`netns`]: uniquely named network namespaces (/run/netns is shared with other processes);
//! - [`vpc`]: a "VPC" namespace with one bridge per subnet holding the gateway, and veth stand-ins for
//!   ENIs whose node side carries the ENI's MAC;
//! - [`sysfs`]: an emulated /sys/bus/pci tree with a kernel stand-in that honours bind/unbind;
//! - [`ec2world`]: moto worlds (VPC, subnets, security group, the node's instance);
//! - [`fake_ec2`]: an in-memory EC2 behind the pool's trait, with injectable faults, latency and
//!   eventual consistency, for pool tests in virtual time;
//! - [`http`]: reading one HTTP request, a one-shot GET (for the stand-ins);
//! - [`hotplug`]: the kernel's side of an EC2 attach/detach: veth + PCI device appear/disappear;
//! - [`apiserver`]: a Kubernetes API-server stand-in (Nodes, NodeENIs, NodeENIStates, Events) on the
//!   real wire protocol, able to drop watches, compact its history and go away;
//! - [`kubelet`]: a kubelet stand-in (Registration on kubelet.sock, a client for plugin sockets);
//! - [`allocation`]: what the kubelet and runtime add around a CNI call (the device-manager
//!   checkpoint, the pod's UID in CNI_ARGS, the CNI's node file);
//! - [`process`]: the daemon as a child process; [`bins`]: the workspace's binaries, the libcni driver;
//! - [`nodebox`]: all of it assembled into one node;
//! - [`tools`]: the repository, and where what scripts/install-deps installs is found.

pub mod allocation;
pub mod apiserver;
pub mod bench;
pub mod bins;
pub mod ec2world;
pub mod fake_ec2;
pub mod fake_host;
pub mod fault_proxy;
pub mod hotplug;
pub mod http;
pub mod imds;
pub mod kubelet;
pub mod moto;
pub mod netns;
pub mod nodebox;
pub mod otlp;
pub mod poll;
pub mod process;
pub mod prometheus;
pub mod root;
pub mod scale;
pub mod sysfs;
pub mod tools;
pub mod vpc;
