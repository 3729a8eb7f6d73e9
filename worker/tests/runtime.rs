//! The worker runtime in-process, against the emulator: what its requests look like.

#[path = "../../tests/integration/support.rs"]
#[allow(dead_code)]
mod support;

#[path = "../../tests/integration/faults.rs"]
#[allow(dead_code)]
mod faults;

use std::time::Duration;

use serde_json::json;
use sluice::aws::RequestCounter;
use sluice::job::{JobId, JobRecord, Owner, Status};
use sluice::queue::{Envelope, JobQueue};
use sluice::store::JobStore;
use sluice::time::Millis;
use sluice_worker::{handler_fn, run_with, JobContext, JobError, WorkerConfig};
use support::Stack;

/// A worker running in this process, on the test's runtime, until it is stopped.
struct InProcess {
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl InProcess {
    fn start<H: sluice_worker::Handler>(
        handler: H,
        config: WorkerConfig,
        store: JobStore,
        queue: JobQueue,
    ) -> Self {
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(run_with(handler, config, store, queue, async {
            let _ = stopped.await;
        }));
        InProcess { stop, task }
    }

    /// Stops it the way a SIGTERM does (drain, then release) and waits for it to end.
    async fn stop(self) {
        let _ = self.stop.send(());
        self.task.await.unwrap().unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finished_jobs_are_deleted_ten_to_a_request() {
    let s = Stack::new("delete_batches").await;
    let counter = RequestCounter::default();
    let sqs = aws_sdk_sqs::Client::from_conf(
        aws_sdk_sqs::config::Builder::from(&s.aws)
            .interceptor(counter.clone())
            .build(),
    );
    let queue = JobQueue::new(sqs, &s.res.queue_url);
    let store = JobStore::from_sdk(&s.aws, &s.res.table_name);

    // Thirty jobs waiting before the worker starts, as on a busy queue.
    let input = serde_json::value::RawValue::from_string("{}".into()).unwrap();
    for _ in 0..30 {
        let id = JobId::generate();
        let job = JobRecord::queued(id.clone(), Owner::new("o"), Millis::now(), None, 3, 2);
        store.create(&job, s.retention, None).await.unwrap();
        s.queue
            .send(Envelope::new(id, &input).encode().unwrap())
            .await
            .unwrap();
    }

    let vars = [
        ("SLUICE_TABLE_NAME", s.res.table_name.as_str()),
        ("SLUICE_QUEUE_URL", s.res.queue_url.as_str()),
        ("SLUICE_CONCURRENCY", "10"),
        ("SLUICE_RECEIVE_WAIT_SECONDS", "1"),
        ("SLUICE_DRAIN_SECONDS", "5"),
    ];
    let config = WorkerConfig::from_source(&vars[..]).unwrap();
    let noop =
        handler_fn(|_: serde_json::Value, _: JobContext| async { Ok::<_, JobError>(json!(null)) });
    let worker = InProcess::start(noop, config, store.clone(), queue);
    s.until_queue_empty(Duration::from_secs(30)).await;
    worker.stop().await;

    assert_eq!(
        counter.count("DeleteMessage"),
        0,
        "{:?}",
        counter.snapshot()
    );
    let batches = counter.count("DeleteMessageBatch");
    assert!(
        (3..=10).contains(&batches),
        "30 deletes took {batches} requests: {:?}",
        counter.snapshot()
    );
    let receives = counter.count("ReceiveMessage");
    assert!(
        receives <= 12,
        "30 jobs took {receives} receives: {:?}",
        counter.snapshot()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handler_written_as_a_function_runs_on_the_queue() {
    let s = Stack::new("library_handler").await;
    #[derive(serde::Deserialize)]
    struct Prompt {
        text: String,
    }
    async fn shout(p: Prompt, ctx: JobContext) -> Result<String, JobError> {
        if p.text.is_empty() {
            return Err(JobError::permanent("text is empty"));
        }
        Ok(format!(
            "{} (attempt {})",
            p.text.to_uppercase(),
            ctx.attempt
        ))
    }
    let ok = s.submit(support::ALICE, json!({"text": "hello"})).await;
    let empty = s.submit(support::ALICE, json!({"text": ""})).await;
    let wrong = s.submit(support::ALICE, json!({"words": 3})).await;

    let vars = [
        ("SLUICE_TABLE_NAME", s.res.table_name.as_str()),
        ("SLUICE_QUEUE_URL", s.res.queue_url.as_str()),
        ("SLUICE_RECEIVE_WAIT_SECONDS", "1"),
    ];
    let config = WorkerConfig::from_source(&vars[..]).unwrap();
    let worker = InProcess::start(handler_fn(shout), config, s.store.clone(), s.queue.clone());
    let done = |id: JobId| {
        let s = &s;
        async move {
            s.until(&id, Duration::from_secs(20), "the job ends", |j| {
                j.status.is_terminal()
            })
            .await
        }
    };
    let ok = done(ok).await;
    assert_eq!(
        (ok.status, ok.result.as_deref()),
        (Status::Succeeded, Some("\"HELLO (attempt 1)\""))
    );
    let empty = done(empty).await;
    assert_eq!(
        (empty.status, empty.error.as_deref()),
        (Status::Failed, Some("text is empty"))
    );
    let wrong = done(wrong).await;
    assert_eq!(wrong.status, Status::Failed);
    assert!(wrong
        .error
        .unwrap()
        .starts_with("the input does not match what the handler takes: missing field `text`"));
    worker.stop().await;
}

/// On a runtime with one thread (as on a 1-vCPU task), a synchronous handler that computes past
/// the visibility timeout and the lease still runs once: it runs on threads of its own, and the
/// heartbeat keeps renewing both on the caller's thread.
#[tokio::test(flavor = "current_thread")]
async fn a_blocking_handler_on_a_one_thread_runtime_runs_exactly_once() {
    let s = Stack::new("blocking_fn").await;
    let id = s.submit(support::ALICE, json!({"ms": 6000})).await;
    let vars = [
        ("SLUICE_TABLE_NAME", s.res.table_name.as_str()),
        ("SLUICE_QUEUE_URL", s.res.queue_url.as_str()),
        ("SLUICE_RECEIVE_WAIT_SECONDS", "1"),
        ("SLUICE_VISIBILITY_TIMEOUT_SECONDS", "2"),
        ("SLUICE_LEASE_SECONDS", "3"),
        ("SLUICE_HEARTBEAT_SECONDS", "1"),
    ];
    let config = WorkerConfig::from_source(&vars[..]).unwrap();
    #[derive(serde::Deserialize)]
    struct Work {
        ms: u64,
    }
    let crunch = sluice_worker::blocking_fn(|w: Work, ctx: JobContext| {
        // Stands in for CPU-bound inference: no await point for the whole job.
        std::thread::sleep(Duration::from_millis(w.ms));
        Ok::<_, JobError>(json!({"attempt": ctx.attempt}))
    });
    let worker = InProcess::start(crunch, config, s.store.clone(), s.queue.clone());
    s.until(&id, Duration::from_secs(20), "the job starts", |j| {
        j.status == Status::Running
    })
    .await;
    // A second worker on the same queue takes the job over if the lease or visibility lapses.
    let rival = s.worker("rival", &[]);
    let job = s
        .until(&id, Duration::from_secs(30), "the job ends", |j| {
            j.status.is_terminal()
        })
        .await;
    drop(rival);
    assert_eq!((job.status, job.attempt), (Status::Succeeded, 1), "{job:?}");
    assert_eq!(job.result.as_deref(), Some(r#"{"attempt":1}"#));
    worker.stop().await;
}

/// A handler that answers `{"attempt": n}` and counts its runs.
fn counting_handler() -> (
    impl sluice_worker::Handler,
    std::sync::Arc<std::sync::atomic::AtomicU32>,
) {
    let runs = std::sync::Arc::new(std::sync::atomic::AtomicU32::new(0));
    let counted = runs.clone();
    let handler = handler_fn(move |_: serde_json::Value, ctx: JobContext| {
        let runs = counted.clone();
        async move {
            runs.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            Ok::<_, JobError>(json!({"attempt": ctx.attempt}))
        }
    });
    (handler, runs)
}

fn config_for(s: &Stack) -> WorkerConfig {
    let vars = [
        ("SLUICE_TABLE_NAME", s.res.table_name.as_str()),
        ("SLUICE_QUEUE_URL", s.res.queue_url.as_str()),
        ("SLUICE_RECEIVE_WAIT_SECONDS", "1"),
        ("SLUICE_VISIBILITY_TIMEOUT_SECONDS", "3"),
        ("SLUICE_LEASE_SECONDS", "3"),
        ("SLUICE_HEARTBEAT_SECONDS", "1"),
    ];
    WorkerConfig::from_source(&vars[..]).unwrap()
}

/// A result whose write fails (the table unreachable for a while) is written again, not thrown
/// away: the job ends with the handler's one result, on its first attempt.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_result_write_is_retried_and_the_job_runs_once() {
    let s = Stack::new("finish_retry").await;
    let injected = faults::Faults::default();
    // Five attempts in a row: more than the SDK's own three.
    injected.fail("UpdateItem", Some("finished_at"), faults::Fault::Refused, 5);
    let store = injected.store(&s.aws, &s.res.table_name);
    let (handler, runs) = counting_handler();
    let id = s.submit(support::ALICE, json!({})).await;
    let worker = InProcess::start(handler, config_for(&s), store, s.queue.clone());
    let job = s
        .until(&id, Duration::from_secs(30), "the job ends", |j| {
            j.status.is_terminal()
        })
        .await;
    assert_eq!((job.status, job.attempt), (Status::Succeeded, 1), "{job:?}");
    assert_eq!(job.result.as_deref(), Some(r#"{"attempt":1}"#));
    assert_eq!(
        runs.load(std::sync::atomic::Ordering::SeqCst),
        1,
        "the handler ran once"
    );
    assert_eq!(
        injected.injected().values().sum::<u64>(),
        5,
        "every injected fault was met: {:?}",
        injected.injected()
    );
    worker.stop().await;
}

/// A claim that DynamoDB applied but whose answer was lost is met by the SDK's own retry, which
/// finds the job running: the worker recognises its own claim and runs the job at once, on its
/// first attempt, instead of waiting out a lease and counting an attempt that never ran (a
/// one-attempt job would end FAILED without running).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_claim_whose_answer_was_lost_is_recognised_as_our_own() {
    let s = Stack::new("own_claim").await;
    let injected = faults::Faults::default();
    // Only the claim sets started_at.
    injected.fail(
        "UpdateItem",
        Some("started_at"),
        faults::Fault::AppliedThen500,
        1,
    );
    let store = injected.store(&s.aws, &s.res.table_name);
    let id = JobId::generate();
    let job = JobRecord::queued(id.clone(), Owner::new("o"), Millis::now(), None, 1, 2);
    s.store.create(&job, s.retention, None).await.unwrap();
    let input = serde_json::value::RawValue::from_string("{}".into()).unwrap();
    s.queue
        .send(Envelope::new(id.clone(), &input).encode().unwrap())
        .await
        .unwrap();
    let (handler, runs) = counting_handler();
    let worker = InProcess::start(handler, config_for(&s), store, s.queue.clone());
    let job = s
        .until(&id, Duration::from_secs(30), "the job ends", |j| {
            j.status.is_terminal()
        })
        .await;
    worker.stop().await;
    assert_eq!(
        injected.injected().values().sum::<u64>(),
        1,
        "the claim's answer was lost once: {:?}",
        injected.injected()
    );
    assert_eq!(
        (job.status, job.attempt, job.error.as_deref()),
        (Status::Succeeded, 1, None),
        "{job:?}"
    );
    assert_eq!(job.result.as_deref(), Some(r#"{"attempt":1}"#));
    assert_eq!(runs.load(std::sync::atomic::Ordering::SeqCst), 1);
}

/// A heartbeat call that hangs (a stalled connection: the SDK would wait up to 90 s) never holds
/// up the attempt: the time limit still stops the job at 2 s, and the next beats go on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_heartbeat_call_never_delays_the_time_limit() {
    let s = Stack::new("hung_beat").await;
    let injected = faults::Faults::default();
    // The heartbeat's visibility renewals (to the configured 3 s) hang.
    injected.fail(
        "ChangeMessageVisibility",
        Some("\"VisibilityTimeout\":3"),
        faults::Fault::Hangs,
        2,
    );
    let queue = injected.queue(&s.aws, &s.res.queue_url);
    let handler = handler_fn(|_: serde_json::Value, _: JobContext| async {
        std::future::pending::<()>().await;
        Ok::<_, JobError>(json!(null))
    });
    let body = json!({"input": {}, "timeout_seconds": 2, "max_attempts": 1});
    let id = s.submit_job(support::ALICE, body).await;
    let worker = InProcess::start(handler, config_for(&s), s.store.clone(), queue);
    let job = s
        .until(
            &id,
            Duration::from_secs(15),
            "the job ends at its limit",
            |j| j.status.is_terminal(),
        )
        .await;
    worker.stop().await;
    assert!(
        injected.injected().values().sum::<u64>() >= 1,
        "a heartbeat call hung: {:?}",
        injected.injected()
    );
    assert_eq!(
        (job.status, job.error.as_deref()),
        (
            Status::Failed,
            Some("the job ran past its time limit of 2 s and was stopped")
        ),
        "{job:?}"
    );
}

/// Settings for an in-process worker on `s`, with `extra` over the short test timings.
fn config_with(s: &Stack, extra: &[(&str, &str)]) -> WorkerConfig {
    let mut vars: Vec<(&str, &str)> = vec![
        ("SLUICE_TABLE_NAME", s.res.table_name.as_str()),
        ("SLUICE_QUEUE_URL", s.res.queue_url.as_str()),
        ("SLUICE_RECEIVE_WAIT_SECONDS", "1"),
        ("SLUICE_VISIBILITY_TIMEOUT_SECONDS", "3"),
        ("SLUICE_LEASE_SECONDS", "3"),
        ("SLUICE_HEARTBEAT_SECONDS", "1"),
    ];
    vars.retain(|(k, _)| !extra.iter().any(|(e, _)| e == k));
    vars.extend_from_slice(extra);
    WorkerConfig::from_source(&vars[..]).unwrap()
}

/// A job released at the drain deadline goes back to the queue only once its run has stopped:
/// a blocking handler that does not look at its cancel runs on, and a second worker must not
/// start the job beside it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_released_at_the_drain_deadline_never_runs_beside_its_first_run() {
    use std::sync::{Arc, Mutex};
    use std::time::Instant;
    let s = Stack::new("drain_overlap").await;
    type Runs = Arc<Mutex<Vec<(String, Instant, Instant)>>>;
    let runs: Runs = Arc::default();
    let handler = |runs: Runs| {
        sluice_worker::blocking_fn(move |_: serde_json::Value, ctx: JobContext| {
            let start = Instant::now();
            // Three seconds of work that never looks at the cancel.
            std::thread::sleep(Duration::from_secs(3));
            runs.lock()
                .unwrap()
                .push((ctx.worker_id.clone(), start, Instant::now()));
            Ok::<_, JobError>(json!({"worker": ctx.worker_id}))
        })
    };
    let id = s.submit(support::ALICE, json!({})).await;
    let first = InProcess::start(
        handler(runs.clone()),
        config_with(
            &s,
            &[("SLUICE_WORKER_ID", "first"), ("SLUICE_DRAIN_SECONDS", "1")],
        ),
        s.store.clone(),
        s.queue.clone(),
    );
    s.until(&id, Duration::from_secs(20), "the job starts", |j| {
        j.status == Status::Running
    })
    .await;
    let second = InProcess::start(
        handler(runs.clone()),
        config_with(&s, &[("SLUICE_WORKER_ID", "second")]),
        s.store.clone(),
        s.queue.clone(),
    );
    // SIGTERM for the first: its drain deadline passes a second later, mid-run.
    let stopping = tokio::spawn(first.stop());
    let job = s
        .until(&id, Duration::from_secs(30), "the job ends", |j| {
            j.status.is_terminal()
        })
        .await;
    stopping.await.unwrap();
    second.stop().await;
    assert_eq!(job.status, Status::Succeeded, "{job:?}");
    let runs = runs.lock().unwrap().clone();
    for (i, (w1, s1, e1)) in runs.iter().enumerate() {
        for (w2, s2, e2) in &runs[i + 1..] {
            assert!(
                e1 <= s2 || e2 <= s1,
                "runs on {w1} and {w2} overlapped: {runs:?}"
            );
        }
    }
}

/// A SIGTERM while a receive is under way does not lose what it took: the messages go back to
/// the queue at once instead of staying hidden for their visibility timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stop_during_a_receive_hands_back_what_it_took() {
    let s = Stack::new("stop_receiving").await;
    let injected = faults::Faults::default();
    // The receive takes the message at once; its answer arrives two seconds later.
    injected.fail(
        "ReceiveMessage",
        None,
        faults::Fault::AnswerDelayed(Duration::from_secs(2)),
        1,
    );
    let queue = injected.queue(&s.aws, &s.res.queue_url);
    let id = s.submit(support::ALICE, json!({})).await;
    let handler =
        handler_fn(|_: serde_json::Value, _: JobContext| async { Ok::<_, JobError>(json!(1)) });
    let worker = InProcess::start(
        handler,
        config_with(
            &s,
            &[
                ("SLUICE_VISIBILITY_TIMEOUT_SECONDS", "120"),
                ("SLUICE_LEASE_SECONDS", "60"),
            ],
        ),
        s.store.clone(),
        queue,
    );
    tokio::time::sleep(Duration::from_millis(700)).await;
    worker.stop().await;
    assert_eq!(injected.injected().values().sum::<u64>(), 1);
    let visible = aws_sdk_sqs::Client::new(&s.aws)
        .get_queue_attributes()
        .queue_url(&s.res.queue_url)
        .attribute_names(aws_sdk_sqs::types::QueueAttributeName::ApproximateNumberOfMessages)
        .send()
        .await
        .unwrap()
        .attributes
        .unwrap_or_default()
        .get(&aws_sdk_sqs::types::QueueAttributeName::ApproximateNumberOfMessages)
        .cloned();
    assert_eq!(
        visible.as_deref(),
        Some("1"),
        "the message is back in the queue, visible"
    );
    let job = s.store.get(&id).await.unwrap().unwrap();
    assert_eq!(job.status, Status::Queued, "{job:?}");
}

/// An error too large for the record (the item limit is 400 KB) is cut with a marker, and the
/// job fails with it instead of running again until its worker is "lost".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_error_is_truncated_and_the_job_fails_once() {
    let s = Stack::new("huge_error").await;
    let handler = handler_fn(|_: serde_json::Value, _: JobContext| async {
        Err::<serde_json::Value, _>(JobError::permanent(format!(
            "bad input: {}",
            "x".repeat(500_000)
        )))
    });
    let id = s.submit(support::ALICE, json!({})).await;
    let worker = InProcess::start(handler, config_for(&s), s.store.clone(), s.queue.clone());
    let job = s
        .until(&id, Duration::from_secs(30), "the job ends", |j| {
            j.status.is_terminal()
        })
        .await;
    assert_eq!((job.status, job.attempt), (Status::Failed, 1), "{job:?}");
    let error = job.error.unwrap();
    assert!(error.starts_with("bad input: xxx"), "{}", &error[..40]);
    assert!(
        error.len() <= sluice::job::MAX_ERROR_BYTES,
        "{} bytes",
        error.len()
    );
    assert!(
        error.ends_with("[truncated: 500011 bytes in all]"),
        "{}",
        &error[error.len() - 60..]
    );
    worker.stop().await;
}

/// A blocking handler past its time limit cannot be interrupted: its job fails at the limit, and
/// its slot stays taken until the call returns, so the worker never runs more jobs at once than
/// its concurrency.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blocking_handler_past_its_limit_keeps_its_slot_until_it_returns() {
    let s = Stack::new("linger").await;
    let vars = [
        ("SLUICE_TABLE_NAME", s.res.table_name.as_str()),
        ("SLUICE_QUEUE_URL", s.res.queue_url.as_str()),
        ("SLUICE_RECEIVE_WAIT_SECONDS", "1"),
        ("SLUICE_CONCURRENCY", "1"),
        ("SLUICE_JOB_TIMEOUT_SECONDS", "1"),
    ];
    let config = WorkerConfig::from_source(&vars[..]).unwrap();
    #[derive(serde::Deserialize)]
    struct Work {
        ms: u64,
    }
    let at_once = std::sync::Arc::new(std::sync::atomic::AtomicI32::new(0));
    let most = std::sync::Arc::new(std::sync::atomic::AtomicI32::new(0));
    let (now, peak) = (at_once.clone(), most.clone());
    let handler = sluice_worker::blocking_fn(move |w: Work, _: JobContext| {
        use std::sync::atomic::Ordering::SeqCst;
        let running = now.fetch_add(1, SeqCst) + 1;
        peak.fetch_max(running, SeqCst);
        std::thread::sleep(Duration::from_millis(w.ms));
        now.fetch_sub(1, SeqCst);
        Ok::<_, JobError>(json!("done"))
    });
    let stuck = s.submit(support::ALICE, json!({"ms": 3000})).await;
    let next = s.submit(support::ALICE, json!({"ms": 10})).await;
    let worker = InProcess::start(handler, config, s.store.clone(), s.queue.clone());
    let within = Duration::from_secs(30);
    let stuck = s
        .until(&stuck, within, "the first job ends", |j| {
            j.status.is_terminal()
        })
        .await;
    assert_eq!(stuck.status, Status::Failed, "{stuck:?}");
    assert!(stuck
        .error
        .as_deref()
        .unwrap()
        .contains("time limit of 1 s"));
    let next = s
        .until(&next, within, "the second job ends", |j| {
            j.status.is_terminal()
        })
        .await;
    assert_eq!(next.status, Status::Succeeded, "{next:?}");
    assert_eq!(
        most.load(std::sync::atomic::Ordering::SeqCst),
        1,
        "never two at once"
    );
    let waited = next.started_at.unwrap().0 - stuck.started_at.unwrap().0;
    assert!(
        waited >= 2_500,
        "the second job started {waited} ms after the first"
    );
    worker.stop().await;
}

/// Deliveries a message may have before SQS moves it to the dead-letter queue, in these tests.
const REDRIVE_AFTER: u32 = support::MAX_RECEIVE_COUNT;

/// A job released by many draining workers in a row (a rolling deploy, Spot interruptions), more
/// times than the queue's redrive limit, still runs: releases spend no delivery.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn releases_on_drain_never_send_a_job_to_the_dead_letter_queue() {
    let s = Stack::new("many_releases").await;
    let id = s.submit(support::ALICE, json!({"ms": 60_000})).await;
    let max = REDRIVE_AFTER.to_string();
    let vars = [
        ("SLUICE_TABLE_NAME", s.res.table_name.as_str()),
        ("SLUICE_QUEUE_URL", s.res.queue_url.as_str()),
        ("SLUICE_RECEIVE_WAIT_SECONDS", "1"),
        ("SLUICE_DRAIN_SECONDS", "0"),
        ("SLUICE_MAX_RECEIVE_COUNT", max.as_str()),
    ];
    #[derive(serde::Deserialize)]
    struct Work {
        ms: u64,
    }
    for round in 1..=REDRIVE_AFTER + 2 {
        let config = WorkerConfig::from_source(&vars[..]).unwrap();
        let worker = InProcess::start(
            handler_fn(|w: Work, _: JobContext| async move {
                tokio::time::sleep(Duration::from_millis(w.ms)).await;
                Ok::<_, JobError>(json!("done"))
            }),
            config,
            s.store.clone(),
            s.queue.clone(),
        );
        s.until(&id, Duration::from_secs(20), "the job starts", |j| {
            j.status == Status::Running && j.attempt == round
        })
        .await;
        worker.stop().await;
        let job = s.store.get(&id).await.unwrap().unwrap();
        assert_eq!(
            (job.status, job.releases),
            (Status::Queued, round),
            "round {round}"
        );
    }
    assert_eq!(
        s.queue_depth(&s.res.dlq_url).await,
        0,
        "nothing reached the dead-letter queue"
    );
    // And the job still runs to its end.
    let config = WorkerConfig::from_source(&vars[..]).unwrap();
    let quick = handler_fn(|_: Work, _: JobContext| async { Ok::<_, JobError>(json!("done")) });
    let worker = InProcess::start(quick, config, s.store.clone(), s.queue.clone());
    let job = s
        .until(&id, Duration::from_secs(20), "the job ends", |j| {
            j.status.is_terminal()
        })
        .await;
    assert_eq!(job.status, Status::Succeeded, "{job:?}");
    worker.stop().await;
}

/// A table that refuses the worker's claims for a while (throttling, an outage) costs the jobs no
/// deliveries beyond the redrive limit: they wait, then run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_table_outage_during_claims_sends_no_job_to_the_dead_letter_queue() {
    let s = Stack::new("claim_outage").await;
    let injected = faults::Faults::default();
    // Every claim attempt fails, three SDK attempts per claim, for more deliveries than the
    // redrive limit allows.
    injected.fail(
        "UpdateItem",
        Some("started_at"),
        faults::Fault::Refused,
        3 * (REDRIVE_AFTER + 3),
    );
    let store = injected.store(&s.aws, &s.res.table_name);
    let id = s.submit(support::ALICE, json!({})).await;
    let max = REDRIVE_AFTER.to_string();
    let vars = [
        ("SLUICE_TABLE_NAME", s.res.table_name.as_str()),
        ("SLUICE_QUEUE_URL", s.res.queue_url.as_str()),
        ("SLUICE_RECEIVE_WAIT_SECONDS", "1"),
        ("SLUICE_RETRY_BASE_SECONDS", "0"),
        ("SLUICE_RETRY_MAX_SECONDS", "1"),
        ("SLUICE_MAX_RECEIVE_COUNT", max.as_str()),
    ];
    let config = WorkerConfig::from_source(&vars[..]).unwrap();
    let noop =
        handler_fn(|_: serde_json::Value, _: JobContext| async { Ok::<_, JobError>(json!(1)) });
    let worker = InProcess::start(noop, config, store, s.queue.clone());
    let job = s
        .until(&id, Duration::from_secs(60), "the job ends", |j| {
            j.status.is_terminal()
        })
        .await;
    assert_eq!((job.status, job.attempt), (Status::Succeeded, 1), "{job:?}");
    assert_eq!(
        s.queue_depth(&s.res.dlq_url).await,
        0,
        "nothing reached the dead-letter queue"
    );
    assert!(
        injected.injected().values().sum::<u64>() >= u64::from(3 * (REDRIVE_AFTER + 3)),
        "every fault was met: {:?}",
        injected.injected()
    );
    worker.stop().await;
}

/// A worker at its maximum age retires by itself: it takes no new job, lets the one it runs
/// finish past the drain time a SIGTERM would allow, and exits; what is still queued waits for
/// its replacement.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_at_its_maximum_age_finishes_its_jobs_and_exits() {
    let s = Stack::new("max_age").await;
    let vars = [
        ("SLUICE_TABLE_NAME", s.res.table_name.as_str()),
        ("SLUICE_QUEUE_URL", s.res.queue_url.as_str()),
        ("SLUICE_RECEIVE_WAIT_SECONDS", "1"),
        ("SLUICE_CONCURRENCY", "1"),
        ("SLUICE_DRAIN_SECONDS", "1"),
        ("SLUICE_MAX_TASK_AGE_SECONDS", "2"),
    ];
    let config = WorkerConfig::from_source(&vars[..]).unwrap();
    let slow = handler_fn(|input: serde_json::Value, _: JobContext| async move {
        tokio::time::sleep(Duration::from_millis(input["ms"].as_u64().unwrap_or(0))).await;
        Ok::<_, JobError>(json!("done"))
    });
    let long = s.submit(support::ALICE, json!({"ms": 4000})).await;
    let worker = InProcess::start(slow, config, s.store.clone(), s.queue.clone());
    s.until(&long, Duration::from_secs(10), "the long job starts", |j| {
        j.status == Status::Running
    })
    .await;
    let later = s.submit(support::ALICE, json!({"ms": 0})).await;
    // It exits without being told to, after the long job (4 s, past the 1 s drain) succeeded.
    let ended = tokio::time::timeout(Duration::from_secs(20), worker.task)
        .await
        .expect("the worker retired by itself");
    ended.unwrap().unwrap();
    let long = s.store.get(&long).await.unwrap().unwrap();
    assert_eq!(long.status, Status::Succeeded);
    let later = s.store.get(&later).await.unwrap().unwrap();
    assert_eq!(
        later.status,
        Status::Queued,
        "a retiring worker takes no new job"
    );
}
