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
    /// Age after which the worker retires (stops taking jobs, finishes its own, exits).
    pub max_age: Option<Duration>,
    pub receive_wait: Duration,
    pub backoff: Backoff,
    pub worker_id: String,
    /// The compute `sluice-worker` runs.
    pub mode: Mode,
    /// The time limit of an attempt whose job sets none.
    pub job_timeout: Duration,
    /// The longest time limit of any attempt, whatever its job asks for.
    pub max_job_timeout: Duration,
    /// How long the handler's process or model server may take to become ready.
    pub startup: Duration,
    /// The queue's redrive limit: deliveries before SQS moves a message to the dead-letter queue.
    pub max_receive_count: u32,
    /// Table retention for finished jobs' records.
    pub retention: Duration,
    /// CloudWatch namespace of the job metrics.
    pub metric_namespace: String,
    /// Whether job metrics are written (as EMF lines, with JSON logs).
    pub emit_metrics: bool,
    /// Which targets the webhooks of the jobs this worker ends may reach.
    pub webhook_policy: sluice::webhook::TargetPolicy,
    /// The bucket of uploaded job inputs; `None`: a job with a file fails.
    pub payload_bucket: Option<String>,
    /// The SNS topics and EventBridge bus the ends of the jobs marked so are published to.
    pub events: sluice::events::EventTargets,
}

impl WorkerConfig {
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_source(&ProcessEnv)
    }

    pub fn from_source(src: &(impl Source + ?Sized)) -> Result<Self, ConfigError> {
        let lease = seconds_or(src, env::LEASE_SECONDS, 60, 3..=43_200)?;
        let visibility_timeout = seconds_or(src, env::VISIBILITY_TIMEOUT_SECONDS, 60, 1..=43_200)?;
        let default_beat = (lease.min(visibility_timeout).as_secs() / 3).max(1);
        let heartbeat = seconds_or(src, env::HEARTBEAT_SECONDS, default_beat, 1..=43_200)?;
        // Each beat's calls are cut at the next beat, so a beat whose call is lost or slow still
        // leaves one more before the message's visibility runs out, and before the worker must
        // stop a run whose lease it could not renew (two beats after its last renewal began,
        // [`fence_margin`]), with a third of the lease left for the run to stop in.
        if heartbeat * 3 > lease || heartbeat * 2 > visibility_timeout {
            return Err(ConfigError::Invalid {
                name: env::HEARTBEAT_SECONDS,
                value: heartbeat.as_secs().to_string(),
                reason: format!(
                    "the heartbeat must be at most a third of the lease ({} s) and half the visibility timeout ({} s), \
                     so that a beat that fails leaves another before the worker must stop its run or the message shows again",
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
        let max_job_timeout = sluice::config::max_job_timeout(src)?;
        let job_timeout = seconds_or(
            src,
            env::JOB_TIMEOUT_SECONDS,
            3_600.min(max_job_timeout.as_secs()),
            1..=max_job_timeout.as_secs(),
        )?;
        Ok(WorkerConfig {
            table_name: required(src, env::TABLE_NAME, "set it to the jobs table's name")?,
            queue_url: required(src, env::QUEUE_URL, "set it to the jobs queue's URL")?,
            concurrency: number_or(src, env::CONCURRENCY, 4usize, 1..=256)?,
            visibility_timeout,
            lease,
            heartbeat,
            drain: seconds_or(src, env::DRAIN_SECONDS, 90, 0..=3_600)?,
            max_age: match src.get(env::MAX_TASK_AGE_SECONDS) {
                None => None,
                Some(_) => Some(seconds_or(
                    src,
                    env::MAX_TASK_AGE_SECONDS,
                    0,
                    1..=30 * 86_400,
                )?),
            },
            receive_wait: seconds_or(src, env::RECEIVE_WAIT_SECONDS, 20, 0..=20)?,
            backoff: Backoff { base, max },
            worker_id: src.get(env::WORKER_ID).unwrap_or_else(default_worker_id),
            mode: Mode::from_source(src)?,
            job_timeout,
            max_job_timeout,
            startup: seconds_or(src, env::STARTUP_SECONDS, 600, 1..=86_400)?,
            max_receive_count: number_or(src, env::MAX_RECEIVE_COUNT, 12u32, 1..=1000)?,
            emit_metrics: sluice::telemetry::json_logs_for(src.get(env::LOG_FORMAT).as_deref()),
            metric_namespace: src
                .get(env::METRIC_NAMESPACE)
                .unwrap_or_else(|| crate::metrics::NAMESPACE.into()),
            retention: Duration::from_secs(86_400)
                * number_or(src, env::RETENTION_DAYS, 7u32, 1..=3650)?,
            webhook_policy: sluice::config::webhook_policy(src)?,
            payload_bucket: src.get(env::PAYLOAD_BUCKET),
            events: sluice::config::event_targets(src)?,
        })
    }
}

/// How long before its lease lapses a worker stops a run whose lease it could not renew
/// (self-fencing): once two beats have passed since the last renewal began, each beat's calls
/// having been given their whole beat (a slow store is not yet a lost one). With the heartbeat at
/// most a third of the lease, at least a third of the lease is left for the run to stop in (a
/// child's cancel grace, then a kill) before another worker may take the job. Pure.
pub fn fence_margin(lease: Duration, heartbeat: Duration) -> Duration {
    lease.saturating_sub(heartbeat * 2)
}

/// When a worker with this id retires: `max_age`, up to a tenth earlier by a hash of the id
/// (FNV-1a), so a fleet started by one burst does not restart all at once. Pure.
pub fn retire_after(max_age: Duration, worker_id: &str) -> Duration {
    let hash = worker_id.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    });
    let fraction = (hash % 1000) as f64 / 10_000.0;
    max_age.mul_f64(1.0 - fraction)
}

impl WorkerConfig {
    /// The time limit of an attempt at `job`: its own, else the default, never above the maximum.
    pub fn time_limit(&self, job: &sluice::job::JobRecord) -> Duration {
        job.timeout_seconds
            .map_or(self.job_timeout, Duration::from_secs)
            .min(self.max_job_timeout)
    }
}

/// The compute `sluice-worker` runs (`SLUICE_HANDLER`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mode {
    /// The built-in demo handler.
    Demo,
    /// The user's program, one per slot, over JSON lines (`worker/PROTOCOL.md`).
    Process { command: Vec<String> },
    /// A model server in the same task (`GET /ping`, `POST /invocations`).
    Http { url: String },
}

impl Mode {
    pub fn from_source(src: &(impl Source + ?Sized)) -> Result<Self, ConfigError> {
        let name = src.get(env::HANDLER).unwrap_or_else(|| "demo".into());
        match name.trim() {
            "demo" => Ok(Mode::Demo),
            "process" => {
                let raw = required(
                    src,
                    env::COMMAND,
                    "set it to the handler's program, e.g. [\"python3\", \"handler.py\"]",
                )?;
                let command = parse_command(&raw).map_err(|reason| ConfigError::Invalid {
                    name: env::COMMAND,
                    value: raw.clone(),
                    reason,
                })?;
                Ok(Mode::Process { command })
            }
            "http" => {
                let url = src
                    .get(env::MODEL_URL)
                    .unwrap_or_else(|| "http://127.0.0.1:8080".into());
                let trimmed = url.trim().trim_end_matches('/').to_owned();
                let ok = reqwest::Url::parse(&trimmed)
                    .is_ok_and(|u| matches!(u.scheme(), "http" | "https") && u.host().is_some());
                if !ok {
                    return Err(ConfigError::Invalid {
                        name: env::MODEL_URL,
                        value: url,
                        reason: "expected an http:// or https:// URL, e.g. http://127.0.0.1:8080"
                            .into(),
                    });
                }
                Ok(Mode::Http { url: trimmed })
            }
            _ => Err(ConfigError::Invalid {
                name: env::HANDLER,
                value: name,
                reason:
                    "expected demo, process (a program over JSON lines) or http (a model server)"
                        .into(),
            }),
        }
    }
}

/// A command as a JSON array of strings, or as words split like a shell would split them.
pub fn parse_command(raw: &str) -> Result<Vec<String>, String> {
    let raw = raw.trim();
    let words = if raw.starts_with('[') {
        serde_json::from_str::<Vec<String>>(raw)
            .map_err(|e| format!("not a JSON array of strings ({e})"))?
    } else {
        shell_words::split(raw).map_err(|e| format!("cannot split it into words ({e})"))?
    };
    match words.first() {
        Some(program) if !program.is_empty() => Ok(words),
        _ => Err("the command is empty".into()),
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
    #[test]
    fn a_run_unrenewed_stops_in_time_to_stop_before_its_lease_lapses() {
        use super::fence_margin;
        let s = Duration::from_secs;
        for (lease, heartbeat, margin) in [
            (s(3), s(1), s(1)),
            (s(10), s(3), s(4)),
            (s(60), s(20), s(20)),
            (s(60), s(5), s(50)),
            (s(600), s(200), s(200)),
        ] {
            assert_eq!(fence_margin(lease, heartbeat), margin, "lease {lease:?}");
            // The beat after the last renewal has its whole beat before the fence.
            assert!(lease - margin >= heartbeat * 2);
        }
    }

    #[test]
    fn workers_retire_within_a_tenth_before_their_age() {
        let age = Duration::from_secs(6 * 3600);
        let ids = ["a", "b", "task/1", "task/2", "7f3a", ""];
        let mut seen = std::collections::HashSet::new();
        for id in ids {
            let at = retire_after(age, id);
            assert!(at <= age && at >= age.mul_f64(0.9), "{id}: {at:?}");
            assert_eq!(at, retire_after(age, id), "the same id, the same moment");
            seen.insert(at);
        }
        assert!(seen.len() > 3, "ids spread the moments: {seen:?}");
    }

    #[test]
    fn max_task_age_is_optional_and_checked() {
        let base = [("SLUICE_TABLE_NAME", "t"), ("SLUICE_QUEUE_URL", "q")];
        assert_eq!(WorkerConfig::from_source(&base[..]).unwrap().max_age, None);
        let with = |v: &'static str| {
            let vars: Vec<_> = base
                .iter()
                .copied()
                .chain([("SLUICE_MAX_TASK_AGE_SECONDS", v)])
                .collect();
            WorkerConfig::from_source(&vars[..])
        };
        assert_eq!(
            with("21600").unwrap().max_age,
            Some(Duration::from_secs(21_600))
        );
        let e = with("0").unwrap_err().to_string();
        assert!(e.starts_with("SLUICE_MAX_TASK_AGE_SECONDS"), "{e}");
        assert!(with("six hours").is_err());
    }

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
        assert_eq!(c.mode, Mode::Demo);
        assert_eq!(c.job_timeout, Duration::from_secs(3600));
        assert_eq!(c.max_job_timeout, sluice::job::MAX_JOB_TIMEOUT);
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
                "SLUICE_HEARTBEAT_SECONDS=\"3\" is not valid: the heartbeat must be at most a third of the lease (3 s)",
            ),
            (
                with(&[
                    ("SLUICE_VISIBILITY_TIMEOUT_SECONDS", "60"),
                    ("SLUICE_LEASE_SECONDS", "60"),
                    ("SLUICE_HEARTBEAT_SECONDS", "59"),
                ]),
                "SLUICE_HEARTBEAT_SECONDS=\"59\" is not valid: the heartbeat must be at most a third",
            ),
            (
                with(&[
                    ("SLUICE_VISIBILITY_TIMEOUT_SECONDS", "30"),
                    ("SLUICE_LEASE_SECONDS", "90"),
                    ("SLUICE_HEARTBEAT_SECONDS", "20"),
                ]),
                "SLUICE_HEARTBEAT_SECONDS=\"20\" is not valid: the heartbeat must be at most a third of the lease (90 s) and half the visibility timeout (30 s)",
            ),
            (
                with(&[
                    ("SLUICE_LEASE_SECONDS", "60"),
                    ("SLUICE_HEARTBEAT_SECONDS", "30"),
                ]),
                "SLUICE_HEARTBEAT_SECONDS=\"30\" is not valid: the heartbeat must be at most a third of the lease (60 s)",
            ),
            (
                with(&[("SLUICE_LEASE_SECONDS", "2")]),
                "SLUICE_LEASE_SECONDS=\"2\" is not valid",
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
        let more: Vec<(Vec<(&str, &str)>, &str)> = vec![
            (
                with(&[("SLUICE_HANDLER", "python")]),
                "SLUICE_HANDLER=\"python\" is not valid: expected demo, process",
            ),
            (
                with(&[("SLUICE_HANDLER", "process")]),
                "SLUICE_COMMAND is not set; set it to the handler's program",
            ),
            (
                with(&[("SLUICE_HANDLER", "process"), ("SLUICE_COMMAND", "[\"python3\", 3]")]),
                "SLUICE_COMMAND=\"[\\\"python3\\\", 3]\" is not valid: not a JSON array of strings",
            ),
            (
                with(&[("SLUICE_HANDLER", "process"), ("SLUICE_COMMAND", "python3 'unclosed")]),
                "SLUICE_COMMAND=\"python3 'unclosed\" is not valid: cannot split it into words",
            ),
            (
                with(&[("SLUICE_HANDLER", "http"), ("SLUICE_MODEL_URL", "127.0.0.1:8080")]),
                "SLUICE_MODEL_URL=\"127.0.0.1:8080\" is not valid: expected an http:// or https:// URL",
            ),
            (
                with(&[("SLUICE_JOB_TIMEOUT_SECONDS", "50000")]),
                "SLUICE_JOB_TIMEOUT_SECONDS=\"50000\" is not valid: expected 1 to 42300",
            ),
            (
                with(&[("SLUICE_MAX_JOB_TIMEOUT_SECONDS", "600"), ("SLUICE_JOB_TIMEOUT_SECONDS", "601")]),
                "SLUICE_JOB_TIMEOUT_SECONDS=\"601\" is not valid: expected 1 to 600",
            ),
        ];
        for (vars, want) in cases.into_iter().chain(more) {
            let e = WorkerConfig::from_source(&vars[..])
                .unwrap_err()
                .to_string();
            assert!(e.starts_with(want), "{e}");
        }
        let capped =
            WorkerConfig::from_source(&with(&[("SLUICE_MAX_JOB_TIMEOUT_SECONDS", "600")])[..])
                .unwrap();
        assert_eq!(
            capped.job_timeout,
            Duration::from_secs(600),
            "the default stays under the maximum"
        );
        let short = WorkerConfig::from_source(&with(&[("SLUICE_LEASE_SECONDS", "3")])[..]).unwrap();
        assert_eq!(short.heartbeat, Duration::from_secs(1));
    }
}

#[cfg(test)]
mod mode_tests {
    use super::*;

    #[test]
    fn commands_parse_as_json_arrays_or_shell_words() {
        let cases: &[(&str, Result<&[&str], &str>)] = &[
            (
                r#"["python3", "/app/handler.py"]"#,
                Ok(&["python3", "/app/handler.py"]),
            ),
            (
                "python3 /app/handler.py",
                Ok(&["python3", "/app/handler.py"]),
            ),
            (
                "python3 'my handler.py' --fast",
                Ok(&["python3", "my handler.py", "--fast"]),
            ),
            ("  ", Err("the command is empty")),
            ("[]", Err("the command is empty")),
            (r#"[""]"#, Err("the command is empty")),
            (r#"["a", 1]"#, Err("not a JSON array of strings")),
        ];
        for (raw, want) in cases {
            let got = parse_command(raw);
            match (got, want) {
                (Ok(words), Ok(w)) => assert_eq!(words, *w, "{raw}"),
                (Err(e), Err(w)) => assert!(e.starts_with(w), "{raw}: {e}"),
                (got, want) => panic!("{raw}: got {got:?}, want {want:?}"),
            }
        }
    }
}
