//! One log setting for `soulbox server`, `soulbox node` and the envd they start: the filter from `SOULBOX_LOG`
//! (tracing `EnvFilter` syntax, default `info`), the format from `--log-format` / `SOULBOX_LOG_FORMAT`.

use tracing_subscriber::EnvFilter;

/// `text` (human) or `json` (one object per line, for log shippers).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

impl LogFormat {
    fn name(self) -> &'static str {
        match self {
            LogFormat::Text => "text",
            LogFormat::Json => "json",
        }
    }
}

/// Installs the process's subscriber (on stderr: stdout carries command output) and hands the same setting to
/// the envd this process starts.
pub fn init(format: LogFormat) {
    let raw = std::env::var("SOULBOX_LOG").ok().filter(|v| !v.trim().is_empty());
    let (filter, text) = match raw.as_deref().map(|r| (EnvFilter::try_new(r), r)) {
        Some((Ok(filter), r)) => (filter, r.to_owned()),
        Some((Err(e), r)) => {
            eprintln!("soulbox: SOULBOX_LOG={r:?} is not a valid filter ({e}); using info");
            (EnvFilter::new("info"), "info".to_owned())
        }
        None => (EnvFilter::new("info"), "info".to_owned()),
    };
    soulbox_server::envd_log::set(&text, format.name());
    // Colours only for a person at a terminal, not escape codes in a journal or a log file.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_ansi(ansi);
    match format {
        LogFormat::Text => builder.init(),
        // Flattened: `{"timestamp":…,"level":"INFO","message":…,"request_id":…,"target":…}`.
        LogFormat::Json => builder.json().flatten_event(true).with_span_list(false).init(),
    }
}
