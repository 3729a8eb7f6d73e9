//! The worker's view of the pipeline's state (`sluice::pipeline`): read every
//! [`WORKER_POLL`](sluice::pipeline::WORKER_POLL) in the background, eventually consistent (half
//! a read unit), the last state known kept when a read fails. The receive loop takes nothing new
//! while it says paused, and cuts a long poll short when a pause comes.

use std::time::Duration;

use sluice::aws::DisplayErrorContext;
use sluice::pipeline::{Pipeline, PipelineState};
use tokio::sync::watch;
use tracing::warn;

/// Reads the state every `every` into `tx` until every receiver is gone. A read that fails
/// keeps the last state known (running before the first read succeeds), and is logged once per
/// run of failures.
pub async fn watch(pipeline: Pipeline, every: Duration, tx: watch::Sender<PipelineState>) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut failing = false;
    loop {
        tick.tick().await;
        match pipeline.read(false).await {
            Ok(state) => {
                failing = false;
                tx.send_if_modified(|known| {
                    let changed = *known != state;
                    *known = state;
                    changed
                });
            }
            Err(e) if !failing => {
                failing = true;
                warn!(error = %DisplayErrorContext(&e), "could not read the pipeline's state; keeping the last one known");
            }
            Err(_) => {}
        }
        if tx.is_closed() {
            return;
        }
    }
}

/// The state as a worker starts: read once, within `within`, so that a worker started while
/// paused takes nothing at all; running when it cannot be read in time (the background reads
/// then catch up, and a pause cuts a long poll short).
pub async fn first(pipeline: &Pipeline, within: Duration) -> PipelineState {
    match tokio::time::timeout(within, pipeline.read(false)).await {
        Ok(Ok(state)) => state,
        _ => PipelineState::default(),
    }
}

/// Completes once the state is paused (at once when it is).
pub async fn until_paused(rx: &mut watch::Receiver<PipelineState>) {
    if rx.wait_for(PipelineState::is_paused).await.is_err() {
        std::future::pending::<()>().await;
    }
}

/// Completes once the state is not paused (at once when it is not).
pub async fn until_resumed(rx: &mut watch::Receiver<PipelineState>) {
    if rx.wait_for(|s| !s.is_paused()).await.is_err() {
        std::future::pending::<()>().await;
    }
}

/// What the health report tells while paused. Pure.
pub fn note(state: &PipelineState) -> String {
    format!("the pipeline is {}: taking no new jobs", state.describe())
}
