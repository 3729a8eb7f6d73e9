//! The API handlers, called with fixture requests as API Gateway would send them.

use std::time::Duration;

use serde_json::json;
use sluice::job::{JobId, Status};
use sluice::queue::MAX_MESSAGE_BYTES;

use crate::support::*;

#[tokio::test]
async fn submit_records_and_queues_the_job() {
    let s = Stack::new("submit_records").await;
    let (status, v) = s
        .call(post_json(
            ALICE,
            r#"{"input": {"text": "hi"}, "deadline_seconds": 600, "max_attempts": 2}"#,
            None,
        ))
        .await;
    assert_eq!(status, 202, "{v}");
    assert_eq!(v["status"], "QUEUED");
    let id: JobId = v["id"].as_str().unwrap().parse().unwrap();
    assert_eq!(v["url"], format!("http://127.0.0.1:8080/jobs/{id}"));
    assert_eq!(v["max_attempts"], 2);
    assert!(v["deadline"].is_string());
    let job = s.store.get(&id).await.unwrap().unwrap();
    assert_eq!(
        (job.status, job.attempt, job.owner.as_str()),
        (Status::Queued, 0, format!("iam:{ALICE}").as_str())
    );
    assert_eq!(s.queue_depth(&s.res.queue_url).await, 1);
}

#[tokio::test]
async fn idempotent_submit_returns_the_same_job() {
    let s = Stack::new("idempotent_submit").await;
    let body = r#"{"input": {"text": "once", "n": 1}}"#;
    let (first, v1) = s.call(post_json(ALICE, body, Some("order-42"))).await;
    assert_eq!(first, 202, "{v1}");
    // The same request, differently spelled, is the same request.
    let (again, v2) = s
        .call(post_json(
            ALICE,
            r#"{"input":{"n":1,"text":"once"}}"#,
            Some("order-42"),
        ))
        .await;
    assert_eq!(again, 200, "{v2}");
    assert_eq!(v1["id"], v2["id"]);
    assert_eq!(
        s.queue_depth(&s.res.queue_url).await,
        1,
        "a replay queues nothing"
    );

    let (reused, e) = s
        .call(post_json(
            ALICE,
            r#"{"input": {"text": "other"}}"#,
            Some("order-42"),
        ))
        .await;
    assert_eq!(reused, 422, "{e}");
    assert_eq!(e["error"]["code"], "idempotency_key_reused");
    assert!(
        e["error"]["message"]
            .as_str()
            .unwrap()
            .contains("use a new key"),
        "{e}"
    );

    // Keys are scoped to the caller.
    let (bobs, v3) = s.call(post_json(BOB, body, Some("order-42"))).await;
    assert_eq!(bobs, 202, "{v3}");
    assert_ne!(v3["id"], v1["id"]);

    let (bad, e) = s.call(post_json(ALICE, body, Some("has spaces"))).await;
    assert_eq!(
        (bad, e["error"]["code"].as_str()),
        (400, Some("invalid_idempotency_key"))
    );
}

#[tokio::test]
async fn another_callers_job_is_invisible() {
    let s = Stack::new("another_caller").await;
    let id = s.submit(ALICE, json!({"text": "mine"})).await;
    let path = format!("/jobs/{id}");
    for req in [get(BOB, &path, None), delete(BOB, &path)] {
        let (status, v) = s.call(req).await;
        assert_eq!(status, 404, "{v}");
        assert_eq!(v["error"]["code"], "not_found");
    }
    let (status, v) = s.call(get(ALICE, &path, None)).await;
    assert_eq!((status, v["status"].as_str()), (200, Some("QUEUED")));
}

#[tokio::test]
async fn unknown_and_malformed_ids_are_not_found() {
    let s = Stack::new("unknown_ids").await;
    for path in [
        format!("/jobs/{}", JobId::generate()),
        "/jobs/not-a-job".into(),
        "/jobs/idem:abc".into(),
    ] {
        let (status, v) = s.call(get(ALICE, &path, None)).await;
        assert_eq!(status, 404, "{path}: {v}");
        assert_eq!(v["error"]["code"], "not_found", "{path}");
    }
    let (status, v) = s.call(get(ALICE, "/nothing/here", None)).await;
    assert_eq!(
        (status, v["error"]["code"].as_str()),
        (404, Some("no_route"))
    );
}

#[tokio::test]
async fn bad_requests_get_clear_errors_and_leave_nothing_behind() {
    let s = Stack::new("bad_requests").await;
    let big_input = format!(r#"{{"input": "{}"}}"#, "x".repeat(MAX_MESSAGE_BYTES - 20));
    let huge_body = format!(r#"{{"input": "{}"}}"#, "x".repeat(2 * MAX_MESSAGE_BYTES));
    // name, body, content type, status, code, words the message must hold
    type Case<'a> = (&'a str, String, Option<&'a str>, u16, &'a str, &'a str);
    let cases: Vec<Case> = vec![
        (
            "bad json",
            "{\"input\": ".into(),
            Some("application/json"),
            400,
            "invalid_json",
            "not valid JSON",
        ),
        (
            "no input",
            r#"{"text": "hi"}"#.into(),
            Some("application/json"),
            400,
            "invalid_json",
            "unknown field `text`",
        ),
        (
            "wrong content type",
            r#"{"input": 1}"#.into(),
            Some("text/plain"),
            415,
            "unsupported_media_type",
            "Content-Type: application/json",
        ),
        (
            "no content type",
            r#"{"input": 1}"#.into(),
            None,
            415,
            "unsupported_media_type",
            "no Content-Type",
        ),
        (
            "input over one message",
            big_input,
            Some("application/json"),
            413,
            "payload_too_large",
            "one queue message of 1048576 bytes",
        ),
        (
            "body far too big",
            huge_body,
            Some("application/json"),
            413,
            "payload_too_large",
            "upload a larger input (POST /uploads",
        ),
        (
            "bad deadline",
            r#"{"input": 1, "deadline_seconds": 0}"#.into(),
            Some("application/json"),
            400,
            "invalid_deadline",
            "deadline_seconds must be",
        ),
    ];
    for (name, body, ct, want_status, want_code, want_text) in cases {
        let (status, v) = s.call(post(ALICE, &body, ct, None)).await;
        assert_eq!(status, want_status, "{name}: {v}");
        assert_eq!(v["error"]["code"], want_code, "{name}");
        let message = v["error"]["message"].as_str().unwrap();
        assert!(message.contains(want_text), "{name}: {message}");
    }
    assert_eq!(
        s.queue_depth(&s.res.queue_url).await,
        0,
        "refused submits queue nothing"
    );
}

#[tokio::test]
async fn cancelling_a_queued_job_is_immediate_and_final() {
    let s = Stack::new("cancel_queued").await;
    let id = s.submit(ALICE, json!({"text": "never mind"})).await;
    let (status, v) = s.call(delete(ALICE, &format!("/jobs/{id}"))).await;
    assert_eq!(
        (status, v["status"].as_str()),
        (200, Some("CANCELLED")),
        "{v}"
    );
    let (again, e) = s.call(delete(ALICE, &format!("/jobs/{id}"))).await;
    assert_eq!(
        (again, e["error"]["code"].as_str()),
        (409, Some("already_finished")),
        "{e}"
    );

    // A worker then deletes the message without running the job.
    let _w = s.worker("w1", &[]);
    s.until_queue_empty(std::time::Duration::from_secs(15))
        .await;
    let job = s.store.get(&id).await.unwrap().unwrap();
    assert_eq!((job.status, job.attempt), (Status::Cancelled, 0));
}

#[tokio::test]
async fn a_job_whose_deadline_passes_in_the_queue_expires() {
    let s = Stack::new("deadline").await;
    let (status, v) = s
        .call(post_json(
            ALICE,
            r#"{"input": {"text": "late"}, "deadline_seconds": 1}"#,
            None,
        ))
        .await;
    assert_eq!(status, 202, "{v}");
    let id: JobId = v["id"].as_str().unwrap().parse().unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(1200)).await;
    // Readers see it expired at once; the record follows when a worker meets the message.
    let (_, v) = s.call(get(ALICE, &format!("/jobs/{id}"), None)).await;
    assert_eq!(v["status"], "EXPIRED", "{v}");
    let (status, e) = s.call(delete(ALICE, &format!("/jobs/{id}"))).await;
    assert_eq!(status, 409, "an expired job cannot be cancelled: {e}");

    let _w = s.worker("w1", &[]);
    s.until_queue_empty(std::time::Duration::from_secs(15))
        .await;
    let job = s.store.get(&id).await.unwrap().unwrap();
    assert_eq!((job.status, job.attempt), (Status::Expired, 0));
}

/// A scale-from-zero nudge whose ECS endpoint accepts connections and never answers.
async fn nudge_to_unanswering_ecs(
    s: &Stack,
    store: sluice::store::JobStore,
) -> sluice::nudge::ScaleFromZero {
    let hole = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hole_url = format!("http://{}", hole.local_addr().unwrap());
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((conn, _)) = hole.accept().await {
            held.push(conn);
        }
    });
    let ecs = aws_sdk_ecs::Client::from_conf(
        aws_sdk_ecs::config::Builder::from(&s.aws)
            .endpoint_url(&hole_url)
            .build(),
    );
    sluice::nudge::ScaleFromZero::new(
        sluice::ecs::Service::new(ecs, "cluster", "workers"),
        store,
        sluice::nudge::NUDGE_INTERVAL,
    )
}

/// An API over clients whose requests pass through `faults`.
fn faulty_api(s: &Stack, faults: &crate::faults::Faults) -> sluice::api::Api {
    let store = faults.store(&s.aws, &s.res.table_name);
    let config = api_config(&s.res);
    sluice::api::Api::new(store, Some(s.queue.clone()), config)
}

#[tokio::test]
async fn a_submit_whose_write_was_applied_but_answered_with_an_error_is_accepted_once() {
    let s = Stack::new("applied_500").await;
    let faults = crate::faults::Faults::default();
    // The record is written, but its answer is lost: the SDK retries the PutItem, which then
    // finds the record it wrote itself.
    faults.fail("PutItem", None, crate::faults::Fault::AppliedThen500, 1);
    let api = faulty_api(&s, &faults);
    let (status, v) = decode(
        api.handle(post_json(ALICE, r#"{"input": {"n": 1}}"#, None))
            .await,
    );
    assert_eq!(status, 202, "an accepted job answers 2xx: {v}");
    assert_eq!(
        faults.injected().values().sum::<u64>(),
        1,
        "the fault was met"
    );
    let id: JobId = v["id"].as_str().unwrap().parse().unwrap();
    let job = s.store.get(&id).await.unwrap().unwrap();
    assert_eq!(job.status, Status::Queued);
    assert_eq!(
        s.queue_depth(&s.res.queue_url).await,
        1,
        "one message, one job"
    );

    // The same with an idempotency key, whose record and key are one transaction.
    faults.fail(
        "TransactWriteItems",
        None,
        crate::faults::Fault::AppliedThen500,
        1,
    );
    let (status, v) = decode(
        api.handle(post_json(ALICE, r#"{"input": {"n": 2}}"#, Some("order-7")))
            .await,
    );
    assert!(
        status == 202 || status == 200,
        "an accepted job answers 2xx: {status} {v}"
    );
    assert_eq!(
        faults.injected().values().sum::<u64>(),
        2,
        "the fault was met"
    );
    let keyed: JobId = v["id"].as_str().unwrap().parse().unwrap();
    let (again, w) = decode(
        api.handle(post_json(ALICE, r#"{"input": {"n": 2}}"#, Some("order-7")))
            .await,
    );
    assert_eq!(
        (again, w["id"].as_str()),
        (200, Some(keyed.to_string().as_str()))
    );
}

/// The record's write was applied and its answer lost, and the table cannot be read meanwhile:
/// the SDK's retry is refused because the record exists, and that refusal itself carries the
/// record, so the submit knows the job is its own without a read. An accepted job never answers
/// an error (the caller's retry would make a second job).
#[tokio::test]
async fn an_applied_submit_is_accepted_even_when_the_table_cannot_be_read() {
    let s = Stack::new("applied_no_read").await;
    let faults = crate::faults::Faults::default();
    faults.fail(
        "PutItem",
        Some("submitted_at"),
        crate::faults::Fault::AppliedThen500,
        1,
    );
    faults.fail("GetItem", None, crate::faults::Fault::Refused, 20);
    let api = faulty_api(&s, &faults);
    let (status, v) = decode(
        api.handle(post_json(ALICE, r#"{"input": {"n": 1}}"#, None))
            .await,
    );
    assert_eq!(status, 202, "an accepted job answers 2xx: {v}");
    let id: JobId = v["id"].as_str().unwrap().parse().unwrap();
    assert_eq!(
        s.store.get(&id).await.unwrap().unwrap().status,
        Status::Queued
    );
}

#[tokio::test]
async fn a_slow_scale_from_zero_nudge_cannot_fail_or_stall_an_accepted_submit() {
    let s = Stack::new("slow_nudge").await;
    let nudge = nudge_to_unanswering_ecs(&s, s.store.clone()).await;
    let api = s.api.clone().with_scale_from_zero(nudge);
    // The submit Lambda has 10 s; the answer must come well within them.
    let answered = tokio::time::timeout(
        Duration::from_secs(8),
        api.handle(post_json(ALICE, r#"{"input": {"n": 1}}"#, None)),
    )
    .await;
    let (status, v) = decode(answered.expect("the submit answered before the function's timeout"));
    assert_eq!(status, 202, "{v}");
}

/// The local stack stops a request at its function's deployed timeout, as Lambda does (and API
/// Gateway then answers 5xx without a body). A submit whose record write is slow, followed by a
/// slow scale-from-zero nudge, must still answer before then: its job was accepted. One whose
/// write never completes answers 503 in time, and leaves no job behind.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_submit_answers_within_its_functions_timeout_and_never_errs_for_a_recorded_job() {
    let s = Stack::new("submit_budget").await;
    let faults = crate::faults::Faults::default();
    let store = faults.store(&s.aws, &s.res.table_name);
    // ECS accepts connections and never answers: the nudge takes all it is given.
    let nudge = nudge_to_unanswering_ecs(&s, store.clone()).await;
    let api = sluice::api::Api::new(store, Some(s.queue.clone()), api_config(&s.res))
        .with_scale_from_zero(nudge);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(sluice::local::serve(api, listener, std::future::pending()));
    let http = reqwest::Client::new();
    let submit = |key: &'static str| {
        http.post(format!("{url}/jobs"))
            .header("content-type", "application/json")
            .header("idempotency-key", key)
            .body(r#"{"input": {"n": 1}}"#)
            .send()
    };

    // The record's write takes 8.2 s of the 10: the nudge gets only what is left.
    faults.fail(
        "TransactWriteItems",
        None,
        crate::faults::Fault::Delayed(Duration::from_millis(8_200)),
        1,
    );
    let resp = submit("slow-write").await.unwrap();
    let status = resp.status().as_u16();
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(status, 202, "a recorded job is accepted: {body}");
    let id: JobId = body["id"].as_str().unwrap().parse().unwrap();
    assert!(s.store.get(&id).await.unwrap().is_some());

    // The write never completes: the submit says so in time, as JSON, and records nothing.
    faults.fail("TransactWriteItems", None, crate::faults::Fault::Hangs, 1);
    let resp = submit("hung-write").await.unwrap();
    let status = resp.status().as_u16();
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (503, Some("unavailable")),
        "{body}"
    );
    assert_eq!(
        faults.injected().values().sum::<u64>(),
        2,
        "{:?}",
        faults.injected()
    );
    // The retry with the same key makes the one job.
    let resp = submit("hung-write").await.unwrap();
    assert_eq!(resp.status().as_u16(), 202);
}

/// A worker whose clock runs behind can still claim a job its deadline has passed for, by the
/// reader's clock: the table decides. Once a reader was told EXPIRED, no worker runs the job.
#[tokio::test]
async fn an_expired_job_a_reader_was_shown_never_runs_even_on_a_skewed_worker() {
    use sluice::job::{JobRecord, Owner};
    use sluice::time::Millis;
    let s = Stack::new("clock_skew").await;
    let t0 = Millis::now();
    let deadline = t0.plus(Duration::from_millis(300));
    let job = JobRecord::queued(
        JobId::generate(),
        Owner::new(format!("iam:{ALICE}")),
        t0,
        Some(deadline),
        3,
        1,
    );
    s.store.create(&job, s.retention, None).await.unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;

    let (status, v) = s.call(get(ALICE, &format!("/jobs/{}", job.id), None)).await;
    assert_eq!(
        (status, v["status"].as_str()),
        (200, Some("EXPIRED")),
        "{v}"
    );
    // A worker whose clock says the deadline is still ahead tries to claim it.
    let skewed_now = t0;
    let claim = s
        .store
        .claim(&job.id, "late-clock", skewed_now, Duration::from_secs(30))
        .await;
    assert!(
        claim.is_err(),
        "a job readers saw EXPIRED was claimed: {claim:?}"
    );
    assert_eq!(
        s.store.get(&job.id).await.unwrap().unwrap().status,
        Status::Expired
    );
}

/// A key lives as long as its job: once the job's record is gone (its retention passed and
/// DynamoDB's TTL removed it), a submit with the key makes a new job instead of answering 404
/// for a job the caller can no longer see.
#[tokio::test]
async fn a_key_whose_job_is_gone_makes_a_new_job() {
    let s = Stack::new("stale_key").await;
    let body = r#"{"input": {"n": 1}}"#;
    let (status, v) = s.call(post_json(ALICE, body, Some("nightly-42"))).await;
    assert_eq!(status, 202, "{v}");
    let first = v["id"].as_str().unwrap().to_owned();
    // The record expires: TTL deletes it (the key item, which outlives it, stays).
    aws_sdk_dynamodb::Client::new(&s.aws)
        .delete_item()
        .table_name(&s.res.table_name)
        .key(
            "id",
            aws_sdk_dynamodb::types::AttributeValue::S(first.clone()),
        )
        .send()
        .await
        .unwrap();
    let (status, v) = s.call(post_json(ALICE, body, Some("nightly-42"))).await;
    assert_eq!(status, 202, "a new job under the freed key: {v}");
    let second = v["id"].as_str().unwrap().to_owned();
    assert_ne!(second, first);
    // The key now names the new job; another request under it is refused as before.
    let (status, v) = s.call(post_json(ALICE, body, Some("nightly-42"))).await;
    assert_eq!((status, v["id"].as_str()), (200, Some(second.as_str())));
    let (status, v) = s
        .call(post_json(
            ALICE,
            r#"{"input": {"n": 2}}"#,
            Some("nightly-42"),
        ))
        .await;
    assert_eq!(status, 422, "{v}");
}
