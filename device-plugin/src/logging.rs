//! Logging: `tracing` to stderr, text or JSON, behind a filter that can change at run time (the
//! daemon serves it on `/debug/loglevel`).

use std::sync::{Arc, Mutex};

use nodeeni_device_plugin::http::LogLevel;
use nodeeni_device_plugin::traces::{Endpoint, OtlpLayer};
use tracing_subscriber::filter::{LevelFilter, Targets};
use tracing_subscriber::layer::{Layer, SubscriberExt};
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Registry, reload};

use crate::cmd::LogFormat;

/// The log filter from `NODEENI_LOG` when set, else `level`; with `traces`, nodeeni's spans from
/// INFO up are exported there, whatever the log filter says (a quieter log must not blind the
/// traces). Returns the handle that changes the log filter.
pub fn init(format: LogFormat, level: &str, traces: Option<Endpoint>) -> Option<Arc<dyn LogLevel>> {
    let filter = EnvFilter::try_from_env("NODEENI_LOG")
        .or_else(|_| EnvFilter::try_new(level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let (filter, handle) = ReloadableFilter::new(filter);
    let fmt = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    let otlp = traces.map(|endpoint| OtlpLayer::export(endpoint, "nodeeni-device-plugin"));
    // Each branch filters the OTLP layer for its own stack (a filtered layer's type names it).
    let installed = match format {
        LogFormat::Json => tracing_subscriber::registry()
            .with(fmt.json().with_filter(filter))
            .with(otlp.map(|l| l.with_filter(traced())))
            .try_init(),
        LogFormat::Text => tracing_subscriber::registry()
            .with(fmt.with_ansi(false).with_filter(filter))
            .with(otlp.map(|l| l.with_filter(traced())))
            .try_init(),
    };
    installed.ok().map(|()| Arc::new(handle) as Arc<dyn LogLevel>)
}

/// What the OTLP layer sees: nodeeni's own spans and events from INFO up.
fn traced() -> Targets {
    Targets::new().with_target("nodeeni", LevelFilter::INFO)
}

/// The reload handle of the filter layer, and the filter's text as last set.
struct ReloadableFilter {
    handle: reload::Handle<EnvFilter, Registry>,
    current: Mutex<String>,
}

impl ReloadableFilter {
    fn new(filter: EnvFilter) -> (reload::Layer<EnvFilter, Registry>, Self) {
        let current = Mutex::new(filter.to_string());
        let (layer, handle) = reload::Layer::new(filter);
        (layer, Self { handle, current })
    }
}

impl LogLevel for ReloadableFilter {
    fn get(&self) -> String {
        self.current.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn set(&self, filter: &str) -> Result<(), String> {
        let new = EnvFilter::try_new(filter).map_err(|e| format!("{filter:?} is not a log filter: {e}"))?;
        let text = new.to_string();
        self.handle.reload(new).map_err(|e| e.to_string())?;
        *self.current.lock().unwrap_or_else(|p| p.into_inner()) = text;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tracing_subscriber::layer::Context;

    /// A log filter at `warn` (or `off`) leaves the OTLP layer its INFO spans; its own filter never
    /// lets debug ones or other crates' through.
    #[test]
    fn the_traced_spans_do_not_follow_the_log_filter() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        #[derive(Clone, Default)]
        struct Count(Arc<AtomicUsize>);
        impl<S: tracing::Subscriber> Layer<S> for Count {
            fn on_new_span(&self, _: &tracing::span::Attributes<'_>, _: &tracing::Id, _: Context<'_, S>) {
                self.0.fetch_add(1, Ordering::SeqCst);
            }
        }
        let (logs, exported) = (Count::default(), Count::default());
        let subscriber = tracing_subscriber::registry()
            .with(logs.clone().with_filter(EnvFilter::new("warn")))
            .with(exported.clone().with_filter(traced()));
        tracing::subscriber::with_default(subscriber, || {
            let _pass = tracing::info_span!(target: "nodeeni_device_plugin::daemon", "pass").entered();
            let _ec2 = tracing::info_span!(target: "nodeeni_ipam::resilience", "ec2").entered();
            let _debug = tracing::debug_span!(target: "nodeeni_ipam", "detail").entered();
            let _other = tracing::info_span!(target: "hyper::client", "connect").entered();
        });
        assert_eq!(logs.0.load(Ordering::SeqCst), 0, "the log at warn keeps no INFO span");
        assert_eq!(exported.0.load(Ordering::SeqCst), 2, "pass and ec2 exported; debug and hyper not");
    }

    #[test]
    fn the_filter_changes_at_run_time_and_a_bad_one_is_refused() {
        let (layer, filter) = ReloadableFilter::new(EnvFilter::new("info"));
        let subscriber = tracing_subscriber::registry().with(layer);
        tracing::subscriber::with_default(subscriber, || {
            assert!(!tracing::enabled!(tracing::Level::DEBUG));
            filter.set("debug").expect("set");
            assert!(tracing::enabled!(tracing::Level::DEBUG), "debug events pass after the change");
            assert_eq!(filter.get(), "debug");
            assert!(filter.set("=[nonsense").is_err());
            assert_eq!(filter.get(), "debug", "a bad filter changes nothing");
        });
    }
}
