//! The S3 payload adapter against the emulator: presigned uploads as a caller makes them (plain
//! HTTP, no AWS credentials), files streamed both ways, and deletes.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use sluice::payload::{part_plan, part_range, PayloadError, Payloads, Presigned, UploadedPart};

use crate::faults::{Fault, Faults};
use crate::support::*;

const MIB: u64 = 1 << 20;
const HOUR: Duration = Duration::from_secs(3600);

/// A fresh bucket for one test, made through the SDK.
async fn bucket(test: &str) -> Payloads {
    static N: AtomicU32 = AtomicU32::new(0);
    let name = format!(
        "{}-{}-{}",
        test.replace('_', "-").chars().take(40).collect::<String>(),
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    );
    let payloads = Payloads::from_sdk(&sdk().await, name);
    payloads
        .client()
        .create_bucket()
        .bucket(payloads.bucket())
        .send()
        .await
        .expect("the bucket is created");
    payloads
}

/// A temporary directory, removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new(test: &str) -> TempDir {
        let dir = std::env::temp_dir().join(format!("sluice-{test}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }

    fn join(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// `len` pseudo-random bytes from `seed` (splitmix64), the same for the same seed.
fn pattern(seed: u64, len: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(len + 8);
    let mut state = seed;
    while out.len() < len {
        state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        out.extend_from_slice(&(z ^ (z >> 31)).to_le_bytes());
    }
    out.truncate(len);
    out
}

/// Writes `len` pseudo-random bytes to `path` a MiB at a time; returns their sha256.
fn write_file(path: &Path, seed: u64, len: u64) -> [u8; 32] {
    let mut file = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    let mut hash = Sha256::new();
    let mut left = len;
    let mut block = 0;
    while left > 0 {
        let n = left.min(MIB);
        let chunk = pattern(seed.wrapping_add(block), n as usize);
        hash.update(&chunk);
        file.write_all(&chunk).unwrap();
        left -= n;
        block += 1;
    }
    file.flush().unwrap();
    hash.finalize().into()
}

/// The sha256 of a file, read a MiB at a time.
fn file_sha256(path: &Path) -> [u8; 32] {
    let mut file = std::fs::File::open(path).unwrap();
    let mut hash = Sha256::new();
    let mut buf = vec![0; MIB as usize];
    loop {
        let n = file.read(&mut buf).unwrap();
        if n == 0 {
            return hash.finalize().into();
        }
        hash.update(&buf[..n]);
    }
}

/// Sends a presigned request with `body`; returns the answer's status and `ETag`.
async fn send(http: &reqwest::Client, req: &Presigned, body: Vec<u8>) -> (u16, Option<String>) {
    let method = reqwest::Method::from_bytes(req.method.as_bytes()).unwrap();
    let mut call = http.request(method, &req.url).body(body);
    for (k, v) in &req.headers {
        call = call.header(k, v);
    }
    let resp = call.send().await.expect("the emulator answers");
    let etag = resp
        .headers()
        .get("etag")
        .map(|v| v.to_str().unwrap().to_owned());
    (resp.status().as_u16(), etag)
}

/// This process's resident set and its peak so far (VmRSS, VmHWM), in bytes.
fn memory() -> (u64, u64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let field = |name: &str| {
        let line = status.lines().find(|l| l.starts_with(name)).unwrap();
        let kib: u64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
        kib * 1024
    };
    (field("VmRSS:"), field("VmHWM:"))
}

#[tokio::test]
async fn a_presigned_put_uploads_an_object_that_head_then_describes() {
    let p = bucket("presigned_put").await;
    let http = reqwest::Client::new();
    let put = p
        .presigned_put("in/a.json", "application/json", HOUR)
        .await
        .unwrap();
    assert_eq!(put.method, "PUT");
    assert!(put.url.contains("X-Amz-Signature="), "{}", put.url);
    assert!(put
        .headers
        .iter()
        .any(|(k, v)| k == "content-type" && v == "application/json"));

    assert_eq!(p.head("in/a.json").await.unwrap(), None);
    let body = br#"{"hello":"world"}"#.to_vec();
    let (status, etag) = send(&http, &put, body.clone()).await;
    assert_eq!(status, 200);

    let info = p
        .head("in/a.json")
        .await
        .unwrap()
        .expect("the upload exists");
    assert_eq!(info.size, body.len() as u64);
    assert_eq!(info.content_type.as_deref(), Some("application/json"));
    assert_eq!(Some(info.etag), etag);

    // And a presigned GET hands it back to someone without credentials.
    let get = p.presigned_get("in/a.json", HOUR).await.unwrap();
    assert_eq!(get.method, "GET");
    let got = http.get(&get.url).send().await.unwrap();
    assert_eq!(got.status().as_u16(), 200);
    assert_eq!(got.bytes().await.unwrap().as_ref(), body.as_slice());
}

#[tokio::test]
async fn a_multipart_upload_through_presigned_part_urls_downloads_intact() {
    let p = bucket("presigned_multipart").await;
    let http = reqwest::Client::new();
    let dir = TempDir::new("presigned_multipart");
    let size = 20 * MIB + 12_345;
    let data = pattern(7, size as usize);
    let (part_size, parts) = part_plan(size).unwrap();
    assert_eq!(parts, 3);

    let upload = p
        .create_multipart("in/big.bin", "application/octet-stream")
        .await
        .unwrap();
    // Nothing is there until the upload is completed.
    assert_eq!(p.head("in/big.bin").await.unwrap(), None);
    let mut done = Vec::new();
    // The caller may send parts in any order.
    for number in (1..=parts).rev() {
        let url = p
            .presigned_part("in/big.bin", &upload, number, HOUR)
            .await
            .unwrap();
        let (offset, length) = part_range(size, part_size, number);
        let body = data[offset as usize..(offset + length) as usize].to_vec();
        let (status, etag) = send(&http, &url, body).await;
        assert_eq!(status, 200, "part {number}");
        done.push(UploadedPart {
            number,
            etag: etag.expect("a part's answer carries its ETag"),
        });
    }
    assert_eq!(p.head("in/big.bin").await.unwrap(), None);
    p.complete_multipart("in/big.bin", &upload, &done)
        .await
        .unwrap();

    let info = p.head("in/big.bin").await.unwrap().expect("completed");
    assert_eq!(info.size, size);
    assert_eq!(
        info.content_type.as_deref(),
        Some("application/octet-stream")
    );
    assert!(info.etag.ends_with("-3\""), "{}", info.etag);

    let path = dir.join("big.bin");
    assert_eq!(p.download_to_file("in/big.bin", &path).await.unwrap(), size);
    assert_eq!(file_sha256(&path), <[u8; 32]>::from(Sha256::digest(&data)));
}

#[tokio::test]
async fn an_aborted_multipart_upload_leaves_nothing_and_refuses_parts() {
    let p = bucket("aborted_multipart").await;
    let http = reqwest::Client::new();
    let upload = p.create_multipart("in/x.bin", "text/plain").await.unwrap();
    let url = p
        .presigned_part("in/x.bin", &upload, 1, HOUR)
        .await
        .unwrap();
    assert_eq!(send(&http, &url, b"first".to_vec()).await.0, 200);

    p.abort_multipart("in/x.bin", &upload).await.unwrap();
    assert_eq!(p.head("in/x.bin").await.unwrap(), None);
    let url = p
        .presigned_part("in/x.bin", &upload, 2, HOUR)
        .await
        .unwrap();
    // S3 answers 404 NoSuchUpload, to a part's PUT as to a completion (which `complete_multipart`
    // reports as `NotFound`); the emulator answers 500 to both (it looks the upload up unchecked).
    let (status, _) = send(&http, &url, b"late".to_vec()).await;
    assert!(matches!(status, 404 | 500), "{status}");
}

#[tokio::test]
async fn presigning_refuses_bad_part_numbers_and_expiries_over_a_week() {
    let p = bucket("presign_limits").await;
    let upload = p.create_multipart("k", "text/plain").await.unwrap();
    for number in [0, 10_001] {
        let err = p
            .presigned_part("k", &upload, number, HOUR)
            .await
            .unwrap_err();
        assert!(matches!(err, PayloadError::PartNumber { .. }), "{err:?}");
    }
    let err = p
        .presigned_put("k", "text/plain", Duration::from_secs(8 * 86_400))
        .await
        .unwrap_err();
    assert!(matches!(err, PayloadError::Expiry(_)), "{err:?}");
    assert!(!err.is_retryable());
}

#[tokio::test]
async fn absent_objects_read_as_none_or_not_found() {
    let p = bucket("absent").await;
    let dir = TempDir::new("absent");
    assert_eq!(p.head("nothing/here").await.unwrap(), None);
    let path = dir.join("out");
    let err = p.download_to_file("nothing/here", &path).await.unwrap_err();
    assert!(
        matches!(&err, PayloadError::NotFound { key } if key == "nothing/here"),
        "{err:?}"
    );
    assert!(!path.exists(), "no file is left behind");
    // Deleting what is not there succeeds, as on S3.
    p.delete("nothing/here").await.unwrap();

    // A bucket that does not exist is refused, not retried.
    let missing = Payloads::from_sdk(&sdk().await, "no-such-bucket-anywhere");
    let err = missing.head("k").await;
    assert!(
        matches!(err, Ok(None) | Err(PayloadError::Rejected(_))),
        "{err:?}"
    );
}

#[tokio::test]
async fn a_small_file_round_trips_in_one_put() {
    let p = bucket("small_file").await;
    let dir = TempDir::new("small_file");
    let src = dir.join("in.bin");
    let sum = write_file(&src, 3, 3 * MIB + 5);
    let calls = Mutex::new(Vec::new());
    let info = p
        .upload_file_with_progress(&src, "small", "image/png", |n| {
            calls.lock().unwrap().push(n)
        })
        .await
        .unwrap();
    assert_eq!(*calls.lock().unwrap(), vec![3 * MIB + 5]);
    assert_eq!(info, p.head("small").await.unwrap().unwrap());
    assert_eq!(info.content_type.as_deref(), Some("image/png"));
    assert!(!info.etag.contains('-'), "one PUT: {}", info.etag);

    let out = dir.join("out.bin");
    assert_eq!(p.download_to_file("small", &out).await.unwrap(), info.size);
    assert_eq!(file_sha256(&out), sum);

    // An empty file too.
    let empty = dir.join("empty");
    std::fs::File::create(&empty).unwrap();
    assert_eq!(
        p.upload_file(&empty, "empty", "text/plain")
            .await
            .unwrap()
            .size,
        0
    );
    assert_eq!(p.download_to_file("empty", &out).await.unwrap(), 0);
    assert_eq!(std::fs::metadata(&out).unwrap().len(), 0);
}

/// An object over the single-copy limit (5 GiB in S3, a few MiB here) is copied to another
/// bucket in parts, byte for byte and with its content type; one under it in one copy.
#[tokio::test]
async fn an_object_over_the_single_copy_limit_is_copied_in_parts() {
    let from = bucket("copy_from").await;
    let to = bucket("copy_to").await;
    let dir = TempDir::new("copy_parts");
    let src = dir.join("in.bin");
    let size = 12 * MIB + 7;
    let sum = write_file(&src, 9, size);
    from.upload_file(&src, "outputs/big.bin", "video/mp4")
        .await
        .unwrap();
    from.copy_to_with(
        "outputs/big.bin",
        size,
        to.bucket(),
        "out/a b/big.bin",
        5 * MIB,
        5 * MIB,
    )
    .await
    .unwrap();
    let copied = to.head("out/a b/big.bin").await.unwrap().unwrap();
    assert_eq!(copied.size, size);
    assert_eq!(copied.content_type.as_deref(), Some("video/mp4"));
    assert!(
        copied.etag.ends_with("-3\""),
        "three parts: {}",
        copied.etag
    );
    let out = dir.join("out.bin");
    to.download_to_file("out/a b/big.bin", &out).await.unwrap();
    assert_eq!(file_sha256(&out), sum);

    from.copy_to("outputs/big.bin", size, to.bucket(), "out/one.bin")
        .await
        .unwrap();
    let one = to.head("out/one.bin").await.unwrap().unwrap();
    assert!(!one.etag.ends_with("-3\""), "one copy: {}", one.etag);
    to.download_to_file("out/one.bin", &out).await.unwrap();
    assert_eq!(file_sha256(&out), sum);

    // A copy of what is not there says so, and leaves no upload behind.
    let missing = from
        .copy_to_with(
            "outputs/none",
            size,
            to.bucket(),
            "out/none",
            5 * MIB,
            5 * MIB,
        )
        .await;
    assert!(
        matches!(missing, Err(PayloadError::NotFound { .. })),
        "{missing:?}"
    );
}

/// Files stream: a worker's memory must not grow with the payload.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_file_round_trips_without_growing_memory() {
    let p = bucket("large_file").await;
    let dir = TempDir::new("large_file");
    let size = 200 * MIB + 7;
    let src = dir.join("in.bin");
    let sum = write_file(&src, 42, size);

    // Start the peak from now (writing 5 to clear_refs resets VmHWM); if the kernel refuses,
    // the peak so far only makes the check looser.
    let _ = std::fs::write("/proc/self/clear_refs", "5");
    let (rss_before, _) = memory();
    let started = Instant::now();
    let seen = Mutex::new(Vec::new());
    let info = p
        .upload_file_with_progress(&src, "big/in.bin", "application/octet-stream", |n| {
            seen.lock().unwrap().push(n)
        })
        .await
        .unwrap();
    let uploaded = started.elapsed();
    let out = dir.join("out.bin");
    let written = Mutex::new(Vec::new());
    let got = p
        .download_to_file_with_progress("big/in.bin", &out, |n| written.lock().unwrap().push(n))
        .await
        .unwrap();
    assert_eq!(got, size);
    let round_trip = started.elapsed();
    let (_, peak) = memory();
    let growth = peak.saturating_sub(rss_before);

    assert_eq!(info.size, size);
    let (_, parts) = part_plan(size).unwrap();
    assert!(info.etag.ends_with(&format!("-{parts}\"")), "{}", info.etag);
    let seen = seen.into_inner().unwrap();
    assert_eq!(seen.len(), parts as usize);
    assert!(seen.windows(2).all(|w| w[0] < w[1]), "{seen:?}");
    assert_eq!(seen.last(), Some(&size));
    let written = written.into_inner().unwrap();
    assert!(written.windows(2).all(|w| w[0] < w[1]), "{written:?}");
    assert_eq!(written.last(), Some(&size));
    assert!((100..=201).contains(&written.len()), "{}", written.len());
    assert_eq!(file_sha256(&out), sum);
    eprintln!(
        "{size} bytes: up {:.1} s, round trip {:.1} s, peak memory +{} MiB",
        uploaded.as_secs_f64(),
        round_trip.as_secs_f64(),
        growth / MIB
    );
    assert!(
        growth < 64 * MIB,
        "memory grew by {} MiB moving a {} MiB file",
        growth / MIB,
        size / MIB
    );
}

#[tokio::test]
async fn delete_prefix_deletes_every_page_and_nothing_else() {
    let p = bucket("delete_prefix").await;
    // Past one page of 1,000 keys, written 16 at a time.
    let keys: Vec<String> = (0..1_010).map(|i| format!("job/1/{i:04}")).collect();
    let mut puts = tokio::task::JoinSet::new();
    for chunk in keys.chunks(keys.len().div_ceil(16)) {
        let (p, chunk) = (p.clone(), chunk.to_vec());
        puts.spawn(async move {
            for key in chunk {
                p.client()
                    .put_object()
                    .bucket(p.bucket())
                    .key(&key)
                    .body(key.clone().into_bytes().into())
                    .send()
                    .await
                    .unwrap();
            }
        });
    }
    puts.join_all().await;
    for key in ["job/10/keep", "job/2/keep", "other"] {
        p.client()
            .put_object()
            .bucket(p.bucket())
            .key(key)
            .send()
            .await
            .unwrap();
    }

    assert_eq!(p.delete_prefix("job/1/").await.unwrap(), 1_010);
    assert_eq!(p.head("job/1/0000").await.unwrap(), None);
    assert_eq!(p.head("job/1/1009").await.unwrap(), None);
    for key in ["job/10/keep", "job/2/keep", "other"] {
        assert!(p.head(key).await.unwrap().is_some(), "{key} was kept");
    }
    assert_eq!(p.delete_prefix("job/1/").await.unwrap(), 0);
    let err = p.delete_prefix("").await.unwrap_err();
    assert!(matches!(err, PayloadError::EmptyPrefix), "{err:?}");
    assert!(p.head("other").await.unwrap().is_some());

    p.delete("other").await.unwrap();
    assert_eq!(p.head("other").await.unwrap(), None);
}

/// Payloads on `bucket` whose S3 requests pass through `faults`.
fn faulty(faults: &Faults, aws: &aws_config::SdkConfig, bucket: &str) -> Payloads {
    let s3 = aws_sdk_s3::Client::from_conf(
        aws_sdk_s3::config::Builder::from(aws)
            .force_path_style(true)
            .interceptor(faults.clone())
            .build(),
    );
    Payloads::new(s3, bucket)
}

#[tokio::test]
async fn a_part_whose_answer_is_lost_is_sent_again_from_disk() {
    let p = bucket("part_retried").await;
    let faults = Faults::default();
    let flaky = faulty(&faults, &sdk().await, p.bucket());
    let dir = TempDir::new("part_retried");
    let src = dir.join("in.bin");
    let size = 20 * MIB + 1;
    let sum = write_file(&src, 11, size);
    // Two faults in all, so that no part can use up the SDK's three attempts.
    faults.fail("UploadPart", None, Fault::AppliedThen500, 1);
    faults.fail("UploadPart", None, Fault::Refused, 1);

    let info = flaky
        .upload_file(&src, "retried", "application/octet-stream")
        .await
        .unwrap();
    assert_eq!(faults.injected().values().sum::<u64>(), 2);
    assert_eq!(info.size, size);
    let out = dir.join("out.bin");
    p.download_to_file("retried", &out).await.unwrap();
    assert_eq!(file_sha256(&out), sum);
}

#[tokio::test]
async fn an_upload_whose_part_keeps_failing_is_aborted() {
    let p = bucket("part_fails").await;
    let faults = Faults::default();
    let flaky = faulty(&faults, &sdk().await, p.bucket());
    let dir = TempDir::new("part_fails");
    let src = dir.join("in.bin");
    write_file(&src, 13, 20 * MIB);
    faults.fail("UploadPart", None, Fault::Refused, u32::MAX);

    let err = flaky
        .upload_file(&src, "failed", "application/octet-stream")
        .await
        .unwrap_err();
    assert!(err.is_retryable(), "{err:?}");
    assert_eq!(p.head("failed").await.unwrap(), None);
    // The upload was aborted: no parts are left to pay for.
    let uploads = p
        .client()
        .list_multipart_uploads()
        .bucket(p.bucket())
        .send()
        .await
        .unwrap();
    assert!(uploads.uploads().is_empty(), "{:?}", uploads.uploads());
}

#[tokio::test]
async fn a_send_slower_than_the_clients_attempt_limit_still_goes_up() {
    use aws_sdk_s3::config::timeout::TimeoutConfig;
    let p = bucket("slow_send").await;
    // A client whose calls may take 2 s an attempt, 4 s in all; every upload's answer takes 5 s.
    let aws = sdk()
        .await
        .into_builder()
        .timeout_config(
            TimeoutConfig::builder()
                .operation_attempt_timeout(Duration::from_secs(2))
                .operation_timeout(Duration::from_secs(4))
                .build(),
        )
        .build();
    let faults = Faults::default();
    let slow = faulty(&faults, &aws, p.bucket());
    let delay = Fault::AnswerDelayed(Duration::from_secs(5));
    faults.fail("PutObject", None, delay, u32::MAX);
    faults.fail("UploadPart", None, delay, u32::MAX);
    let dir = TempDir::new("slow_send");
    let (small, large) = (dir.join("small"), dir.join("large"));
    write_file(&small, 1, MIB);
    write_file(&large, 2, 20 * MIB);

    let (small, large) = tokio::join!(
        slow.upload_file(&small, "small", "text/plain"),
        slow.upload_file(&large, "large", "text/plain"),
    );
    assert_eq!(small.unwrap().size, MIB);
    assert_eq!(large.unwrap().size, 20 * MIB);
    let injected = faults.injected();
    assert_eq!(
        injected.get(&("PutObject".to_owned(), "answer delayed")),
        Some(&1),
        "one attempt, not cut short: {injected:?}"
    );
    assert_eq!(
        injected.get(&("UploadPart".to_owned(), "answer delayed")),
        Some(&3),
        "{injected:?}"
    );
}
