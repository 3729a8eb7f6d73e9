//! Real compute on real `sluice-worker` processes: long and blocking jobs, time limits, panics,
//! health under load, and the child-process and HTTP model-server modes with real programs.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::json;
use sluice::job::Status;

use crate::support::*;

const SOON: Duration = Duration::from_secs(30);

fn fixture(name: &str) -> String {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
        .display()
        .to_string()
}

/// A fresh temporary directory for one worker's health report.
fn health_dir(test: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("sluice-health-{test}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Runs the real `sluice-worker healthcheck`, as ECS does, against the worker whose TMPDIR is `dir`.
fn healthcheck(dir: &PathBuf) -> Result<(), String> {
    let bin = std::env::current_exe()
        .unwrap()
        .parent()
        .and_then(|p| p.parent())
        .unwrap()
        .join("sluice-worker");
    let out = Command::new(bin)
        .arg("healthcheck")
        .env("TMPDIR", dir)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    if out.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).trim().to_owned())
    }
}

fn python_command(script: &str) -> String {
    json!(["python3", fixture(script)]).to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_jobs_filling_every_slot_keep_the_worker_healthy_and_a_wedged_one_is_not() {
    let s = Stack::new("health_under_load").await;
    let dir = health_dir("load");
    let dir_text = dir.display().to_string();
    let w = s.worker(
        "busy",
        &[("SLUICE_CONCURRENCY", "2"), ("TMPDIR", dir_text.as_str())],
    );
    // Two jobs of several heartbeats each fill both slots; a third waits for one.
    let mut ids = Vec::new();
    for text in ["one", "two", "three"] {
        ids.push(
            s.submit(ALICE, json!({"text": text, "sleep_ms": 5000}))
                .await,
        );
    }
    s.until(&ids[0], SOON, "the first job starts", |j| {
        j.status == Status::Running
    })
    .await;
    let mut checks = 0;
    let mut saw_progress = false;
    loop {
        let jobs: Vec<_> = records_of(&s, &ids).await;
        if jobs.iter().all(|j| j.status.is_terminal()) {
            break;
        }
        saw_progress |= jobs
            .iter()
            .any(|j| j.status == Status::Running && j.progress.is_some());
        healthcheck(&dir).unwrap_or_else(|e| panic!("unhealthy while busy: {e}"));
        checks += 1;
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert!(checks >= 10, "polled the health check {checks} times");
    assert!(saw_progress, "progress was stored while the jobs ran");
    for id in &ids {
        let job = s.store.get(id).await.unwrap().unwrap();
        assert_eq!((job.status, job.attempt), (Status::Succeeded, 1), "{job:?}");
    }

    // A wedged worker (stopped, as a process whose runtime hangs) turns unhealthy, and healthy
    // again when it resumes.
    w.signal("STOP");
    let stopped = Instant::now();
    let problem = loop {
        match healthcheck(&dir) {
            Err(e) => break e,
            Ok(()) => assert!(
                stopped.elapsed() < Duration::from_secs(20),
                "a stopped worker still counts as healthy"
            ),
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    assert!(problem.contains("has not reported for"), "{problem}");
    w.signal("CONT");
    let resumed = Instant::now();
    while let Err(e) = healthcheck(&dir) {
        assert!(
            resumed.elapsed() < Duration::from_secs(10),
            "still unhealthy: {e}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn records_of(s: &Stack, ids: &[sluice::job::JobId]) -> Vec<sluice::job::JobRecord> {
    let mut out = Vec::new();
    for id in ids {
        out.push(s.store.get(id).await.unwrap().unwrap());
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handler_that_blocks_past_the_visibility_timeout_runs_exactly_once() {
    let s = Stack::new("blocking").await;
    let _w = s.worker("blocker", &[("SLUICE_CONCURRENCY", "1")]);
    // Blocks its thread for more than twice the 3 s visibility timeout and lease.
    let id = s
        .submit(ALICE, json!({"text": "heavy", "block_ms": 7000}))
        .await;
    let view = s.wait_terminal(ALICE, &id, SOON).await;
    assert_eq!(
        (view.status, view.attempt),
        (Status::Succeeded, 1),
        "{view:?}"
    );
    assert_eq!(view.result.unwrap()["worker"], "blocker");
    s.until_queue_empty(SOON).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_past_its_time_limit_is_stopped_and_fails_or_retries_as_asked() {
    let s = Stack::new("time_limit").await;
    let _w = s.worker("timer", &[("SLUICE_CONCURRENCY", "2")]);
    let fails = s
        .submit_job(
            ALICE,
            json!({"input": {"sleep_ms": 60000}, "timeout_seconds": 2}),
        )
        .await;
    let retries = s.submit_job(ALICE, json!({
        "input": {"sleep_ms": 60000}, "timeout_seconds": 2, "on_timeout": "retry", "max_attempts": 2
    }))
    .await;
    let started = Instant::now();
    let view = s.wait_terminal(ALICE, &fails, SOON).await;
    assert_eq!((view.status, view.attempt), (Status::Failed, 1), "{view:?}");
    assert_eq!(
        view.error.as_deref(),
        Some("the job ran past its time limit of 2 s and was stopped")
    );
    assert_eq!(view.timeout_seconds, Some(2));
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "stopped near its limit"
    );

    let view = s.wait_terminal(ALICE, &retries, SOON).await;
    assert_eq!((view.status, view.attempt), (Status::Failed, 2), "{view:?}");
    assert!(view.error.unwrap().contains("time limit of 2 s"));

    // The slots are free again.
    let quick = s.submit(ALICE, json!({"text": "after"})).await;
    assert_eq!(
        s.wait_terminal(ALICE, &quick, SOON).await.status,
        Status::Succeeded
    );

    // The API refuses a limit above the deployment's.
    let (status, v) = s
        .call(post_json(
            ALICE,
            r#"{"input": 1, "timeout_seconds": 99999}"#,
            None,
        ))
        .await;
    assert_eq!(
        (status, v["error"]["code"].as_str()),
        (400, Some("invalid_timeout")),
        "{v}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_handler_fails_its_attempt_and_gives_everything_back() {
    let s = Stack::new("panic").await;
    let (agent, seen) = crate::scaling::agent_stand_in().await;
    let mut w = s.worker(
        "panicky",
        &[
            ("SLUICE_CONCURRENCY", "1"),
            ("ECS_AGENT_URI", agent.as_str()),
        ],
    );
    let body = json!({"input": {"panic": "index out of bounds"}, "max_attempts": 1});
    let id = s.submit_job(ALICE, body).await;
    let view = s.wait_terminal(ALICE, &id, SOON).await;
    assert_eq!((view.status, view.attempt), (Status::Failed, 1), "{view:?}");
    assert_eq!(
        view.error.as_deref(),
        Some("the handler panicked: index out of bounds")
    );
    // The one slot is free: the next job runs on the same worker.
    let next = s.submit(ALICE, json!({"text": "still here"})).await;
    let view = s.wait_terminal(ALICE, &next, SOON).await;
    assert_eq!(view.status, Status::Succeeded, "{view:?}");
    assert!(
        w.child.try_wait().unwrap().is_none(),
        "the worker keeps running"
    );
    // Protection came on for the jobs and comes off once the worker is idle.
    let start = Instant::now();
    loop {
        let last = seen.lock().unwrap().last().cloned();
        if last == Some(json!({"ProtectionEnabled": false})) {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "protection did not come off: {:?}",
            seen.lock().unwrap()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(
        seen.lock().unwrap().first(),
        Some(&json!({"ProtectionEnabled": true, "ExpiresInMinutes": 10}))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_python_handler_runs_end_to_end_with_progress_and_error_kinds() {
    let s = Stack::new("python_e2e").await;
    let command = python_command("helper_handler.py");
    let w = s.worker(
        "py",
        &[
            ("SLUICE_HANDLER", "process"),
            ("SLUICE_COMMAND", command.as_str()),
            ("SLUICE_CONCURRENCY", "2"),
        ],
    );
    let id = s
        .submit(
            ALICE,
            json!({"text": "hello python", "steps": 20, "step_seconds": 0.2}),
        )
        .await;
    let running = s
        .until(&id, SOON, "progress shows while it runs", |j| {
            j.status == Status::Running && j.progress.is_some()
        })
        .await;
    let p = running.progress.unwrap();
    assert!(p.message.unwrap().starts_with("step "), "progress message");
    let (status, v) = s.call(get(ALICE, &format!("/jobs/{id}"), None)).await;
    assert_eq!(status, 200);
    assert!(
        v["progress"]["fraction"].as_f64().is_some() || v["status"] == "SUCCEEDED",
        "{v}"
    );

    let view = s.wait_terminal(ALICE, &id, SOON).await;
    assert_eq!(
        (view.status, view.attempt),
        (Status::Succeeded, 1),
        "{view:?}"
    );
    assert_eq!(view.result.as_ref().unwrap()["upper"], "HELLO PYTHON");

    let empty = s.submit(ALICE, json!({"text": ""})).await;
    let view = s.wait_terminal(ALICE, &empty, SOON).await;
    assert_eq!((view.status, view.attempt), (Status::Failed, 1), "{view:?}");
    assert_eq!(view.error.as_deref(), Some("text is empty"));

    // The child's stderr (its print at start-up) is in the worker's log.
    let log = std::fs::read_to_string(&w.log).unwrap();
    assert!(log.contains("model loaded"), "the child's output is logged");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_child_that_crashes_mid_job_is_restarted_and_the_job_retried() {
    let s = Stack::new("python_crash").await;
    let command = python_command("helper_handler.py");
    let _w = s.worker(
        "crashy",
        &[
            ("SLUICE_HANDLER", "process"),
            ("SLUICE_COMMAND", command.as_str()),
            ("SLUICE_CONCURRENCY", "1"),
        ],
    );
    let id = s
        .submit(ALICE, json!({"text": "phoenix", "crash_on_attempt": 1}))
        .await;
    let view = s.wait_terminal(ALICE, &id, SOON).await;
    assert_eq!(
        (view.status, view.attempt),
        (Status::Succeeded, 2),
        "{view:?}"
    );
    assert_eq!(view.result.unwrap()["upper"], "PHOENIX");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_child_that_misbehaves_fails_only_its_job_and_never_wedges_the_worker() {
    let s = Stack::new("raw_child").await;
    let command = python_command("raw_handler.py");
    let _w = s.worker(
        "raw",
        &[
            ("SLUICE_HANDLER", "process"),
            ("SLUICE_COMMAND", command.as_str()),
            ("SLUICE_CONCURRENCY", "1"),
        ],
    );
    let first = s.submit(ALICE, json!({"mode": "echo"})).await;
    let view = s.wait_terminal(ALICE, &first, SOON).await;
    let mut pid = view.result.unwrap()["pid"].clone();
    let cases = [
        (
            "garbage",
            "the handler process wrote a line that is not JSON: Traceback",
        ),
        (
            "wrong_id",
            "answered for job \"01JDQ3ZV1T8Y3G7Q0M9K2D4XWE\", which it was not given",
        ),
        ("long_line", "lines are limited to 1048576 bytes"),
        ("silent", "the job ran past its time limit of 2 s"),
    ];
    for (mode, want) in cases {
        let body = json!({"input": {"mode": mode}, "max_attempts": 1, "timeout_seconds": 2});
        let id = s.submit_job(ALICE, body).await;
        let view = s.wait_terminal(ALICE, &id, SOON).await;
        assert_eq!(view.status, Status::Failed, "{mode}: {view:?}");
        let error = view.error.unwrap_or_default();
        assert!(error.contains(want), "{mode}: {error}");
        // The worker goes on: the next job succeeds on the same slot, in a fresh process (the
        // one that broke the protocol may still be running the job, or be out of step).
        let ok = s
            .submit(ALICE, json!({"mode": "echo", "after": mode}))
            .await;
        let view = s.wait_terminal(ALICE, &ok, SOON).await;
        assert_eq!(view.status, Status::Succeeded, "after {mode}: {view:?}");
        let now = view.result.unwrap()["pid"].clone();
        assert_ne!(now, pid, "after {mode}, the process was replaced");
        pid = now;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_whose_handler_cannot_start_says_why_and_exits() {
    let s = Stack::new("bad_command").await;
    let mut w = s.worker(
        "nothing",
        &[
            ("SLUICE_HANDLER", "process"),
            ("SLUICE_COMMAND", "/nonexistent/model-server --serve"),
        ],
    );
    let status = w.exited(SOON).await;
    assert!(!status.success());
    let log = std::fs::read_to_string(&w.log).unwrap();
    assert!(
        log.contains("the handler did not become ready: cannot start [\"/nonexistent/model-server\", \"--serve\"]"),
        "{log}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sagemaker_style_model_server_serves_jobs_once_it_answers_ping() {
    let s = Stack::new("http_model").await;
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    // The server "loads its model" for a second and a half: /ping and /invocations answer 503
    // until then, so a worker that did not wait would spend the job's first attempt.
    let mut server = Command::new("python3")
        .arg(fixture("model_server.py"))
        .arg(port.to_string())
        .arg("1.5")
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    let url = format!("http://127.0.0.1:{port}");
    let _w = s.worker(
        "sagemaker",
        &[
            ("SLUICE_HANDLER", "http"),
            ("SLUICE_MODEL_URL", url.as_str()),
        ],
    );
    let id = s
        .submit(
            ALICE,
            json!({"text": "over http", "steps": 10, "step_seconds": 0.3}),
        )
        .await;
    let running = s
        .until(&id, SOON, "progress posted by the server shows", |j| {
            j.progress.is_some()
        })
        .await;
    assert!(running
        .progress
        .unwrap()
        .message
        .unwrap()
        .starts_with("batch "));
    let view = s.wait_terminal(ALICE, &id, SOON).await;
    assert_eq!(
        (view.status, view.attempt),
        (Status::Succeeded, 1),
        "{view:?}"
    );
    let result = view.result.unwrap();
    assert_eq!(result["upper"], "OVER HTTP");
    assert_eq!(result["job"], id.to_string());
    assert_eq!(result["attempt"], "1");

    // A 4xx fails for good with the server's words; a 5xx is retried.
    let bad = s
        .submit(ALICE, json!({"status": 400, "say": "image too small"}))
        .await;
    let view = s.wait_terminal(ALICE, &bad, SOON).await;
    assert_eq!((view.status, view.attempt), (Status::Failed, 1), "{view:?}");
    assert_eq!(
        view.error.as_deref(),
        Some("the model server answered 400: image too small")
    );
    // At the time limit the request is dropped and the job fails as a timeout, not as a
    // server that could not be reached.
    let body =
        json!({"input": {"text": "slow", "steps": 50, "step_seconds": 0.2}, "timeout_seconds": 2});
    let slow = s.submit_job(ALICE, body).await;
    let view = s.wait_terminal(ALICE, &slow, SOON).await;
    assert_eq!((view.status, view.attempt), (Status::Failed, 1), "{view:?}");
    assert_eq!(
        view.error.as_deref(),
        Some("the job ran past its time limit of 2 s and was stopped")
    );
    // An answer over the inline result limit is the job's result file, streamed to disk and
    // stored with its content type; the view gives a URL to fetch it.
    let huge = s
        .submit(ALICE, json!({"status": 200, "say": "x".repeat(400_000)}))
        .await;
    let view = s.wait_terminal(ALICE, &huge, SOON).await;
    assert_eq!(
        (view.status, view.attempt),
        (Status::Succeeded, 1),
        "{view:?}"
    );
    assert_eq!(view.result, None);
    let file = view.result_file.expect("the answer is a file");
    assert_eq!(
        (file.size, file.content_type.as_str()),
        (400_000, "text/plain")
    );
    let got = reqwest::get(file.url.unwrap())
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert_eq!(got.len(), 400_000);
    assert!(got.iter().all(|b| *b == b'x'));
    let busy = s.submit(ALICE, json!({"status": 503, "say": "busy"})).await;
    let view = s.wait_terminal(ALICE, &busy, Duration::from_secs(40)).await;
    assert_eq!((view.status, view.attempt), (Status::Failed, 3), "{view:?}");
    let _ = server.kill();
    let _ = server.wait();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_child_takes_what_it_started_along() {
    let s = Stack::new("process_group").await;
    let dir = health_dir("group");
    let pidfile = dir.join("grandchild.pid");
    // A shell that starts a long-lived helper, then becomes the handler.
    let script = format!(
        "sleep 300 & echo $! > {}; exec python3 {}",
        pidfile.display(),
        fixture("raw_handler.py")
    );
    let command = json!(["sh", "-c", script]).to_string();
    // The worker runs under a parent that waits for it alone, as a container's PID 1 without an
    // init: an orphan that reached it would stay a zombie. The worker must take its handler's
    // orphans and wait for them itself.
    let _w = s.worker_under(
        "group",
        &[
            ("SLUICE_HANDLER", "process"),
            ("SLUICE_COMMAND", command.as_str()),
            ("SLUICE_CONCURRENCY", "1"),
        ],
        &["python3", fixture("no_init.py").as_str()],
    );
    let body = json!({"input": {"mode": "silent"}, "max_attempts": 1, "timeout_seconds": 2});
    let id = s.submit_job(ALICE, body).await;
    let grandchild = loop {
        if let Ok(text) = std::fs::read_to_string(&pidfile) {
            if let Ok(pid) = text.trim().parse::<u32>() {
                break pid;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let view = s.wait_terminal(ALICE, &id, SOON).await;
    assert_eq!(view.status, Status::Failed, "{view:?}");
    // Killed with its group, the orphan comes to the worker (its subreaper), which waits for
    // it: it neither runs on nor stays a zombie.
    let start = Instant::now();
    while std::path::Path::new(&format!("/proc/{grandchild}")).exists() {
        let stat = std::fs::read_to_string(format!("/proc/{grandchild}/stat")).unwrap_or_default();
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "the killed handler's child {grandchild} is still there: {stat}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// How many times the handler process started each job, from the lines the fixture handlers
/// write to stderr ("running {id} in mode …"), which the worker copies into its log.
fn runs_by_job(log: &std::path::Path) -> std::collections::HashMap<String, u32> {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let mut runs = std::collections::HashMap::new();
    for line in text.lines() {
        if let Some(rest) = line.split("running ").nth(1) {
            if let Some((id, _)) = rest.split_once(" in mode ") {
                *runs.entry(id.trim().to_owned()).or_insert(0) += 1;
            }
        }
    }
    runs
}

/// Every attempt a job spent was a run of it: attempts are for the job's own failures, never
/// for a handler that could not take it.
async fn assert_attempts_are_runs(s: &Stack, log: &std::path::Path, ids: &[sluice::job::JobId]) {
    let runs = runs_by_job(log);
    for job in records_of(s, ids).await {
        let ran = runs.get(&job.id.to_string()).copied().unwrap_or(0);
        assert_eq!(
            job.attempts_used(),
            ran,
            "job {} spent {} attempts in {ran} runs: {job:?}",
            job.id,
            job.attempts_used()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handler_that_crashes_on_every_job_stops_taking_jobs_and_says_so() {
    let s = Stack::new("crash_loop").await;
    let dir = health_dir("crash_loop");
    let flag = dir.join("crash");
    std::fs::write(&flag, "").unwrap();
    let command = python_command("raw_handler.py");
    let dir_text = dir.display().to_string();
    let w = s.worker(
        "crashloop",
        &[
            ("SLUICE_HANDLER", "process"),
            ("SLUICE_COMMAND", command.as_str()),
            ("SLUICE_CONCURRENCY", "2"),
            ("TMPDIR", dir_text.as_str()),
        ],
    );
    let flag_text = flag.display().to_string();
    let mut ids = Vec::new();
    for n in 0..5 {
        let input = json!({"mode": "exit_while", "flag": flag_text, "n": n});
        ids.push(
            s.submit_job(ALICE, json!({"input": input, "max_attempts": 10}))
                .await,
        );
    }
    // Crashes on three different jobs in a row: the program is broken, not one input. The
    // worker says so to ECS's health check.
    let start = Instant::now();
    loop {
        match healthcheck(&dir) {
            Err(e) if e.contains("different jobs in a row (the last: it exited") => break,
            other => {
                assert!(
                    start.elapsed() < SOON,
                    "the worker never reported its crash-looping handler: {other:?}"
                );
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
    // Meanwhile it takes one job at a time, after a growing pause: a handful of crashes in four
    // seconds, where restarting every second on both slots would crash eight times.
    let before: u32 = runs_by_job(&w.log).values().sum();
    tokio::time::sleep(Duration::from_secs(4)).await;
    let during: u32 = runs_by_job(&w.log).values().sum::<u32>() - before;
    assert!(
        during <= 3,
        "{during} crashes in 4 s after the handler was found broken"
    );
    // Mended, the program gets its jobs back: every one succeeds, each attempt a real run.
    std::fs::remove_file(&flag).unwrap();
    for id in &ids {
        let view = s.wait_terminal(ALICE, id, Duration::from_secs(90)).await;
        assert_eq!(view.status, Status::Succeeded, "{view:?}");
    }
    assert_attempts_are_runs(&s, &w.log, &ids).await;
    let start = Instant::now();
    while let Err(e) = healthcheck(&dir) {
        assert!(start.elapsed() < SOON, "still unhealthy: {e}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_holds_no_more_jobs_than_it_has_processes_up() {
    let s = Stack::new("slots_down").await;
    let dir = health_dir("slots_down");
    let slow = dir.join("slow-restart");
    // A process that served its job and exited takes four seconds to come back while `slow`
    // exists, as a model that loads slowly does.
    let script = format!(
        "if [ -e {} ]; then sleep 4; fi; exec python3 {}",
        slow.display(),
        fixture("raw_handler.py")
    );
    let command = json!(["sh", "-c", script]).to_string();
    let w = s.worker(
        "slotsdown",
        &[
            ("SLUICE_HANDLER", "process"),
            ("SLUICE_COMMAND", command.as_str()),
            ("SLUICE_CONCURRENCY", "3"),
        ],
    );
    let first = s.submit(ALICE, json!({"mode": "echo"})).await;
    s.wait_terminal(ALICE, &first, SOON).await;
    std::fs::write(&slow, "").unwrap();
    // Two of the three processes exit after their job, and are down for four seconds.
    let byes = [
        s.submit(ALICE, json!({"mode": "bye", "n": 1})).await,
        s.submit(ALICE, json!({"mode": "bye", "n": 2})).await,
    ];
    for id in &byes {
        s.wait_terminal(ALICE, id, SOON).await;
    }
    // Three jobs of 1.5 s with a limit of 2 s each: one process is up, so the worker must take
    // them one at a time. Held all at once, two would wait out their limits without running.
    let mut ids = Vec::new();
    for n in 0..3 {
        let input = json!({"mode": "sleep", "seconds": 1.5, "n": n});
        ids.push(
            s.submit_job(
                ALICE,
                json!({"input": input, "timeout_seconds": 2, "max_attempts": 1}),
            )
            .await,
        );
    }
    for id in &ids {
        let view = s.wait_terminal(ALICE, id, SOON).await;
        assert_eq!(view.status, Status::Succeeded, "{view:?}");
    }
    assert_attempts_are_runs(&s, &w.log, &ids).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_model_server_that_restarts_costs_no_job_an_attempt() {
    let s = Stack::new("http_restart").await;
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let start_server = || {
        Command::new("python3")
            .arg(fixture("model_server.py"))
            .arg(port.to_string())
            .stdin(Stdio::null())
            .spawn()
            .unwrap()
    };
    let mut server = start_server();
    let url = format!("http://127.0.0.1:{port}");
    let dir = health_dir("http_restart");
    let dir_text = dir.display().to_string();
    let w = s.worker(
        "restart",
        &[
            ("SLUICE_HANDLER", "http"),
            ("SLUICE_MODEL_URL", url.as_str()),
            ("TMPDIR", dir_text.as_str()),
        ],
    );
    let warm = s.submit(ALICE, json!({"text": "warm"})).await;
    assert_eq!(
        s.wait_terminal(ALICE, &warm, SOON).await.status,
        Status::Succeeded
    );
    // The server goes away for six seconds (a restart, a redeploy of its container); jobs
    // arrive meanwhile. With three attempts a second apart they would all be spent.
    let _ = server.kill();
    let _ = server.wait();
    let mut ids = Vec::new();
    for n in 0..3 {
        ids.push(s.submit(ALICE, json!({"text": format!("job {n}")})).await);
    }
    tokio::time::sleep(Duration::from_secs(6)).await;
    // Away is not unhealthy yet: the worker waits for the server, as for a process restarting.
    assert_eq!(healthcheck(&dir), Ok(()));
    let mut server = start_server();
    for id in &ids {
        let view = s.wait_terminal(ALICE, id, SOON).await;
        assert_eq!(view.status, Status::Succeeded, "{view:?}");
    }
    for job in records_of(&s, &ids).await {
        assert_eq!(job.attempts_used(), 1, "{job:?}");
    }
    let log = std::fs::read_to_string(&w.log).unwrap();
    assert!(
        log.contains("taking no jobs until GET /ping answers"),
        "the worker says why it takes no jobs"
    );
    let _ = server.kill();
    let _ = server.wait();
}
