//! Webhooks: signatures checked by the reference implementation, the `standardwebhooks` package
//! from PyPI (tests/fixtures/verify_webhook.py), not only by sluice's own code; and their
//! delivery end to end, from a durable record, to receivers on loopback.

use std::io::Write;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use lambda_http::RequestExt;
use serde_json::json;
use sluice::api::{Api, DeliveryState, JobView};
use sluice::job::{JobId, Status};
use sluice::outbox::{Outbox, Pass, DELIVERY_LEASE};
use sluice::time::Millis;
use sluice::webhook::{self, EventType, Secret, TargetPolicy, WebhookEvent, WebhookHeaders};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use crate::support::{
    api_config, decode, delete, get, post_json, venv_python, workspace_root, Stack, ALICE, BOB,
};

/// What the reference implementation says of these headers and body: `Ok` when they verify
/// with `secret`, else its reason.
fn reference_verdict(secret: &Secret, headers: &WebhookHeaders, body: &str) -> Result<(), String> {
    let input = serde_json::json!({
        "secret": secret.expose(),
        "headers": {
            "webhook-id": headers.id,
            "webhook-timestamp": headers.timestamp.to_string(),
            "webhook-signature": headers.signature,
        },
        "body": body,
    });
    let mut child = Command::new(venv_python())
        .arg(workspace_root().join("tests/fixtures/verify_webhook.py"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the reference verifier starts");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.to_string().as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    match out.status.code() {
        Some(0) => Ok(()),
        Some(1) => Err(said),
        _ => panic!("the reference verifier failed to run: {said}"),
    }
}

fn finished_job() -> (JobId, WebhookEvent) {
    let id = JobId::generate();
    let view = JobView {
        id: id.to_string(),
        status: Status::Failed,
        attempt: 3,
        max_attempts: 3,
        submitted_at: "2026-12-05T10:00:00.000Z".into(),
        started_at: Some("2026-12-05T10:00:01.000Z".into()),
        finished_at: Some("2026-12-05T10:00:09.250Z".into()),
        deadline: None,
        cancel_requested: false,
        timeout_seconds: None,
        on_timeout: None,
        progress: None,
        input_file: None,
        result: None,
        result_file: None,
        outputs: Vec::new(),
        // Non-ASCII, quotes and a newline: the bytes signed are the bytes sent.
        error: Some("modèle introuvable: \"résumé\"\nbye 👋".into()),
        url: None,
        redrives: 0,
        webhook: None,
        delivery: None,
    };
    (id, WebhookEvent::of(view).unwrap())
}

fn now() -> i64 {
    Millis::now().as_epoch_seconds()
}

#[test]
fn the_reference_implementation_verifies_a_signed_job_event() {
    let (id, event) = finished_job();
    let body = event.to_body();
    let secret = Secret::generate().unwrap();
    let headers = webhook::sign(
        &secret,
        None,
        &webhook::message_id(&id, event.kind, 0),
        now(),
        &body,
    );
    assert_eq!(reference_verdict(&secret, &headers, &body), Ok(()));
}

#[test]
fn the_reference_implementation_refuses_a_tampered_body_a_wrong_secret_and_a_stale_timestamp() {
    let (id, event) = finished_job();
    let body = event.to_body();
    let msg_id = webhook::message_id(&id, event.kind, 0);
    let secret = Secret::generate().unwrap();
    let headers = webhook::sign(&secret, None, &msg_id, now(), &body);

    let tampered = body.replace("job.failed", "job.succeeded");
    assert_ne!(tampered, body);
    let verdict = reference_verdict(&secret, &headers, &tampered);
    assert!(
        verdict
            .as_ref()
            .is_err_and(|e| e.contains("No matching signature")),
        "{verdict:?}"
    );

    let wrong = Secret::generate().unwrap();
    let verdict = reference_verdict(&wrong, &headers, &body);
    assert!(
        verdict
            .as_ref()
            .is_err_and(|e| e.contains("No matching signature")),
        "{verdict:?}"
    );

    let stale = webhook::sign(&secret, None, &msg_id, now() - 10 * 60, &body);
    let verdict = reference_verdict(&secret, &stale, &body);
    assert!(
        verdict.as_ref().is_err_and(|e| e.contains("too old")),
        "{verdict:?}"
    );

    let mut other_id = headers.clone();
    other_id.id = webhook::message_id(&JobId::generate(), event.kind, 0);
    assert!(reference_verdict(&secret, &other_id, &body).is_err());
}

#[test]
fn during_a_rotation_the_reference_implementation_accepts_the_old_and_the_new_secret() {
    let (id, event) = finished_job();
    let body = event.to_body();
    let (old, new) = (Secret::generate().unwrap(), Secret::generate().unwrap());
    let headers = webhook::sign(
        &new,
        Some(&old),
        &webhook::message_id(&id, event.kind, 0),
        now(),
        &body,
    );
    assert_eq!(reference_verdict(&new, &headers, &body), Ok(()));
    assert_eq!(reference_verdict(&old, &headers, &body), Ok(()));
    assert!(reference_verdict(&Secret::generate().unwrap(), &headers, &body).is_err());
}

#[test]
fn the_reference_implementation_reads_secrets_of_every_allowed_size() {
    use base64::Engine as _;
    for len in [webhook::SECRET_MIN_BYTES, 32, webhook::SECRET_MAX_BYTES] {
        let key: Vec<u8> = (0..len).map(|i| (i * 37 % 251) as u8).collect();
        let text = format!(
            "whsec_{}",
            base64::engine::general_purpose::STANDARD.encode(key)
        );
        let secret = Secret::parse(&text).unwrap();
        let headers = webhook::sign(&secret, None, "msg_size", now(), "{}");
        assert_eq!(
            reference_verdict(&secret, &headers, "{}"),
            Ok(()),
            "{len} bytes"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Delivery, end to end: the API, the worker process and the backlog function's deliverer,
// against the emulator, to receivers on loopback.

/// How a [`Receiver`] answers.
const UP: u8 = 0;
const DOWN_503: u8 = 1;
/// Reads the request and never answers.
const HANGS: u8 = 2;

/// One request a receiver got, and whether it answered it 2xx.
#[derive(Debug, Clone)]
struct Received {
    headers: WebhookHeaders,
    body: String,
    acknowledged: bool,
}

/// A webhook receiver on loopback; `mode` says how it answers the next request.
struct Receiver {
    url: String,
    mode: Arc<AtomicU8>,
    got: Arc<std::sync::Mutex<Vec<Received>>>,
}

impl Receiver {
    async fn start(mode: u8) -> Receiver {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hooks", listener.local_addr().unwrap());
        let mode = Arc::new(AtomicU8::new(mode));
        let got = Arc::new(std::sync::Mutex::new(Vec::new()));
        let (m, g) = (mode.clone(), got.clone());
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let (m, g) = (m.clone(), g.clone());
                tokio::spawn(async move { answer(stream, &m, &g).await });
            }
        });
        Receiver { url, mode, got }
    }

    fn set(&self, mode: u8) {
        self.mode.store(mode, Ordering::SeqCst);
    }

    fn got(&self) -> Vec<Received> {
        self.got.lock().unwrap().clone()
    }

    fn acknowledged(&self) -> Vec<Received> {
        self.got().into_iter().filter(|r| r.acknowledged).collect()
    }

    async fn until_requests(&self, n: usize, within: Duration) {
        let start = Instant::now();
        while self.got().len() < n {
            assert!(
                start.elapsed() < within,
                "the receiver got {} requests, not {n}, within {within:?}",
                self.got().len()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

async fn answer(
    mut stream: tokio::net::TcpStream,
    mode: &AtomicU8,
    got: &std::sync::Mutex<Vec<Received>>,
) {
    let mut request = Vec::new();
    let mut buf = [0u8; 8192];
    let (head, body) = loop {
        let n = stream.read(&mut buf).await.unwrap_or(0);
        if n == 0 {
            return;
        }
        request.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&request).into_owned();
        if let Some(end) = text.find("\r\n\r\n") {
            let len = text[..end]
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length: ")
                        .map(str::to_owned)
                })
                .and_then(|v| v.trim().parse::<usize>().ok())
                .unwrap_or(0);
            if request.len() >= end + 4 + len {
                let body = String::from_utf8(request[end + 4..end + 4 + len].to_vec()).unwrap();
                break (text[..end].to_owned(), body);
            }
        }
    };
    let header = |name: &str| {
        head.lines()
            .skip(1)
            .find_map(|l| {
                let (k, v) = l.split_once(": ")?;
                k.eq_ignore_ascii_case(name).then(|| v.trim().to_owned())
            })
            .unwrap_or_default()
    };
    let headers = WebhookHeaders {
        id: header("webhook-id"),
        timestamp: header("webhook-timestamp").parse().unwrap_or(0),
        signature: header("webhook-signature"),
    };
    let mode = mode.load(Ordering::SeqCst);
    let index = {
        let mut got = got.lock().unwrap();
        got.push(Received {
            headers,
            body,
            acknowledged: false,
        });
        got.len() - 1
    };
    let reply = match mode {
        UP => "HTTP/1.1 204 No Content\r\ncontent-length: 0\r\n\r\n",
        DOWN_503 => "HTTP/1.1 503 Service Unavailable\r\ncontent-length: 11\r\n\r\nnot now\r\n\r\n",
        _ => {
            tokio::time::sleep(Duration::from_secs(600)).await;
            return;
        }
    };
    if stream.write_all(reply.as_bytes()).await.is_ok() && mode == UP {
        got.lock().unwrap()[index].acknowledged = true;
    }
    let _ = stream.shutdown().await;
}

/// The caller's webhook secret, from `GET /webhook-secret`.
async fn secret_of(s: &Stack, caller: &str) -> Secret {
    let (status, v) = s.call(get(caller, "/webhook-secret", None)).await;
    assert_eq!(status, 200, "{v}");
    Secret::parse(v["secret"].as_str().unwrap()).unwrap()
}

/// The job's view once `pred` holds of it.
async fn view_until(s: &Stack, id: &JobId, what: &str, pred: impl Fn(&JobView) -> bool) -> JobView {
    let start = Instant::now();
    loop {
        let (status, v) = s.call(get(ALICE, &format!("/jobs/{id}"), None)).await;
        assert_eq!(status, 200, "{v}");
        let view: JobView = serde_json::from_value(v).unwrap();
        if pred(&view) {
            return view;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "{what}: not within 30 s; the job is {view:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn state(view: &JobView) -> Option<DeliveryState> {
    view.delivery.as_ref().map(|d| d.state)
}

fn outbox(s: &Stack) -> Outbox {
    Outbox::new(s.store.clone(), TargetPolicy::LOCAL_STACK)
}

/// As the backlog function runs it, with its clock `ahead` of now.
async fn backlog_pass(s: &Stack, ahead: Duration) -> Pass {
    outbox(s)
        .deliver_due(Millis::now().plus(ahead), Duration::from_secs(60))
        .await
        .unwrap()
}

fn allow_loopback() -> [(&'static str, &'static str); 1] {
    [("SLUICE_WEBHOOK_ALLOW_LOOPBACK", "true")]
}

#[tokio::test]
async fn each_terminal_state_is_announced_once_with_a_signature_the_reference_verifies() {
    let s = Stack::new("webhook-once").await;
    let rx = Receiver::start(UP).await;
    // Cancelled while queued, before any worker runs: the backlog function announces it.
    let cancelled = s
        .submit_job(
            ALICE,
            json!({"input": {"text": "never"}, "webhook": rx.url}),
        )
        .await;
    let (status, v) = s.call(delete(ALICE, &format!("/jobs/{cancelled}"))).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["delivery"]["state"], "pending", "{v}");
    let pass = backlog_pass(&s, Duration::ZERO).await;
    assert_eq!(pass.attempted.len(), 1, "{pass:?}");

    // Ended by a worker: it announces them itself, at once.
    let _worker = s.worker("w1", &allow_loopback());
    let succeeded = s
        .submit_job(
            ALICE,
            json!({"input": {"text": "a b c"}, "webhook": rx.url}),
        )
        .await;
    let failed = s
        .submit_job(
            ALICE,
            json!({"input": {"fail": "permanent"}, "webhook": rx.url}),
        )
        .await;
    let quiet = s.submit(ALICE, json!({"text": "no webhook"})).await;
    for id in [&succeeded, &failed, &cancelled] {
        let view = view_until(&s, id, "delivered", |v| {
            state(v) == Some(DeliveryState::Delivered)
        })
        .await;
        let d = view.delivery.unwrap();
        assert_eq!((d.attempts, d.last_status), (1, Some(204)), "{id}");
        assert!(d.delivered_at.is_some() && d.next_attempt_at.is_none());
    }
    let view = s
        .wait_terminal(ALICE, &quiet, Duration::from_secs(20))
        .await;
    assert_eq!((view.webhook, view.delivery), (None, None));

    // Nothing is left to deliver, even a day later.
    let later = backlog_pass(&s, Duration::from_secs(86_400)).await;
    assert_eq!(later.attempted, vec![], "{later:?}");

    let got = rx.got();
    assert_eq!(got.len(), 3, "one request per terminal state: {got:?}");
    let secret = secret_of(&s, ALICE).await;
    for (id, kind) in [
        (&succeeded, "job.succeeded"),
        (&failed, "job.failed"),
        (&cancelled, "job.cancelled"),
    ] {
        let r = got
            .iter()
            .find(|r| r.body.contains(&id.to_string()))
            .unwrap_or_else(|| panic!("no webhook for {id}"));
        assert_eq!(reference_verdict(&secret, &r.headers, &r.body), Ok(()));
        let body: serde_json::Value = serde_json::from_str(&r.body).unwrap();
        assert_eq!(body["type"], kind);
        assert_eq!(body["data"]["id"], id.to_string());
        assert!(body["data"].get("delivery").is_none(), "{body}");
        let event = EventType::of(kind_status(kind)).unwrap();
        assert_eq!(r.headers.id, webhook::message_id(id, event, 0));
    }
}

fn kind_status(kind: &str) -> Status {
    match kind {
        "job.succeeded" => Status::Succeeded,
        "job.failed" => Status::Failed,
        "job.cancelled" => Status::Cancelled,
        _ => Status::Expired,
    }
}

#[tokio::test]
async fn a_receiver_that_is_down_gets_the_webhook_once_it_recovers() {
    let s = Stack::new("webhook-down").await;
    let rx = Receiver::start(DOWN_503).await;
    let _worker = s.worker("w1", &allow_loopback());
    let id = s
        .submit_job(ALICE, json!({"input": {"text": "hi"}, "webhook": rx.url}))
        .await;
    let view = view_until(&s, &id, "a failed first attempt", |v| {
        v.delivery
            .as_ref()
            .is_some_and(|d| d.attempts == 1 && d.last_status == Some(503))
    })
    .await;
    let d = view.delivery.unwrap();
    assert_eq!(d.state, DeliveryState::Pending);
    assert!(d.last_error.unwrap().contains("503"));
    assert!(d.next_attempt_at.is_some());

    // Still down a minute later: retried on the schedule, still pending.
    backlog_pass(&s, Duration::from_secs(60)).await;
    let view = view_until(&s, &id, "a second failed attempt", |v| {
        v.delivery.as_ref().is_some_and(|d| d.attempts == 2)
    })
    .await;
    assert_eq!(state(&view), Some(DeliveryState::Pending));
    // Not due again before its time: a pass now attempts nothing.
    let early = backlog_pass(&s, Duration::from_secs(60)).await;
    assert_eq!(early.attempted, vec![], "{early:?}");

    // Up again: the next attempt on the schedule (5 minutes after the second) delivers it.
    rx.set(UP);
    let pass = backlog_pass(&s, Duration::from_secs(60 + 6 * 60 + 60)).await;
    assert_eq!(pass.attempted.len(), 1, "{pass:?}");
    let view = view_until(&s, &id, "delivered", |v| {
        state(v) == Some(DeliveryState::Delivered)
    })
    .await;
    let d = view.delivery.unwrap();
    assert_eq!(
        (d.attempts, d.last_status, d.last_error),
        (3, Some(204), None)
    );

    let got = rx.got();
    assert_eq!(got.len(), 3, "{got:?}");
    assert!(
        got.iter().all(|r| r.headers.id == got[0].headers.id),
        "one message, three attempts"
    );
    let acked = rx.acknowledged();
    assert_eq!(acked.len(), 1);
    let secret = secret_of(&s, ALICE).await;
    assert_eq!(
        reference_verdict(&secret, &acked[0].headers, &acked[0].body),
        Ok(())
    );
    assert_eq!(
        acked[0].body, got[0].body,
        "every attempt sends the same body"
    );
}

#[tokio::test]
async fn a_worker_killed_between_the_outcome_and_the_delivery_still_announces_the_job_once() {
    let s = Stack::new("webhook-kill").await;
    // The worker's own attempt never gets an answer: the worker is killed during it.
    let rx = Receiver::start(HANGS).await;
    let mut worker = s.worker("w1", &allow_loopback());
    let id = s
        .submit_job(ALICE, json!({"input": {"text": "hi"}, "webhook": rx.url}))
        .await;
    rx.until_requests(1, Duration::from_secs(30)).await;
    worker.kill();
    let job = s.store.get(&id).await.unwrap().unwrap();
    assert_eq!(job.status, Status::Succeeded);
    assert_eq!(job.delivery.attempts, 1);
    assert_eq!(job.delivery.delivered_at, None);

    // The dead worker's attempt holds the announcement for its lease; then the backlog
    // function delivers it.
    rx.set(UP);
    let held = backlog_pass(&s, Duration::ZERO).await;
    assert_eq!(held.attempted, vec![], "{held:?}");
    let pass = backlog_pass(&s, DELIVERY_LEASE + Duration::from_secs(1)).await;
    assert_eq!(pass.attempted.len(), 1, "{pass:?}");
    let again = backlog_pass(&s, Duration::from_secs(86_400)).await;
    assert_eq!(again.attempted, vec![], "{again:?}");

    let view = view_until(&s, &id, "delivered", |v| {
        state(v) == Some(DeliveryState::Delivered)
    })
    .await;
    assert_eq!(view.delivery.unwrap().attempts, 2);
    let acked = rx.acknowledged();
    assert_eq!(acked.len(), 1, "delivered once: {:?}", rx.got());
    let got = rx.got();
    assert_eq!(
        got[0].headers.id, acked[0].headers.id,
        "the same message id, for dedupe"
    );
    let secret = secret_of(&s, ALICE).await;
    assert_eq!(
        reference_verdict(&secret, &acked[0].headers, &acked[0].body),
        Ok(())
    );
}

#[tokio::test]
async fn deployed_submits_refuse_webhooks_to_loopback_private_and_metadata_addresses() {
    let s = Stack::new("webhook-refused").await;
    let mut config = api_config(&s.res);
    config.webhook_policy = TargetPolicy::DEPLOYED;
    let deployed = Api::new(s.store.clone(), Some(s.queue.clone()), config);
    let submit = |url: &str| {
        post_json(
            ALICE,
            &json!({"input": 1, "webhook": url}).to_string(),
            None,
        )
    };
    let cases = [
        ("http://127.0.0.1/hooks", "must start with https://"),
        ("https://127.0.0.1/hooks", "127.0.0.1 is a loopback address"),
        (
            "https://localhost:8443/hooks",
            "localhost is a loopback address",
        ),
        ("http://169.254.169.254/", "must start with https://"),
        (
            "https://169.254.169.254/latest/meta-data/",
            "a cloud metadata address",
        ),
        ("https://10.1.2.3/hooks", "a private address"),
        ("https://[fd00:ec2::254]/", "a cloud metadata address"),
        ("https://hooks.example.com:22/", "port 22 is not allowed"),
        (
            "https://user:pw@hooks.example.com/",
            "must not carry a user name",
        ),
        ("hooks.example.com/x", "not a valid absolute URL"),
    ];
    for (url, want) in cases {
        let (status, v) = decode(deployed.handle(submit(url)).await);
        assert_eq!(status, 400, "{url}: {v}");
        assert_eq!(v["error"]["code"], "invalid_webhook", "{url}: {v}");
        let message = v["error"]["message"].as_str().unwrap();
        assert!(message.contains(want), "{url}: {message}");
    }
    let (status, v) = decode(
        deployed
            .handle(submit("https://hooks.example.com/sluice"))
            .await,
    );
    assert_eq!(status, 202, "{v}");
    assert_eq!(v["webhook"], "https://hooks.example.com/sluice");
    // On the local stack, a loopback receiver is fine.
    let (status, v) = s.call(submit("http://127.0.0.1:8081/hooks")).await;
    assert_eq!(status, 202, "{v}");

    // The webhook is part of what an idempotency key stands for.
    let keyed = |url: &str| {
        post_json(
            ALICE,
            &json!({"input": 1, "webhook": url}).to_string(),
            Some("order-7"),
        )
    };
    let (status, _) = s.call(keyed("http://127.0.0.1:8081/a")).await;
    assert_eq!(status, 202);
    let (status, v) = s.call(keyed("http://127.0.0.1:8081/b")).await;
    assert_eq!(status, 422, "{v}");
    let (status, _) = s.call(keyed("http://127.0.0.1:8081/a")).await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn each_owner_fetches_and_rotates_its_own_secret_and_a_rotation_signs_with_both() {
    let s = Stack::new("webhook-secret").await;
    let (status, first) = s.call(get(ALICE, "/webhook-secret", None)).await;
    assert_eq!(status, 200, "{first}");
    let alice = first["secret"].as_str().unwrap().to_owned();
    assert!(alice.starts_with("whsec_"), "{first}");
    assert!(first.get("previous_valid_until").is_none(), "{first}");
    assert_eq!(secret_of(&s, ALICE).await.expose(), alice, "made once");
    let bob = secret_of(&s, BOB).await.expose();
    assert_ne!(bob, alice);

    let rotate = || {
        let req = lambda_http::http::Request::builder()
            .method("POST")
            .uri("http://127.0.0.1:8080/webhook-secret/rotate")
            .body(lambda_http::Body::Empty)
            .unwrap();
        req.with_request_context(sluice::api::local_context(ALICE))
    };
    let (status, rotated) = s.call(rotate()).await;
    assert_eq!(status, 200, "{rotated}");
    let new = rotated["secret"].as_str().unwrap().to_owned();
    assert_ne!(new, alice);
    assert!(rotated["previous_valid_until"].is_string(), "{rotated}");
    assert_eq!(secret_of(&s, ALICE).await.expose(), new);
    assert_eq!(
        secret_of(&s, BOB).await.expose(),
        bob,
        "another owner's is untouched"
    );

    // A webhook sent during the rotation verifies with the old secret and the new one.
    let rx = Receiver::start(UP).await;
    let id = s
        .submit_job(ALICE, json!({"input": 1, "webhook": rx.url}))
        .await;
    let (status, _) = s.call(delete(ALICE, &format!("/jobs/{id}"))).await;
    assert_eq!(status, 200);
    backlog_pass(&s, Duration::ZERO).await;
    let acked = rx.acknowledged();
    assert_eq!(acked.len(), 1, "{:?}", rx.got());
    for secret in [&new, &alice] {
        let secret = Secret::parse(secret).unwrap();
        assert_eq!(
            reference_verdict(&secret, &acked[0].headers, &acked[0].body),
            Ok(())
        );
    }
    let bobs = Secret::parse(&bob).unwrap();
    assert!(reference_verdict(&bobs, &acked[0].headers, &acked[0].body).is_err());

    // The routes answer their own methods only, and only to a caller with an identity.
    let wrong = lambda_http::http::Request::builder()
        .method("DELETE")
        .uri("http://127.0.0.1:8080/webhook-secret")
        .body(lambda_http::Body::Empty)
        .unwrap()
        .with_request_context(sluice::api::local_context(ALICE));
    let (status, v) = s.call(wrong).await;
    assert_eq!(
        (status, v["error"]["code"].as_str()),
        (400, Some("method_not_allowed"))
    );
    let anonymous = lambda_http::http::Request::builder()
        .method("GET")
        .uri("http://127.0.0.1:8080/webhook-secret")
        .body(lambda_http::Body::Empty)
        .unwrap();
    let (status, _) = s.call(anonymous).await;
    assert_eq!(status, 403);
}

#[tokio::test]
async fn a_job_redriven_out_of_failed_announces_its_next_end_as_a_new_message() {
    let s = Stack::new("webhook-redrive").await;
    let rx = Receiver::start(UP).await;
    let now = Millis::now();
    let mut job = sluice::job::JobRecord::queued(
        JobId::generate(),
        sluice::job::Owner::new(format!("iam:{ALICE}")),
        now,
        None,
        3,
        1,
    );
    job.webhook = Some(rx.url.clone());
    s.store.create(&job, s.retention, None).await.unwrap();
    let id = job.id.clone();
    // Its message reached the dead-letter queue: the reconciler ends it FAILED.
    let failed = s
        .store
        .fail_dead_lettered(&id, 5, Millis::now(), s.retention)
        .await
        .unwrap();
    assert!(failed.delivery.due_at.is_some(), "due in the same write");
    assert_eq!(backlog_pass(&s, Duration::ZERO).await.attempted.len(), 1);
    // An operator redrives it; it runs and succeeds.
    s.store
        .revive_dead_lettered(&id, failed.attempt, Millis::now())
        .await
        .unwrap();
    let claimed = s
        .store
        .claim(&id, "w1", Millis::now(), Duration::from_secs(30))
        .await
        .unwrap();
    let ended = s
        .store
        .finish(
            &id,
            claimed.attempt,
            sluice::store::Finish::Succeeded {
                result: "{}".into(),
            },
            Millis::now(),
            s.retention,
        )
        .await
        .unwrap();
    assert_eq!(ended.delivery.attempts, 0, "a new delivery record");
    assert_eq!(backlog_pass(&s, Duration::ZERO).await.attempted.len(), 1);

    let got = rx.acknowledged();
    let ids: Vec<&str> = got.iter().map(|r| r.headers.id.as_str()).collect();
    assert_eq!(
        ids,
        [
            webhook::message_id(&id, EventType::JobFailed, 0),
            webhook::message_id(&id, EventType::JobSucceeded, 1),
        ]
    );
    let secret = secret_of(&s, ALICE).await;
    for r in &got {
        assert_eq!(reference_verdict(&secret, &r.headers, &r.body), Ok(()));
    }
}

// The deployment's own announcements: every job's end published to SNS topics and an
// EventBridge bus, as the local stack sets them up (with an inbox queue subscribed to all).

/// What the events inbox got: an SNS notification or an EventBridge event.
#[derive(Debug, Clone, PartialEq)]
enum Published {
    Sns {
        topic: String,
        status: String,
        event_id: String,
        body: serde_json::Value,
    },
    Bus {
        detail_type: String,
        source: String,
        detail: serde_json::Value,
    },
}

impl Published {
    fn job_id(&self) -> String {
        let body = match self {
            Published::Sns { body, .. } => body,
            Published::Bus { detail, .. } => detail,
        };
        body["data"]["id"].as_str().unwrap_or_default().to_owned()
    }
}

/// A stack whose API marks every job it accepts as published, and its topics, bus and inbox.
async fn publishing(test: &str) -> (Stack, sluice::local::EventResources) {
    let mut s = Stack::new(test).await;
    let events = sluice::local::ensure_events(&s.aws, &s.name).await.unwrap();
    s.api = Api::new(
        s.store.clone(),
        Some(s.queue.clone()),
        sluice::config::ApiConfig {
            publishes: true,
            ..api_config(&s.res)
        },
    )
    .with_payloads(s.api_payloads());
    (s, events)
}

/// The worker's environment naming `targets`, with loopback webhooks allowed.
fn event_env(targets: &sluice::events::EventTargets) -> Vec<(&'static str, String)> {
    let mut env = vec![(sluice::env::WEBHOOK_ALLOW_LOOPBACK, "true".to_string())];
    for (var, value) in [
        (sluice::env::SUCCESS_TOPIC_ARN, &targets.success_topic),
        (sluice::env::ERROR_TOPIC_ARN, &targets.error_topic),
        (sluice::env::EVENT_BUS, &targets.bus),
    ] {
        if let Some(v) = value {
            env.push((var, v.clone()));
        }
    }
    env
}

fn publishing_worker(
    s: &Stack,
    id: &str,
    targets: &sluice::events::EventTargets,
) -> crate::support::WorkerProcess {
    let env = event_env(targets);
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    s.worker(id, &env)
}

/// As the backlog function runs it with the deployment's targets, `ahead` of now.
async fn publishing_pass(
    s: &Stack,
    targets: &sluice::events::EventTargets,
    ahead: Duration,
) -> Pass {
    outbox(s)
        .with_events(sluice::events::Publisher::from_sdk(&s.aws, targets.clone()))
        .deliver_due(Millis::now().plus(ahead), Duration::from_secs(60))
        .await
        .unwrap()
}

/// Everything the inbox at `url` gets: at least `want` messages within `within`, then whatever
/// else comes in the second after (a duplicate would).
async fn inbox(s: &Stack, url: &str, want: usize, within: Duration) -> Vec<Published> {
    let sqs = aws_sdk_sqs::Client::new(&s.aws);
    let start = Instant::now();
    let mut got = Vec::new();
    let mut settled_at: Option<Instant> = None;
    loop {
        if got.len() >= want && settled_at.is_none() {
            settled_at = Some(Instant::now());
        }
        if settled_at.is_some_and(|t| t.elapsed() > Duration::from_secs(1))
            || start.elapsed() > within
        {
            return got;
        }
        let out = sqs
            .receive_message()
            .queue_url(url)
            .max_number_of_messages(10)
            .wait_time_seconds(0)
            .send()
            .await
            .unwrap();
        for m in out.messages() {
            let raw: serde_json::Value = serde_json::from_str(m.body().unwrap()).unwrap();
            got.push(if raw["Type"] == "Notification" {
                Published::Sns {
                    topic: raw["TopicArn"].as_str().unwrap().to_owned(),
                    status: raw["MessageAttributes"]["status"]["Value"]
                        .as_str()
                        .unwrap_or_default()
                        .to_owned(),
                    event_id: raw["MessageAttributes"]["event_id"]["Value"]
                        .as_str()
                        .unwrap_or_default()
                        .to_owned(),
                    body: serde_json::from_str(raw["Message"].as_str().unwrap()).unwrap(),
                }
            } else {
                Published::Bus {
                    detail_type: raw["detail-type"].as_str().unwrap().to_owned(),
                    source: raw["source"].as_str().unwrap().to_owned(),
                    detail: raw["detail"].clone(),
                }
            });
            sqs.delete_message()
                .queue_url(url)
                .receipt_handle(m.receipt_handle().unwrap())
                .send()
                .await
                .unwrap();
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn every_end_is_published_once_to_its_topic_and_the_bus() {
    let (s, events) = publishing("events-once").await;
    let targets = &events.targets;
    // Cancelled while queued: the backlog function publishes it.
    let cancelled = s.submit(ALICE, json!({"text": "never"})).await;
    let (status, v) = s.call(delete(ALICE, &format!("/jobs/{cancelled}"))).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(
        publishing_pass(&s, targets, Duration::ZERO)
            .await
            .attempted
            .len(),
        1
    );

    // Ended by a worker: it publishes them itself.
    let _worker = publishing_worker(&s, "w1", targets);
    let succeeded = s.submit(ALICE, json!({"text": "a b c"})).await;
    let failed = s.submit(ALICE, json!({"fail": "permanent"})).await;
    // Accepted where the deployment published nothing: never published.
    let unpublished = Api::new(s.store.clone(), Some(s.queue.clone()), api_config(&s.res));
    let (status, v) = decode(
        unpublished
            .handle(post_json(
                ALICE,
                &json!({"input": {"text": "quiet"}}).to_string(),
                None,
            ))
            .await,
    );
    assert_eq!(status, 202, "{v}");
    let quiet: JobId = v["id"].as_str().unwrap().parse().unwrap();
    for id in [&succeeded, &failed, &quiet] {
        s.wait_terminal(ALICE, id, Duration::from_secs(30)).await;
    }

    let got = inbox(&s, &events.inbox_url, 6, Duration::from_secs(20)).await;
    assert_eq!(
        got.len(),
        6,
        "one message per end on a topic, one on the bus: {got:#?}"
    );
    assert!(
        got.iter().all(|p| p.job_id() != quiet.to_string()),
        "{got:#?}"
    );
    for (id, kind, status, topic, detail_type) in [
        (
            &succeeded,
            EventType::JobSucceeded,
            "SUCCEEDED",
            &targets.success_topic,
            "Job Succeeded",
        ),
        (
            &failed,
            EventType::JobFailed,
            "FAILED",
            &targets.error_topic,
            "Job Failed",
        ),
        (
            &cancelled,
            EventType::JobCancelled,
            "CANCELLED",
            &targets.error_topic,
            "Job Cancelled",
        ),
    ] {
        let mine: Vec<&Published> = got
            .iter()
            .filter(|p| p.job_id() == id.to_string())
            .collect();
        assert_eq!(mine.len(), 2, "{id}: {mine:#?}");
        let msg_id = webhook::message_id(id, kind, 0);
        let sns = mine
            .iter()
            .find_map(|p| match p {
                Published::Sns {
                    topic,
                    status,
                    event_id,
                    body,
                } => Some((topic, status, event_id, body)),
                _ => None,
            })
            .unwrap_or_else(|| panic!("{id} on no topic: {mine:#?}"));
        assert_eq!(Some(sns.0), topic.as_ref(), "{id}");
        assert_eq!((sns.1.as_str(), sns.2), (status, &msg_id));
        assert_eq!(
            (&sns.3["id"], &sns.3["type"]),
            (&json!(msg_id), &json!(kind.as_str()))
        );
        assert_eq!(sns.3["data"]["status"], status);
        let bus = mine
            .iter()
            .find_map(|p| match p {
                Published::Bus {
                    detail_type,
                    source,
                    detail,
                } => Some((detail_type, source, detail)),
                _ => None,
            })
            .unwrap_or_else(|| panic!("{id} not on the bus: {mine:#?}"));
        assert_eq!((bus.0.as_str(), bus.1.as_str()), (detail_type, "sluice"));
        assert_eq!(bus.2["id"], json!(msg_id));
        assert_eq!(bus.2["data"]["status"], status);
    }
    let (_, v) = s
        .call(get(ALICE, &format!("/jobs/{succeeded}"), None))
        .await;
    assert!(
        v.get("delivery").is_none(),
        "a job without a webhook shows no delivery: {v}"
    );

    // Nothing is left to publish, even a day later.
    let later = publishing_pass(&s, targets, Duration::from_secs(86_400)).await;
    assert_eq!(later.attempted, vec![], "{later:?}");
    assert_eq!(
        inbox(&s, &events.inbox_url, 0, Duration::from_secs(2)).await,
        vec![]
    );
}

#[tokio::test]
async fn a_webhook_retried_for_hours_publishes_the_end_once() {
    let (s, events) = publishing("events-webhook-down").await;
    let targets = &events.targets;
    let rx = Receiver::start(DOWN_503).await;
    let _worker = publishing_worker(&s, "w1", targets);
    let id = s
        .submit_job(ALICE, json!({"input": {"text": "hi"}, "webhook": rx.url}))
        .await;
    view_until(&s, &id, "a failed first attempt", |v| {
        v.delivery.as_ref().is_some_and(|d| d.attempts == 1)
    })
    .await;
    assert_eq!(
        inbox(&s, &events.inbox_url, 2, Duration::from_secs(20))
            .await
            .len(),
        2
    );

    // Retried twice more (down, then up): the webhook goes again, the events do not.
    publishing_pass(&s, targets, Duration::from_secs(60)).await;
    view_until(&s, &id, "a second attempt", |v| {
        v.delivery.as_ref().is_some_and(|d| d.attempts == 2)
    })
    .await;
    rx.set(UP);
    let pass = publishing_pass(&s, targets, Duration::from_secs(60 + 6 * 60 + 60)).await;
    assert_eq!(pass.attempted.len(), 1, "{pass:?}");
    let view = view_until(&s, &id, "delivered", |v| {
        state(v) == Some(DeliveryState::Delivered)
    })
    .await;
    assert_eq!(view.delivery.unwrap().attempts, 3);
    assert_eq!(rx.got().len(), 3);
    let again = inbox(&s, &events.inbox_url, 0, Duration::from_secs(2)).await;
    assert_eq!(
        again,
        vec![],
        "published once, though announced three times"
    );
}

#[tokio::test]
async fn a_topic_out_of_reach_is_retried_without_sending_the_webhook_again() {
    let (s, events) = publishing("events-topic-missing").await;
    let region = s.aws.region().unwrap().to_string();
    let missing = format!("{}-not-yet", s.name);
    let targets = sluice::events::EventTargets {
        success_topic: Some(format!("arn:aws:sns:{region}:123456789012:{missing}")),
        ..events.targets.clone()
    };
    let rx = Receiver::start(UP).await;
    let _worker = publishing_worker(&s, "w1", &targets);
    let id = s
        .submit_job(ALICE, json!({"input": {"text": "hi"}, "webhook": rx.url}))
        .await;
    // The webhook is delivered and shown so; the bus has the event; the topic is retried.
    let view = view_until(&s, &id, "the webhook delivered", |v| {
        state(v) == Some(DeliveryState::Delivered)
    })
    .await;
    assert_eq!(view.delivery.unwrap().last_status, Some(204));
    let got = inbox(&s, &events.inbox_url, 1, Duration::from_secs(20)).await;
    assert!(
        matches!(got.as_slice(), [Published::Bus { .. }]),
        "{got:#?}"
    );
    let pass = publishing_pass(&s, &targets, Duration::from_secs(60)).await;
    let [attempted] = pass.attempted.as_slice() else {
        panic!("one attempt at the topic: {pass:?}")
    };
    assert!(
        matches!(&attempted.end, sluice::store::DeliveryEnd::Retry { error, .. } if error.contains(&missing)),
        "{attempted:?}"
    );
    assert_eq!(rx.got().len(), 1, "the webhook is not sent again");

    // The topic comes: the next attempt on the schedule publishes, and only to it.
    let sns = aws_sdk_sns::Client::new(&s.aws);
    let arn = sns
        .create_topic()
        .name(&missing)
        .send()
        .await
        .unwrap()
        .topic_arn
        .unwrap();
    assert_eq!(Some(&arn), targets.success_topic.as_ref());
    let inbox_arn = sluice::local::queue_arn(&aws_sdk_sqs::Client::new(&s.aws), &events.inbox_url)
        .await
        .unwrap();
    sns.subscribe()
        .topic_arn(&arn)
        .protocol("sqs")
        .endpoint(inbox_arn)
        .send()
        .await
        .unwrap();
    let pass = publishing_pass(&s, &targets, Duration::from_secs(3600)).await;
    assert_eq!(pass.attempted.len(), 1, "{pass:?}");
    assert!(
        matches!(
            pass.attempted[0].end,
            sluice::store::DeliveryEnd::Delivered { .. }
        ),
        "{pass:?}"
    );
    let got = inbox(&s, &events.inbox_url, 1, Duration::from_secs(20)).await;
    assert!(
        matches!(got.as_slice(), [Published::Sns { topic, .. }] if *topic == arn),
        "{got:#?}"
    );
    assert_eq!(rx.got().len(), 1);
    let later = publishing_pass(&s, &targets, Duration::from_secs(86_400)).await;
    assert_eq!(later.attempted, vec![], "{later:?}");
}
