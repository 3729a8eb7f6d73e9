//! Publishing the backlog metrics with `PutMetricData`, high resolution (1 s storage).

use aws_sdk_cloudwatch::error::SdkError;
use aws_sdk_cloudwatch::primitives::DateTime;
use aws_sdk_cloudwatch::types::{Dimension, MetricDatum, StandardUnit};
use aws_sdk_cloudwatch::Client;

use crate::scaling::Metrics;
use crate::time::Millis;

#[derive(Debug, thiserror::Error)]
#[error("cloudwatch PutMetricData failed")]
pub struct PublishError(#[source] Box<dyn std::error::Error + Send + Sync>);

/// The dimensions every backlog metric carries.
#[derive(Debug, Clone)]
pub struct Dimensions {
    pub queue_name: String,
    pub service_name: String,
}

/// The metric data of one sample, as (name, value, unit). Pure.
pub fn data(m: &Metrics) -> [(&'static str, f64, StandardUnit); 7] {
    [
        ("Backlog", f64::from(m.backlog), StandardUnit::Count),
        ("InFlight", f64::from(m.in_flight), StandardUnit::Count),
        (
            "RunningTasks",
            f64::from(m.running_tasks),
            StandardUnit::Count,
        ),
        (
            "DesiredTasks",
            f64::from(m.desired_tasks),
            StandardUnit::Count,
        ),
        ("BacklogPerTask", m.backlog_per_task, StandardUnit::None),
        (
            "BacklogWithoutCapacity",
            f64::from(m.backlog_without_capacity),
            StandardUnit::Count,
        ),
        (
            "NeededTasks",
            f64::from(m.needed_tasks),
            StandardUnit::Count,
        ),
    ]
}

/// Publishes CloudWatch metrics into one namespace. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Publisher {
    client: Client,
    namespace: String,
}

impl Publisher {
    pub fn new(client: Client, namespace: impl Into<String>) -> Self {
        Publisher {
            client,
            namespace: namespace.into(),
        }
    }

    pub fn from_sdk(aws: &aws_config::SdkConfig, namespace: impl Into<String>) -> Self {
        Publisher::new(Client::new(aws), namespace)
    }

    /// One sample's metrics, in one request.
    pub async fn publish(
        &self,
        m: &Metrics,
        dims: &Dimensions,
        at: Millis,
    ) -> Result<(), PublishError> {
        let dimensions = vec![
            Dimension::builder()
                .name("QueueName")
                .value(&dims.queue_name)
                .build(),
            Dimension::builder()
                .name("ServiceName")
                .value(&dims.service_name)
                .build(),
        ];
        let datums = data(m)
            .into_iter()
            .map(|(name, value, unit)| {
                MetricDatum::builder()
                    .metric_name(name)
                    .set_dimensions(Some(dimensions.clone()))
                    .value(value)
                    .unit(unit)
                    .storage_resolution(1)
                    .timestamp(DateTime::from_millis(at.0))
                    .build()
            })
            .collect();
        self.client
            .put_metric_data()
            .namespace(&self.namespace)
            .set_metric_data(Some(datums))
            .send()
            .await
            .map(|_| ())
            .map_err(|e: SdkError<_, _>| PublishError(Box::new(e)))
    }
}
