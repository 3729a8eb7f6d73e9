//! Publishing the backlog metrics with `PutMetricData`, high resolution (1 s storage), and
//! reading the samples back for `sluice report`.

use aws_sdk_cloudwatch::error::SdkError;
use aws_sdk_cloudwatch::primitives::DateTime;
use aws_sdk_cloudwatch::types::{
    Dimension, Metric, MetricDataQuery, MetricDatum, MetricStat, StandardUnit,
};
use aws_sdk_cloudwatch::Client;

use crate::scaling::{Metrics, Sample};
use crate::time::Millis;

#[derive(Debug, thiserror::Error)]
#[error("cloudwatch PutMetricData failed")]
pub struct PublishError(#[source] Box<dyn std::error::Error + Send + Sync>);

#[derive(Debug, thiserror::Error)]
#[error("cloudwatch GetMetricData failed")]
pub struct ReadError(#[source] Box<dyn std::error::Error + Send + Sync>);

/// The metrics a sample is rebuilt from, with the query id of each.
const SAMPLE_METRICS: [(&str, &str); 5] = [
    ("visible", "Backlog"),
    ("inflight", "InFlight"),
    ("running", "RunningTasks"),
    ("pending", "PendingTasks"),
    ("desired", "DesiredTasks"),
];

/// The query id and name of the metric that says a sample was published while paused.
const PAUSED_METRIC: (&str, &str) = ("paused", "Paused");

/// The timestamps at which `Paused` was 1, from its series (the series of other metrics are
/// ignored). Pure.
pub fn paused_at(series: &[(&str, Vec<(i64, f64)>)]) -> std::collections::BTreeSet<i64> {
    series
        .iter()
        .filter(|(id, _)| *id == PAUSED_METRIC.0)
        .flat_map(|(_, points)| points.iter().filter(|(_, v)| *v >= 0.5).map(|(t, _)| *t))
        .collect()
}

/// Samples from the values each metric had at each timestamp, oldest first. A timestamp
/// without a backlog or a desired count is not a sample; a missing pending count (published
/// before it was) is 0. Pure.
pub fn samples_of(series: &[(&str, Vec<(i64, f64)>)]) -> Vec<(Millis, Sample)> {
    use std::collections::BTreeMap;
    let mut at: BTreeMap<i64, [Option<u32>; 5]> = BTreeMap::new();
    for (id, points) in series {
        let Some(i) = SAMPLE_METRICS.iter().position(|(q, _)| q == id) else {
            continue;
        };
        for &(t, v) in points {
            at.entry(t).or_default()[i] = Some(v.max(0.0).round() as u32);
        }
    }
    at.into_iter()
        .filter_map(|(t, [visible, in_flight, running, pending, desired])| {
            Some((
                Millis(t),
                Sample {
                    visible: visible?,
                    in_flight: in_flight.unwrap_or(0),
                    running_tasks: running.unwrap_or(0),
                    pending_tasks: pending.unwrap_or(0),
                    desired_tasks: desired?,
                },
            ))
        })
        .collect()
}

/// The dimensions every backlog metric carries.
#[derive(Debug, Clone)]
pub struct Dimensions {
    pub queue_name: String,
    pub service_name: String,
}

/// The metric data of one sample, as (name, value, unit). Pure.
pub fn data(m: &Metrics) -> [(&'static str, f64, StandardUnit); 9] {
    [
        ("Backlog", f64::from(m.backlog), StandardUnit::Count),
        ("InFlight", f64::from(m.in_flight), StandardUnit::Count),
        (
            "RunningTasks",
            f64::from(m.running_tasks),
            StandardUnit::Count,
        ),
        (
            "PendingTasks",
            f64::from(m.pending_tasks),
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
        ("Paused", f64::from(m.paused), StandardUnit::Count),
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

    /// The samples published between `from` and `to`, oldest first (1 s resolution: the
    /// samples themselves, kept three hours by CloudWatch), each with whether the pipeline was
    /// paused then.
    pub async fn samples(
        &self,
        dims: &Dimensions,
        from: Millis,
        to: Millis,
    ) -> Result<Vec<(Millis, Sample, bool)>, ReadError> {
        let mut request = self
            .client
            .get_metric_data()
            .start_time(DateTime::from_millis(from.0))
            .end_time(DateTime::from_millis(to.0));
        for (id, name) in SAMPLE_METRICS.into_iter().chain([PAUSED_METRIC]) {
            let metric = Metric::builder()
                .namespace(&self.namespace)
                .metric_name(name)
                .dimensions(
                    Dimension::builder()
                        .name("QueueName")
                        .value(&dims.queue_name)
                        .build(),
                )
                .dimensions(
                    Dimension::builder()
                        .name("ServiceName")
                        .value(&dims.service_name)
                        .build(),
                )
                .build();
            request = request.metric_data_queries(
                MetricDataQuery::builder()
                    .id(id)
                    .metric_stat(
                        MetricStat::builder()
                            .metric(metric)
                            .period(1)
                            .stat("Maximum")
                            .build(),
                    )
                    .build(),
            );
        }
        let out = request
            .send()
            .await
            .map_err(|e: SdkError<_, _>| ReadError(Box::new(e)))?;
        let series: Vec<(&str, Vec<(i64, f64)>)> = out
            .metric_data_results()
            .iter()
            .filter_map(|r| {
                let id = SAMPLE_METRICS
                    .iter()
                    .chain([&PAUSED_METRIC])
                    .map(|(q, _)| *q)
                    .find(|q| Some(*q) == r.id())?;
                let points = r
                    .timestamps()
                    .iter()
                    .zip(r.values())
                    .filter_map(|(t, v)| t.to_millis().ok().map(|t| (t, *v)))
                    .collect();
                Some((id, points))
            })
            .collect();
        let paused = paused_at(&series);
        Ok(samples_of(&series)
            .into_iter()
            .map(|(t, s)| (t, s, paused.contains(&t.0)))
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_are_rebuilt_from_the_values_of_each_timestamp() {
        let series = [
            ("visible", vec![(2000, 3.0), (1000, 0.0), (3000, 1.0)]),
            ("inflight", vec![(1000, 2.0), (2000, 2.0)]),
            ("running", vec![(1000, 2.0), (2000, 2.0)]),
            ("desired", vec![(1000, 4.0), (2000, 5.0)]),
            ("other", vec![(1000, 9.0)]),
        ];
        let got = samples_of(&series);
        assert_eq!(
            got,
            vec![
                (
                    Millis(1000),
                    Sample {
                        visible: 0,
                        in_flight: 2,
                        running_tasks: 2,
                        pending_tasks: 0,
                        desired_tasks: 4
                    }
                ),
                (
                    Millis(2000),
                    Sample {
                        visible: 3,
                        in_flight: 2,
                        running_tasks: 2,
                        pending_tasks: 0,
                        desired_tasks: 5
                    }
                ),
            ],
            "3000 has no desired count: not a sample"
        );
        let series = [
            ("paused", vec![(1000, 0.0), (2000, 1.0)]),
            ("visible", vec![(3000, 1.0)]),
        ];
        assert_eq!(paused_at(&series).into_iter().collect::<Vec<_>>(), [2000]);
    }
}
