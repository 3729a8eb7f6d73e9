//! Scaling decisions as pure functions: one controller of the desired count.
//!
//! Every `metric_period_seconds` the backlog Lambda reads a [`Sample`] and
//! calls [`decide`], which sets the service's desired count in both
//! directions: up to [`needed_tasks`] at once when the work needs more, down
//! to what the work holds once the spare capacity has stayed unused for
//! `keep_idle_startups` start-ups. The same function drives `sluice simulate` and
//! explains a deployed service in `sluice report` (see `scaling/README.md`).
//!
//! Times are seconds since any fixed epoch, as `f64`.

use serde::{Deserialize, Serialize};

use super::policy::Policy;

const EPSILON: f64 = 1e-9;

/// The controller forgets what it remembered after this long without a
/// sample (a fresh Lambda environment holding another's old memory, runs
/// that failed): it cannot know what happened in between, so it keeps spare
/// capacity one keep-idle time longer rather than less. Longer than the pause
/// between two runs of the backlog function (it samples 55 s of each minute,
/// and EventBridge may start a run some seconds late), which must not wipe
/// it; and at least three sample periods.
pub const MAX_SAMPLE_GAP_SECONDS: f64 = 90.0;

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

/// The metrics published per sample, named as in CloudWatch (the dashboard and the
/// loop's health alarms read them).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Metrics {
    /// Jobs waiting (visible messages).
    pub backlog: u32,
    /// Jobs being run (in-flight messages).
    pub in_flight: u32,
    /// Tasks running.
    pub running_tasks: u32,
    /// Tasks requested and still starting.
    pub pending_tasks: u32,
    /// The service's desired count.
    pub desired_tasks: u32,
    /// `backlog / max(running_tasks + pending_tasks, 1)`: see [`backlog_per_task`].
    pub backlog_per_task: f64,
    /// 1 when jobs wait and no task runs or starts, else 0.
    pub backlog_without_capacity: u32,
    /// The capacity the work needs now: [`needed_tasks`].
    pub needed_tasks: u32,
    /// 1 while the pipeline is paused (jobs wait on purpose), else 0: the deployment's alarms on
    /// waiting jobs are multiplied by `1 - Paused`.
    #[serde(default)]
    pub paused: u32,
}

impl Metrics {
    /// The sample these metrics were published from (what `sluice report` reads back).
    pub fn sample(&self) -> Sample {
        Sample {
            visible: self.backlog,
            in_flight: self.in_flight,
            running_tasks: self.running_tasks,
            pending_tasks: self.pending_tasks,
            desired_tasks: self.desired_tasks,
        }
    }
}

impl Sample {
    /// The metrics the backlog Lambda publishes for this sample.
    pub fn metrics(&self, policy: &Policy) -> Metrics {
        Metrics {
            backlog: self.visible,
            in_flight: self.in_flight,
            running_tasks: self.running_tasks,
            pending_tasks: self.pending_tasks,
            desired_tasks: self.desired_tasks,
            backlog_per_task: backlog_per_task(
                self.visible,
                self.running_tasks.saturating_add(self.pending_tasks),
            ),
            backlog_without_capacity: u32::from(
                self.visible > 0 && self.running_tasks == 0 && self.pending_tasks == 0,
            ),
            needed_tasks: needed_tasks(policy, self),
            paused: 0,
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

/// Which way the controller moved the desired count.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Action {
    /// Nothing changed.
    None,
    /// Raised to the capacity the work needs.
    ScaleOut,
    /// Lowered to what the work has held for `keep_idle_startups` start-ups.
    ScaleIn,
}

impl Action {
    /// The action's name, as in its JSON form.
    pub fn name(&self) -> &'static str {
        match self {
            Action::None => "none",
            Action::ScaleOut => "scale-out",
            Action::ScaleIn => "scale-in",
        }
    }
}

/// Why the controller did what it did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Reason {
    /// The work needs more tasks than the desired count: raised.
    WorkNeedsMore,
    /// Jobs wait: no task is spare.
    JobsWaiting,
    /// Tasks are still starting: a raise is never undone within its start-up.
    TasksStarting,
    /// Spare capacity, kept until it has been unused for `keep_idle_startups` start-ups.
    KeepingSpare,
    /// Spare capacity unused for `keep_idle_startups` start-ups: released.
    SpareReleased,
    /// The desired count is what the work holds.
    Matched,
    /// The pipeline is paused: held at `min_tasks`, never below the tasks that hold jobs.
    Paused,
}

impl Reason {
    /// The reason's name, as in its JSON form.
    pub fn name(&self) -> &'static str {
        match self {
            Reason::WorkNeedsMore => "work-needs-more",
            Reason::JobsWaiting => "jobs-waiting",
            Reason::TasksStarting => "tasks-starting",
            Reason::KeepingSpare => "keeping-spare",
            Reason::SpareReleased => "spare-released",
            Reason::Matched => "matched",
            Reason::Paused => "paused",
        }
    }

    /// One line for `sluice report` and the function's logs.
    pub fn describe(&self) -> &'static str {
        match self {
            Reason::WorkNeedsMore => "the jobs waiting and running need more tasks: raised to the need at once",
            Reason::JobsWaiting => "jobs are waiting, so no task is spare",
            Reason::TasksStarting => "tasks are still starting: a raise is never undone within its start-up",
            Reason::KeepingSpare => "spare tasks are kept until they have been unused for keep_idle_startups start-ups",
            Reason::SpareReleased => "tasks unused for keep_idle_startups start-ups released, never below the tasks that hold jobs",
            Reason::Matched => "the desired count is what the work holds",
            Reason::Paused => "the pipeline is paused: held at min_tasks, never below the tasks that still hold jobs",
        }
    }
}

/// What the controller remembers between samples: the count each recent
/// sample would have kept, over one unbroken run of samples.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Memory {
    /// When the unbroken run of samples began.
    pub since: Option<f64>,
    /// The last sample's time.
    pub last_at: Option<f64>,
    /// `(time, count kept)` of the samples within the keep-idle time that a
    /// newer sample does not outweigh (a newer one keeping as many or more):
    /// oldest first, counts falling, so the first is the most any kept and
    /// the memory holds at most one entry per count.
    pub recent: Vec<(f64, u32)>,
}

impl Memory {
    /// Remembers the count a sample at `now` kept.
    fn remember(&mut self, now: f64, kept: u32) {
        while self.recent.last().is_some_and(|&(_, k)| k <= kept) {
            self.recent.pop();
        }
        self.recent.push((now, kept));
    }

    /// The memory as the sample at `now` finds it: forgotten after a gap (or
    /// a clock that went backwards), else without the samples older than
    /// the keep-idle time.
    fn at(&self, policy: &Policy, now: f64) -> Memory {
        let gap = MAX_SAMPLE_GAP_SECONDS.max(3.0 * f64::from(policy.metric_period_seconds));
        match (self.since, self.last_at) {
            (Some(since), Some(last)) if now + EPSILON >= last && now - last <= gap + EPSILON => {
                // Only the samples of the keep-idle time (the one that old excluded).
                let oldest = now - policy.keep_idle_seconds() + EPSILON;
                Memory {
                    since: Some(since),
                    last_at: Some(now),
                    recent: self
                        .recent
                        .iter()
                        .copied()
                        .filter(|&(t, _)| t > oldest)
                        .collect(),
                }
            }
            _ => Memory {
                since: Some(now),
                last_at: Some(now),
                recent: Vec::new(),
            },
        }
    }
}

/// What the controller decided on one sample.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Decision {
    /// The service's desired count after the sample.
    pub desired_tasks: u32,
    /// Which way it moved.
    pub action: Action,
    /// Why.
    pub reason: Reason,
    /// The capacity the work needs now ([`needed_tasks`]).
    pub needed_tasks: u32,
    /// The fewest tasks the controller may leave now: the need, the tasks
    /// that may hold jobs (`min(running, in_flight)`) and `min_tasks`.
    pub floor_tasks: u32,
    /// With spare capacity kept: the earliest time it may be released.
    pub release_at: Option<f64>,
    /// For the next sample.
    pub memory: Memory,
}

/// The one controller of the desired count, on one sample at `now`.
///
/// - **Up**: when [`needed_tasks`] is above the desired count, the count goes
///   to it at once.
/// - **Down**, only when nothing forbids it. Never while jobs wait (no task is
///   spare), never while tasks start (ECS stops starting tasks first, so any
///   lowering would undo a raise less than a start-up old, the submit nudge's
///   included), never below the tasks that may hold jobs (`min(running,
///   in_flight)`: every in-flight job on a task of its own, so scale-in
///   protection is not relied on), never below the need or `min_tasks`, so
///   the service parks at `min_tasks` only when nothing waits or runs.
/// - **When**: each sample remembers the count it would keep; the count goes
///   down to the most any sample of the last keep-idle time
///   ([`Policy::keep_idle_seconds`]) kept, once the controller's memory spans
///   that long. Spare capacity thus goes one keep-idle time after the last
///   sample that needed it (plus at most one sample), and a task started just
///   before the queue drained is kept one keep-idle time to be of use.
///
/// A lowering is never undone by the next sample of the same work: the count
/// it leaves is at least the need and holds every in-flight job, so the need
/// computed on it is no higher.
pub fn decide(policy: &Policy, sample: &Sample, memory: &Memory, now: f64) -> Decision {
    let mut memory = memory.at(policy, now);
    let needed = needed_tasks(policy, sample);
    let desired = sample.desired_tasks;
    let holders = sample.running_tasks.min(sample.in_flight);
    let floor = needed.max(holders).max(policy.min_tasks);
    let decision = |desired_tasks, action, reason, release_at, memory| Decision {
        desired_tasks,
        action,
        reason,
        needed_tasks: needed,
        floor_tasks: floor,
        release_at,
        memory,
    };
    if needed > desired {
        memory.remember(now, needed);
        return decision(
            needed,
            Action::ScaleOut,
            Reason::WorkNeedsMore,
            None,
            memory,
        );
    }
    let starting = sample.pending_tasks > 0
        || desired > sample.running_tasks.saturating_add(sample.pending_tasks);
    let blocked = if sample.visible > 0 {
        Some(Reason::JobsWaiting)
    } else if starting {
        Some(Reason::TasksStarting)
    } else {
        None
    };
    let kept = if blocked.is_some() {
        desired
    } else {
        floor.min(desired)
    };
    memory.remember(now, kept);
    if kept >= desired {
        let reason = blocked.unwrap_or(Reason::Matched);
        return decision(desired, Action::None, reason, None, memory);
    }
    let keep = policy.keep_idle_seconds();
    let since = memory.since.unwrap_or(now);
    let target = memory.recent.first().map_or(kept, |&(_, k)| k);
    if since + keep > now + EPSILON || target >= desired {
        // The newest sample that kept the whole count, or the memory's start.
        let last_full = memory
            .recent
            .iter()
            .rev()
            .find(|&&(_, k)| k >= desired)
            .map_or(since, |&(t, _)| t.max(since));
        let release_at = Some((last_full + keep).max(since + keep));
        return decision(
            desired,
            Action::None,
            Reason::KeepingSpare,
            release_at,
            memory,
        );
    }
    decision(target, Action::ScaleIn, Reason::SpareReleased, None, memory)
}

/// The controller while the pipeline is paused: workers take no job, so the work in the queue
/// needs no task. The count goes to `min_tasks` at once, never below the tasks that may still
/// hold jobs (`min(running, in_flight)`, of the desired ones: a paused pipeline never raises
/// for them) and never above it but to reach `min_tasks`. What it keeps is remembered, so a
/// resume scales out to the need on its first sample.
pub fn decide_paused(policy: &Policy, sample: &Sample, memory: &Memory, now: f64) -> Decision {
    let mut memory = memory.at(policy, now);
    let desired = sample.desired_tasks;
    let holders = sample.running_tasks.min(sample.in_flight).min(desired);
    let kept = holders.max(policy.min_tasks);
    memory.remember(now, kept);
    let action = match kept.cmp(&desired) {
        std::cmp::Ordering::Less => Action::ScaleIn,
        std::cmp::Ordering::Greater => Action::ScaleOut,
        std::cmp::Ordering::Equal => Action::None,
    };
    Decision {
        desired_tasks: kept,
        action,
        reason: Reason::Paused,
        needed_tasks: needed_tasks(policy, sample),
        floor_tasks: kept,
        release_at: None,
        memory,
    }
}

/// The controller's decisions over a run of samples, oldest first, from an
/// empty memory: what `sluice report` shows for the samples the backlog
/// function published. The first samples of a replay keep spare tasks as a
/// fresh execution environment would, so a replay lowers no sooner than the
/// function did.
pub fn replay(policy: &Policy, samples: &[(f64, Sample)]) -> Vec<Decision> {
    let running: Vec<(f64, Sample, bool)> = samples.iter().map(|&(t, s)| (t, s, false)).collect();
    replay_with_pauses(policy, &running)
}

/// [`replay`], with whether the pipeline was paused at each sample: a paused one is decided by
/// [`decide_paused`], as the backlog function decided it.
pub fn replay_with_pauses(policy: &Policy, samples: &[(f64, Sample, bool)]) -> Vec<Decision> {
    let mut memory = Memory::default();
    samples
        .iter()
        .map(|(t, s, paused)| {
            let d = if *paused {
                decide_paused(policy, s, &memory, *t)
            } else {
                decide(policy, s, &memory, *t)
            };
            memory = d.memory.clone();
            d
        })
        .collect()
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

#[cfg(test)]
mod tests {
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
            // 30 s: half the start-up.
            keep_idle_startups: 0.5,
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

    /// The same sample every period from 0 to `until`; the last decision.
    fn held(p: &Policy, s: &Sample, until: f64) -> Decision {
        let mut memory = Memory::default();
        let mut t = 0.0;
        loop {
            let d = decide(p, s, &memory, t);
            if t + EPSILON >= until {
                return d;
            }
            memory = d.memory;
            t += f64::from(p.metric_period_seconds);
        }
    }

    #[test]
    fn a_paused_pipeline_holds_min_tasks_and_the_tasks_that_hold_jobs() {
        let p = policy();
        let warm = Policy {
            min_tasks: 2,
            ..policy()
        };
        // (policy, visible, in_flight, running, desired) → (desired after, action)
        let cases: [(&Policy, u32, u32, u32, u32, u32, Action); 8] = [
            // Jobs wait, nothing runs: parked at min_tasks, no raise for the backlog.
            (&p, 600, 0, 0, 0, 0, Action::None),
            (&p, 600, 0, 10, 10, 0, Action::ScaleIn),
            // Tasks still finish what they hold: kept until they are done.
            (&p, 50, 3, 10, 10, 3, Action::ScaleIn),
            (&p, 50, 3, 3, 3, 3, Action::None),
            // In-flight beyond the running tasks holds no more than run.
            (&p, 0, 8, 2, 2, 2, Action::None),
            // A warm pool stays warm, and is filled to min_tasks.
            (&warm, 100, 0, 5, 5, 2, Action::ScaleIn),
            (&warm, 100, 0, 0, 0, 2, Action::ScaleOut),
            (&warm, 100, 5, 5, 5, 5, Action::None),
        ];
        for (policy, visible, in_flight, running, desired, want, action) in cases {
            let s = sample(visible, in_flight, running, 0, desired);
            let d = decide_paused(policy, &s, &Memory::default(), 100.0);
            assert_eq!(
                (d.desired_tasks, d.action, d.reason),
                (want, action, Reason::Paused),
                "{visible} visible, {in_flight} in flight, {running} running, {desired} desired"
            );
        }
        // A replay decides each sample by the state it was published in.
        let samples = [
            (0.0, sample(600, 0, 0, 0, 0), true),
            (10.0, sample(600, 0, 0, 0, 0), false),
        ];
        let replayed: Vec<(u32, Reason)> = replay_with_pauses(&p, &samples)
            .iter()
            .map(|d| (d.desired_tasks, d.reason))
            .collect();
        assert_eq!(replayed, [(0, Reason::Paused), (20, Reason::WorkNeedsMore)]);
        // On resume, the next sample raises to the need at once.
        let s = sample(600, 0, 0, 0, 0);
        let paused = decide_paused(&p, &s, &Memory::default(), 0.0);
        let resumed = decide(&p, &s, &paused.memory, 10.0);
        assert_eq!(
            (resumed.desired_tasks, resumed.action),
            (20, Action::ScaleOut)
        );
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
    fn metrics_serialize_with_cloudwatch_names() {
        let m = sample(3, 1, 1, 0, 1).metrics(&policy());
        let v = serde_json::to_value(m).unwrap();
        for name in [
            "Backlog",
            "InFlight",
            "RunningTasks",
            "PendingTasks",
            "DesiredTasks",
            "BacklogPerTask",
            "BacklogWithoutCapacity",
            "NeededTasks",
        ] {
            assert!(v.get(name).is_some(), "{name}");
        }
        assert_eq!(v["NeededTasks"], 2);
    }

    #[test]
    fn raises_to_the_need_at_once() {
        let p = policy();
        let d = decide(&p, &sample(12, 0, 0, 1, 1), &Memory::default(), 0.0);
        assert_eq!(
            (d.desired_tasks, d.action, d.reason),
            (12, Action::ScaleOut, Reason::WorkNeedsMore)
        );
        let d = decide(&p, &sample(12, 0, 0, 12, 12), &Memory::default(), 0.0);
        assert_eq!((d.desired_tasks, d.action), (12, Action::None));
        // Tasks crash-looping (none running) with jobs waiting: nothing lowers the count.
        let d = held(&p, &sample(3, 0, 0, 0, 15), 600.0);
        assert_eq!((d.desired_tasks, d.reason), (15, Reason::JobsWaiting));
    }

    /// The rules that make scale-in safe: each sample held for twice
    /// `keep_idle_startups` start-ups, so only the rules stop a lowering.
    #[test]
    fn scale_in_rules() {
        let p = policy();
        let multi = Policy {
            jobs_per_task: 4,
            ..policy()
        };
        let floor = Policy {
            min_tasks: 2,
            ..policy()
        };
        // (policy, sample, desired after, reason)
        let cases = [
            // Jobs wait: no task is spare.
            (&p, sample(1, 4, 5, 0, 8), 8, Reason::JobsWaiting),
            // Tasks still starting (the submit nudge's 0 → 1 included): a raise is never undone.
            (&p, sample(0, 0, 0, 1, 1), 1, Reason::TasksStarting),
            (&p, sample(0, 2, 4, 2, 6), 6, Reason::TasksStarting),
            // ECS has not started every task the count asks for.
            (&p, sample(0, 0, 3, 0, 5), 5, Reason::TasksStarting),
            // Never below the tasks that may hold jobs: 4 in flight, perhaps on 4 tasks.
            (&p, sample(0, 4, 6, 0, 6), 4, Reason::SpareReleased),
            // ... whatever the slots per task (4 jobs may sit on 4 tasks of 4 slots).
            (&multi, sample(0, 4, 6, 0, 6), 4, Reason::SpareReleased),
            (&multi, sample(0, 9, 6, 0, 6), 6, Reason::Matched),
            // Parked at min_tasks only when nothing waits or runs.
            (&p, sample(0, 1, 6, 0, 6), 1, Reason::SpareReleased),
            (&p, sample(0, 0, 6, 0, 6), 0, Reason::SpareReleased),
            (&floor, sample(0, 0, 6, 0, 6), 2, Reason::SpareReleased),
            (&floor, sample(0, 0, 2, 0, 2), 2, Reason::Matched),
            // Busy tasks above a lowered count (scale-in protection): nothing to do.
            (&p, sample(0, 3, 5, 0, 2), 2, Reason::Matched),
            (&p, sample(0, 3, 3, 0, 3), 3, Reason::Matched),
        ];
        for (policy, s, want, reason) in cases {
            let d = held(policy, &s, 2.0 * policy.keep_idle_seconds());
            assert_eq!((d.desired_tasks, d.reason), (want, reason), "{s:?}");
            assert!(d.desired_tasks >= d.floor_tasks.min(s.desired_tasks));
        }
    }

    #[test]
    fn spare_tasks_go_the_keep_idle_time_after_the_last_sample_that_needed_them() {
        let p = policy();
        // A fleet of 5 drains: 5 busy at 0 s, 2 from 10 s, 1 from 30 s, none from 60 s.
        let work = [
            (0.0, 5),
            (10.0, 2),
            (20.0, 2),
            (30.0, 1),
            (40.0, 1),
            (50.0, 1),
        ];
        let mut desired = 5;
        let mut memory = Memory::default();
        let mut log = Vec::new();
        for t in (0..=12).map(|i| f64::from(i) * 10.0) {
            let in_flight = work.iter().rev().find(|w| w.0 <= t).map_or(0, |w| w.1);
            let in_flight = if t >= 60.0 { 0 } else { in_flight };
            let d = decide(&p, &sample(0, in_flight, desired, 0, desired), &memory, t);
            memory = d.memory.clone();
            if d.desired_tasks != desired {
                log.push((t, d.desired_tasks));
                desired = d.desired_tasks;
            }
            if d.reason == Reason::KeepingSpare {
                assert!(d.release_at.unwrap() > t, "{t}: {d:?}");
            }
        }
        // 3 spare from 10 s (last needed at 0 s) go at 30 s; the next (last needed at 20 s) at
        // 50 s; the last (last needed at 50 s) at 80 s.
        assert_eq!(log, vec![(30.0, 2), (50.0, 1), (80.0, 0)]);
    }

    /// The memory keeps only what can still be the most kept: one entry per
    /// count, counts falling, however many samples the keep-idle time holds.
    #[test]
    fn the_memory_keeps_what_can_still_be_the_most() {
        let p = policy();
        let mut memory = Memory::default();
        let mut last = None;
        for (t, in_flight) in [(0.0, 5), (10.0, 3), (20.0, 4), (30.0, 2)] {
            let d = decide(&p, &sample(0, in_flight, 6, 0, 6), &memory, t);
            memory = d.memory.clone();
            last = Some(d);
        }
        // At 30 s the 0 s sample is out of the window: the most kept since is 4 (at 20 s).
        let d = last.unwrap();
        assert_eq!((d.action, d.desired_tasks), (Action::ScaleIn, 4));
        assert_eq!(memory.recent, vec![(20.0, 4), (30.0, 2)]);
    }

    #[test]
    fn a_task_started_just_before_the_queue_drained_gets_its_chance() {
        let p = policy();
        // Raised to 3 at 0 s; the queue drains while they start (ready at 60 s).
        let mut memory = Memory::default();
        for t in [10.0, 20.0, 30.0, 40.0, 50.0] {
            let d = decide(&p, &sample(0, 1, 1, 2, 3), &memory, t);
            assert_eq!((d.desired_tasks, d.reason), (3, Reason::TasksStarting));
            memory = d.memory;
        }
        // Ready and idle: kept until the keep-idle time after the last sample that saw them
        // starting, then released.
        for t in [60.0, 70.0] {
            let d = decide(&p, &sample(0, 1, 3, 0, 3), &memory, t);
            assert_eq!(
                (d.desired_tasks, d.reason),
                (3, Reason::KeepingSpare),
                "{t}"
            );
            memory = d.memory;
        }
        let d = decide(&p, &sample(0, 1, 3, 0, 3), &memory, 80.0);
        assert_eq!((d.desired_tasks, d.action), (1, Action::ScaleIn));
    }

    /// The backlog function samples for 55 s of each minute, and EventBridge may start the next
    /// run some seconds late: the pause between two runs must not wipe the memory, or a
    /// keep-idle time longer than a run would never end.
    #[test]
    fn the_memory_outlives_the_pause_between_two_runs() {
        let p = Policy {
            metric_period_seconds: 5,
            keep_idle_startups: 1.0,
            ..policy()
        };
        let spare = sample(0, 0, 4, 0, 4);
        let mut memory = Memory::default();
        let mut released = None;
        // Runs start 20 s late, every minute: samples at 0..=50, then 80..=130, then 140..
        'runs: for start in [0.0, 80.0, 140.0] {
            for i in 0..=10 {
                let t = start + f64::from(i) * 5.0;
                let d = decide(&p, &spare, &memory, t);
                memory = d.memory;
                if d.action == Action::ScaleIn {
                    released = Some(t);
                    break 'runs;
                }
            }
        }
        assert_eq!(released, Some(80.0));
    }

    #[test]
    fn a_gap_in_the_samples_keeps_spare_tasks_longer_never_shorter() {
        let p = policy();
        let spare = sample(0, 0, 4, 0, 4);
        let d = held(&p, &spare, 20.0);
        assert_eq!(d.reason, Reason::KeepingSpare);
        // The next sample comes 100 s later (more than MAX_SAMPLE_GAP_SECONDS): the memory
        // starts again.
        let d = decide(&p, &spare, &d.memory, 120.0);
        assert_eq!(
            (d.reason, d.release_at),
            (Reason::KeepingSpare, Some(150.0))
        );
        let d = decide(&p, &spare, &d.memory, 130.0);
        let d = decide(&p, &spare, &d.memory, 140.0);
        assert_eq!(d.desired_tasks, 4);
        let d = decide(&p, &spare, &d.memory, 150.0);
        assert_eq!(d.desired_tasks, 0);
        // A clock that went backwards forgets too.
        let d = decide(&p, &spare, &d.memory, 5.0);
        assert_eq!(d.memory.since, Some(5.0));
        // keep_idle_startups 0: spare tasks go on the sample that sees them.
        let now = Policy {
            keep_idle_startups: 0.0,
            ..policy()
        };
        let d = decide(&now, &spare, &Memory::default(), 0.0);
        assert_eq!((d.desired_tasks, d.action), (0, Action::ScaleIn));
    }

    /// For random policies, samples and memories: a raise stays within the
    /// cap; a lowering happens only with nothing waiting or starting, never
    /// goes below the tasks that may hold jobs, the need or `min_tasks`, and
    /// the next sample of the same work never raises it again.
    #[test]
    fn scale_out_and_scale_in_never_fight() {
        let mut rng = crate::scaling::sim::Rng::new(11);
        let mut lowered = 0;
        for _ in 0..20_000 {
            let min_tasks = (rng.unit() * 3.0) as u32;
            let p = Policy {
                acceptable_latency_seconds: 1.0 + (rng.unit() * 600.0).floor(),
                average_job_seconds: 1.0 + (rng.unit() * 600.0).floor(),
                task_startup_seconds: 1.0 + (rng.unit() * 600.0).floor(),
                jobs_per_task: 1 + (rng.unit() * 8.0) as u32,
                min_tasks,
                max_tasks: min_tasks + 1 + (rng.unit() * 300.0) as u32,
                keep_idle_startups: (rng.unit() * 4.0).floor() / 2.0,
                ..policy()
            };
            let desired = (rng.unit() * f64::from(p.max_tasks + 1)) as u32;
            let running = if rng.unit() < 0.5 {
                desired
            } else {
                (rng.unit() * f64::from(desired + 3)) as u32
            };
            let pending = if rng.unit() < 0.7 {
                0
            } else {
                desired.saturating_sub(running)
            };
            let visible = if rng.unit() < 0.5 {
                0
            } else {
                (rng.unit() * 2000.0) as u32
            };
            let s = sample(
                visible,
                (rng.unit() * f64::from(running * p.jobs_per_task + 1)) as u32,
                running,
                pending,
                desired,
            );
            let d = held(&p, &s, p.keep_idle_seconds() + 10.0);
            match d.action {
                Action::ScaleOut => {
                    assert!(d.desired_tasks > desired && d.desired_tasks <= p.max_tasks)
                }
                Action::None => assert_eq!(d.desired_tasks, desired),
                Action::ScaleIn => {
                    lowered += 1;
                    let n = d.desired_tasks;
                    assert!(
                        n < desired && s.visible == 0 && s.pending_tasks == 0,
                        "{s:?} → {n}"
                    );
                    assert!(n >= s.running_tasks.min(s.in_flight) && n >= p.min_tasks);
                    assert!(n >= needed_tasks(&p, &s), "{s:?} → {n}");
                    // ECS stops idle tasks first; those holding jobs are protected.
                    let after = Sample {
                        desired_tasks: n,
                        running_tasks: s.running_tasks.min(n),
                        ..s
                    };
                    let next = decide(&p, &after, &d.memory, 1e6);
                    assert_ne!(next.action, Action::ScaleOut, "{s:?} scaled in to {n}");
                }
            }
        }
        assert!(lowered > 1000, "{lowered}");
    }

    #[test]
    fn a_replay_explains_each_published_sample() {
        let p = policy();
        let at = |t: f64, in_flight: u32, desired: u32| {
            let m = sample(0, in_flight, desired, 0, desired).metrics(&p);
            assert_eq!(m.sample(), sample(0, in_flight, desired, 0, desired));
            (t, m.sample())
        };
        // Published samples: the count the function set shows on the next one.
        let samples = [
            at(0.0, 4, 4),
            at(10.0, 1, 4),
            at(20.0, 1, 4),
            at(30.0, 1, 4),
            at(40.0, 1, 1),
        ];
        let reasons: Vec<(Reason, u32)> = replay(&p, &samples)
            .iter()
            .map(|d| (d.reason, d.desired_tasks))
            .collect();
        assert_eq!(
            reasons,
            vec![
                (Reason::Matched, 4),
                (Reason::KeepingSpare, 4),
                (Reason::KeepingSpare, 4),
                (Reason::SpareReleased, 1),
                (Reason::Matched, 1),
            ]
        );
    }

    #[test]
    fn names_match_their_json_tags() {
        for a in [Action::None, Action::ScaleOut, Action::ScaleIn] {
            assert_eq!(serde_json::to_value(a).unwrap(), a.name());
        }
        for r in [
            Reason::WorkNeedsMore,
            Reason::JobsWaiting,
            Reason::TasksStarting,
            Reason::KeepingSpare,
            Reason::SpareReleased,
            Reason::Matched,
        ] {
            assert_eq!(serde_json::to_value(r).unwrap(), r.name());
        }
    }
}
