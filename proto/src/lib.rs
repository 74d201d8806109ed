//! gRPC definitions nodeeni speaks, generated at build time from `proto/`.
//!
//! - [`deviceplugin::v1beta1`]: the kubelet's device-plugin API (Registration on kubelet.sock,
//!   DevicePlugin on each plugin's socket).

pub mod deviceplugin {
    pub mod v1beta1 {
        #![allow(missing_debug_implementations, clippy::all)]
        tonic::include_proto!("v1beta1");

        /// The API version a plugin registers with.
        pub const VERSION: &str = "v1beta1";
        /// The kubelet's registration socket, inside the device-plugin folder.
        pub const KUBELET_SOCKET: &str = "kubelet.sock";
        pub const DEFAULT_DEVICE_PLUGIN_DIR: &str = "/var/lib/kubelet/device-plugins";
        pub const HEALTHY: &str = "Healthy";
        pub const UNHEALTHY: &str = "Unhealthy";
    }
}

pub mod uds;
