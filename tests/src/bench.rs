//! Benchmarks report their headline numbers to scripts/bench: with NODEENI_BENCH_OUT set, each
//! [`record`] appends a `key<TAB>value` line there; scripts/bench turns them into one table.

use std::io::Write;
use std::time::Duration;

/// Appends `key<TAB>value` to the file NODEENI_BENCH_OUT names (nothing when it is unset).
pub fn record(key: &str, value: impl std::fmt::Display) {
    if let Some(path) = std::env::var_os("NODEENI_BENCH_OUT")
        && let Ok(mut f) = std::fs::OpenOptions::new().create(true).append(true).open(path)
    {
        let _ = writeln!(f, "{key}\t{value}");
    }
}

/// The median of `samples` (the upper one of an even count; zero for none).
pub fn median(samples: &[Duration]) -> Duration {
    let mut sorted = samples.to_vec();
    sorted.sort();
    sorted.get(sorted.len() / 2).copied().unwrap_or_default()
}
