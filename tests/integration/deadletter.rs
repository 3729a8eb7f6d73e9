//! The dead-letter queue: every job whose message reaches it ends, and `sluice dlq` explains and
//! redrives what sits there.

use std::time::Duration;

use serde_json::value::RawValue;
use sluice::deadletter::{DeadLetters, Finding};
use sluice::job::{JobId, JobRecord, Owner, Status};
use sluice::queue::Envelope;
use sluice::time::Millis;

use crate::support::*;

/// A job's record as submitted, by Alice.
async fn recorded(s: &Stack) -> JobId {
    let id = JobId::generate();
    let job = JobRecord::queued(
        id.clone(),
        Owner::new(format!("iam:{ALICE}")),
        Millis::now(),
        None,
        3,
        2,
    );
    s.store.create(&job, s.retention, None).await.unwrap();
    id
}

/// A job as submitted, whose message then reached the dead-letter queue.
async fn stranded(s: &Stack) -> JobId {
    let id = recorded(s).await;
    let input = RawValue::from_string(r#"{"text": "lost"}"#.into()).unwrap();
    s.dlq
        .send(Envelope::new(id.clone(), &input).encode().unwrap())
        .await
        .unwrap();
    id
}

/// `sluice --json dlq ARGS` against this stack's dead-letter queue and table, parsed.
async fn dlq_cli(s: &Stack, args: &[&str]) -> Vec<serde_json::Value> {
    let mut all: Vec<String> = [
        "--json",
        "dlq",
        "--dlq-url",
        &s.res.dlq_url,
        "--table",
        &s.res.table_name,
    ]
    .iter()
    .map(|a| a.to_string())
    .collect();
    all.extend(args.iter().map(|a| a.to_string()));
    let out = tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = all.iter().map(String::as_str).collect();
        sluice_cli(&args)
    })
    .await
    .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Claims `id` `times` times, each lease already run out: workers that died under it.
async fn lose_workers(s: &Stack, id: &JobId, times: u32) {
    let mut at = Millis(Millis::now().0 - 1_000_000);
    for _ in 0..times {
        s.store
            .claim(id, "doomed", at, Duration::from_secs(1))
            .await
            .unwrap();
        at = at.plus(Duration::from_secs(2));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_whose_message_reached_the_dlq_ends_failed_and_can_be_redriven() {
    let s = Stack::new("dlq_reconcile").await;
    // It used up its attempts on workers that died: a redrive must still run it.
    let lost = stranded(&s).await;
    lose_workers(&s, &lost, 3).await;
    // A second copy of its message landed there too.
    let input = RawValue::from_string(r#"{"text": "lost"}"#.into()).unwrap();
    s.dlq
        .send(Envelope::new(lost.clone(), &input).encode().unwrap())
        .await
        .unwrap();
    // A job its caller cancelled while it ran, whose worker then died.
    let cancelled = stranded(&s).await;
    lose_workers(&s, &cancelled, 1).await;
    s.store
        .cancel(
            &cancelled,
            &Owner::new(format!("iam:{ALICE}")),
            Millis::now(),
            s.retention,
        )
        .await
        .unwrap();
    // A running job with a live lease whose duplicate message also landed there: left alone.
    let busy = stranded(&s).await;
    s.store
        .claim(&busy, "alive", Millis::now(), Duration::from_secs(300))
        .await
        .unwrap();
    s.dlq.send("not a job at all".into()).await.unwrap();

    let dead = DeadLetters {
        dlq: s.dlq.clone(),
        store: s.store.clone(),
        retention: s.retention,
    };
    let seen = dead.reconcile().await.unwrap();
    assert_eq!(seen.len(), 5, "{seen:?}");
    assert_eq!(
        s.store.get(&cancelled).await.unwrap().unwrap().status,
        Status::Cancelled,
        "a cancel its caller asked for is honoured"
    );
    let job = s.store.get(&lost).await.unwrap().unwrap();
    assert_eq!(job.status, Status::Failed);
    assert!(
        sluice::deadletter::is_dead_letter_error(job.error.as_deref().unwrap()),
        "{job:?}"
    );
    assert_eq!(
        s.store.get(&busy).await.unwrap().unwrap().status,
        Status::Running
    );
    // The caller learns it, and its cancel no longer answers 202 forever.
    let (status, v) = s.call(delete(ALICE, &format!("/jobs/{lost}"))).await;
    assert_eq!(
        (status, v["error"]["code"].as_str()),
        (409, Some("already_finished")),
        "{v}"
    );

    // `sluice dlq list` shows and explains all three; the messages stay.
    let rows = dlq_cli(&s, &["list"]).await;
    let finding = |id: &JobId| {
        rows.iter()
            .find(|r| r["job_id"] == id.to_string())
            .map(|r| r["finding"].as_str().unwrap().to_owned())
    };
    assert_eq!(rows.len(), 5, "{rows:?}");
    assert_eq!(finding(&lost).as_deref(), Some("ended"));
    assert_eq!(finding(&busy).as_deref(), Some("running"));
    assert!(rows.iter().any(|r| r["finding"] == "undecodable"));

    // Redrive the lost job: it runs and succeeds; drop what has nothing to run.
    let _w = s.worker("w1", &[]);
    let done = dlq_cli(
        &s,
        &[
            "redrive",
            &lost.to_string(),
            "--queue-url",
            &s.res.queue_url,
        ],
    )
    .await;
    let mut outcomes: Vec<&str> = done.iter().map(|d| d["done"].as_str().unwrap()).collect();
    outcomes.sort();
    assert_eq!(
        outcomes,
        ["deleted", "queued again"],
        "both copies handled: {done:?}"
    );
    let view = s.wait_terminal(ALICE, &lost, Duration::from_secs(30)).await;
    assert_eq!(view.status, Status::Succeeded, "{view:?}");
    assert_eq!(view.attempt, 4, "its attempts started afresh: {view:?}");
    let left = dead.list(100).await.unwrap();
    assert_eq!(
        left.len(),
        3,
        "the redriven messages left the DLQ: {left:?}"
    );
    assert!(left
        .iter()
        .any(|(_, f)| matches!(f, Finding::Undecodable(_))));
}

/// A job whose record cannot be read (edited by hand) cannot run anywhere: its message's
/// deliveries run out and it reaches the dead-letter queue, instead of being sent again, fresh,
/// forever; there `sluice dlq` says what is wrong and leaves it for a person.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_whose_record_cannot_be_read_reaches_the_dlq_and_is_explained() {
    use aws_sdk_dynamodb::types::AttributeValue;
    let s = Stack::new("dlq_unreadable").await;
    let id = recorded(&s).await;
    // Someone edits the record by hand.
    aws_sdk_dynamodb::Client::new(&s.aws)
        .update_item()
        .table_name(&s.res.table_name)
        .key("id", AttributeValue::S(id.to_string()))
        .update_expression("SET #s = :s")
        .expression_attribute_names("#s", "status")
        .expression_attribute_values(":s", AttributeValue::S("PAUSED".into()))
        .send()
        .await
        .unwrap();
    let input = RawValue::from_string("{}".into()).unwrap();
    s.queue
        .send(Envelope::new(id.clone(), &input).encode().unwrap())
        .await
        .unwrap();
    let _w = s.worker("w1", &[]);
    let start = std::time::Instant::now();
    while s.queue_depth(&s.res.dlq_url).await == 0 {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "the message never reached the dead-letter queue"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert_eq!(
        s.queue_depth(&s.res.queue_url).await,
        0,
        "nothing loops in the jobs queue"
    );
    let listed = dlq_cli(&s, &["list"]).await;
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0]["finding"], "unreadable_record", "{listed:?}");
    let why = listed[0]["explanation"].as_str().unwrap_or_default();
    assert!(
        why.contains(&format!(
            "job {id}'s record cannot be read (unknown job status"
        )) && why.contains("mend or remove the record"),
        "{listed:?}"
    );
    // The reconciler leaves it, and says so without failing.
    let dl = DeadLetters {
        dlq: s.dlq.clone(),
        store: s.store.clone(),
        retention: s.retention,
    };
    let seen = dl.reconcile().await.unwrap();
    assert!(
        matches!(&seen[..], [(_, Finding::Unreadable(j, _))] if *j == id),
        "{seen:?}"
    );
}
