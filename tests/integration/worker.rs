//! The worker, as a real `sluice-worker` process, against the emulator.

use std::time::{Duration, Instant};

use serde_json::json;
use serde_json::value::RawValue;
use sluice::job::Status;
use sluice::queue::Envelope;

use crate::support::*;

const SOON: Duration = Duration::from_secs(20);

#[tokio::test]
async fn a_submitted_job_runs_and_its_result_can_be_fetched() {
    let s = Stack::new("run_and_fetch").await;
    let _w = s.worker("w1", &[]);
    let id = s.submit(ALICE, json!({"text": "hello sluice world"})).await;
    let view = s.wait_terminal(ALICE, &id, SOON).await;
    assert_eq!(view.status, Status::Succeeded, "{view:?}");
    let result = view.result.unwrap();
    assert_eq!(result["echo"], "hello sluice world");
    assert_eq!(result["words"], 3);
    assert_eq!(view.attempt, 1);
    assert!(view.started_at.is_some() && view.finished_at.is_some());
    s.until_queue_empty(SOON).await;
}

#[tokio::test]
async fn a_retryable_failure_is_retried_until_it_succeeds() {
    let s = Stack::new("retry").await;
    let _w = s.worker("w1", &[]);
    let id = s
        .submit(ALICE, json!({"text": "flaky", "fail_attempts": 1}))
        .await;
    let view = s.wait_terminal(ALICE, &id, SOON).await;
    assert_eq!(
        (view.status, view.attempt),
        (Status::Succeeded, 2),
        "{view:?}"
    );
    assert_eq!(view.result.unwrap()["attempt"], 2);
}

#[tokio::test]
async fn a_permanent_failure_fails_the_job_at_once() {
    let s = Stack::new("permanent").await;
    let _w = s.worker("w1", &[]);
    let id = s.submit(ALICE, json!({"fail": "permanent"})).await;
    let view = s.wait_terminal(ALICE, &id, SOON).await;
    assert_eq!((view.status, view.attempt), (Status::Failed, 1), "{view:?}");
    assert_eq!(
        view.error.as_deref(),
        Some("the demo was asked to fail permanently")
    );

    // Retryable failures that never stop use up the attempts, then fail.
    let id = s.submit(ALICE, json!({"fail_attempts": 99})).await;
    let view = s.wait_terminal(ALICE, &id, Duration::from_secs(30)).await;
    assert_eq!((view.status, view.attempt), (Status::Failed, 3), "{view:?}");
    assert!(view.error.unwrap().contains("this is attempt 3"));
}

#[tokio::test]
async fn a_poison_message_reaches_the_dlq_while_the_queue_keeps_flowing() {
    let s = Stack::new("poison").await;
    s.queue.send("this is not a job".into()).await.unwrap();
    let _w = s.worker("w1", &[]);
    let id = s.submit(ALICE, json!({"text": "behind the poison"})).await;
    let view = s.wait_terminal(ALICE, &id, SOON).await;
    assert_eq!(view.status, Status::Succeeded);

    let start = Instant::now();
    let dead = loop {
        let got = s.dlq.receive(10, Duration::from_secs(1)).await.unwrap();
        if let Some(m) = got.into_iter().next() {
            break m;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "the poison message never reached the DLQ"
        );
    };
    assert_eq!(dead.body, "this is not a job");
    s.until_queue_empty(SOON).await;
}

#[tokio::test]
async fn a_duplicate_delivery_of_a_finished_job_is_deleted_without_running() {
    let s = Stack::new("duplicate").await;
    let _w = s.worker("w1", &[]);
    let id = s.submit(ALICE, json!({"text": "once"})).await;
    let view = s.wait_terminal(ALICE, &id, SOON).await;
    assert_eq!(view.status, Status::Succeeded);
    let before = s.store.get(&id).await.unwrap().unwrap();

    let input = RawValue::from_string(r#"{"text":"once"}"#.into()).unwrap();
    s.queue
        .send(Envelope::new(id.clone(), &input).encode().unwrap())
        .await
        .unwrap();
    s.until_queue_empty(SOON).await;
    let after = s.store.get(&id).await.unwrap().unwrap();
    assert_eq!(after, before, "the duplicate changed nothing");
    assert_eq!(after.attempt, 1);
}

#[tokio::test]
async fn a_worker_killed_mid_job_loses_only_its_lease() {
    let s = Stack::new("sigkill").await;
    let mut a = s.worker("doomed", &[]);
    let id = s
        .submit(ALICE, json!({"text": "survivor", "sleep_ms": 2500}))
        .await;
    s.until(&id, SOON, "the job starts", |j| j.status == Status::Running)
        .await;
    a.kill();

    let _b = s.worker("heir", &[]);
    let view = s.wait_terminal(ALICE, &id, Duration::from_secs(30)).await;
    assert_eq!(
        (view.status, view.attempt),
        (Status::Succeeded, 2),
        "{view:?}"
    );
    assert_eq!(view.result.unwrap()["worker"], "heir");
}

#[tokio::test]
async fn sigterm_drains_then_releases_unfinished_jobs_at_once() {
    let s = Stack::new("sigterm").await;
    // A long visibility timeout: without the release, the job would stay hidden for a minute.
    let mut w = s.worker(
        "leaving",
        &[
            ("SLUICE_DRAIN_SECONDS", "1"),
            ("SLUICE_VISIBILITY_TIMEOUT_SECONDS", "60"),
            ("SLUICE_LEASE_SECONDS", "60"),
        ],
    );
    let quick = s
        .submit(ALICE, json!({"text": "quick", "sleep_ms": 300}))
        .await;
    let slow = s
        .submit(ALICE, json!({"text": "slow", "sleep_ms": 60000}))
        .await;
    s.until(&slow, SOON, "the slow job starts", |j| {
        j.status == Status::Running
    })
    .await;
    s.until(&quick, SOON, "the quick job starts", |j| {
        j.status != Status::Queued
    })
    .await;

    w.signal("TERM");
    let status = w.exited(Duration::from_secs(15)).await;
    assert!(status.success(), "the worker exits cleanly: {status:?}");
    let quick_job = s.store.get(&quick).await.unwrap().unwrap();
    assert_eq!(
        quick_job.status,
        Status::Succeeded,
        "running jobs finish within the drain"
    );
    let released = s.store.get(&slow).await.unwrap().unwrap();
    assert_eq!(
        (released.status, released.attempt, released.releases),
        (Status::Queued, 1, 1)
    );

    let back = s.queue.receive(10, Duration::from_secs(2)).await.unwrap();
    assert_eq!(back.len(), 1, "the released job is visible at once");
    assert!(back[0].body.contains(&slow.to_string()));
}

#[tokio::test]
async fn cancelling_a_running_job_stops_it_at_the_next_heartbeat() {
    let s = Stack::new("cancel_running").await;
    let _w = s.worker("w1", &[]);
    let id = s
        .submit(ALICE, json!({"text": "long", "sleep_ms": 60000}))
        .await;
    s.until(&id, SOON, "the job starts", |j| j.status == Status::Running)
        .await;
    let (status, v) = s.call(delete(ALICE, &format!("/jobs/{id}"))).await;
    assert_eq!(
        (
            status,
            v["status"].as_str(),
            v["cancel_requested"].as_bool()
        ),
        (202, Some("RUNNING"), Some(true)),
        "{v}"
    );

    let asked = Instant::now();
    let view = s.wait_terminal(ALICE, &id, SOON).await;
    assert_eq!(view.status, Status::Cancelled, "{view:?}");
    assert!(
        asked.elapsed() < Duration::from_secs(10),
        "stopped within a few heartbeats"
    );
    s.until_queue_empty(SOON).await;
}

/// A worker deletes a message whose record never came once it is older than the orphan grace,
/// as its own clock tells. Should that clock run ahead of the queue's, the submit that sent the
/// message may still be writing its record: the worker takes the id first, so that record's
/// write fails (and its caller is told to retry) instead of leaving a QUEUED job that no message
/// will ever run.
#[tokio::test]
async fn an_orphan_deleted_early_leaves_no_record_without_a_message() {
    let s = Stack::new("orphan_bury").await;
    let input = RawValue::from_string(r#"{"text": "late record"}"#.into()).unwrap();
    let mut ids = Vec::new();
    for _ in 0..2 {
        let id = sluice::job::JobId::generate();
        s.queue
            .send(Envelope::new(id.clone(), &input).encode().unwrap())
            .await
            .unwrap();
        ids.push(id);
    }
    // Both messages look two minutes old to the worker: a clock that far ahead.
    let mut sent = 0;
    let started = Instant::now();
    while sent < ids.len() && started.elapsed() < SOON {
        for mut msg in s.queue.receive(10, Duration::from_secs(1)).await.unwrap() {
            msg.sent_at = sluice::time::Millis(msg.sent_at.0 - 120_000);
            s.queue.send_again(&msg, Duration::ZERO).await.unwrap();
            sent += 1;
        }
    }
    assert_eq!(sent, ids.len());
    let _w = s.worker("w1", &[]);
    s.until_queue_empty(SOON).await;

    // The submits' records come now, unkeyed and keyed: both are refused, and nothing is left.
    let record = |id: &sluice::job::JobId| {
        sluice::job::JobRecord::queued(
            id.clone(),
            sluice::job::Owner::new(format!("iam:{ALICE}")),
            sluice::time::Millis::now(),
            None,
            3,
            2,
        )
    };
    let unkeyed = s.store.create(&record(&ids[0]), s.retention, None).await;
    let keyed = s
        .store
        .create(
            &record(&ids[1]),
            s.retention,
            Some(("key-hash", "request-hash")),
        )
        .await;
    for (name, got) in [("unkeyed", unkeyed), ("keyed", keyed)] {
        let e = got.expect_err(name);
        assert!(e.is_retryable(), "{name}: {e}");
        let why = sluice::aws::DisplayErrorContext(&e).to_string();
        assert!(why.contains("deleted as an orphan"), "{name}: {why}");
    }
    for id in &ids {
        assert_eq!(s.store.get(id).await.unwrap(), None, "{id}");
    }
    assert_eq!(s.store.find_idempotent("key-hash").await.unwrap(), None);
}

/// The worker settings that run the chaos run's handler (child-process mode, the Python
/// helper), which appends a line per completed run to `ledger`.
fn ledger_handler(ledger: &std::path::Path) -> Vec<(&'static str, String)> {
    let command = json!([
        "python3",
        format!(
            "{}/tests/fixtures/chaos_handler.py",
            env!("CARGO_MANIFEST_DIR")
        )
    ])
    .to_string();
    vec![
        ("SLUICE_HANDLER", "process".into()),
        ("SLUICE_COMMAND", command),
        ("CHAOS_LOG", ledger.display().to_string()),
    ]
}

/// A worker whose clock runs 90 s ahead of AWS's judges leases by AWS's clock: it never takes
/// over a job whose holder is alive and renewing its lease, and still runs jobs of its own.
#[tokio::test]
async fn a_worker_whose_clock_runs_ahead_never_takes_over_a_live_job() {
    assert!(
        std::process::Command::new("faketime")
            .arg("--version")
            .output()
            .is_ok(),
        "this test shifts a worker's clock with Debian's faketime: apt-get install faketime"
    );
    let s = Stack::new("clock_ahead").await;
    let ledger = std::env::temp_dir().join(format!("{}-ledger", s.name));
    std::fs::write(&ledger, "").unwrap();
    let env = ledger_handler(&ledger);
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    // One job at a time: while it runs the job, only the other worker takes messages.
    let mut one = env.clone();
    one.push(("SLUICE_CONCURRENCY", "1"));
    let _w1 = s.worker("w1", &one);
    let id = s
        .submit(ALICE, json!({"text": "one run only", "sleep_ms": 8000}))
        .await;
    let started = Instant::now();
    while s.store.get(&id).await.unwrap().unwrap().status != Status::Running {
        assert!(started.elapsed() < SOON, "the job never started");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Another worker, its clock 90 s ahead (its monotonic clock left alone), meets copies of
    // the running job's message.
    // Its handler runs on the machine's clock: the skew is the worker's.
    let plain = json!([
        "env",
        "-u",
        "LD_PRELOAD",
        "-u",
        "FAKETIME",
        "python3",
        format!(
            "{}/tests/fixtures/chaos_handler.py",
            env!("CARGO_MANIFEST_DIR")
        )
    ])
    .to_string();
    let mut skewed: Vec<(&str, &str)> = env
        .iter()
        .map(|(k, v)| {
            if *k == "SLUICE_COMMAND" {
                (*k, plain.as_str())
            } else {
                (*k, *v)
            }
        })
        .collect();
    skewed.push(("FAKETIME_DONT_FAKE_MONOTONIC", "1"));
    let _w2 = s.worker_under("w2", &skewed, &["faketime", "-f", "+90s"]);
    let input =
        RawValue::from_string(r#"{"text": "one run only", "sleep_ms": 8000}"#.into()).unwrap();
    for _ in 0..3 {
        s.queue
            .send(Envelope::new(id.clone(), &input).encode().unwrap())
            .await
            .unwrap();
    }
    let view = s.wait_terminal(ALICE, &id, Duration::from_secs(40)).await;
    assert_eq!(view.status, Status::Succeeded, "{view:?}");
    assert_eq!(view.attempt, 1, "no second attempt took it over: {view:?}");
    // The skewed worker still runs work of its own.
    let other = s.submit(ALICE, json!({"text": "any worker"})).await;
    let view = s.wait_terminal(ALICE, &other, SOON).await;
    assert_eq!(view.status, Status::Succeeded, "{view:?}");
    let runs = std::fs::read_to_string(&ledger).unwrap();
    let of_first = runs
        .lines()
        .filter(|l| l.starts_with(&format!("start {id} ")))
        .count();
    assert_eq!(of_first, 1, "the job ran once: {runs}");
}

/// A run in the chaos handler's ledger: its worker, its start, and its end and outcome (times on
/// the machine's monotonic clock, in ns).
type Run = (String, i64, Option<(i64, String)>);

/// The runs of `id` in a ledger the chaos handler kept.
fn runs_in(ledger: &str, id: &sluice::job::JobId) -> Vec<Run> {
    let mut runs: Vec<Run> = Vec::new();
    for line in ledger.lines() {
        let f: Vec<&str> = line.split(' ').collect();
        if f.len() < 7 || f[1] != id.to_string() {
            continue;
        }
        let at: i64 = f[5].parse().unwrap();
        match f[0] {
            "start" => runs.push((f[3].to_owned(), at, None)),
            "end" => {
                if let Some(run) = runs.iter_mut().rev().find(|r| r.0 == f[3] && r.2.is_none()) {
                    run.2 = Some((at, f[6].to_owned()));
                }
            }
            _ => {}
        }
    }
    runs
}

/// A worker cut off from AWS while it runs a job (every lease renewal fails) stops the run
/// itself once half its lease has passed unrenewed: the worker that takes the job over when
/// the lease lapses never runs it beside the first run.
#[tokio::test]
async fn a_worker_cut_off_from_aws_stops_its_run_before_another_takes_over() {
    let s = Stack::new("fenced").await;
    let ledger = std::env::temp_dir().join(format!("{}-ledger", s.name));
    std::fs::write(&ledger, "").unwrap();
    let partition = crate::faults::Partition::start(s.aws.endpoint_url().unwrap()).await;
    let env = ledger_handler(&ledger);
    let mut env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    env.push(("SLUICE_CONCURRENCY", "1"));
    let url = partition.url();
    let mut cut_off = env.clone();
    cut_off.extend([("AWS_ENDPOINT_URL", url.as_str()), ("CHAOS_WORKER", "w1")]);
    let _w1 = s.worker("w1", &cut_off);
    let id = s
        .submit(
            ALICE,
            json!({"text": "one run at a time", "sleep_ms": 15000}),
        )
        .await;
    let started = Instant::now();
    loop {
        let r = s.store.get(&id).await.unwrap().unwrap();
        if r.status == Status::Running && r.worker_id.as_deref() == Some("w1") {
            break;
        }
        assert!(
            started.elapsed() < SOON,
            "the job never started on w1: {r:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Let the run get going, then cut w1 off, and start a worker that can take the job over.
    tokio::time::sleep(Duration::from_millis(500)).await;
    partition.cut(true);
    let mut other = env.clone();
    other.push(("CHAOS_WORKER", "w2"));
    let _w2 = s.worker("w2", &other);

    let view = s.wait_terminal(ALICE, &id, Duration::from_secs(60)).await;
    assert_eq!(view.status, Status::Succeeded, "{view:?}");
    let text = std::fs::read_to_string(&ledger).unwrap();
    let runs = runs_in(&text, &id);
    let first = runs.iter().find(|r| r.0 == "w1").expect("w1 ran the job");
    let second = runs.iter().find(|r| r.0 == "w2").expect("w2 took it over");
    let (ended, outcome) = first
        .2
        .clone()
        .unwrap_or_else(|| panic!("w1's run never ended: {text}"));
    assert_eq!(outcome, "stopped", "w1 stopped its run: {text}");
    assert!(
        ended < second.1,
        "w1's run ended before w2's began (ended {} ms after it): {text}",
        (ended - second.1) / 1_000_000
    );
}

/// The chaos run's model server as w1's, on a free loopback port, writing the run ledger at
/// `ledger` (made empty) and looking for a closed connection every `hangup_poll_ms`; and its URL.
fn ledger_model_server(
    ledger: &std::path::Path,
    hangup_poll_ms: u32,
) -> (std::process::Child, String) {
    std::fs::write(ledger, "").unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let server = std::process::Command::new("python3")
        .arg(format!(
            "{}/tests/fixtures/chaos_model_server.py",
            env!("CARGO_MANIFEST_DIR")
        ))
        .arg(port.to_string())
        .env("CHAOS_LOG", ledger)
        .env("CHAOS_WORKER", "w1")
        .env("CHAOS_HANGUP_POLL_MS", hangup_poll_ms.to_string())
        .spawn()
        .unwrap();
    (server, format!("http://127.0.0.1:{port}"))
}

/// A job stopped at its time limit and retried (`on_timeout: retry`) starts its next attempt
/// only once the model server has had its moment to notice the closed connection: never beside
/// the run it is still finishing.
#[tokio::test]
async fn a_job_timed_out_in_http_mode_is_retried_only_after_the_server_could_stop() {
    let s = Stack::new("http_timeout_retry").await;
    let ledger = std::env::temp_dir().join(format!("{}-ledger", s.name));
    // A server that looks for a closed connection 4 s into a run, and every 4 s after.
    let (mut server, url) = ledger_model_server(&ledger, 4000);
    let _w1 = s.worker(
        "w1",
        &[
            ("SLUICE_HANDLER", "http"),
            ("SLUICE_MODEL_URL", url.as_str()),
            ("SLUICE_CONCURRENCY", "1"),
            ("SLUICE_RETRY_BASE_SECONDS", "1"),
        ],
    );
    // Stopped at 2 s, retried a second later: the server notices the hang-up 2 s after it.
    let id = s
        .submit_job(
            ALICE,
            json!({"input": {"text": "one run at a time", "sleep_ms": 6000},
                   "timeout_seconds": 2, "on_timeout": "retry", "max_attempts": 2}),
        )
        .await;
    s.until(&id, SOON, "the job runs on w1", |j| {
        j.status == Status::Running && j.worker_id.as_deref() == Some("w1")
    })
    .await;
    let env = ledger_handler(&ledger);
    let mut other: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    other.push(("CHAOS_WORKER", "w2"));
    let _w2 = s.worker("w2", &other);
    let view = s.wait_terminal(ALICE, &id, Duration::from_secs(40)).await;
    let _ = server.kill();
    let _ = server.wait();
    assert_eq!(
        view.status,
        Status::Failed,
        "both attempts time out: {view:?}"
    );
    let text = std::fs::read_to_string(&ledger).unwrap();
    let mut runs = runs_in(&text, &id);
    runs.sort_by_key(|r| r.1);
    let [first, second] = runs.as_slice() else {
        panic!("two runs, one per attempt: {text}")
    };
    assert_eq!(first.0, "w1", "{text}");
    let (ended, _) = first
        .2
        .clone()
        .unwrap_or_else(|| panic!("the server's run never ended: {text}"));
    assert!(
        ended < second.1,
        "the server's run ended before the next attempt began on {} (ended {} ms after it): {text}",
        second.0,
        (ended - second.1) / 1_000_000
    );
}

/// A model server is told a run stopped only by its closed connection, and needs a moment to
/// notice. A job a stopping worker hands back starts elsewhere only once the server has had
/// that moment: never beside the run it is still finishing.
#[tokio::test]
async fn a_job_released_in_http_mode_starts_elsewhere_only_after_the_server_could_stop() {
    let s = Stack::new("http_release").await;
    let ledger = std::env::temp_dir().join(format!("{}-ledger", s.name));
    // A server that looks for a closed connection every 3 s.
    let (mut server, url) = ledger_model_server(&ledger, 3000);
    let w1 = s.worker(
        "w1",
        &[
            ("SLUICE_HANDLER", "http"),
            ("SLUICE_MODEL_URL", url.as_str()),
            ("SLUICE_CONCURRENCY", "1"),
            ("SLUICE_DRAIN_SECONDS", "1"),
        ],
    );
    let id = s
        .submit(
            ALICE,
            json!({"text": "one run at a time", "sleep_ms": 6000}),
        )
        .await;
    s.until(&id, SOON, "the job runs on w1", |j| {
        j.status == Status::Running && j.worker_id.as_deref() == Some("w1")
    })
    .await;
    let env = ledger_handler(&ledger);
    let mut other: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    other.push(("CHAOS_WORKER", "w2"));
    let _w2 = s.worker("w2", &other);
    tokio::time::sleep(Duration::from_millis(500)).await;
    // w1 stops: at its drain deadline it hands the job back.
    w1.signal("TERM");
    let view = s.wait_terminal(ALICE, &id, Duration::from_secs(40)).await;
    let _ = server.kill();
    let _ = server.wait();
    assert_eq!(view.status, Status::Succeeded, "{view:?}");
    let text = std::fs::read_to_string(&ledger).unwrap();
    let runs = runs_in(&text, &id);
    let first = runs.iter().find(|r| r.0 == "w1").expect("w1 ran the job");
    let second = runs.iter().find(|r| r.0 == "w2").expect("w2 ran it after");
    let (ended, _) = first
        .2
        .clone()
        .unwrap_or_else(|| panic!("w1's run never ended: {text}"));
    assert!(
        ended < second.1,
        "the server's run ended before w2's began (ended {} ms after it): {text}",
        (ended - second.1) / 1_000_000
    );
}
