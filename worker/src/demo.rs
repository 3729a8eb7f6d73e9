//! The built-in demo handler, so the local stack does something visible out of the box. Its
//! input also has knobs to show retries, failures and long jobs:
//!
//! ```json
//! {"text": "hello world", "sleep_ms": 0, "block_ms": 0, "fail_attempts": 0, "fail": null, "panic": null}
//! ```
//! - `sleep_ms`: work this long before answering, reporting progress ten times on the way;
//! - `block_ms`: block the thread this long (`std::thread::sleep`), as CPU-bound or blocking
//!   inference does; the worker's heartbeat goes on beside it;
//! - `panic`: panic with this message;
//! - `fail_attempts`: fail with a retryable error on the first N attempts;
//! - `fail`: `"permanent"` fails for good at once;
//! - `copy_input`: copy the job's uploaded file to this output file (streamed, a MiB at a
//!   time), which the caller then downloads from the job's `outputs`;
//! - `result_bytes`: pad the result with this many bytes (a result over the inline limit is
//!   stored in the payload bucket, and the job's view has a `result_file` to download).

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::handler::{JobContext, JobError};

#[derive(Debug, Default, Deserialize)]
pub struct DemoInput {
    #[serde(default)]
    pub text: String,
    #[serde(default)]
    pub sleep_ms: u64,
    #[serde(default)]
    pub fail_attempts: u32,
    #[serde(default)]
    pub fail: Option<String>,
    #[serde(default)]
    pub block_ms: u64,
    #[serde(default)]
    pub panic: Option<String>,
    #[serde(default)]
    pub copy_input: Option<String>,
    #[serde(default)]
    pub result_bytes: usize,
}

#[derive(Debug, PartialEq, Serialize, Deserialize)]
pub struct DemoOutput {
    pub echo: String,
    pub words: usize,
    pub chars: usize,
    pub attempt: u32,
    pub worker: String,
    /// The bytes copied from the input file to an output file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub copied: Option<u64>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub padding: String,
}

/// Counts words and characters of `text`, after the knobs have had their say.
pub async fn demo(input: DemoInput, ctx: JobContext) -> Result<DemoOutput, JobError> {
    if input.sleep_ms > 0 {
        let step = Duration::from_millis(input.sleep_ms) / 10;
        for i in 0..10u32 {
            ctx.progress(
                Some(f64::from(i) / 10.0),
                Some(&format!("step {} of 10", i + 1)),
            );
            tokio::time::sleep(step).await;
        }
        ctx.progress(Some(1.0), Some("done"));
    }
    if input.block_ms > 0 {
        std::thread::sleep(Duration::from_millis(input.block_ms));
    }
    if let Some(message) = &input.panic {
        panic!("{message}");
    }
    if input.fail.as_deref() == Some("permanent") {
        return Err(JobError::permanent(
            "the demo was asked to fail permanently",
        ));
    }
    if ctx.attempt <= input.fail_attempts {
        return Err(JobError::retryable(format!(
            "the demo was asked to fail its first {} attempt(s); this is attempt {}",
            input.fail_attempts, ctx.attempt
        )));
    }
    let copied = match &input.copy_input {
        Some(name) => Some(copy_input(&ctx, name).await?),
        None => None,
    };
    Ok(DemoOutput {
        words: input.text.split_whitespace().count(),
        chars: input.text.chars().count(),
        echo: input.text,
        attempt: ctx.attempt,
        worker: ctx.worker_id,
        copied,
        padding: "x".repeat(input.result_bytes),
    })
}

/// Copies the job's file to the output file `name`, streamed.
async fn copy_input(ctx: &JobContext, name: &str) -> Result<u64, JobError> {
    sluice::output::valid_name(name).map_err(JobError::permanent)?;
    let from = ctx
        .input_path()
        .ok_or_else(|| JobError::permanent("copy_input needs a job with a file"))?;
    let dir = ctx.output_dir().ok_or_else(|| {
        JobError::permanent("copy_input needs output files, which need a payload bucket")
    })?;
    let to = dir.join(name);
    if let Some(parent) = to.parent() {
        tokio::fs::create_dir_all(parent).await?;
    }
    let mut reader = tokio::fs::File::open(from).await?;
    let mut writer = tokio::fs::File::create(&to).await?;
    let copied = tokio::io::copy(&mut reader, &mut writer).await?;
    Ok(copied)
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice::job::JobId;
    use tokio_util::sync::CancellationToken;

    fn ctx(attempt: u32) -> JobContext {
        JobContext::new(
            JobId::generate(),
            attempt,
            3,
            "w-1".into(),
            CancellationToken::new(),
        )
    }

    #[tokio::test]
    async fn the_demo_counts_and_obeys_its_knobs() {
        let ok = demo(
            DemoInput {
                text: "hello  sluice world".into(),
                ..Default::default()
            },
            ctx(1),
        )
        .await
        .unwrap();
        assert_eq!((ok.words, ok.chars, ok.attempt), (3, 19, 1));

        let flaky = || DemoInput {
            fail_attempts: 2,
            ..Default::default()
        };
        assert!(demo(flaky(), ctx(1)).await.unwrap_err().is_retryable());
        assert!(demo(flaky(), ctx(2)).await.unwrap_err().is_retryable());
        assert_eq!(demo(flaky(), ctx(3)).await.unwrap().attempt, 3);

        let doomed = DemoInput {
            fail: Some("permanent".into()),
            ..Default::default()
        };
        assert!(!demo(doomed, ctx(1)).await.unwrap_err().is_retryable());
    }
}
