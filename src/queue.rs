//! The job queue: SQS messages that carry a job's id and input.

use std::time::Duration;

use aws_sdk_sqs::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_sqs::types::{
    ChangeMessageVisibilityBatchRequestEntry, DeleteMessageBatchRequestEntry,
    MessageSystemAttributeName,
};
use aws_sdk_sqs::Client;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::job::JobId;
use crate::time::Millis;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The largest message SQS accepts: 1 MiB, body and attributes together.
pub const MAX_MESSAGE_BYTES: usize = 1_048_576;

/// The longest visibility timeout SQS allows: 12 hours.
pub const MAX_VISIBILITY: Duration = Duration::from_secs(12 * 3600);

#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    #[error("the job message is {size} bytes; one SQS message holds at most {MAX_MESSAGE_BYTES}")]
    TooLarge { size: usize },
    #[error("sqs throttled the request")]
    Throttled(#[source] BoxError),
    #[error("sqs request failed")]
    Unavailable(#[source] BoxError),
    #[error("the receipt handle is no longer valid")]
    StaleReceipt(#[source] BoxError),
}

fn classify<E, R>(err: SdkError<E, R>) -> QueueError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    R: std::fmt::Debug + Send + Sync + 'static,
{
    match err.code() {
        Some(
            "RequestThrottled" | "ThrottlingException" | "AWS.SimpleQueueService.RequestThrottled",
        ) => QueueError::Throttled(Box::new(err)),
        Some("ReceiptHandleIsInvalid" | "InvalidParameterValue" | "MessageNotInflight") => {
            QueueError::StaleReceipt(Box::new(err))
        }
        _ => QueueError::Unavailable(Box::new(err)),
    }
}

/// What a job message carries. `v` lets a worker tell a message it cannot read from one it
/// should run.
#[derive(Debug, Serialize, Deserialize)]
pub struct Envelope<'a> {
    pub v: u32,
    pub job_id: JobId,
    #[serde(borrow)]
    pub input: &'a RawValue,
}

impl<'a> Envelope<'a> {
    pub const VERSION: u32 = 1;

    pub fn new(job_id: JobId, input: &'a RawValue) -> Self {
        Envelope {
            v: Self::VERSION,
            job_id,
            input,
        }
    }

    /// The message body, refused when it would not fit in one SQS message with room for the
    /// attribute a message sent again carries ([`JobQueue::send_again`]).
    pub fn encode(&self) -> Result<String, QueueError> {
        let body = serde_json::to_string(self).expect("an envelope always serializes");
        if body.len() > MAX_MESSAGE_BYTES - ATTRIBUTE_ROOM {
            return Err(QueueError::TooLarge { size: body.len() });
        }
        Ok(body)
    }

    /// Reads a message body; the error says what is wrong with it.
    pub fn decode(body: &'a str) -> Result<Self, String> {
        let env: Envelope<'a> =
            serde_json::from_str(body).map_err(|e| format!("not a sluice job message: {e}"))?;
        if env.v != Self::VERSION {
            return Err(format!(
                "job message version {} is not supported (this worker reads version {})",
                env.v,
                Self::VERSION
            ));
        }
        Ok(env)
    }
}

/// A queue's message counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub struct Depth {
    /// Waiting for a worker.
    pub visible: u32,
    /// Received by a worker and not yet deleted.
    pub in_flight: u32,
    /// Sent with a delay (or retried with backoff) and not yet visible.
    pub delayed: u32,
}

/// An SQS receipt handle: the right to delete or hide one delivery of a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReceiptHandle(pub String);

/// One delivery of a message.
#[derive(Debug, Clone)]
pub struct Received {
    pub message_id: String,
    pub body: String,
    pub receipt: ReceiptHandle,
    /// How many times SQS has delivered this message, this delivery included.
    pub receive_count: u32,
    /// When the message was first sent.
    pub sent_at: Millis,
}

/// The SQS job queue. Cheap to clone.
#[derive(Debug, Clone)]
pub struct JobQueue {
    client: Client,
    url: String,
    /// Measures this machine's clock against AWS's on each first delivery, when set.
    clock: Option<crate::clock::ServerClock>,
}

impl JobQueue {
    pub fn new(client: Client, url: impl Into<String>) -> Self {
        JobQueue {
            client,
            url: url.into(),
            clock: None,
        }
    }

    /// The queue, with a client that measures this machine's clock against AWS's on every
    /// answer and every first delivery of a message (see [`crate::clock`]).
    pub fn measuring(
        aws: &aws_config::SdkConfig,
        url: impl Into<String>,
        clock: &crate::clock::ServerClock,
    ) -> Self {
        let conf = aws_sdk_sqs::config::Builder::from(aws)
            .interceptor(clock.clone())
            .build();
        JobQueue {
            client: Client::from_conf(conf),
            url: url.into(),
            clock: Some(clock.clone()),
        }
    }

    pub fn from_sdk(aws: &aws_config::SdkConfig, url: impl Into<String>) -> Self {
        JobQueue::new(Client::new(aws), url)
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    /// The queue's message counts (approximate, as SQS reports them).
    pub async fn depth(&self) -> Result<Depth, QueueError> {
        use aws_sdk_sqs::types::QueueAttributeName as A;
        let out = self
            .client
            .get_queue_attributes()
            .queue_url(&self.url)
            .attribute_names(A::ApproximateNumberOfMessages)
            .attribute_names(A::ApproximateNumberOfMessagesNotVisible)
            .attribute_names(A::ApproximateNumberOfMessagesDelayed)
            .send()
            .await
            .map_err(classify)?;
        let attrs = out.attributes.unwrap_or_default();
        let get = |k: A| {
            attrs
                .get(&k)
                .and_then(|v| v.parse::<u32>().ok())
                .unwrap_or(0)
        };
        Ok(Depth {
            visible: get(A::ApproximateNumberOfMessages),
            in_flight: get(A::ApproximateNumberOfMessagesNotVisible),
            delayed: get(A::ApproximateNumberOfMessagesDelayed),
        })
    }

    /// How long the queue keeps a message from when it was sent (`MessageRetentionPeriod`).
    pub async fn retention(&self) -> Result<Duration, QueueError> {
        use aws_sdk_sqs::types::QueueAttributeName as A;
        let out = self
            .client
            .get_queue_attributes()
            .queue_url(&self.url)
            .attribute_names(A::MessageRetentionPeriod)
            .send()
            .await
            .map_err(classify)?;
        let secs = out
            .attributes
            .unwrap_or_default()
            .get(&A::MessageRetentionPeriod)
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(4 * 86_400);
        Ok(Duration::from_secs(secs))
    }

    /// The queue's name: the last segment of its URL.
    pub fn name(&self) -> &str {
        self.url.rsplit('/').next().unwrap_or(&self.url)
    }

    pub async fn send(&self, body: String) -> Result<(), QueueError> {
        self.client
            .send_message()
            .queue_url(&self.url)
            .message_body(body)
            .send()
            .await
            .map(|_| ())
            .map_err(classify)
    }

    /// Long-polls for up to `max` messages (at most 10), waiting up to `wait`; what it takes
    /// stays hidden for the queue's visibility timeout.
    pub async fn receive(&self, max: i32, wait: Duration) -> Result<Vec<Received>, QueueError> {
        self.receive_hidden(max, wait, None).await
    }

    /// [`JobQueue::receive`], hiding what it takes for `hide` instead of the queue's visibility
    /// timeout when given.
    pub async fn receive_hidden(
        &self,
        max: i32,
        wait: Duration,
        hide: Option<Duration>,
    ) -> Result<Vec<Received>, QueueError> {
        let sent = crate::clock::raw_now_ms();
        let out = self
            .client
            .receive_message()
            .queue_url(&self.url)
            .max_number_of_messages(max.clamp(1, 10))
            .wait_time_seconds(i32::try_from(wait.as_secs()).unwrap_or(20).min(20))
            .set_visibility_timeout(hide.map(visibility_seconds))
            .message_system_attribute_names(MessageSystemAttributeName::ApproximateReceiveCount)
            .message_system_attribute_names(MessageSystemAttributeName::SentTimestamp)
            .message_system_attribute_names(
                MessageSystemAttributeName::ApproximateFirstReceiveTimestamp,
            )
            .message_attribute_names(FIRST_SENT)
            .send()
            .await
            .map_err(classify)?;
        let received = crate::clock::raw_now_ms();
        Ok(out
            .messages
            .unwrap_or_default()
            .into_iter()
            .filter_map(|m| {
                // A message sent again (see `send_again`) keeps the time it was first sent.
                let first_sent = m
                    .message_attributes
                    .as_ref()
                    .and_then(|a| a.get(FIRST_SENT))
                    .and_then(|v| v.string_value())
                    .and_then(|v| v.parse::<i64>().ok());
                let attrs = m.attributes.unwrap_or_default();
                let num = |k: MessageSystemAttributeName| {
                    attrs
                        .get(&k)
                        .and_then(|v| v.parse::<i64>().ok())
                        .unwrap_or(0)
                };
                // Delivered for the first time by this very receive: its first-receive stamp
                // is AWS's time while the call ran.
                if let Some(clock) = &self.clock {
                    let first = num(MessageSystemAttributeName::ApproximateFirstReceiveTimestamp);
                    if num(MessageSystemAttributeName::ApproximateReceiveCount) == 1 && first > 0 {
                        clock.observe_first_receive(sent, received, first);
                    }
                }
                Some(Received {
                    receive_count: u32::try_from(num(
                        MessageSystemAttributeName::ApproximateReceiveCount,
                    ))
                    .unwrap_or(1),
                    sent_at: Millis(
                        first_sent
                            .unwrap_or_else(|| num(MessageSystemAttributeName::SentTimestamp)),
                    ),
                    message_id: m.message_id.unwrap_or_default(),
                    body: m.body.unwrap_or_default(),
                    receipt: ReceiptHandle(m.receipt_handle?),
                })
            })
            .collect())
    }

    pub async fn delete(&self, receipt: &ReceiptHandle) -> Result<(), QueueError> {
        self.client
            .delete_message()
            .queue_url(&self.url)
            .receipt_handle(&receipt.0)
            .send()
            .await
            .map(|_| ())
            .map_err(classify)
    }

    /// Deletes up to 10 deliveries in one request. Returns the receipts SQS refused.
    pub async fn delete_batch(
        &self,
        receipts: &[ReceiptHandle],
    ) -> Result<Vec<ReceiptHandle>, QueueError> {
        if receipts.is_empty() {
            return Ok(Vec::new());
        }
        let entries = receipts
            .iter()
            .enumerate()
            .map(|(i, r)| {
                DeleteMessageBatchRequestEntry::builder()
                    .id(i.to_string())
                    .receipt_handle(&r.0)
                    .build()
                    .expect("id and receipt handle are set")
            })
            .collect();
        let out = self
            .client
            .delete_message_batch()
            .queue_url(&self.url)
            .set_entries(Some(entries))
            .send()
            .await
            .map_err(classify)?;
        Ok(refused(&out.failed, receipts))
    }

    /// Replaces a delivered message with a fresh copy, visible after `delay` (at most 15 minutes,
    /// SQS's longest delay), then deletes the delivery: the copy starts again from no
    /// deliveries, so an event that is not the job's fault (a release, a claim the table refused)
    /// never pushes it towards the dead-letter queue. The copy keeps the time the message was
    /// first sent. Should the delete fail, the duplicate is harmless: every claim is fenced.
    pub async fn send_again(&self, msg: &Received, delay: Duration) -> Result<(), QueueError> {
        let first_sent = aws_sdk_sqs::types::MessageAttributeValue::builder()
            .data_type("Number")
            .string_value(msg.sent_at.0.to_string())
            .build()
            .map_err(|e| QueueError::Unavailable(Box::new(e)))?;
        self.client
            .send_message()
            .queue_url(&self.url)
            .message_body(&msg.body)
            .delay_seconds(i32::try_from(delay.min(MAX_DELAY).as_secs()).unwrap_or(900))
            .message_attributes(FIRST_SENT, first_sent)
            .send()
            .await
            .map_err(classify)?;
        self.delete(&msg.receipt).await
    }

    /// Hides up to 10 deliveries for `timeout` from now, in one request. Returns the receipts
    /// SQS refused.
    pub async fn change_visibility_batch(
        &self,
        receipts: &[ReceiptHandle],
        timeout: Duration,
    ) -> Result<Vec<ReceiptHandle>, QueueError> {
        if receipts.is_empty() {
            return Ok(Vec::new());
        }
        let entries = receipts
            .iter()
            .enumerate()
            .map(|(i, r)| {
                ChangeMessageVisibilityBatchRequestEntry::builder()
                    .id(i.to_string())
                    .receipt_handle(&r.0)
                    .visibility_timeout(visibility_seconds(timeout))
                    .build()
                    .expect("id and receipt handle are set")
            })
            .collect();
        let out = self
            .client
            .change_message_visibility_batch()
            .queue_url(&self.url)
            .set_entries(Some(entries))
            .send()
            .await
            .map_err(classify)?;
        Ok(refused(&out.failed, receipts))
    }

    /// Hides a delivery for `timeout` from now (0 makes it visible at once).
    pub async fn change_visibility(
        &self,
        receipt: &ReceiptHandle,
        timeout: Duration,
    ) -> Result<(), QueueError> {
        self.client
            .change_message_visibility()
            .queue_url(&self.url)
            .receipt_handle(&receipt.0)
            .visibility_timeout(visibility_seconds(timeout))
            .send()
            .await
            .map(|_| ())
            .map_err(classify)
    }
}

/// The receipts a batch request refused, from its failed entries (ids are the receipts' places).
fn refused(
    failed: &[aws_sdk_sqs::types::BatchResultErrorEntry],
    receipts: &[ReceiptHandle],
) -> Vec<ReceiptHandle> {
    failed
        .iter()
        .filter_map(|f| f.id.parse::<usize>().ok())
        .filter_map(|i| receipts.get(i).cloned())
        .collect()
}

/// Bytes of a message kept for its attributes: SQS counts them in its size limit.
pub const ATTRIBUTE_ROOM: usize = 1024;

/// The message attribute carrying when a message sent again was first sent, in epoch ms.
const FIRST_SENT: &str = "SluiceFirstSent";
/// SQS's longest delivery delay.
const MAX_DELAY: Duration = Duration::from_secs(900);

fn visibility_seconds(d: Duration) -> i32 {
    i32::try_from(d.min(MAX_VISIBILITY).as_secs()).unwrap_or(43_200)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelopes_round_trip_and_refuse_what_they_cannot_read() {
        let id = JobId::generate();
        let input = RawValue::from_string("{\"text\":\"hi\"}".into()).unwrap();
        let body = Envelope::new(id.clone(), &input).encode().unwrap();
        let back = Envelope::decode(&body).unwrap();
        assert_eq!(back.job_id, id);
        assert_eq!(back.input.get(), "{\"text\":\"hi\"}");

        let cases = [
            ("garbage", "not a sluice job message"),
            ("{\"v\":1}", "not a sluice job message"),
            (
                "{\"v\":1,\"job_id\":\"nope\",\"input\":1}",
                "not a sluice job message",
            ),
            (
                &*format!("{{\"v\":2,\"job_id\":\"{id}\",\"input\":1}}"),
                "version 2 is not supported",
            ),
        ];
        for (body, want) in cases {
            let err = Envelope::decode(body).unwrap_err();
            assert!(err.contains(want), "{body}: {err}");
        }
    }

    #[test]
    fn envelopes_that_do_not_fit_one_message_are_refused() {
        let big = format!("\"{}\"", "x".repeat(MAX_MESSAGE_BYTES));
        let input = RawValue::from_string(big).unwrap();
        let err = Envelope::new(JobId::generate(), &input)
            .encode()
            .unwrap_err();
        assert!(matches!(err, QueueError::TooLarge { size } if size > MAX_MESSAGE_BYTES));
    }

    #[test]
    fn visibility_is_clamped_to_what_sqs_allows() {
        assert_eq!(visibility_seconds(Duration::ZERO), 0);
        assert_eq!(visibility_seconds(Duration::from_millis(1500)), 1);
        assert_eq!(visibility_seconds(Duration::from_secs(50_000)), 43_200);
    }
}
