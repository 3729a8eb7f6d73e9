//! Lambda artefacts: the size of each function's arm64 `bootstrap` (`make lambdas`), and its
//! start-up under a minimal Lambda Runtime API emulator written here: spawn → first
//! `GET /runtime/invocation/next` (init) and spawn → first `POST …/response` (the first
//! answered request), median of a few cold starts.
//!
//! The arm64 binaries cannot run on an x86_64 machine, so start-up is measured on the
//! host-architecture builds (`cargo build --profile lambda-release -p submit -p status -p backlog`),
//! same source, same profile.
//!
//! `cargo bench -p sluice-worker --bench pipeline` runs this as its last section, with the AWS
//! emulator behind the functions, so submit and status answer a real request. Run alone
//! (`--bench lambda_init`) there is no emulator: it reports sizes and init only.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{ExitCode, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio::sync::mpsc;

pub const FUNCTIONS: [&str; 3] = ["submit", "status", "backlog"];
/// Cold starts per function; the median is reported.
pub const COLD_STARTS: usize = 5;
/// Longest wait for one step of one cold start.
const STEP_TIMEOUT: Duration = Duration::from_secs(20);

/// What the functions need to answer a request: the emulator and resources on it.
pub struct Backend {
    pub endpoint: String,
    pub table: String,
    pub queue_url: String,
    /// The IAM principal in the events' authorizer context.
    pub caller_arn: String,
    /// A job owned by `caller_arn`, for the status function to read.
    pub job_id: String,
}

#[derive(Debug, Clone, Default)]
pub struct FunctionFigures {
    pub name: String,
    /// The arm64 bootstrap's size in bytes, when `make lambdas` built it.
    pub arm64_bytes: Option<u64>,
    /// Anything to know about the arm64 artefact (missing, stale, not arm64).
    pub arm64_note: Option<String>,
    /// Spawn → first `GET …/invocation/next`, per cold start, in ms.
    pub init_ms: Vec<f64>,
    /// Spawn → first response posted, per cold start, in ms.
    pub first_ms: Vec<f64>,
    /// What the first response was (the HTTP status inside it), or why it was not measured.
    pub note: Option<String>,
}

#[derive(Debug, Clone, Default)]
pub struct LambdaReport {
    pub functions: Vec<FunctionFigures>,
    /// Why start-up was not measured at all, if it was not.
    pub startup_skipped: Option<String>,
    /// Cold starts that failed.
    pub errors: Vec<String>,
}

impl LambdaReport {
    pub fn to_json(&self) -> Value {
        json!({
            "cold_starts_per_function": COLD_STARTS,
            "startup_skipped": self.startup_skipped,
            "errors": self.errors,
            "functions": self.functions.iter().map(|f| json!({
                "name": f.name,
                "arm64_bootstrap_bytes": f.arm64_bytes,
                "arm64_note": f.arm64_note,
                "init_ms": f.init_ms,
                "init_ms_median": median(&f.init_ms),
                "first_response_ms": f.first_ms,
                "first_response_ms_median": median(&f.first_ms),
                "note": f.note,
            })).collect::<Vec<_>>(),
        })
    }

    /// (figure, value) lines for a table.
    pub fn lines(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        for f in &self.functions {
            let size = match (f.arm64_bytes, &f.arm64_note) {
                (Some(b), None) => format!("{:.1} MB", b as f64 / 1e6),
                (Some(b), Some(n)) => format!("{:.1} MB ({n})", b as f64 / 1e6),
                (None, Some(n)) => n.clone(),
                (None, None) => "-".into(),
            };
            out.push((format!("{} arm64 bootstrap size", f.name), size));
            if self.startup_skipped.is_some() {
                continue;
            }
            out.push((
                format!(
                    "{} init: spawn -> first /next (median of {COLD_STARTS})",
                    f.name
                ),
                median(&f.init_ms).map_or("-".into(), |m| format!("{m:.1} ms")),
            ));
            let first = match (median(&f.first_ms), &f.note) {
                (Some(m), Some(n)) => format!("{m:.1} ms ({n})"),
                (Some(m), None) => format!("{m:.1} ms"),
                (None, Some(n)) => n.clone(),
                (None, None) => "-".into(),
            };
            out.push((format!("{} spawn -> first answered request", f.name), first));
        }
        if let Some(why) = &self.startup_skipped {
            out.push(("Lambda start-up".into(), format!("skipped: {why}")));
        }
        out
    }
}

pub fn median(v: &[f64]) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    let n = s.len();
    Some(if n % 2 == 1 {
        s[n / 2]
    } else {
        (s[n / 2 - 1] + s[n / 2]) / 2.0
    })
}

/// The workspace root (this crate is `worker/`).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("worker/ has a parent")
        .to_path_buf()
}

/// `target/release`: where this bench runs from (`target/release/deps/…`) and where
/// `cargo build --release` puts the host binaries.
fn release_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("the bench knows its path");
    exe.parent()
        .and_then(Path::parent)
        .expect("the bench runs from target/release/deps")
        .to_path_buf()
}

/// `target/lambda-release`: where the functions' host builds go, with the profile `make lambdas`
/// builds the arm64 bootstraps with.
fn host_build_dir() -> PathBuf {
    release_dir()
        .parent()
        .expect("target/release has a parent")
        .join("lambda-release")
}

fn modified(p: &Path) -> Option<SystemTime> {
    std::fs::metadata(p).and_then(|m| m.modified()).ok()
}

/// The newest modification time of the sources a function is built from.
fn newest_source() -> Option<SystemTime> {
    fn walk(dir: &Path, newest: &mut Option<SystemTime>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                walk(&p, newest);
            } else if p
                .extension()
                .is_some_and(|x| x == "rs" || x == "toml" || x == "json")
            {
                if let Some(t) = modified(&p) {
                    *newest = Some(newest.map_or(t, |n| n.max(t)));
                }
            }
        }
    }
    let root = workspace_root();
    let mut newest = modified(&root.join("Cargo.lock"));
    for d in ["src", "functions", "scaling"] {
        walk(&root.join(d), &mut newest);
    }
    newest
}

/// Whether an ELF file is for aarch64 (`e_machine` = 183).
fn is_aarch64(p: &Path) -> Option<bool> {
    let bytes = std::fs::read(p).ok()?;
    (bytes.len() > 20 && bytes.starts_with(b"\x7fELF"))
        .then(|| u16::from_le_bytes([bytes[18], bytes[19]]) == 183)
}

/// The arm64 bootstrap of each function, as `make lambdas` leaves it.
fn arm64_artefact(name: &str, newest: Option<SystemTime>) -> (Option<u64>, Option<String>) {
    let p = workspace_root()
        .join("target/lambda")
        .join(name)
        .join("bootstrap");
    let Ok(meta) = std::fs::metadata(&p) else {
        return (
            None,
            Some("missing: run `make lambdas` first (cargo-lambda, arm64)".into()),
        );
    };
    let mut notes = Vec::new();
    match is_aarch64(&p) {
        Some(true) => {}
        Some(false) => notes.push("not an arm64 binary".to_owned()),
        None => notes.push("not an ELF file".to_owned()),
    }
    if let (Ok(built), Some(src)) = (meta.modified(), newest) {
        if built < src {
            notes.push("older than the sources: run `make lambdas` again".into());
        }
    }
    (
        Some(meta.len()),
        (!notes.is_empty()).then(|| notes.join("; ")),
    )
}

fn api_event(method: &str, path: &str, route: &str, body: Option<&str>, caller: &str) -> Value {
    let now_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis() as u64;
    let mut ev = json!({
        "version": "2.0",
        "routeKey": route,
        "rawPath": path,
        "rawQueryString": "",
        "headers": {
            "content-type": "application/json",
            "host": "bench.execute-api.us-east-1.amazonaws.com",
            "user-agent": "sluice-bench",
            "x-forwarded-proto": "https",
        },
        "requestContext": {
            "accountId": "123456789012",
            "apiId": "bench",
            "domainName": "bench.execute-api.us-east-1.amazonaws.com",
            "domainPrefix": "bench",
            "http": {
                "method": method,
                "path": path,
                "protocol": "HTTP/1.1",
                "sourceIp": "127.0.0.1",
                "userAgent": "sluice-bench",
            },
            "requestId": "bench-request",
            "routeKey": route,
            "stage": "$default",
            "time": "24/Nov/2026:06:00:00 +0000",
            "timeEpoch": now_ms,
            "authorizer": {
                "iam": {
                    "accessKey": "AKIAIOSFODNN7EXAMPLE",
                    "accountId": "123456789012",
                    "callerId": "AIDACKCEVSQ6C2EXAMPLE",
                    "userArn": caller,
                    "userId": "AIDACKCEVSQ6C2EXAMPLE",
                }
            },
        },
        "isBase64Encoded": false,
    });
    if let Some(b) = body {
        ev["body"] = json!(b);
    }
    ev
}

/// The event each function gets: API Gateway HTTP API (payload 2.0) requests for submit and
/// status, an EventBridge scheduled event for backlog.
fn event_for(name: &str, caller: &str, job_id: &str) -> Value {
    match name {
        "submit" => api_event(
            "POST",
            "/jobs",
            "POST /jobs",
            Some(r#"{"input":{"text":"cold start"}}"#),
            caller,
        ),
        "status" => {
            let path = format!("/jobs/{job_id}");
            let mut ev = api_event("GET", &path, "GET /jobs/{id}", None, caller);
            ev["pathParameters"] = json!({ "id": job_id });
            ev
        }
        _ => json!({
            "version": "0",
            "id": "bench-scheduled-event",
            "detail-type": "Scheduled Event",
            "source": "aws.events",
            "account": "123456789012",
            "time": "2026-11-24T06:00:00Z",
            "region": "us-east-1",
            "resources": ["arn:aws:events:us-east-1:123456789012:rule/sluice-backlog"],
            "detail": {},
        }),
    }
}

/// What the runtime emulator saw, in order.
#[derive(Debug)]
enum Seen {
    Next(Instant),
    Response(Instant, String),
    Error(String),
    InitError(String),
}

struct RuntimeApi {
    addr: SocketAddr,
    seen: mpsc::UnboundedReceiver<Seen>,
    server: tokio::task::JoinHandle<()>,
}

impl Drop for RuntimeApi {
    fn drop(&mut self) {
        // Dropping the accept loop drops its connections (and a held-open second `/next`).
        self.server.abort();
    }
}

struct ApiState {
    event: Bytes,
    request_id: String,
    function_arn: String,
    /// The one invocation was handed out; a later `/next` waits until the process is killed.
    handed_out: AtomicBool,
    seen: mpsc::UnboundedSender<Seen>,
}

/// A minimal Lambda Runtime API (2018-06-01) on loopback that hands out one invocation:
/// `GET /runtime/invocation/next`, `POST /runtime/invocation/{id}/response` and `/error`,
/// `POST /runtime/init/error`.
async fn runtime_api(event: String, function_name: &str) -> std::io::Result<RuntimeApi> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let (tx, rx) = mpsc::unbounded_channel();
    let state = Arc::new(ApiState {
        event: Bytes::from(event),
        request_id: "8476a536-e9f4-11e8-9739-2dfe598c3fcd".into(),
        function_arn: format!("arn:aws:lambda:us-east-1:123456789012:function:{function_name}"),
        handed_out: AtomicBool::new(false),
        seen: tx,
    });
    let server = tokio::spawn(async move {
        let mut conns = tokio::task::JoinSet::new();
        while let Ok((stream, _)) = listener.accept().await {
            let state = state.clone();
            conns.spawn(async move {
                let svc = service_fn(move |req| answer(req, state.clone()));
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    Ok(RuntimeApi {
        addr,
        seen: rx,
        server,
    })
}

async fn answer(
    req: Request<Incoming>,
    st: Arc<ApiState>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let now = Instant::now();
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let reply = |status: StatusCode, body: &'static str| {
        let mut r = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
        *r.status_mut() = status;
        r
    };
    if method == Method::GET && path == "/2018-06-01/runtime/invocation/next" {
        if st.handed_out.swap(true, Ordering::SeqCst) {
            // One invocation per cold start: the next one never comes.
            std::future::pending::<()>().await;
        }
        let _ = st.seen.send(Seen::Next(now));
        let deadline = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_millis()
            + 30_000;
        let resp = Response::builder()
            .status(StatusCode::OK)
            .header("content-type", "application/json")
            .header("Lambda-Runtime-Aws-Request-Id", &st.request_id)
            .header("Lambda-Runtime-Deadline-Ms", deadline.to_string())
            .header("Lambda-Runtime-Invoked-Function-Arn", &st.function_arn)
            .header(
                "Lambda-Runtime-Trace-Id",
                "Root=1-5bef4de7-ad49b0e87f6ef6c87fc2e700;Parent=9a9197af755a6419;Sampled=0",
            )
            .body(Full::new(st.event.clone()))
            .expect("a valid response");
        return Ok(resp);
    }
    if method != Method::POST {
        return Ok(reply(
            StatusCode::NOT_FOUND,
            r#"{"errorMessage":"no such route"}"#,
        ));
    }
    let body = req
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let text = String::from_utf8_lossy(&body).into_owned();
    let invocation = path
        .strip_prefix("/2018-06-01/runtime/invocation/")
        .and_then(|rest| rest.split_once('/'));
    let seen = match (path.as_str(), invocation) {
        ("/2018-06-01/runtime/init/error", _) => Seen::InitError(text),
        (_, Some((id, "response"))) if id == st.request_id => Seen::Response(now, text),
        (_, Some((id, "error"))) if id == st.request_id => Seen::Error(text),
        _ => {
            return Ok(reply(
                StatusCode::BAD_REQUEST,
                r#"{"errorMessage":"unknown request id or route"}"#,
            ))
        }
    };
    let _ = st.seen.send(seen);
    Ok(reply(StatusCode::ACCEPTED, r#"{"status":"OK"}"#))
}

/// The next call the function makes to the runtime API, or why none came.
async fn next_call(
    api: &mut RuntimeApi,
    child: &mut tokio::process::Child,
) -> anyhow::Result<Seen> {
    tokio::select! {
        s = api.seen.recv() => s.ok_or_else(|| anyhow::anyhow!("the runtime API stopped")),
        status = child.wait() => Err(anyhow::anyhow!(
            "the function exited ({})",
            status.map(|s| s.to_string()).unwrap_or_default()
        )),
        () = tokio::time::sleep(STEP_TIMEOUT) => {
            Err(anyhow::anyhow!("no call to the runtime API within {STEP_TIMEOUT:?}"))
        }
    }
}

/// One cold start: spawn → first `/next` and, when `want_response`, spawn → first response.
async fn cold_start(
    bin: &Path,
    name: &str,
    envs: &[(String, String)],
    event: &Value,
    want_response: bool,
    log: &Path,
) -> anyhow::Result<(f64, Option<f64>, Option<String>)> {
    let mut api = runtime_api(event.to_string(), &format!("sluice-{name}")).await?;
    let log_file = std::fs::File::create(log)?;
    let mut cmd = tokio::process::Command::new(bin);
    cmd.env_clear()
        .envs(envs.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .env("AWS_LAMBDA_RUNTIME_API", api.addr.to_string())
        .stdin(Stdio::null())
        .stdout(log_file.try_clone()?)
        .stderr(log_file)
        .kill_on_drop(true);
    let start = Instant::now();
    let mut child = cmd.spawn()?;
    let ms = |t: Instant| t.duration_since(start).as_secs_f64() * 1e3;
    let outcome = async {
        let init = match next_call(&mut api, &mut child).await? {
            Seen::Next(t) => ms(t),
            Seen::InitError(body) => anyhow::bail!("init error: {body}"),
            other => anyhow::bail!("unexpected first call: {other:?}"),
        };
        if !want_response {
            return Ok((init, None, None));
        }
        match next_call(&mut api, &mut child).await? {
            Seen::Response(t, body) => {
                let status = serde_json::from_str::<Value>(&body)
                    .ok()
                    .and_then(|v| v["statusCode"].as_u64())
                    .map(|s| format!("answered {s}"));
                Ok((init, Some(ms(t)), status))
            }
            Seen::Error(body) => anyhow::bail!("the invocation failed: {body}"),
            other => anyhow::bail!("unexpected call: {other:?}"),
        }
    }
    .await;
    let _ = child.kill().await;
    outcome.map_err(|e| anyhow::anyhow!("{name}: {e}; see {}", log.display()))
}

/// Sizes, then `COLD_STARTS` cold starts of each function's host build.
pub async fn section(backend: Option<&Backend>) -> LambdaReport {
    let newest = newest_source();
    let mut report = LambdaReport::default();
    let bins: Vec<PathBuf> = FUNCTIONS.iter().map(|f| host_build_dir().join(f)).collect();
    let missing: Vec<&str> = FUNCTIONS
        .iter()
        .zip(&bins)
        .filter(|(_, b)| !b.exists())
        .map(|(f, _)| *f)
        .collect();
    if !missing.is_empty() {
        report.startup_skipped = Some(format!(
            "no host build of {} in {}: run `cargo build --profile lambda-release -p submit -p status -p backlog` \
             (make bench does with SLUICE_BENCH_LAMBDA_INIT=1)",
            missing.join(", "),
            host_build_dir().display()
        ));
    }
    let logs = workspace_root().join("bench-results/logs");
    let _ = std::fs::create_dir_all(&logs);
    let (endpoint, table, queue_url, caller, job_id) = match backend {
        Some(b) => (
            b.endpoint.clone(),
            b.table.clone(),
            b.queue_url.clone(),
            b.caller_arn.clone(),
            b.job_id.clone(),
        ),
        // No emulator: nothing listens on port 9, and init makes no AWS call.
        None => (
            "http://127.0.0.1:9".into(),
            "bench-jobs".into(),
            "http://127.0.0.1:9/123456789012/bench-jobs".into(),
            "arn:aws:iam::123456789012:user/alice".into(),
            "01JBENCH000000000000000000".into(),
        ),
    };
    for (name, bin) in FUNCTIONS.iter().zip(&bins) {
        let (arm64_bytes, arm64_note) = arm64_artefact(name, newest);
        let mut fig = FunctionFigures {
            name: (*name).to_owned(),
            arm64_bytes,
            arm64_note,
            ..Default::default()
        };
        if report.startup_skipped.is_none() {
            let mut envs: Vec<(String, String)> = [
                ("AWS_LAMBDA_FUNCTION_NAME", format!("sluice-{name}")),
                ("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "128".into()),
                ("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST".into()),
                (
                    "AWS_LAMBDA_LOG_STREAM_NAME",
                    "2026/11/24/[$LATEST]bench".into(),
                ),
                (
                    "AWS_LAMBDA_LOG_GROUP_NAME",
                    format!("/aws/lambda/sluice-{name}"),
                ),
                ("AWS_REGION", "us-east-1".into()),
                ("AWS_DEFAULT_REGION", "us-east-1".into()),
                ("AWS_ACCESS_KEY_ID", "test".into()),
                ("AWS_SECRET_ACCESS_KEY", "test".into()),
                ("AWS_SESSION_TOKEN", "test".into()),
                ("AWS_ENDPOINT_URL", endpoint.clone()),
                ("SLUICE_TABLE_NAME", table.clone()),
                ("RUST_LOG", "info".into()),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v))
            .collect();
            if *name != "status" {
                envs.push(("SLUICE_QUEUE_URL".into(), queue_url.clone()));
            }
            if *name == "backlog" {
                envs.push(("SLUICE_CLUSTER".into(), "sluice-bench".into()));
                envs.push(("SLUICE_SERVICE".into(), "sluice-bench-workers".into()));
            }
            if let Some(built) = modified(bin) {
                if newest.is_some_and(|n| built < n) {
                    fig.note = Some(format!(
                        "host build older than the sources: rebuild {}",
                        bin.display()
                    ));
                }
            }
            // Backlog answers once its sampling window (55 s) is over: by design, not measured.
            let want_response = backend.is_some() && *name != "backlog";
            let event = event_for(name, &caller, &job_id);
            let mut answers = Vec::new();
            for i in 0..COLD_STARTS {
                let log = logs.join(format!("lambda-{name}-{i}.log"));
                match cold_start(bin, name, &envs, &event, want_response, &log).await {
                    Ok((init, first, status)) => {
                        fig.init_ms.push(init);
                        if let Some(f) = first {
                            fig.first_ms.push(f);
                        }
                        if let Some(s) = status {
                            answers.push(s);
                        }
                    }
                    Err(e) => report.errors.push(e.to_string()),
                }
            }
            answers.dedup();
            let why_not = if *name == "backlog" {
                Some("answers after its 55 s sampling window by design; not measured".to_owned())
            } else if backend.is_none() {
                Some("needs the emulator: run --bench pipeline".to_owned())
            } else if !answers.is_empty() {
                Some(answers.join(", "))
            } else {
                None
            };
            fig.note = match (fig.note.take(), why_not) {
                (Some(a), Some(b)) => Some(format!("{b}; {a}")),
                (a, b) => a.or(b),
            };
        }
        report.functions.push(fig);
    }
    report
}

/// Alone, without the emulator: sizes and init only.
#[allow(dead_code)]
fn main() -> ExitCode {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    let report = rt.block_on(section(None));
    println!("sluice Lambda artefacts (alone: no emulator, so init only; --bench pipeline measures the first request too)");
    for (figure, value) in report.lines() {
        println!("  {figure:<58} {value}");
    }
    for e in &report.errors {
        println!("  error: {e}");
    }
    let out = workspace_root().join("bench-results");
    let _ = std::fs::create_dir_all(&out);
    let _ = std::fs::write(
        out.join("lambda.json"),
        serde_json::to_string_pretty(&report.to_json()).unwrap_or_default(),
    );
    if report.errors.is_empty()
        && report
            .functions
            .iter()
            .any(|f| f.arm64_bytes.is_some() || !f.init_ms.is_empty())
    {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
