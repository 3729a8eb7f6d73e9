//! The scaling policy as data: `scaling/policy.json`, shared with the CDK app.
//!
//! The CDK app turns the same file into CloudWatch alarms and Application Auto
//! Scaling step policies; [`super::decide`] models exactly what those alarms and
//! policies do, and `sluice simulate` replays workloads through that model.

use std::error::Error;
use std::fmt;

use serde::{Deserialize, Serialize};

/// The policy file shipped in the repository (`scaling/policy.json`).
pub const BUILTIN_POLICY_JSON: &str = include_str!("../../scaling/policy.json");

/// Longest evaluation range CloudWatch accepts for one alarm (one day).
const MAX_ALARM_RANGE_SECONDS: u64 = 86_400;

/// How sluice's fleet follows its queue. Field names are the contract with the
/// CDK app: never rename or remove one.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Policy {
    /// CloudWatch namespace the backlog Lambda publishes to (never `AWS/…`).
    pub namespace: String,
    /// How long a job may wait in the queue before it starts, in steady state.
    pub acceptable_latency_seconds: f64,
    /// How long one job runs on average.
    pub average_job_seconds: f64,
    /// How many jobs one task runs at once (the worker's `concurrency`).
    pub jobs_per_task: u32,
    /// The service never has fewer tasks than this (0 lets it scale to zero).
    pub min_tasks: u32,
    /// The service never has more tasks than this.
    pub max_tasks: u32,
    /// How often the backlog Lambda samples, and the alarms' period.
    pub metric_period_seconds: u32,
    /// Intervals of one scale-out step policy, by rising `above_ratio`.
    pub scale_out_steps: Vec<ScaleOutStep>,
    /// The scale-in step policy.
    pub scale_in: ScaleIn,
    /// Backlog + in-flight must be 0 this long before the service goes to `min_tasks`.
    pub scale_to_zero_after_idle_seconds: u32,
    /// Cooldown of every step policy.
    pub cooldown_seconds: u32,
}

/// One interval of the scale-out policy: from `above_ratio` × target up to the
/// next step's ratio, capacity changes by `change_percent` of current capacity.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScaleOutStep {
    /// Lower bound of the interval, as a multiple of the target backlog per task.
    pub above_ratio: f64,
    /// `PercentChangeInCapacity` adjustment (positive).
    pub change_percent: i32,
}

/// The scale-in policy: backlog per task at or below `below_ratio` × target for
/// `evaluation_periods` periods in a row changes capacity by `change_percent`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScaleIn {
    /// Threshold, as a multiple of the target backlog per task.
    pub below_ratio: f64,
    /// `PercentChangeInCapacity` adjustment (negative).
    pub change_percent: i32,
    /// Consecutive breaching periods before the alarm fires.
    pub evaluation_periods: u32,
}

/// Why a policy could not be read.
#[derive(Debug)]
pub enum PolicyError {
    /// The text is not JSON of the policy's shape.
    Parse(serde_json::Error),
    /// A field has a value the alarms or the model cannot use.
    Invalid {
        /// The field, as spelled in the file.
        field: &'static str,
        /// What is wrong with it.
        message: String,
    },
}

impl fmt::Display for PolicyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PolicyError::Parse(_) => write!(f, "scaling policy is not valid json"),
            PolicyError::Invalid { field, message } => write!(f, "{field} {message}"),
        }
    }
}

impl Error for PolicyError {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        match self {
            PolicyError::Parse(e) => Some(e),
            PolicyError::Invalid { .. } => None,
        }
    }
}

fn invalid(field: &'static str, message: impl Into<String>) -> PolicyError {
    PolicyError::Invalid {
        field,
        message: message.into(),
    }
}

fn positive(field: &'static str, value: f64) -> Result<(), PolicyError> {
    if value.is_finite() && value > 0.0 {
        Ok(())
    } else {
        Err(invalid(
            field,
            format!("must be a positive number, got {value}"),
        ))
    }
}

impl Policy {
    /// Parses and validates a policy file's text.
    pub fn from_json(text: &str) -> Result<Policy, PolicyError> {
        let policy: Policy = serde_json::from_str(text).map_err(PolicyError::Parse)?;
        policy.validate()?;
        Ok(policy)
    }

    /// The policy shipped in the repository.
    pub fn builtin() -> Result<Policy, PolicyError> {
        Policy::from_json(BUILTIN_POLICY_JSON)
    }

    /// Checks every field against what CloudWatch, Application Auto Scaling and
    /// the model accept; the error names the field.
    pub fn validate(&self) -> Result<(), PolicyError> {
        let ns = self.namespace.trim();
        if ns.is_empty() {
            return Err(invalid("namespace", "must not be empty"));
        }
        if ns.starts_with("AWS/") {
            return Err(invalid(
                "namespace",
                format!("must not start with AWS/ (reserved by cloudwatch), got {ns:?}"),
            ));
        }
        positive(
            "acceptable_latency_seconds",
            self.acceptable_latency_seconds,
        )?;
        positive("average_job_seconds", self.average_job_seconds)?;
        if self.jobs_per_task == 0 {
            return Err(invalid("jobs_per_task", "must be at least 1, got 0"));
        }
        if self.max_tasks == 0 {
            return Err(invalid("max_tasks", "must be at least 1, got 0"));
        }
        if self.min_tasks > self.max_tasks {
            return Err(invalid(
                "min_tasks",
                format!(
                    "({}) must not exceed max_tasks ({})",
                    self.min_tasks, self.max_tasks
                ),
            ));
        }
        let period = self.metric_period_seconds;
        if !(period == 10 || period == 30 || (period > 0 && period.is_multiple_of(60))) {
            return Err(invalid(
                "metric_period_seconds",
                format!(
                    "must be 10, 30 or a multiple of 60 (cloudwatch alarm periods), got {period}"
                ),
            ));
        }
        if self.scale_out_steps.is_empty() {
            return Err(invalid("scale_out_steps", "must have at least one step"));
        }
        let mut previous: Option<f64> = None;
        for (i, step) in self.scale_out_steps.iter().enumerate() {
            if !(step.above_ratio.is_finite() && step.above_ratio > 0.0) {
                return Err(invalid(
                    "scale_out_steps",
                    format!(
                        "step {i}: above_ratio must be a positive number, got {}",
                        step.above_ratio
                    ),
                ));
            }
            if let Some(prev) = previous {
                if step.above_ratio <= prev {
                    return Err(invalid(
                        "scale_out_steps",
                        format!(
                            "step {i}: above_ratio must rise from step to step, got {} after {prev}",
                            step.above_ratio
                        ),
                    ));
                }
            }
            if step.change_percent <= 0 {
                return Err(invalid(
                    "scale_out_steps",
                    format!(
                        "step {i}: change_percent must be positive, got {}",
                        step.change_percent
                    ),
                ));
            }
            previous = Some(step.above_ratio);
        }
        let si = &self.scale_in;
        if !(si.below_ratio.is_finite() && si.below_ratio >= 0.0) {
            return Err(invalid(
                "scale_in",
                format!(
                    "below_ratio must be zero or positive, got {}",
                    si.below_ratio
                ),
            ));
        }
        if si.below_ratio >= self.scale_out_steps[0].above_ratio {
            return Err(invalid(
                "scale_in",
                format!(
                    "below_ratio ({}) must be under the first scale-out above_ratio ({})",
                    si.below_ratio, self.scale_out_steps[0].above_ratio
                ),
            ));
        }
        if !(-100..0).contains(&si.change_percent) {
            return Err(invalid(
                "scale_in",
                format!(
                    "change_percent must be between -100 and -1, got {}",
                    si.change_percent
                ),
            ));
        }
        if si.evaluation_periods == 0 {
            return Err(invalid(
                "scale_in",
                "evaluation_periods must be at least 1, got 0",
            ));
        }
        if u64::from(si.evaluation_periods) * u64::from(period) > MAX_ALARM_RANGE_SECONDS {
            return Err(invalid(
                "scale_in",
                "evaluation_periods × metric_period_seconds must not exceed one day",
            ));
        }
        let idle = self.scale_to_zero_after_idle_seconds;
        if idle < period {
            return Err(invalid(
                "scale_to_zero_after_idle_seconds",
                format!("must be at least metric_period_seconds ({period}), got {idle}"),
            ));
        }
        if u64::from(idle) > MAX_ALARM_RANGE_SECONDS {
            return Err(invalid(
                "scale_to_zero_after_idle_seconds",
                format!("must not exceed one day (86400), got {idle}"),
            ));
        }
        if u64::from(self.cooldown_seconds) > MAX_ALARM_RANGE_SECONDS {
            return Err(invalid(
                "cooldown_seconds",
                format!(
                    "must not exceed one day (86400), got {}",
                    self.cooldown_seconds
                ),
            ));
        }
        Ok(())
    }

    /// Target backlog per task: how many queued jobs one task may face and still
    /// start the last of them within the acceptable latency
    /// (`acceptable_latency_seconds / average_job_seconds × jobs_per_task`).
    pub fn target_backlog_per_task(&self) -> f64 {
        self.acceptable_latency_seconds / self.average_job_seconds * f64::from(self.jobs_per_task)
    }

    /// The scale-out alarm's threshold on `BacklogPerTask`.
    pub fn scale_out_threshold(&self) -> f64 {
        self.scale_out_steps[0].above_ratio * self.target_backlog_per_task()
    }

    /// The scale-in alarm's threshold on `BacklogPerTask`.
    pub fn scale_in_threshold(&self) -> f64 {
        self.scale_in.below_ratio * self.target_backlog_per_task()
    }

    /// Consecutive idle periods before the service goes to `min_tasks`.
    pub fn idle_evaluation_periods(&self) -> u32 {
        self.scale_to_zero_after_idle_seconds
            .div_ceil(self.metric_period_seconds)
    }

    /// Capacity the scale-from-zero policy sets.
    pub fn from_zero_capacity(&self) -> u32 {
        self.min_tasks.max(1)
    }

    /// Shortest time between two submit-time nudges from zero: one metric
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

    #[test]
    fn shipped_policy_file_is_valid() {
        let p = base();
        assert!(p.target_backlog_per_task() > 0.0);
        assert!(p.max_tasks >= p.min_tasks);
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
    fn idle_periods_round_up() {
        let mut p = base();
        p.metric_period_seconds = 10;
        p.scale_to_zero_after_idle_seconds = 300;
        assert_eq!(p.idle_evaluation_periods(), 30);
        p.scale_to_zero_after_idle_seconds = 305;
        assert_eq!(p.idle_evaluation_periods(), 31);
    }

    #[test]
    fn invalid_values_name_their_field() {
        type Edit = fn(&mut Policy);
        let cases: [(Edit, &str); 16] = [
            (|p| p.namespace = String::new(), "namespace"),
            (|p| p.namespace = "AWS/ECS".into(), "namespace"),
            (
                |p| p.acceptable_latency_seconds = 0.0,
                "acceptable_latency_seconds",
            ),
            (|p| p.average_job_seconds = f64::NAN, "average_job_seconds"),
            (|p| p.jobs_per_task = 0, "jobs_per_task"),
            (|p| p.max_tasks = 0, "max_tasks"),
            (
                |p| {
                    p.min_tasks = 5;
                    p.max_tasks = 4
                },
                "min_tasks",
            ),
            (|p| p.metric_period_seconds = 15, "metric_period_seconds"),
            (|p| p.scale_out_steps.clear(), "scale_out_steps"),
            (
                |p| {
                    p.scale_out_steps = vec![
                        ScaleOutStep {
                            above_ratio: 2.0,
                            change_percent: 50,
                        },
                        ScaleOutStep {
                            above_ratio: 1.0,
                            change_percent: 100,
                        },
                    ]
                },
                "scale_out_steps",
            ),
            (
                |p| p.scale_out_steps[0].change_percent = 0,
                "scale_out_steps",
            ),
            (|p| p.scale_in.change_percent = 10, "scale_in"),
            (|p| p.scale_in.below_ratio = 99.0, "scale_in"),
            (|p| p.scale_in.evaluation_periods = 0, "scale_in"),
            (
                |p| p.scale_to_zero_after_idle_seconds = 1,
                "scale_to_zero_after_idle_seconds",
            ),
            (|p| p.cooldown_seconds = 100_000, "cooldown_seconds"),
        ];
        for (edit, field) in cases {
            let mut p = base();
            edit(&mut p);
            let err = p.validate().expect_err(field);
            let text = err.to_string();
            assert!(text.starts_with(field), "{text:?} should name {field}");
            assert!(
                text.starts_with(|c: char| c.is_ascii_lowercase()),
                "lowercase: {text:?}"
            );
            assert!(!text.ends_with('.'), "no trailing period: {text:?}");
        }
    }

    #[test]
    fn unknown_or_mistyped_fields_are_rejected() {
        let mut value: serde_json::Value = serde_json::from_str(BUILTIN_POLICY_JSON).unwrap();
        value["max_taks"] = 3.into();
        assert!(matches!(
            Policy::from_json(&value.to_string()),
            Err(PolicyError::Parse(_))
        ));
        let mut value: serde_json::Value = serde_json::from_str(BUILTIN_POLICY_JSON).unwrap();
        value["max_tasks"] = "twenty".into();
        let err = Policy::from_json(&value.to_string()).unwrap_err();
        assert!(err.source().is_some());
    }
}
