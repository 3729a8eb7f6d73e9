//! The time a request may spend. A function is stopped at its deployed timeout, and API Gateway
//! then answers 5xx without a body: a submit stopped after its job was recorded would tell the
//! caller it failed, and the caller's retry would make a second job. So every AWS call a request
//! makes runs within what is left before the function's deadline, keeping back the time the
//! calls after it need and a margin to answer.

use std::future::Future;
use std::time::{Duration, SystemTime};

use tokio::time::Instant;

/// What a function keeps back from its deadline to encode and return its answer.
pub const ANSWER_MARGIN: Duration = Duration::from_millis(500);

/// When a request must have its answer ready.
#[derive(Debug, Clone, Copy)]
pub struct Budget {
    until: Instant,
}

impl Budget {
    /// A budget that ends [`ANSWER_MARGIN`] before `deadline`, a wall-clock time as Lambda gives
    /// it.
    pub fn before(deadline: SystemTime) -> Self {
        let left = deadline
            .duration_since(SystemTime::now())
            .unwrap_or_default();
        Budget {
            until: Instant::now() + left.saturating_sub(ANSWER_MARGIN),
        }
    }

    /// The budget of a request that arrived now at a function with `timeout`.
    pub fn of_timeout(timeout: Duration) -> Self {
        Budget::before(SystemTime::now() + timeout)
    }

    /// Time left.
    pub fn left(&self) -> Duration {
        self.until.saturating_duration_since(Instant::now())
    }

    /// When the answer must be ready.
    pub fn ends(&self) -> Instant {
        self.until
    }

    /// Runs `call` within what is left beyond `keep` (the time later steps need); `None` when it
    /// did not finish by then. A call cut short may still have been applied.
    pub async fn spend<T>(&self, keep: Duration, call: impl Future<Output = T>) -> Option<T> {
        let time = self.left().saturating_sub(keep);
        if time.is_zero() {
            return None;
        }
        tokio::time::timeout(time, call).await.ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn calls_get_what_is_left_beyond_what_later_steps_need() {
        let b = Budget::of_timeout(Duration::from_millis(1_500));
        assert!(b.left() <= Duration::from_millis(1_000));
        assert!(b.left() > Duration::from_millis(900));
        // A call that would take longer than it may is cut at its share.
        let started = Instant::now();
        let slow = b
            .spend(
                Duration::from_millis(600),
                tokio::time::sleep(Duration::from_secs(30)),
            )
            .await;
        assert_eq!(slow, None);
        assert!(
            started.elapsed() < Duration::from_millis(900),
            "cut at its share"
        );
        // One within its share finishes.
        assert_eq!(b.spend(Duration::ZERO, async { 7 }).await, Some(7));
        // Nothing is left for a step that must keep more than remains.
        assert_eq!(b.spend(Duration::from_secs(5), async { 1 }).await, None);
        // A deadline already past leaves nothing.
        let gone = Budget::before(SystemTime::now() - Duration::from_secs(1));
        assert_eq!(gone.left(), Duration::ZERO);
        assert_eq!(gone.spend(Duration::ZERO, async { 1 }).await, None);
    }
}
