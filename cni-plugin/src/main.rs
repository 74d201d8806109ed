//! `nodeeni`, the CNI plugin. kubelet/containerd, CRI-O, Multus and cnitool run it with `CNI_*`
//! variables and the network configuration on stdin; it prints a result or an error on stdout.
//! This file is the edge: environment and stdin in, spec error codes and JSON out. Node-level settings
//! come from the node file (`settings`); logs go to its `logFile` (`log`), never to stdout.

mod commands;
mod context;
mod device;
mod dpdk;
mod error;
mod host_ipam;
mod ipam;
mod kernel;
mod kubelet;
mod link_ops;
mod log;
mod settings;

use std::io::Read;
use std::process::ExitCode;

use nodeeni_conf::cni::{CniEnv, CniError, CniVersion, Command, NetConf, NodeSettings, codes, version_info};

use crate::context::Ctx;

const HELP: &str = "\
nodeeni — CNI plugin that hands a whole EC2 ENI to a pod

Run by a container runtime, Multus or cnitool, not by hand: set CNI_COMMAND (ADD, DEL, CHECK, VERSION,
STATUS, GC), CNI_CONTAINERID, CNI_NETNS, CNI_IFNAME, CNI_PATH and pass the network configuration on
stdin. The result, or an error {code, msg}, is printed on stdout.

Configuration keys (besides cniVersion, name, type, ipam, dns, runtimeConfig):
  deviceID / pciBusID   ENI ID or PCI address (Multus fills these from the pod's allocation)
  device, mac, pool     a host ifname, a MAC, or a pool to take a free ENI from
  mode                  kernel (move the netdev into the pod) or dpdk (bind to dpdkDriver)
  dpdkDriver            vfio-pci (default), igb_uio, uio_pci_generic
  mtu                   MTU inside the pod
  lockTimeoutSeconds    per-device lock wait, default 30 (then error 11, try again later)
  logLevel              error, warn, info, debug, trace
  stateDir, sysfsRoot, logFile
                        only in standalone use (no node file, no daemon node state in
                        /var/lib/nodeeni): default /var/lib/nodeeni, /sys, none

ENIs of kernel and DPDK pools are advertised to the kubelet: only a runtimeConfig.deviceID, deviceID
or pciBusID that the kubelet's checkpoint lists for this pod (K8S_POD_UID in CNI_ARGS), by ENI ID or
PCI address, may take one.

The node file (/etc/nodeeni/node.json, or $NODEENI_NODE_FILE; root's, not group/world-writable) sets
stateDir, sysfsRoot, logFile, kubeletCheckpoint and allowNetconfPaths, allowStandaloneDevices,
allowNonEnaDpdk (all false by default). nodeeni-device-plugin install-cni writes it. Without one, where
/var/lib/nodeeni holds the daemon's node state, its defaults apply as if it said so. DEL, GC and STATUS
ignore (with a warning) the path keys that ADD and CHECK refuse.

Options: --help, --version";

fn init_logging(conf: &NetConf, settings: &NodeSettings) {
    let level =
        conf.log_level.as_deref().and_then(|l| l.parse::<tracing::Level>().ok()).unwrap_or(tracing::Level::INFO);
    let Some(path) = &settings.log_file else { return };
    let file = match log::open(path) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("nodeeni: cannot open log file {}: {e}", path.display());
            return;
        }
    };
    let _ = tracing_subscriber::fmt()
        .with_writer(log::LogFile::new(file))
        .with_ansi(false)
        .with_max_level(level)
        .with_target(false)
        .try_init();
}

fn fail(err: &CniError, version: &str) -> ExitCode {
    println!("{}", err.to_json(version));
    ExitCode::FAILURE
}

/// CHECK needs 0.4.0 or later, STATUS and GC 1.1.0: the spec's version rules, for both plugins.
fn version_gate(command: Command, version: CniVersion, given: &str) -> Result<(), CniError> {
    if matches!(command, Command::Check) && !version.has_check() {
        let msg = format!("CHECK needs cniVersion 0.4.0 or later, config has {given}");
        return Err(CniError::new(codes::INCOMPATIBLE_VERSION, msg, ""));
    }
    if matches!(command, Command::Status | Command::Gc) && !version.has_status_and_gc() {
        let msg = format!("STATUS and GC need cniVersion 1.1.0, config has {given}");
        return Err(CniError::new(codes::INCOMPATIBLE_VERSION, msg, ""));
    }
    Ok(())
}

/// Which plugin this run is: the executable answers as `nodeeni-ipam` under that name.
fn invoked_as_ipam() -> bool {
    std::env::args_os()
        .next()
        .map(std::path::PathBuf::from)
        .and_then(|p| p.file_name().map(|f| f == host_ipam::PLUGIN_NAME))
        .unwrap_or(false)
}

/// `nodeeni-ipam`: the same edge as `nodeeni` (stdin, environment, spec error codes on stdout) for the
/// host-pool IPAM plugin.
fn ipam_main() -> ExitCode {
    match std::env::args().nth(1).as_deref() {
        Some("--help" | "-h") => {
            println!("{}", host_ipam::HELP);
            return ExitCode::SUCCESS;
        }
        Some("--version" | "-V") => {
            println!(
                "{} {} (CNI {})",
                host_ipam::PLUGIN_NAME,
                env!("CARGO_PKG_VERSION"),
                CniVersion::ALL.map(|v| v.as_str()).join(", ")
            );
            return ExitCode::SUCCESS;
        }
        _ => {}
    }
    let latest = CniVersion::LATEST.as_str();
    let mut stdin = Vec::new();
    if let Err(e) = std::io::stdin().read_to_end(&mut stdin) {
        return fail(&CniError::new(codes::IO_FAILURE, format!("cannot read stdin: {e}"), ""), latest);
    }
    let env = match CniEnv::from_vars(|k| std::env::var(k).ok()) {
        Ok(env) => env,
        Err(e) => return fail(&e, latest),
    };
    let asked = || {
        serde_json::from_slice::<serde_json::Value>(&stdin)
            .ok()
            .and_then(|v| v.get("cniVersion").and_then(|c| c.as_str()).map(str::to_string))
    };
    if env.command == Command::Version {
        println!("{}", version_info(asked().as_deref().filter(|v| v.parse::<CniVersion>().is_ok())));
        return ExitCode::SUCCESS;
    }
    let conf = match host_ipam::IpamConf::parse(&stdin) {
        Ok(c) => c,
        Err(e) => return fail(&e, asked().as_deref().unwrap_or(latest)),
    };
    let version = conf.cni_version_str.clone();
    let settings = match conf
        .settings_conf()
        .and_then(|c| settings::resolve(&c, env.command, |k| std::env::var(k).ok()).map(|settings| (c, settings)))
    {
        Ok((c, settings)) => {
            init_logging(&c, &settings);
            settings
        }
        Err(e) => return fail(&e, &version),
    };
    if let Err(e) = version_gate(env.command, conf.cni_version, &version) {
        return fail(&e, &version);
    }
    let span = tracing::info_span!(
        "ipam",
        command = ?env.command,
        pool = conf.pool,
        container = env.container_id.as_ref().map(|c| c.as_str()),
        ifname = env.ifname.as_ref().map(|i| i.as_str()),
    );
    let _enter = span.enter();
    let store = nodeeni_state::node::NodeStore::new(&settings.state_dir);
    match host_ipam::run(&env, &conf, &store) {
        Ok(Some(result)) => {
            println!("{}", result.to_json(&version));
            ExitCode::SUCCESS
        }
        Ok(None) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "failed");
            fail(&e.to_cni(), &version)
        }
    }
}

fn main() -> ExitCode {
    if invoked_as_ipam() {
        return ipam_main();
    }
    match std::env::args().nth(1).as_deref() {
        Some("--help" | "-h") => {
            println!("{HELP}");
            return ExitCode::SUCCESS;
        }
        Some("--version" | "-V") => {
            println!("nodeeni {} (CNI {})", env!("CARGO_PKG_VERSION"), CniVersion::ALL.map(|v| v.as_str()).join(", "));
            return ExitCode::SUCCESS;
        }
        _ => {}
    }
    let latest = CniVersion::LATEST.as_str();
    // Read the config first, whatever follows: a runtime writing it must never see a broken pipe.
    let mut stdin = Vec::new();
    if let Err(e) = std::io::stdin().read_to_end(&mut stdin) {
        return fail(&CniError::new(codes::IO_FAILURE, format!("cannot read stdin: {e}"), ""), latest);
    }
    let env = match CniEnv::from_vars(|k| std::env::var(k).ok()) {
        Ok(env) => env,
        Err(e) => return fail(&e, latest),
    };
    if env.command == Command::Version {
        // VERSION answers whatever config came, even one of a version we do not speak.
        let asked = serde_json::from_slice::<serde_json::Value>(&stdin)
            .ok()
            .and_then(|v| v.get("cniVersion").and_then(|c| c.as_str()).map(str::to_string));
        println!("{}", version_info(asked.as_deref().filter(|v| v.parse::<CniVersion>().is_ok())));
        return ExitCode::SUCCESS;
    }
    let conf = match NetConf::parse(&stdin) {
        Ok(c) => c,
        Err(e) => {
            // Answer in the version the config asked for, when it names one.
            let asked = serde_json::from_slice::<serde_json::Value>(&stdin)
                .ok()
                .and_then(|v| v.get("cniVersion").and_then(|c| c.as_str()).map(str::to_string));
            return fail(&e, asked.as_deref().unwrap_or(latest));
        }
    };
    let version = conf.cni_version_str.clone();
    let settings = match settings::resolve(&conf, env.command, |k| std::env::var(k).ok()) {
        Ok(s) => s,
        Err(e) => return fail(&e, &version),
    };
    init_logging(&conf, &settings);
    for warning in &settings.warnings {
        tracing::warn!("{warning}");
        if settings.log_file.is_none() {
            // No log to say it in: the runtime keeps a plugin's stderr (stdout is the protocol).
            eprintln!("nodeeni: warning: {warning}");
        }
    }
    if let Err(e) = version_gate(env.command, conf.cni_version, &version) {
        return fail(&e, &version);
    }
    let ctx = Ctx::new(&env, &conf, &settings);
    let span = tracing::info_span!(
        "cni",
        command = ?env.command,
        container = env.container_id.as_ref().map(|c| c.as_str()),
        ifname = env.ifname.as_ref().map(|i| i.as_str()),
        netns = env.netns.as_ref().map(|n| n.display().to_string()),
    );
    let _enter = span.enter();
    let outcome = match env.command {
        Command::Add => commands::add(&ctx).map(|r| Some(r.to_json(&version))),
        Command::Del => commands::del(&ctx).map(|()| None),
        Command::Check => commands::check(&ctx).map(|()| None),
        Command::Status => commands::status(&ctx).map(|()| None),
        Command::Gc => commands::gc(&ctx).map(|()| None),
        Command::Version => Ok(None),
    };
    match outcome {
        Ok(Some(result)) => {
            println!("{result}");
            ExitCode::SUCCESS
        }
        Ok(None) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "failed");
            fail(&e.to_cni(), &version)
        }
    }
}
