//! The sluice worker runtime. Bring a handler; sluice receives jobs from SQS, claims them in
//! DynamoDB, runs them with a heartbeat, stores their results and drains on shutdown.
//!
//! ```no_run
//! use sluice_worker::{handler_fn, run, JobContext, JobError, WorkerConfig};
//!
//! #[derive(serde::Deserialize)]
//! struct Prompt { text: String }
//!
//! async fn infer(p: Prompt, _ctx: JobContext) -> Result<String, JobError> {
//!     Ok(p.text.to_uppercase())
//! }
//!
//! #[tokio::main]
//! async fn main() -> anyhow::Result<()> {
//!     let config = WorkerConfig::from_env()?;
//!     run(handler_fn(infer), config, sluice_worker::shutdown_signal()).await
//! }
//! ```

mod config;
pub mod demo;
mod handler;
pub mod health;
mod http;
mod lines;
pub mod metrics;
mod outputs;
mod pause;
mod process;
pub mod protection;
pub mod reaper;
mod runtime;

pub use config::{parse_command, Mode, WorkerConfig};
pub use handler::{
    blocking_fn, handler_fn, BlockingFn, ErrorKind, Handler, HandlerFn, InputFile, JobContext,
    JobError,
};
pub use http::HttpHandler;
pub use process::{ProcessHandler, CANCEL_GRACE, MAX_LINE_BYTES};
pub use runtime::{run, run_with, MAX_RESULT_BYTES};

/// Completes on SIGTERM (ECS stopping the task) or Ctrl-C.
pub async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("a SIGTERM handler can be installed");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
