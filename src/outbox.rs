//! Webhook delivery from a durable record: the outbox is the jobs table itself.
//!
//! The write that ends a job also makes its announcement due (`notify_at`, see
//! [`crate::store`]), so the announcement exists exactly when the outcome does. A job with a
//! webhook is then in the sparse notify-due index until its announcement is delivered or given
//! up. Deliverers take an attempt with a conditional write (one wins, and holds it for
//! [`DELIVERY_LEASE`]), sign the job's view with its owner's secret, POST it with
//! [`webhook::send`] (which checks the target again at send time), and record the outcome on
//! the attempt they took. The worker delivers right after it records an outcome (the fast
//! path); the backlog function delivers whatever is due every minute: retries on the schedule
//! of [`webhook::next_attempt`], and the jobs whose worker died between the outcome and the
//! delivery. Delivery is at least once; the `webhook-id` is stable per job and terminal state,
//! so receivers dedupe on it.
//!
//! Each owner has one signing secret, stored in the table under a hash of the owner
//! ([`Secrets`]); a rotation keeps the replaced secret signing too for [`ROTATION_OVERLAP`].

use std::hash::{Hash, Hasher};
use std::time::{Duration, Instant};

use crate::api::{sha256_hex, JobView};
use crate::events::{Announcement, Publisher};
use crate::job::{JobId, JobRecord, Owner, Sink};
use crate::payload::Payloads;
use crate::store::{DeliveryEnd, JobStore, StoreError, StoredSecret, NOTIFY_SHARDS};
use crate::time::Millis;
use crate::webhook::{
    self, DeliveryOutcome, RandomError, RetryReason, Secret, TargetPolicy, WebhookEvent,
    DELIVERY_TIMEOUT,
};

/// How long a taken attempt is held: past it, another deliverer may try again (the one that
/// took it died, or its answer was lost). Well beyond the longest attempt.
pub const DELIVERY_LEASE: Duration = Duration::from_secs(60);

/// How long a replaced secret still signs webhooks after a rotation, so receivers can move to
/// the new one without missing a message.
pub const ROTATION_OVERLAP: Duration = Duration::from_secs(24 * 3600);

/// The longest pause a receiver's `Retry-After` can add to the schedule.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(12 * 3600);

/// How much of a failed answer is kept in the job's delivery record.
const ERROR_CHARS: usize = 300;

#[derive(Debug, thiserror::Error)]
pub enum OutboxError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Random(#[from] RandomError),
    #[error("the owner's stored webhook secret cannot be read")]
    Secret(#[source] webhook::SecretError),
}

/// The owners' signing secrets.
#[derive(Debug, Clone)]
pub struct Secrets {
    pub store: JobStore,
}

/// An owner's secrets, ready to sign with.
#[derive(Debug, Clone)]
pub struct SigningKeys {
    pub current: Secret,
    /// The secret before the last rotation, while it still signs.
    pub previous: Option<Secret>,
    pub stored: StoredSecret,
}

/// The name a pipeline job's stored result is copied to, under its sink's base.
pub const SINK_RESULT_NAME: &str = "result";

/// The suffix of the object a job's view is written to in its sink: `.success` for a job that
/// succeeded, `.failed` for any other end (failed, cancelled, expired), as the AWS sample
/// writes them. Pure.
pub fn sink_suffix(status: crate::job::Status) -> &'static str {
    if status == crate::job::Status::Succeeded {
        ".success"
    } else {
        ".failed"
    }
}

/// The hash that keys an owner's secret item.
fn owner_hash(owner: &Owner) -> String {
    sha256_hex(&[b"webhook-secret", owner.as_str().as_bytes()])
}

impl Secrets {
    /// The owner's secret, made on first use.
    pub async fn get(&self, owner: &Owner, now: Millis) -> Result<SigningKeys, OutboxError> {
        let fresh = Secret::generate()?.expose();
        let stored = self
            .store
            .webhook_secret(&owner_hash(owner), owner, &fresh, now)
            .await?;
        keys(stored, now)
    }

    /// Replaces the owner's secret with a new one; the old one signs too for
    /// [`ROTATION_OVERLAP`].
    pub async fn rotate(&self, owner: &Owner, now: Millis) -> Result<SigningKeys, OutboxError> {
        let hash = owner_hash(owner);
        // A concurrent rotation may win between the read and the write: read again, once.
        let mut tries = 0;
        loop {
            let seen = self.get(owner, now).await?;
            let fresh = Secret::generate()?.expose();
            match self
                .store
                .rotate_webhook_secret(
                    &hash,
                    &seen.stored.current,
                    &fresh,
                    now,
                    now.plus(ROTATION_OVERLAP),
                )
                .await
            {
                Ok(stored) => return keys(stored, now),
                Err(StoreError::Conflict { .. }) if tries == 0 => tries += 1,
                Err(e) => return Err(e.into()),
            }
        }
    }
}

fn keys(stored: StoredSecret, now: Millis) -> Result<SigningKeys, OutboxError> {
    let current = Secret::parse(&stored.current).map_err(OutboxError::Secret)?;
    let previous = match &stored.previous {
        Some((text, until)) if *until > now => {
            Some(Secret::parse(text).map_err(OutboxError::Secret)?)
        }
        _ => None,
    };
    Ok(SigningKeys {
        current,
        previous,
        stored,
    })
}

/// What an attempt's outcome means for the announcement: delivered, retried at a time, or given
/// up. `attempts` counts this attempt; `unit` in `[0, 1)` spreads retries. Pure.
pub fn after_attempt(
    outcome: &Result<DeliveryOutcome, webhook::TargetError>,
    attempts: u32,
    now: Millis,
    unit: f64,
) -> DeliveryEnd {
    let (status, error, retry_after) = match outcome {
        Ok(DeliveryOutcome::Delivered(code)) => {
            return DeliveryEnd::Delivered {
                status: code.as_u16(),
            }
        }
        Ok(DeliveryOutcome::Gone) => {
            return DeliveryEnd::GiveUp {
                status: Some(410),
                error: "the receiver answered 410 Gone: no more attempts".into(),
            }
        }
        Ok(DeliveryOutcome::Retry {
            reason,
            retry_after,
        }) => {
            let status = match reason {
                RetryReason::Status { status, .. } => Some(status.as_u16()),
                _ => None,
            };
            (status, describe_retry(reason), *retry_after)
        }
        Err(e) => (None, error_chain(e), None),
    };
    match webhook::next_attempt(attempts) {
        Some(delay) => {
            let wait = webhook::jittered(delay, unit)
                .max(retry_after.unwrap_or_default().min(MAX_RETRY_AFTER));
            DeliveryEnd::Retry {
                status,
                error,
                next_at: now.plus(wait),
            }
        }
        None => DeliveryEnd::GiveUp {
            status,
            error: format!("{error}; given up after {attempts} attempts"),
        },
    }
}

fn describe_retry(reason: &RetryReason) -> String {
    match reason {
        RetryReason::Status { status, excerpt } if !excerpt.trim().is_empty() => {
            let excerpt: String = excerpt.trim().chars().take(ERROR_CHARS).collect();
            format!("the receiver answered HTTP {}: {excerpt}", status.as_u16())
        }
        other => error_chain(other),
    }
}

/// An error and its causes on one line.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text.chars().take(ERROR_CHARS).collect()
}

/// The done-set name of a job's webhook.
const WEBHOOK_TARGET: &str = "webhook";

/// How an attempt ends when its webhook (if it had one to make) ended as `webhook` and its
/// events were published but for `unpublished` (the first error): the end to record, and the
/// webhook's own end to record done when the attempt goes on for the events alone. Pure.
pub fn settle(
    webhook: Option<DeliveryEnd>,
    unpublished: Option<String>,
    attempts: u32,
    now: Millis,
    unit: f64,
) -> (DeliveryEnd, Option<DeliveryEnd>) {
    // The webhook's last answer stays on record while the events alone are retried.
    let retry_publish = |error: String, answered: Option<u16>| {
        let outcome = Ok(DeliveryOutcome::Retry {
            reason: RetryReason::Publish(error),
            retry_after: None,
        });
        match after_attempt(&outcome, attempts, now, unit) {
            DeliveryEnd::Retry { error, next_at, .. } => DeliveryEnd::Retry {
                status: answered,
                error,
                next_at,
            },
            DeliveryEnd::GiveUp { error, .. } => DeliveryEnd::GiveUp {
                status: answered,
                error,
            },
            delivered => delivered,
        }
    };
    match (webhook, unpublished) {
        (None, None) => (DeliveryEnd::Delivered { status: 200 }, None),
        (Some(end), None) => (end, None),
        // The webhook is tried again anyway, and the events with it.
        (Some(end @ DeliveryEnd::Retry { .. }), Some(_)) => (end, None),
        // The webhook is done (delivered, or given up): the events alone are tried again.
        (Some(end), Some(error)) => {
            let answered = match &end {
                DeliveryEnd::Delivered { status } => Some(*status),
                DeliveryEnd::GiveUp { status, .. } | DeliveryEnd::Retry { status, .. } => *status,
            };
            (retry_publish(error, answered), Some(end))
        }
        (None, Some(error)) => (retry_publish(error, None), None),
    }
}

/// A number in `[0, 1)` from the job and the attempt, to spread the retries of announcements
/// that failed together. Pure.
fn spread(id: &JobId, attempts: u32) -> f64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    (id.to_string(), attempts).hash(&mut h);
    (h.finish() % 10_000) as f64 / 10_000.0
}

/// The deliverer.
#[derive(Debug, Clone)]
pub struct Outbox {
    pub store: JobStore,
    /// Which targets may be reached (checked again at each attempt).
    pub policy: TargetPolicy,
    /// The longest one attempt may take.
    pub timeout: Duration,
    /// The payload bucket, whose outputs a pipeline job's sink gets copies of.
    pub payloads: Option<Payloads>,
    /// The deployment's SNS topics and EventBridge bus, for the jobs it publishes.
    pub events: Option<Publisher>,
}

/// What one attempt came to; `None` from [`Outbox::deliver`] when it made none (another
/// deliverer holds the announcement, or there is none to make).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attempted {
    pub id: JobId,
    pub end: DeliveryEnd,
}

/// What one pass over the due announcements did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Pass {
    pub attempted: Vec<Attempted>,
    /// Whether the pass went through every shard before its budget ran out.
    pub complete: bool,
}

impl Outbox {
    pub fn new(store: JobStore, policy: TargetPolicy) -> Self {
        Outbox {
            store,
            policy,
            timeout: DELIVERY_TIMEOUT,
            payloads: None,
            events: None,
        }
    }

    /// Publishes the ends of the jobs marked so with `publisher` (when it has any target).
    pub fn with_events(mut self, publisher: Publisher) -> Self {
        self.events = publisher.targets.any().then_some(publisher);
        self
    }

    /// Writes pipeline jobs' outcomes with `payloads`' client, copying their outputs from its
    /// bucket.
    pub fn with_payloads(mut self, payloads: Payloads) -> Self {
        self.payloads = Some(payloads);
        self
    }

    /// The fast path, right after `job` was recorded ended: its announcement, when it has a
    /// webhook, a sink or published events and the announcement is due.
    pub async fn deliver_ended(&self, job: &JobRecord) -> Result<Option<Attempted>, OutboxError> {
        match job.delivery.due_at {
            Some(due) if job.is_announced() => self.deliver(&job.id, due, Millis::now()).await,
            _ => Ok(None),
        }
    }

    /// Writes a pipeline job's outcome to its sink: its output files and a stored result copied
    /// under `<base>/` (server-side copies), then its view as `<base>.success` or
    /// `<base>.failed`, written last so that its presence says the rest is there. Every write
    /// replaces the one before: an attempt made again writes the same objects.
    async fn write_sink(&self, job: &JobRecord, sink: &Sink) -> Result<(), String> {
        let payloads = self.payloads.as_ref().ok_or_else(|| {
            format!(
                "this deliverer has no payload bucket ({} is not set)",
                crate::env::PAYLOAD_BUCKET
            )
        })?;
        let mut copies: Vec<(&str, u64, String)> = job
            .outputs
            .iter()
            .map(|f| {
                (
                    f.object.key.as_str(),
                    f.object.size,
                    format!("{}/{}", sink.base, f.name),
                )
            })
            .collect();
        if let Some(r) = &job.result_object {
            copies.push((
                r.key.as_str(),
                r.size,
                format!("{}/{}", sink.base, SINK_RESULT_NAME),
            ));
        }
        let client = payloads.client();
        for (from, size, to) in copies {
            payloads
                .copy_to(from, size, &sink.bucket, &to)
                .await
                .map_err(|e| {
                    format!(
                        "copying {from} to s3://{}/{to}: {}",
                        sink.bucket,
                        crate::aws::DisplayErrorContext(&e)
                    )
                })?;
        }
        let mut view = JobView::of(job);
        view.delivery = None;
        let body = serde_json::to_vec_pretty(&view).map_err(|e| e.to_string())?;
        let key = format!("{}{}", sink.base, sink_suffix(job.status));
        client
            .put_object()
            .bucket(&sink.bucket)
            .key(&key)
            .content_type("application/json")
            .body(body.into())
            .send()
            .await
            .map_err(|e| {
                format!(
                    "writing s3://{}/{key}: {}",
                    sink.bucket,
                    crate::aws::DisplayErrorContext(&e)
                )
            })?;
        Ok(())
    }

    /// Makes one attempt at the announcement of job `id` due at `due_at` (its `notify_at` as
    /// read), judging time by `now`.
    pub async fn deliver(
        &self,
        id: &JobId,
        due_at: Millis,
        now: Millis,
    ) -> Result<Option<Attempted>, OutboxError> {
        let lease_until = now.plus(DELIVERY_LEASE);
        let job = match self.store.take_delivery(id, due_at, lease_until, now).await {
            Ok(job) => job,
            Err(StoreError::Conflict { current }) => {
                // Not terminal any more (redriven) or without a webhook: nothing to announce.
                if let Some(cur) = current {
                    let stale = !cur.status.is_terminal() || !cur.is_announced();
                    if stale && cur.delivery.due_at == Some(due_at) {
                        self.store.drop_delivery(id, due_at).await?;
                    }
                }
                return Ok(None);
            }
            Err(e) => return Err(e.into()),
        };
        let attempts = job.delivery.attempts;
        let done = |target: &str| job.delivery.done.iter().any(|d| d == target);
        // The sink first: a webhook or an event tells of an outcome whose files are where they
        // belong. Writing it again is harmless, so it is not recorded done.
        if let Some(sink) = &job.sink {
            if let Err(e) = self.write_sink(&job, sink).await {
                let outcome = Ok(DeliveryOutcome::Retry {
                    reason: RetryReason::Sink(e),
                    retry_after: None,
                });
                let now = Millis::now().max(now);
                let end = after_attempt(&outcome, attempts, now, spread(id, attempts));
                return self.finish(id, lease_until, end, attempts, now).await;
            }
        }
        let webhook_end = match &job.webhook {
            Some(url) if !done(WEBHOOK_TARGET) => {
                let outcome = self.send_webhook(&job, url, now).await?;
                Some(after_attempt(
                    &outcome,
                    attempts,
                    Millis::now().max(now),
                    spread(id, attempts),
                ))
            }
            _ => None,
        };
        // Then the deployment's topic and bus, each recorded done as soon as it is, so that a
        // webhook that keeps failing does not publish the event again on every retry.
        let mut unpublished = None;
        if let (true, Some(publisher)) = (job.publish, &self.events) {
            // Taken only once ended (`take_delivery`), the job has an end to announce.
            let Some(end) = Announcement::of(&job) else {
                return Ok(None);
            };
            for target in publisher.targets.targets_for(job.status) {
                if done(target.as_str()) {
                    continue;
                }
                match publisher.publish(target, &end).await {
                    Ok(()) => {
                        tracing::info!(job_id = %id, target = target.as_str(), "job's end published");
                        match self
                            .store
                            .announced(id, lease_until, target.as_str(), None, Millis::now())
                            .await
                        {
                            Ok(()) => {}
                            // Another deliverer took over: it records its own attempt.
                            Err(StoreError::Conflict { .. }) => return Ok(None),
                            Err(e) => return Err(e.into()),
                        }
                    }
                    Err(error) => {
                        tracing::warn!(job_id = %id, target = target.as_str(), %error, "job's end not published");
                        unpublished.get_or_insert(error);
                    }
                }
            }
        }
        let now = Millis::now().max(now);
        let (end, webhook_done) = settle(
            webhook_end,
            unpublished,
            attempts,
            now,
            spread(id, attempts),
        );
        if let Some(webhook) = webhook_done {
            match self
                .store
                .announced(id, lease_until, WEBHOOK_TARGET, Some(&webhook), now)
                .await
            {
                Ok(()) => {}
                Err(StoreError::Conflict { .. }) => return Ok(None),
                Err(e) => return Err(e.into()),
            }
        }
        self.finish(id, lease_until, end, attempts, now).await
    }

    /// Signs and sends one attempt at `job`'s webhook to `url`.
    async fn send_webhook(
        &self,
        job: &JobRecord,
        url: &str,
        now: Millis,
    ) -> Result<Result<DeliveryOutcome, webhook::TargetError>, OutboxError> {
        let (headers, body) = match self.sign(job, now).await {
            Ok(signed) => signed,
            Err(e) => {
                // The attempt stays counted and the lease runs out: the next pass tries again.
                tracing::warn!(job_id = %job.id, error = %crate::aws::DisplayErrorContext(&e), "could not sign the webhook");
                return Err(e);
            }
        };
        let sent = webhook::send(url, self.policy, &headers, body, self.timeout);
        // The send's own timeout bounds it; this bounds the lookup before it too.
        Ok(
            match tokio::time::timeout(self.timeout + Duration::from_secs(5), sent).await {
                Ok(outcome) => outcome,
                Err(_) => Ok(DeliveryOutcome::Retry {
                    reason: RetryReason::Status {
                        status: reqwest::StatusCode::GATEWAY_TIMEOUT,
                        excerpt: "the attempt took too long".into(),
                    },
                    retry_after: None,
                }),
            },
        )
    }

    /// Logs and records how the attempt taken until `lease_until` ended.
    async fn finish(
        &self,
        id: &JobId,
        lease_until: Millis,
        end: DeliveryEnd,
        attempts: u32,
        now: Millis,
    ) -> Result<Option<Attempted>, OutboxError> {
        match &end {
            DeliveryEnd::Delivered { status } => {
                tracing::info!(job_id = %id, attempts, status, "job's end announced")
            }
            DeliveryEnd::Retry { error, next_at, .. } => {
                tracing::warn!(job_id = %id, attempts, %error, next_at = %next_at, "job's end not announced; will retry")
            }
            DeliveryEnd::GiveUp { error, .. } => {
                tracing::warn!(job_id = %id, attempts, %error, "job's end announcement given up")
            }
        }
        match self.store.record_delivery(id, lease_until, &end, now).await {
            // The lease ran out and another deliverer took over, or the job was redriven: that
            // one records its own attempt.
            Ok(_) | Err(StoreError::Conflict { .. }) => {}
            Err(e) => return Err(e.into()),
        }
        Ok(Some(Attempted {
            id: id.clone(),
            end,
        }))
    }

    /// The headers and body of an attempt at `job`'s announcement, signed now.
    async fn sign(
        &self,
        job: &JobRecord,
        now: Millis,
    ) -> Result<(webhook::WebhookHeaders, String), OutboxError> {
        let keys = Secrets {
            store: self.store.clone(),
        }
        .get(&job.owner, now)
        .await?;
        let mut view = JobView::of(job);
        // The body is the same on every attempt: the delivery's own state is not part of it.
        view.delivery = None;
        let event = WebhookEvent::of(view).map_err(|e| {
            OutboxError::Store(StoreError::Corrupt {
                id: job.id.to_string(),
                reason: e.to_string(),
            })
        })?;
        let body = event.to_body();
        let msg_id = webhook::message_id(&job.id, event.kind, job.redrives);
        let headers = webhook::sign(
            &keys.current,
            keys.previous.as_ref(),
            &msg_id,
            Millis::now().as_epoch_seconds(),
            &body,
        );
        Ok((headers, body))
    }

    /// Delivers every announcement due at `now`, shard by shard, for at most `budget`.
    pub async fn deliver_due(&self, now: Millis, budget: Duration) -> Result<Pass, OutboxError> {
        let started = Instant::now();
        let mut pass = Pass::default();
        for shard in 0..NOTIFY_SHARDS {
            let mut start = None;
            loop {
                // Room for one more round of attempts within the budget.
                if started.elapsed() + self.timeout >= budget {
                    return Ok(pass);
                }
                let (page, next) = self
                    .store
                    .notify_due(&shard.to_string(), now, 25, start)
                    .await?;
                let mut attempts = tokio::task::JoinSet::new();
                for (id, due_at) in page {
                    let outbox = self.clone();
                    attempts.spawn(async move { outbox.deliver(&id, due_at, now).await });
                }
                while let Some(done) = attempts.join_next().await {
                    match done {
                        Ok(Ok(Some(a))) => pass.attempted.push(a),
                        Ok(Ok(None)) => {}
                        Ok(Err(e)) => {
                            tracing::warn!(error = %crate::aws::DisplayErrorContext(&e), "a webhook attempt failed")
                        }
                        Err(e) => tracing::warn!(error = %e, "a webhook attempt stopped"),
                    }
                }
                match next {
                    Some(key) => start = Some(key),
                    None => break,
                }
            }
        }
        pass.complete = true;
        Ok(pass)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::StatusCode;

    fn retry(
        status: u16,
        retry_after: Option<u64>,
    ) -> Result<DeliveryOutcome, webhook::TargetError> {
        Ok(DeliveryOutcome::Retry {
            reason: RetryReason::Status {
                status: StatusCode::from_u16(status).unwrap(),
                excerpt: "busy".into(),
            },
            retry_after: retry_after.map(Duration::from_secs),
        })
    }

    #[test]
    fn each_outcome_is_delivered_retried_on_the_schedule_or_given_up() {
        let now = Millis(1_000_000);
        let at = |secs: u64| now.plus(Duration::from_secs(secs));
        let refused = Err(webhook::TargetError::Url(webhook::UrlError::NotHttps));
        let cases: Vec<(
            &str,
            Result<DeliveryOutcome, webhook::TargetError>,
            u32,
            DeliveryEnd,
        )> = vec![
            (
                "2xx",
                Ok(DeliveryOutcome::Delivered(StatusCode::NO_CONTENT)),
                1,
                DeliveryEnd::Delivered { status: 204 },
            ),
            (
                "410",
                Ok(DeliveryOutcome::Gone),
                1,
                DeliveryEnd::GiveUp {
                    status: Some(410),
                    error: "the receiver answered 410 Gone: no more attempts".into(),
                },
            ),
            (
                "503 after the first attempt: 5 s",
                retry(503, None),
                1,
                DeliveryEnd::Retry {
                    status: Some(503),
                    error: "the receiver answered HTTP 503: busy".into(),
                    next_at: at(5),
                },
            ),
            (
                "a Retry-After longer than the schedule wins",
                retry(429, Some(120)),
                1,
                DeliveryEnd::Retry {
                    status: Some(429),
                    error: "the receiver answered HTTP 429: busy".into(),
                    next_at: at(120),
                },
            ),
            (
                "a Retry-After of days is capped",
                retry(503, Some(10 * 86_400)),
                1,
                DeliveryEnd::Retry {
                    status: Some(503),
                    error: "the receiver answered HTTP 503: busy".into(),
                    next_at: at(12 * 3600),
                },
            ),
            (
                "a refused target is retried like any failure",
                refused,
                3,
                DeliveryEnd::Retry {
                    status: None,
                    error: "the webhook URL must start with https://".into(),
                    next_at: at(1800),
                },
            ),
            (
                "the schedule spent",
                retry(500, None),
                8,
                DeliveryEnd::GiveUp {
                    status: Some(500),
                    error: "the receiver answered HTTP 500: busy; given up after 8 attempts".into(),
                },
            ),
        ];
        for (name, outcome, attempts, want) in cases {
            assert_eq!(after_attempt(&outcome, attempts, now, 0.0), want, "{name}");
        }
    }

    #[test]
    fn an_attempt_goes_on_for_whatever_is_not_done() {
        let now = Millis(1_000_000);
        let delivered = DeliveryEnd::Delivered { status: 204 };
        let gone = DeliveryEnd::GiveUp {
            status: Some(410),
            error: "gone".into(),
        };
        let webhook_retry = DeliveryEnd::Retry {
            status: Some(503),
            error: "busy".into(),
            next_at: now.plus(Duration::from_secs(5)),
        };
        let publish_retry = |attempts: u32, status: Option<u16>| DeliveryEnd::Retry {
            status,
            error: "the job's end could not be published: denied".into(),
            next_at: now.plus(webhook::next_attempt(attempts).unwrap()),
        };
        let denied = || Some("denied".to_string());
        // The case, the webhook's end, the first publishing error, the attempt, and what it comes to.
        type Case = (
            &'static str,
            Option<DeliveryEnd>,
            Option<String>,
            u32,
            (DeliveryEnd, Option<DeliveryEnd>),
        );
        let cases: Vec<Case> = vec![
            ("nothing left to do", None, None, 1, (DeliveryEnd::Delivered { status: 200 }, None)),
            ("the webhook alone", Some(delivered.clone()), None, 1, (delivered.clone(), None)),
            ("the webhook given up", Some(gone.clone()), None, 1, (gone.clone(), None)),
            ("both to try again", Some(webhook_retry.clone()), denied(), 1, (webhook_retry.clone(), None)),
            ("the events alone go on", Some(delivered.clone()), denied(), 2, (publish_retry(2, Some(204)), Some(delivered.clone()))),
            ("a webhook gone, the events go on", Some(gone.clone()), denied(), 1, (publish_retry(1, Some(410)), Some(gone.clone()))),
            ("events only", None, denied(), 3, (publish_retry(3, None), None)),
            (
                "events only, the schedule spent",
                None,
                denied(),
                8,
                (
                    DeliveryEnd::GiveUp {
                        status: None,
                        error: "the job's end could not be published: denied; given up after 8 attempts".into(),
                    },
                    None,
                ),
            ),
        ];
        for (name, webhook, unpublished, attempts, want) in cases {
            assert_eq!(
                settle(webhook, unpublished, attempts, now, 0.0),
                want,
                "{name}"
            );
        }
    }

    #[test]
    fn retries_spread_but_never_come_earlier_than_the_schedule() {
        let id = JobId::generate();
        let now = Millis(0);
        for attempts in 1..8 {
            let unit = spread(&id, attempts);
            assert!((0.0..1.0).contains(&unit));
            let DeliveryEnd::Retry { next_at, .. } =
                after_attempt(&retry(500, None), attempts, now, unit)
            else {
                panic!("retried")
            };
            let delay = webhook::next_attempt(attempts).unwrap();
            assert!(next_at >= now.plus(delay) && next_at <= now.plus(delay.mul_f64(1.2)));
        }
    }

    #[test]
    fn owners_have_distinct_secret_keys_that_name_no_one() {
        let a = owner_hash(&Owner::new("arn:aws:iam::123456789012:user/alice"));
        let b = owner_hash(&Owner::new("arn:aws:iam::123456789012:user/bob"));
        assert_ne!(a, b);
        assert!(!a.contains("alice") && a.len() == 64);
    }
}
