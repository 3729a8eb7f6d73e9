//! Logging: `tracing` with structured fields, JSON in AWS, text on a terminal.

use tracing_subscriber::EnvFilter;

use crate::env;

/// Installs the global subscriber. The format is `SLUICE_LOG_FORMAT` (`json` or `text`), by
/// default JSON inside Lambda or ECS and text elsewhere; the level is `RUST_LOG` (default
/// `info`). Logs go to stderr, leaving stdout to program output and metric lines.
pub fn init() {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let result = if json_logs() {
        builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .try_init()
    } else {
        use std::io::IsTerminal;
        builder
            .with_target(false)
            .with_ansi(std::io::stderr().is_terminal())
            .try_init()
    };
    // A subscriber installed earlier (tests) stays in place.
    drop(result);
}

/// Whether logs are JSON, by `SLUICE_LOG_FORMAT`.
pub fn json_logs() -> bool {
    json_logs_for(std::env::var(env::LOG_FORMAT).ok().as_deref())
}

/// Whether logs are JSON with this `SLUICE_LOG_FORMAT`: `json`, `text`, or by default JSON in
/// Lambda and ECS.
pub fn json_logs_for(log_format: Option<&str>) -> bool {
    match log_format {
        Some("json") => true,
        Some("text") => false,
        _ => {
            std::env::var_os("AWS_LAMBDA_FUNCTION_NAME").is_some()
                || std::env::var_os("ECS_CONTAINER_METADATA_URI_V4").is_some()
        }
    }
}
