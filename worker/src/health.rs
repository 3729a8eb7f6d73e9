//! The container health check. Healthy means "making progress", not "idle": the worker's own
//! machinery (the receive loop, the heartbeat of every running job, the handler's process or
//! model server) reports in, a task on the worker's runtime judges it every few seconds and
//! writes the verdict to a file, and `sluice-worker healthcheck` reads that file.
//!
//! A worker busy on long jobs is healthy as long as their heartbeats beat; a wedged one is not,
//! whether its receive loop hangs, a heartbeat stalls, its handler's process keeps failing to
//! start, or the runtime itself stops (the verdict then goes stale).

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

/// Where the receive loop is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Waiting for the handler to become ready.
    Starting,
    /// In a long poll.
    Receiving,
    /// Every slot is busy: the loop waits for a job to end.
    WaitingForSlot,
    /// Pausing after a failed receive.
    Pausing,
    /// Stopping: no new jobs, running ones finish.
    Draining,
    /// The pipeline is paused: no new jobs, running ones finish, the loop waits for a resume.
    /// Healthy for as long as it lasts.
    Paused,
}

/// How long each phase may last before the loop counts as stuck, and each heartbeat may lag.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub starting: Duration,
    pub receiving: Duration,
    pub pausing: Duration,
    pub heartbeat: Duration,
}

impl Limits {
    /// The limits for a worker whose long poll waits `receive_wait`, whose jobs beat every
    /// `heartbeat`, and whose handler may take `startup` to become ready. Each allows for slow
    /// AWS calls (the SDK retries for a few seconds).
    pub fn new(receive_wait: Duration, heartbeat: Duration, startup: Duration) -> Self {
        let slack = Duration::from_secs(30);
        Limits {
            starting: startup + slack,
            receiving: receive_wait + slack,
            pausing: Duration::from_secs(13) + slack,
            heartbeat: heartbeat * 3 + slack,
        }
    }
}

/// What the worker's parts last reported.
#[derive(Debug)]
pub struct Vitals {
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    phase: Phase,
    since: Instant,
    /// Running attempts and their last heartbeat.
    beats: HashMap<u64, Instant>,
    /// Stopped handlers that have not returned yet, since when.
    lingering: HashMap<u64, Instant>,
    next: u64,
    /// A healthy state worth telling (the pipeline is paused), written beside the verdict.
    note: Option<String>,
}

/// How long a stopped handler may go on running (a blocking call cannot be interrupted) before
/// the worker counts as wedged.
pub const LINGER_LIMIT: Duration = Duration::from_secs(60);

impl Default for Vitals {
    fn default() -> Self {
        Vitals {
            state: Mutex::new(State {
                phase: Phase::Starting,
                since: Instant::now(),
                beats: HashMap::new(),
                lingering: HashMap::new(),
                next: 0,
                note: None,
            }),
        }
    }
}

/// One running attempt's entry in [`Vitals`]; it leaves when dropped.
pub struct Beating<'a> {
    vitals: &'a Vitals,
    key: u64,
}

impl Beating<'_> {
    /// The attempt's heartbeat turned.
    pub fn beat(&self) {
        self.vitals.lock().beats.insert(self.key, Instant::now());
    }
}

impl Drop for Beating<'_> {
    fn drop(&mut self) {
        self.vitals.lock().beats.remove(&self.key);
    }
}

/// A stopped handler's entry in [`Vitals`] while it goes on running; it leaves when dropped.
pub struct Lingering<'a> {
    vitals: &'a Vitals,
    key: u64,
}

impl Drop for Lingering<'_> {
    fn drop(&mut self) {
        self.vitals.lock().lingering.remove(&self.key);
    }
}

impl Vitals {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn phase(&self, phase: Phase) {
        let mut s = self.lock();
        // Every turn of the loop counts as progress, even into the same phase.
        s.phase = phase;
        s.since = Instant::now();
    }

    /// Sets what the health report tells beside its verdict (`None`: nothing).
    pub fn set_note(&self, note: Option<String>) {
        self.lock().note = note;
    }

    /// What the health report tells beside its verdict.
    pub fn note(&self) -> Option<String> {
        self.lock().note.clone()
    }

    /// Registers a running attempt; its heartbeat must turn within the heartbeat limit.
    pub fn attempt(&self) -> Beating<'_> {
        let mut s = self.lock();
        let key = s.next;
        s.next += 1;
        s.beats.insert(key, Instant::now());
        Beating { vitals: self, key }
    }

    /// Registers a stopped handler that is still running.
    pub fn lingering(&self) -> Lingering<'_> {
        let mut s = self.lock();
        let key = s.next;
        s.next += 1;
        s.lingering.insert(key, Instant::now());
        Lingering { vitals: self, key }
    }

    /// The verdict now.
    pub fn assess(&self, limits: &Limits, handler: Result<(), String>) -> Result<(), String> {
        let s = self.lock();
        let now = Instant::now();
        if let Some(since) = s.lingering.values().min() {
            let long = now.saturating_duration_since(*since);
            if long > LINGER_LIMIT {
                return Err(format!(
                    "a stopped handler has not returned for {} s (limit {} s): it holds its slot",
                    long.as_secs(),
                    LINGER_LIMIT.as_secs()
                ));
            }
        }
        let oldest_beat = s.beats.values().min().copied();
        assess(s.phase, s.since, oldest_beat, now, limits, handler)
    }
}

/// Judges the worker's parts. Pure.
pub fn assess(
    phase: Phase,
    since: Instant,
    oldest_beat: Option<Instant>,
    now: Instant,
    limits: &Limits,
    handler: Result<(), String>,
) -> Result<(), String> {
    let stuck = now.saturating_duration_since(since);
    let limit = match phase {
        Phase::Starting => Some(limits.starting),
        Phase::Receiving => Some(limits.receiving),
        Phase::Pausing => Some(limits.pausing),
        Phase::WaitingForSlot | Phase::Draining | Phase::Paused => None,
    };
    if let Some(limit) = limit.filter(|l| stuck > *l) {
        let what = match phase {
            Phase::Starting => "the handler has not become ready",
            Phase::Receiving => "a receive from the queue has not returned",
            _ => "the receive loop has not turned",
        };
        return Err(format!(
            "{what} for {} s (limit {} s)",
            stuck.as_secs(),
            limit.as_secs()
        ));
    }
    if let Some(beat) = oldest_beat {
        let lag = now.saturating_duration_since(beat);
        if lag > limits.heartbeat {
            return Err(format!(
                "a running job's heartbeat has not turned for {} s (limit {} s)",
                lag.as_secs(),
                limits.heartbeat.as_secs()
            ));
        }
    }
    handler
}

/// The verdict as written for `sluice-worker healthcheck`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    /// When it was written, in milliseconds since the epoch.
    pub at_ms: u64,
    /// A report older than this says the worker stopped reporting: it is wedged.
    pub stale_after_ms: u64,
    /// What is wrong, `None` when healthy.
    pub problem: Option<String>,
    /// A healthy state worth telling: the pipeline is paused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// Judges a report read at `now_ms`; a healthy one's note, if any. Pure.
pub fn verdict(text: &str, now_ms: u64) -> Result<Option<String>, String> {
    let r: Report = serde_json::from_str(text)
        .map_err(|e| format!("the health report is unreadable ({e}); is this a sluice worker?"))?;
    let age = now_ms.saturating_sub(r.at_ms);
    if age > r.stale_after_ms {
        return Err(format!(
            "the worker has not reported for {} s (limit {} s): it is wedged or stopped",
            age / 1000,
            r.stale_after_ms / 1000
        ));
    }
    match r.problem {
        Some(p) => Err(p),
        None => Ok(r.note),
    }
}

/// The report file: in the temporary directory (`TMPDIR`), which the container's health check
/// shares with the worker.
pub fn path() -> PathBuf {
    std::env::temp_dir().join("sluice-worker.health")
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Writes a report atomically (a reader never sees half of one).
pub fn write(problem: Option<String>, stale_after: Duration) -> std::io::Result<()> {
    write_with_note(problem, None, stale_after)
}

/// [`write`], with a healthy state worth telling (`note`).
pub fn write_with_note(
    problem: Option<String>,
    note: Option<String>,
    stale_after: Duration,
) -> std::io::Result<()> {
    let report = Report {
        at_ms: now_ms(),
        stale_after_ms: stale_after.as_millis() as u64,
        problem,
        note,
    };
    let p = path();
    let tmp = p.with_extension(format!("tmp{}", std::process::id()));
    std::fs::write(&tmp, serde_json::to_vec(&report).expect("a report encodes"))?;
    std::fs::rename(tmp, p)
}

/// What `sluice-worker healthcheck` answers (with a healthy state worth telling); the error
/// says why not healthy.
pub fn check() -> Result<Option<String>, String> {
    let p = path();
    let text = std::fs::read_to_string(&p)
        .map_err(|e| format!("{}: {e} (has the worker started?)", p.display()))?;
    verdict(&text, now_ms())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn progress_not_idleness_makes_a_worker_healthy() {
        let t0 = Instant::now();
        let s = |n: u64| t0 + Duration::from_secs(n);
        let limits = Limits::new(
            Duration::from_secs(20),
            Duration::from_secs(20),
            Duration::from_secs(600),
        );
        let ok = || Ok(());
        type Case = (
            &'static str,
            Phase,
            u64,
            Option<u64>,
            u64,
            Result<(), String>,
            Option<&'static str>,
        );
        let cases: Vec<Case> = vec![
            ("idle, polling", Phase::Receiving, 0, None, 10, ok(), None),
            (
                "every slot busy for an hour, heartbeats fresh",
                Phase::WaitingForSlot,
                0,
                Some(3590),
                3600,
                ok(),
                None,
            ),
            (
                "busy, a heartbeat stalled",
                Phase::WaitingForSlot,
                0,
                Some(0),
                100,
                ok(),
                Some("heartbeat has not turned for 100 s"),
            ),
            (
                "paused for a day, idle",
                Phase::Paused,
                0,
                None,
                86_400,
                ok(),
                None,
            ),
            (
                "paused, a held job's heartbeat stalled",
                Phase::Paused,
                0,
                Some(0),
                100,
                ok(),
                Some("heartbeat has not turned for 100 s"),
            ),
            (
                "a receive that hangs",
                Phase::Receiving,
                0,
                None,
                51,
                ok(),
                Some("a receive from the queue has not returned for 51 s"),
            ),
            (
                "pausing after a failed receive",
                Phase::Pausing,
                0,
                None,
                20,
                ok(),
                None,
            ),
            (
                "model still loading",
                Phase::Starting,
                0,
                None,
                600,
                ok(),
                None,
            ),
            (
                "model never loads",
                Phase::Starting,
                0,
                None,
                631,
                ok(),
                Some("the handler has not become ready"),
            ),
            (
                "draining long jobs",
                Phase::Draining,
                0,
                Some(290),
                300,
                ok(),
                None,
            ),
            (
                "the child is down",
                Phase::WaitingForSlot,
                0,
                Some(5),
                10,
                Err("slot 1: the process keeps crashing".into()),
                Some("slot 1"),
            ),
        ];
        for (name, phase, since, beat, now, handler, want) in cases {
            let got = assess(phase, s(since), beat.map(s), s(now), &limits, handler);
            match (got, want) {
                (Ok(()), None) => {}
                (Err(e), Some(w)) => assert!(e.contains(w), "{name}: {e}"),
                (got, want) => panic!("{name}: got {got:?}, want {want:?}"),
            }
        }
    }

    #[test]
    fn the_check_reads_a_fresh_report_and_distrusts_a_stale_one() {
        let report = |at_ms, problem: Option<&str>| {
            serde_json::to_string(&Report {
                at_ms,
                stale_after_ms: 20_000,
                problem: problem.map(Into::into),
                note: None,
            })
            .unwrap()
        };
        assert_eq!(verdict(&report(100_000, None), 110_000), Ok(None));
        // A paused worker is healthy, and says so.
        let paused = serde_json::to_string(&Report {
            at_ms: 100_000,
            stale_after_ms: 20_000,
            problem: None,
            note: Some("the pipeline is paused".into()),
        })
        .unwrap();
        assert_eq!(
            verdict(&paused, 110_000),
            Ok(Some("the pipeline is paused".into()))
        );
        let stale = verdict(&report(100_000, None), 121_000).unwrap_err();
        assert!(stale.contains("has not reported for 21 s"), "{stale}");
        assert_eq!(
            verdict(&report(100_000, Some("slot 0 is down")), 100_001),
            Err("slot 0 is down".into())
        );
        assert!(verdict("", 0).unwrap_err().contains("unreadable"));
    }
}
