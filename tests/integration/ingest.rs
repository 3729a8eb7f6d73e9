//! The pipeline: objects dropped in a bucket become jobs through S3's event notifications, one
//! job per object however often its event comes, and each job's outcome is written back under
//! the output prefix (`.success` / `.failed`, and the output files).

use std::time::{Duration, Instant};

use serde_json::json;
use sluice::ingest::Ingested;
use sluice::job::Status;
use sluice::payload::Payloads;
use sluice::queue::JobQueue;

use crate::support::{get, Stack, ALICE};

fn fixture(name: &str) -> String {
    format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"))
}

/// The body of the next S3 event with records on `events` (S3's test event skipped).
async fn next_event(events: &JobQueue) -> String {
    let started = Instant::now();
    loop {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "no S3 event came"
        );
        for msg in events.receive(10, Duration::from_secs(1)).await.unwrap() {
            events.delete(&msg.receipt).await.unwrap();
            if msg.body.contains("\"Records\"") {
                return msg.body;
            }
        }
    }
}

/// The object at `key`, once it exists.
async fn object(bucket: &Payloads, key: &str) -> Vec<u8> {
    let started = Instant::now();
    loop {
        let got = bucket
            .client()
            .get_object()
            .bucket(bucket.bucket())
            .key(key)
            .send()
            .await;
        if let Ok(out) = got {
            return out.body.collect().await.unwrap().into_bytes().to_vec();
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "{key} never came"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn objects_dropped_in_the_bucket_become_one_job_each_and_their_outcomes_land_beside() {
    let s = Stack::new("pipeline").await;
    let (bucket, events, ingest) = s.pipeline().await;
    let command = json!(["python3", fixture("pipeline_handler.py")]).to_string();
    let _worker = s.worker(
        "pipeline",
        &[
            ("SLUICE_HANDLER", "process"),
            ("SLUICE_COMMAND", command.as_str()),
        ],
    );

    // A photo's worth of text, dropped in: S3 tells the queue. Its event, delivered twice (S3
    // delivers at least once), makes one job.
    let put = |key: &'static str, body: &'static [u8]| {
        let bucket = bucket.clone();
        async move {
            bucket
                .client()
                .put_object()
                .bucket(bucket.bucket())
                .key(key)
                .content_type("text/plain")
                .body(body.to_vec().into())
                .send()
                .await
                .unwrap();
        }
    };
    put("in/notes/my note.txt", b"hello pipeline").await;
    let event = next_event(&events).await;
    let first = ingest.handle_message(&event).await.unwrap();
    let again = ingest.handle_message(&event).await.unwrap();
    let [Ingested::Created(id)] = first.as_slice() else {
        panic!("one job: {first:?}")
    };
    assert_eq!(
        again,
        vec![Ingested::Existing(id.clone())],
        "the same object, the same job"
    );

    // Its outcome lands under the output prefix: the output file, then the job's view.
    let upper = object(&bucket, "out/notes/my note.txt/upper.txt").await;
    assert_eq!(upper, b"HELLO PIPELINE");
    let view: serde_json::Value =
        serde_json::from_slice(&object(&bucket, "out/notes/my note.txt.success").await).unwrap();
    assert_eq!(view["id"], id.to_string());
    assert_eq!(view["status"], "SUCCEEDED");
    assert_eq!(
        view["result"],
        json!({"key": "in/notes/my note.txt", "size": 14})
    );
    assert_eq!(view["input_file"]["content_type"], "text/plain");
    // Seen through the same API as any job, by its owner.
    let (status, v) = s.call(get(ALICE, &format!("/jobs/{id}"), None)).await;
    assert_eq!(
        (status, v["status"].as_str()),
        (200, Some("SUCCEEDED")),
        "{v}"
    );
    assert_eq!(v["outputs"][0]["name"], "upper.txt");

    // The queue read as the local stack and the ingest function read it: a file the handler
    // refuses ends `.failed`; what lands under out/ never becomes a job.
    let stop = tokio_util::sync::CancellationToken::new();
    let poller = {
        let (ingest, events, stop) = (ingest.clone(), events.clone(), stop.clone());
        tokio::spawn(async move { ingest.poll(&events, stop).await })
    };
    put("in/bad.txt", b"fail").await;
    let view: serde_json::Value =
        serde_json::from_slice(&object(&bucket, "out/bad.txt.failed").await).unwrap();
    assert_eq!(view["status"], "FAILED");
    assert_eq!(view["error"], "the file asked to fail");
    stop.cancel();
    poller.await.unwrap();
    let jobs: Vec<_> = aws_sdk_dynamodb::Client::new(&s.aws)
        .scan()
        .table_name(&s.res.table_name)
        .send()
        .await
        .unwrap()
        .items
        .unwrap_or_default()
        .into_iter()
        .filter(|i| i.contains_key("sink_base"))
        .collect();
    assert_eq!(jobs.len(), 2, "one job per object: {jobs:?}");
    let record = s.store.get(id).await.unwrap().unwrap();
    assert_eq!(record.status, Status::Succeeded);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_reports_failed_only_the_events_whose_objects_could_not_become_jobs() {
    let s = Stack::new("pipeline-batch").await;
    let (bucket, events, ingest) = s.pipeline().await;
    let mut bodies = Vec::new();
    for key in ["in/a.txt", "in/b.txt"] {
        // One at a time: a receive hides every message it takes, returned or not.
        bucket
            .put_bytes(key, b"x".to_vec(), "text/plain")
            .await
            .unwrap();
        bodies.push(next_event(&events).await);
    }
    let [a, b] = [&bodies[0], &bodies[1]];

    // All well: the event's object became a job, and a stray message is dropped, not retried.
    let failed = ingest
        .handle_batch([(Some("m-a"), a.as_str()), (Some("m-stray"), "hello")])
        .await;
    assert_eq!(failed, Vec::<String>::new());

    // The jobs queue unreachable: the event is read again (and its object is not lost), the
    // stray message still is not, and an event already handled is found again.
    let broken = sluice::ingest::Ingest {
        queue: JobQueue::from_sdk(&s.aws, format!("{}-gone", s.res.queue_url)),
        ..ingest.clone()
    };
    let failed = broken
        .handle_batch([
            (Some("m-b"), b.as_str()),
            (Some("m-stray"), "{\"Records\": 1}"),
        ])
        .await;
    assert_eq!(failed, vec!["m-b".to_owned()]);
    // Read again once the queue is back: one job, as if nothing had happened.
    let failed = ingest.handle_batch([(Some("m-b"), b.as_str())]).await;
    assert_eq!(failed, Vec::<String>::new());
    let again = ingest.handle_message(b).await.unwrap();
    assert!(
        matches!(again.as_slice(), [Ingested::Existing(_)]),
        "{again:?}"
    );
}
