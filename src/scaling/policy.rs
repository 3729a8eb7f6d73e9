//! The scaling policy as data: `scaling/policy.json`, shared with the CDK app.
//!
//! The backlog Lambda sets the service's desired count from it (see
//! [`super::decide::decide`]); the CDK app hands the same file to the
//! function and builds its alarms from it; `sluice simulate` replays
//! workloads through the same controller. The CDK app validates the file with
//! the same rules and the same messages: `scaling/fixtures/policies.json`
//! holds the cases both sides are tested on.

use std::error::Error;
use std::fmt;

use serde::Serialize;
use serde_json::{Map, Value};

/// The policy file shipped in the repository (`scaling/policy.json`).
pub const BUILTIN_POLICY_JSON: &str = include_str!("../../scaling/policy.json");

/// The top-level fields, in the order they are checked and listed.
pub const FIELDS: [&str; 9] = [
    "namespace",
    "acceptable_latency_seconds",
    "average_job_seconds",
    "jobs_per_task",
    "task_startup_seconds",
    "min_tasks",
    "max_tasks",
    "metric_period_seconds",
    "keep_idle_startups",
];

/// The most start-ups a spare task may be kept.
pub const MAX_KEEP_IDLE_STARTUPS: f64 = 10.0;

/// Most tasks one ECS service may run.
pub const MAX_SERVICE_TASKS: u32 = 5000;

/// One day, the longest time any field may name.
const DAY_SECONDS: u32 = 86_400;

/// Sample periods that divide the minute, so every one-minute run of the
/// backlog function and every one-minute metric period holds the same number
/// of samples.
const SAMPLE_PERIODS: [u32; 12] = [1, 2, 3, 4, 5, 6, 10, 12, 15, 20, 30, 60];

/// How sluice's fleet follows its queue. Field names are the contract with the
/// CDK app: never rename or remove one without changing both sides.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Policy {
    /// CloudWatch namespace the backlog Lambda publishes to (never `AWS/…`).
    pub namespace: String,
    /// How long a job may wait in the queue before it starts, in steady state.
    pub acceptable_latency_seconds: f64,
    /// How long one job runs on average.
    pub average_job_seconds: f64,
    /// How many jobs one task runs at once: the worker's concurrency.
    pub jobs_per_task: u32,
    /// How long a new task takes from its request to taking jobs (Fargate: about a minute;
    /// GPU instances from zero: several). The simulator's default start-up delay.
    pub task_startup_seconds: f64,
    /// The service never has fewer tasks than this (0 lets it scale to zero).
    pub min_tasks: u32,
    /// The service never has more tasks than this.
    pub max_tasks: u32,
    /// How often the backlog Lambda samples, sets the desired count and
    /// publishes.
    pub metric_period_seconds: u32,
    /// How long a spare task (no job waits for it, it holds none) is kept
    /// before the controller lets it go, in start-ups (`task_startup_seconds`):
    /// 1 is the break-even, a task kept idle that long costs what starting it
    /// again costs; 0 releases it on the next sample.
    pub keep_idle_startups: f64,
}

/// Why a policy could not be read.
#[derive(Debug)]
pub enum PolicyError {
    /// The text is not JSON.
    Parse(serde_json::Error),
    /// The JSON is not a policy; the message names the field.
    Invalid(String),
}

impl fmt::Display for PolicyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PolicyError::Parse(e) => write!(f, "scaling policy is not valid json: {e}"),
            PolicyError::Invalid(message) => f.write_str(message),
        }
    }
}

impl Error for PolicyError {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        match self {
            PolicyError::Parse(e) => Some(e),
            PolicyError::Invalid(_) => None,
        }
    }
}

fn invalid(path: &str, rule: impl fmt::Display) -> PolicyError {
    PolicyError::Invalid(format!("scaling policy: {path} {rule}"))
}

/// A number as JavaScript's `String(n)` prints it, so both sides word their
/// messages alike: shortest round-trip digits, no trailing `.0`, `-0` as `0`,
/// and exponents (`1e+21`, `1.5e-7`) outside `1e-6 ≤ |n| < 1e21`.
fn show(n: f64) -> String {
    if n == 0.0 {
        return "0".into();
    }
    let a = n.abs();
    if !(1e-6..1e21).contains(&a) {
        let e = format!("{n:e}");
        return match e.split_once('e') {
            Some((m, x)) if !x.starts_with('-') => format!("{m}e+{x}"),
            _ => e,
        };
    }
    format!("{n}")
}

/// A JSON value as JavaScript's `JSON.stringify` prints it (numbers as [`show`];
/// object keys in sorted order, which is how the file's objects are read).
fn json(v: &Value) -> String {
    match v {
        Value::Number(n) => show(n.as_f64().unwrap_or(f64::NAN)),
        Value::Array(items) => {
            format!("[{}]", items.iter().map(json).collect::<Vec<_>>().join(","))
        }
        Value::Object(map) => format!(
            "{{{}}}",
            map.iter()
                .map(|(k, v)| format!("{}:{}", Value::String(k.clone()), json(v)))
                .collect::<Vec<_>>()
                .join(",")
        ),
        other => other.to_string(),
    }
}

/// The object's keys that are not `known`, first in sorted order.
fn unknown_key<'a>(obj: &'a Map<String, Value>, known: &[&str]) -> Option<&'a str> {
    let mut extra: Vec<&str> = obj
        .keys()
        .map(String::as_str)
        .filter(|k| !known.contains(k))
        .collect();
    extra.sort_unstable();
    extra.first().copied()
}

struct Reader<'a> {
    obj: &'a Map<String, Value>,
    prefix: &'static str,
}

impl Reader<'_> {
    fn path(&self, key: &str) -> String {
        format!("{}{key}", self.prefix)
    }

    fn get(&self, key: &str) -> Result<&Value, PolicyError> {
        self.obj
            .get(key)
            .ok_or_else(|| invalid(&self.path(key), "is required"))
    }

    fn number(&self, key: &str) -> Result<f64, PolicyError> {
        match self.get(key)? {
            Value::Number(n) => Ok(n.as_f64().unwrap_or(f64::NAN)),
            other => Err(invalid(
                &self.path(key),
                format!("must be a number, got {}", json(other)),
            )),
        }
    }

    /// A number within `lo..=hi` (whole), else `range` names the bounds.
    fn whole(&self, key: &str, lo: i64, hi: i64, range: &str) -> Result<i64, PolicyError> {
        let v = self.number(key)?;
        if v != v.trunc() || !v.is_finite() {
            return Err(invalid(
                &self.path(key),
                format!("must be a whole number, got {}", show(v)),
            ));
        }
        if v < lo as f64 || v > hi as f64 {
            return Err(invalid(
                &self.path(key),
                format!("{range}, got {}", show(v)),
            ));
        }
        Ok(v as i64)
    }

    fn between(&self, key: &str, lo: i64, hi: i64) -> Result<i64, PolicyError> {
        self.whole(key, lo, hi, &format!("must be between {lo} and {hi}"))
    }

    fn seconds(&self, key: &str) -> Result<f64, PolicyError> {
        let v = self.number(key)?;
        if v > 0.0 && v <= f64::from(DAY_SECONDS) {
            Ok(v)
        } else {
            Err(invalid(
                &self.path(key),
                format!(
                    "must be greater than 0 and at most {DAY_SECONDS}, got {}",
                    show(v)
                ),
            ))
        }
    }
}

fn fields_list(fields: &[&str]) -> String {
    fields.join(", ")
}

impl Policy {
    /// Parses and validates a policy file's text. The first thing wrong is
    /// reported, with the field's path.
    pub fn from_json(text: &str) -> Result<Policy, PolicyError> {
        let value: Value = serde_json::from_str(text).map_err(PolicyError::Parse)?;
        Policy::from_value(&value)
    }

    /// Validates an already parsed policy.
    pub fn from_value(value: &Value) -> Result<Policy, PolicyError> {
        let Value::Object(obj) = value else {
            return Err(PolicyError::Invalid(
                "scaling policy must be a JSON object".into(),
            ));
        };
        if let Some(key) = unknown_key(obj, &FIELDS) {
            return Err(PolicyError::Invalid(format!(
                "scaling policy: unknown field {key} (the fields are {})",
                fields_list(&FIELDS)
            )));
        }
        let r = Reader { obj, prefix: "" };
        let namespace = match r.get("namespace")? {
            Value::String(s) => s.clone(),
            other => {
                return Err(invalid(
                    "namespace",
                    format!("must be a string, got {}", json(other)),
                ))
            }
        };
        if namespace.trim().is_empty() {
            return Err(invalid("namespace", "must not be empty"));
        }
        let chars = namespace.chars().count();
        if chars > 255 {
            return Err(invalid(
                "namespace",
                format!("must be at most 255 characters, got {chars}"),
            ));
        }
        if namespace.starts_with("AWS/") {
            return Err(invalid(
                "namespace",
                format!(
                    "must not start with AWS/ (reserved by CloudWatch), got {}",
                    Value::String(namespace.clone())
                ),
            ));
        }
        let acceptable_latency_seconds = r.seconds("acceptable_latency_seconds")?;
        let average_job_seconds = r.seconds("average_job_seconds")?;
        let jobs_per_task = r.between("jobs_per_task", 1, 1000)? as u32;
        let task_startup_seconds = r.seconds("task_startup_seconds")?;
        let max = i64::from(MAX_SERVICE_TASKS);
        let min_tasks = r.between("min_tasks", 0, max)? as u32;
        let max_tasks = r.between("max_tasks", 1, max)? as u32;
        let period = r.whole(
            "metric_period_seconds",
            0,
            i64::MAX,
            "must divide 60 (1, 2, 3, 4, 5, 6, 10, 12, 15, 20, 30 or 60)",
        );
        let metric_period_seconds = match period {
            Ok(p) if SAMPLE_PERIODS.contains(&(p as u32)) && p <= 60 => p as u32,
            Ok(p) => {
                return Err(invalid(
                    "metric_period_seconds",
                    format!("must divide 60 (1, 2, 3, 4, 5, 6, 10, 12, 15, 20, 30 or 60), got {p}"),
                ))
            }
            Err(e) => return Err(e),
        };
        let keep_idle_startups = r.number("keep_idle_startups")?;
        if !(0.0..=MAX_KEEP_IDLE_STARTUPS).contains(&keep_idle_startups) {
            return Err(invalid(
                "keep_idle_startups",
                format!(
                    "must be between 0 and {}, got {}",
                    show(MAX_KEEP_IDLE_STARTUPS),
                    show(keep_idle_startups)
                ),
            ));
        }
        if min_tasks > max_tasks {
            return Err(PolicyError::Invalid(format!(
                "scaling policy: min_tasks ({min_tasks}) must not exceed max_tasks ({max_tasks})"
            )));
        }
        Ok(Policy {
            namespace,
            acceptable_latency_seconds,
            average_job_seconds,
            jobs_per_task,
            task_startup_seconds,
            min_tasks,
            max_tasks,
            metric_period_seconds,
            keep_idle_startups,
        })
    }

    /// The policy shipped in the repository.
    pub fn builtin() -> Result<Policy, PolicyError> {
        Policy::from_json(BUILTIN_POLICY_JSON)
    }

    /// Checks a policy built or edited in code with the file's rules.
    pub fn validate(&self) -> Result<(), PolicyError> {
        let value = serde_json::to_value(self).map_err(PolicyError::Parse)?;
        Policy::from_value(&value).map(|_| ())
    }

    /// The same policy with other bounds (the CDK app's `minTasks`/`maxTasks`,
    /// a simulated cap), validated.
    pub fn with_bounds(&self, min_tasks: u32, max_tasks: u32) -> Result<Policy, PolicyError> {
        let p = Policy {
            min_tasks,
            max_tasks,
            ..self.clone()
        };
        p.validate()?;
        Ok(p)
    }

    /// Target backlog per task: how many queued jobs one task may face and still
    /// start the last of them within the acceptable latency
    /// (`acceptable_latency_seconds / average_job_seconds × jobs_per_task`).
    pub fn target_backlog_per_task(&self) -> f64 {
        self.acceptable_latency_seconds / self.average_job_seconds * f64::from(self.jobs_per_task)
    }

    /// Jobs one running task holds within the acceptable latency: the
    /// `jobs_per_task` it runs, plus for each slot the whole jobs that start
    /// on it within the latency (`floor(latency / job)`).
    pub fn jobs_per_task_within_latency(&self) -> u32 {
        self.jobs_held_within(self.acceptable_latency_seconds)
    }

    /// Jobs one running task starts before a task requested now could start
    /// any: those it holds within the larger of the acceptable latency and
    /// the start-up.
    pub fn jobs_per_task_before_new_capacity(&self) -> u32 {
        self.jobs_held_within(
            self.acceptable_latency_seconds
                .max(self.task_startup_seconds),
        )
    }

    fn jobs_held_within(&self, seconds: f64) -> u32 {
        let waiting = (seconds / self.average_job_seconds + 1e-9).floor();
        let waiting = if waiting >= 100_000.0 {
            100_000
        } else {
            waiting as u32
        };
        self.jobs_per_task.saturating_mul(1 + waiting)
    }

    /// Seconds a spare task is kept: `keep_idle_startups × task_startup_seconds`.
    pub fn keep_idle_seconds(&self) -> f64 {
        self.keep_idle_startups * self.task_startup_seconds
    }

    /// Capacity the submit-time nudge sets when the service wants no task.
    pub fn from_zero_capacity(&self) -> u32 {
        self.min_tasks.max(1)
    }

    /// Shortest time between two submit-time nudges from zero: one sample
    /// period, after which the backlog Lambda has seen the queue anyway.
    pub fn nudge_interval_seconds(&self) -> f64 {
        f64::from(self.metric_period_seconds)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base() -> Policy {
        Policy::from_json(BUILTIN_POLICY_JSON).expect("the shipped policy is valid")
    }

    /// The cases the CDK app is tested on too (`cdk/test/policy.test.ts`):
    /// the same policies accepted, the same rejected, with the same words.
    #[test]
    fn shared_fixtures_accept_and_reject_with_the_same_messages() {
        let fixtures: Value =
            serde_json::from_str(include_str!("../../scaling/fixtures/policies.json")).unwrap();
        let shipped: Value = serde_json::from_str(BUILTIN_POLICY_JSON).unwrap();
        let build = |case: &Value| -> String {
            if let Some(text) = case["text"].as_str() {
                return text.to_string();
            }
            let mut p = shipped.clone();
            for (k, v) in case["patch"].as_object().expect("a patch") {
                if v.is_null() {
                    p.as_object_mut().unwrap().remove(k);
                } else {
                    p[k] = v.clone();
                }
            }
            p.to_string()
        };
        let valid = fixtures["valid"].as_array().unwrap();
        let invalid = fixtures["invalid"].as_array().unwrap();
        assert!(valid.len() >= 5 && invalid.len() >= 30);
        for case in valid {
            let text = build(case);
            if let Err(e) = Policy::from_json(&text) {
                panic!("{}: {e}\n{text}", case["name"]);
            }
        }
        for case in invalid {
            let got = Policy::from_json(&build(case))
                .expect_err(case["name"].as_str().unwrap())
                .to_string();
            match (case["error"].as_str(), case["error_prefix"].as_str()) {
                (Some(want), _) => assert_eq!(got, want, "{}", case["name"]),
                (None, Some(prefix)) => assert!(got.starts_with(prefix), "{}: {got}", case["name"]),
                _ => panic!("{}: no expected error", case["name"]),
            }
        }
    }

    #[test]
    fn shipped_policy_round_trips_through_json() {
        let p = base();
        let text = serde_json::to_string(&p).unwrap();
        assert_eq!(Policy::from_json(&text).unwrap(), p);
        assert!(p.validate().is_ok());
    }

    #[test]
    fn target_is_latency_over_duration_times_concurrency() {
        let cases = [
            (60.0, 10.0, 1, 6.0),
            (60.0, 10.0, 4, 24.0),
            (30.0, 60.0, 1, 0.5),
            (1000.0, 10.0, 1, 100.0),
        ];
        for (latency, job, per_task, want) in cases {
            let mut p = base();
            p.acceptable_latency_seconds = latency;
            p.average_job_seconds = job;
            p.jobs_per_task = per_task;
            assert!(
                (p.target_backlog_per_task() - want).abs() < 1e-9,
                "{latency}/{job}×{per_task}"
            );
        }
    }

    #[test]
    fn jobs_within_latency_count_whole_jobs_per_slot() {
        // (latency, job, jobs_per_task, want)
        let cases = [
            (10.0, 10.0, 1, 2),
            (10.0, 1.0, 1, 11),
            (10.0, 600.0, 1, 1),
            (10.0, 600.0, 4, 4),
            (30.0, 10.0, 4, 16),
            (9.999, 10.0, 1, 1),
            (86_400.0, 1e-3, 1, 100_001),
        ];
        for (latency, job, per_task, want) in cases {
            let mut p = base();
            p.acceptable_latency_seconds = latency;
            p.average_job_seconds = job;
            p.jobs_per_task = per_task;
            assert_eq!(
                p.jobs_per_task_within_latency(),
                want,
                "{latency}/{job}×{per_task}"
            );
        }
    }

    #[test]
    fn bounds_can_be_replaced_and_are_checked() {
        let p = base().with_bounds(2, 200).unwrap();
        assert_eq!((p.min_tasks, p.max_tasks), (2, 200));
        let e = base().with_bounds(5, 2).unwrap_err().to_string();
        assert_eq!(
            e,
            "scaling policy: min_tasks (5) must not exceed max_tasks (2)"
        );
        assert!(base().with_bounds(0, 6000).is_err());
    }

    #[test]
    fn numbers_print_as_javascript_prints_them() {
        for (n, want) in [
            (1.0, "1"),
            (-1.0, "-1"),
            (1.5, "1.5"),
            (0.1, "0.1"),
            (0.75, "0.75"),
            (1.0 - 0.33, "0.6699999999999999"),
            (86_401.0, "86401"),
            (-0.0, "0"),
            (1e21, "1e+21"),
            (1.5e300, "1.5e+300"),
            (7.5e-7, "7.5e-7"),
            (-1e-7, "-1e-7"),
            (0.000001, "0.000001"),
            (123456789012345680000.0, "123456789012345680000"),
        ] {
            assert_eq!(show(n), want);
        }
    }
}
