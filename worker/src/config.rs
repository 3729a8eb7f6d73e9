//! The worker's configuration, from environment variables.

use std::time::Duration;

use sluice::config::{number_or, required, seconds_or, ConfigError, ProcessEnv, Source};
use sluice::env;
use sluice::job::Backoff;

#[derive(Debug, Clone)]
pub struct WorkerConfig {
    pub table_name: String,
    pub queue_url: String,
    /// Jobs run at once.
    pub concurrency: usize,
    pub visibility_timeout: Duration,
    pub lease: Duration,
    pub heartbeat: Duration,
    /// How long a stopping worker lets running jobs finish before releasing them.
    pub drain: Duration,
    pub receive_wait: Duration,
    pub backoff: Backoff,
    pub worker_id: String,
    /// The built-in handler `sluice-worker` runs.
    pub handler: String,
    /// Table retention for finished jobs' records.
    pub retention: Duration,
    /// CloudWatch namespace of the job metrics.
    pub metric_namespace: String,
    /// Whether job metrics are written (as EMF lines, with JSON logs).
    pub emit_metrics: bool,
}

impl WorkerConfig {
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_source(&ProcessEnv)
    }

    pub fn from_source(src: &(impl Source + ?Sized)) -> Result<Self, ConfigError> {
        let lease = seconds_or(src, env::LEASE_SECONDS, 60, 1..=43_200)?;
        let visibility_timeout = seconds_or(src, env::VISIBILITY_TIMEOUT_SECONDS, 60, 1..=43_200)?;
        let default_beat = (lease.min(visibility_timeout).as_secs() / 3).max(1);
        let heartbeat = seconds_or(src, env::HEARTBEAT_SECONDS, default_beat, 1..=43_200)?;
        if heartbeat >= lease || heartbeat >= visibility_timeout {
            return Err(ConfigError::Invalid {
                name: env::HEARTBEAT_SECONDS,
                value: heartbeat.as_secs().to_string(),
                reason: format!(
                    "the heartbeat must be shorter than the lease ({} s) and the visibility timeout ({} s)",
                    lease.as_secs(),
                    visibility_timeout.as_secs()
                ),
            });
        }
        let base = seconds_or(src, env::RETRY_BASE_SECONDS, 2, 0..=43_200)?;
        let max = seconds_or(src, env::RETRY_MAX_SECONDS, 300, 0..=43_200)?;
        if max < base {
            return Err(ConfigError::Invalid {
                name: env::RETRY_MAX_SECONDS,
                value: max.as_secs().to_string(),
                reason: format!(
                    "must be at least {} ({})",
                    env::RETRY_BASE_SECONDS,
                    base.as_secs()
                ),
            });
        }
        Ok(WorkerConfig {
            table_name: required(src, env::TABLE_NAME, "set it to the jobs table's name")?,
            queue_url: required(src, env::QUEUE_URL, "set it to the jobs queue's URL")?,
            concurrency: number_or(src, env::CONCURRENCY, 4usize, 1..=256)?,
            visibility_timeout,
            lease,
            heartbeat,
            drain: seconds_or(src, env::DRAIN_SECONDS, 90, 0..=3_600)?,
            receive_wait: seconds_or(src, env::RECEIVE_WAIT_SECONDS, 20, 0..=20)?,
            backoff: Backoff { base, max },
            worker_id: src.get(env::WORKER_ID).unwrap_or_else(default_worker_id),
            handler: src.get(env::HANDLER).unwrap_or_else(|| "demo".into()),
            emit_metrics: sluice::telemetry::json_logs_for(src.get(env::LOG_FORMAT).as_deref()),
            metric_namespace: src
                .get(env::METRIC_NAMESPACE)
                .unwrap_or_else(|| crate::metrics::NAMESPACE.into()),
            retention: Duration::from_secs(86_400)
                * number_or(src, env::RETENTION_DAYS, 7u32, 1..=3650)?,
        })
    }
}

/// The host's name and this process's id.
fn default_worker_id() -> String {
    let host = std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "worker".into());
    format!("{host}-{}", std::process::id())
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: &[(&str, &str)] = &[("SLUICE_TABLE_NAME", "t"), ("SLUICE_QUEUE_URL", "http://q")];

    fn with(extra: &[(&'static str, &'static str)]) -> Vec<(&'static str, &'static str)> {
        BASE.iter().chain(extra).copied().collect()
    }

    #[test]
    fn defaults_are_consistent() {
        let c = WorkerConfig::from_source(BASE).unwrap();
        assert_eq!(c.concurrency, 4);
        assert_eq!(c.heartbeat, Duration::from_secs(20));
        assert_eq!(c.receive_wait, Duration::from_secs(20));
        assert_eq!(c.drain, Duration::from_secs(90));
        assert_eq!(c.handler, "demo");
    }

    #[test]
    fn bad_settings_name_the_variable() {
        let cases: Vec<(Vec<(&str, &str)>, &str)> = vec![
            (
                vec![("SLUICE_TABLE_NAME", "t")],
                "SLUICE_QUEUE_URL is not set",
            ),
            (
                with(&[("SLUICE_CONCURRENCY", "0")]),
                "SLUICE_CONCURRENCY=\"0\" is not valid: expected 1 to 256",
            ),
            (
                with(&[
                    ("SLUICE_LEASE_SECONDS", "3"),
                    ("SLUICE_HEARTBEAT_SECONDS", "3"),
                ]),
                "SLUICE_HEARTBEAT_SECONDS=\"3\" is not valid: the heartbeat must be shorter",
            ),
            (
                with(&[("SLUICE_RECEIVE_WAIT_SECONDS", "21")]),
                "SLUICE_RECEIVE_WAIT_SECONDS=\"21\"",
            ),
            (
                with(&[
                    ("SLUICE_RETRY_BASE_SECONDS", "10"),
                    ("SLUICE_RETRY_MAX_SECONDS", "5"),
                ]),
                "SLUICE_RETRY_MAX_SECONDS=\"5\" is not valid: must be at least",
            ),
        ];
        for (vars, want) in cases {
            let e = WorkerConfig::from_source(&vars[..])
                .unwrap_err()
                .to_string();
            assert!(e.starts_with(want), "{e}");
        }
        let short = WorkerConfig::from_source(&with(&[("SLUICE_LEASE_SECONDS", "2")])[..]).unwrap();
        assert_eq!(short.heartbeat, Duration::from_secs(1));
    }
}
