//! Files in and out: uploads through `POST /uploads` (one PUT, or multipart with presigned
//! parts), jobs that name them, handlers that get the file and give files back (output files, a
//! result too large for the job's record, a model server's binary answer) without the worker
//! holding any of them in memory, and presigned downloads of what they gave.

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

/// Downloads `url` (a presigned GET), streamed; its size and SHA-256.
async fn download(url: &str) -> (u64, String) {
    let mut resp = reqwest::get(url).await.unwrap();
    assert_eq!(resp.status(), 200, "GET {url}");
    let (mut digest, mut size) = (Sha256::new(), 0u64);
    while let Some(chunk) = resp.chunk().await.unwrap() {
        digest.update(&chunk);
        size += chunk.len() as u64;
    }
    let hex = digest
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    (size, hex)
}

/// Downloads a file a job produced (with the URL its view gave) and parses it as JSON.
async fn download_json(file: &sluice::api::FileView) -> serde_json::Value {
    let url = file.url.as_deref().expect("a download URL");
    assert!(file.expires_at.is_some(), "{file:?}");
    reqwest::get(url).await.unwrap().json().await.unwrap()
}

/// The output file `name` of a job's view.
fn output<'a>(view: &'a sluice::api::JobView, name: &str) -> &'a sluice::api::FileView {
    view.outputs
        .iter()
        .find(|f| f.name.as_deref() == Some(name))
        .unwrap_or_else(|| panic!("no output {name}: {view:?}"))
}

/// Uploads a 200 MiB file with the client (multipart, parts in parallel), submits a job naming
/// it with `input`, and waits for the job; returns the job's view, the file's SHA-256 and size,
/// and the worker's peak RSS.
async fn round_trip(
    s: &Stack,
    worker: &WorkerProcess,
    name: &str,
    content_type: &str,
    input: serde_json::Value,
) -> (sluice::api::JobView, String, u64, u64) {
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
    // The worker downloaded the file to a temporary file, and the handler wrote its output to
    // a temporary directory: both removed after the attempt.
    let leftovers: Vec<_> = std::fs::read_dir(std::env::temp_dir())
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            name.starts_with(&format!("sluice-input-{id}"))
                || name.starts_with(&format!("sluice-output-{id}"))
        })
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    (done, sha, size, rss)
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
    // The handler copies the file to an output file, and its result is over the protocol's
    // 1 MiB line limit: the helper hands it over as a file, stored whole.
    let input = json!({"note": "with a file", "copy": "copy.bin", "pad": 1_100_000});
    let (view, sha, size, rss) = round_trip(
        &s,
        &worker,
        "process",
        "application/octet-stream",
        input.clone(),
    )
    .await;
    assert_eq!(
        view.result, None,
        "too large to answer inline: {:?}",
        view.result_file
    );
    let result_file = view.result_file.as_ref().expect("the result is a file");
    assert_eq!(result_file.content_type, "application/json");
    let result = download_json(result_file).await;
    assert_eq!(result["size"], size);
    assert_eq!(result["sha256"], sha);
    assert_eq!(result["input"], input);
    assert_eq!(result["padding"].as_str().map(str::len), Some(1_100_000));
    assert_eq!(view.outputs.len(), 1, "{:?}", view.outputs);
    let copy = output(&view, "copy.bin");
    assert_eq!(
        (copy.size, copy.content_type.as_str()),
        (size, "application/octet-stream")
    );
    assert_eq!(download(copy.url.as_deref().unwrap()).await, (size, sha));
    assert!(rss < size / 4, "the worker's peak RSS is {rss} bytes");
}

/// The same round trip through a Rust handler (the worker's built-in demo): the file comes in
/// as a path, goes back as an output file, and a result over the 350,000-byte inline limit is
/// stored in the payload bucket.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_200_mib_file_goes_through_a_rust_handler_and_back_as_an_output_file() {
    let s = Stack::new("upload_rust").await;
    let worker = s.worker("files", &[("SLUICE_HANDLER", "demo")]);
    let input = json!({"text": "a copy", "copy_input": "out/copy.bin", "result_bytes": 400_000});
    let (view, sha, size, rss) =
        round_trip(&s, &worker, "rust", "application/octet-stream", input).await;
    assert_eq!(view.result, None);
    let result = download_json(view.result_file.as_ref().expect("the result is a file")).await;
    assert_eq!(
        (result["copied"].as_u64(), result["words"].as_u64()),
        (Some(size), Some(2))
    );
    assert_eq!(result["padding"].as_str().map(str::len), Some(400_000));
    let copy = output(&view, "out/copy.bin");
    assert_eq!(download(copy.url.as_deref().unwrap()).await, (size, sha));
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
    let (view, sha, size, rss) =
        round_trip(&s, &worker, "http", "image/x-test", json!({"label": "cat"})).await;
    let result = view.result.expect("a JSON answer is the result");
    assert_eq!(result["size"], size);
    assert_eq!(result["sha256"], sha);
    assert_eq!(result["content_type"], "image/x-test");
    assert_eq!(result["input"], json!({"label": "cat"}));
    assert!(rss < size / 4, "the worker's peak RSS is {rss} bytes");

    // Asked to echo the file, the server answers with 200 MiB of bytes: the job's result file,
    // streamed to disk and on to the bucket.
    let (view, sha, size, rss) = round_trip(
        &s,
        &worker,
        "http-echo",
        "image/x-test",
        json!({"echo": true}),
    )
    .await;
    assert_eq!(view.result, None);
    let file = view.result_file.expect("the answer is a file");
    assert_eq!(
        (file.size, file.content_type.as_str()),
        (size, "application/octet-stream")
    );
    assert_eq!(download(file.url.as_deref().unwrap()).await, (size, sha));
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

/// An input over the inline limit is uploaded by the CLI and read by the handler as its input;
/// a result too large for the job's record is stored as a file, which `sluice download` fetches.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_offloads_a_large_input_and_downloads_a_large_result() {
    let s = Stack::new("offload_cli").await;
    let url = serve(s.api.clone()).await;
    let _worker = s.worker("files", &[("SLUICE_HANDLER", "demo")]);
    let text = "word ".repeat(200_000);
    let input = small_file(
        "offload.json",
        json!({"text": text, "result_bytes": 400_000})
            .to_string()
            .as_bytes(),
    );
    assert!(std::fs::metadata(&input).unwrap().len() as usize > sluice::api::OFFLOAD_ABOVE);
    let cli = |args: Vec<String>| async move {
        tokio::task::spawn_blocking(move || {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            crate::support::sluice_cli(&args)
        })
        .await
        .unwrap()
    };
    let out = cli(vec![
        "--url".into(),
        url.clone(),
        "--json".into(),
        "submit".into(),
        "--file".into(),
        input.display().to_string(),
        "--wait".into(),
    ])
    .await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let view: sluice::api::JobView = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(view.status, Status::Succeeded, "{view:?}");
    let file = view.input_file.as_ref().expect("the input went as a file");
    assert_eq!(file.content_type, "application/json");
    assert_eq!(view.result, None);
    assert!(view.result_file.is_some(), "{view:?}");

    let dir = std::env::temp_dir().join(format!("sluice-download-{}", view.id));
    let out = cli(vec![
        "--url".into(),
        url,
        "download".into(),
        view.id.clone(),
        "--to".into(),
        dir.display().to_string(),
    ])
    .await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let result: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("result.json")).unwrap()).unwrap();
    assert_eq!(result["words"], 200_000);
    assert_eq!(result["padding"].as_str().map(str::len), Some(400_000));
    std::fs::remove_dir_all(&dir).unwrap();
    std::fs::remove_file(&input).unwrap();
}

/// API Gateway cuts a request off at 30 s with a 504, while the function behind it goes on; S3
/// may take minutes to join a large file's parts. A stand-in for that gateway in front of the
/// local API forwards the first completions (so the join happens) and answers them 504: the
/// client keeps asking, past its usual half minute of retries, and the API finds the file joined.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_completion_the_gateway_cuts_off_is_asked_again_until_the_file_is_joined() {
    use std::sync::atomic::{AtomicU32, Ordering};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let s = Stack::new("upload_complete_504").await;
    let mut config = api_config(&s.res);
    config.uploads.single_put_limit = 0;
    let api = Api::new(s.store.clone(), Some(s.queue.clone()), config.clone())
        .with_payloads(s.api_payloads());
    let upstream = serve(api.clone()).await;
    // One more than the client's usual tries.
    const CUT: u32 = 6;
    let cut = Arc::new(AtomicU32::new(0));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let front = format!("http://{}", listener.local_addr().unwrap());
    let counted = cut.clone();
    tokio::spawn(async move {
        let http = reqwest::Client::new();
        while let Ok((mut stream, _)) = listener.accept().await {
            let (http, upstream, cut) = (http.clone(), upstream.clone(), counted.clone());
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 65536];
                let (head, body) = loop {
                    let n = stream.read(&mut chunk).await.unwrap_or(0);
                    if n == 0 {
                        return;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                    let text = String::from_utf8_lossy(&buf).into_owned();
                    if let Some(end) = text.find("\r\n\r\n") {
                        let len: usize = text[..end]
                            .lines()
                            .find_map(|l| {
                                l.to_ascii_lowercase()
                                    .strip_prefix("content-length:")
                                    .map(|v| v.trim().parse().unwrap_or(0))
                            })
                            .unwrap_or(0);
                        if buf.len() >= end + 4 + len {
                            break (text[..end].to_owned(), buf[end + 4..end + 4 + len].to_vec());
                        }
                    }
                };
                let mut words = head.split(' ');
                let (method, path) = (
                    words.next().unwrap().to_owned(),
                    words.next().unwrap().to_owned(),
                );
                let answer = http
                    .request(method.parse().unwrap(), format!("{upstream}{path}"))
                    .header("content-type", "application/json")
                    .body(body)
                    .send()
                    .await
                    .unwrap();
                let status = answer.status().as_u16();
                let text = answer.text().await.unwrap();
                let (status, text) =
                    if path.ends_with("/complete") && cut.fetch_add(1, Ordering::SeqCst) < CUT {
                        (
                            504,
                            r#"{"message":"Endpoint request timed out"}"#.to_owned(),
                        )
                    } else {
                        (status, text)
                    };
                let reply = format!(
                    "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{text}",
                    text.len()
                );
                let _ = stream.write_all(reply.as_bytes()).await;
            });
        }
    });

    let (path, _) = pattern_file("complete-504", 12);
    let client = Client::new(&front).unwrap();
    let view = client
        .upload_file(&path, "application/octet-stream", |_| {})
        .await
        .expect("the completion is asked again until it answers");
    assert!(view.completed, "{view:?}");
    assert!(
        cut.load(Ordering::SeqCst) > CUT,
        "every cut completion was asked again"
    );
    let (status, v) = submit(
        &api,
        sluice::local::LOCAL_IDENTITY,
        json!({"input_file": {"upload_id": view.upload_id}}),
    )
    .await;
    assert_eq!(status, 202, "{v}");
    assert_eq!(v["input_file"]["size"], 12 * MIB);
    let object = s.api_payloads().head(&view.key).await.unwrap().unwrap();
    assert_eq!(object.size, 12 * MIB);
    std::fs::remove_file(&path).unwrap();
}

/// The same explicit idempotency key, sent again by a command run again, names the same job,
/// though the input was large enough to be uploaded each time: the API compares uploads that
/// declare their content by its SHA-256, not by their id. Another input under the key is still
/// refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_input_sent_again_under_its_key_names_the_same_job() {
    let s = Stack::new("upload_idempotent").await;
    let client = Client::new(&serve(s.api.clone()).await).unwrap();
    let large = |fill: &str| {
        serde_json::value::to_raw_value(&json!({"text": fill.repeat(900 * 1024)})).unwrap()
    };
    let opts = SubmitOptions {
        idempotency_key: Some("nightly-batch-2026-12-05".into()),
        ..Default::default()
    };
    let first = client.submit(&large("a"), &opts).await.unwrap();
    let again = client.submit(&large("a"), &opts).await.unwrap();
    assert_eq!(again.id, first.id, "one job for one key and one input");
    assert_ne!(
        again.input_file.as_ref().map(|f| f.upload_id.as_str()),
        None,
        "{again:?}"
    );
    let other = client.submit(&large("b"), &opts).await;
    assert!(
        matches!(
            &other,
            Err(sluice::client::ClientError::Api { status: 422, .. })
        ),
        "another input under the key: {other:?}"
    );
}

/// An upload may declare its file's SHA-256: its single PUT then carries it, signed, for S3 to
/// check the bytes against; a malformed one is refused.
#[tokio::test]
async fn an_upload_that_declares_its_sha256_has_s3_check_it() {
    let s = Stack::new("upload_sha256").await;
    let sum = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"; // "abc"
    let (status, v) = create(
        &s.api,
        ALICE,
        json!({"size": 3, "sha256": sum.to_uppercase()}),
    )
    .await;
    assert_eq!(status, 201, "{v}");
    let view: UploadView = serde_json::from_value(v).unwrap();
    let signed = view
        .headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("x-amz-checksum-sha256"))
        .map(|(_, v)| v.clone());
    assert_eq!(
        signed.as_deref(),
        Some("ungWv48Bz+pBQUDeXa4iI7ADYaOWF3qctBD/YfIAFa0=")
    );
    assert!(
        view.url
            .as_deref()
            .unwrap()
            .contains("x-amz-checksum-sha256"),
        "{:?}",
        view.url
    );
    for bad in ["abc", &"g".repeat(64), &format!("{sum}0")] {
        let (status, v) = create(&s.api, ALICE, json!({"size": 3, "sha256": bad})).await;
        assert_eq!(
            (status, v["error"]["code"].as_str()),
            (400, Some("invalid_sha256")),
            "{bad}: {v}"
        );
    }
}
