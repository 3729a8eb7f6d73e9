//! The handler contract: one async function from a typed input to a typed output.

use std::fmt;
use std::future::Future;
use std::marker::PhantomData;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::de::DeserializeOwned;
use serde::Serialize;
use sluice::job::{JobId, Progress};
use tokio_util::sync::CancellationToken;

/// The user's compute. Implement it, or wrap a function: [`handler_fn`] for an async function,
/// [`blocking_fn`] for a synchronous one (CPU-bound inference, a blocking library).
///
/// Whatever it does, the handler runs on threads of its own, apart from the worker's heartbeat,
/// receive loop and health check: a handler that blocks or computes for hours cannot stop the
/// worker from renewing its lease, and a panic fails only its own attempt.
pub trait Handler: Send + Sync + 'static {
    /// The job's input, decoded from the submitted JSON.
    type Input: DeserializeOwned + Send + 'static;
    /// The job's result, stored as JSON.
    type Output: Serialize + Send + 'static;

    fn call(
        &self,
        input: Self::Input,
        ctx: JobContext,
    ) -> impl Future<Output = Result<Self::Output, JobError>> + Send;

    /// Completes when the handler can take jobs (a model server answers, a child process has
    /// loaded its model); the worker receives nothing before. An error stops the worker.
    fn ready(&self) -> impl Future<Output = Result<(), String>> + Send {
        async { Ok(()) }
    }

    /// Whether the handler's own machinery is alive, asked by the health check; the error says
    /// what is wrong.
    fn health(&self) -> Result<(), String> {
        Ok(())
    }

    /// How many jobs the handler can hold at once now, running or about to, when it knows
    /// better than the worker's concurrency (processes still starting or restarting, a model
    /// server that went away); `None` for no limit of its own. The worker holds no more jobs
    /// than this: counting every job it holds, those still being claimed included, it takes
    /// from the queue only what the handler can start at once.
    fn capacity(&self) -> Option<usize> {
        None
    }
}

/// The latest progress report of an attempt, and the last one stored.
#[derive(Debug, Default)]
pub(crate) struct ProgressSlot {
    inner: Mutex<(Option<Progress>, Option<Progress>)>,
}

impl ProgressSlot {
    fn report(&self, p: Progress) {
        self.inner.lock().expect("progress lock").0 = Some(p);
    }

    /// The latest report when it differs from the last one stored.
    pub(crate) fn unsaved(&self) -> Option<Progress> {
        let g = self.inner.lock().expect("progress lock");
        (g.0 != g.1).then(|| g.0.clone()).flatten()
    }

    pub(crate) fn saved(&self, p: Progress) {
        self.inner.lock().expect("progress lock").1 = Some(p);
    }
}

/// What a handler knows about the job it runs.
#[derive(Debug, Clone)]
pub struct JobContext {
    pub job_id: JobId,
    /// 1 for the first attempt.
    pub attempt: u32,
    pub max_attempts: u32,
    pub worker_id: String,
    /// How long this attempt may run before the worker stops it.
    pub time_limit: Duration,
    deadline: Instant,
    cancel: CancellationToken,
    progress: Arc<ProgressSlot>,
    /// Alive while any copy of the context is: the worker keeps the job's slot until the
    /// handler (a blocking call the worker could not interrupt, say) has let go of it.
    alive: Arc<()>,
    /// The job's uploaded file, downloaded for this attempt; removed once every copy of the
    /// context is gone.
    input: Option<Arc<InputFile>>,
    /// Where the handler writes its output files; removed once every copy of the context is
    /// gone (after the worker has stored them).
    output: Option<Arc<OutputArea>>,
}

/// A job's output directory on the worker's disk, and the result a handler left as a file
/// (with its content type) rather than returned: removed, with what it holds, when dropped.
#[derive(Debug)]
pub(crate) struct OutputArea {
    pub dir: PathBuf,
    pub result_file: Mutex<Option<(PathBuf, String)>>,
}

impl OutputArea {
    /// A new, empty directory for one attempt's output files.
    pub(crate) fn create(id: &JobId, attempt: u32) -> std::io::Result<OutputArea> {
        let dir = std::env::temp_dir().join(format!("sluice-output-{id}-{attempt}"));
        // What a worker that died before cleaning up left under the same name.
        match std::fs::remove_dir_all(&dir) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
        std::fs::create_dir_all(&dir)?;
        Ok(OutputArea {
            dir,
            result_file: Mutex::new(None),
        })
    }
}

impl Drop for OutputArea {
    fn drop(&mut self) {
        if let Err(e) = std::fs::remove_dir_all(&self.dir) {
            if e.kind() != std::io::ErrorKind::NotFound {
                tracing::warn!(path = %self.dir.display(), error = %e, "could not remove a job's output directory");
            }
        }
    }
}

/// A job's uploaded file on the worker's disk: removed when dropped.
#[derive(Debug)]
pub struct InputFile {
    pub path: PathBuf,
    pub size: u64,
    pub content_type: String,
}

impl Drop for InputFile {
    fn drop(&mut self) {
        if let Err(e) = std::fs::remove_file(&self.path) {
            if e.kind() != std::io::ErrorKind::NotFound {
                tracing::warn!(path = %self.path.display(), error = %e, "could not remove a job's input file");
            }
        }
    }
}

impl JobContext {
    pub fn new(
        job_id: JobId,
        attempt: u32,
        max_attempts: u32,
        worker_id: String,
        cancel: CancellationToken,
    ) -> Self {
        JobContext {
            job_id,
            attempt,
            max_attempts,
            worker_id,
            time_limit: sluice::job::MAX_JOB_TIMEOUT,
            deadline: Instant::now() + sluice::job::MAX_JOB_TIMEOUT,
            cancel,
            progress: Arc::default(),
            alive: Arc::new(()),
            input: None,
            output: None,
        }
    }

    /// The attempt's output directory.
    pub(crate) fn with_output(mut self, area: Option<Arc<OutputArea>>) -> Self {
        self.output = area;
        self
    }

    /// A directory the handler may write files to: when it succeeds, the worker stores every
    /// file there (at most [`sluice::output::MAX_OUTPUT_FILES`], names of at most
    /// [`sluice::output::MAX_OUTPUT_NAME`] bytes, no links) in the payload bucket, and the job's
    /// view lists them with download URLs. `None` when the worker has no payload bucket.
    pub fn output_dir(&self) -> Option<&Path> {
        self.output.as_deref().map(|o| o.dir.as_path())
    }

    /// Makes the file at `path` (in the output directory) the job's result, stored as it is
    /// with `content_type`, instead of what the handler returns.
    pub(crate) fn set_result_file(
        &self,
        path: PathBuf,
        content_type: String,
    ) -> Result<(), JobError> {
        let area = self.output.as_deref().ok_or_else(|| {
            JobError::permanent(format!(
                "the result is a file, which needs a payload bucket ({} is not set)",
                sluice::env::PAYLOAD_BUCKET
            ))
        })?;
        *area.result_file.lock().expect("result file lock") = Some((path, content_type));
        Ok(())
    }

    /// The job's uploaded file, on the worker's disk.
    pub fn with_input(mut self, file: InputFile) -> Self {
        self.input = Some(Arc::new(file));
        self
    }

    /// The path of the job's uploaded file, when the job names one: a local file the handler
    /// may read (or open as it likes) until it returns; the worker removes it after the attempt.
    pub fn input_path(&self) -> Option<&Path> {
        self.input.as_deref().map(|f| f.path.as_path())
    }

    /// The uploaded file's content type, as announced at upload.
    pub fn input_content_type(&self) -> Option<&str> {
        self.input.as_deref().map(|f| f.content_type.as_str())
    }

    /// The uploaded file's size in bytes.
    pub fn input_size(&self) -> Option<u64> {
        self.input.as_deref().map(|f| f.size)
    }

    /// The uploaded file, opened for reading; `None` when the job has none.
    pub fn open_input(&self) -> Option<std::io::Result<std::fs::File>> {
        self.input_path().map(std::fs::File::open)
    }

    /// The attempt's limit, ending at `deadline`, and where its progress goes.
    pub(crate) fn with_limit(
        mut self,
        limit: Duration,
        deadline: Instant,
        progress: Arc<ProgressSlot>,
    ) -> Self {
        self.time_limit = limit;
        self.deadline = deadline;
        self.progress = progress;
        self
    }

    /// Tells whether the handler still holds a copy of this context.
    pub(crate) fn liveness(&self) -> std::sync::Weak<()> {
        Arc::downgrade(&self.alive)
    }

    /// When the attempt's time limit ends.
    pub fn deadline(&self) -> Instant {
        self.deadline
    }

    /// Whether the job was stopped: cancelled by its caller, past its time limit, or lost by
    /// this worker. The runtime also stops polling an async handler, so checking is only needed
    /// in blocking code, which cannot be interrupted otherwise.
    pub fn is_cancelled(&self) -> bool {
        self.cancel.is_cancelled()
    }

    /// Completes when the job is stopped.
    pub async fn cancelled(&self) {
        self.cancel.cancelled().await
    }

    pub fn is_last_attempt(&self) -> bool {
        self.attempt >= self.max_attempts
    }

    /// Time left before the attempt's time limit.
    pub fn remaining(&self) -> Duration {
        self.deadline.saturating_duration_since(Instant::now())
    }

    /// Reports how far the job is: a fraction from 0 to 1 and/or a short message. Cheap: the
    /// latest report is stored with the next heartbeat, never in a write of its own.
    pub fn progress(&self, fraction: Option<f64>, message: Option<&str>) {
        let p = Progress::new(fraction, message);
        if !p.is_empty() {
            self.progress.report(p);
        }
    }
}

/// Whether an error is worth another attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// Another attempt may succeed (a timeout, a busy dependency): the job is retried with
    /// backoff while it has attempts left.
    Retryable,
    /// No attempt will succeed (bad input): the job fails now.
    Permanent,
    /// The job never ran: the handler's own machinery was not there to take it (a model server
    /// restarting, no process ready). The job goes back to the queue without spending one of
    /// its attempts, up to [`sluice::job::MAX_FREE_RELEASES`] times.
    Unavailable,
}

/// A handler's failure. Any `std::error::Error` converts into a retryable one with `?`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobError {
    pub kind: ErrorKind,
    pub message: String,
}

impl JobError {
    pub fn retryable(message: impl Into<String>) -> Self {
        JobError {
            kind: ErrorKind::Retryable,
            message: message.into(),
        }
    }

    pub fn permanent(message: impl Into<String>) -> Self {
        JobError {
            kind: ErrorKind::Permanent,
            message: message.into(),
        }
    }

    pub fn unavailable(message: impl Into<String>) -> Self {
        JobError {
            kind: ErrorKind::Unavailable,
            message: message.into(),
        }
    }

    /// Whether another attempt may succeed: a retryable error, or one that never ran the job.
    pub fn is_retryable(&self) -> bool {
        matches!(self.kind, ErrorKind::Retryable | ErrorKind::Unavailable)
    }
}

impl fmt::Display for JobError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl<E: std::error::Error> From<E> for JobError {
    fn from(e: E) -> Self {
        let mut message = e.to_string();
        let mut source = e.source();
        while let Some(s) = source {
            message.push_str(": ");
            message.push_str(&s.to_string());
            source = s.source();
        }
        JobError::retryable(message)
    }
}

/// A handler made of an async function, like `lambda_runtime::service_fn`.
pub struct HandlerFn<F, I, O> {
    f: F,
    _types: PhantomData<fn(I) -> O>,
}

/// Wraps `async fn(input, ctx) -> Result<output, JobError>` as a [`Handler`].
pub fn handler_fn<F, Fut, I, O>(f: F) -> HandlerFn<F, I, O>
where
    F: Fn(I, JobContext) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<O, JobError>> + Send,
    I: DeserializeOwned + Send + 'static,
    O: Serialize + Send + 'static,
{
    HandlerFn {
        f,
        _types: PhantomData,
    }
}

impl<F, Fut, I, O> Handler for HandlerFn<F, I, O>
where
    F: Fn(I, JobContext) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<O, JobError>> + Send,
    I: DeserializeOwned + Send + 'static,
    O: Serialize + Send + 'static,
{
    type Input = I;
    type Output = O;

    fn call(&self, input: I, ctx: JobContext) -> impl Future<Output = Result<O, JobError>> + Send {
        (self.f)(input, ctx)
    }
}

/// A handler made of a synchronous function, run on a thread of its own (tokio's blocking
/// pool) so that it may compute or block for as long as the job's time limit allows.
pub struct BlockingFn<F, I, O> {
    f: Arc<F>,
    _types: PhantomData<fn(I) -> O>,
}

/// Wraps `fn(input, ctx) -> Result<output, JobError>` as a [`Handler`]: the right choice for
/// CPU-bound or blocking work (tract, ort, candle, a blocking client). Blocking code cannot be
/// interrupted: at a cancel or the time limit the worker gives the job up at once, and the
/// function should return soon after [`JobContext::is_cancelled`] turns true.
pub fn blocking_fn<F, I, O>(f: F) -> BlockingFn<F, I, O>
where
    F: Fn(I, JobContext) -> Result<O, JobError> + Send + Sync + 'static,
    I: DeserializeOwned + Send + 'static,
    O: Serialize + Send + 'static,
{
    BlockingFn {
        f: Arc::new(f),
        _types: PhantomData,
    }
}

impl<F, I, O> Handler for BlockingFn<F, I, O>
where
    F: Fn(I, JobContext) -> Result<O, JobError> + Send + Sync + 'static,
    I: DeserializeOwned + Send + 'static,
    O: Serialize + Send + 'static,
{
    type Input = I;
    type Output = O;

    async fn call(&self, input: I, ctx: JobContext) -> Result<O, JobError> {
        let f = self.f.clone();
        match tokio::task::spawn_blocking(move || f(input, ctx)).await {
            Ok(out) => out,
            // The runtime reports the panic as the attempt's error.
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            Err(_) => Err(JobError::retryable("the handler's thread was stopped")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("model server busy")]
    struct Busy(#[source] std::io::Error);

    #[test]
    fn std_errors_become_retryable_with_their_chain() {
        fn fails() -> Result<(), JobError> {
            Err(Busy(std::io::Error::other("connection refused")))?;
            Ok(())
        }
        let e = fails().unwrap_err();
        assert!(e.is_retryable());
        assert_eq!(e.message, "model server busy: connection refused");
        assert!(!JobError::permanent("bad input").is_retryable());
    }

    #[tokio::test]
    async fn handler_fn_runs_the_function_with_its_context() {
        let h = handler_fn(|n: u32, ctx: JobContext| async move {
            if ctx.is_cancelled() {
                return Err(JobError::permanent("cancelled"));
            }
            Ok(n * 2 + ctx.attempt)
        });
        let token = CancellationToken::new();
        let ctx = JobContext::new(JobId::generate(), 1, 3, "w".into(), token.clone());
        assert_eq!(h.call(20, ctx.clone()).await, Ok(41));
        token.cancel();
        assert_eq!(h.call(20, ctx).await, Err(JobError::permanent("cancelled")));
    }

    #[tokio::test]
    async fn blocking_fn_runs_off_the_async_threads_and_reports_progress() {
        let h = blocking_fn(|n: u32, ctx: JobContext| {
            std::thread::sleep(Duration::from_millis(20));
            ctx.progress(Some(0.5), Some("half"));
            Ok(n + 1)
        });
        let slot = Arc::new(ProgressSlot::default());
        let ctx = JobContext::new(
            JobId::generate(),
            1,
            3,
            "w".into(),
            CancellationToken::new(),
        )
        .with_limit(
            Duration::from_secs(5),
            Instant::now() + Duration::from_secs(5),
            slot.clone(),
        );
        assert_eq!(h.call(1, ctx).await, Ok(2));
        let p = slot.unsaved().unwrap();
        assert_eq!(p.fraction, Some(0.5));
        slot.saved(p);
        assert_eq!(slot.unsaved(), None, "a stored report is not stored again");
    }
}
