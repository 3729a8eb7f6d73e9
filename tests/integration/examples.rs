//! The examples in `examples/`, run by a real `sluice-worker` in child-process mode with their
//! pinned requirements (`make example-venv`), as a user runs them on the local stack.

use std::path::PathBuf;
use std::time::Duration;

use serde_json::json;
use sluice::job::Status;

use crate::support::*;

const SOON: Duration = Duration::from_secs(30);

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The examples' Python, or a panic that says how to make it.
fn python() -> String {
    let py = repo().join(".venv-examples/bin/python");
    assert!(
        py.exists(),
        "{} is missing: run `make example-venv` (make test does)",
        py.display()
    );
    py.display().to_string()
}

fn example_worker(s: &Stack, name: &str) -> WorkerProcess {
    let handler = repo().join("examples").join(name).join("handler.py");
    let command = json!([python(), handler.display().to_string()]).to_string();
    s.worker(
        name,
        &[
            ("SLUICE_HANDLER", "process"),
            ("SLUICE_COMMAND", command.as_str()),
            ("SLUICE_CONCURRENCY", "2"),
        ],
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sentiment_example_scores_text_with_vader() {
    let s = Stack::new("example_sentiment").await;
    let _w = example_worker(&s, "sentiment");
    let happy = s
        .submit(ALICE, json!({"text": "I love this, it is wonderful"}))
        .await;
    let sad = s
        .submit(ALICE, json!({"text": "This is terrible and I hate it"}))
        .await;
    let empty = s.submit(ALICE, json!({"text": ""})).await;
    let happy = s.wait_terminal(ALICE, &happy, SOON).await;
    assert_eq!(happy.status, Status::Succeeded, "{happy:?}");
    let r = happy.result.unwrap();
    assert!(r["compound"].as_f64().unwrap() > 0.5, "{r}");
    assert_eq!(r["label"], "positive");
    let sad = s.wait_terminal(ALICE, &sad, SOON).await;
    assert_eq!(sad.result.unwrap()["label"], "negative");
    let empty = s.wait_terminal(ALICE, &empty, SOON).await;
    assert_eq!(
        (empty.status, empty.attempt),
        (Status::Failed, 1),
        "{empty:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_resize_example_makes_a_224_square_with_pillow() {
    let s = Stack::new("example_resize").await;
    let _w = example_worker(&s, "resize");
    let made = std::process::Command::new(python())
        .arg(repo().join("examples/resize/make_input.py"))
        .output()
        .unwrap();
    assert!(
        made.status.success(),
        "{}",
        String::from_utf8_lossy(&made.stderr)
    );
    let input: serde_json::Value = serde_json::from_slice(&made.stdout).unwrap();
    let id = s.submit(ALICE, input).await;
    let view = s.wait_terminal(ALICE, &id, SOON).await;
    assert_eq!(view.status, Status::Succeeded, "{view:?}");
    let r = view.result.unwrap();
    assert_eq!(
        (r["width"].as_u64(), r["height"].as_u64()),
        (Some(224), Some(224))
    );
    assert_eq!(r["source"]["width"], 640);
    assert!(r["image"].as_str().unwrap().len() > 1000);

    let bad = s.submit(ALICE, json!({"image": "bm90IGFuIGltYWdl"})).await;
    let view = s.wait_terminal(ALICE, &bad, SOON).await;
    assert_eq!((view.status, view.attempt), (Status::Failed, 1), "{view:?}");
}
