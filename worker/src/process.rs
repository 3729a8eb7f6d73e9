//! The `process` handler: the user's program in any language, one process per slot, each running
//! one job at a time over the JSON-lines protocol of `worker/PROTOCOL.md`.
//!
//! Each slot has a supervisor task that starts the program, waits for its `ready` line, feeds it
//! jobs from a queue shared by all slots, and restarts it (with a growing pause) when it exits,
//! crashes, stops answering within the job's time limit, or ignores a cancel.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use tokio::io::{AsyncWriteExt, BufReader};
use tokio::process::{ChildStderr, ChildStdin, ChildStdout, Command};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;
use tracing::{debug, info, warn};

use crate::config::WorkerConfig;
use crate::handler::{Handler, JobContext, JobError};
use crate::lines::{BoundedLines, Line};

/// The longest line a process may write, newline included.
pub const MAX_LINE_BYTES: usize = 1 << 20;
/// How long a process may take to stop a cancelled job before it is killed.
pub const CANCEL_GRACE: Duration = Duration::from_secs(5);
/// The longest stderr line logged whole.
const STDERR_LINE_BYTES: usize = 16 * 1024;
/// How many earlier job ids a process's late answers are recognised by.
const RECENT_IDS: usize = 16;
/// Crashes on this many different jobs in a row, with no job answered between, mean the program
/// is broken rather than one input: the handler takes no more jobs (but one to try again after a
/// pause) and reports unhealthy, so that ECS replaces the task instead of the program burning
/// the attempts of every job it is given.
pub const CRASH_TRIP: usize = 3;

/// The user's program as a [`Handler`]. Its input and output are JSON, passed through as they are.
pub struct ProcessHandler {
    shared: Arc<Shared>,
}

struct Shared {
    command: Vec<String>,
    slots: usize,
    startup: Duration,
    jobs: mpsc::Sender<Request>,
    queue: tokio::sync::Mutex<mpsc::Receiver<Request>>,
    states: watch::Sender<Vec<SlotState>>,
    started: std::sync::Once,
    crashes: Mutex<Crashes>,
}

/// The processes' crashes while running jobs since a job was last answered.
#[derive(Debug, Default)]
pub struct Crashes {
    /// The different jobs they crashed on, in order.
    jobs: Vec<String>,
    last: Option<(std::time::Instant, String)>,
}

impl Crashes {
    /// A process ended while running `job`.
    pub fn crashed(&mut self, job: &str, why: String, at: std::time::Instant) {
        if !self.jobs.iter().any(|j| j == job) {
            self.jobs.push(job.to_owned());
        }
        self.last = Some((at, why));
    }

    /// A process answered a job: the program works.
    pub fn answered(&mut self) {
        self.jobs.clear();
        self.last = None;
    }

    /// Whether crashes on different jobs in a row have stopped the handler taking jobs.
    pub fn tripped(&self) -> bool {
        self.jobs.len() >= CRASH_TRIP
    }

    /// How many jobs the handler may hold now, given this record: none for a pause after each
    /// crash once tripped (1 s doubling to 30 s, as restarts do), then one to try again. Pure.
    pub fn capacity(&self, up: usize, now: std::time::Instant) -> usize {
        match &self.last {
            Some((at, _)) if self.tripped() => {
                let streak = u32::try_from(self.jobs.len() - CRASH_TRIP + 1).unwrap_or(u32::MAX);
                if now.saturating_duration_since(*at) < restart_pause(streak) {
                    0
                } else {
                    up.min(1)
                }
            }
            _ => up,
        }
    }

    /// What the health check says while tripped.
    pub fn problem(&self) -> Option<String> {
        let (_, why) = self.last.as_ref().filter(|_| self.tripped())?;
        Some(format!(
            "the handler process crashed on {} different jobs in a row (the last: {why}); \
             taking no jobs until one is answered",
            self.jobs.len()
        ))
    }
}

/// A slot's process, for readiness and health.
#[derive(Debug, Clone, PartialEq)]
enum SlotState {
    /// Not ready since then; `problem` is why the last process ended, if one did.
    Down {
        since: std::time::Instant,
        problem: Option<String>,
        /// The program cannot be started at all (not found, not executable).
        fatal: bool,
    },
    /// Running a job.
    Busy,
    /// Ready for a job.
    Ready,
}

struct Request {
    id: String,
    /// The `job` line, newline included.
    line: Vec<u8>,
    ctx: JobContext,
    /// Told when a process takes the job.
    picked: Option<oneshot::Sender<()>>,
    reply: oneshot::Sender<Result<Box<RawValue>, JobError>>,
}

impl ProcessHandler {
    /// A pool of `config.concurrency` processes running `command`; they start when the worker
    /// does.
    pub fn new(command: Vec<String>, config: &WorkerConfig) -> Self {
        let slots = config.concurrency;
        let (jobs, queue) = mpsc::channel(slots.max(1));
        let down = SlotState::Down {
            since: std::time::Instant::now(),
            problem: None,
            fatal: false,
        };
        ProcessHandler {
            shared: Arc::new(Shared {
                command,
                slots,
                startup: config.startup,
                jobs,
                queue: tokio::sync::Mutex::new(queue),
                states: watch::Sender::new(vec![down; slots]),
                started: std::sync::Once::new(),
                crashes: Mutex::default(),
            }),
        }
    }
}

#[derive(Serialize)]
struct JobLine<'a> {
    r#type: &'static str,
    id: &'a str,
    attempt: u32,
    max_attempts: u32,
    timeout_seconds: u64,
    input: &'a RawValue,
    /// The path of the job's uploaded file, when it has one.
    #[serde(skip_serializing_if = "Option::is_none")]
    input_file: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    input_content_type: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    input_size: Option<u64>,
    /// Where the job may write output files (and a result too large for one line), when the
    /// worker can store them.
    #[serde(skip_serializing_if = "Option::is_none")]
    output_dir: Option<&'a str>,
}

impl Handler for ProcessHandler {
    type Input = Box<RawValue>;
    type Output = Box<RawValue>;

    async fn call(&self, input: Box<RawValue>, ctx: JobContext) -> Result<Box<RawValue>, JobError> {
        let id = ctx.job_id.to_string();
        let mut line = serde_json::to_vec(&JobLine {
            r#type: "job",
            id: &id,
            attempt: ctx.attempt,
            max_attempts: ctx.max_attempts,
            // What is left of the limit, rounded up: the time the job waited for a process is
            // already spent.
            timeout_seconds: ctx.remaining().as_secs_f64().ceil() as u64,
            input: &input,
            input_file: ctx.input_path().and_then(|p| p.to_str()),
            input_content_type: ctx.input_content_type(),
            input_size: ctx.input_size(),
            output_dir: ctx.output_dir().and_then(|p| p.to_str()),
        })
        .map_err(|e| JobError::permanent(format!("the job could not be encoded: {e}")))?;
        line.push(b'\n');
        let (picked, was_picked) = oneshot::channel();
        let (reply, answer) = oneshot::channel();
        let request = Request {
            id,
            line,
            ctx,
            picked: Some(picked),
            reply,
        };
        // A job no process took never ran: it goes back to the queue without spending an
        // attempt.
        let gone = || JobError::unavailable("the worker's handler processes are gone");
        self.shared.jobs.send(request).await.map_err(|_| gone())?;
        match tokio::time::timeout(self.shared.startup, was_picked).await {
            Ok(Ok(())) => {}
            Ok(Err(_)) => return Err(gone()),
            Err(_) => {
                return Err(JobError::unavailable(format!(
                    "no handler process was ready to take the job within {} s",
                    self.shared.startup.as_secs()
                )))
            }
        }
        answer.await.unwrap_or_else(|_| {
            Err(JobError::retryable(
                "the handler process stopped without answering",
            ))
        })
    }

    async fn ready(&self) -> Result<(), String> {
        let shared = self.shared.clone();
        self.shared.started.call_once(|| {
            for slot in 0..shared.slots {
                tokio::spawn(supervise(shared.clone(), slot));
            }
        });
        info!(command = ?self.shared.command, processes = self.shared.slots, "starting the handler's processes");
        let mut states = self.shared.states.subscribe();
        let all_ready = tokio::time::timeout(self.shared.startup, async {
            loop {
                {
                    let now = states.borrow_and_update();
                    if let Some(problem) = now.iter().find_map(|s| match s {
                        SlotState::Down {
                            fatal: true,
                            problem,
                            ..
                        } => problem.clone(),
                        _ => None,
                    }) {
                        return Err(problem);
                    }
                    if now.iter().all(|s| *s == SlotState::Ready) {
                        return Ok(());
                    }
                }
                if states.changed().await.is_err() {
                    return Err("the handler's processes stopped".to_owned());
                }
            }
        })
        .await;
        match all_ready {
            Ok(r) => r,
            Err(_) => {
                let now = self.shared.states.borrow();
                let ready = now
                    .iter()
                    .filter(|s| !matches!(s, SlotState::Down { .. }))
                    .count();
                if ready > 0 {
                    warn!(
                        ready,
                        of = now.len(),
                        "only some handler processes are ready; taking jobs"
                    );
                    return Ok(());
                }
                Err(format!(
                    "no handler process became ready within {} s{}",
                    self.shared.startup.as_secs(),
                    problem_of(&now)
                        .map(|p| format!(": {p}"))
                        .unwrap_or_default()
                ))
            }
        }
    }

    fn capacity(&self) -> Option<usize> {
        // Processes up: running a job, or ready for one.
        let up = self
            .shared
            .states
            .borrow()
            .iter()
            .filter(|s| !matches!(s, SlotState::Down { .. }))
            .count();
        let crashes = self.shared.crashes.lock().expect("crashes lock");
        Some(crashes.capacity(up, std::time::Instant::now()))
    }

    fn health(&self) -> Result<(), String> {
        if let Some(problem) = self.shared.crashes.lock().expect("crashes lock").problem() {
            return Err(problem);
        }
        let now = self.shared.states.borrow();
        for (slot, state) in now.iter().enumerate() {
            if let SlotState::Down { since, problem, .. } = state {
                let down = since.elapsed();
                if down > self.shared.startup {
                    return Err(format!(
                        "the handler process of slot {slot} has not been ready for {} s{}",
                        down.as_secs(),
                        problem
                            .as_ref()
                            .map(|p| format!(": {p}"))
                            .unwrap_or_default()
                    ));
                }
            }
        }
        Ok(())
    }
}

fn problem_of(states: &[SlotState]) -> Option<String> {
    states.iter().find_map(|s| match s {
        SlotState::Down { problem, .. } => problem.clone(),
        SlotState::Ready | SlotState::Busy => None,
    })
}

/// The pause before restarting a process that failed `failures` times in a row: 1 s, doubling,
/// at most 30 s.
pub fn restart_pause(failures: u32) -> Duration {
    sluice::job::RESTARTS.delay(failures, 1.0)
}

/// Keeps one slot's process running.
async fn supervise(shared: Arc<Shared>, slot: usize) {
    let mut failures = 0u32;
    loop {
        let (problem, fatal) = match Child::start(&shared.command, slot) {
            Err(e) => (
                format!("cannot start {:?}: {e}", shared.command),
                matches!(
                    e.kind(),
                    std::io::ErrorKind::NotFound | std::io::ErrorKind::PermissionDenied
                ),
            ),
            Ok(mut child) => match child.await_ready(shared.startup).await {
                Err(problem) => {
                    child.kill().await;
                    (problem, false)
                }
                Ok(()) => {
                    info!(slot, pid = child.pid, "handler process ready");
                    shared.states.send_modify(|s| s[slot] = SlotState::Ready);
                    let (why, answered) = child.serve(&shared, slot).await;
                    // Only a process that answered a job resets the pause: one that dies on
                    // every job it takes restarts ever more slowly, however fast it loads.
                    if answered {
                        failures = 0;
                    }
                    (why, false)
                }
            },
        };
        failures += 1;
        let pause = restart_pause(failures);
        warn!(slot, %problem, ?pause, "handler process down; starting it again after a pause");
        shared.states.send_modify(|s| {
            let since = match &s[slot] {
                SlotState::Down { since, .. } => *since,
                SlotState::Ready | SlotState::Busy => std::time::Instant::now(),
            };
            s[slot] = SlotState::Down {
                since,
                problem: Some(problem),
                fatal,
            };
        });
        tokio::time::sleep(pause).await;
    }
}

/// One running process.
struct Child {
    slot: usize,
    pid: u32,
    process: tokio::process::Child,
    stdin: ChildStdin,
    stdout: BoundedLines<BufReader<ChildStdout>>,
    /// The job it runs, for the stderr log lines.
    current: Arc<Mutex<Option<String>>>,
    /// Ids it was given lately; a late answer for one of them is ignored.
    recent: VecDeque<String>,
}

/// Why a process must be replaced after a job.
enum Gone {
    /// It died or broke the protocol while running the job: counted towards [`CRASH_TRIP`].
    Crashed(String),
    /// It was killed (the job's time limit, an ignored cancel) or never took the job.
    Stopped(String),
}

/// How a job on a process ended.
enum Ended {
    Answer(Result<Box<RawValue>, JobError>),
    /// The process was gone before it read the job; the reason.
    NotTaken(String),
    /// The process exited or closed its output; the reason.
    Gone(String),
    /// The process must be killed; the reason.
    Kill(String),
    /// The process broke the protocol: the job fails with this error and the process, whose
    /// state is unknown, is replaced.
    Garbled(JobError),
}

impl Child {
    fn start(command: &[String], slot: usize) -> std::io::Result<Child> {
        let mut process = Command::new(&command[0])
            .args(&command[1..])
            .env("SLUICE_PROTOCOL", "1")
            .env("SLUICE_SLOT", slot.to_string())
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            // Its own process group: a Ctrl-C at the terminal reaches the worker, which drains,
            // not the handler in the middle of a job.
            .process_group(0)
            .kill_on_drop(true)
            .spawn()?;
        let pid = process.id().unwrap_or(0);
        crate::reaper::manage(pid);
        let current = Arc::new(Mutex::new(None));
        let stderr = process.stderr.take().expect("stderr is piped");
        tokio::spawn(forward_stderr(stderr, slot, pid, current.clone()));
        Ok(Child {
            slot,
            pid,
            stdin: process.stdin.take().expect("stdin is piped"),
            stdout: BoundedLines::new(
                BufReader::new(process.stdout.take().expect("stdout is piped")),
                MAX_LINE_BYTES,
            ),
            process,
            current,
            recent: VecDeque::with_capacity(RECENT_IDS),
        })
    }

    async fn await_ready(&mut self, limit: Duration) -> Result<(), String> {
        let wait = async {
            loop {
                match self.stdout.next().await {
                    Ok(Line::Text(text)) => match parse(&text) {
                        Ok(Message::Ready) => return Ok(()),
                        _ => {
                            warn!(slot = self.slot, line = %preview(&text), "the handler process wrote before it was ready; ignored")
                        }
                    },
                    Ok(Line::TooLong { bytes }) => {
                        warn!(slot = self.slot, bytes, "the handler process wrote an overlong line before it was ready; ignored")
                    }
                    Ok(Line::Eof) | Err(_) => {
                        return Err(format!("it {} before it was ready", self.exit().await))
                    }
                }
            }
        };
        match tokio::time::timeout(limit, wait).await {
            Ok(r) => r,
            Err(_) => Err(format!(
                "it did not write {{\"type\":\"ready\"}} within {} s",
                limit.as_secs()
            )),
        }
    }

    /// Runs jobs until the process must be replaced; returns why, and whether it answered a job.
    async fn serve(mut self, shared: &Shared, slot: usize) -> (String, bool) {
        let mut answered = false;
        loop {
            let mut request = tokio::select! {
                r = async { shared.queue.lock().await.recv().await } => match r {
                    Some(r) => r,
                    None => return ("the worker is stopping".into(), answered),
                },
                line = self.stdout.next() => match line {
                    Ok(Line::Text(text)) => {
                        warn!(slot = self.slot, line = %preview(&text), "the handler process wrote between jobs; ignored");
                        continue;
                    }
                    Ok(Line::TooLong { bytes }) => {
                        warn!(slot = self.slot, bytes, "the handler process wrote an overlong line between jobs; ignored");
                        continue;
                    }
                    Ok(Line::Eof) | Err(_) => return (format!("it {}", self.exit().await), answered),
                },
            };
            if request.reply.is_closed() {
                // Its attempt ended while it waited (a cancel, the time limit).
                continue;
            }
            if let Some(picked) = request.picked.take() {
                let _ = picked.send(());
            }
            shared.states.send_modify(|s| s[slot] = SlotState::Busy);
            let id = request.id.clone();
            match self.run(request).await {
                Ok(()) => {
                    answered = true;
                    shared.crashes.lock().expect("crashes lock").answered();
                }
                Err(Gone::Crashed(why)) => {
                    shared.crashes.lock().expect("crashes lock").crashed(
                        &id,
                        why.clone(),
                        std::time::Instant::now(),
                    );
                    return (why, answered);
                }
                Err(Gone::Stopped(why)) => return (why, answered),
            }
            shared.states.send_modify(|s| s[slot] = SlotState::Ready);
        }
    }

    /// Runs one job; an error means the process is gone or was killed, and why.
    async fn run(&mut self, req: Request) -> Result<(), Gone> {
        *self.current.lock().expect("current job lock") = Some(req.id.clone());
        if self.recent.len() == RECENT_IDS {
            self.recent.pop_front();
        }
        self.recent.push_back(req.id.clone());
        let deadline = Instant::from_std(req.ctx.deadline());
        let ended = match tokio::time::timeout_at(deadline, self.send(&req.line)).await {
            Err(_) => Ended::Kill("it did not read the job within the job's time limit".into()),
            Ok(Err(_)) => Ended::NotTaken(format!("{} before it took the job", self.exit().await)),
            Ok(Ok(())) => self.answer(&req, deadline).await,
        };
        *self.current.lock().expect("current job lock") = None;
        let (reply, result) = match ended {
            Ended::Answer(r) => (r, Ok(())),
            Ended::NotTaken(why) => (
                Err(JobError::unavailable(format!(
                    "the handler process {why}; it is started again"
                ))),
                Err(Gone::Stopped(format!("it {why}"))),
            ),
            Ended::Gone(why) => (
                Err(JobError::retryable(format!(
                    "the handler process {why} while running the job; it is started again"
                ))),
                Err(Gone::Crashed(format!("it {why}"))),
            ),
            Ended::Kill(why) => {
                self.kill().await;
                (
                    Err(JobError::retryable(format!(
                        "the handler process was killed: {why}"
                    ))),
                    Err(Gone::Stopped(format!("it was killed: {why}"))),
                )
            }
            Ended::Garbled(e) => {
                // It may still be running the job, or be out of step: start afresh.
                self.kill().await;
                let why = format!("it was stopped after it broke the protocol ({})", e.message);
                (Err(e), Err(Gone::Crashed(why)))
            }
        };
        let _ = req.reply.send(reply);
        result
    }

    async fn answer(&mut self, req: &Request, deadline: Instant) -> Ended {
        let mut cancel_sent: Option<Instant> = None;
        let garbled = |message: String| Ended::Garbled(JobError::retryable(message));
        loop {
            let grace_end = cancel_sent.map_or(deadline, |t| (t + CANCEL_GRACE).min(deadline));
            tokio::select! {
                line = self.stdout.next() => match line {
                    Ok(Line::Text(text)) => match parse(&text) {
                        Ok(Message::Ready) => {}
                        Ok(Message::Progress { id, fraction, message, ignored }) if id == req.id => {
                            if let Some(what) = ignored {
                                warn!(slot = self.slot, job_id = id, "a progress line with fields of the wrong type; those fields are ignored: {what}");
                            }
                            req.ctx.progress(fraction, message.as_deref());
                        }
                        Ok(Message::Result { id, result }) if id == req.id => return Ended::Answer(Ok(result)),
                        Ok(Message::ResultFile { id, path }) if id == req.id => {
                            // The result is the JSON in a file of the job's output directory.
                            let stored = req
                                .ctx
                                .set_result_file(path.into(), sluice::output::JSON.into())
                                .map(|()| RawValue::NULL.to_owned());
                            return Ended::Answer(stored);
                        }
                        Ok(Message::Error { id, message, retryable }) if id == req.id => {
                            let message = message.unwrap_or_else(|| "the handler failed without a message".into());
                            let e = if retryable { JobError::retryable(message) } else { JobError::permanent(message) };
                            return Ended::Answer(Err(e));
                        }
                        Ok(other) => {
                            let id = other.id().unwrap_or_default();
                            if self.recent.iter().any(|r| r == id) {
                                debug!(slot = self.slot, job_id = id, "a late line for an earlier job; ignored");
                            } else {
                                return garbled(format!(
                                    "the handler process answered for job {id:?}, which it was not given (it runs {})",
                                    req.id
                                ));
                            }
                        }
                        Err(what) => return garbled(format!("the handler process wrote {what}")),
                    },
                    Ok(Line::TooLong { bytes }) => {
                        return garbled(format!(
                            "the handler process wrote a line of {bytes} bytes; lines are limited to {MAX_LINE_BYTES} bytes"
                        ))
                    }
                    Ok(Line::Eof) | Err(_) => return Ended::Gone(self.exit().await),
                },
                // It may exit while something it started still holds its output open.
                status = self.process.wait() => {
                    let why = status.map_or_else(|e| format!("failed ({e})"), |s| format!("exited ({s})"));
                    self.kill_group();
                    return Ended::Gone(why);
                }
                () = tokio::time::sleep_until(deadline) => {
                    return Ended::Kill(format!("the job ran past its time limit of {} s", req.ctx.time_limit.as_secs()));
                }
                () = req.ctx.cancelled(), if cancel_sent.is_none() => {
                    if Instant::now() + Duration::from_millis(500) >= deadline {
                        return Ended::Kill(format!("the job ran past its time limit of {} s", req.ctx.time_limit.as_secs()));
                    }
                    let mut line = serde_json::to_vec(&serde_json::json!({"type": "cancel", "id": req.id})).expect("a cancel encodes");
                    line.push(b'\n');
                    match tokio::time::timeout(CANCEL_GRACE, self.send(&line)).await {
                        Ok(Ok(())) => cancel_sent = Some(Instant::now()),
                        Ok(Err(_)) => return Ended::Gone(self.exit().await),
                        Err(_) => return Ended::Kill("it did not read a cancel".into()),
                    }
                }
                () = tokio::time::sleep_until(grace_end), if cancel_sent.is_some() => {
                    return Ended::Kill(format!("it did not stop within {} s of a cancel", CANCEL_GRACE.as_secs()));
                }
            }
        }
    }

    async fn send(&mut self, line: &[u8]) -> std::io::Result<()> {
        self.stdin.write_all(line).await?;
        self.stdin.flush().await
    }

    /// How the process ended, once its output closed.
    async fn exit(&mut self) -> String {
        match tokio::time::timeout(Duration::from_secs(2), self.process.wait()).await {
            Ok(Ok(status)) => {
                self.kill_group();
                format!("exited ({status})")
            }
            _ => {
                self.kill().await;
                "closed its output".into()
            }
        }
    }

    /// Kills the process and everything it started (its process group: a shell's children, a
    /// data loader's workers), then reaps it.
    async fn kill(&mut self) {
        self.kill_group();
        let _ = self.process.start_kill();
        let _ = tokio::time::timeout(Duration::from_secs(5), self.process.wait()).await;
    }

    fn kill_group(&self) {
        use nix::sys::signal::{killpg, Signal};
        use nix::unistd::Pid;
        if let Ok(pid) = i32::try_from(self.pid) {
            if pid > 0 {
                let _ = killpg(Pid::from_raw(pid), Signal::SIGKILL);
            }
        }
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        // The worker is stopping (or the slot's task was dropped): take the whole group along.
        self.kill_group();
        crate::reaper::release(self.pid);
    }
}

/// A line from the process, by its `type`.
#[derive(Debug)]
enum Message {
    Ready,
    Progress {
        id: String,
        fraction: Option<f64>,
        message: Option<String>,
        /// What was wrong with the line's fields, which are then ignored: a mistyped field of a
        /// cosmetic report never costs a process (a model that takes minutes to load).
        ignored: Option<String>,
    },
    Result {
        id: String,
        result: Box<RawValue>,
    },
    /// The result is the JSON in this file, in the job's output directory (too large for a
    /// line of the protocol).
    ResultFile {
        id: String,
        path: String,
    },
    Error {
        id: String,
        message: Option<String>,
        retryable: bool,
    },
}

impl Message {
    fn id(&self) -> Option<&str> {
        match self {
            Message::Ready => None,
            Message::Progress { id, .. }
            | Message::Result { id, .. }
            | Message::ResultFile { id, .. }
            | Message::Error { id, .. } => Some(id),
        }
    }
}

/// Reads one line of the protocol; the error describes the line for a person. Pure.
fn parse(line: &[u8]) -> Result<Message, String> {
    #[derive(Deserialize)]
    struct Head<'a> {
        #[serde(borrow, default)]
        r#type: Option<std::borrow::Cow<'a, str>>,
        #[serde(default)]
        id: Option<String>,
    }
    #[derive(Deserialize)]
    struct ResultLine {
        // `null` is a result like any other: only a missing field is `None`.
        #[serde(default, deserialize_with = "present")]
        result: Option<Box<RawValue>>,
        #[serde(default)]
        result_file: Option<String>,
    }
    fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Box<RawValue>>, D::Error> {
        Box::<RawValue>::deserialize(d).map(Some)
    }
    #[derive(Deserialize)]
    struct ErrorLine {
        #[serde(default)]
        message: Option<String>,
        #[serde(default)]
        retryable: Option<bool>,
    }
    #[derive(Deserialize)]
    struct ProgressLine {
        #[serde(default)]
        fraction: serde_json::Value,
        #[serde(default)]
        message: serde_json::Value,
    }
    let text = std::str::from_utf8(line).map_err(|_| "a line that is not UTF-8".to_owned())?;
    let head: Head = serde_json::from_str(text).map_err(|e| {
        if e.is_data() {
            format!(
                "a line that is not a JSON object of the protocol ({e}): {}",
                preview(line)
            )
        } else {
            format!("a line that is not JSON: {}", preview(line))
        }
    })?;
    let kind = head.r#type.as_deref().unwrap_or("");
    let id = || {
        head.id
            .clone()
            .ok_or_else(|| format!("a {kind} line without an \"id\": {}", preview(line)))
    };
    let bad = |e: serde_json::Error| format!("a malformed {kind} line ({e}): {}", preview(line));
    match kind {
        "ready" => Ok(Message::Ready),
        "result" => {
            let r: ResultLine = serde_json::from_str(text).map_err(bad)?;
            match (r.result, r.result_file) {
                (Some(result), None) => Ok(Message::Result { id: id()?, result }),
                (None, Some(path)) => Ok(Message::ResultFile { id: id()?, path }),
                (Some(_), Some(_)) => Err(format!(
                    "a result line with both a \"result\" and a \"result_file\": {}",
                    preview(line)
                )),
                (None, None) => Err(format!(
                    "a result line without a \"result\": {}",
                    preview(line)
                )),
            }
        }
        "error" => {
            let e: ErrorLine = serde_json::from_str(text).map_err(bad)?;
            Ok(Message::Error {
                id: id()?,
                message: e.message,
                retryable: e.retryable.unwrap_or(true),
            })
        }
        "progress" => {
            let p: ProgressLine = serde_json::from_str(text).map_err(bad)?;
            let mut ignored = Vec::new();
            let fraction = match p.fraction {
                serde_json::Value::Null => None,
                serde_json::Value::Number(n) => n.as_f64(),
                other => {
                    ignored.push(format!("\"fraction\" is {other}, not a number from 0 to 1"));
                    None
                }
            };
            let message = match p.message {
                serde_json::Value::Null => None,
                serde_json::Value::String(m) => Some(m),
                other => {
                    ignored.push(format!("\"message\" is {other}, not a string"));
                    None
                }
            };
            Ok(Message::Progress {
                id: id()?,
                fraction,
                message,
                ignored: (!ignored.is_empty())
                    .then(|| format!("{}: {}", ignored.join("; "), preview(line))),
            })
        }
        "" => Err(format!("a line without a \"type\": {}", preview(line))),
        other => Err(format!(
            "a line of unknown type {other:?}: {}",
            preview(line)
        )),
    }
}

/// The first 200 characters of a line, for messages and logs.
fn preview(line: &[u8]) -> String {
    let text = String::from_utf8_lossy(line);
    let mut out: String = text.chars().take(200).collect();
    if text.chars().count() > 200 {
        out.push('…');
    }
    out
}

/// Logs what the process writes to stderr, a line each, with its slot and job.
async fn forward_stderr(
    stderr: ChildStderr,
    slot: usize,
    pid: u32,
    current: Arc<Mutex<Option<String>>>,
) {
    let mut lines = BoundedLines::new(BufReader::new(stderr), STDERR_LINE_BYTES);
    loop {
        let line = match lines.next().await {
            Ok(Line::Text(t)) => String::from_utf8_lossy(&t).into_owned(),
            Ok(Line::TooLong { bytes }) => format!("[a line of {bytes} bytes, too long to log]"),
            Ok(Line::Eof) | Err(_) => return,
        };
        let job = current.lock().expect("current job lock").clone();
        info!(target: "sluice_worker::handler", slot, pid, job_id = job.as_deref().unwrap_or("-"), "{line}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn protocol_lines_parse_or_say_what_is_wrong() {
        let ok = |line: &str| parse(line.as_bytes()).unwrap();
        assert!(matches!(ok(r#"{"type":"ready"}"#), Message::Ready));
        match ok(r#"{"type":"result","id":"j1","result":{"a":[1,2]},"extra":true}"#) {
            Message::Result { id, result } => {
                assert_eq!((id.as_str(), result.get()), ("j1", r#"{"a":[1,2]}"#))
            }
            m => panic!("{m:?}"),
        }
        match ok(r#"{"type":"result","id":"j1","result":null}"#) {
            Message::Result { result, .. } => assert_eq!(result.get(), "null"),
            m => panic!("a null result is a result: {m:?}"),
        }
        match ok(r#"{"type":"result","id":"j1","result_file":"/tmp/out/r.json"}"#) {
            Message::ResultFile { id, path } => {
                assert_eq!((id.as_str(), path.as_str()), ("j1", "/tmp/out/r.json"))
            }
            m => panic!("{m:?}"),
        }
        for line in [
            r#"{"type":"result","id":"j1","result":1,"result_file":"/tmp/r"}"#,
            r#"{"type":"result","id":"j1","result_file":7}"#,
        ] {
            assert!(parse(line.as_bytes()).is_err(), "{line}");
        }
        assert!(matches!(
            ok(r#"{"type":"error","id":"j1","message":"bad input","retryable":false}"#),
            Message::Error { id, message: Some(m), retryable: false } if id == "j1" && m == "bad input"
        ));
        assert!(matches!(
            ok(r#"{"type":"error","id":"j1"}"#),
            Message::Error {
                message: None,
                retryable: true,
                ..
            }
        ));
        assert!(matches!(
            ok(r#"{"type":"progress","id":"j1","fraction":0.5}"#),
            Message::Progress { fraction: Some(f), message: None, ignored: None, .. } if f == 0.5
        ));
        // A mistyped field of a progress report is ignored, with a word for the log; the rest
        // of the report stands and the process stays.
        match ok(r#"{"type":"progress","id":"j1","fraction":"half","message":"resizing"}"#) {
            Message::Progress {
                fraction: None,
                message: Some(m),
                ignored: Some(why),
                ..
            } => {
                assert_eq!(m, "resizing");
                assert!(
                    why.contains(r#""fraction" is "half", not a number"#),
                    "{why}"
                );
            }
            m => panic!("{m:?}"),
        }
        match ok(r#"{"type":"progress","id":"j1","fraction":0.25,"message":{"step":3}}"#) {
            Message::Progress {
                fraction: Some(f),
                message: None,
                ignored: Some(why),
                ..
            } => {
                assert_eq!(f, 0.25);
                assert!(
                    why.contains(r#""message" is {"step":3}, not a string"#),
                    "{why}"
                );
            }
            m => panic!("{m:?}"),
        }
        let long = format!("{{\"type\":\"{}\"}}", "x".repeat(300));
        let cases: &[(&[u8], &str)] = &[
            (
                b"Loading model weights...",
                "a line that is not JSON: Loading model weights...",
            ),
            (b"[1,2]", "a line that is not a JSON object of the protocol"),
            (b"\xff\xfe", "a line that is not UTF-8"),
            (br#"{"id":"j1"}"#, "a line without a \"type\""),
            (
                br#"{"type":"done","id":"j1"}"#,
                "a line of unknown type \"done\"",
            ),
            (
                br#"{"type":"result","result":1}"#,
                "a result line without an \"id\"",
            ),
            (
                br#"{"type":"result","id":"j1"}"#,
                "a result line without a \"result\"",
            ),
            (
                br#"{"type":"error","id":"j1","retryable":"yes"}"#,
                "a malformed error line",
            ),
            (long.as_bytes(), "…"),
        ];
        for (line, want) in cases {
            let e = parse(line).unwrap_err();
            assert!(e.contains(want), "{}: {e}", String::from_utf8_lossy(line));
        }
    }

    #[test]
    fn crashes_on_different_jobs_in_a_row_stop_the_handler_taking_jobs() {
        let t0 = std::time::Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        let mut c = Crashes::default();
        assert_eq!((c.capacity(4, t0), c.problem()), (4, None));
        // The same job crashing again is one job (a poison input, not a broken program).
        for _ in 0..5 {
            c.crashed("a", "it exited (signal 11)".into(), at(0));
        }
        assert!(!c.tripped());
        assert_eq!(c.capacity(4, at(0)), 4);
        c.crashed("b", "it exited (signal 11)".into(), at(1));
        assert_eq!(c.capacity(4, at(1)), 4);
        c.crashed("c", "it exited (signal 9)".into(), at(2));
        assert!(c.tripped());
        let problem = c.problem().unwrap();
        assert!(
            problem
                .contains("crashed on 3 different jobs in a row (the last: it exited (signal 9))"),
            "{problem}"
        );
        // No job for a pause after the crash, then one to try again, never more.
        let cases = [(2, 4, 0), (2, 0, 0), (3, 4, 1), (10, 4, 1), (10, 0, 0)];
        for (now, up, want) in cases {
            assert_eq!(c.capacity(up, at(now)), want, "at {now} s with {up} up");
        }
        // Each further crash lengthens the pause: 2 s after the fourth job.
        c.crashed("d", "it exited (signal 9)".into(), at(20));
        assert_eq!(c.capacity(4, at(21)), 0);
        assert_eq!(c.capacity(4, at(22)), 1);
        // One answered job and the program is trusted again.
        c.answered();
        assert_eq!((c.capacity(4, at(22)), c.problem()), (4, None));
    }

    #[test]
    fn restarts_back_off_from_one_to_thirty_seconds() {
        let got: Vec<u64> = (1..=8).map(|n| restart_pause(n).as_secs()).collect();
        assert_eq!(got, [1, 2, 4, 8, 16, 30, 30, 30]);
    }
}
