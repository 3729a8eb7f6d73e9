//! Files in: uploads through `POST /uploads` (one PUT, or multipart with presigned parts), jobs
//! that name them, and handlers that get the file without the worker holding it in memory.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;
use sha2::{Digest, Sha256};
use sluice::api::{Api, UploadView};
use sluice::client::{Client, SubmitOptions};
use sluice::job::{JobId, Status};

use crate::support::{api_config, post_json, post_path, Stack, WorkerProcess, ALICE, BOB};

const MIB: u64 = 1 << 20;

fn fixture(name: &str) -> String {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
        .display()
        .to_string()
}

/// Writes `mib` MiB of a fixed pattern (different in every MiB) to a fresh file; returns its path
/// and SHA-256.
fn pattern_file(name: &str, mib: u64) -> (PathBuf, String) {
    let path = std::env::temp_dir().join(format!("sluice-{name}-{}", std::process::id()));
    let mut file = std::io::BufWriter::new(std::fs::File::create(&path).unwrap());
    let mut digest = Sha256::new();
    let mut block = vec![0u8; MIB as usize];
    for i in 0..mib {
        for (j, b) in block.iter_mut().enumerate() {
            *b = ((i as usize * 31 + j * 7) ^ (j >> 8)) as u8;
        }
        digest.update(&block);
        file.write_all(&block).unwrap();
    }
    file.flush().unwrap();
    let hex = digest
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    (path, hex)
}

/// The API served on a loopback port, as `sluice dev` serves it; its URL.
async fn serve(api: Api) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(sluice::local::serve(api, listener, std::future::pending()));
    url
}

/// The peak resident memory of a process so far (`VmHWM`), in bytes.
fn peak_rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM in /proc/<pid>/status");
    kib * 1024
}

/// Uploads a 200 MiB file with the client (multipart, parts in parallel), submits a job naming
/// it with `input`, and waits for the job; returns the result, the file's SHA-256 and size, and
/// the worker's peak RSS.
async fn round_trip(
    s: &Stack,
    worker: &WorkerProcess,
    name: &str,
    content_type: &str,
    input: serde_json::Value,
) -> (serde_json::Value, String, u64, u64) {
    let (path, sha) = pattern_file(name, 200);
    let size = std::fs::metadata(&path).unwrap().len();
    let client = Client::new(&serve(s.api.clone()).await).unwrap();
    let started = Instant::now();
    let input = serde_json::value::to_raw_value(&input).unwrap();
    let view = client
        .submit_file(
            &path,
            content_type,
            Some(&input),
            &SubmitOptions::default(),
            |_| {},
        )
        .await
        .unwrap();
    let uploaded = started.elapsed();
    std::fs::remove_file(&path).unwrap();
    let file = view.input_file.clone().expect("the job names its file");
    assert_eq!(
        (file.size, file.content_type.as_str()),
        (size, content_type)
    );
    let id: JobId = view.id.parse().unwrap();
    let done = s
        .wait_terminal(sluice::local::LOCAL_IDENTITY, &id, Duration::from_secs(120))
        .await;
    assert_eq!(done.status, Status::Succeeded, "{done:?}");
    let rss = peak_rss(worker.child.id());
    eprintln!(
        "{name}: {size} bytes uploaded in {uploaded:?}, job done after {:?}; worker peak RSS {} MiB",
        started.elapsed(),
        rss / MIB
    );
    // The worker downloaded the file to a temporary file and removed it after the attempt.
    let leftovers: Vec<_> = std::fs::read_dir(std::env::temp_dir())
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with(&format!("sluice-input-{id}"))
        })
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    (done.result.unwrap(), sha, size, rss)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_200_mib_file_reaches_a_process_handler_as_a_path_without_filling_the_worker() {
    let s = Stack::new("upload_process").await;
    let command = json!(["python3", fixture("file_handler.py")]).to_string();
    let worker = s.worker(
        "files",
        &[
            ("SLUICE_HANDLER", "process"),
            ("SLUICE_COMMAND", command.as_str()),
        ],
    );
    let (result, sha, size, rss) = round_trip(
        &s,
        &worker,
        "process",
        "application/octet-stream",
        json!({"note": "with a file"}),
    )
    .await;
    assert_eq!(result["size"], size);
    assert_eq!(result["sha256"], sha);
    assert_eq!(result["input"], json!({"note": "with a file"}));
    assert!(rss < size / 4, "the worker's peak RSS is {rss} bytes");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_200_mib_file_is_streamed_to_a_model_server_as_the_invocation_body() {
    let s = Stack::new("upload_http").await;
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let _server = Killed(
        Command::new("python3")
            .arg(fixture("file_server.py"))
            .arg(port.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let url = format!("http://127.0.0.1:{port}");
    let worker = s.worker(
        "files",
        &[
            ("SLUICE_HANDLER", "http"),
            ("SLUICE_MODEL_URL", url.as_str()),
        ],
    );
    let (result, sha, size, rss) =
        round_trip(&s, &worker, "http", "image/x-test", json!({"label": "cat"})).await;
    assert_eq!(result["size"], size);
    assert_eq!(result["sha256"], sha);
    assert_eq!(result["content_type"], "image/x-test");
    assert_eq!(result["input"], json!({"label": "cat"}));
    assert!(rss < size / 4, "the worker's peak RSS is {rss} bytes");
}

/// A child process killed when this is dropped (a failed assertion included).
struct Killed(std::process::Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `POST /uploads` as `caller` on `api`.
async fn create(api: &Api, caller: &str, body: serde_json::Value) -> (u16, serde_json::Value) {
    crate::support::decode(
        api.handle(post_path(caller, "/uploads", &body.to_string()))
            .await,
    )
}

async fn submit(api: &Api, caller: &str, body: serde_json::Value) -> (u16, serde_json::Value) {
    crate::support::decode(api.handle(post_json(caller, &body.to_string(), None)).await)
}

/// Sends `path` where the upload says (PUT or parts); the parts' ETags.
async fn send(view: &UploadView, path: &Path) -> Vec<sluice::api::CompletedPartRef> {
    sluice::client::send_upload(&reqwest::Client::new(), view, path, Arc::new(|_| {}))
        .await
        .unwrap()
}

fn small_file(name: &str, bytes: &[u8]) -> PathBuf {
    let path = std::env::temp_dir().join(format!("sluice-{name}-{}", std::process::id()));
    std::fs::write(&path, bytes).unwrap();
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uploads_that_cannot_be_used_are_refused_with_a_clear_4xx() {
    let s = Stack::new("upload_refusals").await;
    let api = &s.api;
    let code = |v: &serde_json::Value| v["error"]["code"].as_str().unwrap_or_default().to_owned();

    // Too large: over S3's 5 TiB (the default limit).
    let (status, v) = create(api, ALICE, json!({"size": 6u64 << 40})).await;
    assert_eq!(
        (status, code(&v).as_str()),
        (413, "payload_too_large"),
        "{v}"
    );
    let (status, v) = create(api, ALICE, json!({"size": 1, "content_type": "jpeg"})).await;
    assert_eq!(
        (status, code(&v).as_str()),
        (400, "invalid_content_type"),
        "{v}"
    );

    // Unknown.
    let unknown = ulid::Ulid::new().to_string();
    let (status, v) = submit(api, ALICE, json!({"input_file": {"upload_id": unknown}})).await;
    assert_eq!(
        (status, code(&v).as_str()),
        (404, "upload_not_found"),
        "{v}"
    );
    let (status, v) = submit(api, ALICE, json!({"input_file": {"upload_id": "nope"}})).await;
    assert_eq!(
        (status, code(&v).as_str()),
        (400, "invalid_upload_id"),
        "{v}"
    );

    // Unfinished: nothing was PUT yet.
    let (status, v) = create(api, ALICE, json!({"size": 5, "content_type": "text/plain"})).await;
    assert_eq!(status, 201, "{v}");
    let view: UploadView = serde_json::from_value(v).unwrap();
    assert!(view.url.is_some() && view.parts.is_empty());
    let by = |who| json!({"input_file": {"upload_id": view.upload_id}, "input": {"who": who}});
    let (status, v) = submit(api, ALICE, by("alice")).await;
    assert_eq!(
        (status, code(&v).as_str()),
        (409, "upload_unfinished"),
        "{v}"
    );

    // Foreign: another caller cannot tell it from an unknown upload.
    let path = small_file("refusals", b"hello");
    send(&view, &path).await;
    let (status, v) = submit(api, BOB, by("bob")).await;
    assert_eq!(
        (status, code(&v).as_str()),
        (404, "upload_not_found"),
        "{v}"
    );
    let (status, v) = submit(api, ALICE, by("alice")).await;
    assert_eq!(status, 202, "{v}");
    assert_eq!(v["input_file"]["size"], 5);
    assert_eq!(v["input_file"]["content_type"], "text/plain");

    // The object is not the size announced.
    let (_, v) = create(api, ALICE, json!({"size": 9})).await;
    let other: UploadView = serde_json::from_value(v).unwrap();
    s.api_payloads()
        .client()
        .put_object()
        .bucket(&s.res.payload_bucket)
        .key(&other.key)
        .body(b"hello".to_vec().into())
        .send()
        .await
        .unwrap();
    let (status, v) = submit(
        api,
        ALICE,
        json!({"input_file": {"upload_id": other.upload_id}}),
    )
    .await;
    assert_eq!(
        (status, code(&v).as_str()),
        (409, "upload_size_mismatch"),
        "{v}"
    );

    // Expired: an API whose uploads last a second.
    let mut config = api_config(&s.res);
    config.uploads.expiry = Duration::from_secs(1);
    let brief =
        Api::new(s.store.clone(), Some(s.queue.clone()), config).with_payloads(s.api_payloads());
    let (_, v) = create(&brief, ALICE, json!({"size": 5})).await;
    let view: UploadView = serde_json::from_value(v).unwrap();
    send(&view, &path).await;
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    let (status, v) = submit(
        &brief,
        ALICE,
        json!({"input_file": {"upload_id": view.upload_id}}),
    )
    .await;
    assert_eq!((status, code(&v).as_str()), (410, "upload_expired"), "{v}");
    std::fs::remove_file(&path).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_multipart_upload_is_usable_only_once_completed() {
    let s = Stack::new("upload_multipart").await;
    let mut config = api_config(&s.res);
    config.uploads.single_put_limit = 0;
    let api =
        Api::new(s.store.clone(), Some(s.queue.clone()), config).with_payloads(s.api_payloads());
    let (path, _) = pattern_file("multipart", 12);
    let (status, v) = create(&api, ALICE, json!({"size": 12 * MIB})).await;
    assert_eq!(status, 201, "{v}");
    let view: UploadView = serde_json::from_value(v).unwrap();
    assert_eq!((view.part_size, view.parts.len()), (Some(8 * MIB), 2));
    assert!(view.url.is_none());
    assert!(view
        .complete_url
        .as_deref()
        .unwrap()
        .ends_with(&format!("/uploads/{}/complete", view.upload_id)));
    let parts = send(&view, &path).await;
    let job = json!({"input_file": {"upload_id": view.upload_id}});
    let (status, v) = submit(&api, ALICE, job.clone()).await;
    assert_eq!(status, 409, "{v}");
    assert!(v["error"]["message"]
        .as_str()
        .unwrap()
        .contains("/complete"));

    // Another caller cannot complete it; the owner can, and again (idempotent).
    let complete = json!({ "parts": parts }).to_string();
    let path_of = format!("/uploads/{}/complete", view.upload_id);
    let (status, v) = crate::support::decode(api.handle(post_path(BOB, &path_of, &complete)).await);
    assert_eq!(status, 404, "{v}");
    for _ in 0..2 {
        let (status, v) =
            crate::support::decode(api.handle(post_path(ALICE, &path_of, &complete)).await);
        assert_eq!((status, &v["completed"]), (200, &json!(true)), "{v}");
    }
    let (status, v) = submit(&api, ALICE, job).await;
    assert_eq!(status, 202, "{v}");
    assert_eq!(v["input_file"]["size"], 12 * MIB);
    std::fs::remove_file(&path).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_uploads_a_file_and_submits_a_job_that_names_it() {
    let s = Stack::new("upload_cli").await;
    let url = serve(s.api.clone()).await;
    let path = small_file("cli", b"a small photo");
    let path_text = path.display().to_string();
    let out = tokio::task::spawn_blocking(move || {
        crate::support::sluice_cli(&[
            "--url",
            &url,
            "--json",
            "submit",
            "--upload",
            &path_text,
            "--content-type",
            "image/jpeg",
            r#"{"size": "small"}"#,
        ])
    })
    .await
    .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let view: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(view["status"], "QUEUED", "{view}");
    assert_eq!(view["input_file"]["size"], 13);
    assert_eq!(view["input_file"]["content_type"], "image/jpeg");
    std::fs::remove_file(&path).unwrap();
}
