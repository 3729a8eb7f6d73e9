//! The backlog function: run every minute by EventBridge, it samples the queue and the worker
//! service every `metric_period_seconds`, raises the service to the capacity the work needs,
//! and publishes the high-resolution metrics the scale-in and idle alarms act on. A run in which
//! a raise failed ends with an error, so the function's errors alarm says the loop cannot scale.
//!
//! Metrics go out with `PutMetricData` rather than as Embedded Metric Format log lines: EMF
//! metrics reach CloudWatch only after log ingestion (seconds to a minute later), and the
//! alarms these metrics feed are the point of this function, so the direct call is worth its
//! price (six calls a minute).

use lambda_runtime::{run, service_fn, Error, LambdaEvent};
use sluice::backlog::{BacklogConfig, Sampler, WINDOW};
use sluice::deadletter::DeadLetters;
use sluice::queue::JobQueue;
use sluice::store::JobStore;

#[tokio::main]
async fn main() -> Result<(), Error> {
    sluice::telemetry::init();
    let config = BacklogConfig::from_env()?;
    let aws = sluice::aws::load().await;
    let sampler = Sampler::from_sdk(&aws, &config);
    // Every accepted job ends: a job whose message reached the dead-letter queue and that runs
    // nowhere is ended FAILED with the reason, a pass a run.
    let dead_letters = config.dead_letters.as_ref().map(|d| DeadLetters {
        dlq: JobQueue::from_sdk(&aws, &d.dlq_url),
        store: JobStore::from_sdk(&aws, &d.table_name).with_retention(d.retention),
        retention: d.retention,
    });
    let (sampler, interval, dead_letters) = (&sampler, config.sample_interval, &dead_letters);
    run(service_fn(
        move |_: LambdaEvent<serde_json::Value>| async move {
            let (summary, reconciled) = tokio::join!(sampler.run(interval, WINDOW), async {
                match dead_letters {
                    None => 0,
                    Some(d) => match d.reconcile().await {
                        Ok(seen) => seen.len(),
                        Err(e) => {
                            lambda_runtime::tracing::warn!(error = %sluice::aws::DisplayErrorContext(&e), "could not reconcile the dead-letter queue");
                            0
                        }
                    },
                }
            });
            if let Some(last) = &summary.last_raise_error {
                return Err(Error::from(format!(
                    "{} of {} samples could not raise the service; the last: {last}",
                    summary.raise_failures, summary.published
                )));
            }
            Ok::<_, Error>(serde_json::json!({ "published": summary.published, "dead_letters_seen": reconciled }))
        },
    ))
    .await
}
