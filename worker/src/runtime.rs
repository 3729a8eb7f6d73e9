//! The worker loop: receive, claim, run with a heartbeat, finish; and drain on shutdown.

use std::future::Future;
use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::time::Duration;

use sluice::aws::DisplayErrorContext;
use sluice::job::{self, AttemptEnd, ClaimRefusal, JobId, JobRecord};
use sluice::queue::{Envelope, JobQueue, ReceiptHandle, Received};
use sluice::store::{Finish, JobStore, StoreError};
use sluice::time::Millis;
use tokio::sync::{mpsc, watch, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn, Instrument};

use crate::config::WorkerConfig;
use crate::handler::{Handler, JobContext, JobError};
use crate::metrics::{self, Outcome};
use crate::protection;

/// The largest result stored inline in the job record (DynamoDB items hold 400 KB).
pub const MAX_RESULT_BYTES: usize = 350_000;

/// Runs `handler` on the queue's jobs until `shutdown` completes, then drains: running jobs
/// may finish until the drain deadline, and the rest go back to the queue at once.
pub async fn run<H: Handler>(
    handler: H,
    config: WorkerConfig,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let aws = sluice::aws::load().await;
    let store = JobStore::from_sdk(&aws, &config.table_name);
    let queue = JobQueue::from_sdk(&aws, &config.queue_url);
    run_with(handler, config, store, queue, shutdown).await
}

/// [`run`] over a store and a queue built by the caller (for instance with SDK clients that
/// carry an interceptor).
pub async fn run_with<H: Handler>(
    handler: H,
    config: WorkerConfig,
    store: JobStore,
    queue: JobQueue,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let (deletes, pending) = mpsc::unbounded_channel();
    let deleter = tokio::spawn(delete_in_batches(queue.clone(), pending, DELETE_LINGER));
    let result = Worker {
        handler: Arc::new(handler),
        store,
        queue,
        config: Arc::new(config),
        deletes,
    }
    .run(shutdown)
    .await;
    // Every job is done and every sender gone: the deleter flushes what is left and stops.
    let _ = tokio::time::timeout(Duration::from_secs(10), deleter).await;
    result
}

/// Pauses before claiming again a job whose message came before its record.
const EARLY_CLAIM_RETRIES: [Duration; 3] = [
    Duration::from_millis(20),
    Duration::from_millis(80),
    Duration::from_millis(300),
];

/// How long a finished job's delete may wait for others to share its request.
pub const DELETE_LINGER: Duration = Duration::from_millis(50);

/// Deletes finished jobs' messages ten to a request: a receipt waits at most `linger` for
/// company. A delete that fails leaves its message to come back, and it is then deleted as a
/// duplicate of a finished job.
async fn delete_in_batches(
    queue: JobQueue,
    mut pending: mpsc::UnboundedReceiver<ReceiptHandle>,
    linger: Duration,
) {
    let mut batch: Vec<ReceiptHandle> = Vec::with_capacity(10);
    while let Some(first) = pending.recv().await {
        batch.push(first);
        let deadline = tokio::time::Instant::now() + linger;
        while batch.len() < 10 {
            match tokio::time::timeout_at(deadline, pending.recv()).await {
                Ok(Some(next)) => batch.push(next),
                Ok(None) | Err(_) => break,
            }
        }
        match queue.delete_batch(&batch).await {
            Ok(refused) if refused.is_empty() => {}
            Ok(refused) => warn!(
                count = refused.len(),
                "sqs refused some deletes; those messages will be deleted when they come back"
            ),
            Err(e) => {
                warn!(error = %DisplayErrorContext(&e), count = batch.len(), "could not delete messages; they will be deleted when they come back")
            }
        }
        batch.clear();
    }
}

struct Worker<H> {
    handler: Arc<H>,
    store: JobStore,
    queue: JobQueue,
    config: Arc<WorkerConfig>,
    /// Receipts of finished jobs, deleted in batches.
    deletes: mpsc::UnboundedSender<ReceiptHandle>,
}

impl<H> Clone for Worker<H> {
    fn clone(&self) -> Self {
        Worker {
            handler: self.handler.clone(),
            store: self.store.clone(),
            queue: self.queue.clone(),
            config: self.config.clone(),
            deletes: self.deletes.clone(),
        }
    }
}

/// How a running attempt stopped.
enum Stop<O> {
    Returned(Result<O, JobError>),
    /// The caller cancelled the job.
    Cancelled,
    /// Another attempt owns the job now.
    LostLease,
    /// The worker is shutting down and hands the job back.
    Released,
}

impl<H: Handler> Worker<H> {
    async fn run(self, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
        let slots = Arc::new(Semaphore::new(self.config.concurrency));
        let jobs = TaskTracker::new();
        // Jobs held, watched by the scale-in protection keeper.
        let (busy_tx, busy_rx) = watch::channel(0usize);
        let busy = Arc::new(busy_tx);
        let protection = tokio::spawn(protection::keep(protection::Agent::from_env(), busy_rx));
        let release = CancellationToken::new();
        let mut failures = 0u32;
        tokio::pin!(shutdown);
        info!(
            worker_id = %self.config.worker_id,
            queue = %self.config.queue_url,
            concurrency = self.config.concurrency,
            "worker started"
        );
        loop {
            crate::health::beat();
            let first = tokio::select! {
                permit = slots.clone().acquire_owned() => permit?,
                () = &mut shutdown => break,
            };
            let free = 1 + slots.available_permits();
            let received = tokio::select! {
                r = self.queue.receive(free.min(10) as i32, self.config.receive_wait) => r,
                () = &mut shutdown => break,
            };
            let messages = match received {
                Ok(m) => {
                    failures = 0;
                    m
                }
                Err(e) => {
                    failures += 1;
                    let pause = Duration::from_millis(200 * 2u64.pow(failures.min(6)));
                    warn!(error = %DisplayErrorContext(&e), ?pause, "receive failed");
                    tokio::select! {
                        () = tokio::time::sleep(pause) => continue,
                        () = &mut shutdown => break,
                    }
                }
            };
            let mut permit = Some(first);
            for msg in messages {
                let permit = match permit.take() {
                    Some(p) => p,
                    None => slots.clone().try_acquire_owned()?,
                };
                let worker = self.clone();
                let release = release.clone();
                let busy = busy.clone();
                busy.send_modify(|n| *n += 1);
                let span = tracing::info_span!("message", message_id = %msg.message_id);
                jobs.spawn(
                    async move {
                        worker.process(msg, release).await;
                        busy.send_modify(|n| *n -= 1);
                        drop(permit);
                    }
                    .instrument(span),
                );
            }
        }

        let running = jobs.len();
        info!(running, drain = ?self.config.drain, "stopping: no new jobs; letting running jobs finish");
        jobs.close();
        if tokio::time::timeout(self.config.drain, jobs.wait())
            .await
            .is_err()
        {
            warn!(
                running = jobs.len(),
                "drain deadline reached; releasing unfinished jobs"
            );
            release.cancel();
            let _ = tokio::time::timeout(Duration::from_secs(10), jobs.wait()).await;
        }
        // With no jobs left, protection comes off.
        drop(busy);
        let _ = tokio::time::timeout(Duration::from_secs(10), protection).await;
        info!("worker stopped");
        Ok(())
    }

    async fn process(&self, msg: Received, release: CancellationToken) {
        let envelope = match Envelope::decode(&msg.body) {
            Ok(e) => e,
            Err(reason) => {
                // Left in the queue, it comes back until the redrive policy moves it to the
                // dead-letter queue; meanwhile it is hidden so it does not crowd real jobs.
                warn!(receive_count = msg.receive_count, %reason, "undecodable message; leaving it for the dead-letter queue");
                let pause = self.config.backoff.delay(msg.receive_count, 0.5);
                self.hide(&msg, pause).await;
                return;
            }
        };
        let id = envelope.job_id.clone();
        let span = tracing::info_span!("job", job_id = %id);
        self.run_job(&msg, &id, envelope.input.get(), release)
            .instrument(span)
            .await;
    }

    async fn run_job(&self, msg: &Received, id: &JobId, input: &str, release: CancellationToken) {
        let cfg = &self.config;
        let now = Millis::now();
        let mut claimed = self.store.claim(id, &cfg.worker_id, now, cfg.lease).await;
        // The submit path writes the record just after it sends the message: a message received
        // at once may be a few milliseconds early. Looking again soon keeps that race from
        // costing the job one of its deliveries; the record is usually there within one write.
        for pause in EARLY_CLAIM_RETRIES {
            let early = matches!(&claimed, Err(StoreError::Conflict { current: None }))
                && now.since(msg.sent_at) < Duration::from_secs(5);
            if !early {
                break;
            }
            tokio::time::sleep(pause).await;
            claimed = self
                .store
                .claim(id, &cfg.worker_id, Millis::now(), cfg.lease)
                .await;
        }
        let job = match claimed {
            Ok(job) => job,
            Err(StoreError::Conflict { current }) => {
                let decision =
                    job::on_claim_refused(current.as_deref(), now, now.since(msg.sent_at));
                self.refused(msg, id, decision).await;
                return;
            }
            Err(e) => {
                // The message comes back after its visibility timeout.
                warn!(error = %DisplayErrorContext(&e), "claim failed");
                return;
            }
        };
        if job::exhausted_by_lost_attempts(&job) {
            let error = format!(
                "the job's worker was lost {} times before it finished; giving up",
                job.attempts_used() - 1
            );
            warn!(attempt = job.attempt, "{error}");
            self.finish(msg, &job, Finish::Failed { error }, Outcome::Failed)
                .await;
            return;
        }
        info!(attempt = job.attempt, "job started");
        let input = match serde_json::from_str::<H::Input>(input) {
            Ok(i) => i,
            Err(e) => {
                let error = format!("the input does not match what the handler takes: {e}");
                self.finish(msg, &job, Finish::Failed { error }, Outcome::Failed)
                    .await;
                return;
            }
        };
        let started = tokio::time::Instant::now();
        let stop = self.attempt(msg, &job, input, release).await;
        let ran = started.elapsed();
        match stop {
            Stop::Returned(Ok(output)) => {
                let result = serde_json::to_string(&output);
                let end = match result {
                    Ok(r) if r.len() <= MAX_RESULT_BYTES => Finish::Succeeded { result: r },
                    Ok(r) => Finish::Failed {
                        error: format!(
                            "the result is {} bytes; results up to {MAX_RESULT_BYTES} bytes are stored",
                            r.len()
                        ),
                    },
                    Err(e) => Finish::Failed {
                        error: format!("the result could not be encoded as JSON: {e}"),
                    },
                };
                let outcome = if matches!(end, Finish::Succeeded { .. }) {
                    Outcome::Succeeded
                } else {
                    Outcome::Failed
                };
                info!(?ran, "job finished");
                metrics::job_finished(cfg, outcome, ran, &job);
                self.finish(msg, &job, end, outcome).await;
            }
            Stop::Returned(Err(e)) => {
                let jitter = jitter(id, job.attempt);
                match job::after_error(&job, e.is_retryable(), &cfg.backoff, jitter) {
                    AttemptEnd::Retry(delay) => {
                        warn!(error = %e, ?delay, attempt = job.attempt, "job failed; retrying");
                        metrics::job_finished(cfg, Outcome::Retried, ran, &job);
                        match self
                            .store
                            .requeue(id, job.attempt, Some(e.message.clone()))
                            .await
                        {
                            Ok(_) => self.hide(msg, delay).await,
                            Err(err) => {
                                warn!(error = %DisplayErrorContext(&err), "could not requeue the job")
                            }
                        }
                    }
                    AttemptEnd::Failed | AttemptEnd::Succeeded => {
                        warn!(error = %e, attempt = job.attempt, "job failed");
                        metrics::job_finished(cfg, Outcome::Failed, ran, &job);
                        self.finish(
                            msg,
                            &job,
                            Finish::Failed { error: e.message },
                            Outcome::Failed,
                        )
                        .await;
                    }
                }
            }
            Stop::Cancelled => {
                info!("job cancelled by its caller");
                metrics::job_finished(cfg, Outcome::Cancelled, ran, &job);
                self.finish(msg, &job, Finish::Cancelled, Outcome::Cancelled)
                    .await;
            }
            Stop::LostLease => {
                warn!("another attempt took the job over; this attempt's outcome is discarded");
            }
            Stop::Released => match self.store.requeue(id, job.attempt, None).await {
                Ok(_) => {
                    info!("job released to the queue");
                    self.hide(msg, Duration::ZERO).await;
                }
                Err(e) => {
                    warn!(error = %DisplayErrorContext(&e), "could not release the job; its lease will expire")
                }
            },
        }
    }

    /// Runs the handler, renewing the message's visibility and the job's lease on every
    /// heartbeat, and watching for a cancel.
    async fn attempt(
        &self,
        msg: &Received,
        job: &JobRecord,
        input: H::Input,
        release: CancellationToken,
    ) -> Stop<H::Output> {
        let cfg = &self.config;
        let cancel = CancellationToken::new();
        let ctx = JobContext::new(
            job.id.clone(),
            job.attempt,
            job.max_attempts,
            cfg.worker_id.clone(),
            cancel.clone(),
        );
        let call = self.handler.call(input, ctx);
        tokio::pin!(call);
        let mut beat =
            tokio::time::interval_at(tokio::time::Instant::now() + cfg.heartbeat, cfg.heartbeat);
        let stop = loop {
            tokio::select! {
                biased;
                out = &mut call => break Stop::Returned(out),
                () = release.cancelled() => break Stop::Released,
                _ = beat.tick() => {
                    let (lease, visibility) = tokio::join!(
                        self.store.heartbeat(&job.id, job.attempt, Millis::now(), cfg.lease),
                        self.queue.change_visibility(&msg.receipt, cfg.visibility_timeout),
                    );
                    if let Err(e) = visibility {
                        warn!(error = %DisplayErrorContext(&e), "could not extend the message's visibility");
                    }
                    match lease {
                        Ok(now) if now.cancel_requested => break Stop::Cancelled,
                        Ok(_) => {}
                        Err(StoreError::Conflict { .. }) => break Stop::LostLease,
                        Err(e) => warn!(error = %DisplayErrorContext(&e), "could not extend the job's lease"),
                    }
                }
            }
        };
        // Dropping the handler's future stops it; the token tells code it spawned.
        cancel.cancel();
        stop
    }

    /// Records the attempt's end and deletes the message. A newer attempt that took the job
    /// over keeps it: this attempt's outcome is discarded and the message left alone.
    async fn finish(&self, msg: &Received, job: &JobRecord, end: Finish, outcome: Outcome) {
        let now = Millis::now();
        match self
            .store
            .finish(&job.id, job.attempt, end, now, self.config.retention)
            .await
        {
            Ok(_) => {
                if outcome != Outcome::Succeeded {
                    info!(status = ?outcome, "job ended");
                }
                self.delete(msg).await;
            }
            Err(StoreError::Conflict { current }) => {
                let holder = current.map(|j| (j.status, j.attempt));
                warn!(
                    ?holder,
                    attempt = job.attempt,
                    "a newer attempt owns the job; outcome discarded"
                );
            }
            Err(e) => {
                warn!(error = %DisplayErrorContext(&e), "could not record the outcome; the job will run again")
            }
        }
    }

    async fn refused(&self, msg: &Received, id: &JobId, decision: ClaimRefusal) {
        let now = Millis::now();
        let retention = self.config.retention;
        match decision {
            ClaimRefusal::Delete => {
                info!("job already finished or never recorded; deleting its message");
                self.delete(msg).await;
            }
            ClaimRefusal::Expire => match self.store.expire(id, now, retention).await {
                Ok(job) => {
                    info!("job expired before it started");
                    metrics::job_finished(&self.config, Outcome::Expired, Duration::ZERO, &job);
                    self.delete(msg).await;
                }
                Err(e) => warn!(error = %DisplayErrorContext(&e), "could not expire the job"),
            },
            ClaimRefusal::Cancel => match self.store.cancel_abandoned(id, now, retention).await {
                Ok(_) => {
                    info!("job cancelled after its worker was lost");
                    self.delete(msg).await;
                }
                Err(e) => warn!(error = %DisplayErrorContext(&e), "could not cancel the job"),
            },
            ClaimRefusal::RetryLater(after) => self.hide(msg, after).await,
        }
    }

    async fn delete(&self, msg: &Received) {
        if let Err(mpsc::error::SendError(receipt)) = self.deletes.send(msg.receipt.clone()) {
            // The batcher is gone (never while jobs run); delete on our own.
            if let Err(e) = self.queue.delete(&receipt).await {
                warn!(error = %DisplayErrorContext(&e), "could not delete the message");
            }
        }
    }

    async fn hide(&self, msg: &Received, for_: Duration) {
        if let Err(e) = self.queue.change_visibility(&msg.receipt, for_).await {
            warn!(error = %DisplayErrorContext(&e), "could not change the message's visibility");
        }
    }
}

/// A number in `[0, 1)` that differs between jobs and attempts, to spread retries.
fn jitter(id: &JobId, attempt: u32) -> f64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    (id, attempt).hash(&mut h);
    (h.finish() % 10_000) as f64 / 10_000.0
}
