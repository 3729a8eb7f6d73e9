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

/// The AWS sample's flow, end to end on the local stack: a 12-megapixel photo dropped in the
/// pipeline's bucket under `in/` becomes a job (through S3's event notification), the resize
/// example makes its 224x224 image as an output file, and the outcome lands under `out/`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_12_megapixel_photo_dropped_in_the_pipeline_comes_out_resized() {
    let s = Stack::new("example_pipeline").await;
    let (bucket, events, ingest) = s.pipeline().await;
    let stop = tokio_util::sync::CancellationToken::new();
    let poller = {
        let (ingest, stop) = (ingest.clone(), stop.clone());
        tokio::spawn(async move { ingest.poll(&events, stop).await })
    };
    let _w = example_worker(&s, "resize");

    let photo = std::env::temp_dir().join(format!("{}-photo.jpg", s.name));
    let made = std::process::Command::new(python())
        .arg(repo().join("examples/resize/make_input.py"))
        .args(["--size", "4000x3000", "--image-only", "-o"])
        .arg(&photo)
        .output()
        .unwrap();
    assert!(
        made.status.success(),
        "{}",
        String::from_utf8_lossy(&made.stderr)
    );
    let size = std::fs::metadata(&photo).unwrap().len();
    bucket
        .upload_file(&photo, "in/holiday/beach.jpg", "image/jpeg")
        .await
        .unwrap();
    std::fs::remove_file(&photo).unwrap();

    let started = std::time::Instant::now();
    let success = loop {
        let got = bucket
            .client()
            .get_object()
            .bucket(bucket.bucket())
            .key("out/holiday/beach.jpg.success")
            .send()
            .await;
        if let Ok(out) = got {
            break out.body.collect().await.unwrap().into_bytes();
        }
        assert!(
            started.elapsed() < Duration::from_secs(90),
            "no outcome came"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    let view: serde_json::Value = serde_json::from_slice(&success).unwrap();
    assert_eq!(view["status"], "SUCCEEDED", "{view}");
    assert_eq!(view["input_file"]["size"], size);
    assert_eq!(
        view["result"]["source"],
        json!({"width": 4000, "height": 3000, "format": "JPEG"})
    );
    let png = bucket
        .client()
        .get_object()
        .bucket(bucket.bucket())
        .key("out/holiday/beach.jpg/resized.png")
        .send()
        .await
        .unwrap()
        .body
        .collect()
        .await
        .unwrap()
        .into_bytes();
    // A PNG's IHDR: width and height, big-endian, at bytes 16 to 24.
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
    let dim = |at: usize| u32::from_be_bytes(png[at..at + 4].try_into().unwrap());
    assert_eq!((dim(16), dim(20)), (224, 224));
    eprintln!(
        "a {size}-byte 4000x3000 JPEG became a 224x224 PNG of {} bytes in {:?}",
        png.len(),
        started.elapsed()
    );
    stop.cancel();
    poller.await.unwrap();
}
