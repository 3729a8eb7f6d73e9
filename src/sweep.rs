//! The sweeper: every accepted job ends, even when its message is gone.
//!
//! A job runs only while a message for it exists. SQS keeps a message for the queue's retention
//! (14 days) from when it was sent; past that, a job that has not ended (queued through a long
//! outage, or its worker lost after its message expired) would stay `QUEUED` or `RUNNING` until
//! its record's TTL, and its caller would never learn why. The sweeper finds such jobs through
//! the sparse open-jobs index (only jobs that have not ended are in it, by when their message
//! was last sent: no table scan) and ends them with the reason. The backlog function sweeps on
//! every run.

use std::time::{Duration, Instant};

use crate::job::{JobRecord, Status};
use crate::queue::{JobQueue, QueueError};
use crate::store::{JobStore, StoreError, OPEN_SHARDS};
use crate::time::Millis;

/// Beyond the queue's retention, how much longer the sweeper waits before it judges a message
/// gone: SQS's own lag in removing expired messages, and clocks that disagree.
pub const MARGIN: Duration = Duration::from_secs(3600);

/// What the sweeper does with an open job whose message must be gone, or `None` when it leaves
/// the job alone (it ended meanwhile, or runs on a live lease: its worker ends it). Pure.
pub fn verdict(job: &JobRecord, now: Millis, retention: Duration) -> Option<(Status, String)> {
    match job.status {
        s if s.is_terminal() => None,
        Status::Running if !job.lease_expired(now) => None,
        _ if job.cancel_requested => Some((Status::Cancelled, "cancelled by the caller".into())),
        Status::Queued if !job.has_started() && job.deadline.is_some_and(|d| d <= now) => Some((
            Status::Expired,
            "the deadline passed before the job started".into(),
        )),
        _ => Some((Status::Failed, gone_error(retention))),
    }
}

/// The error of a job ended because its message left the queue.
pub fn gone_error(retention: Duration) -> String {
    let days = retention.as_secs() as f64 / 86_400.0;
    format!(
        "the job's message left the queue (which keeps a message {days:.0} days) before the job \
         could end: no worker can run it again; submit it anew"
    )
}

/// The sweeper over the jobs table, for the queue whose messages it judges.
#[derive(Debug, Clone)]
pub struct Sweeper {
    pub store: JobStore,
    /// The jobs queue and, when there is one, its dead-letter queue: a message lives as long as
    /// the longer of their retentions.
    pub queues: Vec<JobQueue>,
    /// The longest one sweep runs.
    pub budget: Duration,
}

/// What one sweep did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Swept {
    /// Open jobs whose last send is older than the retention, looked at.
    pub looked_at: usize,
    /// Of those, the ones ended, with the status each ended with.
    pub ended: Vec<(crate::job::JobId, Status)>,
    /// Whether the sweep went through every shard before its budget ran out.
    pub complete: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum SweepError {
    #[error(transparent)]
    Queue(#[from] QueueError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl Sweeper {
    /// How long a message lives: the longest retention of the queues.
    pub async fn message_retention(&self) -> Result<Duration, QueueError> {
        let mut longest = Duration::ZERO;
        for q in &self.queues {
            longest = longest.max(q.retention().await?);
        }
        Ok(longest)
    }

    /// Ends every open job whose message was last sent more than the queues' retention (plus
    /// [`MARGIN`]) before `now`, and that runs nowhere.
    pub async fn sweep(&self, now: Millis) -> Result<Swept, SweepError> {
        let retention = self.message_retention().await?;
        self.sweep_with(now, retention).await
    }

    /// [`Sweeper::sweep`], with the message retention given.
    pub async fn sweep_with(&self, now: Millis, retention: Duration) -> Result<Swept, SweepError> {
        let started = Instant::now();
        let cutoff = Millis(now.0 - i64::try_from((retention + MARGIN).as_millis()).unwrap_or(0));
        let mut swept = Swept::default();
        for shard in 0..OPEN_SHARDS {
            let mut start = None;
            loop {
                if started.elapsed() >= self.budget {
                    return Ok(swept);
                }
                let (page, next) = self
                    .store
                    .open_sent_before(&shard.to_string(), cutoff, 100, start)
                    .await?;
                let ids: Vec<_> = page.iter().map(|(id, _)| id.clone()).collect();
                let mut records = self.store.get_many(&ids).await?;
                for (id, sent_at) in page {
                    swept.looked_at += 1;
                    // Gone, or unreadable (the reconciler's and a person's to judge).
                    let Some(Ok(job)) = records.remove(&id) else {
                        continue;
                    };
                    let Some((status, error)) = verdict(&job, now, retention) else {
                        continue;
                    };
                    match self
                        .store
                        .end_unsent(&id, status, &error, sent_at, now)
                        .await
                    {
                        Ok(_) => {
                            tracing::warn!(job_id = %id, %status, "job ended: its message left the queue");
                            swept.ended.push((id, status));
                        }
                        // It moved meanwhile (claimed, ended, sent again): left alone.
                        Err(StoreError::Conflict { .. }) => {}
                        Err(e) => return Err(e.into()),
                    }
                }
                match next {
                    Some(key) => start = Some(key),
                    None => break,
                }
            }
        }
        swept.complete = true;
        Ok(swept)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::job::{JobId, Owner};

    #[test]
    fn an_open_job_whose_message_is_gone_ends_with_the_reason() {
        let now = Millis(10_000_000);
        let retention = Duration::from_secs(14 * 86_400);
        let job = |status: Status| {
            let mut j =
                JobRecord::queued(JobId::generate(), Owner::new("o"), Millis(1), None, 3, 1);
            j.status = status;
            j
        };
        let mut running_live = job(Status::Running);
        running_live.lease_expires_at = Some(Millis(now.0 + 1));
        let mut running_lost = job(Status::Running);
        running_lost.lease_expires_at = Some(Millis(now.0 - 1));
        let mut cancel_asked = job(Status::Queued);
        cancel_asked.cancel_requested = true;
        let mut past_deadline = job(Status::Queued);
        past_deadline.deadline = Some(Millis(now.0 - 1));
        let mut started_past_deadline = past_deadline.clone();
        started_past_deadline.attempt = 1;
        started_past_deadline.started_at = Some(Millis(2));
        let cases: Vec<(&str, JobRecord, Option<Status>)> = vec![
            ("queued", job(Status::Queued), Some(Status::Failed)),
            ("running, lease live", running_live, None),
            ("running, worker lost", running_lost, Some(Status::Failed)),
            ("cancel asked", cancel_asked, Some(Status::Cancelled)),
            ("deadline passed", past_deadline, Some(Status::Expired)),
            (
                "started, then deadline passed",
                started_past_deadline,
                Some(Status::Failed),
            ),
            ("succeeded", job(Status::Succeeded), None),
            ("failed", job(Status::Failed), None),
            ("cancelled", job(Status::Cancelled), None),
            ("expired", job(Status::Expired), None),
        ];
        for (name, j, want) in cases {
            let got = verdict(&j, now, retention);
            assert_eq!(got.as_ref().map(|(s, _)| *s), want, "{name}");
        }
        assert!(gone_error(retention).contains("keeps a message 14 days"));
    }
}
