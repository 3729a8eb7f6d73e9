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
//! - `fail`: `"permanent"` fails for good at once.

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
}

#[derive(Debug, PartialEq, Serialize, Deserialize)]
pub struct DemoOutput {
    pub echo: String,
    pub words: usize,
    pub chars: usize,
    pub attempt: u32,
    pub worker: String,
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
    Ok(DemoOutput {
        words: input.text.split_whitespace().count(),
        chars: input.text.chars().count(),
        echo: input.text,
        attempt: ctx.attempt,
        worker: ctx.worker_id,
    })
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
