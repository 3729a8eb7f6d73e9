//! The scalers compared by `sluice simulate`: sluice's policy, three anchors
//! run with their documented defaults, and the oracle. Sources for every
//! default are in `scaling/README.md`.

use std::collections::VecDeque;

use serde::Serialize;

use super::super::alarm::{backstop_datapoint, AlarmState, MissingData, BACKSTOP_MINUTES};
use super::super::decide::{decide, should_nudge_from_zero, Memory, Sample};
use super::super::policy::Policy;
use super::engine::{Command, Scaler, View};
use super::workload::Rng;

const EPSILON: f64 = 1e-9;

/// The AWS sample (aws-samples Fargate autoscaling pipeline, also in
/// aws-ia/ecs-blueprints `queue-processing`): an EventBridge rule runs a
/// Lambda every 2 minutes that starts `min(visible, max − running, 10)`
/// standalone tasks (`RunTask` starts at most 10 per call); each task drains
/// the queue and exits when a receive (4 s long poll) comes back empty.
pub mod aws_sample {
    /// Schedule of the Lambda, seconds.
    pub const PERIOD_SECONDS: f64 = 120.0;
    /// Most tasks one run starts.
    pub const MAX_STARTS_PER_RUN: u32 = 10;
    /// Long-poll wait of the worker's receive; an empty one ends the task.
    pub const EMPTY_RECEIVE_SECONDS: f64 = 4.0;
}

/// The widely copied Terraform module (dailymuse
/// terraform-aws-ecs-queue-backlog-autoscaling): a Lambda every minute
/// publishes `QueueBacklog = visible / (desired × est_msgs_per_sec)` and
/// `QueueRequiresConsumer` into `AWS/ECS`; target tracking on `QueueBacklog`
/// plus a step policy 0 → 1 on `QueueRequiresConsumer`.
pub mod terraform_module {
    /// `lambda_invocation_interval`: `rate(1 minute)`.
    pub const PERIOD_SECONDS: f64 = 60.0;
    /// `est_msgs_per_sec` default of the Lambda (an integer, so at least 1).
    pub const MESSAGES_PER_SECOND: f64 = 1.0;
    /// `queue_backlog_target_value` of the module's example (no module default).
    pub const TARGET_BACKLOG_SECONDS: f64 = 600.0;
    /// `scaleout_cooldown` and `scalein_cooldown` defaults.
    pub const COOLDOWN_SECONDS: f64 = 60.0;
    /// `rampup_capacity` default.
    pub const RAMPUP_CAPACITY: u32 = 1;
    /// Target tracking's high alarm: 3 of 3 one-minute datapoints above target.
    pub const HIGH_DATAPOINTS: u32 = 3;
    /// Target tracking's low alarm: 15 of 15 datapoints below 90 % of target.
    pub const LOW_DATAPOINTS: u32 = 15;
    /// Low alarm threshold as a fraction of the target.
    pub const LOW_FRACTION: f64 = 0.9;
}

/// KEDA's `aws-sqs-queue` scaler with an HPA, all defaults.
pub mod keda {
    /// `queueLength`: messages per replica.
    pub const QUEUE_LENGTH: f64 = 5.0;
    /// `pollingInterval`: activation checks (0 ↔ 1).
    pub const POLLING_SECONDS: f64 = 30.0;
    /// `cooldownPeriod`: inactive this long before scaling to 0.
    pub const COOLDOWN_SECONDS: f64 = 300.0;
    /// HPA sync period (`--horizontal-pod-autoscaler-sync-period`).
    pub const HPA_SYNC_SECONDS: f64 = 15.0;
    /// HPA tolerance.
    pub const HPA_TOLERANCE: f64 = 0.1;
    /// HPA default scale-down stabilization window.
    pub const SCALE_DOWN_STABILIZATION_SECONDS: f64 = 300.0;
    /// HPA default scale-up: the larger of +4 pods and +100 % per 15 s.
    pub const SCALE_UP_PODS: u32 = 4;
}

/// sluice: the backlog Lambda samples every `metric_period_seconds` and sets
/// the desired count with [`decide`], the one controller of the count in both
/// directions; submit nudges the service from 0; the backstop alarm parks an
/// idle fleet whose controller published nothing for [`BACKSTOP_MINUTES`].
/// A fraction of the samples can be dropped (a late or failed run publishes
/// nothing and decides nothing), and the controller can die for good.
#[derive(Debug, Clone)]
pub struct SluiceScaler {
    policy: Policy,
    period: f64,
    next_sample: f64,
    memory: Memory,
    last_nudge: Option<f64>,
    missed_fraction: f64,
    rng: Rng,
    dies_at: Option<f64>,
    next_minute: f64,
    /// Samples published, and whether the queue held any job, in the current minute.
    minute_samples: u32,
    minute_busy: bool,
    backstop: AlarmState,
    backstop_actions: u32,
}

impl SluiceScaler {
    /// Samples at `phase × period + k × period`.
    pub fn new(policy: &Policy, phase: f64) -> SluiceScaler {
        SluiceScaler::with_missed_samples(policy, phase, 0.0, 1)
    }

    /// As [`SluiceScaler::new`], dropping each sample with probability
    /// `missed_fraction` (seeded).
    pub fn with_missed_samples(
        policy: &Policy,
        phase: f64,
        missed_fraction: f64,
        seed: u64,
    ) -> SluiceScaler {
        let period = f64::from(policy.metric_period_seconds);
        SluiceScaler {
            policy: policy.clone(),
            period,
            next_sample: phase * period,
            memory: Memory::default(),
            last_nudge: None,
            missed_fraction: missed_fraction.clamp(0.0, 1.0),
            rng: Rng::new(seed),
            dies_at: None,
            next_minute: 60.0,
            minute_samples: 0,
            minute_busy: false,
            backstop: AlarmState::default(),
            backstop_actions: 0,
        }
    }

    /// The same scaler whose backlog function stops for good at `at` (the submit nudge and the
    /// backstop alarm go on).
    pub fn dying_at(mut self, at: f64) -> SluiceScaler {
        self.dies_at = Some(at);
        self
    }

    /// How often the backstop alarm set the count.
    pub fn backstop_actions(&self) -> u32 {
        self.backstop_actions
    }

    fn alive(&self, now: f64) -> bool {
        self.dies_at.is_none_or(|t| now < t)
    }
}

fn sample_of(view: &View) -> Sample {
    Sample {
        visible: view.visible,
        in_flight: view.in_flight,
        running_tasks: view.running_tasks,
        pending_tasks: view.pending_tasks,
        desired_tasks: view.desired_tasks,
    }
}

impl Scaler for SluiceScaler {
    fn next_wakeup(&self) -> Option<f64> {
        Some(self.next_sample.min(self.next_minute))
    }

    fn wake(&mut self, view: &View) -> Vec<Command> {
        self.minute_busy |= view.visible + view.in_flight > 0;
        let mut commands = Vec::new();
        let mut desired = view.desired_tasks;
        if view.now + EPSILON >= self.next_minute {
            // The backstop, on the minute that just ended.
            let point = backstop_datapoint(self.minute_samples, u32::from(self.minute_busy), 0);
            let acts = self.backstop.evaluate(
                Some(point <= 0.0),
                BACKSTOP_MINUTES,
                MissingData::Missing,
                view.now,
            );
            if acts && desired != self.policy.min_tasks {
                desired = self.policy.min_tasks;
                self.backstop_actions += 1;
                commands.push(Command::SetDesired(desired));
            }
            self.next_minute += 60.0;
            self.minute_samples = 0;
            self.minute_busy = view.visible + view.in_flight > 0;
        }
        if view.now + EPSILON >= self.next_sample {
            self.next_sample += self.period;
            if self.alive(view.now) && self.rng.unit() >= self.missed_fraction {
                let sample = Sample {
                    desired_tasks: desired,
                    ..sample_of(view)
                };
                let decision = decide(&self.policy, &sample, &self.memory, view.now);
                self.memory = decision.memory;
                self.minute_samples += 1;
                if decision.desired_tasks != desired {
                    commands.push(Command::SetDesired(decision.desired_tasks));
                }
            }
        }
        commands
    }

    fn on_arrival(&mut self, view: &View) -> Vec<Command> {
        self.minute_busy = true;
        let interval = self.policy.nudge_interval_seconds();
        if should_nudge_from_zero(view.desired_tasks, self.last_nudge, view.now, interval) {
            self.last_nudge = Some(view.now);
            return vec![Command::SetDesired(self.policy.from_zero_capacity())];
        }
        Vec::new()
    }
}

/// The AWS sample's scheduled `RunTask` Lambda.
#[derive(Debug, Clone)]
pub struct AwsSampleScaler {
    max_tasks: u32,
    next_run: f64,
}

impl AwsSampleScaler {
    /// Runs at `phase × 120 s + k × 120 s`, capped at `max_tasks`.
    pub fn new(max_tasks: u32, phase: f64) -> AwsSampleScaler {
        AwsSampleScaler {
            max_tasks,
            next_run: phase * aws_sample::PERIOD_SECONDS,
        }
    }
}

impl Scaler for AwsSampleScaler {
    fn next_wakeup(&self) -> Option<f64> {
        Some(self.next_run)
    }

    fn wake(&mut self, view: &View) -> Vec<Command> {
        self.next_run += aws_sample::PERIOD_SECONDS;
        if view.visible == 0 {
            return Vec::new();
        }
        // `ListTasks(desiredStatus=RUNNING)` counts starting tasks too.
        let running = view.running_tasks + view.pending_tasks;
        let starts = view
            .visible
            .min(self.max_tasks.saturating_sub(running))
            .min(aws_sample::MAX_STARTS_PER_RUN);
        if starts == 0 {
            Vec::new()
        } else {
            vec![Command::RunTasks(starts)]
        }
    }

    fn manages_service(&self) -> bool {
        false
    }

    fn idle_exit_after(&self) -> Option<f64> {
        Some(aws_sample::EMPTY_RECEIVE_SECONDS)
    }
}

#[derive(Debug, Clone, Copy)]
struct TerraformSample {
    backlog_seconds: Option<f64>,
    requires_consumer: bool,
}

/// How a user configures the Terraform module: `est_msgs_per_sec` (an
/// integer: the Lambda reads it with `int()`) and the target tracking's
/// `queue_backlog_target_value` (seconds of backlog per task, as the module
/// computes them).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct TerraformTuning {
    /// `est_msgs_per_sec`.
    pub messages_per_second: f64,
    /// `queue_backlog_target_value`.
    pub target_backlog_seconds: f64,
}

impl TerraformTuning {
    /// The module's documented values: 1 message/s, the example's 600 s.
    pub const DEFAULTS: TerraformTuning = TerraformTuning {
        messages_per_second: terraform_module::MESSAGES_PER_SECOND,
        target_backlog_seconds: terraform_module::TARGET_BACKLOG_SECONDS,
    };

    /// What a competent user sets for the policy's job duration, concurrency
    /// and acceptable latency: `est_msgs_per_sec` = a task's real rate,
    /// rounded down to an integer of at least 1 (the Lambda's `int()`), and
    /// the target chosen so that the module's backlog seconds at the target
    /// are the acceptable latency in real seconds: `latency × rate / est`.
    pub fn tuned(policy: &Policy) -> TerraformTuning {
        let rate = f64::from(policy.jobs_per_task) / policy.average_job_seconds;
        let est = rate.floor().max(1.0);
        TerraformTuning {
            messages_per_second: est,
            target_backlog_seconds: policy.acceptable_latency_seconds * rate / est,
        }
    }
}

/// The Terraform module's target tracking and 0 → 1 step policy.
#[derive(Debug, Clone)]
pub struct TerraformModuleScaler {
    tuning: TerraformTuning,
    min_tasks: u32,
    max_tasks: u32,
    next_sample: f64,
    next_evaluation: f64,
    latest: Option<TerraformSample>,
    requires_consumer: AlarmState,
    high: AlarmState,
    low: AlarmState,
    scale_in_cooldown_until: Option<f64>,
}

impl TerraformModuleScaler {
    /// Lambda at `phase × 60 s + k × 60 s`; alarms evaluate on the minute.
    pub fn new(min_tasks: u32, max_tasks: u32, phase: f64) -> TerraformModuleScaler {
        TerraformModuleScaler::with_tuning(min_tasks, max_tasks, phase, TerraformTuning::DEFAULTS)
    }

    /// The module configured with `tuning`.
    pub fn with_tuning(
        min_tasks: u32,
        max_tasks: u32,
        phase: f64,
        tuning: TerraformTuning,
    ) -> TerraformModuleScaler {
        let period = terraform_module::PERIOD_SECONDS;
        let next_sample = phase * period;
        TerraformModuleScaler {
            tuning,
            min_tasks,
            max_tasks,
            next_sample,
            next_evaluation: ((next_sample / period).floor() + 1.0) * period,
            latest: None,
            requires_consumer: AlarmState::default(),
            high: AlarmState::default(),
            low: AlarmState::default(),
            scale_in_cooldown_until: None,
        }
    }

    fn evaluate(&mut self, now: f64, capacity: u32, sample: TerraformSample) -> Option<u32> {
        use terraform_module::*;
        let mut proposals: Vec<u32> = Vec::new();
        if self.requires_consumer.evaluate(
            Some(sample.requires_consumer),
            1,
            MissingData::Missing,
            now,
        ) && capacity != RAMPUP_CAPACITY
        {
            proposals.push(RAMPUP_CAPACITY.clamp(self.min_tasks, self.max_tasks));
        }
        let metric = sample.backlog_seconds;
        let target = self.tuning.target_backlog_seconds;
        let high = self.high.evaluate(
            metric.map(|m| m > target),
            HIGH_DATAPOINTS,
            MissingData::Missing,
            now,
        );
        let low = self.low.evaluate(
            metric.map(|m| m < LOW_FRACTION * target),
            LOW_DATAPOINTS,
            MissingData::Missing,
            now,
        );
        // Target tracking sets capacity in proportion to metric / target.
        let proportional = |m: f64| {
            let wanted = (f64::from(capacity) * m / target - EPSILON).ceil();
            (wanted.max(0.0) as u32).clamp(self.min_tasks, self.max_tasks)
        };
        if let (true, Some(m)) = (high, metric) {
            let wanted = proportional(m);
            if capacity > 0 && wanted > capacity {
                proposals.push(wanted);
            }
        }
        let cooling = self
            .scale_in_cooldown_until
            .is_some_and(|u| now + EPSILON < u);
        if let (true, Some(m), false) = (low, metric, cooling) {
            let wanted = proportional(m);
            if wanted < capacity {
                proposals.push(wanted);
            }
        }
        let chosen = proposals.into_iter().max()?;
        if chosen < capacity {
            self.scale_in_cooldown_until = Some(now + COOLDOWN_SECONDS);
        } else {
            self.scale_in_cooldown_until = None;
        }
        Some(chosen)
    }
}

impl Scaler for TerraformModuleScaler {
    fn next_wakeup(&self) -> Option<f64> {
        Some(self.next_sample.min(self.next_evaluation))
    }

    fn wake(&mut self, view: &View) -> Vec<Command> {
        let mut commands = Vec::new();
        if view.now + EPSILON >= self.next_evaluation {
            if let Some(sample) = self.latest.take() {
                if let Some(desired) = self.evaluate(view.now, view.desired_tasks, sample) {
                    if desired != view.desired_tasks {
                        commands.push(Command::SetDesired(desired));
                    }
                }
            }
            self.next_evaluation += terraform_module::PERIOD_SECONDS;
        }
        if view.now + EPSILON >= self.next_sample {
            let desired = view.desired_tasks;
            let visible = f64::from(view.visible);
            // The Lambda publishes no QueueBacklog with messages and no task.
            let backlog_seconds = if desired > 0 {
                Some(visible / (f64::from(desired) * self.tuning.messages_per_second))
            } else if view.visible == 0 {
                Some(0.0)
            } else {
                None
            };
            self.latest = Some(TerraformSample {
                backlog_seconds,
                requires_consumer: desired == 0 && view.visible > 0,
            });
            self.next_sample += terraform_module::PERIOD_SECONDS;
        }
        commands
    }
}

/// KEDA's `queueLength` a competent user sets for the policy: the messages
/// one replica handles within the acceptable latency, counting those it runs
/// (KEDA counts in-flight messages too): `jobs_per_task × (1 + latency /
/// job)`, rounded down, at least 1.
pub fn keda_tuned_queue_length(policy: &Policy) -> f64 {
    let per = f64::from(policy.jobs_per_task)
        * (1.0 + policy.acceptable_latency_seconds / policy.average_job_seconds);
    per.floor().max(1.0)
}

/// KEDA's `aws-sqs-queue` scaler and the HPA it drives.
#[derive(Debug, Clone)]
pub struct KedaScaler {
    queue_length: f64,
    min_tasks: u32,
    max_tasks: u32,
    next_poll: f64,
    next_sync: f64,
    last_active: Option<f64>,
    recommendations: VecDeque<(f64, u32)>,
}

impl KedaScaler {
    /// Polls at `phase × 30 s + k × 30 s`; the HPA syncs at `phase × 15 s + k × 15 s`.
    /// `min_tasks` is `minReplicaCount` (KEDA's default is 0).
    pub fn new(min_tasks: u32, max_tasks: u32, phase: f64) -> KedaScaler {
        KedaScaler::with_queue_length(min_tasks, max_tasks, phase, keda::QUEUE_LENGTH)
    }

    /// KEDA with another `queueLength`.
    pub fn with_queue_length(
        min_tasks: u32,
        max_tasks: u32,
        phase: f64,
        queue_length: f64,
    ) -> KedaScaler {
        KedaScaler {
            queue_length: queue_length.max(1.0),
            min_tasks: min_tasks.min(max_tasks),
            max_tasks,
            next_poll: phase * keda::POLLING_SECONDS,
            next_sync: phase * keda::HPA_SYNC_SECONDS,
            last_active: None,
            recommendations: VecDeque::new(),
        }
    }

    fn hpa(&mut self, now: f64, current: u32, messages: u32) -> u32 {
        use keda::*;
        let total = f64::from(messages);
        let ratio = total / (self.queue_length * f64::from(current));
        let raw = if (ratio - 1.0).abs() <= HPA_TOLERANCE {
            current
        } else {
            (total / self.queue_length - EPSILON).ceil().max(0.0) as u32
        }
        .clamp(self.min_tasks.max(1), self.max_tasks);
        self.recommendations.push_back((now, raw));
        while self
            .recommendations
            .front()
            .is_some_and(|&(t, _)| now - t > SCALE_DOWN_STABILIZATION_SECONDS + EPSILON)
        {
            self.recommendations.pop_front();
        }
        let down = self
            .recommendations
            .iter()
            .map(|&(_, r)| r)
            .max()
            .unwrap_or(raw);
        let next = if raw > current {
            raw.min((current + SCALE_UP_PODS).max(current * 2))
        } else if down < current {
            down
        } else {
            current
        };
        next.clamp(self.min_tasks.max(1), self.max_tasks)
    }
}

impl Scaler for KedaScaler {
    fn next_wakeup(&self) -> Option<f64> {
        Some(self.next_poll.min(self.next_sync))
    }

    fn wake(&mut self, view: &View) -> Vec<Command> {
        // scaleOnInFlight defaults to true: visible + in-flight.
        let messages = view.visible + view.in_flight;
        let mut desired = view.desired_tasks;
        if view.now + EPSILON >= self.next_poll {
            if messages > 0 {
                self.last_active = Some(view.now);
                if desired == 0 {
                    desired = 1;
                    self.recommendations.clear();
                }
            } else if desired > self.min_tasks
                && self.min_tasks == 0
                && self
                    .last_active
                    .is_none_or(|t| view.now - t + EPSILON >= keda::COOLDOWN_SECONDS)
            {
                desired = 0;
                self.recommendations.clear();
            }
            self.next_poll += keda::POLLING_SECONDS;
        }
        if desired < self.min_tasks {
            desired = self.min_tasks;
        }
        if view.now + EPSILON >= self.next_sync {
            if desired >= 1 {
                desired = self.hpa(view.now, desired, messages);
            }
            self.next_sync += keda::HPA_SYNC_SECONDS;
        }
        if desired == view.desired_tasks {
            Vec::new()
        } else {
            vec![Command::SetDesired(desired)]
        }
    }
}

/// The physical limit under the same model: the moment a job arrives it
/// requests one task per queued or running job (per `jobs_per_task` slots),
/// up to the cap, with the same start-up delay. An idle task is kept for one
/// start-up delay (what a fresh start would cost) and then released.
#[derive(Debug, Clone)]
pub struct OracleScaler {
    max_tasks: u32,
    jobs_per_task: u32,
    keep_warm_seconds: f64,
}

impl OracleScaler {
    /// An oracle capped at `max_tasks`.
    pub fn new(max_tasks: u32, jobs_per_task: u32, startup_delay_seconds: f64) -> OracleScaler {
        OracleScaler {
            max_tasks,
            jobs_per_task: jobs_per_task.max(1),
            keep_warm_seconds: startup_delay_seconds,
        }
    }
}

impl Scaler for OracleScaler {
    fn next_wakeup(&self) -> Option<f64> {
        None
    }

    fn wake(&mut self, _view: &View) -> Vec<Command> {
        Vec::new()
    }

    fn on_arrival(&mut self, view: &View) -> Vec<Command> {
        let jobs = view.visible + view.in_flight;
        let need = jobs.div_ceil(self.jobs_per_task).min(self.max_tasks);
        let have = view.running_tasks + view.pending_tasks;
        if need > have {
            vec![Command::RunTasks(need - have)]
        } else {
            Vec::new()
        }
    }

    fn manages_service(&self) -> bool {
        false
    }

    fn idle_exit_after(&self) -> Option<f64> {
        Some(self.keep_warm_seconds)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view(
        now: f64,
        visible: u32,
        in_flight: u32,
        running: u32,
        pending: u32,
        desired: u32,
    ) -> View {
        View {
            now,
            visible,
            in_flight,
            running_tasks: running,
            pending_tasks: pending,
            desired_tasks: desired,
        }
    }

    #[test]
    fn aws_sample_starts_at_most_ten_and_never_past_the_cap() {
        // (visible, running+pending, starts)
        let cases = [
            (0, 0, 0),
            (3, 0, 3),
            (50, 0, 10),
            (50, 15, 5),
            (50, 20, 0),
            (50, 25, 0),
        ];
        for (visible, running, want) in cases {
            let mut s = AwsSampleScaler::new(20, 0.0);
            let got = s.wake(&view(0.0, visible, 0, running, 0, 0));
            let starts = got
                .iter()
                .map(|c| match c {
                    Command::RunTasks(n) => *n,
                    _ => 0,
                })
                .sum::<u32>();
            assert_eq!(starts, want, "visible {visible}, running {running}");
            assert_eq!(s.next_wakeup(), Some(120.0));
        }
    }

    #[test]
    fn keda_activates_on_poll_and_follows_queue_length() {
        let mut k = KedaScaler::new(0, 20, 0.0);
        // t = 0: poll + sync. 12 messages, nothing running → 1, then HPA: ceil(12/5) = 3.
        assert_eq!(
            k.wake(&view(0.0, 12, 0, 0, 0, 0)),
            vec![Command::SetDesired(3)]
        );
        // 15 s: HPA only; 60 messages → 12 wanted, limited to max(3 + 4, 6) = 7.
        assert_eq!(
            k.wake(&view(15.0, 55, 5, 3, 0, 3)),
            vec![Command::SetDesired(7)]
        );
        // Scale-down waits out the 300 s stabilization window.
        let mut t = 30.0;
        let mut desired = 7;
        while t < 330.0 {
            let c = k.wake(&view(t, 0, 1, desired, 0, desired));
            if let Some(Command::SetDesired(n)) = c.first() {
                desired = *n;
            }
            t = k.next_wakeup().unwrap();
        }
        assert_eq!(desired, 7, "still stabilizing at {t}");
        let c = k.wake(&view(t, 0, 1, 7, 0, 7));
        assert_eq!(c, vec![Command::SetDesired(1)], "at {t}");
    }

    #[test]
    fn keda_scales_to_zero_after_its_cooldown() {
        let mut k = KedaScaler::new(0, 20, 0.0);
        k.wake(&view(0.0, 1, 0, 0, 0, 0));
        let mut desired = 1;
        let mut zero_at = None;
        while zero_at.is_none() {
            let t = k.next_wakeup().unwrap();
            assert!(t < 1000.0);
            if let Some(Command::SetDesired(n)) =
                k.wake(&view(t, 0, 0, desired, 0, desired)).first()
            {
                desired = *n;
                if desired == 0 {
                    zero_at = Some(t);
                }
            }
        }
        assert_eq!(zero_at, Some(300.0));
    }

    #[test]
    fn terraform_module_needs_a_minute_alarm_then_ramps_to_one() {
        let mut tf = TerraformModuleScaler::new(0, 20, 0.5);
        // Lambda at 30 s sees 5 messages and no task; the alarm acts at 60 s.
        assert!(tf.wake(&view(30.0, 5, 0, 0, 0, 0)).is_empty());
        assert_eq!(
            tf.wake(&view(60.0, 5, 0, 0, 0, 0)),
            vec![Command::SetDesired(1)]
        );
    }

    #[test]
    fn oracle_requests_one_task_per_job_up_to_the_cap() {
        let mut o = OracleScaler::new(20, 1, 60.0);
        assert_eq!(
            o.on_arrival(&view(0.0, 1, 0, 0, 0, 0)),
            vec![Command::RunTasks(1)]
        );
        assert_eq!(
            o.on_arrival(&view(0.0, 5, 2, 3, 1, 0)),
            vec![Command::RunTasks(3)]
        );
        assert!(o.on_arrival(&view(0.0, 500, 0, 12, 8, 0)).is_empty());
        let mut two = OracleScaler::new(20, 2, 60.0);
        assert_eq!(
            two.on_arrival(&view(0.0, 5, 0, 0, 0, 0)),
            vec![Command::RunTasks(3)]
        );
    }

    /// The anchors as a competent user tunes them for the policy (the rows the goal is stated
    /// against), against the arithmetic of each tool.
    #[test]
    fn tuned_anchors_follow_the_job_duration_and_the_latency() {
        let base = Policy::builtin().unwrap();
        // (latency, job, jobs per task, est_msgs_per_sec, target, queueLength)
        let cases = [
            (10.0, 10.0, 1, 1.0, 1.0, 2.0),
            (10.0, 1.0, 1, 1.0, 10.0, 11.0),
            (10.0, 0.25, 1, 4.0, 10.0, 41.0),
            (10.0, 600.0, 1, 1.0, 10.0 / 600.0, 1.0),
            (30.0, 60.0, 4, 1.0, 2.0, 6.0),
            (60.0, 10.0, 2, 1.0, 12.0, 14.0),
        ];
        for (latency, job, k, est, target, queue_length) in cases {
            let p = Policy {
                acceptable_latency_seconds: latency,
                average_job_seconds: job,
                jobs_per_task: k,
                ..base.clone()
            };
            let tf = TerraformTuning::tuned(&p);
            assert_eq!(tf.messages_per_second, est, "{latency}/{job}×{k}");
            assert!(
                (tf.target_backlog_seconds - target).abs() < 1e-9,
                "{latency}/{job}×{k}: {tf:?}"
            );
            // At the target, the module's backlog seconds mean the latency in real seconds:
            // visible / (desired × est) = target ⇔ visible × job / (desired × k) = latency.
            let visible_per_task = tf.target_backlog_seconds * tf.messages_per_second;
            assert!((visible_per_task * job / f64::from(k) - latency).abs() < 1e-6);
            assert_eq!(
                keda_tuned_queue_length(&p),
                queue_length,
                "{latency}/{job}×{k}"
            );
        }
        assert_ne!(TerraformTuning::tuned(&base), TerraformTuning::DEFAULTS);
    }

    #[test]
    fn sluice_nudges_once_per_interval_on_submit() {
        let policy = Policy::builtin().unwrap();
        let mut s = SluiceScaler::new(&policy, 0.0);
        assert_eq!(
            s.on_arrival(&view(1.0, 1, 0, 0, 0, 0)),
            vec![Command::SetDesired(policy.from_zero_capacity())]
        );
        assert!(s.on_arrival(&view(1.5, 2, 0, 0, 0, 0)).is_empty());
        assert!(s.on_arrival(&view(2.0, 3, 0, 0, 1, 1)).is_empty());
    }
}
