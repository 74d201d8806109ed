//! `nodeeni-device-plugin`, the node daemon's command line: `run` (the daemon), `drain`,
//! `validate-config`, `status`, `install-cni`, `crds`. This file parses, sets up logging, and dispatches; each
//! subcommand is a file in `cmd/`.

mod cmd;
mod logging;

use std::process::ExitCode;

use clap::Parser;
use cmd::{Cli, Cmd};
use nodeeni_device_plugin::traces::Endpoint;

/// The OpenTelemetry SDKs' variable for the OTLP endpoint, read when `--otlp-endpoint` is not given.
const OTLP_ENDPOINT_ENV: &str = "OTEL_EXPORTER_OTLP_ENDPOINT";

fn main() -> ExitCode {
    let cli = Cli::parse();
    // Our own flag names an endpoint the operator asked for: one we cannot use is a mistake to fix,
    // refused. The environment's is set for other programs too (an https:// or gRPC collector, say):
    // one we cannot use turns traces off, said loudly, and the ENIs go on.
    let (traces, unusable) = match cli.otlp_endpoint.as_deref() {
        Some(flag) => match Endpoint::parse(flag) {
            Ok(e) => (Some(e), None),
            Err(e) => {
                eprintln!("error: --otlp-endpoint: {e}");
                return ExitCode::from(2);
            }
        },
        None => match std::env::var(OTLP_ENDPOINT_ENV).ok().filter(|v| !v.is_empty()).map(|v| Endpoint::parse(&v)) {
            Some(Ok(e)) => (Some(e), None),
            Some(Err(e)) => (None, Some(e)),
            None => (None, None),
        },
    };
    let log_level = logging::init(cli.log_format, &cli.log_level, traces);
    if let Some(e) = unusable {
        tracing::warn!(error = %e, "traces are off: the OTLP endpoint cannot be used");
    }
    match cli.command {
        Cmd::Run(args) => cmd::run(*args, log_level),
        Cmd::Drain { config, cluster_name, timeout, imds_endpoint, resume } => {
            cmd::drain(config, cluster_name, timeout, imds_endpoint, resume)
        }
        Cmd::ValidateConfig { file, cluster_name } => cmd::validate(&file, cluster_name),
        Cmd::InstallCni { from, to, state_dir } => cmd::install_cni(&from, &to, state_dir.as_deref()),
        Cmd::Status { state_dir, json } => cmd::status(&state_dir, json),
        Cmd::Crds => {
            print!("{}", nodeeni_cluster::crd::crds_yaml());
            ExitCode::SUCCESS
        }
    }
}
