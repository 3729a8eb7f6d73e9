//! The chaos run: the local pipeline under faults, checked job by job at the end, against what
//! sluice itself never wrote.
//!
//! Several `sluice-worker` processes (child-process mode, the Python helper) run jobs of mixed
//! lengths, with retryable and permanent failures, cancels and deadlines, while at once:
//! - workers are killed (SIGKILL, with their handler processes, as a container dies), stopped
//!   (SIGTERM) or paused (SIGSTOP, longer than the lease, then resumed: stale writers), and
//!   restarted; one worker's clock runs 90 s ahead (faketime);
//! - duplicate deliveries, poison messages and messages without records are injected; the
//!   dead-letter queue holds hundreds (`make chaos`: thousands) of poison messages; some jobs'
//!   messages are gone (their records as left by a long outage) for the sweeper to end; for a
//!   few seconds the handler crashes its process on every job;
//! - AWS faults are injected between sluice and the emulator by loopback proxies that every
//!   worker, the submit path, the reconciler and the sweeper talk to (`AWS_ENDPOINT_URL`; each
//!   worker has a proxy of its own, so each fault is known by the worker it hit): 5xx answers,
//!   throttling, added latency, single calls delayed past the lease and past the submit
//!   function's budget, dropped connections, writes applied but answered with an error, and
//!   whole workers cut off from AWS for longer than their lease (every call dropped). Proxies,
//!   not an SDK interceptor, because the workers are real processes running the shipped binary;
//!   submits and cancels are cut at their functions' deployed timeouts, as Lambda does.
//!
//! The run is judged from outside: the handler keeps a ledger of every run's start and end
//! (job, attempt, worker, process, monotonic time) that sluice never reads, the proxy logs every
//! DynamoDB write that applied, and the run records every fault it injected. Then the faults
//! stop, and once every job has ended (quiescence) each is checked. The run prints one table and
//! fails when a "must be 0" row is not.
//!
//! `make chaos` runs it at full size; `make test` (through `cargo test`) runs a short version.
//! Bounded in jobs and time; loopback only. Size: SLUICE_CHAOS_JOBS, SLUICE_CHAOS_SECONDS,
//! SLUICE_CHAOS_LONGEST_MS, SLUICE_CHAOS_SEED, SLUICE_CHAOS_DLQ_POISON.

#[allow(dead_code)]
#[path = "../integration/support.rs"]
mod support;

use std::collections::{BTreeMap, HashMap};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aws_config::BehaviorVersion;
use aws_sdk_dynamodb::config::{Credentials, Region};
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use serde_json::{json, Value};
use sluice::api::Api;
use sluice::deadletter::DeadLetters;
use sluice::job::{JobId, Status};
use sluice::queue::{Envelope, JobQueue};
use sluice::store::JobStore;
use sluice::sweep::Sweeper;
use support::{decode, delete, post_json, Stack, WorkerProcess, ALICE};

/// A small, seeded generator: the run is repeatable for a seed (timing aside).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        // xorshift64*
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
    fn chance(&mut self, p: f64) -> bool {
        ((self.next() >> 11) as f64 / (1u64 << 53) as f64) < p
    }
}

fn setting(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

// ---- the fault-injecting proxy -----------------------------------------------------------

struct Faults {
    on: AtomicBool,
    rng: Mutex<Rng>,
    counts: Mutex<BTreeMap<&'static str, u64>>,
    /// Every DynamoDB write that applied, as the table answered it.
    writes: Mutex<Vec<Write>>,
    /// Each fault injected into a worker's DynamoDB call about a job: (worker, job, when).
    hits: Mutex<Vec<(String, String, i64)>>,
    /// Workers cut off from AWS, and until when (monotonic ns).
    cut_off: Mutex<HashMap<String, i64>>,
}

impl Faults {
    fn count(&self, kind: &'static str) {
        *self.counts.lock().unwrap().entry(kind).or_default() += 1;
    }

    fn is_cut_off(&self, who: &str) -> bool {
        self.cut_off
            .lock()
            .unwrap()
            .get(who)
            .is_some_and(|until| mono_ns() < *until)
    }
}

/// The job ids a DynamoDB request names (its keys and items).
fn job_ids_in(request: &[u8]) -> Vec<String> {
    fn walk(v: &Value, out: &mut Vec<String>) {
        match v {
            Value::Object(m) => {
                for (k, v) in m {
                    match v["S"].as_str() {
                        Some(id) if k == "id" && id.parse::<JobId>().is_ok() => {
                            out.push(id.to_owned())
                        }
                        _ => walk(v, out),
                    }
                }
            }
            Value::Array(a) => a.iter().for_each(|v| walk(v, out)),
            _ => {}
        }
    }
    let mut out = Vec::new();
    if let Ok(v) = serde_json::from_slice::<Value>(request) {
        walk(&v, &mut out);
    }
    out
}

#[derive(Clone, Copy)]
enum Fault {
    NotApplied500,
    Throttled,
    Latency(u64),
    /// One call held longer than a worker's lease (3 s), then applied.
    PastLease,
    /// One call held longer than the submit function's budget, then applied.
    PastBudget,
    Dropped,
    Applied500,
    /// Every call of a worker cut off from AWS is dropped.
    CutOff,
}

/// A DynamoDB write that applied: the job's record as it stood after it.
#[derive(Debug, Clone)]
struct Write {
    at: i64,
    job: String,
    /// The status after the write; `BURIED` for an id retired as an orphan's.
    status: String,
    attempt: u32,
    worker: Option<String>,
    redrives: u32,
}

/// The machine's monotonic clock in ns: the handler's ledger uses the same one.
fn mono_ns() -> i64 {
    let t = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC).unwrap();
    t.tv_sec() * 1_000_000_000 + t.tv_nsec()
}

/// The writes a DynamoDB request applied, read from the request and its 200 answer: an
/// UpdateItem answers the record as it now is (sluice asks for ALL_NEW); a PutItem and a
/// transaction carry the items they wrote.
fn applied_writes(target: &str, request: &[u8], answer: &[u8], at: i64) -> Vec<Write> {
    let parse = |b: &[u8]| serde_json::from_slice::<Value>(b).unwrap_or(Value::Null);
    let of_item = |item: &Value| -> Option<Write> {
        let job = item["id"]["S"].as_str()?;
        job.parse::<JobId>().ok()?;
        let status = if item.get("buried").is_some() {
            "BURIED".to_owned()
        } else {
            item["status"]["S"].as_str()?.to_owned()
        };
        let num = |k: &str| {
            item[k]["N"]
                .as_str()
                .and_then(|n| n.parse().ok())
                .unwrap_or(0)
        };
        Some(Write {
            at,
            job: job.to_owned(),
            status,
            attempt: num("attempt"),
            worker: item["worker_id"]["S"].as_str().map(str::to_owned),
            redrives: num("redrives"),
        })
    };
    match target.rsplit('.').next().unwrap_or("") {
        "UpdateItem" => of_item(&parse(answer)["Attributes"]).into_iter().collect(),
        "PutItem" => of_item(&parse(request)["Item"]).into_iter().collect(),
        "TransactWriteItems" => parse(request)["TransactItems"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|t| of_item(&t["Put"]["Item"]))
            .collect(),
        _ => Vec::new(),
    }
}

fn error_answer(status: u16, kind: &str) -> hyper::Response<Full<Bytes>> {
    let body = json!({"__type": kind, "message": "injected by the chaos run"}).to_string();
    hyper::Response::builder()
        .status(status)
        .header("content-type", "application/x-amz-json-1.0")
        .header("x-amzn-query-error", format!("{kind};Sender"))
        .body(Full::new(Bytes::from(body)))
        .unwrap()
}

async fn forward(
    http: &reqwest::Client,
    upstream: &str,
    parts: &hyper::http::request::Parts,
    body: Bytes,
    faults: &Faults,
) -> Result<hyper::Response<Full<Bytes>>, reqwest::Error> {
    let request = body.clone();
    let url = format!(
        "{upstream}{}",
        parts.uri.path_and_query().map_or("/", |p| p.as_str())
    );
    let method = reqwest::Method::from_bytes(parts.method.as_str().as_bytes()).unwrap();
    let mut req = http.request(method, url).body(body);
    for (k, v) in &parts.headers {
        if k != "host" && k != "content-length" {
            req = req.header(k.as_str(), v.as_bytes());
        }
    }
    let resp = req.send().await?;
    let mut out = hyper::Response::builder().status(resp.status().as_u16());
    for (k, v) in resp.headers() {
        if k != "content-length" && k != "transfer-encoding" {
            out = out.header(k.as_str(), v.as_bytes());
        }
    }
    let status = resp.status().as_u16();
    let bytes = resp.bytes().await?;
    let target = parts
        .headers
        .get("x-amz-target")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if status == 200 && target.starts_with("DynamoDB") {
        let applied = applied_writes(target, &request, &bytes, mono_ns());
        faults.writes.lock().unwrap().extend(applied);
    }
    Ok(out.body(Full::new(bytes)).unwrap())
}

/// Serves a loopback proxy to `upstream` for `who` (a worker, or the functions) that injects
/// faults while `faults.on`.
async fn proxy(upstream: String, faults: Arc<Faults>, who: String) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let (http, upstream, faults, who) =
                (http.clone(), upstream.clone(), faults.clone(), who.clone());
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(
                    move |req: hyper::Request<hyper::body::Incoming>| {
                        let (http, upstream, faults, who) =
                            (http.clone(), upstream.clone(), faults.clone(), who.clone());
                        async move {
                            let (parts, body) = req.into_parts();
                            let body = body
                                .collect()
                                .await
                                .map(|b| b.to_bytes())
                                .unwrap_or_default();
                            let target = parts
                                .headers
                                .get("x-amz-target")
                                .and_then(|v| v.to_str().ok())
                                .unwrap_or("")
                                .to_owned();
                            let dynamo = target.starts_with("DynamoDB");
                            let fault = if faults.is_cut_off(&who) {
                                Some(Fault::CutOff)
                            } else if faults.on.load(Ordering::Relaxed) {
                                let mut rng = faults.rng.lock().unwrap();
                                let roll = rng.below(1000);
                                match roll {
                                    0..=29 => Some(Fault::NotApplied500),
                                    30..=54 => Some(Fault::Throttled),
                                    55..=99 => Some(Fault::Latency(100 + rng.below(500))),
                                    100..=114 => Some(Fault::Dropped),
                                    115..=139 => Some(Fault::Applied500),
                                    140..=143 => Some(Fault::PastLease),
                                    144..=145 => Some(Fault::PastBudget),
                                    _ => None,
                                }
                            } else {
                                None
                            };
                            let named = if fault.is_some() && dynamo {
                                job_ids_in(&body)
                            } else {
                                Vec::new()
                            };
                            let answer = match fault {
                                None => forward(&http, &upstream, &parts, body, &faults).await.ok(),
                                Some(Fault::PastLease) => {
                                    faults.count("a call held past the lease (4 s)");
                                    tokio::time::sleep(Duration::from_secs(4)).await;
                                    forward(&http, &upstream, &parts, body, &faults).await.ok()
                                }
                                Some(Fault::PastBudget) => {
                                    faults.count("a call held past the submit's budget (11 s)");
                                    tokio::time::sleep(Duration::from_secs(11)).await;
                                    forward(&http, &upstream, &parts, body, &faults).await.ok()
                                }
                                Some(Fault::NotApplied500) => {
                                    faults.count("5xx, not applied");
                                    Some(error_answer(500, "InternalFailure"))
                                }
                                Some(Fault::Throttled) => {
                                    faults.count("throttled");
                                    Some(if dynamo {
                                        error_answer(400, "com.amazonaws.dynamodb.v20120810#ProvisionedThroughputExceededException")
                                    } else {
                                        error_answer(400, "AWS.SimpleQueueService.RequestThrottled")
                                    })
                                }
                                Some(Fault::Latency(ms)) => {
                                    faults.count("added latency");
                                    tokio::time::sleep(Duration::from_millis(ms)).await;
                                    forward(&http, &upstream, &parts, body, &faults).await.ok()
                                }
                                Some(Fault::Dropped) => {
                                    faults.count("dropped connection");
                                    None
                                }
                                Some(Fault::CutOff) => {
                                    faults.count("calls dropped while their worker was cut off");
                                    None
                                }
                                Some(Fault::Applied500) => {
                                    faults.count("applied, then 500");
                                    let _ = forward(&http, &upstream, &parts, body, &faults).await;
                                    Some(error_answer(500, "InternalFailure"))
                                }
                            };
                            // Known once its answer is decided, after any hold: a write it let
                            // through is logged before it.
                            if !named.is_empty() {
                                let at = mono_ns();
                                let mut hits = faults.hits.lock().unwrap();
                                for job in named {
                                    hits.push((who.clone(), job, at));
                                }
                            }
                            // No answer closes the connection: the caller sees it dropped.
                            answer.ok_or("dropped")
                        }
                    },
                );
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    url
}

// ---- the run -----------------------------------------------------------------------------

struct Submitted {
    id: JobId,
    input: Value,
    /// The caller asked to cancel it (whatever the answer: a cancel answered with an error may
    /// still have been applied).
    cancel_asked: bool,
    /// Answered 200 CANCELLED at this attempt: no later attempt may run.
    cancelled_queued: Option<u32>,
    /// It was submitted with a deadline.
    deadline: bool,
    /// Its record was left as by a long outage, its message gone: the sweeper must end it.
    message_gone: bool,
}

/// Whether a job's end is one the handler, its input, its caller or an injected fault decided.
/// Attempts used up by lost workers are judged apart: each must have been lost to an injected
/// kill, stop or pause of the worker that held it.
fn explained(j: &Submitted, r: &sluice::job::JobRecord, crashed: bool) -> bool {
    let error = r.error.as_deref().unwrap_or("");
    if j.message_gone {
        return r.status == Status::Failed && error.contains("message left the queue");
    }
    match r.status {
        Status::Succeeded => true,
        Status::Cancelled => j.cancel_asked,
        Status::Expired => j.deadline && r.attempt == 0,
        Status::Failed => {
            // As the handler said it, or as the model server's answer carried it.
            error.ends_with("asked to fail permanently")
                || error.contains("worker was lost")
                || error.contains("asked to fail attempt")
                // Its attempts were spent (each lost attempt is checked for its injected cause
                // apart) and its message ran out of deliveries before a claim could say so.
                || (sluice::deadletter::is_dead_letter_error(error)
                    && r.attempts_used() >= r.max_attempts)
                // The handler's process was made to crash on its runs.
                || crashed
        }
        Status::Queued | Status::Running => false,
    }
}

fn expected(input: &Value) -> Value {
    let text = input["text"].as_str().unwrap_or("");
    json!({"echo": text, "words": text.split_whitespace().count(), "chars": text.chars().count()})
}

const WORDS: [&str; 8] = [
    "alpha", "beta", "gamma", "delta", "sluice", "queue", "worker", "lease",
];

fn job_input(rng: &mut Rng, longest_ms: u64) -> Value {
    let words: Vec<&str> = (0..1 + rng.below(5))
        .map(|_| WORDS[rng.below(8) as usize])
        .collect();
    let sleep_ms = match rng.below(10) {
        0..=6 => rng.below(300),
        7..=8 => 500 + rng.below(1500),
        _ => longest_ms / 2 + rng.below(longest_ms / 2 + 1),
    };
    let mut input = json!({"text": words.join(" "), "sleep_ms": sleep_ms});
    if rng.chance(0.15) {
        input["fail_attempts"] = json!(1);
    }
    if rng.chance(0.05) {
        input["fail"] = json!("permanent");
    }
    input
}

/// Whether Debian's faketime is here (`make setup` installs it).
fn have_faketime() -> bool {
    std::process::Command::new("faketime")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

/// The worker the run skews: its clock runs 90 s ahead.
const SKEWED: usize = 2;

/// The worker that runs in HTTP mode, beside a model server of its own (as a sidecar in its
/// task): the rest run the handler as child processes.
const HTTP_MODE: usize = 3;

/// One worker of the run with what runs beside it, as one ECS task would hold them.
struct Member {
    n: usize,
    worker: WorkerProcess,
    /// The HTTP-mode worker's model server, and its port.
    server: Option<(std::process::Child, u16)>,
}

/// Where the run keeps its ledger and the file that makes handlers crash.
#[derive(Clone)]
struct Paths {
    /// Each worker's proxy to AWS, by its number.
    proxies: Vec<String>,
    log: String,
    crash: String,
}

fn start_model_server(port: u16, name: &str, log: &str) -> std::process::Child {
    std::process::Command::new("python3")
        .arg(format!(
            "{}/tests/fixtures/chaos_model_server.py",
            env!("CARGO_MANIFEST_DIR")
        ))
        .arg(port.to_string())
        .env("CHAOS_LOG", log)
        .env("CHAOS_WORKER", name)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("the model server starts")
}

impl Member {
    /// A worker as the run starts (and restarts) it: the shipped binary, in child-process mode
    /// (one of them with its clock ahead), or in HTTP mode with its model server.
    fn start(s: &Stack, n: usize, paths: &Paths, port: u16) -> Member {
        let name = format!("chaos-{n}");
        let skewed = n == SKEWED && have_faketime();
        let handler = format!(
            "{}/tests/fixtures/chaos_handler.py",
            env!("CARGO_MANIFEST_DIR")
        );
        // The skew is the worker's: its handler runs on the machine's own clock (faketime's
        // library would otherwise come with the environment it inherits).
        let command = if skewed {
            json!([
                "env",
                "-u",
                "LD_PRELOAD",
                "-u",
                "FAKETIME",
                "python3",
                handler
            ])
        } else {
            json!(["python3", handler])
        }
        .to_string();
        let model_url = format!("http://127.0.0.1:{port}");
        let mut env = vec![
            ("AWS_ENDPOINT_URL", paths.proxies[n].as_str()),
            ("SLUICE_CONCURRENCY", "2"),
            ("SLUICE_DRAIN_SECONDS", "2"),
            ("SLUICE_STARTUP_SECONDS", "20"),
            ("CHAOS_LOG", paths.log.as_str()),
            ("CHAOS_WORKER", name.as_str()),
            ("CHAOS_CRASH_FILE", paths.crash.as_str()),
            // The ledger's times come from the monotonic clock, which faketime leaves alone.
            ("FAKETIME_DONT_FAKE_MONOTONIC", "1"),
        ];
        let server = if n == HTTP_MODE {
            env.push(("SLUICE_HANDLER", "http"));
            env.push(("SLUICE_MODEL_URL", model_url.as_str()));
            Some((start_model_server(port, &name, &paths.log), port))
        } else {
            env.push(("SLUICE_HANDLER", "process"));
            env.push(("SLUICE_COMMAND", command.as_str()));
            None
        };
        let worker = if skewed {
            s.worker_under(&name, &env, &["faketime", "-f", "+90s"])
        } else {
            s.worker(&name, &env)
        };
        Member { n, worker, server }
    }

    fn name(&self) -> String {
        format!("chaos-{}", self.n)
    }

    /// The worker's process, what it started, and its model server: everything its task holds.
    fn pids(&self) -> Vec<u32> {
        let pid = self.worker.child.id();
        let mut pids = vec![pid];
        pids.extend(descendants(pid));
        if let Some((server, _)) = &self.server {
            pids.push(server.id());
        }
        pids
    }

    /// Ends everything the task holds, as its end does.
    fn end(&mut self) {
        let pids = self.pids();
        self.worker.kill();
        signal_pids("KILL", &pids);
        if let Some((server, _)) = &mut self.server {
            let _ = server.wait();
        }
    }

    /// Kills the model server (the worker stays): it is started again with `restart_server`.
    fn kill_server(&mut self) -> bool {
        match &mut self.server {
            Some((server, _)) => {
                let _ = server.kill();
                let _ = server.wait();
                true
            }
            None => false,
        }
    }

    fn restart_server(&mut self, log: &str) {
        let name = self.name();
        if let Some((server, port)) = &mut self.server {
            *server = start_model_server(*port, &name, log);
        }
    }
}

/// Every process below `pid` (its handler processes, in process groups of their own).
fn descendants(pid: u32) -> Vec<u32> {
    let mut parent_of: Vec<(u32, u32)> = Vec::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(p) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        // The fields after the command name, which is in parentheses and may hold spaces.
        let Some(rest) = stat.rfind(')').map(|i| &stat[i + 1..]) else {
            continue;
        };
        if let Some(ppid) = rest.split_whitespace().nth(1).and_then(|v| v.parse().ok()) {
            parent_of.push((p, ppid));
        }
    }
    let mut out = Vec::new();
    let mut frontier = vec![pid];
    while let Some(p) = frontier.pop() {
        for (child, _) in parent_of.iter().filter(|(_, pp)| *pp == p) {
            out.push(*child);
            frontier.push(*child);
        }
    }
    out
}

fn signal_pids(sig: &str, pids: &[u32]) {
    if pids.is_empty() {
        return;
    }
    let _ = std::process::Command::new("kill")
        .arg(format!("-{sig}"))
        .args(pids.iter().map(u32::to_string))
        .stderr(std::process::Stdio::null())
        .status();
}

/// A fault the run applied to one worker, on the monotonic clock.
#[derive(Debug, Clone)]
struct Injected {
    worker: String,
    kind: &'static str,
    from: i64,
    to: i64,
}

/// How a submit went, after a careful client's retries.
enum Submit {
    Accepted(JobId),
    /// Still 5xx or 429 after the retries.
    Refused,
    /// A 4xx for a valid job: the API's fault.
    Rejected(u16, Value),
}

/// Calls the API as its function would run: cut at the function's deployed timeout, as Lambda
/// does (API Gateway then answers a body-less 5xx). `None` when cut.
async fn call(api: &Api, req: lambda_http::Request, limit: Duration) -> Option<(u16, Value)> {
    tokio::time::timeout(limit, api.handle(req))
        .await
        .ok()
        .map(decode)
}

async fn submit(api: &Api, rng: &mut Rng, input: &Value, deadline: bool, cut: &mut u64) -> Submit {
    let mut body = json!({"input": input});
    if deadline {
        body["deadline_seconds"] = json!(2 + rng.below(4));
    }
    let key = rng.chance(0.5).then(|| format!("chaos-{}", rng.next()));
    // A careful client retries a 5xx (with its key, when it has one) a few times.
    for _ in 0..4 {
        let req = post_json(ALICE, &body.to_string(), key.as_deref());
        let Some((status, v)) = call(api, req, sluice::limits::SUBMIT_FUNCTION_TIMEOUT).await
        else {
            *cut += 1;
            continue;
        };
        if status == 202 || status == 200 {
            return match v["id"].as_str().and_then(|s| s.parse().ok()) {
                Some(id) => Submit::Accepted(id),
                None => Submit::Rejected(status, v),
            };
        }
        if status < 500 && status != 429 {
            return Submit::Rejected(status, v);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Submit::Refused
}

/// One run of the handler, from the ledger.
#[derive(Debug, Clone)]
struct Run {
    attempt: u32,
    worker: String,
    start: i64,
    /// When it ended, by the ledger, or by what ended it from outside (its worker killed, the
    /// attempt ended in the table): `None` if nothing did.
    end: Option<i64>,
    outcome: Option<String>,
}

/// The ledger, by job.
fn read_ledger(text: &str) -> HashMap<String, Vec<Run>> {
    let mut runs: HashMap<String, Vec<Run>> = HashMap::new();
    for line in text.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        let [kind, job, attempt, worker, _pid, at, outcome] = f[..] else {
            continue;
        };
        let (Ok(attempt), Ok(at)) = (attempt.parse::<u32>(), at.parse::<i64>()) else {
            continue;
        };
        let of_job = runs.entry(job.to_owned()).or_default();
        match kind {
            "start" => of_job.push(Run {
                attempt,
                worker: worker.to_owned(),
                start: at,
                end: None,
                outcome: None,
            }),
            "end" | "crash" => {
                if let Some(r) = of_job
                    .iter_mut()
                    .rev()
                    .find(|r| r.attempt == attempt && r.worker == worker && r.end.is_none())
                {
                    r.end = Some(at);
                    r.outcome = Some(if kind == "crash" { "crash" } else { outcome }.to_owned());
                }
            }
            _ => {}
        }
    }
    runs
}

fn main() -> ExitCode {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(run())
}

async fn run() -> ExitCode {
    let jobs = setting("SLUICE_CHAOS_JOBS", 30) as usize;
    let seconds = setting("SLUICE_CHAOS_SECONDS", 25);
    let longest_ms = setting("SLUICE_CHAOS_LONGEST_MS", 3_000);
    let seed = setting("SLUICE_CHAOS_SEED", 7).max(1);
    let poison_n = setting("SLUICE_CHAOS_DLQ_POISON", 200) as usize;
    let workers_n = 4;
    let skew = have_faketime();
    println!(
        "chaos: {jobs} jobs, {seconds} s of faults, jobs up to {longest_ms} ms, {workers_n} workers{} (one in HTTP mode), {poison_n} poison messages in the dead-letter queue, seed {seed}",
        if skew { " (one 90 s ahead)" } else { " (faketime missing: no clock skew)" }
    );
    let s = Stack::new("chaos").await;
    let faults = Arc::new(Faults {
        on: AtomicBool::new(true),
        rng: Mutex::new(Rng(seed ^ 0x9E37_79B9_7F4A_7C15)),
        counts: Mutex::new(BTreeMap::new()),
        writes: Mutex::new(Vec::new()),
        hits: Mutex::new(Vec::new()),
        cut_off: Mutex::new(HashMap::new()),
    });
    let upstream = s.aws.endpoint_url().unwrap().to_owned();
    let proxy_url = proxy(upstream.clone(), faults.clone(), "functions".into()).await;
    let mut proxies = Vec::new();
    for n in 0..workers_n {
        proxies.push(proxy(upstream.clone(), faults.clone(), format!("chaos-{n}")).await);
    }
    let dir = std::env::temp_dir();
    let log = dir.join(format!("sluice-chaos-{}.log", std::process::id()));
    let crash_file = dir.join(format!("sluice-chaos-{}.crash", std::process::id()));
    let _ = std::fs::remove_file(&crash_file);
    std::fs::write(&log, "").unwrap();
    let (log_path, crash_path) = (log.display().to_string(), crash_file.display().to_string());

    // The submit path, the reconciler and the sweeper through the proxy, as the functions reach
    // AWS.
    let faulty = aws_config::defaults(BehaviorVersion::latest())
        .endpoint_url(&proxy_url)
        .region(Region::new("us-east-1"))
        .credentials_provider(Credentials::new("test", "test", None, None, "chaos"))
        .load()
        .await;
    let api = Api::new(
        JobStore::from_sdk(&faulty, &s.res.table_name),
        Some(JobQueue::from_sdk(&faulty, &s.res.queue_url)),
        support::api_config(&s.res),
    );
    let faulty_store = JobStore::from_sdk(&faulty, &s.res.table_name).with_retention(s.retention);
    let mut dead = DeadLetters::new(
        JobQueue::from_sdk(&faulty, &s.res.dlq_url),
        faulty_store.clone(),
        s.retention,
    )
    .with_jobs(JobQueue::from_sdk(&faulty, &s.res.queue_url));
    dead.pass_time = Duration::from_secs(15);
    let sweeper = Sweeper {
        store: faulty_store.clone(),
        queues: vec![
            JobQueue::from_sdk(&faulty, &s.res.queue_url),
            JobQueue::from_sdk(&faulty, &s.res.dlq_url),
        ],
        budget: Duration::from_secs(10),
    };

    // Hundreds (or thousands) of poison messages wait in the dead-letter queue: the reconciler
    // must see past them.
    let sqs = aws_sdk_sqs::Client::new(&s.aws);
    for chunk in (0..poison_n).collect::<Vec<_>>().chunks(10) {
        let entries = chunk
            .iter()
            .map(|i| {
                aws_sdk_sqs::types::SendMessageBatchRequestEntry::builder()
                    .id(i.to_string())
                    .message_body(format!("poison #{i}"))
                    .build()
                    .unwrap()
            })
            .collect();
        sqs.send_message_batch()
            .queue_url(&s.res.dlq_url)
            .set_entries(Some(entries))
            .send()
            .await
            .unwrap();
    }

    let paths = Paths {
        proxies,
        log: log_path.clone(),
        crash: crash_path.clone(),
    };
    // The HTTP-mode worker's model server keeps one port across its restarts.
    let server_port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut workers: Vec<Member> = (0..workers_n)
        .map(|n| Member::start(&s, n, &paths, server_port))
        .collect();
    // When the killed model server comes back.
    let mut server_back_at: Option<Instant> = None;
    let mut injected: Vec<Injected> = Vec::new();
    // When each worker's pause ends (a paused worker is left alone until then).
    let mut paused_until: Vec<Option<Instant>> = vec![None; workers_n];

    // The reconciler and the sweeper run beside the callers, as the backlog function does.
    let stop_background = Arc::new(AtomicBool::new(false));
    let background = {
        let (dead, sweeper, stop) = (dead.clone(), sweeper.clone(), stop_background.clone());
        tokio::spawn(async move {
            let (mut passes, mut swept) = (0u64, 0u64);
            while !stop.load(Ordering::Relaxed) {
                if dead.reconcile().await.is_ok() {
                    passes += 1;
                }
                if let Ok(done) = sweeper.sweep(sluice::time::Millis::now()).await {
                    swept += done.ended.len() as u64;
                }
                tokio::time::sleep(Duration::from_secs(2)).await;
            }
            (passes, swept)
        })
    };

    let started = Instant::now();
    let mut rng = Rng(seed);
    let mut submitted: Vec<Submitted> = Vec::new();
    let (mut refused, mut rejected, mut cut) = (0u64, 0u64, 0u64);
    let mut events: BTreeMap<&'static str, u64> = BTreeMap::new();
    let mut next_chaos = Instant::now() + Duration::from_secs(2);
    let pace = Duration::from_secs(seconds) * 6 / 10 / jobs.max(1) as u32;
    let crash_window = Duration::from_secs(seconds) / 3;
    let mut crash_on: Option<Instant> = None;
    // Jobs whose message is gone, as a long outage leaves them: submitted 15 days ago.
    for _ in 0..(jobs / 10).max(2) {
        let id = JobId::generate();
        let long_ago = sluice::time::Millis(sluice::time::Millis::now().0 - 15 * 86_400_000);
        let job = sluice::job::JobRecord::queued(
            id.clone(),
            sluice::job::Owner::new(format!("iam:{ALICE}")),
            long_ago,
            None,
            3,
            2,
        );
        s.store.create(&job, s.retention, None).await.unwrap();
        submitted.push(Submitted {
            id,
            input: json!({}),
            cancel_asked: false,
            cancelled_queued: None,
            deadline: false,
            message_gone: true,
        });
        *events.entry("jobs whose message was gone").or_default() += 1;
    }
    while started.elapsed() < Duration::from_secs(seconds) {
        // For a few seconds, the handler crashes its process on every run.
        // It opens once, however long a turn of this loop takes, and stays open 4 s.
        match crash_on {
            None if started.elapsed() >= crash_window => {
                std::fs::write(&crash_file, "").unwrap();
                crash_on = Some(Instant::now());
                *events
                    .entry("crash windows (every run crashes its process, 4 s)")
                    .or_default() += 1;
            }
            Some(at) if at.elapsed() >= Duration::from_secs(4) && crash_file.exists() => {
                let _ = std::fs::remove_file(&crash_file);
            }
            _ => {}
        }
        if submitted.len() + ((refused + rejected) as usize) < jobs {
            let input = job_input(&mut rng, longest_ms);
            let deadline = rng.chance(0.1);
            match submit(&api, &mut rng, &input, deadline, &mut cut).await {
                Submit::Accepted(id) => {
                    let (mut cancel_asked, mut cancelled_queued) = (false, None);
                    if rng.chance(0.15) {
                        *events.entry("cancels asked").or_default() += 1;
                        cancel_asked = true;
                        let req = delete(ALICE, &format!("/jobs/{id}"));
                        match call(&api, req, sluice::limits::STATUS_FUNCTION_TIMEOUT).await {
                            Some((200, v)) if v["status"] == "CANCELLED" => {
                                cancelled_queued = v["attempt"].as_u64().map(|a| a as u32);
                            }
                            Some(_) => {}
                            None => cut += 1,
                        }
                    }
                    submitted.push(Submitted {
                        id,
                        input,
                        cancel_asked,
                        cancelled_queued,
                        deadline,
                        message_gone: false,
                    });
                }
                Submit::Refused => refused += 1,
                Submit::Rejected(status, v) => {
                    println!("  a valid job was rejected: {status} {v}");
                    rejected += 1;
                }
            }
        }
        for (n, until) in paused_until.iter_mut().enumerate() {
            if until.is_some_and(|u| Instant::now() >= u) {
                signal_pids("CONT", &workers[n].pids());
                *until = None;
            }
        }
        if server_back_at.is_some_and(|at| Instant::now() >= at) {
            workers[HTTP_MODE].restart_server(&paths.log);
            server_back_at = None;
        }
        if Instant::now() >= next_chaos {
            let n = rng.below(workers_n as u64) as usize;
            let name = format!("chaos-{n}");
            let server_down = n == HTTP_MODE && server_back_at.is_some();
            if paused_until[n].is_none() && !server_down {
                let now = mono_ns();
                match rng.below(if n == HTTP_MODE { 5 } else { 4 }) {
                    0 => {
                        // As a container dies: the worker and what runs beside it at once.
                        workers[n].end();
                        injected.push(Injected {
                            worker: name,
                            kind: "kill",
                            from: now,
                            to: now,
                        });
                        *events.entry("workers killed (SIGKILL)").or_default() += 1;
                        workers[n] = Member::start(&s, n, &paths, server_port);
                    }
                    1 => {
                        let pids = workers[n].pids();
                        workers[n].worker.signal("TERM");
                        *events.entry("workers stopped (SIGTERM)").or_default() += 1;
                        let _ = tokio::time::timeout(
                            Duration::from_secs(20),
                            workers[n].worker.exited(Duration::from_secs(20)),
                        )
                        .await;
                        // What it left running goes with it, as its task's end takes it.
                        signal_pids("KILL", &pids);
                        workers[n].end();
                        injected.push(Injected {
                            worker: name,
                            kind: "stop",
                            from: now,
                            to: mono_ns(),
                        });
                        workers[n] = Member::start(&s, n, &paths, server_port);
                    }
                    3 => {
                        // Cut off from AWS for longer than its lease (every call it makes is
                        // dropped), the worker and its handler left running: it must stop its
                        // runs before other workers take their jobs over.
                        let cut = Duration::from_millis(3_500 + rng.below(3_000));
                        let to = now + cut.as_nanos() as i64;
                        faults.cut_off.lock().unwrap().insert(name.clone(), to);
                        injected.push(Injected {
                            worker: name,
                            kind: "cut off from AWS",
                            from: now,
                            to,
                        });
                        *events
                            .entry("workers cut off from AWS past their lease")
                            .or_default() += 1;
                    }
                    4 => {
                        // The model server dies and comes back a few seconds later; its worker
                        // stays.
                        workers[n].kill_server();
                        injected.push(Injected {
                            worker: name,
                            kind: "model server killed",
                            from: now,
                            to: now,
                        });
                        server_back_at =
                            Some(Instant::now() + Duration::from_millis(2_000 + rng.below(3_000)));
                        *events
                            .entry("model servers killed, then restarted")
                            .or_default() += 1;
                    }
                    _ => {
                        // Frozen past its lease (3 s), with what runs beside it, then resumed.
                        let pause = Duration::from_millis(4_000 + rng.below(3_000));
                        let pids = workers[n].pids();
                        signal_pids("STOP", &pids);
                        paused_until[n] = Some(Instant::now() + pause);
                        injected.push(Injected {
                            worker: name,
                            kind: "pause",
                            from: now,
                            to: now + pause.as_nanos() as i64,
                        });
                        *events
                            .entry("workers paused past their lease (SIGSTOP)")
                            .or_default() += 1;
                    }
                }
            }
            // Deliveries the pipeline must take in its stride.
            if let Some(j) = submitted.get(rng.below(submitted.len() as u64) as usize) {
                if !j.message_gone {
                    let raw =
                        serde_json::value::RawValue::from_string(j.input.to_string()).unwrap();
                    let _ = s
                        .queue
                        .send(Envelope::new(j.id.clone(), &raw).encode().unwrap())
                        .await;
                    *events.entry("duplicate deliveries injected").or_default() += 1;
                }
            }
            let _ = s.queue.send(format!("poison {}", rng.next())).await;
            *events.entry("poison messages injected").or_default() += 1;
            let raw = serde_json::value::RawValue::from_string("{}".into()).unwrap();
            let _ = s
                .queue
                .send(Envelope::new(JobId::generate(), &raw).encode().unwrap())
                .await;
            *events
                .entry("messages without records injected")
                .or_default() += 1;
            next_chaos = Instant::now() + Duration::from_millis(2_000 + rng.below(3_000));
        }
        tokio::time::sleep(pace.min(Duration::from_millis(500))).await;
    }

    // Quiescence: no more faults; every accepted job must end.
    faults.on.store(false, Ordering::Relaxed);
    faults.cut_off.lock().unwrap().clear();
    let _ = std::fs::remove_file(&crash_file);
    for (n, until) in paused_until.iter_mut().enumerate() {
        if until.take().is_some() {
            signal_pids("CONT", &workers[n].pids());
        }
    }
    if server_back_at.take().is_some() {
        workers[HTTP_MODE].restart_server(&paths.log);
    }
    let calm = Instant::now();
    let cap = Duration::from_secs(150) + Duration::from_millis(longest_ms * 4);
    let mut records = HashMap::new();
    loop {
        records.clear();
        for j in &submitted {
            if let Ok(Some(r)) = s.store.get(&j.id).await {
                records.insert(j.id.clone(), r);
            }
        }
        let open = submitted
            .iter()
            .filter(|j| !records.get(&j.id).is_some_and(|r| r.status.is_terminal()))
            .count();
        if open == 0 || calm.elapsed() > cap {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let quiescence = calm.elapsed();
    if calm.elapsed() > cap {
        let depth = |url: String| {
            let q = JobQueue::from_sdk(&s.aws, url);
            async move { q.depth().await.ok() }
        };
        println!(
            "  no quiescence: the jobs queue holds {:?}, the dead-letter queue {:?}",
            depth(s.res.queue_url.clone()).await,
            depth(s.res.dlq_url.clone()).await
        );
    }
    stop_background.store(true, Ordering::Relaxed);
    let (passes, swept) = background.await.unwrap_or_default();
    // Every worker and what it runs, as the containers end.
    for w in &mut workers {
        w.end();
    }
    drop(workers);

    // ---- the checks, from the ledger, the write log and the faults injected -----------------
    let ledger_text = std::fs::read_to_string(&log).unwrap_or_default();
    let mut ledger = read_ledger(&ledger_text);
    let writes = faults.writes.lock().unwrap().clone();
    let mut writes_of: HashMap<&str, Vec<&Write>> = HashMap::new();
    for w in &writes {
        writes_of.entry(w.job.as_str()).or_default().push(w);
    }
    for list in writes_of.values_mut() {
        list.sort_by_key(|w| w.at);
    }
    // A run with no end in the ledger ended when its worker was killed or stopped, or when its
    // attempt ended in the table, whichever came first.
    for (job, runs) in ledger.iter_mut() {
        for r in runs.iter_mut().filter(|r| r.end.is_none()) {
            let killed = injected
                .iter()
                .filter(|i| i.worker == r.worker && i.kind != "pause" && i.to >= r.start)
                .map(|i| i.to)
                .min();
            let ended = writes_of.get(job.as_str()).and_then(|ws| {
                ws.iter()
                    .find(|w| w.at >= r.start && w.attempt == r.attempt && w.status != "RUNNING")
                    .map(|w| w.at)
            });
            r.end = match (killed, ended) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
        }
    }

    let mut by_status: BTreeMap<&'static str, u64> = BTreeMap::new();
    let (mut open, mut over_completed, mut wrong, mut cancelled_ran, mut unexplained) =
        (0, 0, 0, 0, 0);
    let (mut overlapping, mut unproduced, mut lost_unexplained, mut terminal_left) = (0, 0, 0, 0);
    let (mut lost_total, mut lost_to_aws, mut unwritten) = (0, 0, 0);
    let hits = faults.hits.lock().unwrap().clone();
    let paused_past_lease = |worker: &str, from: i64, to: i64| {
        injected
            .iter()
            .any(|i| i.kind == "pause" && i.worker == worker && i.from <= to && i.to >= from)
    };
    for j in &submitted {
        let key = j.id.to_string();
        let runs = ledger.remove(&key).unwrap_or_default();
        let job_writes = writes_of.get(key.as_str()).cloned().unwrap_or_default();

        // Terminal means terminal: once a write ended the job, no write moves it, except an
        // operator's redrive, which the record counts.
        let mut last: Option<&Write> = None;
        for w in &job_writes {
            if let Some(prev) = last {
                let ended = prev.status.parse::<Status>().is_ok_and(|s| s.is_terminal());
                if ended && w.status != prev.status && w.redrives <= prev.redrives {
                    terminal_left += 1;
                    println!("  {key} left {} for {}: {w:?}", prev.status, w.status);
                }
            }
            last = Some(w);
        }

        // Two runs of one job overlapping in time: only when the first one's worker was paused
        // past its lease (and then the table refuses its outcome).
        for (i, a) in runs.iter().enumerate() {
            for b in &runs[i + 1..] {
                let a_end = a.end.unwrap_or(i64::MAX);
                let b_end = b.end.unwrap_or(i64::MAX);
                if a.start < b_end && b.start < a_end {
                    let (first, _) = if a.attempt <= b.attempt {
                        (a, b)
                    } else {
                        (b, a)
                    };
                    if !paused_past_lease(&first.worker, first.start, first.end.unwrap_or(i64::MAX))
                    {
                        overlapping += 1;
                        println!("  {key}: runs overlapped: {a:?} and {b:?}");
                    }
                }
            }
        }

        // Attempts lost (claimed, then neither ended nor handed back before the next claim):
        // each must have been lost to an injected kill, stop or pause of the worker holding it.
        let claims: Vec<&&Write> = job_writes.iter().filter(|w| w.status == "RUNNING").fold(
            Vec::new(),
            |mut acc: Vec<&&Write>, w| {
                if acc.last().is_none_or(|l| l.attempt < w.attempt) {
                    acc.push(w);
                }
                acc
            },
        );
        for (i, c) in claims.iter().enumerate() {
            let next = claims.get(i + 1).map_or(i64::MAX, |n| n.at);
            let ended = job_writes.iter().any(|w| {
                w.at > c.at && w.at <= next && w.attempt == c.attempt && w.status != "RUNNING"
            });
            if ended || next == i64::MAX {
                continue;
            }
            // Its run ended (the attempt was spent by the run itself), but its end could not be
            // written before the lease lapsed (AWS faults): not a worker lost.
            let ran_out = runs.iter().any(|r| {
                r.attempt == c.attempt
                    && matches!(
                        r.outcome.as_deref(),
                        Some("ok" | "retry" | "permanent" | "stopped")
                    )
            });
            if ran_out {
                unwritten += 1;
                continue;
            }
            lost_total += 1;
            let worker = c.worker.as_deref().unwrap_or("");
            let cause = injected
                .iter()
                .any(|x| x.worker == worker && x.to >= c.at && x.from <= next);
            // Or the calls its worker made about this job failed (its claim's answer, its
            // heartbeats, its end or hand-back), so that the lease lapsed under it.
            let aws = || {
                hits.iter()
                    .any(|(w, job, at)| w == worker && *job == key && *at >= c.at && *at <= next)
            };
            if !cause && aws() {
                lost_to_aws += 1;
            }
            if !cause && !aws() {
                lost_unexplained += 1;
                println!(
                    "  {key}: attempt {} on {worker} was lost with no fault injected on its worker",
                    c.attempt
                );
                println!("    its writes: {job_writes:?}");
                println!("    its runs: {runs:?}");
                let on_worker: Vec<_> = injected.iter().filter(|x| x.worker == worker).collect();
                println!("    faults on {worker}: {on_worker:?}");
                let on_calls: Vec<_> = hits
                    .iter()
                    .filter(|(w, job, _)| w == worker && *job == key)
                    .collect();
                println!("    AWS faults on {worker}'s calls about it: {on_calls:?}");
            }
        }

        let Some(r) = records.get(&j.id) else {
            open += 1;
            println!("  lost: {} has no record", j.id);
            continue;
        };
        if !r.status.is_terminal() {
            open += 1;
            println!("  not terminal: {r:?}");
            println!("    its writes: {job_writes:?}");
            println!("    its runs: {runs:?}");
            continue;
        }
        *by_status.entry(r.status.as_str()).or_default() += 1;
        let crashed = runs.iter().any(|x| x.outcome.as_deref() == Some("crash"));
        if !explained(j, r, crashed) {
            unexplained += 1;
            println!(
                "  ended {} for no reason its handler, input, caller or a fault gave: {r:?}",
                r.status
            );
            println!("    its writes: {job_writes:?}");
            println!("    its runs: {runs:?}");
        }
        if let Some(at) = j.cancelled_queued {
            if runs.iter().any(|x| x.attempt > at) {
                cancelled_ran += 1;
                println!("  cancelled while queued at attempt {at}, yet ran: {runs:?}");
            }
        }
        // Every completed run belongs to an attempt the record counts, and no attempt completed
        // twice.
        let mut done: Vec<u32> = runs
            .iter()
            .filter(|x| x.outcome.as_deref() == Some("ok"))
            .map(|x| x.attempt)
            .collect();
        let n_done = done.len();
        done.sort_unstable();
        done.dedup();
        if done.len() < n_done || done.iter().any(|a| *a > r.attempt) {
            over_completed += 1;
            println!(
                "  runs {runs:?} against {} recorded attempts: {r:?}",
                r.attempt
            );
        }
        if r.status == Status::Succeeded {
            if !done.contains(&r.attempt) {
                unproduced += 1;
                println!(
                    "  {key}: a result no run of attempt {} produced: {runs:?}",
                    r.attempt
                );
            }
            let got: Value =
                serde_json::from_str(r.result.as_deref().unwrap_or("null")).unwrap_or(Value::Null);
            if got != expected(&j.input) {
                wrong += 1;
                println!("  wrong result for {}: {got} (input {})", j.id, j.input);
            }
        }
    }
    // Every page of the table.
    let table_items: Vec<_> = aws_sdk_dynamodb::Client::new(&s.aws)
        .scan()
        .table_name(&s.res.table_name)
        .into_paginator()
        .items()
        .send()
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .filter_map(Result::ok)
        .collect();
    let known: std::collections::HashSet<String> =
        submitted.iter().map(|j| j.id.to_string()).collect();
    let unanswered = table_items
        .iter()
        .filter(|i| !i.contains_key("buried"))
        .filter_map(|i| i.get("id").and_then(|v| v.as_s().ok()))
        .filter(|id| id.parse::<JobId>().is_ok() && !known.contains(*id))
        .count();

    let mut rows: Vec<(String, String, bool)> = Vec::new();
    let mut row = |name: &str, value: String, must_be_zero: bool| {
        rows.push((name.to_owned(), value, must_be_zero))
    };
    row("jobs accepted", submitted.len().to_string(), false);
    row(
        "submits refused after a client's retries",
        refused.to_string(),
        false,
    );
    for (status, n) in &by_status {
        row(&format!("  ended {status}"), n.to_string(), false);
    }
    row(
        "runs in the ledger",
        ledger_text
            .lines()
            .filter(|l| l.starts_with("start "))
            .count()
            .to_string(),
        false,
    );
    row(
        "  of them in HTTP mode (by the model server)",
        ledger_text
            .lines()
            .filter(|l| l.starts_with("start ") && l.contains(&format!(" chaos-{HTTP_MODE} ")))
            .count()
            .to_string(),
        false,
    );
    row(
        "attempts whose run ended but whose end was not written in time",
        unwritten.to_string(),
        false,
    );
    row(
        "DynamoDB writes applied (the proxy's log)",
        writes.len().to_string(),
        false,
    );
    row(
        "attempts lost (their worker's lease lapsed)",
        lost_total.to_string(),
        false,
    );
    row(
        "  of them to AWS faults on their worker's calls about the job",
        lost_to_aws.to_string(),
        false,
    );
    row(
        "valid submits rejected with a 4xx",
        rejected.to_string(),
        true,
    );
    row(
        "calls cut at their function's timeout",
        cut.to_string(),
        true,
    );
    row("jobs not terminal", open.to_string(), true);
    row(
        "handler runs not accounted for by a recorded attempt",
        over_completed.to_string(),
        true,
    );
    row(
        "runs of one job overlapping (not after a pause past the lease)",
        overlapping.to_string(),
        true,
    );
    row(
        "stored results that no run produced",
        unproduced.to_string(),
        true,
    );
    row(
        "results that differ from what the handler returned",
        wrong.to_string(),
        true,
    );
    row(
        "jobs cancelled while queued that ran",
        cancelled_ran.to_string(),
        true,
    );
    row(
        "attempts lost with no fault injected on their worker or its calls",
        lost_unexplained.to_string(),
        true,
    );
    row(
        "jobs ended for a reason no handler, input, caller or fault gave",
        unexplained.to_string(),
        true,
    );
    row(
        "terminal statuses left (not by a recorded redrive)",
        terminal_left.to_string(),
        true,
    );
    row(
        "job records no submit answered for",
        unanswered.to_string(),
        true,
    );
    for (k, n) in &events {
        row(k, n.to_string(), false);
    }
    row(
        "reconciler passes (through the proxy)",
        passes.to_string(),
        false,
    );
    row(
        "jobs the sweeper ended (through the proxy)",
        swept.to_string(),
        false,
    );
    for (k, n) in faults.counts.lock().unwrap().iter() {
        row(&format!("AWS faults injected: {k}"), n.to_string(), false);
    }
    row(
        "time to quiescence after the faults stopped",
        format!("{:.1} s", quiescence.as_secs_f64()),
        false,
    );
    let width = rows.iter().map(|r| r.0.len()).max().unwrap_or(10);
    println!("{:<width$}  value", "chaos run");
    println!("{}", "-".repeat(width + 12));
    let mut failed = 0;
    for (name, value, must_be_zero) in &rows {
        let mark = if *must_be_zero {
            if value == "0" {
                "(must be 0)"
            } else {
                failed += 1;
                "(must be 0: FAILED)"
            }
        } else {
            ""
        };
        println!("{name:<width$}  {value} {mark}");
    }
    let _ = std::fs::remove_file(&log);
    let checks = rows.iter().filter(|r| r.2).count();
    println!("chaos: {} passed, {failed} failed", checks - failed);
    if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
