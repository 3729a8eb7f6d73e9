//! Webhook signatures checked by the reference implementation: the `standardwebhooks` package
//! from PyPI (tests/fixtures/verify_webhook.py), not only by sluice's own code.

use std::io::Write;
use std::process::{Command, Stdio};

use sluice::api::JobView;
use sluice::job::{JobId, Status};
use sluice::time::Millis;
use sluice::webhook::{self, Secret, WebhookEvent, WebhookHeaders};

use crate::support::{venv_python, workspace_root};

/// What the reference implementation says of these headers and body: `Ok` when they verify
/// with `secret`, else its reason.
fn reference_verdict(secret: &Secret, headers: &WebhookHeaders, body: &str) -> Result<(), String> {
    let input = serde_json::json!({
        "secret": secret.expose(),
        "headers": {
            "webhook-id": headers.id,
            "webhook-timestamp": headers.timestamp.to_string(),
            "webhook-signature": headers.signature,
        },
        "body": body,
    });
    let mut child = Command::new(venv_python())
        .arg(workspace_root().join("tests/fixtures/verify_webhook.py"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the reference verifier starts");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.to_string().as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    match out.status.code() {
        Some(0) => Ok(()),
        Some(1) => Err(said),
        _ => panic!("the reference verifier failed to run: {said}"),
    }
}

fn finished_job() -> (JobId, WebhookEvent) {
    let id = JobId::generate();
    let view = JobView {
        id: id.to_string(),
        status: Status::Failed,
        attempt: 3,
        max_attempts: 3,
        submitted_at: "2026-12-05T10:00:00.000Z".into(),
        started_at: Some("2026-12-05T10:00:01.000Z".into()),
        finished_at: Some("2026-12-05T10:00:09.250Z".into()),
        deadline: None,
        cancel_requested: false,
        timeout_seconds: None,
        on_timeout: None,
        progress: None,
        result: None,
        // Non-ASCII, quotes and a newline: the bytes signed are the bytes sent.
        error: Some("modèle introuvable: \"résumé\"\nbye 👋".into()),
        url: None,
        redrives: 0,
    };
    (id, WebhookEvent::of(view).unwrap())
}

fn now() -> i64 {
    Millis::now().as_epoch_seconds()
}

#[test]
fn the_reference_implementation_verifies_a_signed_job_event() {
    let (id, event) = finished_job();
    let body = event.to_body();
    let secret = Secret::generate().unwrap();
    let headers = webhook::sign(
        &secret,
        None,
        &webhook::message_id(&id, event.kind),
        now(),
        &body,
    );
    assert_eq!(reference_verdict(&secret, &headers, &body), Ok(()));
}

#[test]
fn the_reference_implementation_refuses_a_tampered_body_a_wrong_secret_and_a_stale_timestamp() {
    let (id, event) = finished_job();
    let body = event.to_body();
    let msg_id = webhook::message_id(&id, event.kind);
    let secret = Secret::generate().unwrap();
    let headers = webhook::sign(&secret, None, &msg_id, now(), &body);

    let tampered = body.replace("job.failed", "job.succeeded");
    assert_ne!(tampered, body);
    let verdict = reference_verdict(&secret, &headers, &tampered);
    assert!(
        verdict
            .as_ref()
            .is_err_and(|e| e.contains("No matching signature")),
        "{verdict:?}"
    );

    let wrong = Secret::generate().unwrap();
    let verdict = reference_verdict(&wrong, &headers, &body);
    assert!(
        verdict
            .as_ref()
            .is_err_and(|e| e.contains("No matching signature")),
        "{verdict:?}"
    );

    let stale = webhook::sign(&secret, None, &msg_id, now() - 10 * 60, &body);
    let verdict = reference_verdict(&secret, &stale, &body);
    assert!(
        verdict.as_ref().is_err_and(|e| e.contains("too old")),
        "{verdict:?}"
    );

    let mut other_id = headers.clone();
    other_id.id = webhook::message_id(&JobId::generate(), event.kind);
    assert!(reference_verdict(&secret, &other_id, &body).is_err());
}

#[test]
fn during_a_rotation_the_reference_implementation_accepts_the_old_and_the_new_secret() {
    let (id, event) = finished_job();
    let body = event.to_body();
    let (old, new) = (Secret::generate().unwrap(), Secret::generate().unwrap());
    let headers = webhook::sign(
        &new,
        Some(&old),
        &webhook::message_id(&id, event.kind),
        now(),
        &body,
    );
    assert_eq!(reference_verdict(&new, &headers, &body), Ok(()));
    assert_eq!(reference_verdict(&old, &headers, &body), Ok(()));
    assert!(reference_verdict(&Secret::generate().unwrap(), &headers, &body).is_err());
}

#[test]
fn the_reference_implementation_reads_secrets_of_every_allowed_size() {
    use base64::Engine as _;
    for len in [webhook::SECRET_MIN_BYTES, 32, webhook::SECRET_MAX_BYTES] {
        let key: Vec<u8> = (0..len).map(|i| (i * 37 % 251) as u8).collect();
        let text = format!(
            "whsec_{}",
            base64::engine::general_purpose::STANDARD.encode(key)
        );
        let secret = Secret::parse(&text).unwrap();
        let headers = webhook::sign(&secret, None, "msg_size", now(), "{}");
        assert_eq!(
            reference_verdict(&secret, &headers, "{}"),
            Ok(()),
            "{len} bytes"
        );
    }
}
