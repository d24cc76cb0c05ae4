//! Logging set-up: human-readable text by default, JSON with `log_format = "json"`;
//! `RUST_LOG` filters (default `info`). Logs go to stderr. [`Every`] keeps a failure that
//! repeats with every request (a failing disk) to one line per interval.

use crate::config::LogFormat;
use tracing_subscriber::EnvFilter;

pub fn init_logging(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    // Colours only for a terminal: escape codes in a log file or a collector are noise.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_ansi(ansi);
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
}

/// At most one log line per `interval` for one kind of repeating failure, telling how many
/// were held back since the last one.
pub struct Every {
    interval_ms: u64,
    last_ms: std::sync::atomic::AtomicU64,
    held_back: std::sync::atomic::AtomicU64,
}

impl Every {
    pub const fn new(interval: std::time::Duration) -> Self {
        Self {
            interval_ms: interval.as_millis() as u64,
            last_ms: std::sync::atomic::AtomicU64::new(0),
            held_back: std::sync::atomic::AtomicU64::new(0),
        }
    }

    /// `Some(held back)` if a line may be logged now (the caller logs it), else `None`.
    pub fn due(&self, now_ms: u64) -> Option<u64> {
        use std::sync::atomic::Ordering::Relaxed;
        let last = self.last_ms.load(Relaxed);
        if (last == 0 || now_ms.saturating_sub(last) >= self.interval_ms)
            && self.last_ms.compare_exchange(last, now_ms.max(1), Relaxed, Relaxed).is_ok()
        {
            return Some(self.held_back.swap(0, Relaxed));
        }
        self.held_back.fetch_add(1, Relaxed);
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_per_interval_with_the_count_held_back() {
        let every = Every::new(std::time::Duration::from_secs(30));
        assert_eq!(every.due(1_000), Some(0));
        assert_eq!(every.due(1_001), None);
        assert_eq!(every.due(20_000), None);
        assert_eq!(every.due(31_000), Some(2));
        assert_eq!(every.due(31_001), None);
    }
}
