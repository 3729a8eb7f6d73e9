//! The backlog sampler behind the `backlog` function: every `metric_period_seconds` it reads the
//! queue and the worker service, sets the desired count with the one controller
//! ([`crate::scaling::decide`]: up to the capacity the work needs, down once spare tasks stayed
//! unused for `keep_idle_startups` start-ups), and publishes the metrics the dashboard and the loop's
//! health alarms read.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tracing::{info, warn};

use crate::aws::DisplayErrorContext;
use crate::cloudwatch::{Dimensions, Publisher};
use crate::config::{number_or, required, ConfigError, ProcessEnv, Source};
use crate::ecs::{Service, TaskCounts};
use crate::env;
use crate::nudge::{with_lease, SETTLE};
use crate::pipeline::{Known, Pipeline};
use crate::queue::{Depth, JobQueue};
use crate::scaling::{decide, decide_paused, Action, Decision, Memory, Metrics, Policy, Sample};
use crate::store::JobStore;
use crate::time::Millis;

/// One invocation runs every minute; it samples until this much of the minute has passed.
pub const WINDOW: Duration = Duration::from_secs(55);

#[derive(Debug, Clone)]
pub struct BacklogConfig {
    pub queue_url: String,
    pub cluster: String,
    pub service: String,
    pub policy: Policy,
    pub sample_interval: Duration,
    /// The jobs table, where the raise takes the scaling lease the submit-time nudge takes too.
    pub table_name: Option<String>,
    /// The dead-letter queue and the jobs table, to reconcile stranded jobs on every run.
    pub dead_letters: Option<DeadLetterConfig>,
    /// Which targets the webhooks delivered on every run (with the jobs table) may reach.
    pub webhook_policy: crate::webhook::TargetPolicy,
    /// The payload bucket, whose output files pipeline jobs' sinks get copies of.
    pub payload_bucket: Option<String>,
    /// The SNS topics and EventBridge bus the ends of the jobs marked so are published to.
    pub events: crate::events::EventTargets,
    /// Days a finished job's record is kept: a pending announcement keeps it that long past its
    /// next attempt.
    pub retention: Duration,
}

/// Where the reconciler looks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetterConfig {
    pub dlq_url: String,
    pub table_name: String,
    pub retention: Duration,
}

impl BacklogConfig {
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_source(&ProcessEnv)
    }

    pub fn from_source(src: &(impl Source + ?Sized)) -> Result<Self, ConfigError> {
        let policy = match src.get(env::SCALING_POLICY) {
            None => Policy::builtin(),
            Some(text) => Policy::from_json(&text),
        }
        .map_err(|e| ConfigError::Invalid {
            name: env::SCALING_POLICY,
            value: "(the policy JSON)".into(),
            reason: e.to_string(),
        })?;
        let period = u64::from(policy.metric_period_seconds);
        Ok(BacklogConfig {
            queue_url: required(src, env::QUEUE_URL, "set it to the jobs queue's URL")?,
            cluster: required(src, env::CLUSTER, "set it to the workers' ECS cluster")?,
            service: required(src, env::SERVICE, "set it to the workers' ECS service")?,
            // The policy's period is the one the alarms assume; the variable only overrides it
            // for local runs.
            sample_interval: Duration::from_secs(number_or(
                src,
                env::SAMPLE_INTERVAL_SECONDS,
                period,
                1..=60,
            )?),
            policy,
            webhook_policy: crate::config::webhook_policy(src)?,
            table_name: src.get(env::TABLE_NAME),
            payload_bucket: src.get(env::PAYLOAD_BUCKET),
            events: crate::config::event_targets(src)?,
            retention: Duration::from_secs(86_400)
                * number_or(src, env::RETENTION_DAYS, 7u32, 1..=3650)?,
            dead_letters: match src.get(env::DLQ_URL) {
                None => None,
                Some(dlq_url) => Some(DeadLetterConfig {
                    dlq_url,
                    table_name: required(
                        src,
                        env::TABLE_NAME,
                        "set it to the jobs table's name, or unset SLUICE_DLQ_URL",
                    )?,
                    retention: Duration::from_secs(86_400)
                        * number_or(src, env::RETENTION_DAYS, 7u32, 1..=3650)?,
                }),
            },
        })
    }
}

/// The sample of a queue and a service. Pure.
pub fn sample_of(depth: Depth, tasks: TaskCounts) -> Sample {
    Sample {
        visible: depth.visible,
        in_flight: depth.in_flight,
        running_tasks: tasks.running,
        pending_tasks: tasks.pending,
        desired_tasks: tasks.desired,
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SampleError {
    #[error("could not read the queue")]
    Queue(#[source] crate::queue::QueueError),
    #[error("could not read the service")]
    Service(#[source] crate::ecs::EcsError),
    #[error("could not publish the metrics")]
    Publish(#[source] crate::cloudwatch::PublishError),
    #[error("could not set the service's desired count")]
    Raise(#[source] crate::ecs::EcsError),
    #[error("could not take the scaling lease")]
    Lease(#[source] crate::store::StoreError),
}

/// Reads the queue and the service and publishes their metrics.
#[derive(Debug, Clone)]
pub struct Sampler {
    pub queue: JobQueue,
    pub service: Service,
    pub publisher: Publisher,
    pub dims: Dimensions,
    /// The policy the controller follows.
    pub policy: Policy,
    /// Where a change of the count takes its lease; without one (local runs) it writes unguarded.
    pub lease: Option<JobStore>,
    /// What the controller remembers between samples. It lives as long as the function's
    /// execution environment, across runs; a fresh one starts empty and keeps spare tasks
    /// `keep_idle_startups` start-ups longer, never less ([`Memory`]).
    pub memory: Arc<Mutex<Memory>>,
    /// The pipeline's state, read on every sample (the last one known when a read fails):
    /// while paused the count is held at `min_tasks` and `Paused` is published as 1. Without
    /// one (no table), the pipeline counts as running.
    pub pipeline: Option<Arc<Known>>,
}

impl Sampler {
    pub fn from_sdk(aws: &aws_config::SdkConfig, config: &BacklogConfig) -> Self {
        let queue = JobQueue::from_sdk(aws, &config.queue_url);
        let dims = Dimensions {
            queue_name: queue.name().to_owned(),
            service_name: config.service.clone(),
        };
        Sampler {
            queue,
            service: Service::from_sdk(aws, &config.cluster, &config.service),
            publisher: Publisher::from_sdk(aws, &config.policy.namespace),
            dims,
            policy: config.policy.clone(),
            lease: config
                .table_name
                .as_ref()
                .map(|t| JobStore::from_sdk(aws, t)),
            memory: Arc::default(),
            pipeline: config.table_name.as_ref().map(|t| {
                Arc::new(Known::new(
                    Pipeline::of(&JobStore::from_sdk(aws, t)),
                    Duration::ZERO,
                ))
            }),
        }
    }

    /// Reads the queue and the service at once.
    pub async fn read(&self) -> Result<Sample, SampleError> {
        let (depth, tasks) = tokio::join!(self.queue.depth(), self.service.counts());
        Ok(sample_of(
            depth.map_err(SampleError::Queue)?,
            tasks.map_err(SampleError::Service)?,
        ))
    }

    /// One sample: the controller decides, the count is set if it changes, and the sample is
    /// published. A sample that cannot be read publishes nothing. A write that fails still
    /// publishes the sample, then returns the write's error ([`SampleError::is_raise`]): the
    /// run reports it, so a scaling loop that cannot set the count fails its invocations and
    /// the errors alarm fires.
    pub async fn sample(&self) -> Result<Metrics, SampleError> {
        let (sample, paused) = tokio::join!(self.read(), self.paused());
        let sample = sample?;
        let now = seconds(Millis::now());
        let memory = self.memory().clone();
        let decision = controller(paused)(&self.policy, &sample, &memory, now);
        let mut write_error = None;
        if decision.desired_tasks != sample.desired_tasks {
            match self.apply_as(&sample, &memory, now, paused).await {
                Ok(Some(applied)) => {
                    info!(
                        from = sample.desired_tasks,
                        to = applied.desired_tasks,
                        action = applied.action.name(),
                        reason = applied.reason.describe(),
                        backlog = sample.visible,
                        in_flight = sample.in_flight,
                        running = sample.running_tasks,
                        pending = sample.pending_tasks,
                        needed = applied.needed_tasks,
                        floor = applied.floor_tasks,
                        "set the desired count"
                    );
                    *self.memory() = applied.memory;
                }
                // Not written: the next sample decides again from what it remembers now.
                Ok(None) => *self.memory() = decision.memory.clone(),
                Err(e) => write_error = Some(e),
            }
        } else {
            *self.memory() = decision.memory.clone();
        }
        let metrics = Metrics {
            paused: u32::from(paused),
            ..sample.metrics(&self.policy)
        };
        self.publisher
            .publish(&metrics, &self.dims, Millis::now())
            .await
            .map_err(SampleError::Publish)?;
        match write_error {
            Some(e) => Err(e),
            None => Ok(metrics),
        }
    }

    fn memory(&self) -> std::sync::MutexGuard<'_, Memory> {
        // A panic while holding it leaves a memory as good as any: take it.
        self.memory.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Reads the service again and sets the count the controller decides on the fresh counts
    /// (the queue as `seen`, from `memory`), if it differs; under the scaling lease, so the
    /// submit nudge cannot write in between. `Ok(None)`: nothing written (no longer needed, or
    /// the nudge holds the lease: then it tries once more when the lease may have settled).
    pub async fn apply(
        &self,
        seen: &Sample,
        memory: &Memory,
        now: f64,
    ) -> Result<Option<Decision>, SampleError> {
        self.apply_as(seen, memory, now, false).await
    }

    /// Whether the pipeline is paused now, as far as the last read knows.
    pub async fn paused(&self) -> bool {
        match &self.pipeline {
            Some(known) => known.current().await.is_paused(),
            None => false,
        }
    }

    /// [`Sampler::apply`], by the paused controller while the pipeline is paused.
    async fn apply_as(
        &self,
        seen: &Sample,
        memory: &Memory,
        now: f64,
        paused: bool,
    ) -> Result<Option<Decision>, SampleError> {
        for tries_left in [1, 0] {
            match self.apply_once(seen, memory, now, paused).await? {
                Apply::Wrote(d) => return Ok(Some(d)),
                Apply::NotNeeded => return Ok(None),
                Apply::LeaseHeld if tries_left > 0 => tokio::time::sleep(SETTLE).await,
                Apply::LeaseHeld => {}
            }
        }
        Ok(None)
    }

    async fn apply_once(
        &self,
        seen: &Sample,
        memory: &Memory,
        now: f64,
        paused: bool,
    ) -> Result<Apply, SampleError> {
        let write = async {
            let tasks = self.service.counts().await.map_err(SampleError::Raise)?;
            let fresh = Sample {
                running_tasks: tasks.running,
                pending_tasks: tasks.pending,
                desired_tasks: tasks.desired,
                ..*seen
            };
            let d = controller(paused)(&self.policy, &fresh, memory, now);
            if d.action == Action::None || d.desired_tasks == tasks.desired {
                return Ok(Apply::NotNeeded);
            }
            self.service
                .set_desired(d.desired_tasks)
                .await
                .map_err(SampleError::Raise)?;
            Ok(Apply::Wrote(d))
        };
        let wrote = |r: &Result<Apply, SampleError>| matches!(r, Ok(Apply::Wrote(_)));
        match &self.lease {
            None => write.await,
            Some(store) => match with_lease(store, &self.service, write, wrote).await {
                Ok(Some(outcome)) => outcome,
                Ok(None) => Ok(Apply::LeaseHeld),
                Err(e) => Err(SampleError::Lease(e)),
            },
        }
    }

    /// Samples every `interval` until `window` has passed.
    pub async fn run(&self, interval: Duration, window: Duration) -> SamplerRun {
        let start = tokio::time::Instant::now();
        let mut ticks = tokio::time::interval(interval);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        let mut summary = SamplerRun::default();
        loop {
            ticks.tick().await;
            if start.elapsed() >= window {
                break;
            }
            match self.sample().await {
                Ok(m) => {
                    summary.published += 1;
                    info!(
                        backlog = m.backlog,
                        in_flight = m.in_flight,
                        running = m.running_tasks,
                        desired = m.desired_tasks,
                        backlog_per_task = m.backlog_per_task,
                        without_capacity = m.backlog_without_capacity,
                        needed = m.needed_tasks,
                        paused = m.paused == 1,
                        "sample published"
                    );
                }
                Err(e) if e.is_raise() => {
                    summary.published += 1;
                    summary.raise_failures += 1;
                    let message = DisplayErrorContext(&e).to_string();
                    warn!(error = %message, "sample published, but the desired count could not be set");
                    summary.last_raise_error = Some(message);
                }
                Err(e) => {
                    warn!(error = %DisplayErrorContext(&e), "sample failed; nothing published")
                }
            }
        }
        summary
    }
}

/// What one run of the sampler did.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct SamplerRun {
    /// Samples published.
    pub published: u32,
    /// Samples whose write of the desired count failed.
    pub raise_failures: u32,
    /// The last such failure, for the invocation's error.
    pub last_raise_error: Option<String>,
}

enum Apply {
    Wrote(Decision),
    NotNeeded,
    LeaseHeld,
}

/// The controller for the pipeline's state: [`decide`], or [`decide_paused`] while paused.
pub fn controller(paused: bool) -> fn(&Policy, &Sample, &Memory, f64) -> Decision {
    if paused {
        decide_paused
    } else {
        decide
    }
}

/// Seconds since the epoch, the controller's clock.
fn seconds(at: Millis) -> f64 {
    at.0 as f64 / 1000.0
}

impl SampleError {
    /// Whether the sample was published and only the write of the desired count failed.
    pub fn is_raise(&self) -> bool {
        matches!(self, SampleError::Raise(_) | SampleError::Lease(_))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_reads_the_policy_and_names_what_is_wrong() {
        let base = [
            ("SLUICE_QUEUE_URL", "http://q/1/jobs"),
            ("SLUICE_CLUSTER", "c"),
            ("SLUICE_SERVICE", "s"),
        ];
        let c = BacklogConfig::from_source(&base[..]).unwrap();
        let builtin = Policy::builtin().unwrap();
        assert_eq!(
            c.sample_interval,
            Duration::from_secs(u64::from(builtin.metric_period_seconds))
        );
        assert_eq!(c.policy, builtin);

        let bad: Vec<_> = base
            .iter()
            .copied()
            .chain([("SLUICE_SCALING_POLICY", "{}")])
            .collect();
        let e = BacklogConfig::from_source(&bad[..])
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("SLUICE_SCALING_POLICY=\"(the policy JSON)\" is not valid"),
            "{e}"
        );
        let e = BacklogConfig::from_source(&base[..2])
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("SLUICE_SERVICE is not set"), "{e}");

        // The dead-letter reconciler needs the table with the queue.
        assert_eq!(c.dead_letters, None);
        let with = |extra: &[(&'static str, &'static str)]| {
            let vars: Vec<_> = base.iter().copied().chain(extra.iter().copied()).collect();
            BacklogConfig::from_source(&vars[..])
        };
        let dl = with(&[
            ("SLUICE_DLQ_URL", "http://q/1/dlq"),
            ("SLUICE_TABLE_NAME", "jobs"),
        ])
        .unwrap()
        .dead_letters
        .unwrap();
        assert_eq!(
            (dl.dlq_url.as_str(), dl.table_name.as_str()),
            ("http://q/1/dlq", "jobs")
        );
        assert_eq!(dl.retention, Duration::from_secs(7 * 86_400));
        let e = with(&[("SLUICE_DLQ_URL", "http://q/1/dlq")])
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("SLUICE_TABLE_NAME is not set"), "{e}");
    }

    #[test]
    fn samples_combine_the_queue_and_the_service() {
        let s = sample_of(
            Depth {
                visible: 30,
                in_flight: 4,
                delayed: 2,
            },
            TaskCounts {
                running: 0,
                pending: 0,
                desired: 0,
            },
        );
        let m = s.metrics(&Policy::builtin().unwrap());
        assert_eq!(
            (m.backlog, m.in_flight, m.backlog_without_capacity),
            (30, 4, 1)
        );
        let s = sample_of(
            Depth {
                visible: 30,
                in_flight: 4,
                delayed: 0,
            },
            TaskCounts {
                running: 0,
                pending: 1,
                desired: 1,
            },
        );
        assert_eq!(
            s.metrics(&Policy::builtin().unwrap())
                .backlog_without_capacity,
            0,
            "a starting task is capacity on its way"
        );
    }
}
