//! Scaling decisions as pure functions.
//!
//! Every `metric_period_seconds` the backlog Lambda reads a [`Sample`],
//! raises the service to [`needed_tasks`] when the desired count is lower
//! ([`scale_out_to`]), and publishes the sample's [`Metrics`]. Scale-in and
//! the return to `min_tasks` stay with CloudWatch alarms and Application Auto
//! Scaling step policies on one-minute datapoints; [`evaluate_alarms`] models
//! them, one minute at a time, so the same code explains a deployed service
//! and drives `sluice simulate` (see `scaling/README.md`).
//!
//! Times are seconds since any fixed epoch, as `f64`.

use serde::{Deserialize, Serialize};

use super::policy::Policy;

/// CloudWatch keeps invoking an Auto Scaling action once a minute while its
/// alarm stays in ALARM.
pub const ALARM_ACTION_REPEAT_SECONDS: f64 = 60.0;

/// Period of the scale-in and idle alarms.
pub const ALARM_PERIOD_SECONDS: f64 = 60.0;

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
    /// The capacity the work needs now: [`needed_tasks`].
    pub needed_tasks: u32,
}

impl Sample {
    /// The metrics the backlog Lambda publishes for this sample.
    pub fn metrics(&self, policy: &Policy) -> Metrics {
        Metrics {
            backlog: self.visible,
            in_flight: self.in_flight,
            running_tasks: self.running_tasks,
            desired_tasks: self.desired_tasks,
            backlog_per_task: backlog_per_task(
                self.visible,
                self.running_tasks.saturating_add(self.pending_tasks),
            ),
            backlog_without_capacity: u32::from(
                self.visible > 0 && self.running_tasks == 0 && self.pending_tasks == 0,
            ),
            needed_tasks: needed_tasks(policy, self),
        }
    }
}

/// Backlog per task: visible (waiting) jobs per task, running or starting,
/// with at least one task in the denominator. Published for the dashboard.
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

/// The capacity the work in the queue needs now, within the policy's bounds.
///
/// With `J = visible + in_flight` jobs, `R` running tasks and `k = jobs_per_task`:
///
/// - **at the latency**: a running task holds `w = k × (1 + floor(latency / job))` jobs within
///   the acceptable latency (those it runs, and for each slot the whole jobs that start on it
///   within the latency), so the work needs `ceil(J / w)` tasks. A fleet that keeps up uses
///   the latency the policy allows, and this is what scale-in compares the desired count with;
/// - **beyond what can start before new capacity**: a running task starts
///   `u = k × (1 + floor(max(latency, start-up) / job))` jobs before a task requested now
///   could start any. Each job beyond `R × u` would wait for a new task anyway, so it gets a
///   slot of its own: `R + ceil((J − R × u) / k)`. A burst thus asks, on its first sample, for
///   one slot per job up to the cap, as the oracle does; a queue that running tasks will reach
///   before a new task could start asks for nothing it would pay a start-up for.
///
/// The need is the larger of the two. Tasks still starting hold nothing: the comparison is with
/// the desired count, which includes them, so nothing is asked twice.
pub fn needed_tasks(policy: &Policy, sample: &Sample) -> u32 {
    let jobs = u64::from(sample.visible) + u64::from(sample.in_flight);
    let per_slot = u64::from(policy.jobs_per_task.max(1));
    let at_latency = u64::from(policy.jobs_per_task_within_latency().max(1));
    let before_new = u64::from(policy.jobs_per_task_before_new_capacity().max(1));
    let running = u64::from(sample.running_tasks);
    let steady = jobs.div_ceil(at_latency);
    let beyond = if jobs > running * before_new {
        running + (jobs - running * before_new).div_ceil(per_slot)
    } else {
        0
    };
    let needed = u32::try_from(steady.max(beyond)).unwrap_or(u32::MAX);
    needed.clamp(policy.min_tasks, policy.max_tasks)
}

/// What the backlog Lambda sets the desired count to after this sample: the
/// needed capacity when it is above the desired count, else nothing (it
/// never lowers).
pub fn scale_out_to(policy: &Policy, sample: &Sample) -> Option<u32> {
    let needed = needed_tasks(policy, sample);
    (needed > sample.desired_tasks).then_some(needed)
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

/// Whether submit should raise the service from 0 now.
///
/// Only when the service it observed wants no task, and at most once per
/// `min_interval_seconds`, so a burst of submits makes one ECS call. A clock
/// that went backwards makes the last nudge unknowable, so it nudges: one
/// extra `UpdateService` costs less than a queue without a worker. The nudge
/// reads and writes the desired count under the same lease as the backlog
/// Lambda's raise, so neither lowers what the other raised.
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

/// The one-minute statistics of the samples published in one alarm period.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Minute {
    /// Samples in the minute.
    pub samples: u32,
    /// `Maximum` of `NeededTasks`.
    pub max_needed: u32,
    /// `Minimum` of `DesiredTasks`.
    pub min_desired: u32,
    /// `Maximum` of `Backlog`.
    pub max_backlog: u32,
    /// `Maximum` of `InFlight`.
    pub max_in_flight: u32,
}

impl Minute {
    /// Adds one sample's metrics.
    pub fn add(&mut self, m: &Metrics) {
        if self.samples == 0 {
            self.min_desired = m.desired_tasks;
        }
        self.samples += 1;
        self.max_needed = self.max_needed.max(m.needed_tasks);
        self.min_desired = self.min_desired.min(m.desired_tasks);
        self.max_backlog = self.max_backlog.max(m.backlog);
        self.max_in_flight = self.max_in_flight.max(m.in_flight);
    }

    /// The scale-in alarm's datapoint:
    /// `IF(desired > 1, needed / desired, 1)` with `needed` the minute's
    /// Maximum of `NeededTasks` and `desired` its Minimum of `DesiredTasks`:
    /// a minute breaches only if every sample needed less, and the last task
    /// is left to the idle rule.
    pub fn scale_in_ratio(&self) -> f64 {
        if self.min_desired > 1 {
            f64::from(self.max_needed) / f64::from(self.min_desired)
        } else {
            1.0
        }
    }

    /// The idle alarm's datapoint:
    /// `IF(desired > min_tasks, backlog + in_flight, 1)` (Maximum, Maximum,
    /// Minimum): the guard returns the alarm to OK once parked, so it cannot
    /// repeat its action against a nudge.
    pub fn idle_metric(&self, min_tasks: u32) -> u64 {
        if self.min_desired > min_tasks {
            u64::from(self.max_backlog) + u64::from(self.max_in_flight)
        } else {
            1
        }
    }
}

/// How an alarm treats a period without a datapoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum MissingData {
    /// `missing`, what sluice deploys: CloudWatch evaluates the most recent
    /// real datapoints, so a gap changes nothing; once the whole evaluation
    /// range is empty the alarm goes to INSUFFICIENT_DATA and stops acting.
    Missing,
    /// `notBreaching`: a gap counts as a good datapoint and ends any streak.
    NotBreaching,
}

/// One CloudWatch alarm whose action is an Application Auto Scaling policy.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct AlarmState {
    /// Whether the alarm is in ALARM.
    pub in_alarm: bool,
    /// Consecutive breaching datapoints up to the last evaluation.
    pub breaching_streak: u32,
    /// Consecutive periods without a datapoint.
    pub missing_streak: u32,
    /// When the alarm last invoked its action.
    pub last_action_at: Option<f64>,
}

impl AlarmState {
    /// Evaluates the alarm on its newest datapoint (`None`: the period had
    /// none) with "N out of N" datapoints to alarm, and says whether it
    /// invokes its action now: on entering ALARM, then once a minute while it
    /// stays.
    pub fn evaluate(
        &mut self,
        breaching: Option<bool>,
        datapoints: u32,
        missing: MissingData,
        now: f64,
    ) -> bool {
        let n = datapoints.max(1);
        let breaching = match (breaching, missing) {
            (Some(b), _) => {
                self.missing_streak = 0;
                b
            }
            (None, MissingData::NotBreaching) => {
                self.missing_streak = 0;
                false
            }
            (None, MissingData::Missing) => {
                self.missing_streak = self.missing_streak.saturating_add(1);
                if self.missing_streak >= n {
                    // INSUFFICIENT_DATA: no action, and a fresh start.
                    self.in_alarm = false;
                    self.breaching_streak = 0;
                    return false;
                }
                // The most recent real datapoints decide: nothing changes.
                return self.repeat_due(now, true);
            }
        };
        self.breaching_streak = if breaching {
            self.breaching_streak.saturating_add(1)
        } else {
            0
        };
        let was_in_alarm = self.in_alarm;
        self.in_alarm = self.breaching_streak >= n;
        self.repeat_due(now, was_in_alarm)
    }

    fn repeat_due(&mut self, now: f64, was_in_alarm: bool) -> bool {
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

/// Everything the alarms and policies remember between evaluations.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ScalingState {
    /// `IF(desired > 1, needed / desired, 1) <= below_ratio`, N of N minutes.
    pub scale_in: AlarmState,
    /// `IF(desired > min_tasks, backlog + in_flight, 1) <= 0`, N of N minutes.
    pub idle: AlarmState,
    /// End of the scale-in policy's cooldown.
    pub scale_in_cooldown_until: Option<f64>,
    /// End of the idle (back to `min_tasks`) policy's cooldown.
    pub idle_cooldown_until: Option<f64>,
}

/// Which rule changed the desired count.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Action {
    /// Nothing changed.
    None,
    /// The backlog Lambda raised the service to the needed capacity.
    ScaleOut,
    /// The scale-in step policy.
    ScaleIn,
    /// The idle policy: back to `min_tasks`.
    ScaleToIdle,
}

impl Action {
    /// The rule's name, as in its JSON form.
    pub fn name(&self) -> &'static str {
        match self {
            Action::None => "none",
            Action::ScaleOut => "scale-out",
            Action::ScaleIn => "scale-in",
            Action::ScaleToIdle => "scale-to-idle",
        }
    }
}

/// The outcome of one alarm evaluation.
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    /// The service's desired count after the evaluation.
    pub desired_tasks: u32,
    /// The policy that set it, if any.
    pub action: Action,
    /// State for the next evaluation.
    pub state: ScalingState,
}

fn cooling(until: Option<f64>, now: f64) -> bool {
    until.is_some_and(|u| now + EPSILON < u)
}

/// What the two alarms and their step policies do at the end of a one-minute
/// period, given that minute's statistics (`None`: no sample was published)
/// and the desired count at that moment (Application Auto Scaling's current
/// capacity).
///
/// - scale-in: [`Minute::scale_in_ratio`] `<= below_ratio` for
///   `evaluation_minutes` of as many minutes → `PercentChangeInCapacity`
///   `change_percent`, blocked during its own cooldown;
/// - idle: [`Minute::idle_metric`] `<= 0` for `scale_to_zero_after_idle_seconds
///   / 60` of as many minutes → `ExactCapacity min_tasks`.
///
/// Both treat missing data as `missing` ([`MissingData::Missing`]). When both
/// act in the same minute the model keeps the larger capacity: two step
/// policies invoked at once leave the count of whichever runs last, which the
/// model cannot know, and the larger is the cautious reading.
pub fn evaluate_alarms(
    policy: &Policy,
    now: f64,
    capacity: u32,
    minute: Option<&Minute>,
    state: &ScalingState,
) -> Decision {
    evaluate_alarms_with(policy, now, capacity, minute, state, MissingData::Missing)
}

/// [`evaluate_alarms`] with another treatment of missing data (to show what
/// `notBreaching` would do).
pub fn evaluate_alarms_with(
    policy: &Policy,
    now: f64,
    capacity: u32,
    minute: Option<&Minute>,
    state: &ScalingState,
    missing: MissingData,
) -> Decision {
    let mut next = state.clone();
    let mut proposals: Vec<(Action, u32)> = Vec::new();

    let scale_in_fires = next.scale_in.evaluate(
        minute.map(|m| m.scale_in_ratio() <= policy.scale_in.below_ratio + EPSILON),
        policy.scale_in.evaluation_minutes,
        missing,
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

    let idle_fires = next.idle.evaluate(
        minute.map(|m| m.idle_metric(policy.min_tasks) == 0),
        policy.idle_minutes(),
        missing,
        now,
    );
    if idle_fires && !cooling(next.idle_cooldown_until, now) && capacity > policy.min_tasks {
        proposals.push((Action::ScaleToIdle, policy.min_tasks));
    }

    let chosen = proposals
        .iter()
        .copied()
        .reduce(|best, p| if p.1 > best.1 { p } else { best });
    let Some((action, desired)) = chosen else {
        return Decision {
            desired_tasks: capacity,
            action: Action::None,
            state: next,
        };
    };
    let cooldown = f64::from(policy.cooldown_seconds);
    match action {
        Action::ScaleIn => next.scale_in_cooldown_until = Some(now + cooldown),
        Action::ScaleToIdle => next.idle_cooldown_until = Some(now + cooldown),
        Action::ScaleOut | Action::None => {}
    }
    Decision {
        desired_tasks: desired,
        action,
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
            acceptable_latency_seconds: 10.0,
            average_job_seconds: 10.0,
            jobs_per_task: 1,
            task_startup_seconds: 60.0,
            min_tasks: 0,
            max_tasks: 20,
            metric_period_seconds: 10,
            scale_in: ScaleIn {
                below_ratio: 0.5,
                change_percent: -25,
                evaluation_minutes: 2,
            },
            scale_to_zero_after_idle_seconds: 300,
            cooldown_seconds: 60,
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

    #[test]
    fn policy_validates() {
        policy().validate().unwrap();
    }

    #[test]
    fn backlog_per_task_table() {
        let cases = [(0, 0, 0.0), (5, 0, 5.0), (1500, 10, 150.0), (7, 2, 3.5)];
        for (visible, tasks, want) in cases {
            assert!((backlog_per_task(visible, tasks) - want).abs() < 1e-12);
        }
    }

    #[test]
    fn aws_guide_worked_example_gives_fifteen_tasks() {
        assert_eq!(tasks_for_backlog(1500, 100.0), 15);
        assert_eq!(tasks_for_backlog(0, 100.0), 0);
        assert_eq!(tasks_for_backlog(1, 100.0), 1);
        assert_eq!(tasks_for_backlog(u32::MAX, 1e-9), u32::MAX);
    }

    #[test]
    fn needed_tasks_table() {
        // latency 10 s, jobs 10 s, 1 per task, 60 s start-up: a running task holds 2 jobs
        // within the latency and starts 7 before a new task could.
        let p = policy();
        let big = Policy {
            max_tasks: 5000,
            ..policy()
        };
        // (policy, visible, in_flight, running, want)
        let cases: [(&Policy, u32, u32, u32, u32); 11] = [
            (&p, 0, 0, 0, 0),
            (&p, 1, 0, 0, 1),
            // From cold, a slot per job: they all wait a start-up anyway.
            (&p, 12, 0, 0, 12),
            (&p, 600, 0, 0, 20),
            (&big, 600, 0, 0, 600),
            (&big, 600, 0, 1, 594),
            // A fleet that keeps up: 8 running, 8 in flight, 6 waiting → 14 jobs at 2 a task.
            (&p, 6, 8, 8, 7),
            // Past the latency: the fleet the work needs at 2 jobs a task.
            (&big, 40, 8, 8, 24),
            (&p, 30, 8, 8, 19),
            (&big, 60, 8, 8, 34),
            // Starting tasks hold nothing yet.
            (&p, 0, 3, 3, 2),
        ];
        for (policy, visible, in_flight, running, want) in cases {
            let s = sample(visible, in_flight, running, 0, 0);
            assert_eq!(
                needed_tasks(policy, &s),
                want,
                "{visible} visible, {in_flight} in flight, {running} running"
            );
        }
        // Short jobs: a task holds 11 within 10 s of 1 s jobs, and starts 61 within a start-up.
        let short = Policy {
            average_job_seconds: 1.0,
            ..policy()
        };
        assert_eq!(needed_tasks(&short, &sample(30, 5, 5, 0, 5)), 4);
        assert_eq!(needed_tasks(&short, &sample(300, 2, 2, 0, 2)), 20);
        assert_eq!(needed_tasks(&short, &sample(100, 2, 2, 0, 2)), 10);
        // Beyond what 2 running tasks start within a start-up (122): a slot per job.
        let short_big = Policy {
            max_tasks: 5000,
            ..short.clone()
        };
        assert_eq!(needed_tasks(&short_big, &sample(300, 2, 2, 0, 2)), 182);
        assert_eq!(needed_tasks(&short_big, &sample(120, 2, 2, 0, 2)), 12);
        // Long jobs, 4 per task: a slot per job.
        let long = Policy {
            average_job_seconds: 600.0,
            jobs_per_task: 4,
            ..policy()
        };
        assert_eq!(needed_tasks(&long, &sample(9, 0, 0, 0, 0)), 3);
        assert_eq!(needed_tasks(&long, &sample(2, 8, 2, 0, 2)), 3);
        // min_tasks is a floor, max_tasks a cap.
        let floor = Policy {
            min_tasks: 2,
            ..policy()
        };
        assert_eq!(needed_tasks(&floor, &sample(0, 0, 0, 0, 2)), 2);
        assert_eq!(needed_tasks(&p, &sample(u32::MAX, u32::MAX, 0, 0, 0)), 20);
    }

    #[test]
    fn scale_out_only_ever_raises() {
        let p = policy();
        assert_eq!(scale_out_to(&p, &sample(12, 0, 0, 1, 1)), Some(12));
        assert_eq!(scale_out_to(&p, &sample(12, 0, 0, 12, 12)), None);
        // Tasks crash-looping (none running) with the service scaled out: nothing lowers it.
        assert_eq!(scale_out_to(&p, &sample(3, 0, 0, 0, 15)), None);
        assert_eq!(scale_out_to(&p, &sample(0, 0, 0, 0, 0)), None);
    }

    /// For every sample, the raise is never below the desired count, and the
    /// capacity scale-in leaves (at its threshold) is never raised again by
    /// the next sample of the same work.
    #[test]
    fn scale_out_and_scale_in_never_fight() {
        let mut rng = crate::scaling::sim::Rng::new(11);
        for _ in 0..20_000 {
            let p = Policy {
                acceptable_latency_seconds: 1.0 + (rng.unit() * 600.0).floor(),
                average_job_seconds: 1.0 + (rng.unit() * 600.0).floor(),
                task_startup_seconds: 1.0 + (rng.unit() * 600.0).floor(),
                scale_in: {
                    let change_percent = -1 - (rng.unit() * 99.0) as i32;
                    let most = f64::from(100 + change_percent) / 100.0;
                    ScaleIn {
                        below_ratio: (most * (0.01 + 0.99 * rng.unit())).max(1e-3),
                        change_percent,
                        evaluation_minutes: 1,
                    }
                },
                jobs_per_task: 1 + (rng.unit() * 8.0) as u32,
                max_tasks: 1 + (rng.unit() * 300.0) as u32,
                ..policy()
            };
            let desired = (rng.unit() * f64::from(p.max_tasks + 1)) as u32;
            let running = (rng.unit() * f64::from(desired + 1)) as u32;
            let s = sample(
                (rng.unit() * 2000.0) as u32,
                (rng.unit() * f64::from(running * p.jobs_per_task + 1)) as u32,
                running,
                desired - running,
                desired,
            );
            if let Some(n) = scale_out_to(&p, &s) {
                assert!(n > desired && n <= p.max_tasks, "{s:?} → {n}");
            }
            let mut minute = Minute::default();
            minute.add(&s.metrics(&p));
            if desired > 1 && minute.scale_in_ratio() <= p.scale_in.below_ratio {
                let after = bounded(
                    &p,
                    desired,
                    percent_adjustment(desired, p.scale_in.change_percent),
                );
                // ECS stops idle and starting tasks first.
                let s2 = Sample {
                    desired_tasks: after,
                    running_tasks: running.min(after),
                    pending_tasks: after.saturating_sub(running.min(after)),
                    ..s
                };
                assert_eq!(scale_out_to(&p, &s2), None, "{s:?} scaled in to {after}");
            }
        }
    }

    #[test]
    fn percent_adjustment_rounds_like_application_auto_scaling() {
        let cases = [
            (10, 50, 5),
            (3, 50, 1),
            (1, 10, 1),
            (10, -25, -2),
            (3, -25, -1),
            (1, -25, -1),
            (0, 100, 1),
            (7, 0, 0),
        ];
        for (cap, pct, want) in cases {
            assert_eq!(percent_adjustment(cap, pct), want, "{cap} {pct}%");
        }
    }

    fn metrics(needed: u32, desired: u32, backlog: u32, in_flight: u32) -> Metrics {
        Metrics {
            backlog,
            in_flight,
            running_tasks: desired,
            desired_tasks: desired,
            backlog_per_task: 0.0,
            backlog_without_capacity: 0,
            needed_tasks: needed,
        }
    }

    fn minute(samples: &[Metrics]) -> Minute {
        let mut m = Minute::default();
        for s in samples {
            m.add(s);
        }
        m
    }

    #[test]
    fn a_minute_breaches_only_if_every_sample_does() {
        let p = policy();
        let quiet = metrics(2, 10, 0, 2);
        let busy = metrics(9, 10, 5, 9);
        assert!(minute(&[quiet; 6]).scale_in_ratio() <= p.scale_in.below_ratio);
        let mixed = minute(&[quiet, quiet, busy, quiet, quiet, quiet]);
        assert!(mixed.scale_in_ratio() > p.scale_in.below_ratio);
        // The last task is left to the idle rule.
        assert_eq!(minute(&[metrics(0, 1, 0, 0)]).scale_in_ratio(), 1.0);
        // Idle: nothing waiting nor running in any sample, while above min_tasks.
        assert_eq!(minute(&[metrics(0, 3, 0, 0); 6]).idle_metric(0), 0);
        assert_eq!(
            minute(&[metrics(0, 3, 0, 0), metrics(1, 3, 0, 1)]).idle_metric(0),
            1
        );
        assert_eq!(minute(&[metrics(0, 0, 0, 0)]).idle_metric(0), 1, "parked");
    }

    #[test]
    fn scale_in_needs_its_minutes_and_respects_cooldown() {
        let p = policy();
        let quiet = minute(&[metrics(2, 10, 0, 2); 6]);
        let mut state = ScalingState::default();
        let mut desired = 10;
        let mut log = Vec::new();
        for i in 1..=6 {
            let t = f64::from(i) * 60.0;
            let d = evaluate_alarms(&p, t, desired, Some(&quiet), &state);
            state = d.state;
            desired = d.desired_tasks;
            log.push((i, desired));
        }
        // 2 of 2 minutes: acts at minute 2 (10 → 8), again at minute 3 once the
        // 60 s cooldown ends (8 → 6), and so on while the alarm stays in ALARM.
        assert_eq!(log, vec![(1, 10), (2, 8), (3, 6), (4, 5), (5, 4), (6, 3)]);
    }

    #[test]
    fn idle_service_goes_to_min_tasks_after_the_idle_time_only() {
        let p = policy();
        // One task left (scale-in leaves the last one to this rule).
        let idle = minute(&[metrics(0, 1, 0, 0); 6]);
        let mut state = ScalingState::default();
        for i in 1..=4 {
            let d = evaluate_alarms(&p, f64::from(i) * 60.0, 1, Some(&idle), &state);
            assert_eq!(d.desired_tasks, 1, "minute {i}");
            state = d.state;
        }
        let d = evaluate_alarms(&p, 300.0, 1, Some(&idle), &state);
        assert_eq!((d.desired_tasks, d.action), (0, Action::ScaleToIdle));
        // Parked: the guard turns the datapoint good, the alarm returns to OK.
        let parked = minute(&[metrics(0, 0, 0, 0)]);
        let d = evaluate_alarms(&p, 360.0, 0, Some(&parked), &d.state);
        assert!(!d.state.idle.in_alarm);
    }

    /// The fault the one-minute alarms fix: at 10 s periods with 30 of 30
    /// datapoints and missing data "not breaching", one missed sample in ten
    /// resets the idle alarm forever. With one-minute Maximum/Minimum
    /// datapoints and "missing", the same gaps change nothing, and even whole
    /// minutes without a sample only delay parking.
    #[test]
    fn missed_samples_do_not_keep_the_fleet_from_parking() {
        let p = policy();
        // Old design: every tenth 10 s datapoint missing.
        let mut old = AlarmState::default();
        let fired_old = (1..=600).any(|i| {
            let point = (i % 10 != 0).then_some(true);
            old.evaluate(point, 30, MissingData::NotBreaching, f64::from(i) * 10.0)
        });
        assert!(!fired_old, "the old idle alarm never fires");

        // New design: the same gaps inside minutes, plus every third minute empty.
        let mut rng = crate::scaling::sim::Rng::new(3);
        let mut state = ScalingState::default();
        let mut parked_at = None;
        for i in 1..=30u32 {
            let mut m = Minute::default();
            for _ in 0..6 {
                if rng.unit() > 0.3 {
                    m.add(&metrics(0, 1, 0, 0));
                }
            }
            let point = (i % 3 != 0 && m.samples > 0).then_some(&m);
            let d = evaluate_alarms(&p, f64::from(i) * 60.0, 1, point, &state);
            state = d.state;
            if d.action == Action::ScaleToIdle {
                parked_at = Some(i);
                break;
            }
        }
        let at = parked_at.expect("the fleet parks");
        assert!(at <= 8, "parked at minute {at}");
        // And with "not breaching", the empty minutes would have reset it.
        let mut state = ScalingState::default();
        let parked_old = (1..=30u32).any(|i| {
            let m = minute(&[metrics(0, 1, 0, 0); 6]);
            let point = (i % 3 != 0).then_some(&m);
            let d = evaluate_alarms_with(
                &p,
                f64::from(i) * 60.0,
                1,
                point,
                &state,
                MissingData::NotBreaching,
            );
            state = d.state;
            d.action == Action::ScaleToIdle
        });
        assert!(!parked_old);
    }

    #[test]
    fn an_alarm_without_any_data_stops_acting() {
        let p = policy();
        let idle = minute(&[metrics(0, 1, 0, 0); 6]);
        let mut state = ScalingState::default();
        for i in 1..=5 {
            state = evaluate_alarms(&p, f64::from(i) * 60.0, 1, Some(&idle), &state).state;
        }
        assert!(state.idle.in_alarm);
        // The sampler dies: for 4 minutes the most recent real datapoints keep
        // it in ALARM (acting once a minute), then INSUFFICIENT_DATA.
        let mut acted = 0;
        for i in 6..=20 {
            let d = evaluate_alarms(&p, f64::from(i) * 60.0, 1, None, &state);
            state = d.state;
            acted += u32::from(d.action == Action::ScaleToIdle);
        }
        assert!(!state.idle.in_alarm);
        assert!(acted <= 4, "{acted}");
    }

    #[test]
    fn nudge_table() {
        // (desired, last nudge, now, want)
        let cases = [
            (0, None, 0.0, true),
            (1, None, 0.0, false),
            (0, Some(0.0), 5.0, false),
            (0, Some(0.0), 10.0, true),
            (0, Some(20.0), 5.0, true),
        ];
        for (desired, last, now, want) in cases {
            assert_eq!(should_nudge_from_zero(desired, last, now, 10.0), want);
        }
    }

    #[test]
    fn a_thousand_submits_make_one_nudge() {
        let mut last = None;
        let mut nudges = 0;
        for i in 0..1000 {
            let now = f64::from(i) * 0.001;
            if should_nudge_from_zero(0, last, now, 10.0) {
                nudges += 1;
                last = Some(now);
            }
        }
        assert_eq!(nudges, 1);
    }

    #[test]
    fn action_names_match_their_json_tag() {
        for a in [
            Action::None,
            Action::ScaleOut,
            Action::ScaleIn,
            Action::ScaleToIdle,
        ] {
            assert_eq!(serde_json::to_value(a).unwrap(), a.name());
        }
    }

    #[test]
    fn metrics_serialize_with_cloudwatch_names() {
        let m = sample(3, 1, 1, 0, 1).metrics(&policy());
        let v = serde_json::to_value(m).unwrap();
        for name in [
            "Backlog",
            "InFlight",
            "RunningTasks",
            "DesiredTasks",
            "BacklogPerTask",
            "BacklogWithoutCapacity",
            "NeededTasks",
        ] {
            assert!(v.get(name).is_some(), "{name}");
        }
        assert_eq!(v["NeededTasks"], 2);
    }
}
