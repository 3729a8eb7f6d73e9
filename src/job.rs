//! The job model and its state machine, as plain types and pure functions.
//!
//! ```text
//! QUEUED ──claim──► RUNNING ──► SUCCEEDED | FAILED
//!   ▲                  │
//!   └──retry/release───┘
//! QUEUED | RUNNING ──cancel──► CANCELLED
//! QUEUED ──deadline passed before start──► EXPIRED
//! ```
//!
//! The DynamoDB store encodes the same rules as conditional writes; the functions here decide
//! what a worker does with a message, and are what the tests of the rules exercise.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::time::Millis;

/// A job's id: a ULID, so ids sort by submission time.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct JobId(ulid::Ulid);

impl JobId {
    /// One of `n` shards, from the random bits of the id: ids spread evenly over them. Pure.
    pub fn shard(&self, n: u32) -> u32 {
        (self.0 .0 % u128::from(n.max(1))) as u32
    }

    pub fn generate() -> Self {
        JobId(ulid::Ulid::new())
    }
}

/// The text is not a job id (a 26-character ULID).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "not a job id: expected 26 characters of Crockford base32, like 01JDQ3ZV1T8Y3G7Q0M9K2D4XWE"
)]
pub struct InvalidJobId;

impl FromStr for JobId {
    type Err = InvalidJobId;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ulid::Ulid::from_string(s)
            .map(JobId)
            .map_err(|_| InvalidJobId)
    }
}

impl TryFrom<String> for JobId {
    type Error = InvalidJobId;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl From<JobId> for String {
    fn from(id: JobId) -> String {
        id.to_string()
    }
}

impl fmt::Display for JobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

/// The caller a job belongs to, as established by the API's authorizer.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Owner(String);

impl Owner {
    pub fn new(identity: impl Into<String>) -> Self {
        Owner(identity.into())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Owner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A job's status. The same strings appear in DynamoDB, the API, the CLI and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Status {
    Queued,
    Running,
    Succeeded,
    Failed,
    Cancelled,
    Expired,
}

impl Status {
    pub const ALL: [Status; 6] = [
        Status::Queued,
        Status::Running,
        Status::Succeeded,
        Status::Failed,
        Status::Cancelled,
        Status::Expired,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Status::Queued => "QUEUED",
            Status::Running => "RUNNING",
            Status::Succeeded => "SUCCEEDED",
            Status::Failed => "FAILED",
            Status::Cancelled => "CANCELLED",
            Status::Expired => "EXPIRED",
        }
    }

    /// A terminal status never changes again.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            Status::Succeeded | Status::Failed | Status::Cancelled | Status::Expired
        )
    }

    /// Whether the state machine allows `self → next`.
    pub fn can_become(self, next: Status) -> bool {
        use Status::*;
        matches!(
            (self, next),
            (Queued, Running)
                | (Queued, Cancelled)
                | (Queued, Expired)
                | (Running, Running) // a new attempt takes over an expired lease
                | (Running, Queued) // retryable failure, or released on shutdown
                | (Running, Succeeded)
                | (Running, Failed)
                | (Running, Cancelled)
        )
    }
}

/// The status string is not one of sluice's statuses.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown job status {0:?}")]
pub struct UnknownStatus(pub String);

impl FromStr for Status {
    type Err = UnknownStatus;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Status::ALL
            .into_iter()
            .find(|st| st.as_str() == s)
            .ok_or_else(|| UnknownStatus(s.to_owned()))
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Everything sluice keeps about a job.
#[derive(Debug, Clone, PartialEq)]
pub struct JobRecord {
    pub id: JobId,
    pub owner: Owner,
    pub status: Status,
    /// Attempts started so far; also the fencing token of the current attempt.
    pub attempt: u32,
    pub max_attempts: u32,
    /// Attempts handed back by a stopping worker; they do not count against `max_attempts`.
    pub releases: u32,
    pub submitted_at: Millis,
    pub started_at: Option<Millis>,
    pub finished_at: Option<Millis>,
    /// The job expires instead of running when it has not started by then.
    pub deadline: Option<Millis>,
    pub lease_expires_at: Option<Millis>,
    pub worker_id: Option<String>,
    /// A token unique to the claim that started the current attempt: a claim whose write was
    /// applied but whose answer was lost knows the record as its own by it.
    pub claim_token: Option<String>,
    pub cancel_requested: bool,
    /// The handler's output, as JSON text.
    pub result: Option<String>,
    /// Why the job failed, or why its last attempt did.
    pub error: Option<String>,
    /// Size of the submitted input in bytes.
    pub input_bytes: u64,
    /// The time limit of one attempt the caller asked for; the worker's default when `None`.
    pub timeout_seconds: Option<u64>,
    /// What an attempt that runs past its time limit does.
    pub on_timeout: OnTimeout,
    /// The running job's latest progress report, stored with a heartbeat.
    pub progress: Option<Progress>,
    /// How many times an operator sent the job back to the queue after it ended `FAILED` in
    /// the dead-letter queue (`sluice dlq redrive`): the one way out of a terminal status.
    pub redrives: u32,
    /// How many times the dead-letter reconciler sent the job back to the jobs queue because
    /// its message ran out of deliveries while the job had attempts left.
    pub dlq_returns: u32,
    /// The URL POSTed a signed event on each terminal state, when the caller gave one.
    pub webhook: Option<String>,
    /// Where the announcement of the job's last terminal state stands.
    pub delivery: Delivery,
    /// The uploaded object the job reads its file from, when it names one.
    pub input_object: Option<crate::upload::InputObject>,
    /// The result, when it was too large to keep in the record: stored in the payload bucket
    /// (`result` is then `None`).
    pub result_object: Option<crate::output::StoredObject>,
    /// The files the handler wrote, stored in the payload bucket.
    pub outputs: Vec<crate::output::OutputFile>,
    /// Where a pipeline job's outcome is written when it ends (see [`crate::ingest`]).
    pub sink: Option<Sink>,
    /// Whether the deployment publishes the job's end to its SNS topics or EventBridge bus
    /// ([`crate::events`]): decided when the job is accepted.
    pub publish: bool,
}

/// Where the outcome of a job made from an object in a pipeline's bucket is written: the job's
/// view as `<base>.success` or `<base>.failed`, and its output files (and a stored result)
/// under `<base>/`, in `bucket`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sink {
    pub bucket: String,
    pub base: String,
}

/// The delivery of a job's webhook event for its last terminal state: recorded on the job's own
/// item, by the write that ends the job (so the announcement is durable exactly when the outcome
/// is) and by each delivery attempt after it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Delivery {
    /// When the next attempt is due (or, while an attempt runs, when its lease ends); `None`
    /// once delivered or given up, and before the job ends.
    pub due_at: Option<Millis>,
    /// Attempts started so far for this terminal state.
    pub attempts: u32,
    pub last_attempt_at: Option<Millis>,
    /// The HTTP status of the last answer, if the receiver answered.
    pub last_status: Option<u16>,
    /// Why the last attempt failed.
    pub last_error: Option<String>,
    pub delivered_at: Option<Millis>,
    /// When the delivery was given up: the schedule was spent, or the receiver answered 410.
    pub gave_up_at: Option<Millis>,
    /// The targets of this announcement already done (`sink`, `webhook`, `sns`,
    /// `eventbridge`), sorted.
    pub done: Vec<String>,
}

pub use crate::limits::MAX_JOB_TIMEOUT;

/// What an attempt that runs past its time limit does.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnTimeout {
    /// The job ends `FAILED` (the default: a job that ran too long once usually does again).
    #[default]
    Fail,
    /// The attempt fails retryably: the job runs again while it has attempts left.
    Retry,
}

impl OnTimeout {
    pub fn as_str(self) -> &'static str {
        match self {
            OnTimeout::Fail => "fail",
            OnTimeout::Retry => "retry",
        }
    }
}

/// How far a running job is, as its handler last reported.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Progress {
    /// From 0 to 1, when the handler knows.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fraction: Option<f64>,
    /// A short line for people, at most [`MAX_PROGRESS_MESSAGE`] characters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// The longest progress message kept, in characters.
pub const MAX_PROGRESS_MESSAGE: usize = 200;

impl Progress {
    /// A report made safe to store: the fraction clamped into `[0, 1]` (`None` when not a number),
    /// the message cut to [`MAX_PROGRESS_MESSAGE`] characters. Pure.
    pub fn new(fraction: Option<f64>, message: Option<&str>) -> Self {
        Progress {
            fraction: fraction
                .filter(|f| f.is_finite())
                .map(|f| f.clamp(0.0, 1.0)),
            message: message
                .map(|m| m.trim())
                .filter(|m| !m.is_empty())
                .map(|m| m.chars().take(MAX_PROGRESS_MESSAGE).collect()),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.fraction.is_none() && self.message.is_none()
    }
}

impl JobRecord {
    /// Whether the job's end is announced: to its webhook, to its pipeline's sink, or on the
    /// deployment's topics and bus.
    pub fn is_announced(&self) -> bool {
        self.webhook.is_some() || self.sink.is_some() || self.publish
    }

    /// A freshly submitted job.
    pub fn queued(
        id: JobId,
        owner: Owner,
        submitted_at: Millis,
        deadline: Option<Millis>,
        max_attempts: u32,
        input_bytes: u64,
    ) -> Self {
        JobRecord {
            id,
            owner,
            status: Status::Queued,
            attempt: 0,
            max_attempts,
            releases: 0,
            submitted_at,
            started_at: None,
            finished_at: None,
            deadline,
            lease_expires_at: None,
            worker_id: None,
            claim_token: None,
            cancel_requested: false,
            result: None,
            error: None,
            input_bytes,
            timeout_seconds: None,
            on_timeout: OnTimeout::Fail,
            progress: None,
            redrives: 0,
            dlq_returns: 0,
            webhook: None,
            delivery: Delivery::default(),
            input_object: None,
            result_object: None,
            outputs: Vec::new(),
            sink: None,
            publish: false,
        }
    }

    /// The status a reader should see at `now`: a queued job whose deadline has passed is
    /// expired even before a worker records it (a stored status changes only on a write).
    pub fn effective_status(&self, now: Millis) -> Status {
        match (self.status, self.deadline) {
            (Status::Queued, Some(deadline)) if deadline <= now && !self.has_started() => {
                Status::Expired
            }
            (status, _) => status,
        }
    }

    /// Whether an attempt ever started: a deadline only keeps a job from starting, so a job
    /// back in the queue after a retry or a release is not expired by it.
    pub fn has_started(&self) -> bool {
        self.attempt > 0
    }

    /// Attempts that count against `max_attempts`.
    pub fn attempts_used(&self) -> u32 {
        self.attempt.saturating_sub(self.releases)
    }

    pub fn lease_expired(&self, now: Millis) -> bool {
        self.lease_expires_at.is_none_or(|t| t <= now)
    }
}

/// What a worker does after its claim on a job was refused, judged from the record as it was.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClaimRefusal {
    /// The job is finished: delete the message.
    Delete,
    /// The job was never recorded, and its message is past [`ORPHAN_GRACE`]: take the id for
    /// good ([`crate::store::JobStore::bury`]), so that a submit still writing its record fails
    /// instead of leaving a job no message runs, then delete the message.
    Bury,
    /// The queued job's deadline passed: record `EXPIRED`, then delete the message.
    Expire,
    /// The job's owner asked to cancel while it ran, and the attempt ended without honouring
    /// it (its worker is gone, or it went back to the queue): record `CANCELLED`.
    Cancel,
    /// Another attempt holds a live lease: look again after this long.
    RetryLater(Duration),
}

/// How long a message may wait for its job record before it is deemed an orphan. The submit
/// path sends the message before it writes the record; a message older than this whose record
/// does not exist belongs to a submit that failed and answered an error.
pub const ORPHAN_GRACE: Duration = Duration::from_secs(60);

/// Decides what to do with a message whose claim was refused. `record` is the job as it was
/// when the claim was refused (`None` when there is no record), `message_age` how long ago the
/// message was first sent.
pub fn on_claim_refused(
    record: Option<&JobRecord>,
    now: Millis,
    message_age: Duration,
) -> ClaimRefusal {
    let Some(job) = record else {
        return if message_age >= ORPHAN_GRACE {
            ClaimRefusal::Bury
        } else {
            // The record may be a little behind its message: look again soon, then less and
            // less often, so that an orphan's deliveries reach the grace (and its delete) in a
            // handful of receives, well before the redrive policy would move it to the DLQ.
            let floor = Duration::from_secs(2);
            let until_grace = ORPHAN_GRACE.saturating_sub(message_age) + Duration::from_secs(1);
            ClaimRefusal::RetryLater(message_age.min(until_grace).max(floor))
        };
    };
    match job.status {
        s if s.is_terminal() => ClaimRefusal::Delete,
        // Asked while an earlier attempt ran, which then ended without seeing it.
        Status::Queued if job.cancel_requested => ClaimRefusal::Cancel,
        Status::Queued => match job.deadline {
            Some(deadline) if deadline <= now && !job.has_started() => ClaimRefusal::Expire,
            // Claimable: the claim lost a race with another write; try again soon.
            _ => ClaimRefusal::RetryLater(Duration::from_secs(1)),
        },
        Status::Running if job.cancel_requested && job.lease_expired(now) => ClaimRefusal::Cancel,
        Status::Running => {
            let left = job
                .lease_expires_at
                .map_or(Duration::ZERO, |t| t.since(now));
            ClaimRefusal::RetryLater(left.max(Duration::from_secs(1)))
        }
        // Every status is covered above; terminal ones by the guard.
        _ => ClaimRefusal::Delete,
    }
}

/// Whether a job just claimed has already used up its attempts on earlier attempts that never
/// finished (their workers died): it then ends `FAILED` instead of running again.
/// How many times a job may go back to the queue without spending an attempt because the
/// handler's machinery could not take it (a model server away, no process ready). Past this, such
/// a failure counts as an attempt: a job whose input itself brings the server down cannot loop
/// forever.
pub const MAX_FREE_RELEASES: u32 = 20;

/// Whether a job the handler could not take goes back to the queue without spending an attempt.
/// Pure.
pub fn release_is_free(job: &JobRecord) -> bool {
    job.releases < MAX_FREE_RELEASES
}

pub fn exhausted_by_lost_attempts(claimed: &JobRecord) -> bool {
    claimed.attempts_used() > claimed.max_attempts
}

/// The longest error kept in a job record, in bytes (the record holds 400 KB in all).
pub const MAX_ERROR_BYTES: usize = 16 * 1024;

/// An error made to fit in a record: cut on a character boundary, with a marker that gives the
/// whole length. Pure.
pub fn truncate_error(message: String) -> String {
    if message.len() <= MAX_ERROR_BYTES {
        return message;
    }
    let marker = format!(" … [truncated: {} bytes in all]", message.len());
    let mut end = MAX_ERROR_BYTES - marker.len();
    while !message.is_char_boundary(end) {
        end -= 1;
    }
    let mut out = message;
    out.truncate(end);
    out.push_str(&marker);
    out
}

/// How a finished attempt leaves the job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AttemptEnd {
    Succeeded,
    /// Back to `QUEUED`, visible again after the delay.
    Retry(Duration),
    Failed,
}

/// The retry policy: an exponential backoff, doubling from `base` up to `max`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    pub base: Duration,
    pub max: Duration,
}

/// How a process that keeps exiting is started again: a handler's program, or the local
/// stack's worker. 1 s, doubling, at most 30 s (no jitter: one process, one pause).
pub const RESTARTS: Backoff = Backoff {
    base: Duration::from_secs(1),
    max: Duration::from_secs(30),
};

impl Backoff {
    /// The delay before attempt `attempt + 1`, after attempt `attempt` (1-based) failed.
    /// `jitter` in `[0, 1)` spreads retries of jobs that failed together over the upper half
    /// of the interval ("equal jitter").
    pub fn delay(&self, attempt: u32, jitter: f64) -> Duration {
        let exp = attempt.saturating_sub(1).min(32);
        let full = self
            .base
            .saturating_mul(2u32.saturating_pow(exp))
            .min(self.max);
        let half = full / 2;
        half + half.mul_f64(jitter.clamp(0.0, 1.0))
    }
}

/// Decides how an attempt that ended with an error leaves the job.
pub fn after_error(job: &JobRecord, retryable: bool, backoff: &Backoff, jitter: f64) -> AttemptEnd {
    if retryable && job.attempts_used() < job.max_attempts {
        AttemptEnd::Retry(backoff.delay(job.attempts_used(), jitter))
    } else {
        AttemptEnd::Failed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(status: Status) -> JobRecord {
        let mut j = JobRecord::queued(
            JobId::generate(),
            Owner::new("alice"),
            Millis(1_000),
            None,
            3,
            2,
        );
        j.status = status;
        j
    }

    #[test]
    fn status_strings_round_trip_and_match_serde() {
        for s in Status::ALL {
            assert_eq!(s.as_str().parse::<Status>(), Ok(s));
            assert_eq!(
                serde_json::to_string(&s).unwrap(),
                format!("\"{}\"", s.as_str())
            );
        }
        assert!("queued".parse::<Status>().is_err());
    }

    #[test]
    fn transitions_follow_the_state_machine() {
        use Status::*;
        let allowed = [
            (Queued, Running),
            (Queued, Cancelled),
            (Queued, Expired),
            (Running, Running),
            (Running, Queued),
            (Running, Succeeded),
            (Running, Failed),
            (Running, Cancelled),
        ];
        for from in Status::ALL {
            for to in Status::ALL {
                let want = allowed.contains(&(from, to));
                assert_eq!(from.can_become(to), want, "{from} -> {to}");
            }
        }
        for s in Status::ALL {
            if s.is_terminal() {
                assert!(Status::ALL.iter().all(|&t| !s.can_become(t)), "{s}");
            }
        }
    }

    #[test]
    fn job_ids_parse_sort_by_time_and_reject_garbage() {
        let a = JobId::generate();
        std::thread::sleep(Duration::from_millis(2));
        let b = JobId::generate();
        assert!(a < b);
        assert!(a.to_string() < b.to_string());
        assert_eq!(a.to_string().parse::<JobId>(), Ok(a.clone()));
        for bad in [
            "",
            "nope",
            "01JDQ3ZV1T8Y3G7Q0M9K2D4XW",
            "01JDQ3ZV1T8Y3G7Q0M9K2D4XWE0",
            "../etc/passwd",
        ] {
            assert!(bad.parse::<JobId>().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn progress_reports_are_made_safe_to_store() {
        let long = "x".repeat(500);
        // (fraction, message) reported, then the fraction and message length stored.
        type Case<'a> = (Option<f64>, Option<&'a str>, Option<f64>, Option<usize>);
        let cases: &[Case] = &[
            (Some(0.5), Some("halfway"), Some(0.5), Some(7)),
            (Some(1.5), None, Some(1.0), None),
            (Some(-0.1), None, Some(0.0), None),
            (Some(f64::NAN), Some("  "), None, None),
            (
                Some(f64::INFINITY),
                Some(long.as_str()),
                None,
                Some(MAX_PROGRESS_MESSAGE),
            ),
            (None, Some(" scoring "), None, Some(7)),
        ];
        for (fraction, message, want_fraction, want_len) in cases {
            let p = Progress::new(*fraction, *message);
            assert_eq!(p.fraction, *want_fraction, "{fraction:?}");
            assert_eq!(p.message.as_ref().map(|m| m.chars().count()), *want_len);
        }
        assert!(Progress::new(None, Some("")).is_empty());
    }

    #[test]
    fn a_queued_job_past_its_deadline_reads_as_expired() {
        let mut j = job(Status::Queued);
        j.deadline = Some(Millis(5_000));
        let cases = [
            (Status::Queued, Millis(4_999), Status::Queued),
            (Status::Queued, Millis(5_000), Status::Expired),
            (Status::Running, Millis(9_000), Status::Running),
            (Status::Succeeded, Millis(9_000), Status::Succeeded),
        ];
        for (stored, now, want) in cases {
            j.status = stored;
            assert_eq!(j.effective_status(now), want, "{stored} at {now:?}");
        }
        j.deadline = None;
        j.status = Status::Queued;
        assert_eq!(j.effective_status(Millis(i64::MAX)), Status::Queued);

        // A deadline is about starting: a job that started, then went back to the queue (a
        // retry, a release), is not expired by it.
        j.deadline = Some(Millis(5_000));
        j.attempt = 1;
        assert_eq!(j.effective_status(Millis(9_000)), Status::Queued);
    }

    #[test]
    fn an_orphan_is_hidden_long_enough_to_be_deleted_before_the_redrive_limit() {
        // Deliveries of a message whose record never appears, each hidden as decided.
        let now = Millis(100_000);
        let mut age = Duration::ZERO;
        let mut deliveries = 0;
        loop {
            deliveries += 1;
            match on_claim_refused(None, now, age) {
                ClaimRefusal::Bury => break,
                ClaimRefusal::RetryLater(hide) => {
                    assert!(hide >= Duration::from_secs(2), "{hide:?}");
                    age += hide + Duration::from_millis(100);
                }
                other => panic!("{other:?}"),
            }
            assert!(
                deliveries < 10,
                "still not deleted after {deliveries} deliveries"
            );
        }
        assert!(age >= ORPHAN_GRACE);
    }

    #[test]
    fn refused_claims_are_judged_from_the_old_record() {
        let now = Millis(100_000);
        let young = Duration::from_secs(1);
        let old = ORPHAN_GRACE;

        let mut expired = job(Status::Queued);
        expired.deadline = Some(Millis(99_000));
        let mut live_lease = job(Status::Running);
        live_lease.lease_expires_at = Some(Millis(130_000));
        let mut cancel_dead = job(Status::Running);
        cancel_dead.cancel_requested = true;
        cancel_dead.lease_expires_at = Some(Millis(90_000));
        let mut cancel_live = live_lease.clone();
        cancel_live.cancel_requested = true;
        let mut cancel_queued = job(Status::Queued);
        cancel_queued.cancel_requested = true;
        cancel_queued.attempt = 1;
        let mut retried_past_deadline = job(Status::Queued);
        retried_past_deadline.deadline = Some(Millis(99_000));
        retried_past_deadline.attempt = 1;

        let (succeeded, failed, cancelled, expired_done, queued) = (
            job(Status::Succeeded),
            job(Status::Failed),
            job(Status::Cancelled),
            job(Status::Expired),
            job(Status::Queued),
        );
        let cases: Vec<(&str, Option<&JobRecord>, Duration, ClaimRefusal)> = vec![
            (
                "no record, young message",
                None,
                young,
                ClaimRefusal::RetryLater(Duration::from_secs(2)),
            ),
            ("no record, orphan", None, old, ClaimRefusal::Bury),
            ("succeeded", Some(&succeeded), young, ClaimRefusal::Delete),
            ("failed", Some(&failed), young, ClaimRefusal::Delete),
            ("cancelled", Some(&cancelled), young, ClaimRefusal::Delete),
            ("expired", Some(&expired_done), young, ClaimRefusal::Delete),
            (
                "queued past deadline",
                Some(&expired),
                young,
                ClaimRefusal::Expire,
            ),
            (
                "queued, lost a race",
                Some(&queued),
                young,
                ClaimRefusal::RetryLater(Duration::from_secs(1)),
            ),
            (
                "running, live lease",
                Some(&live_lease),
                young,
                ClaimRefusal::RetryLater(Duration::from_secs(30)),
            ),
            (
                "running, cancel asked, worker gone",
                Some(&cancel_dead),
                young,
                ClaimRefusal::Cancel,
            ),
            (
                "running, cancel asked, worker alive",
                Some(&cancel_live),
                young,
                ClaimRefusal::RetryLater(Duration::from_secs(30)),
            ),
            (
                "queued again after a retry, cancel asked while it ran",
                Some(&cancel_queued),
                young,
                ClaimRefusal::Cancel,
            ),
            (
                "queued again after a retry, past its deadline",
                Some(&retried_past_deadline),
                young,
                ClaimRefusal::RetryLater(Duration::from_secs(1)),
            ),
        ];
        for (name, record, age, want) in cases {
            assert_eq!(on_claim_refused(record, now, age), want, "{name}");
        }
    }

    #[test]
    fn long_errors_are_cut_to_fit_with_their_length() {
        assert_eq!(truncate_error("short".into()), "short");
        let exact = "e".repeat(MAX_ERROR_BYTES);
        assert_eq!(truncate_error(exact.clone()), exact);
        for long in ["x".repeat(500_000), "é".repeat(100_000)] {
            let n = long.len();
            let cut = truncate_error(long);
            assert!(cut.len() <= MAX_ERROR_BYTES, "{}", cut.len());
            assert!(
                cut.ends_with(&format!(" … [truncated: {n} bytes in all]")),
                "{cut}"
            );
        }
    }

    #[test]
    fn backoff_doubles_with_equal_jitter_and_caps() {
        let b = Backoff {
            base: Duration::from_secs(2),
            max: Duration::from_secs(60),
        };
        let cases = [
            (1, 0.0, 1_000),
            (1, 0.999_999, 2_000),
            (2, 0.0, 2_000),
            (3, 0.5, 6_000),
            (6, 0.0, 30_000),
            (7, 0.0, 30_000),
            (40, 1.0, 60_000),
            (0, 0.0, 1_000),
        ];
        for (attempt, jitter, want_ms) in cases {
            let got = b.delay(attempt, jitter).as_millis();
            assert!(
                got.abs_diff(want_ms) <= 1,
                "attempt {attempt} jitter {jitter}: {got} ms"
            );
        }
    }

    #[test]
    fn errors_retry_until_the_attempts_run_out() {
        let b = Backoff {
            base: Duration::from_secs(1),
            max: Duration::from_secs(8),
        };
        let mut j = job(Status::Running);
        let cases = [
            // attempt, releases, retryable, expected
            (1, 0, true, AttemptEnd::Retry(Duration::from_millis(500))),
            (2, 0, true, AttemptEnd::Retry(Duration::from_secs(1))),
            (3, 0, true, AttemptEnd::Failed),
            (3, 1, true, AttemptEnd::Retry(Duration::from_secs(1))),
            (1, 0, false, AttemptEnd::Failed),
        ];
        for (attempt, releases, retryable, want) in cases {
            j.attempt = attempt;
            j.releases = releases;
            assert_eq!(
                after_error(&j, retryable, &b, 0.0),
                want,
                "attempt {attempt}"
            );
        }
    }

    #[test]
    fn lost_attempts_exhaust_the_job() {
        let mut j = job(Status::Running);
        for (attempt, releases, want) in [(3, 0, false), (4, 0, true), (4, 1, false), (1, 0, false)]
        {
            j.attempt = attempt;
            j.releases = releases;
            assert_eq!(exhausted_by_lost_attempts(&j), want, "{attempt}/{releases}");
        }
    }
}
