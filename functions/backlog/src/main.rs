//! The backlog function: run every minute by EventBridge, it samples the queue and the worker
//! service about every 10 s and publishes high-resolution metrics that drive step scaling.
//!
//! Metrics go out with `PutMetricData` rather than as Embedded Metric Format log lines: EMF
//! metrics reach CloudWatch only after log ingestion (seconds to a minute later), and the
//! alarms these metrics feed are the point of this function, so the direct call is worth its
//! price (six calls a minute).

use lambda_runtime::{run, service_fn, Error, LambdaEvent};
use sluice::backlog::{BacklogConfig, Sampler, WINDOW};

#[tokio::main]
async fn main() -> Result<(), Error> {
    sluice::telemetry::init();
    let config = BacklogConfig::from_env()?;
    let aws = sluice::aws::load().await;
    let sampler = Sampler::from_sdk(&aws, &config);
    let (sampler, interval) = (&sampler, config.sample_interval);
    run(service_fn(
        move |_: LambdaEvent<serde_json::Value>| async move {
            let published = sampler.run(interval, WINDOW).await;
            Ok::<_, Error>(serde_json::json!({ "published": published }))
        },
    ))
    .await
}
