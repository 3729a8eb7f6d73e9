//! Pause and resume, with real worker processes against the emulator: the operators' routes,
//! jobs that wait while paused, a running job that finishes, a deadline that still applies, and
//! a resume that runs what waited.

use std::time::{Duration, Instant};

use serde_json::json;
use sluice::job::Status;
use sluice::time::Millis;

use crate::support::*;

const SOON: Duration = Duration::from_secs(30);

fn pipeline_request(
    caller: &str,
    method: &str,
    path: &str,
    body: Option<&str>,
) -> lambda_http::Request {
    use lambda_http::RequestExt;
    let mut b = lambda_http::http::Request::builder()
        .method(method)
        .uri(format!("http://127.0.0.1:8080{path}"))
        .header("host", "127.0.0.1:8080");
    if body.is_some() {
        b = b.header("content-type", "application/json");
    }
    let body = body.map_or(lambda_http::Body::Empty, |t| {
        lambda_http::Body::from(t.to_owned())
    });
    b.body(body)
        .unwrap()
        .with_request_context(sluice::api::local_context(caller))
}

/// Waits until the worker's log holds `line`.
async fn until_logged(w: &WorkerProcess, line: &str, within: Duration) {
    let start = Instant::now();
    loop {
        let log = std::fs::read_to_string(&w.log).unwrap_or_default();
        if log.contains(line) {
            return;
        }
        assert!(
            start.elapsed() < within,
            "the worker did not log {line:?} within {within:?}; see {}",
            w.log.display()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_pipeline_finishes_what_it_holds_and_resume_runs_what_waited() {
    let s = Stack::new("pause_resume").await;
    // Its own temporary directory, where it writes its health report.
    let tmp = std::env::temp_dir().join(format!("sluice-pause-{}", s.name));
    std::fs::create_dir_all(&tmp).unwrap();
    let w = s.worker(
        "w1",
        &[
            ("SLUICE_CONCURRENCY", "2"),
            ("TMPDIR", tmp.to_str().unwrap()),
        ],
    );
    let health = || {
        let text = std::fs::read_to_string(tmp.join("sluice-worker.health")).unwrap_or_default();
        serde_json::from_str::<serde_json::Value>(&text).unwrap_or_default()
    };

    // A long job starts, then the operator pauses.
    let long = s.submit(ALICE, json!({"sleep_ms": 4000})).await;
    s.until(&long, SOON, "the long job starts", |j| {
        j.status == Status::Running
    })
    .await;
    let (status, v) = s
        .call(pipeline_request(
            OPERATOR,
            "POST",
            "/pipeline/pause",
            Some(r#"{"reason": "model upgrade"}"#),
        ))
        .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(
        (&v["state"], &v["by"], &v["reason"], &v["changed"]),
        (
            &json!("paused"),
            &json!(OPERATOR),
            &json!("model upgrade"),
            &json!(true)
        ),
        "{v}"
    );
    until_logged(&w, "pipeline paused: taking no new jobs", SOON).await;
    // Paused is healthy, and the health report says so.
    let start = Instant::now();
    while !health()["note"].as_str().unwrap_or("").contains("paused") {
        assert!(start.elapsed() < SOON, "no paused note in {}", health());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(health()["problem"], json!(null), "{}", health());

    // A worker started while paused takes nothing either.
    let w2 = s.worker("w2", &[]);
    until_logged(&w2, "pipeline paused: taking no new jobs", SOON).await;

    // Jobs are still accepted, and wait; one of them with a short deadline.
    let waiting = [
        s.submit(ALICE, json!({"text": "first in line"})).await,
        s.submit(ALICE, json!({"text": "second in line"})).await,
    ];
    let (status, v) = s
        .call(post_json(
            ALICE,
            r#"{"input": {"text": "in a hurry"}, "deadline_seconds": 1}"#,
            None,
        ))
        .await;
    assert_eq!(status, 202, "accepted while paused: {v}");
    let hurried: sluice::job::JobId = v["id"].as_str().unwrap().parse().unwrap();

    // The job the worker held finishes while paused.
    let done = s.wait_terminal(ALICE, &long, SOON).await;
    assert_eq!(done.status, Status::Succeeded, "{done:?}");

    // Nothing new runs: well past a poll and a long poll, the waiting jobs have not started.
    tokio::time::sleep(Duration::from_secs(4)).await;
    for id in waiting.iter().chain([&hurried]) {
        let job = s.store.get(id).await.unwrap().unwrap();
        assert_eq!((job.status, job.attempt), (Status::Queued, 0), "{job:?}");
    }

    // The deadline still applies: the backlog function's pass (the local stack's every few
    // seconds) ends the job EXPIRED from the open-deadlines index, and leaves the others.
    let expired = sluice::pipeline::expire_overdue(&s.store, Millis::now(), SOON)
        .await
        .unwrap();
    assert_eq!(expired, vec![hurried.clone()]);
    let view = s.wait_terminal(ALICE, &hurried, SOON).await;
    assert_eq!(view.status, Status::Expired, "{view:?}");
    assert_eq!(
        view.error.as_deref(),
        Some("the deadline passed before the job started")
    );

    // The operator looks, then resumes: the waiting jobs run.
    let (status, v) = s
        .call(pipeline_request(OPERATOR, "GET", "/pipeline", None))
        .await;
    assert_eq!((status, &v["state"]), (200, &json!("paused")), "{v}");
    let (status, v) = s
        .call(pipeline_request(OPERATOR, "POST", "/pipeline/resume", None))
        .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(
        (&v["state"], &v["changed"]),
        (&json!("running"), &json!(true)),
        "{v}"
    );
    for id in &waiting {
        let view = s.wait_terminal(ALICE, id, SOON).await;
        assert_eq!(
            (view.status, view.attempt),
            (Status::Succeeded, 1),
            "{view:?}"
        );
    }
    until_logged(&w, "pipeline resumed: taking jobs again", SOON).await;
    s.until_queue_empty(SOON).await;
    let _ = std::fs::remove_dir_all(&tmp);
}

/// Only operators reach the pipeline's routes, and every refusal is a JSON error that says what
/// to do.
#[tokio::test]
async fn only_operators_may_read_pause_or_resume_the_pipeline() {
    let s = Stack::new("pipeline_routes").await;
    let routes = [
        ("GET", "/pipeline", None),
        ("POST", "/pipeline/pause", Some(r#"{"reason": "x"}"#)),
        ("POST", "/pipeline/resume", None),
    ];
    for (method, path, body) in routes {
        let (status, v) = s.call(pipeline_request(ALICE, method, path, body)).await;
        assert_eq!(status, 403, "{method} {path}: {v}");
        assert_eq!(v["error"]["code"], "not_operator", "{v}");
        let message = v["error"]["message"].as_str().unwrap();
        assert!(
            message.contains(ALICE) && message.contains("SLUICE_OPERATORS"),
            "{message}"
        );
    }
    let (_, v) = s
        .call(pipeline_request(OPERATOR, "GET", "/pipeline", None))
        .await;
    assert_eq!(v, json!({"state": "running"}), "a pipeline nobody paused");

    // A deployment that names no operators refuses everyone, and says how to name them.
    let closed = sluice::api::Api::new(
        s.store.clone(),
        Some(s.queue.clone()),
        sluice::config::ApiConfig {
            operators: Vec::new(),
            ..api_config(&s.res)
        },
    );
    let (status, v) = decode(
        closed
            .handle(pipeline_request(OPERATOR, "POST", "/pipeline/pause", None))
            .await,
    );
    assert_eq!((status, &v["error"]["code"]), (403, &json!("not_operator")));
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("names no operators"),
        "{v}"
    );

    // The operator's mistakes: each a 4xx with a code and a message.
    let long = format!(r#"{{"reason": "{}"}}"#, "x".repeat(501));
    let mistakes: Vec<(&str, &str, Option<&str>, u16, &str)> = vec![
        ("POST", "/pipeline/pause", Some("{"), 400, "invalid_json"),
        (
            "POST",
            "/pipeline/pause",
            Some(r#"{"why": "x"}"#),
            400,
            "invalid_json",
        ),
        (
            "POST",
            "/pipeline/pause",
            Some(long.as_str()),
            400,
            "invalid_reason",
        ),
        (
            "POST",
            "/pipeline/pause",
            Some(r#"{"reason": "a\nb"}"#),
            400,
            "invalid_reason",
        ),
        ("DELETE", "/pipeline", None, 400, "method_not_allowed"),
        ("GET", "/pipeline/pause", None, 400, "method_not_allowed"),
        ("POST", "/pipeline/stop", None, 404, "no_route"),
    ];
    for (method, path, body, want_status, want_code) in mistakes {
        let (status, v) = s.call(pipeline_request(OPERATOR, method, path, body)).await;
        assert_eq!(
            (status, v["error"]["code"].as_str()),
            (want_status, Some(want_code)),
            "{method} {path} {body:?}: {v}"
        );
    }
    let mut text = pipeline_request(OPERATOR, "POST", "/pipeline/pause", Some("reason=x"));
    text.headers_mut()
        .insert("content-type", "text/plain".parse().unwrap());
    let (status, v) = s.call(text).await;
    assert_eq!(
        (status, &v["error"]["code"]),
        (415, &json!("unsupported_media_type"))
    );

    // Pause and resume are idempotent: a second one changes nothing and says so.
    let (_, first) = s
        .call(pipeline_request(
            OPERATOR,
            "POST",
            "/pipeline/pause",
            Some(r#"{"reason": "first"}"#),
        ))
        .await;
    let (status, again) = s
        .call(pipeline_request(
            OPERATOR,
            "POST",
            "/pipeline/pause",
            Some(r#"{"reason": "second"}"#),
        ))
        .await;
    assert_eq!(status, 200);
    assert_eq!(
        (&again["changed"], &again["reason"]),
        (&json!(false), &json!("first"))
    );
    assert_eq!(again["since"], first["since"]);
    let (_, resumed) = s
        .call(pipeline_request(OPERATOR, "POST", "/pipeline/resume", None))
        .await;
    assert_eq!(
        (&resumed["state"], &resumed["changed"], &resumed["reason"]),
        (&json!("running"), &json!(true), &json!(null))
    );
    let (_, again) = s
        .call(pipeline_request(OPERATOR, "POST", "/pipeline/resume", None))
        .await;
    assert_eq!(again["changed"], json!(false));
}

/// `sluice pause` and `sluice resume` against the local API, as the README shows them (the
/// report's view of the pipeline is in the scaling tests, beside its ECS service).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_pauses_and_resumes_the_pipeline() {
    let s = Stack::new("pipeline_cli").await;
    let api = sluice::api::Api::new(
        s.store.clone(),
        Some(s.queue.clone()),
        sluice::config::ApiConfig {
            operators: vec![sluice::local::LOCAL_IDENTITY.parse().unwrap()],
            ..api_config(&s.res)
        },
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(sluice::local::serve(api, listener, std::future::pending()));
    let cli = |args: Vec<&str>| {
        let url = url.clone();
        let args: Vec<String> = args.into_iter().map(str::to_owned).collect();
        tokio::task::spawn_blocking(move || {
            let mut all = vec!["--url".to_owned(), url];
            all.extend(args);
            let refs: Vec<&str> = all.iter().map(String::as_str).collect();
            sluice_cli(&refs)
        })
    };
    let out = cli(vec!["pause", "--reason", "nightly maintenance"])
        .await
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.starts_with("pipeline paused since ")
            && text.contains(&format!("by {}", sluice::local::LOCAL_IDENTITY))
            && text.contains("(nightly maintenance)"),
        "{text}"
    );
    let out = cli(vec!["pause"]).await.unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("pipeline already paused"));

    let out = cli(vec!["pipeline"]).await.unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.starts_with("pipeline paused since ") && text.contains("(nightly maintenance)"),
        "{text}"
    );

    let out = cli(vec!["--json", "resume"]).await.unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        (&v["state"], &v["changed"]),
        (&json!("running"), &json!(true)),
        "{v}"
    );
}
