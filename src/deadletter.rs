//! The dead-letter queue: what reached it, why, and what to do about it.
//!
//! Only poison should reach it (a message that is not a job, a job whose attempts keep killing
//! their workers): the worker sends a message again, fresh, before an event that is not the
//! job's fault would spend its last delivery. Whatever does arrive is reconciled: a job whose
//! message sits there and that is not running anywhere is sent back to the jobs queue while it
//! has attempts left (its message ran out of deliveries to faults of the machinery), and is
//! otherwise ended `FAILED` with the reason, so every accepted job ends and its caller learns
//! why. The backlog function reconciles on every run; `sluice dlq` lists, explains and redrives.

use std::time::Duration;

use crate::job::{JobId, JobRecord, Status};
use crate::queue::{Envelope, JobQueue, QueueError, ReceiptHandle, Received};
use crate::store::{JobStore, StoreError};
use crate::time::Millis;

/// What a message in the dead-letter queue is, judged from its body and its job's record.
#[derive(Debug, Clone, PartialEq)]
pub enum Finding {
    /// Not a sluice job message; the reason it cannot be read.
    Undecodable(String),
    /// A job message whose record does not exist: a submit that failed after sending it.
    NoRecord(JobId),
    /// A job message without a record yet, younger than `job::ORPHAN_GRACE`: its submit may
    /// still be writing the record. Judged again by a later pass.
    AwaitingRecord(JobId),
    /// The job ended; there is nothing to run.
    Ended(JobRecord),
    /// The job runs on a live lease (this message was a duplicate): left alone.
    Running(JobRecord),
    /// The job has not ended and runs nowhere: it is ended `FAILED` (reconcile) or sent back to
    /// the jobs queue (redrive).
    Stranded(JobRecord),
    /// The job had attempts left: its message ran out of deliveries to faults of the machinery
    /// (a job that kills its workers spends its attempts first, as long as the queue's
    /// `maxReceiveCount` is above them), so it was sent back to the jobs queue.
    Returned(JobRecord),
    /// The job's record exists but cannot be read (edited by hand, written by another version):
    /// no worker can run it, and it needs a person. The reason.
    Unreadable(JobId, String),
}

impl Finding {
    /// The job the message is about, when it is a job's.
    pub fn job_id(&self) -> Option<&JobId> {
        match self {
            Finding::NoRecord(id) | Finding::AwaitingRecord(id) | Finding::Unreadable(id, _) => {
                Some(id)
            }
            Finding::Ended(j)
            | Finding::Running(j)
            | Finding::Stranded(j)
            | Finding::Returned(j) => Some(&j.id),
            Finding::Undecodable(_) => None,
        }
    }

    /// A one-word name, for scripts.
    pub fn kind(&self) -> &'static str {
        match self {
            Finding::Undecodable(_) => "undecodable",
            Finding::NoRecord(_) => "no_record",
            Finding::AwaitingRecord(_) => "awaiting_record",
            Finding::Ended(_) => "ended",
            Finding::Running(_) => "running",
            Finding::Stranded(_) => "stranded",
            Finding::Returned(_) => "returned",
            Finding::Unreadable(..) => "unreadable_record",
        }
    }

    /// One line for people.
    pub fn explain(&self) -> String {
        match self {
            Finding::Undecodable(why) => {
                format!("not a sluice job message ({why}); nothing to run: delete it when read")
            }
            Finding::NoRecord(id) => format!(
                "job {id} has no record: its submit failed after queueing it and answered an error; nothing to run"
            ),
            Finding::AwaitingRecord(id) => format!(
                "job {id} has no record yet: its submit may still be writing it; looked at again later"
            ),
            Finding::Ended(job) if job.error.as_deref().is_some_and(is_dead_letter_error) => {
                format!(
                    "job {} was ended FAILED because its message reached this queue; `sluice dlq redrive {}` runs it again",
                    job.id, job.id
                )
            }
            Finding::Ended(job) => format!("job {} already ended {}; nothing to run", job.id, job.status),
            Finding::Running(job) => format!(
                "job {} runs (attempt {}) on a live lease; this message was a duplicate",
                job.id, job.attempt
            ),
            Finding::Stranded(job) => format!(
                "job {} is {} but runs nowhere; it will be ended FAILED, or `sluice dlq redrive {}` runs it",
                job.id, job.status, job.id
            ),
            Finding::Returned(job) => format!(
                "job {} had attempts left (its message ran out of deliveries to faults of the machinery): sent back to the jobs queue",
                job.id
            ),
            Finding::Unreadable(id, why) => format!(
                "job {id}'s record cannot be read ({why}); no worker can run it: mend or remove the record, then `sluice dlq redrive {id}`"
            ),
        }
    }
}

/// The error a reconciled job ends with.
pub fn dead_letter_error(deliveries: u32) -> String {
    format!(
        "{DEAD_LETTER_PREFIX} after {deliveries} deliveries without the job ending (its attempts kept \
         crashing or losing their workers); an operator can run it again with `sluice dlq redrive`"
    )
}

const DEAD_LETTER_PREFIX: &str = "the job's message reached the dead-letter queue";

/// Whether a job's error is the reconciler's.
pub fn is_dead_letter_error(error: &str) -> bool {
    error.starts_with(DEAD_LETTER_PREFIX)
}

/// Judges a message. Pure.
pub fn judge(msg_body: &str, record: Option<JobRecord>, now: Millis) -> Finding {
    let envelope = match Envelope::decode(msg_body) {
        Ok(e) => e,
        Err(why) => return Finding::Undecodable(why),
    };
    match record {
        None => Finding::NoRecord(envelope.job_id),
        Some(job) if job.status.is_terminal() => Finding::Ended(job),
        Some(job) if job.status == Status::Running && !job.lease_expired(now) => {
            Finding::Running(job)
        }
        Some(job) => Finding::Stranded(job),
    }
}

/// Whether a message the reconciler keeps must be judged again at the next pass rather than
/// rest (when the pass ran out of time): its job's record has not come yet, its job runs on a
/// live lease, or its job is stranded but moved while the pass settled it (a worker's last
/// write came in between), and so is still to be settled. What needs a person rests. Pure.
pub fn judged_again_soon(f: &Finding) -> bool {
    matches!(
        f,
        Finding::AwaitingRecord(_) | Finding::Running(_) | Finding::Stranded(_)
    )
}

/// The dead-letter queue with the store its jobs live in.
#[derive(Debug, Clone)]
pub struct DeadLetters {
    pub dlq: JobQueue,
    pub store: JobStore,
    pub retention: Duration,
    /// The longest one pass runs ([`DeadLetters::reconcile`], `list`, `redrive`).
    pub pass_time: Duration,
    /// The jobs queue, where the reconciler sends back a job with attempts left (its message
    /// ran out of deliveries to faults of the machinery, not of the job). Without it, such a job
    /// ends `FAILED` like any other.
    pub jobs: Option<JobQueue>,
}

/// How many times the reconciler sends one job back to the jobs queue before it ends it
/// `FAILED` like any other: a job whose message keeps reaching the dead-letter queue with its
/// attempts unspent meets a fault that does not pass.
pub const MAX_RETURNS: u32 = 3;

#[derive(Debug, thiserror::Error)]
pub enum DeadLetterError {
    #[error(transparent)]
    Queue(#[from] QueueError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The longest a pass runs unless told otherwise: well inside the backlog function's timeout,
/// beside its sampling.
pub const PASS_TIME: Duration = Duration::from_secs(40);

/// How long a pass that ran out of time keeps hidden the messages it leaves in the queue, so
/// that the next passes reach the others first: every message is looked at within a few runs
/// however many there are.
pub const REST: Duration = Duration::from_secs(600);

/// What one reconciling pass did.
#[derive(Debug, Clone)]
pub struct Reconciled {
    /// Every message looked at, what it is, and whether it was deleted (settled: nothing
    /// about it needs anyone) or left for `sluice dlq`.
    pub seen: Vec<(Received, Finding, bool)>,
    /// Whether the pass looked at every message the queue showed. When not (it ran out of
    /// time), what it left stays hidden for [`REST`] so that the next pass reaches the rest.
    pub complete: bool,
}

impl Reconciled {
    pub fn deleted(&self) -> usize {
        self.seen.iter().filter(|(_, _, d)| *d).count()
    }
}

/// The messages of one pass: each received once, hidden until the pass ends.
struct Pass<'a> {
    dead: &'a DeadLetters,
    started: std::time::Instant,
    seen: std::collections::HashSet<String>,
    complete: bool,
}

impl<'a> Pass<'a> {
    fn new(dead: &'a DeadLetters) -> Self {
        Pass {
            dead,
            started: std::time::Instant::now(),
            seen: Default::default(),
            complete: false,
        }
    }

    /// The next messages not seen in this pass, judged; `None` once the queue shows no more
    /// (`complete`) or the pass's time is up.
    async fn next(&mut self) -> Result<Option<Vec<(Received, Finding)>>, DeadLetterError> {
        let dead = self.dead;
        // Hidden past the pass's end: no message shows twice in one pass.
        let hide = dead.pass_time + Duration::from_secs(60);
        while self.started.elapsed() < dead.pass_time {
            let batch = dead
                .dlq
                .receive_hidden(10, Duration::from_secs(1), Some(hide))
                .await?;
            if batch.is_empty() {
                self.complete = true;
                return Ok(None);
            }
            let fresh: Vec<Received> = batch
                .into_iter()
                .filter(|m| self.seen.insert(m.message_id.clone()))
                .collect();
            if fresh.is_empty() {
                continue;
            }
            let ids: Vec<JobId> = fresh
                .iter()
                .filter_map(|m| Envelope::decode(&m.body).ok().map(|e| e.job_id))
                .collect();
            let records = dead.store.get_many(&ids).await?;
            let now = Millis::now();
            let judged = fresh
                .into_iter()
                .map(|m| {
                    let finding = match Envelope::decode(&m.body) {
                        Ok(e) => match records.get(&e.job_id) {
                            Some(Err(reason)) => Finding::Unreadable(e.job_id, reason.clone()),
                            Some(Ok(job)) => judge(&m.body, Some(job.clone()), now),
                            None => judge(&m.body, None, now),
                        },
                        Err(_) => judge(&m.body, None, now),
                    };
                    (m, finding)
                })
                .collect();
            return Ok(Some(judged));
        }
        Ok(None)
    }
}

impl DeadLetters {
    pub fn new(dlq: JobQueue, store: JobStore, retention: Duration) -> Self {
        DeadLetters {
            dlq,
            store,
            retention,
            pass_time: PASS_TIME,
            jobs: None,
        }
    }

    /// With the jobs queue, to send back jobs that never spent an attempt.
    pub fn with_jobs(mut self, jobs: JobQueue) -> Self {
        self.jobs = Some(jobs);
        self
    }

    /// Makes messages visible again (`hide` zero) or hides them for `hide`.
    async fn show<'m>(&self, receipts: impl Iterator<Item = &'m ReceiptHandle>, hide: Duration) {
        let receipts: Vec<ReceiptHandle> = receipts.cloned().collect();
        for chunk in receipts.chunks(10) {
            if let Err(e) = self.dlq.change_visibility_batch(chunk, hide).await {
                tracing::warn!(error = %crate::aws::DisplayErrorContext(&e), "could not show dead-lettered messages again; they show when their visibility runs out");
            }
        }
    }

    /// Deletes the messages; returns the receipts SQS refused.
    async fn delete_all(
        &self,
        receipts: &[ReceiptHandle],
    ) -> Result<Vec<ReceiptHandle>, DeadLetterError> {
        let mut refused = Vec::new();
        for chunk in receipts.chunks(10) {
            refused.extend(self.dlq.delete_batch(chunk).await?);
        }
        Ok(refused)
    }

    /// Every message (up to `max`) with what it is; each is visible again afterwards.
    async fn pass(&self, max: usize) -> Result<Vec<(Received, Finding)>, DeadLetterError> {
        let mut pass = Pass::new(self);
        let mut seen = Vec::new();
        let result = loop {
            if seen.len() >= max {
                break Ok(());
            }
            match pass.next().await {
                Ok(Some(batch)) => seen.extend(batch),
                Ok(None) => break Ok(()),
                Err(e) => break Err(e),
            }
        };
        if let Err(e) = result {
            self.show(seen.iter().map(|(m, _)| &m.receipt), Duration::ZERO)
                .await;
            return Err(e);
        }
        // What was received beyond `max` goes back at once.
        let extra = seen.split_off(max.min(seen.len()));
        self.show(extra.iter().map(|(m, _)| &m.receipt), Duration::ZERO)
            .await;
        Ok(seen)
    }

    async fn release(&self, messages: &[(Received, Finding)]) {
        self.show(messages.iter().map(|(m, _)| &m.receipt), Duration::ZERO)
            .await;
    }

    /// One pass over the queue, within `pass_time`:
    /// - a stranded job is ended (`CANCELLED` when its caller asked, else `FAILED` with the
    ///   reason); its message stays for `sluice dlq redrive`, one copy per job;
    /// - a message with nothing left to act on is deleted: its job ended otherwise, a further
    ///   copy of a kept job's message, a message whose job was never recorded (its id is
    ///   retired first, so no record can come after);
    /// - what needs a person stays (a job running on a live lease, an unreadable record, a
    ///   message that is not a job's).
    pub async fn reconcile(&self) -> Result<Reconciled, DeadLetterError> {
        let mut pass = Pass::new(self);
        let mut out: Vec<(Received, Finding, bool)> = Vec::new();
        let mut kept_jobs = std::collections::HashSet::new();
        let mut returned = std::collections::HashSet::new();
        let failure = loop {
            let batch = match pass.next().await {
                Ok(Some(batch)) => batch,
                Ok(None) => break None,
                Err(e) => break Some(e),
            };
            let mut settled = Vec::new();
            let mut failure = None;
            for (msg, finding) in batch {
                if failure.is_some() {
                    out.push((msg, finding, false));
                    continue;
                }
                // A further copy of a job this pass already sent back: nothing left to do.
                if finding.job_id().is_some_and(|id| returned.contains(id)) {
                    settled.push(msg.receipt.clone());
                    out.push((msg, finding, true));
                    continue;
                }
                let finding = match self.settle(&msg, finding.clone()).await {
                    Ok(f) => f,
                    Err(e) => {
                        failure = Some(e);
                        out.push((msg, finding, false));
                        continue;
                    }
                };
                let delete = match &finding {
                    Finding::NoRecord(_) | Finding::Returned(_) => true,
                    Finding::Ended(job)
                        if is_dead_letter_error(job.error.as_deref().unwrap_or("")) =>
                    {
                        !kept_jobs.insert(job.id.clone())
                    }
                    Finding::Ended(_) => true,
                    _ => false,
                };
                if let Finding::Returned(job) = &finding {
                    returned.insert(job.id.clone());
                }
                if delete {
                    settled.push(msg.receipt.clone());
                }
                out.push((msg, finding, delete));
            }
            // What SQS refused to delete stays, and shows again with the rest.
            match self.delete_all(&settled).await {
                Ok(refused) => {
                    for (msg, _, deleted) in out.iter_mut() {
                        if *deleted && refused.contains(&msg.receipt) {
                            *deleted = false;
                        }
                    }
                }
                Err(e) => break Some(e),
            }
            if failure.is_some() {
                break failure;
            }
        };
        // What stays shows again: at once after a full pass, after a rest otherwise; but what
        // must be judged again soon shows at once.
        let soon = judged_again_soon;
        let hide = if pass.complete || failure.is_some() {
            Duration::ZERO
        } else {
            REST
        };
        let kept = || out.iter().filter(|(_, _, d)| !d);
        self.show(
            kept()
                .filter(|(_, f, _)| soon(f))
                .map(|(m, _, _)| &m.receipt),
            Duration::ZERO,
        )
        .await;
        self.show(
            kept()
                .filter(|(_, f, _)| !soon(f))
                .map(|(m, _, _)| &m.receipt),
            hide,
        )
        .await;
        match failure {
            Some(e) => Err(e),
            None => Ok(Reconciled {
                seen: out,
                complete: pass.complete,
            }),
        }
    }

    /// Acts on one message's finding; returns what it is now.
    async fn settle(&self, msg: &Received, finding: Finding) -> Result<Finding, DeadLetterError> {
        let now = Millis::now();
        match finding {
            Finding::Stranded(job)
                if !job.cancel_requested
                    && job.attempts_used() < job.max_attempts
                    && job.dlq_returns < MAX_RETURNS
                    && self.jobs.is_some() =>
            {
                let jobs = self.jobs.as_ref().expect("checked above");
                match self
                    .store
                    .return_from_dlq(&job.id, job.attempt, job.dlq_returns, now)
                    .await
                {
                    Ok(returned) => {
                        jobs.send(msg.body.clone()).await?;
                        tracing::warn!(job_id = %returned.id, returns = returned.dlq_returns, "job sent back to the jobs queue: its message ran out of deliveries before it was ever claimed");
                        Ok(Finding::Returned(returned))
                    }
                    // Sent back meanwhile (another copy, another pass): this copy is spare.
                    Err(StoreError::Conflict { current: Some(cur) })
                        if cur.dlq_returns > job.dlq_returns && !cur.status.is_terminal() =>
                    {
                        Ok(Finding::Returned(*cur))
                    }
                    Err(StoreError::Conflict { current }) => {
                        Ok(judge(&msg.body, current.map(|c| *c), now))
                    }
                    Err(e) => Err(e.into()),
                }
            }
            Finding::Stranded(job) => {
                let ended = if job.cancel_requested {
                    self.store
                        .cancel_abandoned(&job.id, now, self.retention)
                        .await
                } else {
                    self.store
                        .fail_dead_lettered(&job.id, msg.receive_count, now, self.retention)
                        .await
                };
                match ended {
                    Ok(ended) => {
                        tracing::warn!(job_id = %ended.id, status = %ended.status, deliveries = msg.receive_count, "job ended: its message reached the dead-letter queue");
                        Ok(Finding::Ended(ended))
                    }
                    // It moved meanwhile (a worker claimed it, it ended): judge it again.
                    Err(StoreError::Conflict { current }) => {
                        Ok(judge(&msg.body, current.map(|c| *c), now))
                    }
                    Err(e) => Err(e.into()),
                }
            }
            // A record may yet come for a young message (its submit still running); an old
            // one's id is retired before its message goes.
            Finding::NoRecord(id) if now.since(msg.sent_at) < crate::job::ORPHAN_GRACE => {
                Ok(Finding::AwaitingRecord(id))
            }
            Finding::NoRecord(id) => match self.store.bury(&id, now).await {
                Ok(()) => Ok(Finding::NoRecord(id)),
                Err(StoreError::Conflict { current }) => {
                    Ok(judge(&msg.body, current.map(|c| *c), now))
                }
                Err(e) => Err(e.into()),
            },
            other => Ok(other),
        }
    }

    /// Every message (up to `max`) with what it is; each is visible again afterwards.
    pub async fn list(&self, max: usize) -> Result<Vec<(Received, Finding)>, DeadLetterError> {
        let seen = self.pass(max).await?;
        self.release(&seen).await;
        Ok(seen)
    }

    /// Sends the chosen jobs' messages back to `jobs`: a stranded job as it is, a job the
    /// reconciler ended `FAILED` queued again first (its attempts afresh). Messages with nothing
    /// to run (undecodable, no record, ended otherwise) are deleted when `drop_dead` is set.
    /// Each message stays hidden from the reconciler until it is deleted right after its send.
    pub async fn redrive(
        &self,
        jobs: &JobQueue,
        chosen: impl Fn(&Finding) -> bool,
        drop_dead: bool,
    ) -> Result<Vec<(Finding, Redriven)>, DeadLetterError> {
        let seen = self.pass(usize::MAX).await?;
        let mut out = Vec::new();
        let mut failure = None;
        for (msg, finding) in &seen {
            if !chosen(finding) || failure.is_some() {
                continue;
            }
            match self.redrive_one(jobs, msg, finding, drop_dead).await {
                Ok(outcome) => out.push((finding.clone(), outcome)),
                Err(e) => failure = Some(e),
            }
        }
        // What was deleted is gone; the rest becomes visible again.
        self.release(&seen).await;
        match failure {
            Some(e) => Err(e),
            None => Ok(out),
        }
    }

    async fn redrive_one(
        &self,
        jobs: &JobQueue,
        msg: &Received,
        finding: &Finding,
        drop_dead: bool,
    ) -> Result<Redriven, DeadLetterError> {
        let outcome = match finding {
            Finding::Stranded(job) => {
                // Recorded first: the sweeper counts the message's life from here.
                self.store.mark_sent(&job.id, Millis::now()).await?;
                jobs.send(msg.body.clone()).await?;
                Redriven::Requeued
            }
            Finding::Ended(job) if job.error.as_deref().is_some_and(is_dead_letter_error) => {
                match self
                    .store
                    .revive_dead_lettered(&job.id, job.attempt, Millis::now())
                    .await
                {
                    Ok(_) => {
                        jobs.send(msg.body.clone()).await?;
                        Redriven::Revived
                    }
                    // Another copy of the same job's message was redriven first: this one is
                    // a duplicate, with nothing left to do.
                    Err(StoreError::Conflict { .. }) => Redriven::Dropped,
                    Err(e) => return Err(e.into()),
                }
            }
            // A person mends the record first; until then the message stays.
            Finding::Running(_) | Finding::Unreadable(..) | Finding::AwaitingRecord(_) => {
                Redriven::Left
            }
            _ if drop_dead => Redriven::Dropped,
            _ => Redriven::Left,
        };
        if outcome != Redriven::Left {
            self.dlq.delete(&msg.receipt).await?;
        }
        Ok(outcome)
    }
}

/// What a redrive did with a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Redriven {
    /// Sent back to the jobs queue; the job was still queued.
    Requeued,
    /// The job, ended FAILED by the reconciler, was queued again and its message sent back.
    Revived,
    /// Deleted: nothing to run.
    Dropped,
    /// Left in the dead-letter queue.
    Left,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::job::Owner;
    use serde_json::value::RawValue;

    #[test]
    fn unsettled_jobs_are_judged_again_at_the_next_pass_and_what_needs_a_person_rests() {
        let id = JobId::generate();
        let job = JobRecord::queued(id.clone(), Owner::new("o"), Millis(1), None, 3, 2);
        let cases = [
            (Finding::AwaitingRecord(id.clone()), true),
            (Finding::Running(job.clone()), true),
            // A stranded job kept by a pass: settling it met a write of its worker's.
            (Finding::Stranded(job.clone()), true),
            (Finding::Ended(job.clone()), false),
            (Finding::Undecodable("poison".into()), false),
            (Finding::Unreadable(id.clone(), "edited".into()), false),
            (Finding::NoRecord(id), false),
        ];
        for (finding, soon) in cases {
            assert_eq!(judged_again_soon(&finding), soon, "{}", finding.kind());
        }
    }

    #[test]
    fn messages_are_judged_by_their_body_and_their_record() {
        let id = JobId::generate();
        let input = RawValue::from_string("{}".into()).unwrap();
        let body = Envelope::new(id.clone(), &input).encode().unwrap();
        let now = Millis(100_000);
        let job = |status: Status, lease: Option<i64>| {
            let mut j = JobRecord::queued(id.clone(), Owner::new("o"), Millis(1), None, 3, 2);
            j.status = status;
            j.lease_expires_at = lease.map(Millis);
            j
        };
        let cases: Vec<(&str, &str, Option<JobRecord>, &str)> = vec![
            ("not a job", "hello", None, "Undecodable"),
            ("orphan", &body, None, "NoRecord"),
            (
                "succeeded",
                &body,
                Some(job(Status::Succeeded, None)),
                "Ended",
            ),
            (
                "running, live lease",
                &body,
                Some(job(Status::Running, Some(200_000))),
                "Running",
            ),
            (
                "running, lease lapsed",
                &body,
                Some(job(Status::Running, Some(50_000))),
                "Stranded",
            ),
            ("queued", &body, Some(job(Status::Queued, None)), "Stranded"),
        ];
        for (name, body, record, want) in cases {
            let got = judge(body, record, now);
            assert!(format!("{got:?}").starts_with(want), "{name}: {got:?}");
            assert!(!got.explain().is_empty());
        }
        assert!(is_dead_letter_error(&dead_letter_error(12)));
        assert!(!is_dead_letter_error("the demo was asked to fail"));
    }
}
