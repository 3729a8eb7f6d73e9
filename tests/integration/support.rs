//! The test harness: one emulator process per test run (moto in server mode on a free loopback
//! port, stopped when the test process exits), fresh resources per test, worker processes, and
//! fixture requests for the API handlers.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use aws_config::{BehaviorVersion, SdkConfig};
use aws_sdk_dynamodb::config::{Credentials, Region};
use lambda_http::http::header::CONTENT_TYPE;
use lambda_http::{Body, Request, RequestExt, Response};
use sluice::api::{self, Api, JobView};
use sluice::config::ApiConfig;
use sluice::job::{JobId, JobRecord};
use sluice::local::{self, QueueSettings, Resources};
use sluice::queue::JobQueue;
use sluice::store::JobStore;

pub const ALICE: &str = "arn:aws:iam::123456789012:user/alice";
pub const BOB: &str = "arn:aws:iam::123456789012:user/bob";
/// The one operator of every test stack (`SLUICE_OPERATORS`).
pub const OPERATOR: &str = "arn:aws:iam::123456789012:user/ops";

/// An emulator process on a free loopback port, stopped when this value is dropped (or the test
/// process exits).
pub struct Emulator {
    pub endpoint: String,
    // Holding the pipe keeps the emulator alive; dropping it (or the process exiting) closes it.
    _guard: Mutex<Child>,
}

impl Emulator {
    /// Starts one: `scripts/emulator.py` (moto in server mode, DynamoDB's writes atomic) with
    /// the tests' Python ([`venv_python`]); `env` adds settings.
    pub fn start(env: &[(&str, &str)]) -> Emulator {
        let root = workspace_root();
        let python = venv_python();
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let log = target_dir().join("integration-logs");
        std::fs::create_dir_all(&log).unwrap();
        // `sh` runs the emulator and kills it when its stdin (this value's pipe) closes.
        let mut cmd = Command::new("sh");
        cmd.arg("-c")
            .arg(r#""$1" "$2" -H 127.0.0.1 -p "$3" >"$4" 2>&1 & pid=$!; trap 'kill $pid 2>/dev/null' EXIT INT TERM; cat >/dev/null"#)
            .arg("sh")
            .arg(&python)
            .arg(root.join("scripts/emulator.py"))
            .arg(port.to_string())
            .arg(log.join(format!("emulator-{port}.log")))
            .stdin(Stdio::piped());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = cmd.spawn().expect("the emulator starts");
        let endpoint = format!("http://127.0.0.1:{port}");
        let start = Instant::now();
        while !answers(port) {
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "the emulator did not answer on {endpoint} within 30 s"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        Emulator {
            endpoint,
            _guard: Mutex::new(child),
        }
    }

    /// The SDK configuration for this emulator (see [`sdk`]).
    pub async fn sdk(&self) -> SdkConfig {
        aws_config::defaults(BehaviorVersion::latest())
            .endpoint_url(&self.endpoint)
            .region(Region::new("us-east-1"))
            .credentials_provider(Credentials::new("test", "test", None, None, "tests"))
            .load()
            .await
    }
}

/// The workspace's root: the ancestor of this package that holds `scripts/emulator.py`.
/// The Python of the tests' virtualenv (the emulator, the reference webhook verifier): the
/// workspace's `.venv`, or `SLUICE_EMULATOR_PYTHON`.
pub fn venv_python() -> PathBuf {
    let python = std::env::var("SLUICE_EMULATOR_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|_| workspace_root().join(".venv/bin/python"));
    assert!(
        python.exists(),
        "the tests' Python is not installed at {}: run `make test`, which installs it, or set SLUICE_EMULATOR_PYTHON",
        python.display()
    );
    python
}

pub fn workspace_root() -> PathBuf {
    let here = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    here.ancestors()
        .find(|dir| dir.join("scripts/emulator.py").exists())
        .map(PathBuf::from)
        .unwrap_or(here)
}

/// The test run's emulator, started on first use.
fn emulator() -> &'static Emulator {
    static EMULATOR: OnceLock<Emulator> = OnceLock::new();
    EMULATOR.get_or_init(|| Emulator::start(&[]))
}

fn answers(port: u16) -> bool {
    let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    if s.write_all(b"GET /moto-api/ HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
        .is_err()
    {
        return false;
    }
    let mut buf = [0u8; 12];
    s.read_exact(&mut buf).is_ok() && buf.starts_with(b"HTTP/1")
}

/// `target/debug`, found from this test binary's path (`target/debug/deps/…`).
pub fn target_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    exe.parent().and_then(|p| p.parent()).unwrap().to_path_buf()
}

/// The SDK configuration every test client uses: the emulator's endpoint, a region, and dummy
/// keys; the same settings the worker processes get through `AWS_ENDPOINT_URL`.
pub async fn sdk() -> SdkConfig {
    emulator().sdk().await
}

/// The emulator's AWS settings for a process (as `make dev` gives them).
pub fn aws_env() -> [(&'static str, String); 4] {
    [
        ("AWS_ENDPOINT_URL", emulator().endpoint.clone()),
        ("AWS_REGION", "us-east-1".into()),
        ("AWS_ACCESS_KEY_ID", "test".into()),
        ("AWS_SECRET_ACCESS_KEY", "test".into()),
    ]
}

/// Runs the `sluice` command with the emulator's AWS settings (as `make dev` gives it).
pub fn sluice_cli(args: &[&str]) -> std::process::Output {
    let bin = target_dir().join("sluice");
    assert!(
        bin.exists(),
        "{} is missing: run `cargo build --workspace --bins` first (make test does)",
        bin.display()
    );
    Command::new(bin)
        .args(args)
        .env("AWS_ENDPOINT_URL", &emulator().endpoint)
        .env("AWS_REGION", "us-east-1")
        .env("AWS_ACCESS_KEY_ID", "test")
        .env("AWS_SECRET_ACCESS_KEY", "test")
        .output()
        .expect("the sluice command runs")
}

/// A fresh table, queue and dead-letter queue for one test.
pub struct Stack {
    pub name: String,
    pub aws: SdkConfig,
    pub res: Resources,
    pub api: Api,
    pub store: JobStore,
    pub queue: JobQueue,
    pub dlq: JobQueue,
    pub retention: Duration,
}

pub const VISIBILITY: Duration = Duration::from_secs(3);
/// Above the jobs' 3 attempts, so that jobs end FAILED by their own count before the redrive
/// policy moves their message; only undecodable messages reach the dead-letter queue.
pub const MAX_RECEIVE_COUNT: u32 = 5;

/// The API's settings for a test's resources: 3 attempts, a day's retention.
pub fn api_config(res: &Resources) -> ApiConfig {
    ApiConfig {
        table_name: res.table_name.clone(),
        queue_url: Some(res.queue_url.clone()),
        max_attempts: 3,
        retention: Duration::from_secs(86_400),
        workers: None,
        max_job_timeout: sluice::job::MAX_JOB_TIMEOUT,
        owner_scope: Default::default(),
        // As on the local stack: the tests' webhook receivers listen on loopback.
        webhook_policy: sluice::webhook::TargetPolicy::LOCAL_STACK,
        uploads: sluice::config::UploadSettings {
            bucket: Some(res.payload_bucket.clone()),
            ..Default::default()
        },
        operators: vec![OPERATOR.parse().expect("an operator's ARN")],
        publishes: false,
        // No buckets listed; the emulator's presigned URLs are S3's, as on the local stack.
        references: sluice::config::ReferenceSettings {
            buckets: Default::default(),
            emulator: sluice::reference::Emulator::from_endpoint(&emulator().endpoint),
        },
    }
}

impl Stack {
    pub async fn new(test: &str) -> Stack {
        Stack::with_sdk(test, sdk().await).await
    }

    /// A stack on another emulator (see [`Emulator::start`]).
    pub async fn with_sdk(test: &str, aws: SdkConfig) -> Stack {
        static N: AtomicU32 = AtomicU32::new(0);
        let name = format!(
            "{}-{}-{}",
            test.replace('_', "-").chars().take(40).collect::<String>(),
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        );
        let res = local::ensure_resources(
            &aws,
            &name,
            QueueSettings {
                visibility_timeout: VISIBILITY,
                max_receive_count: MAX_RECEIVE_COUNT,
            },
        )
        .await
        .expect("resources are created");
        let config = api_config(&res);
        let store = JobStore::from_sdk(&aws, &res.table_name);
        let queue = JobQueue::from_sdk(&aws, &res.queue_url);
        let dlq = JobQueue::from_sdk(&aws, &res.dlq_url);
        let api = Api::new(store.clone(), Some(queue.clone()), config.clone()).with_payloads(
            sluice::payload::Payloads::from_sdk(&aws, &res.payload_bucket),
        );
        Stack {
            name,
            aws,
            res,
            api,
            store,
            queue,
            dlq,
            retention: config.retention,
        }
    }

    /// The stack's pipeline, as the local stack sets it up: a bucket whose objects created under
    /// `in/` become ALICE's jobs (outcomes under `out/`), its event queue, and its ingest.
    pub async fn pipeline(&self) -> (sluice::payload::Payloads, JobQueue, sluice::ingest::Ingest) {
        let pipe = sluice::local::ensure_pipeline(&self.aws, &self.name, "in/")
            .await
            .unwrap();
        let bucket = sluice::payload::Payloads::from_sdk(&self.aws, &pipe.bucket);
        let ingest = sluice::ingest::Ingest {
            store: self.store.clone(),
            queue: self.queue.clone(),
            objects: bucket.clone(),
            config: sluice::ingest::PipelineConfig {
                bucket: pipe.bucket.clone(),
                input_prefix: "in/".into(),
                output_prefix: "out/".into(),
                owner: sluice::job::Owner::new(format!("iam:{ALICE}")),
                max_attempts: 3,
                retention: self.retention,
            },
        };
        (
            bucket,
            JobQueue::from_sdk(&self.aws, &pipe.events_url),
            ingest,
        )
    }

    /// The payload bucket's adapter.
    pub fn api_payloads(&self) -> sluice::payload::Payloads {
        sluice::payload::Payloads::from_sdk(&self.aws, &self.res.payload_bucket)
    }

    /// Starts a `sluice-worker` process with short settings; `extra` overrides them.
    pub fn worker(&self, id: &str, extra: &[(&str, &str)]) -> WorkerProcess {
        self.worker_under(id, extra, &[])
    }

    /// [`Stack::worker`], started by the program `parent` (with its arguments), which is then
    /// given the worker's path as its last argument: a stand-in for what runs the worker.
    pub fn worker_under(&self, id: &str, extra: &[(&str, &str)], parent: &[&str]) -> WorkerProcess {
        let bin = target_dir().join("sluice-worker");
        assert!(
            bin.exists(),
            "{} is missing: run `cargo build --workspace --bins` first (make test does)",
            bin.display()
        );
        let log_path = target_dir()
            .join("integration-logs")
            .join(format!("{}-{id}.log", self.name));
        // Appended: a worker restarted under the same name keeps its predecessor's log.
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .unwrap();
        let mut cmd = match parent {
            [] => Command::new(bin),
            [program, args @ ..] => {
                let mut c = Command::new(program);
                c.args(args).arg(bin);
                c
            }
        };
        cmd.env("AWS_ENDPOINT_URL", &emulator().endpoint)
            .env("AWS_REGION", "us-east-1")
            .env("AWS_ACCESS_KEY_ID", "test")
            .env("AWS_SECRET_ACCESS_KEY", "test")
            .env("SLUICE_TABLE_NAME", &self.res.table_name)
            .env("SLUICE_QUEUE_URL", &self.res.queue_url)
            .env("SLUICE_PAYLOAD_BUCKET", &self.res.payload_bucket)
            .env(
                "SLUICE_VISIBILITY_TIMEOUT_SECONDS",
                VISIBILITY.as_secs().to_string(),
            )
            .env("SLUICE_LEASE_SECONDS", "3")
            .env("SLUICE_HEARTBEAT_SECONDS", "1")
            .env("SLUICE_RECEIVE_WAIT_SECONDS", "1")
            .env("SLUICE_RETRY_BASE_SECONDS", "1")
            .env("SLUICE_RETRY_MAX_SECONDS", "2")
            .env("SLUICE_DRAIN_SECONDS", "30")
            .env("SLUICE_MAX_RECEIVE_COUNT", MAX_RECEIVE_COUNT.to_string())
            .env("SLUICE_WORKER_ID", id)
            .env("SLUICE_LOG_FORMAT", "text")
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log);
        for (k, v) in extra {
            cmd.env(k, v);
        }
        WorkerProcess {
            child: cmd.spawn().expect("the worker starts"),
            log: log_path,
        }
    }

    /// Calls the API as `caller`.
    pub async fn call(&self, req: Request) -> (u16, serde_json::Value) {
        let resp = self.api.handle(req).await;
        decode(resp)
    }

    pub async fn submit(&self, caller: &str, input: serde_json::Value) -> JobId {
        self.submit_job(caller, serde_json::json!({ "input": input }))
            .await
    }

    /// Submits a whole request body (`{"input": …, "timeout_seconds": …}`), which must be accepted.
    pub async fn submit_job(&self, caller: &str, body: serde_json::Value) -> JobId {
        let (status, v) = self.call(post_json(caller, &body.to_string(), None)).await;
        assert_eq!(status, 202, "{v}");
        v["id"].as_str().unwrap().parse().unwrap()
    }

    /// `GET /jobs/{id}?wait=N` as `caller`, repeated until the job is terminal or `within` passes.
    pub async fn wait_terminal(&self, caller: &str, id: &JobId, within: Duration) -> JobView {
        let start = Instant::now();
        loop {
            let (status, v) = self
                .call(get(caller, &format!("/jobs/{id}"), Some(5)))
                .await;
            assert_eq!(status, 200, "{v}");
            let view: JobView = serde_json::from_value(v).unwrap();
            if view.status.is_terminal() || start.elapsed() > within {
                return view;
            }
        }
    }

    /// Polls the record until `pred` holds, or panics after `within`.
    pub async fn until(
        &self,
        id: &JobId,
        within: Duration,
        what: &str,
        pred: impl Fn(&JobRecord) -> bool,
    ) -> JobRecord {
        let start = Instant::now();
        loop {
            if let Some(job) = self.store.get(id).await.unwrap() {
                if pred(&job) {
                    return job;
                }
                assert!(
                    start.elapsed() < within,
                    "{what}: not within {within:?}; the job is {job:?}"
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Messages in the queue, visible or not.
    pub async fn queue_depth(&self, url: &str) -> u64 {
        use aws_sdk_sqs::types::QueueAttributeName as A;
        let out = aws_sdk_sqs::Client::new(&self.aws)
            .get_queue_attributes()
            .queue_url(url)
            .attribute_names(A::ApproximateNumberOfMessages)
            .attribute_names(A::ApproximateNumberOfMessagesNotVisible)
            .send()
            .await
            .unwrap();
        let attrs = out.attributes.unwrap_or_default();
        [
            A::ApproximateNumberOfMessages,
            A::ApproximateNumberOfMessagesNotVisible,
        ]
        .iter()
        .map(|k| {
            attrs
                .get(k)
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0)
        })
        .sum()
    }

    pub async fn until_queue_empty(&self, within: Duration) {
        let start = Instant::now();
        while self.queue_depth(&self.res.queue_url).await > 0 {
            assert!(
                start.elapsed() < within,
                "the queue still holds messages after {within:?}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

pub struct WorkerProcess {
    pub child: Child,
    pub log: PathBuf,
}

impl WorkerProcess {
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    pub fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(self.child.id().to_string())
            .status()
            .unwrap();
        assert!(ok.success());
    }

    /// Waits for the process to exit; panics after `within`.
    pub async fn exited(&mut self, within: Duration) -> std::process::ExitStatus {
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                start.elapsed() < within,
                "the worker did not exit within {within:?}; see {}",
                self.log.display()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for WorkerProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

fn with_caller(req: lambda_http::http::Request<Body>, caller: &str) -> Request {
    req.with_request_context(api::local_context(caller))
}

pub fn post_json(caller: &str, body: &str, key: Option<&str>) -> Request {
    post(caller, body, Some("application/json"), key)
}

pub fn post(caller: &str, body: &str, content_type: Option<&str>, key: Option<&str>) -> Request {
    let mut b = lambda_http::http::Request::builder()
        .method("POST")
        .uri("http://127.0.0.1:8080/jobs")
        .header("host", "127.0.0.1:8080");
    if let Some(ct) = content_type {
        b = b.header(CONTENT_TYPE, ct);
    }
    if let Some(k) = key {
        b = b.header("idempotency-key", k);
    }
    with_caller(b.body(Body::from(body.to_owned())).unwrap(), caller)
}

/// A JSON `POST` to `path` as `caller`.
pub fn post_path(caller: &str, path: &str, body: &str) -> Request {
    let req = lambda_http::http::Request::builder()
        .method("POST")
        .uri(format!("http://127.0.0.1:8080{path}"))
        .header("host", "127.0.0.1:8080")
        .header(CONTENT_TYPE, "application/json")
        .body(Body::from(body.to_owned()))
        .unwrap();
    with_caller(req, caller)
}

pub fn get(caller: &str, path: &str, wait: Option<u64>) -> Request {
    let req = lambda_http::http::Request::builder()
        .method("GET")
        .uri(format!("http://127.0.0.1:8080{path}"))
        .body(Body::Empty)
        .unwrap();
    let mut q: HashMap<String, String> = HashMap::new();
    if let Some(w) = wait {
        q.insert("wait".into(), w.to_string());
    }
    with_caller(req, caller).with_query_string_parameters(q)
}

pub fn delete(caller: &str, path: &str) -> Request {
    let req = lambda_http::http::Request::builder()
        .method("DELETE")
        .uri(format!("http://127.0.0.1:8080{path}"))
        .body(Body::Empty)
        .unwrap();
    with_caller(req, caller)
}

pub fn decode(resp: Response<Body>) -> (u16, serde_json::Value) {
    let status = resp.status().as_u16();
    let body = match resp.into_body() {
        Body::Text(t) => t,
        Body::Binary(b) => String::from_utf8(b).unwrap(),
        _ => String::new(),
    };
    (
        status,
        serde_json::from_str(&body).unwrap_or(serde_json::Value::Null),
    )
}
