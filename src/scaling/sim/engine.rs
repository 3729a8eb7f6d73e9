//! The queue and task model: a discrete-event simulation.
//!
//! - Jobs wait in one FIFO queue (visible messages) until a running task has a
//!   free slot (`jobs_per_task`), which takes one at once (long polling).
//! - A task is billed from the moment it is requested until it stops, and runs
//!   jobs only after the start-up delay.
//! - A task is only ever stopped while idle: busy tasks carry scale-in
//!   protection. When an ECS service has more tasks than its desired count it
//!   stops starting (pending) tasks first, then idle ones; busy tasks stop when
//!   their job ends, before taking another.
//! - Scalers either own an ECS service's desired count or start standalone
//!   tasks that stop themselves after being idle for a while.

use std::cmp::Ordering;
use std::collections::{BinaryHeap, VecDeque};

use serde::Serialize;

use super::workload::Workload;

const EPSILON: f64 = 1e-9;

/// What a scaler can see at one moment.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct View {
    /// Simulation time, seconds.
    pub now: f64,
    /// Jobs waiting.
    pub visible: u32,
    /// Jobs being run.
    pub in_flight: u32,
    /// Tasks past their start-up delay.
    pub running_tasks: u32,
    /// Tasks requested and still starting.
    pub pending_tasks: u32,
    /// The ECS service's desired count (0 for standalone scalers).
    pub desired_tasks: u32,
}

/// What a scaler asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    /// Set the ECS service's desired count.
    SetDesired(u32),
    /// Start this many standalone tasks (`RunTask`).
    RunTasks(u32),
}

/// One way of deciding how many tasks run: sluice's policy, an anchor, or
/// the oracle.
pub trait Scaler {
    /// The next moment the scaler's own clock wakes it, if any.
    fn next_wakeup(&self) -> Option<f64>;
    /// Called at [`Scaler::next_wakeup`]; must move the wake-up forward.
    fn wake(&mut self, view: &View) -> Vec<Command>;
    /// Called when a job is submitted, after it is queued.
    fn on_arrival(&mut self, _view: &View) -> Vec<Command> {
        Vec::new()
    }
    /// Whether the scaler drives an ECS service's desired count (else it
    /// starts standalone tasks).
    fn manages_service(&self) -> bool {
        true
    }
    /// Standalone tasks stop themselves after being idle this long.
    fn idle_exit_after(&self) -> Option<f64> {
        None
    }
}

/// Settings of one run.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EngineConfig {
    /// Seconds from a task's request until it takes jobs.
    pub startup_delay_seconds: f64,
    /// Jobs one task runs at once.
    pub jobs_per_task: u32,
    /// Record backlog and tasks every this many seconds, if set.
    pub record_every_seconds: Option<f64>,
    /// After the last job ends, wait at most this long for the scaler to stop
    /// its tasks (their cost counts).
    pub drain_limit_seconds: f64,
    /// Give up this long after the last arrival, even with jobs unfinished.
    pub give_up_after_seconds: f64,
}

/// One recorded moment.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Point {
    /// Seconds.
    pub t: f64,
    /// Jobs waiting.
    pub backlog: u32,
    /// Tasks requested and not stopped.
    pub tasks: u32,
}

/// What one run produced.
#[derive(Debug, Clone, PartialEq)]
pub struct RunOutcome {
    /// Queue wait of every job, in arrival order (a job that never started
    /// counts the time until the run ended).
    pub waits: Vec<f64>,
    /// Jobs that never started or never finished before the run gave up.
    pub unfinished: usize,
    /// Sum over tasks of (stopped − requested).
    pub task_seconds: f64,
    /// Most tasks alive at once.
    pub peak_tasks: u32,
    /// First job's arrival.
    pub first_arrival: f64,
    /// First task request at or after the first arrival.
    pub first_request_at: Option<f64>,
    /// First moment a task was running at or after the first arrival.
    pub first_running_at: Option<f64>,
    /// When the run ended.
    pub end: f64,
    /// Backlog and tasks over time, when recorded.
    pub series: Vec<Point>,
    /// Each task's request and stop (or the run's end), for costs beyond the task's own.
    pub task_intervals: Vec<(f64, f64)>,
}

/// Instance-seconds when each task runs on an instance of its own (a GPU
/// task) and a capacity provider keeps an instance `linger_seconds` after
/// its last task stops, giving it to the next task placed meanwhile: the
/// instances alive at `t` are the most tasks alive at any moment of
/// `[t − linger, t]`. To the second (a task counts in every second it
/// touches); exactly the task-seconds when `linger_seconds` is 0.
pub fn instance_seconds(task_intervals: &[(f64, f64)], linger_seconds: f64) -> f64 {
    if linger_seconds <= 0.0 {
        return task_intervals.iter().map(|(a, b)| (b - a).max(0.0)).sum();
    }
    let end = task_intervals.iter().map(|&(_, b)| b).fold(0.0, f64::max);
    let seconds = end.ceil() as usize + 1;
    // Tasks alive in each second, from +1/-1 at the seconds each starts and stops touching.
    let mut delta = vec![0i64; seconds + 1];
    for &(a, b) in task_intervals {
        if b <= a {
            continue;
        }
        delta[a.floor().max(0.0) as usize] += 1;
        delta[(b.ceil() as usize).max(a.floor() as usize + 1).min(seconds)] -= 1;
    }
    let linger = linger_seconds.ceil() as usize;
    let mut alive = 0i64;
    let mut window: VecDeque<(usize, i64)> = VecDeque::new();
    let mut total = 0i64;
    // Past the last task, nothing is alive: the window's tail runs on zeros.
    let steps = delta[..seconds]
        .iter()
        .map(|&d| Some(d))
        .chain(std::iter::repeat_n(None, linger));
    for (i, step) in steps.enumerate() {
        let now = match step {
            Some(d) => {
                alive += d;
                alive
            }
            None => 0,
        };
        while window.back().is_some_and(|&(_, v)| v <= now) {
            window.pop_back();
        }
        window.push_back((i, now));
        while window.front().is_some_and(|&(j, _)| j + linger < i) {
            window.pop_front();
        }
        total += window.front().map_or(0, |&(_, v)| v);
    }
    total as f64
}

#[derive(Debug, Clone, Copy)]
enum Kind {
    TaskReady(usize),
    JobDone(usize),
    IdleCheck(usize, u64),
}

#[derive(Debug, Clone, Copy)]
struct Event {
    t: f64,
    seq: u64,
    kind: Kind,
}

impl PartialEq for Event {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}
impl Eq for Event {}
impl PartialOrd for Event {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Event {
    // Reversed: BinaryHeap pops the earliest event first.
    fn cmp(&self, other: &Self) -> Ordering {
        other
            .t
            .total_cmp(&self.t)
            .then_with(|| other.seq.cmp(&self.seq))
    }
}

#[derive(Debug, Clone)]
struct Task {
    requested_at: f64,
    ready: bool,
    stopped_at: Option<f64>,
    busy: u32,
    idle_epoch: u64,
    idle_check_scheduled: bool,
}

struct Sim<'a> {
    cfg: EngineConfig,
    workload: &'a Workload,
    now: f64,
    seq: u64,
    events: BinaryHeap<Event>,
    queue: VecDeque<usize>,
    tasks: Vec<Task>,
    live: Vec<usize>,
    desired: u32,
    in_flight: u32,
    waits: Vec<Option<f64>>,
    finished: usize,
    last_done: f64,
    peak: u32,
    first_arrival: Option<f64>,
    first_request_at: Option<f64>,
    first_running_at: Option<f64>,
}

impl Sim<'_> {
    fn push(&mut self, t: f64, kind: Kind) {
        self.seq += 1;
        self.events.push(Event {
            t,
            seq: self.seq,
            kind,
        });
    }

    fn view(&self) -> View {
        let running = self.live.iter().filter(|&&id| self.tasks[id].ready).count() as u32;
        View {
            now: self.now,
            visible: self.queue.len() as u32,
            in_flight: self.in_flight,
            running_tasks: running,
            pending_tasks: self.live.len() as u32 - running,
            desired_tasks: self.desired,
        }
    }

    fn launch(&mut self, count: u32) {
        for _ in 0..count {
            let id = self.tasks.len();
            self.tasks.push(Task {
                requested_at: self.now,
                ready: false,
                stopped_at: None,
                busy: 0,
                idle_epoch: 0,
                idle_check_scheduled: false,
            });
            self.live.push(id);
            self.push(
                self.now + self.cfg.startup_delay_seconds,
                Kind::TaskReady(id),
            );
            if self.first_arrival.is_some() && self.first_request_at.is_none() {
                self.first_request_at = Some(self.now);
            }
        }
        self.peak = self.peak.max(self.live.len() as u32);
    }

    fn stop(&mut self, id: usize) {
        self.tasks[id].stopped_at = Some(self.now);
        self.live.retain(|&t| t != id);
    }

    fn apply(&mut self, commands: Vec<Command>) {
        for command in commands {
            match command {
                Command::SetDesired(n) => self.desired = n,
                Command::RunTasks(n) => self.launch(n),
            }
        }
    }

    fn reconcile_service(&mut self) {
        let live = self.live.len() as u32;
        if self.desired > live {
            self.launch(self.desired - live);
            return;
        }
        let mut excess = live - self.desired;
        if excess == 0 {
            return;
        }
        let pending: Vec<usize> = self
            .live
            .iter()
            .rev()
            .copied()
            .filter(|&id| !self.tasks[id].ready)
            .collect();
        let idle: Vec<usize> = self
            .live
            .iter()
            .rev()
            .copied()
            .filter(|&id| self.tasks[id].ready && self.tasks[id].busy == 0)
            .collect();
        for id in pending.into_iter().chain(idle) {
            if excess == 0 {
                break;
            }
            self.stop(id);
            excess -= 1;
        }
    }

    fn dispatch(&mut self, manages_service: bool, idle_exit_after: Option<f64>) {
        if manages_service {
            self.reconcile_service();
        }
        let slots = self.cfg.jobs_per_task;
        for i in 0..self.live.len() {
            let id = self.live[i];
            while self.tasks[id].ready && self.tasks[id].busy < slots {
                let Some(job) = self.queue.pop_front() else {
                    break;
                };
                let spec = self.workload.jobs[job];
                self.waits[job] = Some(self.now - spec.arrival_seconds);
                let task = &mut self.tasks[id];
                task.busy += 1;
                task.idle_epoch += 1;
                task.idle_check_scheduled = false;
                self.in_flight += 1;
                self.push(self.now + spec.duration_seconds, Kind::JobDone(id));
            }
        }
        if let Some(after) = idle_exit_after {
            for i in 0..self.live.len() {
                let id = self.live[i];
                let task = &self.tasks[id];
                if task.ready && task.busy == 0 && !task.idle_check_scheduled {
                    let epoch = task.idle_epoch;
                    self.tasks[id].idle_check_scheduled = true;
                    self.push(self.now + after, Kind::IdleCheck(id, epoch));
                }
            }
        }
    }

    fn handle(&mut self, kind: Kind) {
        match kind {
            Kind::TaskReady(id) => {
                if self.tasks[id].stopped_at.is_none() {
                    self.tasks[id].ready = true;
                    if self.first_arrival.is_some() && self.first_running_at.is_none() {
                        self.first_running_at = Some(self.now);
                    }
                }
            }
            Kind::JobDone(id) => {
                self.tasks[id].busy -= 1;
                self.in_flight -= 1;
                self.finished += 1;
                self.last_done = self.now;
            }
            Kind::IdleCheck(id, epoch) => {
                let task = &self.tasks[id];
                if task.stopped_at.is_none() && task.busy == 0 && task.idle_epoch == epoch {
                    self.stop(id);
                }
            }
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Source {
    Event,
    Arrival,
    Wake,
    Record,
}

/// Replays a workload through one scaler.
pub fn run(workload: &Workload, scaler: &mut dyn Scaler, cfg: &EngineConfig) -> RunOutcome {
    let n = workload.jobs.len();
    let last_arrival = workload.jobs.last().map_or(0.0, |j| j.arrival_seconds);
    let manages_service = scaler.manages_service();
    let idle_exit_after = scaler.idle_exit_after();
    let mut sim = Sim {
        cfg: *cfg,
        workload,
        now: 0.0,
        seq: 0,
        events: BinaryHeap::new(),
        queue: VecDeque::new(),
        tasks: Vec::new(),
        live: Vec::new(),
        desired: 0,
        in_flight: 0,
        waits: vec![None; n],
        finished: 0,
        last_done: 0.0,
        peak: 0,
        first_arrival: None,
        first_request_at: None,
        first_running_at: None,
    };
    let mut next_job = 0;
    let mut next_record = cfg.record_every_seconds.map(|_| 0.0);
    let mut series = Vec::new();
    let end = loop {
        let candidates = [
            (sim.events.peek().map(|e| e.t), Source::Event),
            (
                workload.jobs.get(next_job).map(|j| j.arrival_seconds),
                Source::Arrival,
            ),
            (scaler.next_wakeup(), Source::Wake),
            (next_record, Source::Record),
        ];
        let next = candidates
            .iter()
            .filter_map(|(t, s)| t.map(|t| (t, *s)))
            .reduce(|a, b| if b.0 < a.0 { b } else { a });
        let all_done = next_job == n && sim.finished == n;
        if all_done && sim.live.is_empty() && (!manages_service || sim.desired == 0) {
            break sim.now;
        }
        let Some((t, source)) = next else {
            break sim.now;
        };
        if all_done && t > sim.last_done + cfg.drain_limit_seconds {
            break (sim.last_done + cfg.drain_limit_seconds).max(sim.now);
        }
        if t > last_arrival + cfg.give_up_after_seconds {
            break sim.now;
        }
        sim.now = t.max(sim.now);
        match source {
            Source::Event => {
                if let Some(event) = sim.events.pop() {
                    sim.handle(event.kind);
                }
            }
            Source::Arrival => {
                sim.queue.push_back(next_job);
                if sim.first_arrival.is_none() {
                    sim.first_arrival = Some(sim.now);
                    if !sim.live.is_empty() {
                        sim.first_request_at = Some(sim.now);
                        if sim.live.iter().any(|&id| sim.tasks[id].ready) {
                            sim.first_running_at = Some(sim.now);
                        }
                    }
                }
                next_job += 1;
                let view = sim.view();
                let commands = scaler.on_arrival(&view);
                sim.apply(commands);
            }
            Source::Wake => {
                let view = sim.view();
                let before = scaler.next_wakeup();
                let commands = scaler.wake(&view);
                debug_assert!(
                    scaler.next_wakeup() != before,
                    "a scaler must move its wake-up forward"
                );
                sim.apply(commands);
            }
            Source::Record => {
                series.push(Point {
                    t: sim.now,
                    backlog: sim.queue.len() as u32,
                    tasks: sim.live.len() as u32,
                });
                next_record = next_record
                    .zip(cfg.record_every_seconds)
                    .map(|(r, every)| r + every);
            }
        }
        sim.dispatch(manages_service, idle_exit_after);
        debug_assert!(sim.now + EPSILON >= t);
    };
    if cfg.record_every_seconds.is_some() {
        let live = sim
            .tasks
            .iter()
            .filter(|t| t.stopped_at.is_none_or(|s| s > end))
            .count();
        series.push(Point {
            t: end,
            backlog: sim.queue.len() as u32,
            tasks: live as u32,
        });
    }
    let task_intervals: Vec<(f64, f64)> = sim
        .tasks
        .iter()
        .map(|task| {
            (
                task.requested_at,
                task.stopped_at.unwrap_or(end).max(task.requested_at),
            )
        })
        .collect();
    let task_seconds = task_intervals.iter().map(|(a, b)| b - a).sum();
    // A job that never started waited at least until the run ended.
    let waits: Vec<f64> = sim
        .waits
        .iter()
        .zip(&workload.jobs)
        .map(|(wait, job)| wait.unwrap_or((end - job.arrival_seconds).max(0.0)))
        .collect();
    RunOutcome {
        unfinished: n - sim.finished,
        waits,
        task_seconds,
        peak_tasks: sim.peak,
        first_arrival: sim.first_arrival.unwrap_or(0.0),
        first_request_at: sim.first_request_at,
        first_running_at: sim.first_running_at,
        end,
        series,
        task_intervals,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instances_linger_after_their_tasks_and_serve_the_next() {
        // Two tasks of 100 s, one after the other 200 s apart.
        let tasks = [(0.0, 100.0), (300.0, 400.0)];
        assert_eq!(instance_seconds(&tasks, 0.0), 200.0);
        // Kept 900 s: the first instance serves the second task; alive from 0 to 400 + 900.
        assert_eq!(instance_seconds(&tasks, 900.0), 1300.0);
        // Kept 60 s: two separate tails.
        assert_eq!(instance_seconds(&tasks, 60.0), 320.0);
        // Ten tasks at once for 50 s: ten instances for 50 s plus the tail.
        let burst: Vec<(f64, f64)> = (0..10).map(|_| (10.0, 60.0)).collect();
        assert_eq!(instance_seconds(&burst, 100.0), 10.0 * 150.0);
        assert_eq!(instance_seconds(&[], 100.0), 0.0);
    }
}
