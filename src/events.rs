//! Every job's end, published to the deployment's SNS topics and EventBridge bus.
//!
//! As SageMaker Asynchronous Inference does, a deployment may name a success topic (jobs that
//! `SUCCEEDED`) and an error topic (every other end: `FAILED`, `CANCELLED`, `EXPIRED`), and an
//! EventBridge bus that gets every end. Publishing is one more target of a job's announcement in
//! the outbox ([`crate::outbox`]): due in the same write that ends the job, retried on the
//! webhook's schedule, never lost when a worker dies. Each target is recorded done on its own,
//! so a webhook that keeps failing does not publish the event again on every retry.
//!
//! A deployment with any target marks every job it accepts (`SLUICE_*_TOPIC_ARN`,
//! `SLUICE_EVENT_BUS` set where jobs are submitted): the jobs it accepted before it had one are
//! not published.

use std::time::Duration;

use aws_config::SdkConfig;
use serde_json::Value;

use crate::api::JobView;
use crate::job::Status;
use crate::webhook::{self, EventType, WebhookEvent};

/// The `source` of the events put on an EventBridge bus.
pub const SOURCE: &str = "sluice";

/// The most bytes of an event's body: SNS and EventBridge both take 256 KiB a message,
/// attributes and envelope included.
pub const MAX_BODY_BYTES: usize = 240 * 1024;

/// The view's fields left out, in this order, of an event that would be too large: whoever
/// needs them reads the job (`GET /jobs/{id}`).
const OMITTABLE: [&str; 3] = ["result", "outputs", "error"];

/// A target of the announcement, as recorded in the job's done set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// The success topic or the error topic, whichever the job's end goes to.
    Sns,
    EventBridge,
}

impl Target {
    pub fn as_str(self) -> &'static str {
        match self {
            Target::Sns => "sns",
            Target::EventBridge => "eventbridge",
        }
    }
}

/// Where a deployment publishes the ends of jobs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EventTargets {
    /// The SNS topic of the jobs that succeeded.
    pub success_topic: Option<String>,
    /// The SNS topic of the jobs that failed, were cancelled or expired.
    pub error_topic: Option<String>,
    /// The EventBridge bus (name or ARN) that gets every end.
    pub bus: Option<String>,
}

/// A target that cannot be used as configured.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TargetError {
    #[error(
        "{var} must be an SNS topic ARN (arn:aws:sns:<region>:<account>:<topic>), not {value:?}"
    )]
    Topic { var: &'static str, value: String },
    #[error(
        "{var} must be an EventBridge bus name (1 to 256 of A-Z a-z 0-9 . _ -) or ARN \
         (arn:aws:events:<region>:<account>:event-bus/<name>), not {value:?}"
    )]
    Bus { var: &'static str, value: String },
}

/// Checks an SNS topic ARN: `arn:<partition>:sns:<region>:<account>:<name>`. Pure.
pub fn valid_topic_arn(arn: &str) -> bool {
    let parts: Vec<&str> = arn.split(':').collect();
    matches!(parts.as_slice(),
        ["arn", partition, "sns", region, account, name]
            if partition.starts_with("aws")
                && !region.is_empty()
                && account.len() == 12
                && account.bytes().all(|b| b.is_ascii_digit())
                && valid_name(name, 256))
}

/// Checks an EventBridge bus name or ARN. Pure.
pub fn valid_bus(bus: &str) -> bool {
    match bus.strip_prefix("arn:") {
        None => valid_name(bus, 256),
        Some(rest) => {
            let parts: Vec<&str> = rest.splitn(5, ':').collect();
            matches!(parts.as_slice(),
                [partition, "events", region, account, resource]
                    if partition.starts_with("aws")
                        && !region.is_empty()
                        && account.len() == 12
                        && account.bytes().all(|b| b.is_ascii_digit())
                        && resource.strip_prefix("event-bus/").is_some_and(|n| valid_name(n, 256)))
        }
    }
}

fn valid_name(name: &str, max: usize) -> bool {
    !name.is_empty()
        && name.len() <= max
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
}

impl EventTargets {
    /// The targets named by `get` (the process environment in a binary). Pure.
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<EventTargets, TargetError> {
        let read = |var: &str| {
            get(var)
                .map(|v| v.trim().to_owned())
                .filter(|v| !v.is_empty())
        };
        let topic = |var: &'static str| -> Result<Option<String>, TargetError> {
            match read(var) {
                Some(v) if !valid_topic_arn(&v) => Err(TargetError::Topic { var, value: v }),
                other => Ok(other),
            }
        };
        let bus = match read(crate::env::EVENT_BUS) {
            Some(v) if !valid_bus(&v) => {
                return Err(TargetError::Bus {
                    var: crate::env::EVENT_BUS,
                    value: v,
                })
            }
            other => other,
        };
        Ok(EventTargets {
            success_topic: topic(crate::env::SUCCESS_TOPIC_ARN)?,
            error_topic: topic(crate::env::ERROR_TOPIC_ARN)?,
            bus,
        })
    }

    /// The targets the process environment names.
    pub fn from_env() -> Result<EventTargets, TargetError> {
        Self::from_lookup(|var| std::env::var(var).ok())
    }

    /// Whether there is anywhere to publish.
    pub fn any(&self) -> bool {
        self.success_topic.is_some() || self.error_topic.is_some() || self.bus.is_some()
    }

    /// The topic a job that ended in `status` is published to, if any. Pure.
    pub fn topic_for(&self, status: Status) -> Option<&str> {
        if status == Status::Succeeded {
            self.success_topic.as_deref()
        } else {
            self.error_topic.as_deref()
        }
    }

    /// The targets a job that ended in `status` is published to, in order. Pure.
    pub fn targets_for(&self, status: Status) -> Vec<Target> {
        let mut targets = Vec::new();
        if self.topic_for(status).is_some() {
            targets.push(Target::Sns);
        }
        if self.bus.is_some() {
            targets.push(Target::EventBridge);
        }
        targets
    }
}

/// The EventBridge `detail-type` of an end. Pure.
pub fn detail_type(kind: EventType) -> &'static str {
    match kind {
        EventType::JobSucceeded => "Job Succeeded",
        EventType::JobFailed => "Job Failed",
        EventType::JobCancelled => "Job Cancelled",
        EventType::JobExpired => "Job Expired",
    }
}

/// The body published for `event`: the webhook's body (`type`, `timestamp`, `data`: the job's
/// view) with the message's `id`, the same on every attempt; when that is over `max` bytes, the
/// view's largest optional fields are left out and named in `omitted`. Pure.
pub fn event_body(event: &WebhookEvent, id: &str, max: usize) -> String {
    let mut value = serde_json::to_value(event).expect("a job event serializes");
    value["id"] = Value::String(id.to_owned());
    let mut omitted = Vec::new();
    for field in OMITTABLE {
        let body = value.to_string();
        if body.len() <= max {
            return body;
        }
        if let Some(data) = value.get_mut("data").and_then(Value::as_object_mut) {
            if data.remove(field).is_some() {
                omitted.push(Value::String(field.to_owned()));
                value["omitted"] = Value::Array(omitted.clone());
            }
        }
    }
    value.to_string()
}

/// A job's end as it is published: the event, its message id (the webhook's, the same on every
/// attempt) and the body, made once for every target.
#[derive(Debug, Clone)]
pub struct Announcement {
    pub event: WebhookEvent,
    pub id: String,
    pub body: String,
}

impl Announcement {
    /// The announcement of `job`'s end; `None` while it has not ended. Its view carries neither
    /// the delivery's own state nor the caller's webhook URL (which may hold a token of its
    /// own). Pure.
    pub fn of(job: &crate::job::JobRecord) -> Option<Announcement> {
        let mut view = JobView::of(job);
        view.delivery = None;
        view.webhook = None;
        let event = WebhookEvent::of(view).ok()?;
        let id = webhook::message_id(&job.id, event.kind, job.redrives);
        let body = event_body(&event, &id, MAX_BODY_BYTES);
        Some(Announcement { event, id, body })
    }
}

/// Publishes ends with the SDK's clients.
#[derive(Debug, Clone)]
pub struct Publisher {
    pub targets: EventTargets,
    sns: aws_sdk_sns::Client,
    eventbridge: aws_sdk_eventbridge::Client,
}

impl Publisher {
    pub fn from_sdk(aws: &SdkConfig, targets: EventTargets) -> Self {
        Publisher {
            targets,
            sns: aws_sdk_sns::Client::new(aws),
            eventbridge: aws_sdk_eventbridge::Client::new(aws),
        }
    }

    /// Publishes `end` to `target`; the error says what failed, for the job's delivery record.
    pub async fn publish(&self, target: Target, end: &Announcement) -> Result<(), String> {
        let call = async {
            match target {
                Target::Sns => self.to_topic(&end.event, &end.body, &end.id).await,
                Target::EventBridge => self.to_bus(&end.event, &end.body).await,
            }
        };
        match tokio::time::timeout(PUBLISH_TIMEOUT, call).await {
            Ok(done) => done,
            Err(_) => Err(format!(
                "publishing to {} took over {} s",
                target.as_str(),
                PUBLISH_TIMEOUT.as_secs()
            )),
        }
    }

    async fn to_topic(&self, event: &WebhookEvent, body: &str, id: &str) -> Result<(), String> {
        let Some(topic) = self.targets.topic_for(event.data.status) else {
            return Ok(());
        };
        let attr = |v: &str| {
            aws_sdk_sns::types::MessageAttributeValue::builder()
                .data_type("String")
                .string_value(v)
                .build()
                .expect("a string attribute has its type and value")
        };
        self.sns
            .publish()
            .topic_arn(topic)
            .subject(format!(
                "sluice job {} {}",
                event.data.id,
                event.data.status.as_str().to_lowercase()
            ))
            .message(body)
            .message_attributes("type", attr(event.kind.as_str()))
            .message_attributes("status", attr(event.data.status.as_str()))
            .message_attributes("job_id", attr(&event.data.id))
            .message_attributes("event_id", attr(id))
            .send()
            .await
            .map(|_| ())
            .map_err(|e| {
                format!(
                    "publishing to the topic {topic}: {}",
                    crate::aws::DisplayErrorContext(&e)
                )
            })
    }

    async fn to_bus(&self, event: &WebhookEvent, body: &str) -> Result<(), String> {
        let Some(bus) = self.targets.bus.as_deref() else {
            return Ok(());
        };
        let entry = aws_sdk_eventbridge::types::PutEventsRequestEntry::builder()
            .event_bus_name(bus)
            .source(SOURCE)
            .detail_type(detail_type(event.kind))
            .detail(body)
            .build();
        let out = self
            .eventbridge
            .put_events()
            .entries(entry)
            .send()
            .await
            .map_err(|e| {
                format!(
                    "putting the event on the bus {bus}: {}",
                    crate::aws::DisplayErrorContext(&e)
                )
            })?;
        if out.failed_entry_count() > 0 {
            let failed = out.entries().first();
            return Err(format!(
                "the bus {bus} refused the event: {} {}",
                failed.and_then(|e| e.error_code()).unwrap_or("(no code)"),
                failed.and_then(|e| e.error_message()).unwrap_or("")
            ));
        }
        Ok(())
    }
}

/// The longest one publish may take, retries of the SDK included.
const PUBLISH_TIMEOUT: Duration = webhook::DELIVERY_TIMEOUT;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topic_arns_and_buses_are_checked() {
        let topics = [
            ("arn:aws:sns:eu-west-1:123456789012:sluice-success", true),
            ("arn:aws-cn:sns:cn-north-1:123456789012:t", true),
            ("arn:aws:sns:eu-west-1:123456789012:a.fifo", true),
            ("arn:aws:sqs:eu-west-1:123456789012:q", false),
            ("arn:aws:sns:eu-west-1:1234:t", false),
            ("arn:aws:sns::123456789012:t", false),
            ("arn:aws:sns:eu-west-1:123456789012:", false),
            ("arn:aws:sns:eu-west-1:123456789012:a:b", false),
            ("sluice-success", false),
        ];
        for (arn, want) in topics {
            assert_eq!(valid_topic_arn(arn), want, "{arn}");
        }
        let buses = [
            ("default", true),
            ("sluice-events", true),
            (
                "arn:aws:events:us-east-1:123456789012:event-bus/default",
                true,
            ),
            ("arn:aws:events:us-east-1:123456789012:rule/x", false),
            ("arn:aws:sns:us-east-1:123456789012:event-bus/x", false),
            ("with space", false),
            ("", false),
        ];
        for (bus, want) in buses {
            assert_eq!(valid_bus(bus), want, "{bus}");
        }
    }

    #[test]
    fn the_environment_names_the_targets_and_a_bad_one_is_refused() {
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            move |var: &str| {
                pairs
                    .iter()
                    .find(|(k, _)| *k == var)
                    .map(|(_, v)| v.to_string())
            }
        };
        assert_eq!(
            EventTargets::from_lookup(env(&[])),
            Ok(EventTargets::default())
        );
        assert!(!EventTargets::default().any());
        let t = EventTargets::from_lookup(env(&[
            (
                crate::env::SUCCESS_TOPIC_ARN,
                "arn:aws:sns:eu-west-1:123456789012:ok",
            ),
            (crate::env::EVENT_BUS, " default "),
            (crate::env::ERROR_TOPIC_ARN, ""),
        ]))
        .unwrap();
        assert!(t.any());
        assert_eq!(t.bus.as_deref(), Some("default"));
        assert_eq!(t.error_topic, None);
        assert_eq!(
            t.targets_for(Status::Succeeded),
            vec![Target::Sns, Target::EventBridge]
        );
        assert_eq!(t.targets_for(Status::Failed), vec![Target::EventBridge]);
        assert_eq!(t.topic_for(Status::Expired), None);
        let bad = EventTargets::from_lookup(env(&[(crate::env::ERROR_TOPIC_ARN, "errors")]));
        assert!(
            matches!(&bad, Err(TargetError::Topic { var, .. }) if *var == crate::env::ERROR_TOPIC_ARN),
            "{bad:?}"
        );
        let bad = EventTargets::from_lookup(env(&[(crate::env::EVENT_BUS, "a bus")]));
        assert!(matches!(bad, Err(TargetError::Bus { .. })), "{bad:?}");
    }

    fn ended(result: Option<Value>, error: Option<String>) -> WebhookEvent {
        let json = serde_json::json!({
            "id": "01JABCDEFGHJKMNPQRSTVWXYZ0",
            "status": if error.is_some() { "FAILED" } else { "SUCCEEDED" },
            "attempt": 1,
            "max_attempts": 3,
            "submitted_at": "2026-12-05T10:00:00Z",
            "finished_at": "2026-12-05T10:00:05Z",
            "result": result,
            "error": error,
        });
        WebhookEvent::of(serde_json::from_value(json).unwrap()).unwrap()
    }

    #[test]
    fn a_body_over_the_limit_leaves_out_the_largest_fields_and_says_which() {
        let small = ended(Some(serde_json::json!({"label": "cat"})), None);
        let body: Value = serde_json::from_str(&event_body(&small, "msg_1", 1000)).unwrap();
        assert_eq!(body["id"], "msg_1");
        assert_eq!(body["type"], "job.succeeded");
        assert_eq!(body["data"]["result"]["label"], "cat");
        assert!(body.get("omitted").is_none());

        let big = ended(Some(Value::String("x".repeat(5000))), None);
        let text = event_body(&big, "msg_1", 1000);
        let body: Value = serde_json::from_str(&text).unwrap();
        assert!(text.len() <= 1000, "{}", text.len());
        assert!(body["data"].get("result").is_none());
        assert_eq!(body["omitted"], serde_json::json!(["result"]));
        assert_eq!(body["data"]["status"], "SUCCEEDED");

        let both = ended(None, Some("e".repeat(5000)));
        let body: Value = serde_json::from_str(&event_body(&both, "m", 1000)).unwrap();
        assert!(body["data"].get("error").is_none());
        assert_eq!(body["omitted"], serde_json::json!(["error"]));
    }

    #[test]
    fn each_end_has_its_detail_type() {
        assert_eq!(detail_type(EventType::JobSucceeded), "Job Succeeded");
        assert_eq!(detail_type(EventType::JobExpired), "Job Expired");
        assert_eq!(Target::EventBridge.as_str(), "eventbridge");
    }
}
