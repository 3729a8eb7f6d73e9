//! The backlog function: run every minute by EventBridge, it samples the queue and the worker
//! service every `metric_period_seconds` and is the one controller of the service's desired
//! count, both ways (`sluice::scaling::decide`), and publishes high-resolution metrics. The
//! sampler, and with it what the controller remembers between samples, is built once per
//! execution environment and lives across runs. A run in which a write of the count failed ends
//! with an error, so the function's errors alarm says the loop cannot scale.
//!
//! With the jobs table, every run also ends `EXPIRED` the queued jobs whose deadline passed
//! (`sluice::pipeline::expire_overdue`, through the open-deadlines index), so deadlines hold
//! while the pipeline is paused or the fleet is saturated; holds the service at `min_tasks`
//! while the pipeline is paused, publishing `Paused` = 1; and delivers the webhook announcements that are due
//! (`sluice::outbox`): retries on their schedule, and the jobs whose worker died between the
//! outcome and its delivery.
//!
//! Metrics go out with `PutMetricData` rather than as Embedded Metric Format log lines: EMF
//! metrics reach CloudWatch only after log ingestion (seconds to a minute later), and the
//! missing-samples alarm and the dead-controller backstop judge the loop by them, so the direct
//! call is worth its price (one call a sample).

use lambda_runtime::{run, service_fn, Error, LambdaEvent};
use sluice::backlog::{BacklogConfig, Sampler, WINDOW};
use sluice::deadletter::DeadLetters;
use sluice::outbox::Outbox;
use sluice::queue::JobQueue;
use sluice::store::JobStore;
use sluice::sweep::Sweeper;

/// The longest a run's sweep takes, beside its sampling (the function has 90 s).
const SWEEP_TIME: std::time::Duration = std::time::Duration::from_secs(30);
/// The longest a run's pass over the deadlines takes, after its sweep.
const EXPIRY_TIME: std::time::Duration = std::time::Duration::from_secs(15);
/// The longest a run's webhook deliveries take, beside the rest.
const DELIVERY_TIME: std::time::Duration = std::time::Duration::from_secs(45);

#[tokio::main]
async fn main() -> Result<(), Error> {
    sluice::telemetry::init();
    let config = BacklogConfig::from_env()?;
    let aws = sluice::aws::load().await;
    let sampler = Sampler::from_sdk(&aws, &config);
    // Every accepted job ends: a job whose message reached the dead-letter queue and that runs
    // nowhere is ended FAILED with the reason, a pass a run; settled messages are deleted.
    let dead_letters = config.dead_letters.as_ref().map(|d| {
        DeadLetters::new(
            JobQueue::from_sdk(&aws, &d.dlq_url),
            JobStore::from_sdk(&aws, &d.table_name).with_retention(d.retention),
            d.retention,
        )
        .with_jobs(JobQueue::from_sdk(&aws, &config.queue_url))
    });
    // And a job whose message left the queue (its retention passed) is ended with the reason.
    let sweeper = config.dead_letters.as_ref().map(|d| Sweeper {
        store: JobStore::from_sdk(&aws, &d.table_name).with_retention(d.retention),
        queues: vec![
            JobQueue::from_sdk(&aws, &config.queue_url),
            JobQueue::from_sdk(&aws, &d.dlq_url),
        ],
        budget: SWEEP_TIME,
    });
    // And the webhook announcements due are delivered.
    let outbox = config.table_name.as_ref().map(|table| {
        // The store's retention keeps a pending announcement's record past its next attempt.
        let store = JobStore::from_sdk(&aws, table).with_retention(config.retention);
        let outbox = Outbox::new(store, config.webhook_policy).with_events(
            sluice::events::Publisher::from_sdk(&aws, config.events.clone()),
        );
        match &config.payload_bucket {
            Some(bucket) => outbox.with_payloads(sluice::payload::Payloads::from_sdk(&aws, bucket)),
            None => outbox,
        }
    });
    let (sampler, interval, dead_letters, sweeper, outbox) = (
        &sampler,
        config.sample_interval,
        &dead_letters,
        &sweeper,
        &outbox,
    );
    run(service_fn(
        move |_: LambdaEvent<serde_json::Value>| async move {
            let reconcile = async {
                match dead_letters {
                    None => 0,
                    Some(d) => match d.reconcile().await {
                        Ok(done) => done.seen.len(),
                        Err(e) => {
                            lambda_runtime::tracing::warn!(error = %sluice::aws::DisplayErrorContext(&e), "could not reconcile the dead-letter queue");
                            0
                        }
                    },
                }
            };
            let sweep = async {
                let Some(s) = sweeper else {
                    return (0, 0);
                };
                let swept = match s.sweep(sluice::time::Millis::now()).await {
                    Ok(swept) => swept.ended.len(),
                    Err(e) => {
                        lambda_runtime::tracing::warn!(error = %sluice::aws::DisplayErrorContext(&e), "could not sweep the open jobs");
                        0
                    }
                };
                let expired = match sluice::pipeline::expire_overdue(&s.store, sluice::time::Millis::now(), EXPIRY_TIME).await {
                    Ok(ended) => ended.len(),
                    Err(e) => {
                        lambda_runtime::tracing::warn!(error = %sluice::aws::DisplayErrorContext(&e), "could not expire the jobs past their deadline");
                        0
                    }
                };
                (swept, expired)
            };
            let deliver = async {
                match outbox {
                    None => 0,
                    Some(o) => match o.deliver_due(sluice::time::Millis::now(), DELIVERY_TIME).await {
                        Ok(pass) => pass.attempted.len(),
                        Err(e) => {
                            lambda_runtime::tracing::warn!(error = %sluice::aws::DisplayErrorContext(&e), "could not deliver the due webhooks");
                            0
                        }
                    },
                }
            };
            let (summary, reconciled, (swept, expired), delivered) =
                tokio::join!(sampler.run(interval, WINDOW), reconcile, sweep, deliver);
            if let Some(last) = &summary.last_raise_error {
                return Err(Error::from(format!(
                    "{} of {} samples could not raise the service; the last: {last}",
                    summary.raise_failures, summary.published
                )));
            }
            Ok::<_, Error>(serde_json::json!({ "published": summary.published, "dead_letters_seen": reconciled, "swept": swept, "expired": expired, "webhook_attempts": delivered }))
        },
    ))
    .await
}
