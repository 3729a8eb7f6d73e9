//! The local stack's HTTP server and the `sluice` client and command, end to end.

use std::time::Duration;

use serde_json::value::RawValue;
use sluice::client::{Client, ClientError, SubmitOptions};
use sluice::job::Status;

use crate::support::*;

pub(crate) async fn serve(s: &Stack) -> (String, tokio::sync::oneshot::Sender<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let api = s.api.clone();
    tokio::spawn(sluice::local::serve(api, listener, async move {
        let _ = stopped.await;
    }));
    (url, stop)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_client_submits_and_waits_over_http() {
    let s = Stack::new("http_client").await;
    let _w = s.worker("w1", &[]);
    let (url, _stop) = serve(&s).await;
    let client = Client::new(&url).unwrap();

    let input = RawValue::from_string(r#"{"text": "over the wire"}"#.into()).unwrap();
    let opts = SubmitOptions {
        idempotency_key: Some("k-1".into()),
        ..Default::default()
    };
    let job = client.submit(&input, &opts).await.unwrap();
    assert_eq!(job.status, Status::Queued);
    assert_eq!(
        job.url.as_deref(),
        Some(format!("{url}/jobs/{}", job.id).as_str())
    );
    let same = client.submit(&input, &opts).await.unwrap();
    assert_eq!(same.id, job.id);

    let done = client
        .wait(&job.id, Some(Duration::from_secs(30)))
        .await
        .unwrap();
    assert_eq!(done.status, Status::Succeeded);
    assert_eq!(done.result.unwrap()["echo"], "over the wire");

    match client
        .status("01JDQ3ZV1T8Y3G7Q0M9K2D4XWE", Duration::ZERO)
        .await
    {
        Err(ClientError::Api {
            status: 404, code, ..
        }) => assert_eq!(code, "not_found"),
        other => panic!("{other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_command_prints_for_people_and_scripts_and_fails_clearly() {
    let s = Stack::new("http_cli").await;
    let _w = s.worker("w1", &[]);
    let (url, _stop) = serve(&s).await;
    let run = |args: &[&str]| {
        let args: Vec<String> = ["--url", url.as_str()]
            .iter()
            .chain(args)
            .map(|a| a.to_string())
            .collect();
        async move {
            tokio::task::spawn_blocking(move || {
                let args: Vec<&str> = args.iter().map(String::as_str).collect();
                sluice_cli(&args)
            })
            .await
            .unwrap()
        }
    };

    let out = run(&[
        "--json",
        "submit",
        r#"{"text": "from the shell"}"#,
        "--wait",
        "--timeout",
        "30",
    ])
    .await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["status"], "SUCCEEDED");
    assert_eq!(v["result"]["words"], 3);

    let out = run(&["status", v["id"].as_str().unwrap()]).await;
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("status    SUCCEEDED") && text.contains("\"echo\": \"from the shell\""),
        "{text}"
    );

    let out = run(&["submit", r#"{"fail": "permanent"}"#, "--wait"]).await;
    assert_eq!(out.status.code(), Some(3), "a job that fails exits 3");
    assert!(String::from_utf8_lossy(&out.stdout).contains("status    FAILED"));

    let out = run(&["submit", "not json"]).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("the input argument is not valid JSON"));

    let out = run(&["status", "nope"]).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("no job with id nope (HTTP 404, not_found)")
    );
}

/// A web page can make a browser send requests to loopback through DNS rebinding, with its own
/// host name in `Host`: the local server answers only loopback names.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_local_server_refuses_hosts_other_than_loopback_names() {
    use std::io::{Read, Write};
    let s = Stack::new("host_check").await;
    let (url, _stop) = serve(&s).await;
    let addr = url.trim_start_matches("http://").to_owned();
    let port = addr.rsplit(':').next().unwrap().to_owned();
    let ask = |host: String| {
        let addr = addr.clone();
        tokio::task::spawn_blocking(move || {
            let mut conn = std::net::TcpStream::connect(&addr).unwrap();
            let body = r#"{"input": {"text": "rebound"}}"#;
            write!(
                conn,
                "POST /jobs HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            )
            .unwrap();
            let mut answer = String::new();
            conn.read_to_string(&mut answer).unwrap();
            answer
        })
    };
    for evil in [
        "attacker.example",
        "attacker.example:8080",
        "127.0.0.1.nip.io",
    ] {
        let answer = ask(evil.to_owned()).await.unwrap();
        assert!(answer.starts_with("HTTP/1.1 403"), "{evil}: {answer}");
        assert!(answer.contains("forbidden_host"), "{answer}");
    }
    for good in [
        format!("127.0.0.1:{port}"),
        format!("localhost:{port}"),
        "[::1]".into(),
    ] {
        let answer = ask(good.clone()).await.unwrap();
        assert!(answer.starts_with("HTTP/1.1 202"), "{good}: {answer}");
    }
}

/// Runs `scripts/smoke.sh` with the emulator's AWS settings and no SigV4 (the local API does not
/// check signatures), with `env` added.
pub(crate) fn smoke(env: &[(&str, String)]) -> std::process::Output {
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/smoke.sh");
    let mut cmd = std::process::Command::new("bash");
    cmd.arg(&script)
        .env("SLUICE_SMOKE_SIGV4", "0")
        .env("SLUICE_SMOKE_TIMEOUT", "30")
        .env("SLUICE_BIN", target_dir().join("sluice"))
        .env("SLUICE_SMOKE_OUTPUTS", "/nonexistent/outputs.json")
        .env_remove("SLUICE_URL")
        .envs(aws_env());
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().unwrap()
}

/// The smoke script's report, once it is known to have exited 0 (its output and errors otherwise).
pub(crate) fn smoke_report(out: &std::process::Output) -> String {
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    text
}

/// `make smoke`'s script against the local stack: it submits, waits, and reports the job, its
/// result and the seconds from submit to result; a job that fails makes it exit non-zero, and a
/// missing API URL says how to get one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_smoke_script_reports_the_job_and_its_time() {
    let s = Stack::new("smoke").await;
    let _w = s.worker("w1", &[]);
    let (url, _stop) = serve(&s).await;
    let run = |input: &'static str, url: Option<String>| {
        tokio::task::spawn_blocking(move || {
            let mut env = vec![("SLUICE_SMOKE_INPUT", input.to_string())];
            if let Some(u) = url {
                env.push(("SLUICE_URL", u));
            }
            smoke(&env)
        })
    };
    let out = run(r#"{"text": "smoke test"}"#, Some(url.clone()))
        .await
        .unwrap();
    let text = smoke_report(&out);
    assert!(text.contains("status: SUCCEEDED"), "{text}");
    let result = text
        .lines()
        .find_map(|l| l.strip_prefix("result: "))
        .expect("a result line");
    let result: serde_json::Value = serde_json::from_str(result).unwrap();
    assert_eq!(result["echo"], "smoke test", "{text}");
    let seconds: f64 = text
        .lines()
        .find_map(|l| l.strip_prefix("seconds:"))
        .expect("a seconds line")
        .trim()
        .parse()
        .unwrap();
    assert!(seconds > 0.0 && seconds < 30.0, "{seconds}");
    assert!(
        text.contains("path: unknown"),
        "no outputs, no service to read: {text}"
    );

    let out = run(r#"{"fail": "permanent"}"#, Some(url.clone()))
        .await
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(1),
        "a failed job fails the smoke test"
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("status: FAILED"));

    let out = run("{}", None).await.unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("set SLUICE_URL, or deploy with `make deploy`"),
        "{err}"
    );
}

/// The job records in the stack's table (not idempotency keys or scaling leases).
async fn job_records(s: &Stack) -> usize {
    let ddb = aws_sdk_dynamodb::Client::new(&s.aws);
    let items = ddb
        .scan()
        .table_name(&s.res.table_name)
        .send()
        .await
        .unwrap()
        .items
        .unwrap_or_default();
    items
        .iter()
        .filter_map(|i| i.get("id")?.as_s().ok())
        .filter(|id| id.parse::<sluice::job::JobId>().is_ok())
        .count()
}

/// A submit whose job record is written only after the function gave up on it (its answer was a
/// 503) is retried by the client with the key it made up for that submit: the caller gets one
/// job, and the table holds one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_client_retries_a_failed_submit_with_one_key_and_makes_one_job() {
    let s = Stack::new("client_retry").await;
    let faults = crate::faults::Faults::default();
    let store = faults.store(&s.aws, &s.res.table_name);
    let api = sluice::api::Api::new(store, Some(s.queue.clone()), api_config(&s.res));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(sluice::local::serve(api, listener, std::future::pending()));
    // The record's write reaches the table 9.8 s late: the submit has answered 503 by then.
    faults.fail(
        "TransactWriteItems",
        None,
        crate::faults::Fault::Delayed(Duration::from_millis(9_800)),
        1,
    );
    let client = Client::new(&url).unwrap();
    let input = RawValue::from_string(r#"{"text": "once"}"#.into()).unwrap();
    let job = client
        .submit(&input, &SubmitOptions::default())
        .await
        .unwrap();
    assert_eq!(faults.injected().values().sum::<u64>(), 1);
    // Let the late write land (or be refused, the key being taken).
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(job_records(&s).await, 1, "one submit, one job");
    let view = client.status(&job.id, Duration::ZERO).await.unwrap();
    assert_eq!(view.id, job.id);
}

/// `sluice dev` (what `make dev` runs) keeps its worker: one that is killed is started again,
/// and the terminal says so, so that jobs accepted meanwhile run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_local_stack_starts_a_killed_worker_again() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let listen = format!("127.0.0.1:{port}");
    let prefix = format!("devrestart{}", std::process::id());
    let log = target_dir()
        .join("integration-logs")
        .join("dev-restart.log");
    let mut dev = std::process::Command::new(target_dir().join("sluice"))
        .args([
            "dev",
            "--listen",
            listen.as_str(),
            "--prefix",
            prefix.as_str(),
        ])
        .envs(aws_env())
        .env("RUST_LOG", "info")
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let url = format!("http://{listen}");
    let client = Client::new(&url).unwrap();
    let input = RawValue::from_string(r#"{"text": "first"}"#.into()).unwrap();
    let started = std::time::Instant::now();
    let first = loop {
        match client.submit(&input, &SubmitOptions::default()).await {
            Ok(v) => break v,
            Err(e) => {
                assert!(
                    started.elapsed() < Duration::from_secs(30),
                    "the local API never answered: {e}"
                );
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    };
    let done = client
        .wait(&first.id, Some(Duration::from_secs(30)))
        .await
        .unwrap();
    assert_eq!(done.status, Status::Succeeded);
    // Kill the worker the stack started (the dev process's child).
    let children =
        std::fs::read_to_string(format!("/proc/{}/task/{}/children", dev.id(), dev.id())).unwrap();
    let worker: i32 = children
        .split_whitespace()
        .next()
        .expect("a worker runs")
        .parse()
        .unwrap();
    std::process::Command::new("kill")
        .args(["-KILL", &worker.to_string()])
        .status()
        .unwrap();
    let input = RawValue::from_string(r#"{"text": "after"}"#.into()).unwrap();
    let job = client
        .submit(&input, &SubmitOptions::default())
        .await
        .unwrap();
    // The killed worker's open long-poll may still take the message: it then runs once its
    // visibility timeout (60 s on the local stack) passes, on the worker started again.
    let done = client
        .wait(&job.id, Some(Duration::from_secs(90)))
        .await
        .unwrap();
    assert_eq!(
        done.status,
        Status::Succeeded,
        "a job accepted after the kill runs"
    );
    let _ = std::process::Command::new("kill")
        .args(["-TERM", &dev.id().to_string()])
        .status();
    let _ = dev.wait();
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        text.contains("the worker exited; jobs wait in the queue until it is started again"),
        "{text}"
    );
    assert!(text.contains("the worker was started again"), "{text}");
}
