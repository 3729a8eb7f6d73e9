//! The worker loop: receive, claim, run with a heartbeat, finish; and drain on shutdown.

use std::future::Future;
use std::hash::{Hash, Hasher};
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use sluice::aws::DisplayErrorContext;
use sluice::job::{self, AttemptEnd, ClaimRefusal, JobId, JobRecord, OnTimeout, Progress};
use sluice::outbox::Outbox;
use sluice::payload::{PayloadError, Payloads};
use sluice::queue::{Envelope, JobQueue, ReceiptHandle, Received};
use sluice::store::{Finish, JobStore, Produced, StoreError};
use sluice::time::Millis;
use sluice::upload::InputObject;
use tokio::sync::{mpsc, watch, OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn, Instrument};

use crate::config::WorkerConfig;
use crate::handler::{
    ErrorKind, Handler, InputFile, JobContext, JobError, OutputArea, ProgressSlot,
};
use crate::health::{self, Phase, Vitals};
use crate::metrics::{self, Outcome};
use crate::outputs;
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
    // Leases, deadlines and message ages are compared with other machines' times: the worker
    // reads AWS's clock, measured on every answer, whatever its own says.
    let clock = sluice::clock::ServerClock::default();
    let store =
        JobStore::measuring(&aws, &config.table_name, &clock).with_retention(config.retention);
    let queue = JobQueue::measuring(&aws, &config.queue_url, &clock);
    run_with(handler, config, store, queue, shutdown).await
}

/// [`run`] over a store and a queue built by the caller (for instance with SDK clients that
/// carry an interceptor).
///
/// The handler runs on a runtime of its own (threads named `sluice-handler`), so that nothing it
/// does, blocking calls included, can delay the heartbeats, the receive loop or the health check,
/// which stay on the caller's runtime.
pub async fn run_with<H: Handler>(
    handler: H,
    config: WorkerConfig,
    store: JobStore,
    queue: JobQueue,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let compute = ComputeRuntime(Some(
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(config.concurrency.clamp(1, 64))
            .thread_name("sluice-handler")
            .enable_all()
            .build()?,
    ));
    let (deletes, pending) = mpsc::unbounded_channel();
    let deleter = tokio::spawn(delete_in_batches(queue.clone(), pending, DELETE_LINGER));
    // The clients of S3, SNS and EventBridge, from one load of the SDK's settings, when needed.
    let aws = match config.payload_bucket.is_some() || config.events.any() {
        true => Some(sluice::aws::load().await),
        false => None,
    };
    let payloads = aws
        .as_ref()
        .zip(config.payload_bucket.as_ref())
        .map(|(aws, bucket)| Payloads::from_sdk(aws, bucket));
    let mut outbox = Outbox::new(store.clone(), config.webhook_policy);
    if let (Some(aws), true) = (&aws, config.events.any()) {
        outbox = outbox.with_events(sluice::events::Publisher::from_sdk(
            aws,
            config.events.clone(),
        ));
    }
    if let Some(p) = &payloads {
        outbox = outbox.with_payloads(p.clone());
    }
    let result = Worker {
        payloads,
        handler: Arc::new(handler),
        outbox,
        notices: TaskTracker::new(),
        store,
        queue,
        config: Arc::new(config),
        deletes,
        compute: compute.handle(),
        vitals: Arc::new(Vitals::default()),
    }
    .run(shutdown)
    .await;
    // Every job is done and every sender gone: the deleter flushes what is left and stops.
    let _ = tokio::time::timeout(Duration::from_secs(10), deleter).await;
    // Whatever the handler left running (a blocking call past its time limit, child processes)
    // goes with the compute runtime, dropped here.
    drop(compute);
    result
}

/// Downloads a job's uploaded file to the worker's temporary directory, streamed to disk (the
/// worker never holds it in memory). S3 being away is not the job's fault: the job goes back to
/// the queue without spending an attempt; a file that is gone fails it.
async fn fetch_input(
    payloads: Option<&Payloads>,
    object: &InputObject,
    id: &JobId,
    attempt: u32,
) -> Result<InputFile, JobError> {
    let payloads = payloads.ok_or_else(|| {
        JobError::permanent(format!(
            "the job names an uploaded file, but this worker has no payload bucket ({} is not set)",
            sluice::env::PAYLOAD_BUCKET
        ))
    })?;
    let path = std::env::temp_dir().join(format!("sluice-input-{id}-{attempt}"));
    let started = tokio::time::Instant::now();
    // An object in another bucket (a pipeline's) is read with the same client.
    let other;
    let payloads = match &object.bucket {
        Some(bucket) => {
            other = Payloads::new(payloads.client().clone(), bucket.as_str());
            &other
        }
        None => payloads,
    };
    // An object named in S3 is read as the version the API saw when it accepted the job.
    match payloads
        .download_version_to_file(&object.key, object.version_id.as_deref(), &path)
        .await
    {
        Ok(size) => {
            info!(size, took = ?started.elapsed(), "input file downloaded");
            Ok(InputFile {
                path,
                size,
                content_type: object.content_type.clone(),
            })
        }
        Err(PayloadError::NotFound { .. }) => Err(JobError::permanent(missing_input(object))),
        Err(e) if e.is_retryable() => Err(JobError::unavailable(format!(
            "the job's file could not be downloaded ({}); the job goes back to the queue",
            DisplayErrorContext(&e)
        ))),
        Err(e) => Err(JobError::retryable(format!(
            "the job's file could not be downloaded: {}",
            DisplayErrorContext(&e)
        ))),
    }
}

/// Why a job fails whose file is gone. Pure.
pub fn missing_input(object: &InputObject) -> String {
    match &object.bucket {
        None => format!(
            "the job's file (upload {}) is no longer in the payload bucket: it expires with the \
             job's retention; submit the job again with a new upload",
            object.upload_id
        ),
        Some(bucket) => format!(
            "the job's object s3://{bucket}/{}{} is no longer there (deleted{}): put it back, \
             or submit the job again naming an object that exists",
            object.key,
            object
                .version_id
                .as_deref()
                .map(|v| format!(" (version {v})"))
                .unwrap_or_default(),
            if object.version_id.is_some() {
                ", or that version removed"
            } else {
                ""
            }
        ),
    }
}

/// A job's input read from its file, as JSON (streamed: never held as text beside its value).
async fn input_from_file<T: serde::de::DeserializeOwned + Send + 'static>(
    ctx: &JobContext,
) -> Result<T, JobError> {
    let path = ctx
        .input_path()
        .ok_or_else(|| JobError::permanent("the job has no input"))?
        .to_owned();
    tokio::task::spawn_blocking(move || {
        let file = std::fs::File::open(&path).map_err(|e| {
            JobError::retryable(format!(
                "cannot open the job's file {}: {e}",
                path.display()
            ))
        })?;
        serde_json::from_reader(std::io::BufReader::with_capacity(1 << 20, file)).map_err(|e| {
            JobError::permanent(format!(
                "the job has no input, and its file is not the JSON input the handler takes: {e}"
            ))
        })
    })
    .await
    .map_err(|e| JobError::retryable(format!("reading the job's file stopped: {e}")))?
}

/// The handler's runtime. Dropped, it shuts down without waiting for what still runs there (a
/// blocking call cannot be interrupted), also when `run_with` itself is dropped mid-way.
struct ComputeRuntime(Option<tokio::runtime::Runtime>);

impl ComputeRuntime {
    fn handle(&self) -> tokio::runtime::Handle {
        self.0
            .as_ref()
            .expect("the runtime lives until dropped")
            .handle()
            .clone()
    }
}

impl Drop for ComputeRuntime {
    fn drop(&mut self) {
        if let Some(rt) = self.0.take() {
            rt.shutdown_background();
        }
    }
}

/// Pauses before claiming again a job whose message came before its record.
const EARLY_CLAIM_RETRIES: [Duration; 3] = [
    Duration::from_millis(20),
    Duration::from_millis(80),
    Duration::from_millis(300),
];

/// How long a stop waits for a receive under way to answer, so as to hand back what it took.
const RECEIVE_HANDBACK_WAIT: Duration = Duration::from_secs(3);

/// How long a job released at the drain deadline waits for its run to stop (a child's cancel
/// grace and kill fit) before it is handed back.
const RELEASE_WAIT: Duration = Duration::from_secs(8);

/// Tries after the first to write an attempt's end (about half a minute at most in all).
const RECORD_TRIES: usize = 8;

/// How long a stopping worker waits for the webhook deliveries under way.
const NOTICE_WAIT: Duration = Duration::from_secs(20);

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
    /// Announces the jobs this worker ends to their webhooks (the fast path; the backlog
    /// function delivers whatever this misses).
    outbox: Outbox,
    /// The announcements under way, which never hold a job's slot.
    notices: TaskTracker,
    store: JobStore,
    queue: JobQueue,
    config: Arc<WorkerConfig>,
    /// Receipts of finished jobs, deleted in batches.
    deletes: mpsc::UnboundedSender<ReceiptHandle>,
    /// Where the handler runs.
    compute: tokio::runtime::Handle,
    vitals: Arc<Vitals>,
    /// Where the jobs' uploaded files are.
    payloads: Option<Payloads>,
}

impl<H> Clone for Worker<H> {
    fn clone(&self) -> Self {
        Worker {
            handler: self.handler.clone(),
            outbox: self.outbox.clone(),
            notices: self.notices.clone(),
            store: self.store.clone(),
            queue: self.queue.clone(),
            config: self.config.clone(),
            deletes: self.deletes.clone(),
            compute: self.compute.clone(),
            vitals: self.vitals.clone(),
            payloads: self.payloads.clone(),
        }
    }
}

/// A job's hold on a slot: dropped when the job ends, however it ends (a panic included), it
/// gives back the slot and the busy count that scale-in protection follows.
struct Held {
    busy: Arc<watch::Sender<usize>>,
    _permit: OwnedSemaphorePermit,
}

impl Held {
    fn new(busy: Arc<watch::Sender<usize>>, permit: OwnedSemaphorePermit) -> Self {
        busy.send_modify(|n| *n += 1);
        Held {
            busy,
            _permit: permit,
        }
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        self.busy.send_modify(|n| *n = n.saturating_sub(1));
    }
}

/// The text of a panic's payload.
fn panic_message(payload: Box<dyn std::any::Any + Send>) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".into())
}

/// How a running attempt stopped.
enum Stop {
    /// The handler returned (its output, stored), failed, panicked or ran out of time.
    Returned(Result<Produced, JobError>),
    /// The caller cancelled the job.
    Cancelled,
    /// Another attempt owns the job now.
    LostLease,
    /// The worker is shutting down and hands the job back.
    Released,
    /// The lease went unrenewed (the table could not be reached) until little of it was left:
    /// the run is stopped before the lease lapses and another worker takes the job over.
    Fenced,
}

/// A heartbeat under way.
type BeatCall<'a> = Pin<Box<dyn Future<Output = Beat> + Send + 'a>>;

/// How one heartbeat went.
enum Beat {
    /// The lease was renewed; the record says whether the caller asked to cancel, and the
    /// progress report stored with it, if any.
    Renewed {
        cancel_requested: bool,
        saved: Option<Progress>,
    },
    /// Another attempt owns the job now.
    Lost,
    /// The calls failed or took too long; the next beat tries again.
    Failed,
}

/// Completes when the worker's age is reached; never without one.
async fn until_aged(age: &mut Option<Pin<Box<tokio::time::Sleep>>>) {
    match age {
        Some(sleep) => sleep.as_mut().await,
        None => std::future::pending().await,
    }
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
        let reporter = tokio::spawn(report_health(
            self.vitals.clone(),
            self.handler.clone(),
            self.config.clone(),
        ));
        let _stop_reporting = AbortOnDrop(reporter);
        info!(
            worker_id = %self.config.worker_id,
            queue = %self.config.queue_url,
            concurrency = self.config.concurrency,
            "worker started; waiting for the handler to be ready"
        );
        let handler = self.handler.clone();
        let ready = self.compute.spawn(async move { handler.ready().await });
        tokio::select! {
            r = ready => match r {
                Ok(Ok(())) => info!("the handler is ready; taking jobs"),
                Ok(Err(e)) => anyhow::bail!("the handler did not become ready: {e}"),
                Err(e) => anyhow::bail!("the handler's start-up failed: {e}"),
            },
            () = &mut shutdown => {
                info!("stopped before the handler was ready");
                return Ok(());
            }
        }
        // Stop taking jobs on SIGTERM, or when the worker reaches its age (a rolling deploy
        // then replaces it even under sustained load). The age is looked at only between
        // receives, so a retiring worker never drops messages a receive already took.
        let retire_in = self
            .config
            .max_age
            .map(|age| crate::config::retire_after(age, &self.config.worker_id));
        let mut age = retire_in.map(|d| Box::pin(tokio::time::sleep(d)));
        let mut retired = false;
        // The pipeline's state, read in the background (`crate::pause`): while it is paused the
        // loop takes nothing new, and the jobs held finish.
        let state = sluice::pipeline::Pipeline::of(&self.store);
        let (pipeline_tx, mut pipeline) =
            watch::channel(crate::pause::first(&state, Duration::from_secs(5)).await);
        let _stop_watching = AbortOnDrop(tokio::spawn(crate::pause::watch(
            state,
            sluice::pipeline::WORKER_POLL,
            pipeline_tx,
        )));
        loop {
            if age.as_ref().is_some_and(|a| a.is_elapsed()) {
                retired = true;
                break;
            }
            if pipeline.borrow().is_paused() {
                let state = pipeline.borrow().clone();
                self.vitals.phase(Phase::Paused);
                self.vitals.set_note(Some(crate::pause::note(&state)));
                info!(held = jobs.len(), pipeline = %state.describe(), "pipeline paused: taking no new jobs; the jobs held finish");
                tokio::select! {
                    () = crate::pause::until_resumed(&mut pipeline) => {
                        self.vitals.set_note(None);
                        info!("pipeline resumed: taking jobs again");
                        continue;
                    }
                    () = &mut shutdown => break,
                    () = until_aged(&mut age) => continue,
                }
            }
            self.vitals.phase(Phase::WaitingForSlot);
            let first = tokio::select! {
                permit = slots.clone().acquire_owned() => permit?,
                () = &mut shutdown => break,
                () = until_aged(&mut age) => continue,
            };
            let mut free = 1 + slots.available_permits();
            if let Some(capacity) = self.handler.capacity() {
                // Every job held counts, those still being claimed included: they will each want
                // a place on the handler within milliseconds.
                let held = *busy.borrow();
                let room = capacity.saturating_sub(held);
                if room == 0 {
                    // The handler has no room now (its processes are starting or restarting):
                    // take nothing from the queue, look again shortly.
                    drop(first);
                    tokio::select! {
                        () = tokio::time::sleep(Duration::from_millis(200)) => continue,
                        () = &mut shutdown => break,
                    }
                }
                free = free.min(room);
            }
            self.vitals.phase(Phase::Receiving);
            let receive = self
                .queue
                .receive(free.min(10) as i32, self.config.receive_wait);
            tokio::pin!(receive);
            let received = tokio::select! {
                r = &mut receive => r,
                () = crate::pause::until_paused(&mut pipeline) => {
                    // Paused during a long poll: what the receive took goes back at once.
                    if let Ok(Ok(taken)) = tokio::time::timeout(RECEIVE_HANDBACK_WAIT, receive).await {
                        for msg in &taken {
                            self.hide(msg, Duration::ZERO).await;
                        }
                        if !taken.is_empty() {
                            info!(count = taken.len(), "pipeline paused: handed back the messages the last receive took");
                        }
                    }
                    continue;
                }
                () = &mut shutdown => {
                    // The receive may already have taken messages, its answer on the way: let
                    // it end and hand them back at once, not after their visibility timeout. A
                    // long poll that took nothing is not waited out (a stop would take up to
                    // its 20 s): a receive that took messages answers at once.
                    if let Ok(Ok(taken)) = tokio::time::timeout(RECEIVE_HANDBACK_WAIT, receive).await {
                        for msg in &taken {
                            self.hide(msg, Duration::ZERO).await;
                        }
                        if !taken.is_empty() {
                            info!(count = taken.len(), "stopping: handed back the messages the last receive took");
                        }
                    }
                    break;
                }
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
                    self.vitals.phase(Phase::Pausing);
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
                let held = Held::new(busy.clone(), permit);
                let span = tracing::info_span!("message", message_id = %msg.message_id);
                jobs.spawn(
                    async move {
                        worker.process(msg, release).await;
                        drop(held);
                    }
                    .instrument(span),
                );
            }
        }

        self.vitals.phase(Phase::Draining);
        let running = jobs.len();
        jobs.close();
        if retired {
            // No deadline: every job ends by its own time limit. A SIGTERM meanwhile drains as
            // usual.
            info!(running, age = ?retire_in, "retiring at its maximum age: no new jobs; letting running jobs finish");
            tokio::select! {
                () = jobs.wait() => {}
                () = &mut shutdown => self.drain(&jobs, &release).await,
            }
        } else {
            info!(running, drain = ?self.config.drain, "stopping: no new jobs; letting running jobs finish");
            self.drain(&jobs, &release).await;
        }
        // Announcements under way get a moment; one cut short is delivered by the backlog
        // function once its lease runs out.
        self.notices.close();
        let _ = tokio::time::timeout(NOTICE_WAIT, self.notices.wait()).await;
        // With no jobs left, protection comes off.
        drop(busy);
        let _ = tokio::time::timeout(Duration::from_secs(10), protection).await;
        info!("worker stopped");
        Ok(())
    }

    /// Lets running jobs finish until the drain deadline, then releases the rest.
    async fn drain(&self, jobs: &TaskTracker, release: &CancellationToken) {
        if tokio::time::timeout(self.config.drain, jobs.wait())
            .await
            .is_err()
        {
            warn!(
                running = jobs.len(),
                "drain deadline reached; releasing unfinished jobs"
            );
            release.cancel();
            let _ = tokio::time::timeout(RELEASE_WAIT + Duration::from_secs(4), jobs.wait()).await;
        }
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
            Err(StoreError::Corrupt { reason, .. }) => {
                // No worker can run a job whose record it cannot read: its deliveries run out
                // and the message reaches the dead-letter queue, where `sluice dlq` says why.
                let pause = cfg
                    .backoff
                    .delay(msg.receive_count, jitter(id, msg.receive_count));
                tracing::error!(%reason, receive_count = msg.receive_count, ?pause, "the job's record cannot be read; leaving its message for the dead-letter queue");
                self.hide(msg, pause).await;
                return;
            }
            Err(e) => {
                // Throttling or an outage: not the job's fault. Look again after a pause that
                // grows with the deliveries, which spend none of the job's.
                let pause = cfg
                    .backoff
                    .delay(msg.receive_count, jitter(id, msg.receive_count));
                warn!(error = %DisplayErrorContext(&e), ?pause, "claim failed; the job will be tried again");
                self.later(msg, pause).await;
                return;
            }
        };
        // A claim held on its way may apply when much of the lease it writes (or all of it) has
        // passed: another worker could then take the job over beside this run. Such a claim is
        // renewed before the job runs, or the job is left to its next delivery.
        let left = job
            .lease_expires_at
            .map_or(Duration::ZERO, |l| l.since(Millis::now()));
        // Until when the lease is this attempt's, on this machine's monotonic clock.
        let mut held_until = tokio::time::Instant::now() + left;
        if left < cfg.lease / 2 {
            let renewing = tokio::time::Instant::now();
            match self.heartbeat(msg, &job, None).await {
                Beat::Renewed { .. } => held_until = renewing + cfg.lease,
                Beat::Lost => {
                    warn!(attempt = job.attempt, "the claim applied too late: another attempt took the job over before it ran");
                    self.later(msg, Duration::from_secs(1)).await;
                    return;
                }
                Beat::Failed => {
                    // Handed back unrun: the attempt the claim counted is not spent.
                    warn!(attempt = job.attempt, ?left, "the claim applied too late to hold its lease, which could not be renewed; handing the job back unrun");
                    match self.requeue(msg, &job, None).await {
                        Ok(_) => self.later(msg, Duration::ZERO).await,
                        Err(_) => self.later(msg, cfg.lease).await,
                    }
                    return;
                }
            }
        }
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
        let limit = cfg.time_limit(&job);
        info!(attempt = job.attempt, time_limit = ?limit, "job started");
        let input = match serde_json::from_str::<H::Input>(input) {
            Ok(i) => Some(i),
            // A job with a file and no input (an input too large to send inline, which the
            // client uploaded) whose handler takes no `null`: its input is read from the file.
            Err(_) if input.trim() == "null" && job.input_object.is_some() => None,
            Err(e) => {
                let error = format!("the input does not match what the handler takes: {e}");
                self.finish(msg, &job, Finish::Failed { error }, Outcome::Failed)
                    .await;
                return;
            }
        };
        let started = tokio::time::Instant::now();
        let (stop, handler_alive) = self
            .attempt(msg, &job, input, limit, held_until, release)
            .await;
        let ran = started.elapsed();
        match stop {
            Stop::Returned(Ok(produced)) => {
                info!(?ran, files = produced.outputs.len(), "job finished");
                metrics::job_finished(cfg, Outcome::Succeeded, ran, &job);
                self.finish(msg, &job, Finish::Produced(produced), Outcome::Succeeded)
                    .await;
            }
            Stop::Returned(Err(e))
                if e.kind == ErrorKind::Unavailable && job::release_is_free(&job) =>
            {
                // The job never ran: the handler's machinery was away. It goes back to the queue
                // without spending an attempt, and comes back once the handler can take it.
                let delay = cfg.backoff.delay(job.releases + 1, jitter(id, job.attempt));
                warn!(error = %e, ?delay, "the handler could not take the job; it goes back to the queue without spending an attempt");
                match self.requeue(msg, &job, None).await {
                    Ok(_) => self.later(msg, delay).await,
                    Err(err) => {
                        warn!(error = %DisplayErrorContext(&err), "could not release the job; its lease will expire")
                    }
                }
            }
            Stop::Returned(Err(e)) => {
                let jitter = jitter(id, job.attempt);
                match job::after_error(&job, e.is_retryable(), &cfg.backoff, jitter) {
                    AttemptEnd::Retry(delay) => {
                        warn!(error = %e, ?delay, attempt = job.attempt, "job failed; retrying");
                        metrics::job_finished(cfg, Outcome::Retried, ran, &job);
                        // A run stopped mid-way (its time limit) may still be going on: a child
                        // in its cancel grace, a model server yet to notice the closed
                        // connection. The next attempt may start only once it has stopped.
                        if !self.stopped_within(msg, &job, &handler_alive).await {
                            return self.linger(handler_alive).await;
                        }
                        match self.requeue(msg, &job, Some(e.message.clone())).await {
                            Ok(_) => self.later(msg, delay).await,
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
            Stop::Released => {
                // Released only once its run has stopped: a job handed back while its handler
                // still runs (a blocking call, a child in its cancel grace) could start
                // elsewhere beside it. One that does not stop keeps the job until its lease
                // lapses, after this worker is gone.
                if self.stopped_within(msg, &job, &handler_alive).await {
                    self.hand_back(msg, &job, None).await;
                }
            }
            Stop::Fenced => {
                warn!(lease_left = ?crate::config::fence_margin(cfg.lease, cfg.heartbeat), "the job's lease could not be renewed, and little of it is left; its run is stopped before the lease lapses, so that no other worker runs the job beside it");
                metrics::job_finished(cfg, Outcome::Retried, ran, &job);
                // The run stopped for the worker's trouble, not the job's: handed back without
                // spending the attempt, unless such hand-backs are used up.
                let spent = (!job::release_is_free(&job)).then(|| {
                    "the worker could not renew the job's lease and stopped its run".to_owned()
                });
                if self.stopped_within(msg, &job, &handler_alive).await {
                    self.hand_back(msg, &job, spent).await;
                }
            }
        }
        self.linger(handler_alive).await;
    }

    /// Whether the handler let go of its context (its run stopped) within [`RELEASE_WAIT`]. The
    /// job stays this attempt's meanwhile: its lease and its message's visibility are renewed.
    async fn stopped_within(
        &self,
        msg: &Received,
        job: &JobRecord,
        alive: &std::sync::Weak<()>,
    ) -> bool {
        let until = tokio::time::Instant::now() + RELEASE_WAIT;
        let mut next_beat = tokio::time::Instant::now() + self.config.heartbeat;
        while alive.strong_count() > 0 {
            let now = tokio::time::Instant::now();
            if now >= until {
                warn!(wait = ?RELEASE_WAIT, "the stopped handler still runs; the job is not handed back and its lease will lapse");
                return false;
            }
            if now >= next_beat {
                if let Beat::Lost = self.heartbeat(msg, job, None).await {
                    return false;
                }
                next_beat = tokio::time::Instant::now() + self.config.heartbeat;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        true
    }

    /// Hands a job whose run has stopped back to the queue for the next delivery: without
    /// spending its attempt, or with `error` as that attempt's failure.
    async fn hand_back(&self, msg: &Received, job: &JobRecord, error: Option<String>) {
        match self.requeue(msg, job, error).await {
            Ok(_) => {
                info!("job handed back to the queue");
                self.later(msg, Duration::ZERO).await;
            }
            Err(e) => {
                warn!(error = %DisplayErrorContext(&e), "could not hand the job back; its lease will lapse")
            }
        }
    }

    /// Keeps the job's slot until the handler has let go of its context: a stopped handler that
    /// is still running (a blocking call cannot be interrupted) must not share the machine with
    /// a new job beyond the worker's concurrency. One that does not return within
    /// [`health::LINGER_LIMIT`] makes the worker unhealthy, and ECS replaces it.
    async fn linger(&self, alive: std::sync::Weak<()>) {
        if alive.strong_count() == 0 {
            return;
        }
        warn!("the stopped handler is still running; its slot stays taken until it returns");
        let _lingering = self.vitals.lingering();
        while alive.strong_count() > 0 {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        info!("the stopped handler returned; its slot is free");
    }

    /// Runs the handler on the compute runtime while this task renews the message's visibility
    /// and the job's lease on every heartbeat (storing the latest progress report with it),
    /// watches for a cancel, and stops the attempt at its time limit.
    async fn attempt(
        &self,
        msg: &Received,
        job: &JobRecord,
        input: Option<H::Input>,
        limit: Duration,
        held_until: tokio::time::Instant,
        release: CancellationToken,
    ) -> (Stop, std::sync::Weak<()>) {
        let cfg = &self.config;
        let cancel = CancellationToken::new();
        let progress = Arc::new(ProgressSlot::default());
        let (job_id, attempt) = (job.id.clone(), job.attempt);
        let deadline = tokio::time::Instant::now() + limit;
        let ctx = JobContext::new(
            job.id.clone(),
            job.attempt,
            job.max_attempts,
            cfg.worker_id.clone(),
            cancel.clone(),
        )
        .with_limit(limit, deadline.into_std(), progress.clone());
        let handler_alive = ctx.liveness();
        let handler = self.handler.clone();
        let file = job.input_object.clone();
        let payloads = self.payloads.clone();
        let owner = job.owner.clone();
        let task = self.compute.spawn(async move {
            // The job's file is fetched, and its output stored, within the attempt: under its
            // heartbeat and time limit.
            let ctx = match file {
                Some(object) => {
                    ctx.with_input(fetch_input(payloads.as_ref(), &object, &job_id, attempt).await?)
                }
                None => ctx,
            };
            let area = match &payloads {
                Some(_) => Some(Arc::new(OutputArea::create(&job_id, attempt).map_err(
                    |e| {
                        JobError::retryable(format!(
                            "the job's output directory could not be made: {e}"
                        ))
                    },
                )?)),
                None => None,
            };
            let input = match input {
                Some(i) => i,
                None => input_from_file(&ctx).await?,
            };
            let output = handler.call(input, ctx.with_output(area.clone())).await?;
            let json = serde_json::to_string(&output).map_err(|e| {
                JobError::permanent(format!("the result could not be encoded as JSON: {e}"))
            })?;
            let at = outputs::Attempt {
                owner: &owner,
                id: &job_id,
                attempt,
            };
            outputs::store(payloads.as_ref(), area.as_deref(), json, &at).await
        });
        let task = AbortOnDrop(task);
        let vitals = self.vitals.attempt();
        // The handler's own deadlines (a child process's, say) end at the same instant: the
        // time limit is checked first, so a handler stopped at its limit is a timeout, however
        // the handler reports it.
        let time_up = tokio::time::sleep_until(deadline);
        tokio::pin!(time_up);
        // Self-fencing: a run whose lease could not be renewed is stopped while enough of the
        // lease is left for it to stop before another worker may take the job.
        let margin = crate::config::fence_margin(cfg.lease, cfg.heartbeat);
        let fence = tokio::time::sleep_until(held_until - margin);
        tokio::pin!(fence);
        let mut beat =
            tokio::time::interval_at(tokio::time::Instant::now() + cfg.heartbeat, cfg.heartbeat);
        beat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // The beat in flight. It runs beside the attempt, never in its way: the time limit, a
        // cancel and the handler's answer are seen while a slow call is pending, and each beat's
        // calls are cut at the next beat (the config keeps two beats within the lease).
        // The beat in flight, and when it started: a renewal counts from then.
        let mut beating: Option<(tokio::time::Instant, BeatCall<'_>)> = None;
        let mut joined = task;
        let stop = loop {
            tokio::select! {
                biased;
                () = &mut time_up => {
                    let kind = match job.on_timeout {
                        OnTimeout::Retry => ErrorKind::Retryable,
                        OnTimeout::Fail => ErrorKind::Permanent,
                    };
                    break Stop::Returned(Err(JobError {
                        kind,
                        message: format!(
                            "the job ran past its time limit of {} s and was stopped",
                            limit.as_secs()
                        ),
                    }));
                }
                out = &mut joined.0 => break Stop::Returned(match out {
                    Ok(result) => result,
                    Err(e) if e.is_panic() => {
                        let message = panic_message(e.into_panic());
                        warn!(panic = %message, "the handler panicked");
                        Err(JobError::retryable(format!("the handler panicked: {message}")))
                    }
                    Err(_) => Err(JobError::retryable("the handler's task was stopped")),
                }),
                () = release.cancelled() => break Stop::Released,
                () = &mut fence => break Stop::Fenced,
                done = async { beating.as_mut().expect("polled only while a beat runs").1.as_mut().await }, if beating.is_some() => {
                    let (started, _) = beating.take().expect("a beat ran");
                    match done {
                        Beat::Renewed { cancel_requested: true, .. } => break Stop::Cancelled,
                        Beat::Renewed { saved, .. } => {
                            fence.as_mut().reset(started + cfg.lease - margin);
                            if let Some(p) = saved {
                                progress.saved(p);
                            }
                        }
                        Beat::Lost => break Stop::LostLease,
                        // Tried again soon rather than a whole beat later: the fence is near.
                        Beat::Failed => beat.reset_after(cfg.heartbeat / 4),
                    }
                }
                _ = beat.tick() => {
                    vitals.beat();
                    if beating.is_some() {
                        warn!(limit = ?cfg.heartbeat, "the last heartbeat's calls did not finish within a beat; starting another");
                    }
                    let report = progress.unsaved();
                    beating = Some((
                        tokio::time::Instant::now(),
                        Box::pin(self.heartbeat(msg, job, report)),
                    ));
                }
            }
        };
        // A handler that has not returned is stopped: the token tells it (and what it spawned,
        // a child process), and dropping `joined` aborts an async one at its next await.
        if !joined.0.is_finished() {
            cancel.cancel();
        }
        (stop, handler_alive)
    }

    /// One heartbeat: the job's lease (with the latest progress report) and the message's
    /// visibility renewed together, each call cut at one heartbeat.
    async fn heartbeat(&self, msg: &Received, job: &JobRecord, report: Option<Progress>) -> Beat {
        let cfg = &self.config;
        let bound = cfg.heartbeat;
        let (lease, visibility) = tokio::join!(
            tokio::time::timeout(
                bound,
                self.store.heartbeat(
                    &job.id,
                    job.attempt,
                    Millis::now(),
                    cfg.lease,
                    report.as_ref()
                )
            ),
            tokio::time::timeout(
                bound,
                self.queue
                    .change_visibility(&msg.receipt, cfg.visibility_timeout)
            ),
        );
        match visibility {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                warn!(error = %DisplayErrorContext(&e), "could not extend the message's visibility")
            }
            Err(_) => {
                warn!(limit = ?bound, "extending the message's visibility took longer than a heartbeat; given up for this beat")
            }
        }
        match lease {
            Ok(Ok(now)) => Beat::Renewed {
                cancel_requested: now.cancel_requested,
                saved: report,
            },
            Ok(Err(StoreError::Conflict { .. })) => Beat::Lost,
            Ok(Err(e)) => {
                warn!(error = %DisplayErrorContext(&e), "could not extend the job's lease");
                Beat::Failed
            }
            Err(_) => {
                warn!(limit = ?bound, "extending the job's lease took longer than a heartbeat; given up for this beat");
                Beat::Failed
            }
        }
    }

    /// Writes the attempt's end, again and again while the table fails (throttling, an outage,
    /// a lost answer), renewing the lease and the message's visibility between tries so that
    /// the job stays this attempt's; a result is never thrown away for one failed write. A try
    /// whose answer was lost but which was applied is recognised on the next one.
    async fn record(
        &self,
        msg: &Received,
        job: &JobRecord,
        end: &Finish,
    ) -> Result<JobRecord, StoreError> {
        let cfg = &self.config;
        self.write_end(
            msg,
            job,
            |now| {
                self.store
                    .finish(&job.id, job.attempt, end.clone(), now, cfg.retention)
            },
            |cur| cur.attempt == job.attempt && cur.status == end.status(),
        )
        .await
    }

    /// Hands the attempt back to the queue (`error` says why; none for a release), written as
    /// [`Self::record`] writes an end: tried again while the table fails, the lease renewed
    /// between tries.
    async fn requeue(
        &self,
        msg: &Received,
        job: &JobRecord,
        error: Option<String>,
    ) -> Result<JobRecord, StoreError> {
        self.write_end(
            msg,
            job,
            |_| self.store.requeue(&job.id, job.attempt, error.clone()),
            |cur| cur.attempt == job.attempt && cur.status == sluice::job::Status::Queued,
        )
        .await
    }

    /// Writes an attempt's end with `write`, again and again while the table fails; `applied`
    /// knows the record as that write leaves it (a try applied whose answer was lost).
    async fn write_end<F, Fut>(
        &self,
        msg: &Received,
        job: &JobRecord,
        write: F,
        applied: impl Fn(&JobRecord) -> bool,
    ) -> Result<JobRecord, StoreError>
    where
        F: Fn(Millis) -> Fut,
        Fut: Future<Output = Result<JobRecord, StoreError>>,
    {
        use backon::BackoffBuilder;
        let cfg = &self.config;
        let vitals = self.vitals.attempt();
        let mut pauses = backon::ExponentialBuilder::default()
            .with_min_delay(Duration::from_millis(200))
            .with_max_delay(cfg.heartbeat)
            .with_max_times(RECORD_TRIES)
            .with_jitter()
            .build();
        loop {
            let now = Millis::now();
            // Each try is cut at one heartbeat, so that the lease and the message's visibility
            // are renewed in time however long the SDK's own retries take; a try cut short but
            // applied is recognised on the next one.
            let tried = tokio::time::timeout(cfg.heartbeat, write(now))
                .await
                .unwrap_or_else(|_| {
                    Err(StoreError::Unavailable(
                        "writing the outcome took longer than a heartbeat".into(),
                    ))
                });
            match tried {
                Err(StoreError::Conflict { current: Some(cur) }) if applied(&cur) => {
                    return Ok(*cur)
                }
                Err(e) if e.is_retryable() => {
                    let Some(pause) = pauses.next() else {
                        return Err(e);
                    };
                    warn!(error = %DisplayErrorContext(&e), ?pause, "could not record the outcome; trying again");
                    tokio::time::sleep(pause).await;
                    vitals.beat();
                    // A lost lease is judged by the next try, which also knows a write of its
                    // own that was cut short but applied.
                    let _ = self.heartbeat(msg, job, None).await;
                }
                other => return other,
            }
        }
    }

    /// Records the attempt's end and deletes the message. A newer attempt that took the job
    /// over keeps it: this attempt's outcome is discarded and the message left alone.
    async fn finish(&self, msg: &Received, job: &JobRecord, end: Finish, outcome: Outcome) {
        match self.record(msg, job, &end).await {
            Ok(ended) => {
                if outcome != Outcome::Succeeded {
                    info!(status = ?outcome, "job ended");
                }
                self.announce(ended);
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
                warn!(error = %DisplayErrorContext(&e), tries = RECORD_TRIES + 1, "could not record the outcome; the job will run again")
            }
        }
    }

    /// Delivers the announcement of a job just ended, when it has a webhook, beside the next
    /// jobs (it holds no slot). The announcement is already recorded due: should this worker
    /// die first, the backlog function delivers it.
    fn announce(&self, ended: JobRecord) {
        if !ended.is_announced() {
            return;
        }
        let outbox = self.outbox.clone();
        let span = tracing::info_span!("announce", job_id = %ended.id);
        self.notices.spawn(
            async move {
                if let Err(e) = outbox.deliver_ended(&ended).await {
                    warn!(error = %DisplayErrorContext(&e), "could not announce the job's end; the backlog function will");
                }
            }
            .instrument(span),
        );
    }

    async fn refused(&self, msg: &Received, id: &JobId, decision: ClaimRefusal) {
        let now = Millis::now();
        let retention = self.config.retention;
        match decision {
            ClaimRefusal::Delete => {
                info!("job already finished; deleting its message");
                self.delete(msg).await;
            }
            // The id is taken first: should the record come after all (a submit still running,
            // a clock ahead of the queue's), its write fails and its caller is told, instead of
            // a job being left that no message will ever run.
            ClaimRefusal::Bury => match self.store.bury(id, now).await {
                Ok(()) => {
                    info!("job never recorded (its submit failed); deleting its message");
                    self.delete(msg).await;
                }
                Err(StoreError::Conflict { .. }) => {
                    info!("the job's record came after all; claiming it again");
                    self.later(msg, Duration::from_secs(1)).await;
                }
                Err(e) => {
                    warn!(error = %DisplayErrorContext(&e), "could not retire the orphan's id");
                    self.later(msg, Duration::from_secs(5)).await;
                }
            },
            ClaimRefusal::Expire => match self.store.expire(id, now, retention).await {
                Ok(job) => {
                    info!("job expired before it started");
                    metrics::job_finished(&self.config, Outcome::Expired, Duration::ZERO, &job);
                    self.delete(msg).await;
                }
                Err(e) => {
                    warn!(error = %DisplayErrorContext(&e), "could not expire the job");
                    self.later(msg, Duration::from_secs(5)).await;
                }
            },
            ClaimRefusal::Cancel => match self.store.cancel_abandoned(id, now, retention).await {
                Ok(_) => {
                    info!("job cancelled: its caller asked while an earlier attempt ran");
                    self.delete(msg).await;
                }
                Err(e) => {
                    warn!(error = %DisplayErrorContext(&e), "could not cancel the job");
                    self.later(msg, Duration::from_secs(5)).await;
                }
            },
            ClaimRefusal::RetryLater(after) => self.later(msg, after).await,
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

    /// Brings the job's message back after `delay` for a reason that is not the job's fault (a
    /// retry, a release, a refused claim, a duplicate of a running job, a record not there yet).
    /// While the message has deliveries to spare it is hidden; before one of these would spend
    /// its last, it is sent again, fresh, so that only poison reaches the dead-letter queue.
    async fn later(&self, msg: &Received, delay: Duration) {
        if msg.receive_count + 1 < self.config.max_receive_count {
            return self.hide(msg, delay).await;
        }
        // The fresh copy lives the queue's whole retention from now: recorded first, so that
        // the sweeper never judges the job's message gone while the copy lives (a record a
        // little early errs on the safe side).
        if let Ok(env) = Envelope::decode(&msg.body) {
            if let Err(e) = self.store.mark_sent(&env.job_id, Millis::now()).await {
                warn!(error = %DisplayErrorContext(&e), "could not record that the message is sent again");
            }
        }
        match self.queue.send_again(msg, delay).await {
            Ok(()) => info!(
                receive_count = msg.receive_count,
                "the message was near the redrive limit; sent it again, fresh"
            ),
            Err(e) => {
                warn!(error = %DisplayErrorContext(&e), "could not send the message again; hiding it instead");
                self.hide(msg, delay).await;
            }
        }
    }

    async fn hide(&self, msg: &Received, for_: Duration) {
        if let Err(e) = self.queue.change_visibility(&msg.receipt, for_).await {
            warn!(error = %DisplayErrorContext(&e), "could not change the message's visibility");
        }
    }
}

/// A task that is aborted when this is dropped.
struct AbortOnDrop<T>(tokio::task::JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Writes the health verdict every few seconds while the worker runs (see [`health`]).
async fn report_health<H: Handler>(vitals: Arc<Vitals>, handler: Arc<H>, cfg: Arc<WorkerConfig>) {
    let every = cfg.heartbeat.min(Duration::from_secs(5));
    let stale_after = every * 3 + Duration::from_secs(2);
    let limits = health::Limits::new(cfg.receive_wait, cfg.heartbeat, cfg.startup);
    let mut tick = tokio::time::interval(every);
    let mut was = Ok(());
    loop {
        tick.tick().await;
        let verdict = vitals.assess(&limits, handler.health());
        if verdict != was {
            match &verdict {
                Ok(()) => info!("healthy again"),
                Err(problem) => warn!(%problem, "unhealthy"),
            }
        }
        if let Err(e) = health::write_with_note(verdict.clone().err(), vitals.note(), stale_after) {
            warn!(error = %e, path = %health::path().display(), "could not write the health report");
        }
        was = verdict;
    }
}

/// A number in `[0, 1)` that differs between jobs and attempts, to spread retries.
fn jitter(id: &JobId, attempt: u32) -> f64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    (id, attempt).hash(&mut h);
    (h.finish() % 10_000) as f64 / 10_000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_file_is_named_as_the_caller_gave_it() {
        let object = |bucket: Option<&str>, upload: &str, version: Option<&str>| InputObject {
            upload_id: upload.into(),
            bucket: bucket.map(Into::into),
            key: "in/a.csv".into(),
            version_id: version.map(Into::into),
            size: 1,
            content_type: "text/csv".into(),
        };
        let cases = [
            (object(None, "up_1", None), "upload up_1"),
            (object(Some("lake"), "", None), "s3://lake/in/a.csv is no longer there (deleted)"),
            (
                object(Some("lake"), "", Some("v7")),
                "s3://lake/in/a.csv (version v7) is no longer there (deleted, or that version removed)",
            ),
        ];
        for (o, want) in cases {
            let got = missing_input(&o);
            assert!(got.contains(want), "{got}");
        }
    }
}
