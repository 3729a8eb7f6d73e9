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

    let dead = DeadLetters::new(s.dlq.clone(), s.store.clone(), s.retention);
    let done = dead.reconcile().await.unwrap();
    assert!(done.complete);
    assert_eq!(done.seen.len(), 5, "{done:?}");
    // The second copy of the lost job's message goes, and the cancelled job's; the rest stays.
    assert_eq!(done.deleted(), 2, "{done:?}");
    let cancelled_kept = done
        .seen
        .iter()
        .any(|(_, f, deleted)| f.job_id() == Some(&cancelled) && !deleted);
    assert!(
        !cancelled_kept,
        "a cancelled job has nothing to redrive: {done:?}"
    );
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

    // `sluice dlq list` shows and explains what stays.
    let rows = dlq_cli(&s, &["list"]).await;
    let finding = |id: &JobId| {
        rows.iter()
            .find(|r| r["job_id"] == id.to_string())
            .map(|r| r["finding"].as_str().unwrap().to_owned())
    };
    assert_eq!(rows.len(), 3, "{rows:?}");
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
    assert_eq!(outcomes, ["queued again"], "{done:?}");
    let view = s.wait_terminal(ALICE, &lost, Duration::from_secs(30)).await;
    assert_eq!(view.status, Status::Succeeded, "{view:?}");
    assert_eq!(view.attempt, 4, "its attempts started afresh: {view:?}");
    assert_eq!(view.redrives, 1, "the redrive is recorded: {view:?}");
    let left = dead.list(100).await.unwrap();
    assert_eq!(left.len(), 2, "the redriven message left the DLQ: {left:?}");
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
    let dl = DeadLetters::new(s.dlq.clone(), s.store.clone(), s.retention);
    let done = dl.reconcile().await.unwrap();
    assert!(
        matches!(&done.seen[..], [(_, Finding::Unreadable(j, _), false)] if *j == id),
        "{done:?}"
    );
}

/// Thousands of messages in the dead-letter queue: every stranded job among them ends within a
/// few runs of the reconciler, each bounded in time; what is settled leaves the queue, and what
/// needs a person (a job to redrive, a running job's duplicate, a message that is not a job's)
/// stays.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_reconciler_settles_thousands_of_dead_letters_in_a_few_runs() {
    use aws_sdk_dynamodb::types::{PutRequest, WriteRequest};
    use aws_sdk_sqs::types::{MessageAttributeValue, SendMessageBatchRequestEntry};
    let s = Stack::new("dlq_thousands").await;
    // `make dead-letters-at-scale` runs it with 2,000 (the emulator's receive slows with the
    // queue's length, so the default is smaller); the mix stays the same.
    let total: usize = std::env::var("SLUICE_DEAD_LETTERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(400);
    let (stranded_n, ended_n, unrecorded_n, running_n) =
        (total * 6 / 10, total / 5, total / 10, total / 20);
    let junk_n = total - stranded_n - ended_n - unrecorded_n - running_n;
    let ddb = aws_sdk_dynamodb::Client::new(&s.aws);
    let sqs = aws_sdk_sqs::Client::new(&s.aws);
    let now = Millis::now();
    let owner = Owner::new(format!("iam:{ALICE}"));
    let mut records = Vec::new();
    let mut bodies: Vec<(String, bool)> = Vec::new();
    let input = RawValue::from_string(r#"{"text": "lost"}"#.into()).unwrap();
    let mut stranded_ids = Vec::new();
    for i in 0..(stranded_n + ended_n + unrecorded_n + running_n) {
        let id = JobId::generate();
        let mut job = JobRecord::queued(id.clone(), owner.clone(), now, None, 3, 2);
        if i < stranded_n {
            stranded_ids.push(id.clone());
        } else if i < stranded_n + ended_n {
            job.status = Status::Succeeded;
            job.finished_at = Some(now);
        } else if i < stranded_n + ended_n + running_n {
            job.status = Status::Running;
            job.attempt = 1;
            job.lease_expires_at = Some(now.plus(Duration::from_secs(3600)));
        }
        let unrecorded = i >= stranded_n + ended_n + running_n;
        if !unrecorded {
            records.push(sluice::store::to_item(&job));
        }
        bodies.push((Envelope::new(id, &input).encode().unwrap(), unrecorded));
    }
    for i in 0..junk_n {
        bodies.push((format!("not a job #{i}"), false));
    }
    for chunk in records.chunks(25) {
        let writes = chunk
            .iter()
            .map(|item| {
                WriteRequest::builder()
                    .put_request(
                        PutRequest::builder()
                            .set_item(Some(item.clone()))
                            .build()
                            .unwrap(),
                    )
                    .build()
            })
            .collect();
        ddb.batch_write_item()
            .request_items(&s.res.table_name, writes)
            .send()
            .await
            .unwrap();
    }
    // A message without a record is judged an orphan only past the grace: these were sent
    // (first) two minutes ago.
    let old = MessageAttributeValue::builder()
        .data_type("Number")
        .string_value((now.0 - 120_000).to_string())
        .build()
        .unwrap();
    for chunk in bodies.chunks(10) {
        let entries = chunk
            .iter()
            .enumerate()
            .map(|(i, (body, unrecorded))| {
                let e = SendMessageBatchRequestEntry::builder()
                    .id(i.to_string())
                    .message_body(body);
                let e = if *unrecorded {
                    e.message_attributes("SluiceFirstSent", old.clone())
                } else {
                    e
                };
                e.build().unwrap()
            })
            .collect();
        sqs.send_message_batch()
            .queue_url(&s.res.dlq_url)
            .set_entries(Some(entries))
            .send()
            .await
            .unwrap();
    }

    let dead = DeadLetters::new(s.dlq.clone(), s.store.clone(), s.retention);
    let mut runs = 0;
    let (mut seen, mut deleted) = (0, 0);
    let started = std::time::Instant::now();
    loop {
        runs += 1;
        let run = std::time::Instant::now();
        let done = dead.reconcile().await.unwrap();
        seen += done.seen.len();
        deleted += done.deleted();
        println!(
            "run {runs}: {} messages looked at, {} deleted, complete: {}, in {:.1} s",
            done.seen.len(),
            done.deleted(),
            done.complete,
            run.elapsed().as_secs_f64()
        );
        if done.complete {
            break;
        }
        assert!(
            runs < 10,
            "the reconciler has not seen every message after {runs} runs"
        );
    }
    println!(
        "{} dead letters settled in {runs} runs, {:.1} s ({seen} looked at, {deleted} deleted)",
        bodies.len(),
        started.elapsed().as_secs_f64()
    );
    let ended = s.store.get_many(&stranded_ids).await.unwrap();
    let failed = ended
        .values()
        .filter(|r| {
            r.as_ref().is_ok_and(|j| {
                j.status == Status::Failed
                    && sluice::deadletter::is_dead_letter_error(j.error.as_deref().unwrap_or(""))
            })
        })
        .count();
    assert_eq!(
        failed, stranded_n,
        "every stranded job ended FAILED with the reason"
    );
    assert_eq!(
        deleted,
        ended_n + unrecorded_n,
        "settled messages left the queue"
    );
    let depth = s.dlq.depth().await.unwrap();
    assert_eq!(
        depth.visible + depth.in_flight,
        (stranded_n + junk_n + running_n) as u32,
        "what needs a person stays: {depth:?}"
    );
}

/// A job whose message ran out of deliveries with attempts left (faults of the machinery:
/// claims that failed, hand-backs that could not be sent; a job that kills its workers spends
/// its attempts first) is sent back to the jobs queue by the reconciler, where it runs, instead
/// of ending FAILED. One that keeps coming back ends FAILED after a bounded number of returns.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_with_attempts_left_is_sent_back_from_the_dlq_not_failed() {
    let s = Stack::new("dlq_return").await;
    let dead =
        DeadLetters::new(s.dlq.clone(), s.store.clone(), s.retention).with_jobs(s.queue.clone());
    let id = stranded(&s).await;
    let done = dead.reconcile().await.unwrap();
    assert!(
        matches!(&done.seen[..], [(_, Finding::Returned(j), true)] if j.id == id),
        "{done:?}"
    );
    let job = s.store.get(&id).await.unwrap().unwrap();
    assert_eq!((job.status, job.dlq_returns), (Status::Queued, 1));
    assert_eq!(s.queue_depth(&s.res.dlq_url).await, 0);
    // One whose worker died under it, with attempts left, goes back too.
    let lapsed = stranded(&s).await;
    lose_workers(&s, &lapsed, 1).await;
    let done = dead.reconcile().await.unwrap();
    assert!(
        matches!(&done.seen[..], [(_, Finding::Returned(j), true)] if j.id == lapsed),
        "{done:?}"
    );
    let _w = s.worker("w1", &[]);
    for id in [&id, &lapsed] {
        let view = s.wait_terminal(ALICE, id, Duration::from_secs(30)).await;
        assert_eq!(view.status, Status::Succeeded, "{view:?}");
    }

    // Back again and again: after MAX_RETURNS it ends FAILED like any other.
    let id = recorded(&s).await;
    let input = RawValue::from_string(r#"{"text": "lost"}"#.into()).unwrap();
    let body = Envelope::new(id.clone(), &input).encode().unwrap();
    let alone =
        DeadLetters::new(s.dlq.clone(), s.store.clone(), s.retention).with_jobs(sink(&s).await);
    for round in 0..=sluice::deadletter::MAX_RETURNS {
        s.dlq.send(body.clone()).await.unwrap();
        let done = alone.reconcile().await.unwrap();
        let job = s.store.get(&id).await.unwrap().unwrap();
        if round < sluice::deadletter::MAX_RETURNS {
            assert_eq!(
                (job.status, job.dlq_returns),
                (Status::Queued, round + 1),
                "{done:?}"
            );
        } else {
            assert_eq!(job.status, Status::Failed, "{done:?}");
        }
    }
}

/// A queue no worker reads, to send jobs back to without running them.
async fn sink(s: &Stack) -> sluice::queue::JobQueue {
    let url = aws_sdk_sqs::Client::new(&s.aws)
        .create_queue()
        .queue_name(format!("{}-sink", s.name))
        .send()
        .await
        .unwrap()
        .queue_url
        .unwrap();
    sluice::queue::JobQueue::from_sdk(&s.aws, url)
}
