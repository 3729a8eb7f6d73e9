//! Scale from zero at once: when submit accepts a job while the worker service wants no task,
//! it raises the service to one task, without waiting for the backlog function's next sample.
//!
//! A burst of submits makes one ECS call, not one per submit: each function instance checks at
//! most once per interval, and of all instances only the one that wins a conditional write in
//! the jobs table (a short-lived marker item) asks ECS.
//!
//! Two writers raise the desired count: this nudge and the backlog function's raise to the
//! needed capacity. Each reads the count and writes a new one under one lease ([`with_lease`]),
//! so neither can write a count it read before the other raised it: the nudge never lowers a
//! count the backlog function raised in between its read and its write.

use std::future::Future;
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;
use tracing::{info, warn};

use crate::aws::DisplayErrorContext;
use crate::ecs::Service;
use crate::scaling::should_nudge_from_zero;
use crate::store::{JobStore, StoreError};
use crate::time::Millis;

/// How often one stack asks ECS at most.
pub const NUDGE_INTERVAL: Duration = Duration::from_secs(10);

/// The most a nudge may add to an accepted submit (the submit function has 10 s in all).
pub const NUDGE_BUDGET: Duration = Duration::from_secs(2);

/// How long a writer of the desired count holds the lease at most: longer than a read and a
/// write of the service take, short enough that a writer that died costs one sample.
pub const LEASE_TTL: Duration = Duration::from_secs(10);

/// How long a writer keeps the lease after it wrote: ECS's reads are eventually consistent, so
/// the next writer must not read the count before the new one shows, or it could write a count
/// lower than the one just written.
pub const SETTLE: Duration = Duration::from_secs(3);

/// The lease item's key for a service.
pub fn lease_key(service: &Service) -> String {
    format!("scale:{}/{}", service.cluster(), service.name())
}

/// Runs `f` (a read and a write of the service's desired count) while holding the service's
/// lease in the jobs table. `Ok(None)`: another writer holds it, `f` did not run. When `wrote`
/// says `f` changed the count, the lease is kept [`SETTLE`] longer instead of given back.
pub async fn with_lease<T>(
    store: &JobStore,
    service: &Service,
    f: impl Future<Output = T>,
    wrote: impl Fn(&T) -> bool,
) -> Result<Option<T>, StoreError> {
    let key = lease_key(service);
    let now = Millis::now();
    let until = now.plus(LEASE_TTL);
    if !store.take_turn(&key, now, LEASE_TTL).await? {
        return Ok(None);
    }
    let out = f.await;
    let given_back = if wrote(&out) {
        store
            .shorten_turn(&key, until, Millis::now().plus(SETTLE))
            .await
    } else {
        store.release_turn(&key, until).await
    };
    if let Err(e) = given_back {
        warn!(error = %DisplayErrorContext(&e), "could not give back the scaling lease; it runs out by itself");
    }
    Ok(Some(out))
}

#[derive(Debug)]
pub struct ScaleFromZero {
    service: Service,
    store: JobStore,
    interval: Duration,
    /// When this instance last took its turn, and last raised the service.
    last_turn: Mutex<Option<Instant>>,
    last_nudge: Mutex<Option<Instant>>,
    epoch: Instant,
}

impl ScaleFromZero {
    pub fn new(service: Service, store: JobStore, interval: Duration) -> Self {
        ScaleFromZero {
            service,
            store,
            interval,
            last_turn: Mutex::new(None),
            last_nudge: Mutex::new(None),
            epoch: Instant::now(),
        }
    }

    /// Called after a job was accepted. Never fails the submit, and never holds it longer than
    /// [`NUDGE_BUDGET`]: a missed nudge is covered by the backlog function's next sample.
    pub async fn after_accept(&self) {
        if tokio::time::timeout(NUDGE_BUDGET, self.nudge())
            .await
            .is_err()
        {
            warn!(budget = ?NUDGE_BUDGET, "scale from zero: ECS or the table did not answer in time; the backlog function will raise the service");
        }
    }

    async fn nudge(&self) {
        let now = Instant::now();
        {
            let mut last = self.last_turn.lock().expect("lock is never poisoned");
            if last.is_some_and(|t| now.duration_since(t) < self.interval) {
                return;
            }
            *last = Some(now);
        }
        let key = format!("nudge:{}/{}", self.service.cluster(), self.service.name());
        match self
            .store
            .take_turn(&key, Millis::now(), self.interval)
            .await
        {
            Ok(true) => {}
            Ok(false) => return,
            Err(e) => {
                warn!(error = %DisplayErrorContext(&e), "scale from zero: could not take a turn");
                return;
            }
        }
        match with_lease(&self.store, &self.service, self.raise(now), |wrote| *wrote).await {
            Ok(Some(_)) => {}
            Ok(None) => {
                info!("scale from zero: the backlog function is changing the service; leaving it")
            }
            Err(e) => {
                warn!(error = %DisplayErrorContext(&e), "scale from zero: could not take the scaling lease")
            }
        }
    }

    /// Reads the service and raises it from 0 to 1; under the lease. Says whether it wrote.
    async fn raise(&self, now: Instant) -> bool {
        let counts = match self.service.counts().await {
            Ok(c) => c,
            Err(e) => {
                warn!(error = %DisplayErrorContext(&e), "scale from zero: could not read the service");
                return false;
            }
        };
        let secs = |t: Instant| t.duration_since(self.epoch).as_secs_f64();
        let last_nudge = *self.last_nudge.lock().expect("lock is never poisoned");
        if !should_nudge_from_zero(
            counts.desired,
            last_nudge.map(secs),
            secs(now),
            self.interval.as_secs_f64(),
        ) {
            return false;
        }
        // A paused pipeline takes no job: a task would only idle. A state that cannot be read
        // does not stop the nudge.
        if let Ok(state) = crate::pipeline::Pipeline::of(&self.store).read(false).await {
            if state.is_paused() {
                info!("scale from zero: the pipeline is paused; leaving the service at zero");
                return false;
            }
        }
        match self.service.set_desired(1).await {
            Ok(()) => {
                *self.last_nudge.lock().expect("lock is never poisoned") = Some(now);
                info!(
                    service = self.service.name(),
                    "scale from zero: asked for one task"
                );
                true
            }
            Err(e) => {
                warn!(error = %DisplayErrorContext(&e), "scale from zero: could not raise the service");
                false
            }
        }
    }
}
