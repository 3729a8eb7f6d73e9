//! Job metrics as CloudWatch Embedded Metric Format lines on stdout: CloudWatch Logs turns them
//! into metrics, and they cost no API call on the job's path.

use std::time::Duration;

use sluice::job::JobRecord;
use sluice::time::Millis;

use crate::config::WorkerConfig;

/// The default namespace of sluice's metrics (never `AWS/…`).
pub const NAMESPACE: &str = "Sluice";

/// How an attempt ended, as counted in metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Succeeded,
    Failed,
    Retried,
    Cancelled,
    Expired,
}

impl Outcome {
    pub fn metric_name(self) -> &'static str {
        match self {
            Outcome::Succeeded => "JobsSucceeded",
            Outcome::Failed => "JobsFailed",
            Outcome::Retried => "JobsRetried",
            Outcome::Cancelled => "JobsCancelled",
            Outcome::Expired => "JobsExpired",
        }
    }
}

/// The EMF line for one job outcome: a count, how long the attempt ran, and how long the job
/// waited in the queue before its first start.
pub fn emf_line(
    namespace: &str,
    queue_name: &str,
    outcome: Outcome,
    ran: Duration,
    queue_wait: Option<Duration>,
    at: Millis,
) -> String {
    let mut metrics = vec![
        serde_json::json!({"Name": outcome.metric_name(), "Unit": "Count"}),
        serde_json::json!({"Name": "JobDuration", "Unit": "Milliseconds"}),
    ];
    let mut doc = serde_json::json!({
        "QueueName": queue_name,
        outcome.metric_name(): 1,
        "JobDuration": ran.as_millis() as u64,
    });
    if let Some(wait) = queue_wait {
        metrics.push(serde_json::json!({"Name": "QueueWait", "Unit": "Milliseconds"}));
        doc["QueueWait"] = serde_json::json!(wait.as_millis() as u64);
    }
    doc["_aws"] = serde_json::json!({
        "Timestamp": at.0,
        "CloudWatchMetrics": [{
            "Namespace": namespace,
            "Dimensions": [["QueueName"]],
            "Metrics": metrics,
        }],
    });
    doc.to_string()
}

/// Writes a job's outcome as an EMF line when logs are JSON (in AWS); on a terminal it would
/// only be noise.
pub fn job_finished(cfg: &WorkerConfig, outcome: Outcome, ran: Duration, job: &JobRecord) {
    if !cfg.emit_metrics {
        return;
    }
    let queue_name = cfg.queue_url.rsplit('/').next().unwrap_or(&cfg.queue_url);
    let wait = job.started_at.map(|s| s.since(job.submitted_at));
    println!(
        "{}",
        emf_line(
            &cfg.metric_namespace,
            queue_name,
            outcome,
            ran,
            wait,
            Millis::now()
        )
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emf_lines_declare_every_metric_they_carry() {
        let line = emf_line(
            "Inference",
            "jobs",
            Outcome::Succeeded,
            Duration::from_millis(1500),
            Some(Duration::from_secs(2)),
            Millis(7),
        );
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["QueueName"], "jobs");
        assert_eq!(v["JobsSucceeded"], 1);
        assert_eq!(v["JobDuration"], 1500);
        assert_eq!(v["QueueWait"], 2000);
        let decl = &v["_aws"]["CloudWatchMetrics"][0];
        assert_eq!(decl["Namespace"], "Inference");
        assert_eq!(decl["Dimensions"], serde_json::json!([["QueueName"]]));
        let names: Vec<&str> = decl["Metrics"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["Name"].as_str().unwrap())
            .collect();
        assert_eq!(names, ["JobsSucceeded", "JobDuration", "QueueWait"]);

        let line = emf_line(
            "Sluice",
            "jobs",
            Outcome::Expired,
            Duration::ZERO,
            None,
            Millis(7),
        );
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["JobsExpired"], 1);
        assert!(v.get("QueueWait").is_none());
        assert_eq!(
            v["_aws"]["CloudWatchMetrics"][0]["Metrics"]
                .as_array()
                .unwrap()
                .len(),
            2
        );
    }
}
