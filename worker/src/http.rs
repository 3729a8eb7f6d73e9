//! The `http` handler: a model server in the same task that speaks the SageMaker inference
//! container contract (`GET /ping`, `POST /invocations`), so existing inference containers plug
//! in unchanged. See `worker/PROTOCOL.md`.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::{Method, Request, Response, StatusCode};
use serde_json::value::RawValue;
use tokio::time::Instant;
use tracing::{info, warn};

use crate::config::WorkerConfig;
use crate::handler::{Handler, JobContext, JobError};

/// How often the model server is pinged once it is ready (more often while it is away), and how
/// long one ping may take.
const PING_EVERY: Duration = Duration::from_secs(10);
const PING_AWAY_EVERY: Duration = Duration::from_secs(1);
const PING_TIMEOUT: Duration = Duration::from_secs(5);
/// A server that has not answered a ping for this long makes the worker unhealthy, busy or not:
/// the contract (SageMaker's too) is that `/ping` answers while jobs run.
const UNRESPONSIVE_AFTER: Duration = Duration::from_secs(60);
/// How much of an error answer's body is kept in the job's error.
const ERROR_BODY_CHARS: usize = 1_000;

/// A model server as a [`Handler`]. Its input is the job's JSON, sent as the request body; its
/// output is the answer's JSON (or its text, as a JSON string).
pub struct HttpHandler {
    base: String,
    http: reqwest::Client,
    startup: Duration,
    /// Running jobs, for progress reports sent to [`Self::progress_url`].
    running: Arc<Mutex<HashMap<String, JobContext>>>,
    progress_addr: OnceLock<SocketAddr>,
    last_ping: Arc<Mutex<Option<Instant>>>,
    /// Since when the server is away (a refused or reset connection, or `/ping` failing): the
    /// worker takes no jobs until `/ping` answers again.
    away: Arc<Mutex<Option<Instant>>>,
    /// The largest answer read; a longer one fails the job without being held whole.
    max_answer_bytes: usize,
}

impl HttpHandler {
    /// `base` is the server's base URL, e.g. `http://127.0.0.1:8080`.
    pub fn new(base: &str, config: &WorkerConfig) -> Self {
        HttpHandler {
            base: base.trim_end_matches('/').to_owned(),
            http: reqwest::Client::builder()
                .connect_timeout(Duration::from_secs(5))
                .pool_max_idle_per_host(config.concurrency)
                .build()
                .expect("a plain HTTP client builds"),
            startup: config.startup,
            running: Arc::default(),
            progress_addr: OnceLock::new(),
            last_ping: Arc::default(),
            away: Arc::default(),
            max_answer_bytes: crate::runtime::MAX_RESULT_BYTES,
        }
    }

    async fn ping(http: &reqwest::Client, base: &str) -> Result<(), String> {
        let resp = http
            .get(format!("{base}/ping"))
            .timeout(PING_TIMEOUT)
            .send()
            .await
            .map_err(|e| format!("GET {base}/ping: {}", error_chain(&e)))?;
        if resp.status().is_success() {
            Ok(())
        } else {
            Err(format!("GET {base}/ping answered {}", resp.status()))
        }
    }
}

/// Removes a job from the running set when its call ends, however it ends.
struct Running<'a> {
    map: &'a Mutex<HashMap<String, JobContext>>,
    id: String,
    /// The call came to its end (an answer, or no server to ask); otherwise it was stopped
    /// mid-request (its time limit, a cancel, a drain, a lease it could not renew).
    ended: bool,
}

impl Drop for Running<'_> {
    fn drop(&mut self) {
        let ctx = self.map.lock().expect("running lock").remove(&self.id);
        // Stopped mid-request: the closed connection is all the server is told. The run counts
        // as going on (its context held, so the job is not handed back to start elsewhere) for
        // [`HANG_UP_GRACE`], time for a server that stops work when its client hangs up.
        if let (false, Some(ctx), Ok(rt)) = (self.ended, ctx, tokio::runtime::Handle::try_current())
        {
            rt.spawn(async move {
                tokio::time::sleep(HANG_UP_GRACE).await;
                drop(ctx);
            });
        }
    }
}

/// How long a request the worker stopped still counts as running on the model server: the
/// child process's cancel grace, for the same reason.
pub const HANG_UP_GRACE: Duration = crate::process::CANCEL_GRACE;

impl Handler for HttpHandler {
    type Input = Box<RawValue>;
    type Output = Box<RawValue>;

    async fn call(&self, input: Box<RawValue>, ctx: JobContext) -> Result<Box<RawValue>, JobError> {
        let id = ctx.job_id.to_string();
        let mut req = self
            .http
            .post(format!("{}/invocations", self.base))
            .header(reqwest::header::ACCEPT, "application/json")
            .header("X-Sluice-Job-Id", &id)
            .header("X-Sluice-Attempt", ctx.attempt.to_string());
        // No timeout of its own: the worker drops the request at the job's time limit.
        req = match ctx.input_path() {
            // The uploaded file is the body, streamed from disk with its own content type (as
            // SageMaker Async sends the object); the JSON input, if any, rides in a header.
            Some(path) => {
                let file = tokio::fs::File::open(path).await.map_err(|e| {
                    JobError::retryable(format!(
                        "cannot open the job's file {}: {e}",
                        path.display()
                    ))
                })?;
                let stream = tokio_util::io::ReaderStream::with_capacity(file, FILE_CHUNK);
                let mut req = req
                    .header(
                        reqwest::header::CONTENT_TYPE,
                        ctx.input_content_type()
                            .unwrap_or(sluice::upload::DEFAULT_CONTENT_TYPE),
                    )
                    .header(
                        reqwest::header::CONTENT_LENGTH,
                        ctx.input_size().unwrap_or(0),
                    )
                    .body(reqwest::Body::wrap_stream(stream));
                if let Some(header) = input_header(&input)? {
                    req = req.header("X-Sluice-Input", header);
                }
                req
            }
            None => req
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(input.get().to_owned()),
        };
        if let Some(addr) = self.progress_addr.get() {
            req = req.header(
                "X-Sluice-Progress-Url",
                format!("http://{addr}/progress/{id}"),
            );
        }
        self.running
            .lock()
            .expect("running lock")
            .insert(id.clone(), ctx.clone());
        let mut running = Running {
            map: &self.running,
            id,
            ended: false,
        };
        let answered = self.answer(req, &ctx).await;
        running.ended = true;
        answered
    }

    async fn ready(&self) -> Result<(), String> {
        let started = Instant::now();
        let mut said = Instant::now();
        info!(url = %self.base, "waiting for the model server to answer GET /ping");
        loop {
            let last = match Self::ping(&self.http, &self.base).await {
                Ok(()) => break,
                Err(e) => e,
            };
            if started.elapsed() > self.startup {
                return Err(format!(
                    "the model server did not answer GET /ping with 200 within {} s: {last}",
                    self.startup.as_secs()
                ));
            }
            if said.elapsed() > Duration::from_secs(30) {
                info!(waited = ?started.elapsed(), last = %last, "still waiting for the model server");
                said = Instant::now();
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        *self.last_ping.lock().expect("ping lock") = Some(Instant::now());
        info!(url = %self.base, waited = ?started.elapsed(), "the model server is ready");
        let addr = serve_progress(self.running.clone(), reply_ip(&self.base).await)
            .await
            .map_err(|e| format!("cannot listen for progress reports on loopback: {e}"))?;
        let _ = self.progress_addr.set(addr);
        tokio::spawn(keep_pinging(
            self.http.clone(),
            self.base.clone(),
            self.last_ping.clone(),
            self.away.clone(),
        ));
        Ok(())
    }

    fn capacity(&self) -> Option<usize> {
        // Away: no job until `/ping` answers again. Otherwise the worker's concurrency.
        self.away.lock().expect("away lock").map(|_| 0)
    }

    fn health(&self) -> Result<(), String> {
        let away = self.away.lock().expect("away lock").map(|t| t.elapsed());
        let pinged = self
            .last_ping
            .lock()
            .expect("ping lock")
            .map(|t| t.elapsed());
        server_health(away, pinged)
    }
}

/// The worker's health as its model server makes it: unhealthy once the server has been away
/// (refused or reset connections, `/ping` failing) or has not answered `/ping` (a server that
/// accepts and never answers) for [`UNRESPONSIVE_AFTER`], busy or not; `away` and `pinged` say
/// how long ago each began. Pure.
pub fn server_health(away: Option<Duration>, pinged: Option<Duration>) -> Result<(), String> {
    if let Some(away) = away.filter(|a| *a > UNRESPONSIVE_AFTER) {
        return Err(format!(
            "the model server has been away for {} s (GET /ping does not answer)",
            away.as_secs()
        ));
    }
    match pinged {
        Some(t) if t > UNRESPONSIVE_AFTER => Err(format!(
            "the model server has not answered GET /ping for {} s",
            t.as_secs()
        )),
        _ => Ok(()),
    }
}

impl HttpHandler {
    /// Sends the job's request and makes its answer the job's result (or error).
    async fn answer(
        &self,
        req: reqwest::RequestBuilder,
        ctx: &JobContext,
    ) -> Result<Box<RawValue>, JobError> {
        let mut resp = match req.send().await {
            Ok(r) => r,
            // Refused, or closed before any answer: the server is not there (restarting, say).
            // The job never ran; it goes back to the queue without spending an attempt.
            Err(e) if not_there(&e) => {
                let why = error_chain(&e);
                went_away(&self.away, &why);
                return Err(JobError::unavailable(format!(
                    "the model server could not be reached ({why}); the job goes back to the queue"
                )));
            }
            Err(e) => {
                return Err(JobError::retryable(format!(
                    "the model server could not be reached: {}",
                    error_chain(&e)
                )))
            }
        };
        let status = resp.status();
        let content_type = resp
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        // A successful answer that is not text (an image, say), or too large to keep in the
        // job, is the job's result file, streamed to disk (as SageMaker Async stores its
        // answers in S3).
        let as_file = |body: &[u8]| {
            status.is_success()
                && ctx.output_dir().is_some()
                && (body.len() > self.max_answer_bytes || !textual(content_type.as_deref()))
        };
        // At most one byte past the limit is held: an answer too large is never held whole.
        let mut body: Vec<u8> = Vec::new();
        loop {
            match resp.chunk().await {
                Ok(Some(chunk)) => {
                    let room = self.max_answer_bytes + 1 - body.len();
                    body.extend_from_slice(&chunk[..chunk.len().min(room)]);
                    if as_file(&body) {
                        let rest = &chunk[chunk.len().min(room)..];
                        return self
                            .answer_to_file(resp, &body, rest, content_type, ctx)
                            .await;
                    }
                    if body.len() > self.max_answer_bytes {
                        return Err(JobError::permanent(format!(
                            "the model server answered with more than {} bytes; results up to {} bytes are stored \
                             unless the worker has a payload bucket ({} is not set)",
                            self.max_answer_bytes,
                            self.max_answer_bytes,
                            sluice::env::PAYLOAD_BUCKET
                        )));
                    }
                }
                Ok(None) => break,
                Err(e) => return Err(broke_off(&e)),
            }
        }
        if as_file(&body) {
            return self
                .answer_to_file(resp, &body, &[], content_type, ctx)
                .await;
        }
        interpret(status.as_u16(), &body)
    }

    /// Streams the rest of a successful answer (after `head` and `more`, read already) to the
    /// job's output directory and makes it the job's result file.
    async fn answer_to_file(
        &self,
        mut resp: reqwest::Response,
        head: &[u8],
        more: &[u8],
        content_type: Option<String>,
        ctx: &JobContext,
    ) -> Result<Box<RawValue>, JobError> {
        use tokio::io::AsyncWriteExt;
        let dir = ctx
            .output_dir()
            .expect("an answer goes to a file only with an output directory");
        let path = dir.join(sluice::output::RESULT_FILE_NAME);
        let disk = |e: std::io::Error| {
            JobError::retryable(format!(
                "the model server's answer could not be written to {}: {e}",
                path.display()
            ))
        };
        let mut file = tokio::fs::File::create(&path).await.map_err(disk)?;
        file.write_all(head).await.map_err(disk)?;
        file.write_all(more).await.map_err(disk)?;
        loop {
            match resp.chunk().await {
                Ok(Some(chunk)) => file.write_all(&chunk).await.map_err(disk)?,
                Ok(None) => break,
                Err(e) => return Err(broke_off(&e)),
            }
        }
        file.flush().await.map_err(disk)?;
        let content_type =
            content_type.unwrap_or_else(|| sluice::upload::DEFAULT_CONTENT_TYPE.to_owned());
        ctx.set_result_file(path.clone(), content_type)?;
        Ok(RawValue::NULL.to_owned())
    }
}

fn broke_off(e: &reqwest::Error) -> JobError {
    JobError::retryable(format!(
        "the model server's answer broke off: {}",
        error_chain(e)
    ))
}

/// Whether an answer of this content type is text, kept in the job as JSON (or a JSON string)
/// when small enough: no content type, JSON (`application/json`, `…+json`) or `text/…`. Pure.
pub fn textual(content_type: Option<&str>) -> bool {
    let Some(ct) = content_type else {
        return true;
    };
    let essence = ct
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    essence.is_empty()
        || essence == "application/json"
        || essence.ends_with("+json")
        || essence.starts_with("text/")
}

/// The size of the reads that stream a job's file to the model server.
const FILE_CHUNK: usize = 256 * 1024;
/// The largest JSON input sent beside a file, in the `X-Sluice-Input` header.
pub const MAX_INPUT_HEADER: usize = 8 * 1024;

/// The `X-Sluice-Input` header of a job sent with its file: the JSON input as compact JSON of
/// visible ASCII (any other character, which JSON has only inside strings, written as a `\u`
/// escape), `None` when it is `null`. An input longer than [`MAX_INPUT_HEADER`] so written fails
/// the job for good. Pure.
pub fn input_header(input: &RawValue) -> Result<Option<String>, JobError> {
    let value: serde_json::Value = serde_json::from_str(input.get())
        .map_err(|e| JobError::permanent(format!("the job's input is not JSON: {e}")))?;
    if value.is_null() {
        return Ok(None);
    }
    let mut text = String::new();
    for c in value.to_string().chars() {
        if (' '..='~').contains(&c) {
            text.push(c);
        } else {
            let mut units = [0u16; 2];
            for unit in c.encode_utf16(&mut units) {
                text.push_str(&format!("\\u{unit:04x}"));
            }
        }
    }
    if text.len() > MAX_INPUT_HEADER {
        return Err(JobError::permanent(format!(
            "a job with a file sends its JSON input to the model server in the X-Sluice-Input \
             header, which takes at most {MAX_INPUT_HEADER} bytes ({} here, non-ASCII characters \
             written as \\u escapes): put what is longer in the job's file",
            text.len()
        )));
    }
    Ok(Some(text))
}

/// What an answer of the model server makes of the job. Pure.
pub fn interpret(status: u16, body: &[u8]) -> Result<Box<RawValue>, JobError> {
    let text = String::from_utf8_lossy(body);
    match status {
        200..=299 => {
            if let Ok(raw) = serde_json::from_slice::<Box<RawValue>>(body) {
                return Ok(raw);
            }
            match std::str::from_utf8(body) {
                Ok(t) => Ok(RawValue::from_string(
                    serde_json::to_string(t).expect("a string encodes"),
                )
                .expect("an encoded string is JSON")),
                Err(_) => Err(JobError::permanent(
                    "the model server answered with bytes that are not text; results are JSON",
                )),
            }
        }
        _ => {
            let detail: String = text.trim().chars().take(ERROR_BODY_CHARS).collect();
            let message = format!("the model server answered {status}: {detail}");
            if status == 408 || status == 429 || status >= 500 {
                Err(JobError::retryable(message))
            } else {
                Err(JobError::permanent(message))
            }
        }
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

async fn keep_pinging(
    http: reqwest::Client,
    base: String,
    last: Arc<Mutex<Option<Instant>>>,
    away: Arc<Mutex<Option<Instant>>>,
) {
    let mut next = Instant::now() + PING_EVERY;
    loop {
        // While the server is away, look every second, so that jobs resume soon after it is back.
        while Instant::now() < next {
            if away.lock().expect("away lock").is_some() {
                break;
            }
            tokio::time::sleep(PING_AWAY_EVERY.min(next - Instant::now())).await;
        }
        match HttpHandler::ping(&http, &base).await {
            Ok(()) => {
                *last.lock().expect("ping lock") = Some(Instant::now());
                if let Some(since) = away.lock().expect("away lock").take() {
                    info!(away = ?since.elapsed(), "the model server answers GET /ping again; taking jobs");
                }
            }
            Err(e) => went_away(&away, &e),
        }
        let away_now = away.lock().expect("away lock").is_some();
        next = Instant::now()
            + if away_now {
                PING_AWAY_EVERY
            } else {
                PING_EVERY
            };
    }
}

/// Marks the server away since now (if it was not already), saying why.
fn went_away(away: &Mutex<Option<Instant>>, why: &str) {
    let mut away = away.lock().expect("away lock");
    if away.is_none() {
        warn!(%why, "the model server is away; taking no jobs until GET /ping answers");
        *away = Some(Instant::now());
    }
}

/// Whether a failed request means the server is not there: the connection was refused, or
/// closed or reset before any answer. A time-out is not (the server may be busy). Pure.
fn not_there(e: &reqwest::Error) -> bool {
    if e.is_timeout() {
        return false;
    }
    if e.is_connect() {
        return true;
    }
    let mut source: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(e);
    while let Some(s) = source {
        if let Some(io) = s.downcast_ref::<std::io::Error>() {
            use std::io::ErrorKind::*;
            if matches!(
                io.kind(),
                ConnectionRefused
                    | ConnectionReset
                    | ConnectionAborted
                    | BrokenPipe
                    | NotConnected
                    | UnexpectedEof
            ) {
                return true;
            }
        }
        if let Some(h) = s.downcast_ref::<hyper::Error>() {
            if h.is_incomplete_message() || h.is_closed() {
                return true;
            }
        }
        source = s.source();
    }
    false
}

/// The address the model server reaches this worker at: this end of the route to the server.
/// Loopback for a server on loopback (the task's one network: Fargate, awsvpc); the worker
/// container's own address on Docker's bridge when the server is another container there (the
/// CDK app's bridge mode, where `127.0.0.1` would be the server's own loopback). Finding it sends
/// nothing (a UDP socket's connect only picks the route); loopback when no route is found.
async fn reply_ip(base: &str) -> std::net::IpAddr {
    use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
    let loopback = IpAddr::V4(Ipv4Addr::LOCALHOST);
    let Some(authority) = base
        .split_once("://")
        .map(|(_, rest)| rest.split('/').next().unwrap_or_default())
    else {
        return loopback;
    };
    let has_port = match authority.rfind(']') {
        Some(i) => authority[i..].contains(':'),
        None => authority.contains(':'),
    };
    let authority = if has_port {
        authority.to_owned()
    } else {
        format!("{authority}:80")
    };
    let Ok(mut addrs) = tokio::net::lookup_host(authority).await else {
        return loopback;
    };
    let Some(server) = addrs.next() else {
        return loopback;
    };
    let any = if server.is_ipv4() {
        IpAddr::V4(Ipv4Addr::UNSPECIFIED)
    } else {
        IpAddr::V6(Ipv6Addr::UNSPECIFIED)
    };
    let Ok(socket) = tokio::net::UdpSocket::bind((any, 0)).await else {
        return loopback;
    };
    match socket
        .connect(server)
        .await
        .and_then(|()| socket.local_addr())
    {
        Ok(local) if !local.ip().is_unspecified() => local.ip(),
        _ => loopback,
    }
}

/// Listens on a loopback port for `POST /progress/{job id}` with `{"fraction"?, "message"?}`.
async fn serve_progress(
    running: Arc<Mutex<HashMap<String, JobContext>>>,
    ip: std::net::IpAddr,
) -> std::io::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind((ip, 0)).await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let running = running.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |req| {
                    let running = running.clone();
                    async move { Ok::<_, std::convert::Infallible>(progress(req, &running).await) }
                });
                let io = hyper_util::rt::TokioIo::new(stream);
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(io, service)
                    .await;
            });
        }
    });
    Ok(addr)
}

async fn progress(
    req: Request<hyper::body::Incoming>,
    running: &Mutex<HashMap<String, JobContext>>,
) -> Response<Full<Bytes>> {
    #[derive(serde::Deserialize)]
    struct Report {
        #[serde(default)]
        fraction: Option<f64>,
        #[serde(default)]
        message: Option<String>,
    }
    let answer = |status: StatusCode, text: &str| {
        Response::builder()
            .status(status)
            .header("content-type", "text/plain")
            .body(Full::new(Bytes::from(text.to_owned())))
            .expect("a response builds")
    };
    let id = req
        .uri()
        .path()
        .strip_prefix("/progress/")
        .map(str::to_owned);
    let (Some(id), &Method::POST) = (id, req.method()) else {
        return answer(
            StatusCode::NOT_FOUND,
            "POST /progress/{job id} with {\"fraction\": 0.5, \"message\": \"...\"}\n",
        );
    };
    let Ok(body) = http_body_util::Limited::new(req.into_body(), 64 * 1024)
        .collect()
        .await
    else {
        return answer(
            StatusCode::PAYLOAD_TOO_LARGE,
            "a progress report is at most 64 KiB\n",
        );
    };
    let report: Report = match serde_json::from_slice(&body.to_bytes()) {
        Ok(r) => r,
        Err(e) => {
            return answer(
                StatusCode::BAD_REQUEST,
                &format!("expected {{\"fraction\": 0.5, \"message\": \"...\"}}: {e}\n"),
            )
        }
    };
    let ctx = running.lock().expect("running lock").get(&id).cloned();
    match ctx {
        Some(ctx) => {
            ctx.progress(report.fraction, report.message.as_deref());
            answer(StatusCode::NO_CONTENT, "")
        }
        None => answer(StatusCode::NOT_FOUND, "no such job is running here\n"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn progress_reports_are_taken_on_loopback_for_a_server_on_loopback() {
        let v4 = std::net::IpAddr::from([127, 0, 0, 1]);
        for base in [
            "http://127.0.0.1:8080",
            "http://localhost:8080",
            "http://127.0.0.1",
            "not a url",
        ] {
            let ip = reply_ip(base).await;
            assert!(ip.is_loopback(), "{base}: {ip}");
        }
        assert_eq!(reply_ip("http://127.0.0.1:9").await, v4);
        assert!(reply_ip("http://[::1]:8080").await.is_loopback());
    }

    #[test]
    fn an_input_beside_a_file_goes_in_a_header_of_ascii_that_reads_back_the_same() {
        let cases = [
            (r#"{"caption":"a cat"}"#, Some(r#"{"caption":"a cat"}"#)),
            (
                r#"{"caption":"café ☕"}"#,
                Some(r#"{"caption":"caf\u00e9 \u2615"}"#),
            ),
            // Beyond the first plane: a surrogate pair, as JSON writes it.
            (r#"["😀"]"#, Some(r#"["\ud83d\ude00"]"#)),
            ("{\"del\":\"\u{7f}\"}", Some(r#"{"del":"\u007f"}"#)),
            (r#"{"tab":"a\tb"}"#, Some(r#"{"tab":"a\tb"}"#)),
            ("null", None),
        ];
        for (input, want) in cases {
            let raw = RawValue::from_string(input.to_owned()).unwrap();
            let got = input_header(&raw).unwrap();
            assert_eq!(got.as_deref(), want, "{input}");
            if let Some(header) = got {
                assert!(
                    header.bytes().all(|b| (0x20..0x7f).contains(&b)),
                    "{header}"
                );
                assert!(reqwest::header::HeaderValue::from_str(&header).is_ok());
                let back: serde_json::Value = serde_json::from_str(&header).unwrap();
                let original: serde_json::Value = serde_json::from_str(input).unwrap();
                assert_eq!(back, original, "{input}");
            }
        }
        let long = format!("\"{}\"", "é".repeat(MAX_INPUT_HEADER / 6 + 1));
        let err = input_header(&RawValue::from_string(long).unwrap()).unwrap_err();
        assert!(
            err.message.contains("at most 8192 bytes"),
            "{}",
            err.message
        );
    }

    #[test]
    fn a_server_away_or_silent_for_a_minute_makes_the_worker_unhealthy() {
        let s = Duration::from_secs;
        let cases = [
            // away, last answered ping, healthy
            (None, None, true),
            (None, Some(s(5)), true),
            (None, Some(s(60)), true),
            // Accepts connections, answers nothing: pings time out, the last answer ages.
            (None, Some(s(61)), false),
            (Some(s(30)), Some(s(30)), true),
            (Some(s(61)), Some(s(5)), false),
        ];
        for (away, pinged, healthy) in cases {
            assert_eq!(
                super::server_health(away, pinged).is_ok(),
                healthy,
                "{away:?} {pinged:?}"
            );
        }
    }

    #[test]
    fn text_answers_stay_in_the_job_and_others_become_files() {
        for (ct, text) in [
            (None, true),
            (Some("application/json"), true),
            (Some("application/json; charset=utf-8"), true),
            (Some("Application/JSON"), true),
            (Some("application/vnd.api+json"), true),
            (Some("text/plain"), true),
            (Some("text/csv; header=present"), true),
            (Some("image/png"), false),
            (Some("application/octet-stream"), false),
            (Some("audio/wav"), false),
            (Some("application/jsonx"), false),
        ] {
            assert_eq!(super::textual(ct), text, "{ct:?}");
        }
    }

    #[test]
    fn answers_become_results_or_errors_of_the_right_kind() {
        let ok = |status, body: &str| interpret(status, body.as_bytes()).unwrap().get().to_owned();
        assert_eq!(ok(200, r#"{"label": "cat"}"#), r#"{"label": "cat"}"#);
        assert_eq!(ok(200, "0.93,0.07"), r#""0.93,0.07""#);
        assert_eq!(ok(204, ""), r#""""#);
        let err = |status, body: &[u8]| interpret(status, body).unwrap_err();
        let cases: &[(u16, &[u8], bool, &str)] = &[
            (
                400,
                b"bad image",
                false,
                "the model server answered 400: bad image",
            ),
            (415, b"", false, "answered 415"),
            (408, b"slow", true, "answered 408"),
            (429, b"busy", true, "answered 429"),
            (503, b"loading", true, "answered 503: loading"),
            (200, b"\xff\xd8\xff", false, "not text"),
        ];
        for (status, body, retryable, want) in cases {
            let e = err(*status, body);
            assert_eq!(e.is_retryable(), *retryable, "{status}");
            assert!(e.message.contains(want), "{status}: {}", e.message);
        }
        let long = "x".repeat(5_000);
        assert!(err(500, long.as_bytes()).message.len() < 1_100);
    }
}
