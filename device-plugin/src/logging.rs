//! Logging: `tracing` to stderr, text or JSON, behind a filter that can change at run time (the
//! daemon serves it on `/debug/loglevel`).

use std::sync::{Arc, Mutex};

use nodeeni_device_plugin::http::LogLevel;
use nodeeni_device_plugin::traces::{Endpoint, OtlpLayer};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Registry, reload};

use crate::cmd::LogFormat;

/// The filter from `NODEENI_LOG` when set, else `level`; with `traces`, spans are exported there too
/// (through the same filter). Returns the handle that changes the filter.
pub fn init(format: LogFormat, level: &str, traces: Option<Endpoint>) -> Option<Arc<dyn LogLevel>> {
    let filter = EnvFilter::try_from_env("NODEENI_LOG")
        .or_else(|_| EnvFilter::try_new(level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let (filter, handle) = ReloadableFilter::new(filter);
    let fmt = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    let otlp = traces.map(|endpoint| OtlpLayer::export(endpoint, "nodeeni-device-plugin"));
    let installed = match format {
        LogFormat::Json => tracing_subscriber::registry().with(filter).with(fmt.json()).with(otlp).try_init(),
        LogFormat::Text => tracing_subscriber::registry().with(filter).with(fmt.with_ansi(false)).with(otlp).try_init(),
    };
    installed.ok().map(|()| Arc::new(handle) as Arc<dyn LogLevel>)
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
