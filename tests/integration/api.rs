//! The API handlers, called with fixture requests as API Gateway would send them.

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
            "put large inputs in S3",
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
