//! The handler contract: one async function from a typed input to a typed output.

use std::fmt;
use std::future::Future;
use std::marker::PhantomData;

use serde::de::DeserializeOwned;
use serde::Serialize;
use sluice::job::JobId;
use tokio_util::sync::CancellationToken;

/// The user's compute. Implement it, or wrap an async function with [`handler_fn`].
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
}

/// What a handler knows about the job it runs.
#[derive(Debug, Clone)]
pub struct JobContext {
    pub job_id: JobId,
    /// 1 for the first attempt.
    pub attempt: u32,
    pub max_attempts: u32,
    pub worker_id: String,
    cancel: CancellationToken,
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
            cancel,
        }
    }

    /// Whether the job was cancelled (by its caller, or because this worker lost it). The
    /// runtime also stops polling the handler, so checking is only needed around blocking work.
    pub fn is_cancelled(&self) -> bool {
        self.cancel.is_cancelled()
    }

    /// Completes when the job is cancelled.
    pub async fn cancelled(&self) {
        self.cancel.cancelled().await
    }

    pub fn is_last_attempt(&self) -> bool {
        self.attempt >= self.max_attempts
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

    pub fn is_retryable(&self) -> bool {
        self.kind == ErrorKind::Retryable
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
}
