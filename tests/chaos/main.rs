//! The chaos run: the local pipeline under faults, checked job by job at the end.
//!
//! Several `sluice-worker` processes (child-process mode, the Python helper) run jobs of mixed
//! lengths, with retryable and permanent failures, cancels and deadlines, while at once:
//! - workers are killed (SIGKILL) or stopped (SIGTERM) at random moments, and restarted;
//! - duplicate deliveries, poison messages and messages without records are injected;
//! - AWS faults are injected between sluice and the emulator by a loopback proxy that every
//!   worker and the submit path talk to (`AWS_ENDPOINT_URL`): 5xx answers, throttling, added
//!   latency, dropped connections, and writes applied but answered with an error. A proxy, not
//!   an SDK interceptor, because the workers are real processes running the shipped binary.
//!
//! Then the faults stop, and once every job has ended (quiescence) each is checked against what
//! was submitted. The run prints one table and fails when a "must be 0" row is not.
//!
//! `make chaos` runs it at full size; `make test` (through `cargo test`) runs a short version.
//! Bounded in jobs and time; loopback only. Size: SLUICE_CHAOS_JOBS, SLUICE_CHAOS_SECONDS,
//! SLUICE_CHAOS_LONGEST_MS, SLUICE_CHAOS_SEED.

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
}

impl Faults {
    fn count(&self, kind: &'static str) {
        *self.counts.lock().unwrap().entry(kind).or_default() += 1;
    }
}

#[derive(Clone, Copy)]
enum Fault {
    NotApplied500,
    Throttled,
    Latency(u64),
    Dropped,
    Applied500,
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
) -> Result<hyper::Response<Full<Bytes>>, reqwest::Error> {
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
    let bytes = resp.bytes().await?;
    Ok(out.body(Full::new(bytes)).unwrap())
}

/// Serves a loopback proxy to `upstream` that injects faults while `faults.on`.
async fn proxy(upstream: String, faults: Arc<Faults>) -> String {
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
            let (http, upstream, faults) = (http.clone(), upstream.clone(), faults.clone());
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(
                    move |req: hyper::Request<hyper::body::Incoming>| {
                        let (http, upstream, faults) =
                            (http.clone(), upstream.clone(), faults.clone());
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
                            let fault = if faults.on.load(Ordering::Relaxed) {
                                let mut rng = faults.rng.lock().unwrap();
                                let roll = rng.below(1000);
                                match roll {
                                    0..=29 => Some(Fault::NotApplied500),
                                    30..=54 => Some(Fault::Throttled),
                                    55..=99 => Some(Fault::Latency(100 + rng.below(500))),
                                    100..=114 => Some(Fault::Dropped),
                                    115..=139 => Some(Fault::Applied500),
                                    _ => None,
                                }
                            } else {
                                None
                            };
                            let answer = match fault {
                                None => forward(&http, &upstream, &parts, body).await.ok(),
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
                                    forward(&http, &upstream, &parts, body).await.ok()
                                }
                                Some(Fault::Dropped) => {
                                    faults.count("dropped connection");
                                    None
                                }
                                Some(Fault::Applied500) => {
                                    faults.count("applied, then 500");
                                    let _ = forward(&http, &upstream, &parts, body).await;
                                    Some(error_answer(500, "InternalFailure"))
                                }
                            };
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
}

/// Whether a job's end is one the handler, its input or its caller decided: anything else is
/// the pipeline's doing. A job's attempts may be used up by workers killed under it ("worker
/// was lost"), or by those and its own asked-for failures.
fn explained(j: &Submitted, r: &sluice::job::JobRecord) -> bool {
    let error = r.error.as_deref().unwrap_or("");
    match r.status {
        Status::Succeeded => true,
        Status::Cancelled => j.cancel_asked,
        Status::Expired => j.deadline && r.attempt == 0,
        Status::Failed => {
            error == "asked to fail permanently"
                || error.contains("worker was lost")
                || error.starts_with("asked to fail attempt")
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

/// A worker as the run starts (and restarts) it: the shipped binary, child-process mode.
fn start_worker(s: &Stack, n: usize, proxy: &str, log: &str) -> WorkerProcess {
    let command = json!([
        "python3",
        format!(
            "{}/tests/fixtures/chaos_handler.py",
            env!("CARGO_MANIFEST_DIR")
        )
    ])
    .to_string();
    s.worker(
        &format!("chaos-{n}"),
        &[
            ("AWS_ENDPOINT_URL", proxy),
            ("SLUICE_HANDLER", "process"),
            ("SLUICE_COMMAND", command.as_str()),
            ("SLUICE_CONCURRENCY", "2"),
            ("SLUICE_DRAIN_SECONDS", "2"),
            ("SLUICE_STARTUP_SECONDS", "20"),
            ("CHAOS_LOG", log),
        ],
    )
}

/// How a submit went, after a careful client's retries.
enum Submit {
    Accepted(JobId),
    /// Still 5xx or 429 after the retries.
    Refused,
    /// A 4xx for a valid job: the API's fault.
    Rejected(u16, Value),
}

async fn submit(api: &Api, rng: &mut Rng, input: &Value, deadline: bool) -> Submit {
    let mut body = json!({"input": input});
    if deadline {
        body["deadline_seconds"] = json!(2 + rng.below(4));
    }
    let key = rng.chance(0.5).then(|| format!("chaos-{}", rng.next()));
    // A careful client retries a 5xx (with its key, when it has one) a few times.
    for _ in 0..4 {
        let (status, v) = decode(
            api.handle(post_json(ALICE, &body.to_string(), key.as_deref()))
                .await,
        );
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
    let workers_n = 3;
    println!("chaos: {jobs} jobs, {seconds} s of faults, jobs up to {longest_ms} ms, {workers_n} workers, seed {seed}");
    let s = Stack::new("chaos").await;
    let faults = Arc::new(Faults {
        on: AtomicBool::new(true),
        rng: Mutex::new(Rng(seed ^ 0x9E37_79B9_7F4A_7C15)),
        counts: Mutex::new(BTreeMap::new()),
    });
    let upstream = s.aws.endpoint_url().unwrap().to_owned();
    let proxy_url = proxy(upstream, faults.clone()).await;
    let log = std::env::temp_dir().join(format!("sluice-chaos-{}.log", std::process::id()));
    let _ = std::fs::remove_file(&log);
    std::fs::write(&log, "").unwrap();
    let log_path = log.display().to_string();

    // The submit path through the proxy, as the submit function reaches AWS.
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
    let mut workers: Vec<WorkerProcess> = (0..workers_n)
        .map(|n| start_worker(&s, n, &proxy_url, &log_path))
        .collect();
    let dead = DeadLetters::new(s.dlq.clone(), s.store.clone(), s.retention);

    let started = Instant::now();
    let mut rng = Rng(seed);
    let mut submitted: Vec<Submitted> = Vec::new();
    let (mut refused, mut rejected) = (0u64, 0u64);
    let mut events: BTreeMap<&'static str, u64> = BTreeMap::new();
    let mut next_chaos = Instant::now() + Duration::from_secs(2);
    let pace = Duration::from_secs(seconds) * 6 / 10 / jobs.max(1) as u32;
    let mut last_reconcile = Instant::now();
    while started.elapsed() < Duration::from_secs(seconds) {
        if submitted.len() + ((refused + rejected) as usize) < jobs {
            let input = job_input(&mut rng, longest_ms);
            let deadline = rng.chance(0.1);
            match submit(&api, &mut rng, &input, deadline).await {
                Submit::Accepted(id) => {
                    let (mut cancel_asked, mut cancelled_queued) = (false, None);
                    if rng.chance(0.15) {
                        let (status, v) =
                            decode(api.handle(delete(ALICE, &format!("/jobs/{id}"))).await);
                        *events.entry("cancels asked").or_default() += 1;
                        cancel_asked = true;
                        if status == 200 && v["status"] == "CANCELLED" {
                            cancelled_queued = v["attempt"].as_u64().map(|a| a as u32);
                        }
                    }
                    submitted.push(Submitted {
                        id,
                        input,
                        cancel_asked,
                        cancelled_queued,
                        deadline,
                    });
                }
                Submit::Refused => refused += 1,
                Submit::Rejected(status, v) => {
                    println!("  a valid job was rejected: {status} {v}");
                    rejected += 1;
                }
            }
        }
        if Instant::now() >= next_chaos {
            let n = rng.below(workers_n as u64) as usize;
            if rng.chance(0.5) {
                workers[n].kill();
                *events.entry("workers killed (SIGKILL)").or_default() += 1;
            } else {
                workers[n].signal("TERM");
                *events.entry("workers stopped (SIGTERM)").or_default() += 1;
                let _ = tokio::time::timeout(
                    Duration::from_secs(10),
                    workers[n].exited(Duration::from_secs(10)),
                )
                .await;
            }
            workers[n] = start_worker(&s, n, &proxy_url, &log_path);
            // Deliveries the pipeline must take in its stride.
            if let Some(j) = submitted.get(rng.below(submitted.len() as u64) as usize) {
                let raw = serde_json::value::RawValue::from_string(j.input.to_string()).unwrap();
                let _ = s
                    .queue
                    .send(Envelope::new(j.id.clone(), &raw).encode().unwrap())
                    .await;
                *events.entry("duplicate deliveries injected").or_default() += 1;
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
        if last_reconcile.elapsed() > Duration::from_secs(5) {
            let _ = dead.reconcile().await;
            last_reconcile = Instant::now();
        }
        tokio::time::sleep(pace.min(Duration::from_millis(500))).await;
    }

    // Quiescence: no more faults; every accepted job must end.
    faults.on.store(false, Ordering::Relaxed);
    let calm = Instant::now();
    let cap = Duration::from_secs(120) + Duration::from_millis(longest_ms * 4);
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
        if last_reconcile.elapsed() > Duration::from_secs(3) {
            let _ = dead.reconcile().await;
            last_reconcile = Instant::now();
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let quiescence = calm.elapsed();
    drop(workers);

    // The checks.
    // Each completed run of the handler, by job, with the attempt it ran as.
    let mut completions: HashMap<String, Vec<u32>> = HashMap::new();
    for line in std::fs::read_to_string(&log).unwrap_or_default().lines() {
        let mut words = line.split_whitespace();
        if let (Some(id), Some(attempt)) = (words.next(), words.next().and_then(|a| a.parse().ok()))
        {
            completions.entry(id.to_owned()).or_default().push(attempt);
        }
    }
    let mut by_status: BTreeMap<&'static str, u64> = BTreeMap::new();
    let (mut open, mut over_completed, mut wrong, mut cancelled_ran, mut unexplained) =
        (0, 0, 0, 0, 0);
    for j in &submitted {
        let Some(r) = records.get(&j.id) else {
            open += 1;
            println!("  lost: {} has no record", j.id);
            continue;
        };
        if !r.status.is_terminal() {
            open += 1;
            println!("  not terminal: {r:?}");
            continue;
        }
        *by_status.entry(r.status.as_str()).or_default() += 1;
        if !explained(j, r) {
            unexplained += 1;
            println!(
                "  ended {} for no reason its handler, input or caller gave: {r:?}",
                r.status
            );
        }
        let runs = completions.remove(&j.id.to_string()).unwrap_or_default();
        if let Some(at) = j.cancelled_queued {
            if runs.iter().any(|a| *a > at) {
                cancelled_ran += 1;
                println!("  cancelled while queued at attempt {at}, yet ran as {runs:?}: {r:?}");
            }
        }
        // Every completed run belongs to an attempt the record counts, and no attempt ran twice.
        let mut attempts = runs.clone();
        attempts.sort_unstable();
        attempts.dedup();
        if attempts.len() < runs.len() || runs.iter().any(|a| *a > r.attempt) {
            over_completed += 1;
            println!(
                "  runs {runs:?} against {} recorded attempts: {r:?}",
                r.attempt
            );
        }
        if r.status == Status::Succeeded {
            let got: Value =
                serde_json::from_str(r.result.as_deref().unwrap_or("null")).unwrap_or(Value::Null);
            if got != expected(&j.input) {
                wrong += 1;
                println!("  wrong result for {}: {got} (input {})", j.id, j.input);
            }
        }
    }
    let table_items = aws_sdk_dynamodb::Client::new(&s.aws)
        .scan()
        .table_name(&s.res.table_name)
        .send()
        .await
        .map(|o| o.items().to_vec())
        .unwrap_or_default();
    let known: std::collections::HashSet<String> =
        submitted.iter().map(|j| j.id.to_string()).collect();
    let unanswered = table_items
        .iter()
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
        "valid submits rejected with a 4xx",
        rejected.to_string(),
        true,
    );
    row("jobs not terminal", open.to_string(), true);
    row(
        "handler runs not accounted for by a recorded attempt",
        over_completed.to_string(),
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
        "jobs ended for a reason no handler, input or caller gave",
        unexplained.to_string(),
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
