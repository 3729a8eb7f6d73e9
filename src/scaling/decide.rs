//! Scaling decisions as pure functions.
//!
//! The backlog Lambda publishes one [`Sample`] per metric period as the
//! [`Metrics`] below. CloudWatch alarms watch them and invoke Application Auto
//! Scaling step policies; [`desired_tasks`] models those alarms and policies
//! exactly (see `scaling/README.md`), one evaluation at a time, so the same
//! code explains a deployed service and drives `sluice simulate`.
//!
//! Times are seconds since any fixed epoch, as `f64`.

use serde::{Deserialize, Serialize};

use super::policy::{Policy, ScaleOutStep};

/// CloudWatch keeps invoking an Auto Scaling action once a minute while its
/// alarm stays in ALARM, whatever the alarm's period.
pub const ALARM_ACTION_REPEAT_SECONDS: f64 = 60.0;

const EPSILON: f64 = 1e-9;

/// What the backlog Lambda reads in one sample: SQS `GetQueueAttributes` and
/// ECS `DescribeServices`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sample {
    /// `ApproximateNumberOfMessages`: jobs waiting for a worker.
    pub visible: u32,
    /// `ApproximateNumberOfMessagesNotVisible`: jobs a worker holds.
    pub in_flight: u32,
    /// The service's `runningCount`.
    pub running_tasks: u32,
    /// The service's `pendingCount` (requested, still starting).
    pub pending_tasks: u32,
    /// The service's `desiredCount`.
    pub desired_tasks: u32,
}

/// The metrics published per sample, named as in CloudWatch.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Metrics {
    /// Jobs waiting (visible messages).
    pub backlog: u32,
    /// Jobs being run (in-flight messages).
    pub in_flight: u32,
    /// Tasks running.
    pub running_tasks: u32,
    /// The service's desired count.
    pub desired_tasks: u32,
    /// `backlog / max(running_tasks + pending_tasks, 1)`: see [`backlog_per_task`].
    pub backlog_per_task: f64,
    /// 1 when jobs wait and no task runs or starts, else 0.
    pub backlog_without_capacity: u32,
}

impl Sample {
    /// The metrics the backlog Lambda publishes for this sample.
    pub fn metrics(&self) -> Metrics {
        Metrics {
            backlog: self.visible,
            in_flight: self.in_flight,
            running_tasks: self.running_tasks,
            desired_tasks: self.desired_tasks,
            // Tasks still starting are capacity on its way: dividing by them too keeps the
            // policy from asking again, during a start-up, for what it already asked for.
            backlog_per_task: backlog_per_task(
                self.visible,
                self.running_tasks.saturating_add(self.pending_tasks),
            ),
            backlog_without_capacity: u32::from(
                self.visible > 0 && self.running_tasks == 0 && self.pending_tasks == 0,
            ),
        }
    }
}

/// Backlog per task: visible (waiting) jobs per task, running or starting,
/// with at least one task in the denominator.
///
/// In-flight jobs are left out on purpose. The target backlog per task says
/// how many *waiting* jobs a task can clear within the acceptable latency
/// (`latency / job duration`); a job a worker already holds is not waiting.
/// Counting it would put a floor of `jobs_per_task` under the metric of any
/// busy fleet, so a policy whose target is below that floor (jobs longer than
/// the acceptable latency, target < 1) would scale out forever while keeping
/// up. In-flight jobs still count where they matter: a fleet with jobs in
/// flight is never idle, so it is never scaled to zero (see [`Metrics`] and
/// the idle alarm), and scale-in protection keeps busy tasks alive.
pub fn backlog_per_task(visible: u32, tasks: u32) -> f64 {
    f64::from(visible) / f64::from(tasks.max(1))
}

/// Tasks needed for a backlog at a target backlog per task
/// (`ceil(backlog / target)`), the arithmetic of the AWS guide "Scaling based
/// on Amazon SQS": 1,500 messages at a target of 100 need 15 tasks.
pub fn tasks_for_backlog(backlog: u32, target_backlog_per_task: f64) -> u32 {
    if backlog == 0 {
        return 0;
    }
    let tasks = (f64::from(backlog) / target_backlog_per_task - EPSILON).ceil();
    if tasks >= f64::from(u32::MAX) {
        u32::MAX
    } else {
        tasks.max(1.0) as u32
    }
}

/// The scale-out interval that a backlog per task falls in, if any: the step
/// with the highest `above_ratio` at or below `backlog_per_task / target`.
pub fn scale_out_step(policy: &Policy, backlog_per_task: f64) -> Option<&ScaleOutStep> {
    let target = policy.target_backlog_per_task();
    policy
        .scale_out_steps
        .iter()
        .rev()
        .find(|s| backlog_per_task + EPSILON >= s.above_ratio * target)
}

/// The change a `PercentChangeInCapacity` step makes, rounded the way
/// Application Auto Scaling rounds (values above 1 down, between 0 and 1 to 1,
/// between -1 and 0 to -1, below -1 up) and with `MinAdjustmentMagnitude` 1.
pub fn percent_adjustment(capacity: u32, change_percent: i32) -> i64 {
    if change_percent == 0 {
        return 0;
    }
    let raw = f64::from(capacity) * f64::from(change_percent) / 100.0;
    let rounded = if raw > 1.0 {
        raw.floor()
    } else if raw > 0.0 {
        1.0
    } else if raw < -1.0 {
        raw.ceil()
    } else if raw < 0.0 {
        -1.0
    } else {
        0.0
    };
    let adjustment = rounded as i64;
    if adjustment == 0 {
        i64::from(change_percent.signum())
    } else {
        adjustment
    }
}

/// Capacity after an adjustment, kept within the policy's bounds.
pub fn bounded(policy: &Policy, capacity: u32, adjustment: i64) -> u32 {
    let wanted = i64::from(capacity) + adjustment;
    wanted.clamp(i64::from(policy.min_tasks), i64::from(policy.max_tasks)) as u32
}

/// Whether submit should raise the service from 0 to 1 now.
///
/// Only when the service it observed wants no task, and at most once per
/// `min_interval_seconds`, so a burst of submits makes one ECS call. A clock
/// that went backwards makes the last nudge unknowable, so it nudges: one
/// extra `UpdateService` costs less than a queue without a worker.
pub fn should_nudge_from_zero(
    observed_desired_tasks: u32,
    last_nudge_at: Option<f64>,
    now: f64,
    min_interval_seconds: f64,
) -> bool {
    if observed_desired_tasks > 0 {
        return false;
    }
    match last_nudge_at {
        None => true,
        Some(last) => now < last || now - last + EPSILON >= min_interval_seconds,
    }
}

/// One CloudWatch alarm whose action is an Application Auto Scaling policy.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct AlarmState {
    /// Whether the alarm is in ALARM.
    pub in_alarm: bool,
    /// Consecutive breaching datapoints up to the last evaluation.
    pub breaching_streak: u32,
    /// When the alarm last invoked its action.
    pub last_action_at: Option<f64>,
}

impl AlarmState {
    /// Evaluates the alarm on its newest datapoint (`None`: missing, state
    /// kept) with "N out of N" datapoints to alarm, and says whether it invokes
    /// its action now: on entering ALARM, then once a minute while it stays.
    pub fn evaluate(&mut self, breaching: Option<bool>, datapoints: u32, now: f64) -> bool {
        let Some(breaching) = breaching else {
            return false;
        };
        self.breaching_streak = if breaching {
            self.breaching_streak.saturating_add(1)
        } else {
            0
        };
        let was_in_alarm = self.in_alarm;
        self.in_alarm = self.breaching_streak >= datapoints.max(1);
        if !self.in_alarm {
            return false;
        }
        let due = match self.last_action_at {
            None => true,
            Some(t) => !was_in_alarm || now - t + EPSILON >= ALARM_ACTION_REPEAT_SECONDS,
        };
        if due {
            self.last_action_at = Some(now);
        }
        due
    }
}

/// A scale-out cooldown in progress.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ScaleOutCooldown {
    /// When it ends.
    pub until: f64,
    /// Capacity before the scale-out that started it.
    pub base: u32,
}

/// Everything the alarms and policies remember between evaluations.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ScalingState {
    /// `BacklogPerTask >= first above_ratio × target`, 1 datapoint.
    pub scale_out: AlarmState,
    /// `BacklogPerTask <= below_ratio × target` while desired > 1.
    pub scale_in: AlarmState,
    /// `Backlog + InFlight == 0` while desired > `min_tasks`.
    pub idle: AlarmState,
    /// `BacklogWithoutCapacity >= 1`, 1 datapoint.
    pub from_zero: AlarmState,
    /// Cooldown of the scale-out policy.
    pub scale_out_cooldown: Option<ScaleOutCooldown>,
    /// End of the scale-in policy's cooldown.
    pub scale_in_cooldown_until: Option<f64>,
    /// End of the idle (scale-to-`min_tasks`) policy's cooldown.
    pub idle_cooldown_until: Option<f64>,
}

/// One alarm evaluation: when it happens, the capacity the policies act on,
/// and the latest sample the alarms have.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Observation {
    /// When the alarms evaluate.
    pub at_seconds: f64,
    /// The service's desired count at that moment (Application Auto Scaling's
    /// current capacity); it may have moved since the sample (a nudge).
    pub capacity: u32,
    /// The newest sample published.
    pub sample: Sample,
}

/// Which policy changed the desired count.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "policy")]
pub enum Action {
    /// No policy changed capacity.
    None,
    /// The scale-out step policy, in the interval starting at `above_ratio`.
    ScaleOut {
        /// The interval's lower bound.
        above_ratio: f64,
    },
    /// The scale-in step policy.
    ScaleIn,
    /// The idle policy: back to `min_tasks`.
    ScaleToIdle,
    /// The scale-from-zero policy.
    ScaleFromZero,
}

impl Action {
    /// The policy's name, as in its JSON form: `none`, `scale-out`,
    /// `scale-in`, `scale-to-idle` or `scale-from-zero`.
    pub fn name(&self) -> &'static str {
        match self {
            Action::None => "none",
            Action::ScaleOut { .. } => "scale-out",
            Action::ScaleIn => "scale-in",
            Action::ScaleToIdle => "scale-to-idle",
            Action::ScaleFromZero => "scale-from-zero",
        }
    }
}

/// The outcome of one evaluation.
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    /// The service's desired count after the evaluation.
    pub desired_tasks: u32,
    /// The policy that set it, if any.
    pub action: Action,
    /// The metrics the alarms saw.
    pub metrics: Metrics,
    /// State for the next evaluation.
    pub state: ScalingState,
}

fn cooling(until: Option<f64>, now: f64) -> bool {
    until.is_some_and(|u| now + EPSILON < u)
}

/// What CloudWatch alarms and the step policies do with one evaluation.
///
/// Alarms (all on `metric_period_seconds` datapoints):
/// - scale-out: `BacklogPerTask >= scale_out_steps[0].above_ratio × target`,
///   1 datapoint; the step interval is chosen by the datapoint's value;
///   `PercentChangeInCapacity` of current capacity, and during the cooldown the
///   capacity added by the scale-out that started it counts as already added;
/// - scale-in: `IF(DesiredTasks > 1, BacklogPerTask, ∞) <= below_ratio × target`
///   for `evaluation_periods` datapoints; blocked during its own cooldown; the
///   `DesiredTasks > 1` guard leaves the last task to the idle rule, so a short
///   queue is never stranded without a worker;
/// - idle: `IF(DesiredTasks > min_tasks, Backlog + InFlight, 1) <= 0` for
///   `scale_to_zero_after_idle_seconds`; `ExactCapacity min_tasks`; the guard
///   returns the alarm to OK once parked, so it cannot re-fire against a nudge;
/// - from zero: `BacklogWithoutCapacity >= 1`, 1 datapoint;
///   `ExactCapacity max(1, min_tasks)`.
///
/// An alarm invokes its policy on entering ALARM and once a minute while it
/// stays there. When several policies act at once, the largest resulting
/// capacity wins, as Application Auto Scaling does.
pub fn desired_tasks(policy: &Policy, observation: &Observation, state: &ScalingState) -> Decision {
    let now = observation.at_seconds;
    let capacity = observation.capacity;
    let metrics = observation.sample.metrics();
    let bpt = metrics.backlog_per_task;
    let mut next = state.clone();
    let mut proposals: Vec<(Action, u32)> = Vec::new();

    let scale_out_fires =
        next.scale_out
            .evaluate(Some(bpt + EPSILON >= policy.scale_out_threshold()), 1, now);
    if scale_out_fires {
        if let Some(step) = scale_out_step(policy, bpt) {
            let base = match next.scale_out_cooldown {
                Some(cd) if now + EPSILON < cd.until => cd.base,
                _ => capacity,
            };
            let proposed = bounded(policy, base, percent_adjustment(base, step.change_percent));
            if proposed > capacity {
                proposals.push((
                    Action::ScaleOut {
                        above_ratio: step.above_ratio,
                    },
                    proposed,
                ));
            }
        }
    }

    let scale_in_metric = if metrics.desired_tasks > 1 {
        bpt
    } else {
        f64::INFINITY
    };
    let scale_in_fires = next.scale_in.evaluate(
        Some(scale_in_metric <= policy.scale_in_threshold() + EPSILON),
        policy.scale_in.evaluation_periods,
        now,
    );
    if scale_in_fires && !cooling(next.scale_in_cooldown_until, now) {
        let proposed = bounded(
            policy,
            capacity,
            percent_adjustment(capacity, policy.scale_in.change_percent),
        );
        if proposed < capacity {
            proposals.push((Action::ScaleIn, proposed));
        }
    }

    let idle_metric = if metrics.desired_tasks > policy.min_tasks {
        u64::from(metrics.backlog) + u64::from(metrics.in_flight)
    } else {
        1
    };
    let idle_fires = next.idle.evaluate(
        Some(idle_metric == 0),
        policy.idle_evaluation_periods(),
        now,
    );
    if idle_fires && !cooling(next.idle_cooldown_until, now) && capacity > policy.min_tasks {
        proposals.push((Action::ScaleToIdle, policy.min_tasks));
    }

    let from_zero_fires =
        next.from_zero
            .evaluate(Some(metrics.backlog_without_capacity >= 1), 1, now);
    if from_zero_fires && capacity != policy.from_zero_capacity() {
        proposals.push((Action::ScaleFromZero, policy.from_zero_capacity()));
    }

    let chosen = proposals
        .iter()
        .copied()
        .reduce(|best, p| if p.1 > best.1 { p } else { best });
    let Some((action, desired)) = chosen else {
        return Decision {
            desired_tasks: capacity,
            action: Action::None,
            metrics,
            state: next,
        };
    };
    let cooldown = f64::from(policy.cooldown_seconds);
    if desired > capacity {
        // A scale-out ends any scale-in cooldown at once.
        next.scale_in_cooldown_until = None;
        next.idle_cooldown_until = None;
    }
    match action {
        Action::ScaleOut { .. } => {
            let cooling_out = next
                .scale_out_cooldown
                .is_some_and(|cd| now + EPSILON < cd.until);
            if !cooling_out {
                next.scale_out_cooldown = Some(ScaleOutCooldown {
                    until: now + cooldown,
                    base: capacity,
                });
            }
        }
        Action::ScaleIn => next.scale_in_cooldown_until = Some(now + cooldown),
        Action::ScaleToIdle => next.idle_cooldown_until = Some(now + cooldown),
        Action::ScaleFromZero | Action::None => {}
    }
    Decision {
        desired_tasks: desired,
        action,
        metrics,
        state: next,
    }
}

#[cfg(test)]
mod tests {
    use super::super::policy::ScaleIn;
    use super::*;

    /// A policy with the shape of the shipped file but fixed values, so the
    /// tables below do not move when the file's values are tuned.
    fn policy() -> Policy {
        Policy {
            namespace: "Sluice".into(),
            acceptable_latency_seconds: 60.0,
            average_job_seconds: 10.0,
            jobs_per_task: 1,
            min_tasks: 0,
            max_tasks: 20,
            metric_period_seconds: 10,
            scale_out_steps: vec![
                ScaleOutStep {
                    above_ratio: 1.0,
                    change_percent: 50,
                },
                ScaleOutStep {
                    above_ratio: 2.0,
                    change_percent: 100,
                },
                ScaleOutStep {
                    above_ratio: 4.0,
                    change_percent: 300,
                },
            ],
            scale_in: ScaleIn {
                below_ratio: 0.5,
                change_percent: -25,
                evaluation_periods: 6,
            },
            scale_to_zero_after_idle_seconds: 300,
            cooldown_seconds: 30,
        }
    }

    fn sample(visible: u32, in_flight: u32, running: u32, pending: u32, desired: u32) -> Sample {
        Sample {
            visible,
            in_flight,
            running_tasks: running,
            pending_tasks: pending,
            desired_tasks: desired,
        }
    }

    fn at(t: f64, capacity: u32, s: Sample) -> Observation {
        Observation {
            at_seconds: t,
            capacity,
            sample: s,
        }
    }

    #[test]
    fn backlog_per_task_table() {
        let cases = [
            (0, 0, 0.0),
            (5, 0, 5.0),
            (1500, 10, 150.0),
            (7, 2, 3.5),
            (0, 8, 0.0),
        ];
        for (visible, running, want) in cases {
            assert_eq!(
                backlog_per_task(visible, running),
                want,
                "{visible}/{running}"
            );
        }
    }

    #[test]
    fn aws_guide_worked_example_gives_fifteen_tasks() {
        // "Scaling based on Amazon SQS": target backlog per instance 100
        // (acceptable latency 10 s / 0.1 s per message), 1,500 messages on 10
        // instances: backlog per instance 150, so 15 instances.
        let mut p = policy();
        p.acceptable_latency_seconds = 10.0;
        p.average_job_seconds = 0.1;
        assert!((p.target_backlog_per_task() - 100.0).abs() < 1e-9);
        let bpt = backlog_per_task(1500, 10);
        assert_eq!(bpt, 150.0);
        assert_eq!(tasks_for_backlog(1500, p.target_backlog_per_task()), 15);
        // The step policy lands on the same answer: 1.5 × target is in the
        // first interval (+50 %), and 10 + 50 % = 15.
        let d = desired_tasks(
            &p,
            &at(10.0, 10, sample(1500, 0, 10, 0, 10)),
            &ScalingState::default(),
        );
        assert_eq!(d.desired_tasks, 15);
        assert_eq!(d.action, Action::ScaleOut { above_ratio: 1.0 });
    }

    #[test]
    fn tasks_for_backlog_table() {
        let cases = [
            (0, 6.0, 0),
            (1, 6.0, 1),
            (6, 6.0, 1),
            (7, 6.0, 2),
            (1500, 100.0, 15),
            (1501, 100.0, 16),
            (3, 0.5, 6),
        ];
        for (backlog, target, want) in cases {
            assert_eq!(
                tasks_for_backlog(backlog, target),
                want,
                "{backlog} at {target}"
            );
        }
    }

    #[test]
    fn percent_adjustment_rounds_like_application_auto_scaling() {
        let cases = [
            (10, 50, 5),
            (4, 25, 1), // exactly 1
            (3, 25, 1), // 0.75 rounds to 1
            (7, 50, 3), // 3.5 rounds down
            (1, 300, 3),
            (0, 300, 1), // 0 → MinAdjustmentMagnitude 1
            (8, -25, -2),
            (3, -25, -1),  // -0.75 rounds to -1
            (10, -25, -2), // -2.5 rounds up to -2
            (1, -25, -1),
            (0, -25, -1),
        ];
        for (capacity, percent, want) in cases {
            assert_eq!(
                percent_adjustment(capacity, percent),
                want,
                "{percent}% of {capacity}"
            );
        }
    }

    #[test]
    fn step_intervals_table() {
        let p = policy(); // target 6
        let cases = [
            (5.9, None),
            (6.0, Some(1.0)),
            (11.9, Some(1.0)),
            (12.0, Some(2.0)),
            (23.0, Some(2.0)),
            (24.0, Some(4.0)),
            (1000.0, Some(4.0)),
        ];
        for (bpt, want) in cases {
            assert_eq!(
                scale_out_step(&p, bpt).map(|s| s.above_ratio),
                want,
                "bpt {bpt}"
            );
        }
    }

    #[test]
    fn one_evaluation_table() {
        let p = policy(); // target 6, max 20
                          // (capacity, sample, desired, action)
        let cases = [
            (0, sample(0, 0, 0, 0, 0), 0, Action::None),
            (0, sample(3, 0, 0, 0, 0), 1, Action::ScaleFromZero),
            (1, sample(3, 0, 0, 1, 1), 1, Action::None),
            (
                1,
                sample(100, 0, 0, 1, 1),
                4,
                Action::ScaleOut { above_ratio: 4.0 },
            ),
            (
                4,
                sample(30, 4, 4, 0, 4),
                6,
                Action::ScaleOut { above_ratio: 1.0 },
            ),
            (
                4,
                sample(50, 4, 4, 0, 4),
                8,
                Action::ScaleOut { above_ratio: 2.0 },
            ),
            (
                10,
                sample(500, 10, 10, 0, 10),
                20,
                Action::ScaleOut { above_ratio: 4.0 },
            ),
            (20, sample(5000, 20, 20, 0, 20), 20, Action::None),
            (5, sample(5, 5, 5, 0, 5), 5, Action::None),
        ];
        for (capacity, s, want, action) in cases {
            let d = desired_tasks(&p, &at(100.0, capacity, s), &ScalingState::default());
            assert_eq!(
                (d.desired_tasks, d.action),
                (want, action),
                "capacity {capacity}, {s:?}"
            );
        }
    }

    #[test]
    fn scale_from_zero_sets_one_task() {
        let mut p = policy();
        p.scale_out_steps[0].above_ratio = 1.0;
        p.acceptable_latency_seconds = 600.0; // target 60: one job is far below it
        let d = desired_tasks(
            &p,
            &at(10.0, 0, sample(1, 0, 0, 0, 0)),
            &ScalingState::default(),
        );
        assert_eq!((d.desired_tasks, d.action), (1, Action::ScaleFromZero));
        assert_eq!(d.metrics.backlog_without_capacity, 1);
        p.min_tasks = 2;
        let d = desired_tasks(
            &p,
            &at(10.0, 0, sample(1, 0, 0, 0, 0)),
            &ScalingState::default(),
        );
        assert_eq!(d.desired_tasks, 2);
        // A pending task is capacity: nothing to do.
        let d = desired_tasks(
            &p,
            &at(10.0, 2, sample(1, 0, 0, 2, 2)),
            &ScalingState::default(),
        );
        assert_eq!(d.action, Action::None);
    }

    #[test]
    fn scale_in_needs_consecutive_periods_and_respects_cooldown() {
        let p = policy(); // below 3 per task for 6 periods, -25 %, cooldown 30
        let mut state = ScalingState::default();
        let mut desired = 8;
        let mut history = Vec::new();
        for k in 1..=12 {
            let t = f64::from(k) * 10.0;
            let d = desired_tasks(&p, &at(t, desired, sample(2, 8, 8, 0, desired)), &state);
            state = d.state;
            desired = d.desired_tasks;
            history.push(desired);
        }
        // 6th period: 8 → 6; the alarm stays in ALARM, so it acts again only
        // a minute later (12th period): 6 → 5.
        assert_eq!(history, vec![8, 8, 8, 8, 8, 6, 6, 6, 6, 6, 6, 5]);
    }

    #[test]
    fn scale_in_never_takes_the_last_task() {
        let p = policy();
        let mut state = ScalingState::default();
        for k in 1..=20 {
            let d = desired_tasks(
                &p,
                &at(f64::from(k) * 10.0, 1, sample(1, 1, 1, 0, 1)),
                &state,
            );
            assert_eq!(d.desired_tasks, 1, "period {k}");
            state = d.state;
        }
    }

    #[test]
    fn idle_service_goes_to_min_tasks_after_the_idle_time_only() {
        let p = policy(); // 300 s idle = 30 periods
        let mut state = ScalingState::default();
        let mut desired = 3;
        let mut changes = Vec::new();
        for k in 1..=40 {
            let d = desired_tasks(
                &p,
                &at(
                    f64::from(k) * 10.0,
                    desired,
                    sample(0, 0, desired, 0, desired),
                ),
                &state,
            );
            state = d.state;
            if d.desired_tasks != desired {
                changes.push((k, d.desired_tasks, d.action));
            }
            desired = d.desired_tasks;
        }
        // Scale-in trims 3 → 2 → 1 (no backlog at all); the last task goes only
        // when the idle time is up (30 periods).
        assert_eq!(
            changes,
            vec![
                (6, 2, Action::ScaleIn),
                (12, 1, Action::ScaleIn),
                (30, 0, Action::ScaleToIdle)
            ]
        );
        // Once parked, the idle alarm is back to OK: a nudge is not undone.
        assert!(!state.idle.in_alarm);
        let d = desired_tasks(&p, &at(500.0, 1, sample(0, 0, 0, 0, 0)), &state);
        assert_eq!(d.desired_tasks, 1);
    }

    #[test]
    fn in_flight_work_keeps_the_service_up() {
        let p = policy();
        let mut state = ScalingState::default();
        for k in 1..=100 {
            let d = desired_tasks(
                &p,
                &at(f64::from(k) * 10.0, 1, sample(0, 1, 1, 0, 1)),
                &state,
            );
            assert_eq!(d.desired_tasks, 1);
            state = d.state;
        }
    }

    #[test]
    fn scale_out_cooldown_counts_capacity_already_added() {
        let p = policy(); // cooldown 30
        let s0 = ScalingState::default();
        // 4 tasks, bpt 7 (first step, +50 %) → 6.
        let d1 = desired_tasks(&p, &at(10.0, 4, sample(28, 4, 4, 0, 4)), &s0);
        assert_eq!(d1.desired_tasks, 6);
        // 10 s later, still cooling, bpt 30 over 4 running and 2 starting tasks (third step,
        // +300 % of the base 4 = 16).
        let d2 = desired_tasks(&p, &at(20.0, 6, sample(180, 4, 4, 2, 6)), &d1.state);
        assert_eq!(
            d2.desired_tasks, 6,
            "alarm already in ALARM: no re-invocation within a minute"
        );
        let mut fresh = d1.state.clone();
        fresh.scale_out.in_alarm = false; // as if it had gone OK in between
        fresh.scale_out.breaching_streak = 0;
        let d3 = desired_tasks(&p, &at(20.0, 6, sample(180, 4, 4, 2, 6)), &fresh);
        assert_eq!(d3.desired_tasks, 16);
        // The same step again during the cooldown adds nothing.
        let mut again = d1.state.clone();
        again.scale_out.in_alarm = false;
        again.scale_out.breaching_streak = 0;
        let d4 = desired_tasks(&p, &at(20.0, 6, sample(42, 4, 4, 2, 6)), &again);
        assert_eq!(d4.desired_tasks, 6);
    }

    #[test]
    fn alarm_repeats_its_action_once_a_minute() {
        let mut alarm = AlarmState::default();
        let fired: Vec<bool> = (0..14)
            .map(|k| alarm.evaluate(Some(true), 1, f64::from(k) * 10.0))
            .collect();
        assert_eq!(
            fired,
            vec![
                true, false, false, false, false, false, true, false, false, false, false, false,
                true, false
            ]
        );
        assert!(!alarm.evaluate(Some(false), 1, 140.0));
        assert!(
            alarm.evaluate(Some(true), 1, 150.0),
            "a new transition acts at once"
        );
        assert!(
            !alarm.evaluate(None, 1, 160.0),
            "missing data keeps the state and does nothing"
        );
        assert!(alarm.in_alarm);
    }

    #[test]
    fn nudge_table() {
        // (observed desired, last nudge, now, interval, nudge?)
        let cases = [
            (0, None, 100.0, 10.0, true),
            (1, None, 100.0, 10.0, false),
            (0, Some(95.0), 100.0, 10.0, false),
            (0, Some(90.0), 100.0, 10.0, true),
            (0, Some(99.999), 100.0, 0.0, true),
            (3, Some(0.0), 100.0, 10.0, false),
            (0, Some(200.0), 100.0, 10.0, true), // clock went backwards
        ];
        for (desired, last, now, interval, want) in cases {
            assert_eq!(
                should_nudge_from_zero(desired, last, now, interval),
                want,
                "{desired} {last:?} {now}"
            );
        }
    }

    #[test]
    fn a_thousand_submits_make_one_nudge() {
        let mut last = None;
        let mut calls = 0;
        for i in 0..1000 {
            let now = 1000.0 + f64::from(i) * 0.005; // 1,000 submits in 5 s
            if should_nudge_from_zero(0, last, now, 10.0) {
                calls += 1;
                last = Some(now);
            }
        }
        assert_eq!(calls, 1);
    }

    #[test]
    fn action_names_match_their_json_tag() {
        let actions = [
            Action::None,
            Action::ScaleOut { above_ratio: 2.0 },
            Action::ScaleIn,
            Action::ScaleToIdle,
            Action::ScaleFromZero,
        ];
        for action in actions {
            let v = serde_json::to_value(action).unwrap();
            assert_eq!(v["policy"], action.name());
        }
    }

    #[test]
    fn metrics_serialize_with_cloudwatch_names() {
        let m = sample(4, 1, 0, 0, 0).metrics();
        let v = serde_json::to_value(m).unwrap();
        for name in [
            "Backlog",
            "InFlight",
            "RunningTasks",
            "DesiredTasks",
            "BacklogPerTask",
            "BacklogWithoutCapacity",
        ] {
            assert!(v.get(name).is_some(), "{name} in {v}");
        }
        assert_eq!(v["BacklogWithoutCapacity"], 1);
    }
}
