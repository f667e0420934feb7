//! The log setting every envd this process starts gets: the same filter and format as the process itself.
//!
//! Logging is process-wide (one tracing subscriber), so is this: the binary that sets up its own logging calls
//! [`set`] once; without that the process's environment (`SOULBOX_ENVD_LOG`, else `SOULBOX_LOG`;
//! `SOULBOX_LOG_FORMAT`) is passed on. envd reads them from its environment ([`envd_init::LOG_ENV`]).

use std::sync::OnceLock;

use soulbox_protocol::envd_init;

static SETTING: OnceLock<(String, String)> = OnceLock::new();

/// Records the filter and format (`text`/`json`) envd gets; the first call wins.
pub fn set(filter: &str, format: &str) {
    let _ = SETTING.set((filter.to_owned(), format.to_owned()));
}

/// `NAME=value` entries for envd's environment.
pub fn env_entries() -> Vec<String> {
    let from_env = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
    let (filter, format) = match SETTING.get() {
        Some((filter, format)) => (Some(filter.clone()), Some(format.clone())),
        None => (from_env(envd_init::LOG_ENV), from_env(envd_init::LOG_FORMAT_ENV)),
    };
    // The envd-only filter still wins for envd when the host sets it.
    let filter = from_env(envd_init::LEGACY_LOG_ENV).or(filter);
    let mut entries = Vec::new();
    if let Some(f) = filter {
        entries.push(format!("{}={f}", envd_init::LOG_ENV));
    }
    if let Some(f) = format {
        entries.push(format!("{}={f}", envd_init::LOG_FORMAT_ENV));
    }
    entries
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_set_value_is_what_envd_gets() {
        super::set("info,soulbox_envd=debug", "json");
        let entries = super::env_entries();
        assert!(entries.contains(&"SOULBOX_LOG_FORMAT=json".to_owned()), "{entries:?}");
        if std::env::var("SOULBOX_ENVD_LOG").is_err() {
            assert!(entries.contains(&"SOULBOX_LOG=info,soulbox_envd=debug".to_owned()), "{entries:?}");
        }
    }
}
