//! The dead-letter queue: what reached it, why, and what to do about it.
//!
//! Only poison should reach it (a message that is not a job, a job whose attempts keep killing
//! their workers): the worker sends a message again, fresh, before an event that is not the
//! job's fault would spend its last delivery. Whatever does arrive is reconciled: a job whose
//! message sits there and that is not running anywhere is ended `FAILED` with the reason, so
//! every accepted job ends and its caller learns why. The backlog function reconciles on every
//! run; `sluice dlq` lists, explains and redrives.

use std::time::Duration;

use crate::job::{JobId, JobRecord, Status};
use crate::queue::{Envelope, JobQueue, QueueError, Received};
use crate::store::{JobStore, StoreError};
use crate::time::Millis;

/// What a message in the dead-letter queue is, judged from its body and its job's record.
#[derive(Debug, Clone, PartialEq)]
pub enum Finding {
    /// Not a sluice job message; the reason it cannot be read.
    Undecodable(String),
    /// A job message whose record does not exist: a submit that failed after sending it.
    NoRecord(JobId),
    /// The job ended; there is nothing to run.
    Ended(JobRecord),
    /// The job runs on a live lease (this message was a duplicate): left alone.
    Running(JobRecord),
    /// The job has not ended and runs nowhere: it is ended `FAILED` (reconcile) or sent back to
    /// the jobs queue (redrive).
    Stranded(JobRecord),
    /// The job's record exists but cannot be read (edited by hand, written by another version):
    /// no worker can run it, and it needs a person. The reason.
    Unreadable(JobId, String),
}

impl Finding {
    /// The job the message is about, when it is a job's.
    pub fn job_id(&self) -> Option<&JobId> {
        match self {
            Finding::NoRecord(id) | Finding::Unreadable(id, _) => Some(id),
            Finding::Ended(j) | Finding::Running(j) | Finding::Stranded(j) => Some(&j.id),
            Finding::Undecodable(_) => None,
        }
    }

    /// A one-word name, for scripts.
    pub fn kind(&self) -> &'static str {
        match self {
            Finding::Undecodable(_) => "undecodable",
            Finding::NoRecord(_) => "no_record",
            Finding::Ended(_) => "ended",
            Finding::Running(_) => "running",
            Finding::Stranded(_) => "stranded",
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

/// The dead-letter queue with the store its jobs live in.
#[derive(Debug, Clone)]
pub struct DeadLetters {
    pub dlq: JobQueue,
    pub store: JobStore,
    pub retention: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum DeadLetterError {
    #[error(transparent)]
    Queue(#[from] QueueError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The most messages one pass looks at, and the longest it takes.
const PASS_MESSAGES: usize = 100;
const PASS_TIME: Duration = Duration::from_secs(20);

impl DeadLetters {
    async fn finding(&self, msg: &Received) -> Result<Finding, StoreError> {
        let record = match Envelope::decode(&msg.body) {
            Ok(e) => match self.store.get(&e.job_id).await {
                Ok(r) => r,
                Err(StoreError::Corrupt { reason, .. }) => {
                    return Ok(Finding::Unreadable(e.job_id, reason))
                }
                Err(e) => return Err(e),
            },
            Err(_) => None,
        };
        Ok(judge(&msg.body, record, Millis::now()))
    }

    /// Receives up to `max` messages, each once, and judges them. They stay hidden (so nothing
    /// else acts on them meanwhile) until [`Self::release`] makes them visible again.
    async fn pass(&self, max: usize) -> Result<Vec<(Received, Finding)>, DeadLetterError> {
        let started = std::time::Instant::now();
        let mut seen: Vec<(Received, Finding)> = Vec::new();
        while seen.len() < max && started.elapsed() < PASS_TIME {
            let batch = self.dlq.receive(10, Duration::from_secs(1)).await?;
            if batch.is_empty() {
                break;
            }
            for msg in batch {
                if seen.len() >= max || seen.iter().any(|(m, _)| m.message_id == msg.message_id) {
                    let _ = self
                        .dlq
                        .change_visibility(&msg.receipt, Duration::ZERO)
                        .await;
                    continue;
                }
                let finding = self.finding(&msg).await?;
                seen.push((msg, finding));
            }
        }
        Ok(seen)
    }

    async fn release(&self, messages: &[(Received, Finding)]) {
        for (msg, _) in messages {
            let _ = self
                .dlq
                .change_visibility(&msg.receipt, Duration::ZERO)
                .await;
        }
    }

    /// One pass over up to 100 messages: ends every stranded job (`CANCELLED` when its caller
    /// asked, else `FAILED` with the reason), and leaves the messages where they are for
    /// `sluice dlq`. Returns what it saw.
    pub async fn reconcile(&self) -> Result<Vec<(Received, Finding)>, DeadLetterError> {
        let mut seen = self.pass(PASS_MESSAGES).await?;
        for (msg, finding) in &mut seen {
            let Finding::Stranded(job) = &*finding else {
                continue;
            };
            let now = Millis::now();
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
                    *finding = Finding::Ended(ended);
                }
                // It moved meanwhile (a worker claimed it, it ended): judge it again.
                Err(StoreError::Conflict { current }) => {
                    *finding = judge(&msg.body, current.map(|c| *c), now);
                }
                Err(e) => {
                    self.release(&seen).await;
                    return Err(e.into());
                }
            }
        }
        self.release(&seen).await;
        Ok(seen)
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
            Finding::Stranded(_) => {
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
            Finding::Running(_) | Finding::Unreadable(..) => Redriven::Left,
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
