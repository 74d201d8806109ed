//! `nodeeni-device-plugin`, the node daemon's command line: `run` (the daemon), `drain`,
//! `validate-config`, `status`, `install-cni`, `crds`. This file parses, sets up logging, and dispatches; each
//! subcommand is a file in `cmd/`.

mod cmd;
mod logging;

use std::process::ExitCode;

use clap::Parser;
use cmd::{Cli, Cmd};

fn main() -> ExitCode {
    let cli = Cli::parse();
    // Traces are an aid, not a duty: an endpoint we cannot use that came from the environment (an
    // https:// or gRPC one set for other programs in OTEL_EXPORTER_OTLP_ENDPOINT, say) turns them
    // off, said loudly, and the ENIs go on. One given as our own flag is a mistake to fix: refused.
    let (traces, unusable) =
        match cli.otlp_endpoint.as_deref().map(nodeeni_device_plugin::traces::Endpoint::parse).transpose() {
            Ok(t) => (t, None),
            Err(e) => (None, Some(e)),
        };
    let flagged = std::env::args().any(|a| a == "--otlp-endpoint" || a.starts_with("--otlp-endpoint="));
    if let (Some(e), true) = (&unusable, flagged) {
        eprintln!("error: --otlp-endpoint: {e}");
        return ExitCode::from(2);
    }
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
