//! Jobs that name objects already in S3 (`s3://bucket/key`): a job naming an object in a listed
//! bucket runs on its bytes, with a GET presigned by the caller's own credentials as the proof
//! it may read it; everything else is refused with a clear 4xx, and a URL to another host than
//! S3's gets no request at all.
//!
//! moto does not verify presigned URLs (neither their signature nor their expiry: it serves
//! any request that carries one), so what S3 refuses is answered here by a stand-in S3 on
//! loopback that accepts only the signatures of the URLs the test presigned right, and refuses
//! expired ones as S3 does.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_config::BehaviorVersion;
use aws_sdk_dynamodb::config::{Credentials, Region};
use serde_json::json;
use sha2::{Digest, Sha256};
use sluice::api::Api;
use sluice::client::{Client, SubmitOptions};
use sluice::config::ReferenceSettings;
use sluice::job::{JobId, Status};
use sluice::payload::Payloads;
use sluice::reference::{Emulator, S3Name};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::support::{api_config, decode, post_json, sluice_cli, Stack, ALICE};

fn fixture(name: &str) -> String {
    std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
        .display()
        .to_string()
}

/// A fresh bucket of the emulator, path-style as the local stack addresses it.
async fn bucket(s: &Stack, what: &str) -> Payloads {
    static N: AtomicU32 = AtomicU32::new(0);
    let name = format!(
        "refs-{what}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    );
    let p = Payloads::from_sdk(&s.aws, name.as_str());
    p.client()
        .create_bucket()
        .bucket(&name)
        .send()
        .await
        .unwrap();
    p
}

/// The stack's API with `buckets` listed, checking URLs of the emulator (or of `emulator`).
fn api_listing(s: &Stack, buckets: &[&str], emulator: Option<Emulator>) -> Api {
    let mut config = api_config(&s.res);
    config.references = ReferenceSettings {
        buckets: buckets.iter().copied().collect(),
        emulator: emulator.or(config.references.emulator),
    };
    Api::new(s.store.clone(), Some(s.queue.clone()), config).with_payloads(s.api_payloads())
}

async fn serve(api: Api) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(sluice::local::serve(api, listener, std::future::pending()));
    url
}

async fn presign(p: &Payloads, key: &str, lifetime: Duration) -> String {
    p.presigned_get(key, lifetime).await.unwrap().url
}

async fn submit_ref(api: &Api, name: &str, url: &str) -> (u16, serde_json::Value) {
    let body = json!({"input_file": {"s3": name, "presigned_url": url}});
    decode(api.handle(post_json(ALICE, &body.to_string(), None)).await)
}

fn code(v: &serde_json::Value) -> &str {
    v["error"]["code"].as_str().unwrap_or_default()
}

fn message(v: &serde_json::Value) -> &str {
    v["error"]["message"].as_str().unwrap_or_default()
}

fn sha256(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_naming_an_object_in_a_listed_bucket_runs_on_its_bytes() {
    let s = Stack::new("refs_run").await;
    let data = bucket(&s, "run").await;
    let bytes: Vec<u8> = (0..3 * 1024 * 1024u32).map(|i| (i % 251) as u8).collect();
    let key = "in/2026/rows a+b.csv";
    data.put_bytes(key, bytes.clone(), "text/csv")
        .await
        .unwrap();
    let name: S3Name = format!("s3://{}/{key}", data.bucket()).parse().unwrap();
    let api = api_listing(&s, &[data.bucket()], None);
    let command = json!(["python3", fixture("file_handler.py")]).to_string();
    let _worker = s.worker(
        "refs",
        &[
            ("SLUICE_HANDLER", "process"),
            ("SLUICE_COMMAND", command.as_str()),
        ],
    );

    // The Rust client, with a URL presigned by the caller's credentials.
    let url = serve(api.clone()).await;
    let client = Client::new(&url).unwrap();
    let presigned = presign(&data, key, Duration::from_secs(900)).await;
    let input = serde_json::value::to_raw_value(&json!({"note": "from S3"})).unwrap();
    let view = client
        .submit_s3(&name, &presigned, Some(&input), &SubmitOptions::default())
        .await
        .unwrap();
    let file = view.input_file.clone().expect("the job names its file");
    assert_eq!(file.s3.as_deref(), Some(name.to_string().as_str()));
    assert_eq!(
        (
            file.size,
            file.content_type.as_str(),
            file.upload_id.as_str()
        ),
        (bytes.len() as u64, "text/csv", "")
    );
    let id: JobId = view.id.parse().unwrap();
    let done = s
        .wait_terminal(sluice::local::LOCAL_IDENTITY, &id, Duration::from_secs(60))
        .await;
    assert_eq!(done.status, Status::Succeeded, "{done:?}");
    let result = done.result.clone().unwrap();
    assert_eq!(result["size"], bytes.len() as u64);
    assert_eq!(result["sha256"], sha256(&bytes));
    assert_eq!(result["input"], json!({"note": "from S3"}));

    // The view names the object, never the URL, which is not stored either.
    let shown = serde_json::to_string(&done).unwrap();
    assert!(shown.contains(&format!("\"s3\":\"{name}\"")), "{shown}");
    assert!(!shown.contains("X-Amz-Signature"), "{shown}");
    let record = s.store.get(&id).await.unwrap().unwrap();
    let object = record.input_object.unwrap();
    assert_eq!(
        (object.bucket.as_deref(), object.key.as_str()),
        (Some(data.bucket()), key)
    );
    // The object is the caller's: the job leaves it where and as it was.
    let left = data
        .head(key)
        .await
        .unwrap()
        .expect("the object is still there");
    assert_eq!(left.size, bytes.len() as u64);

    // The command presigns with the caller's own credentials (the emulator's, path style).
    let out = tokio::task::spawn_blocking(move || {
        sluice_cli(&[
            "--url",
            &url,
            "--json",
            "submit",
            "--s3",
            &name.to_string(),
            "--wait",
            "--timeout",
            "60",
        ])
    })
    .await
    .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["status"], "SUCCEEDED", "{v}");
    assert_eq!(v["result"]["sha256"], sha256(&bytes), "{v}");

    // A name that is no S3 URI is refused by the command before anything is sent.
    let out = sluice_cli(&["submit", "--s3", "data-lake/in/a.csv"]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("write s3://bucket/key"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn references_that_cannot_be_used_are_refused_with_a_clear_4xx() {
    let s = Stack::new("refs_refused").await;
    let listed = bucket(&s, "listed").await;
    let other = bucket(&s, "other").await;
    for p in [&listed, &other] {
        p.put_bytes("a.txt", b"hello".to_vec(), "text/plain")
            .await
            .unwrap();
        p.put_bytes("b.txt", b"world".to_vec(), "text/plain")
            .await
            .unwrap();
    }
    let api = api_listing(&s, &[listed.bucket()], None);
    let lifetime = Duration::from_secs(900);
    let name = |p: &Payloads, key: &str| format!("s3://{}/{key}", p.bucket());

    // No buckets listed: the deployment says which setting lists them.
    let (status, v) = submit_ref(
        &s.api,
        &name(&listed, "a.txt"),
        &presign(&listed, "a.txt", lifetime).await,
    )
    .await;
    assert_eq!((status, code(&v)), (403, "references_disabled"), "{v}");
    assert!(
        message(&v).contains("SLUICE_INPUT_BUCKETS") && message(&v).contains("inputBuckets"),
        "{v}"
    );

    // A bucket the deployment does not list, even with a good URL of the caller's.
    let (status, v) = submit_ref(
        &api,
        &name(&other, "a.txt"),
        &presign(&other, "a.txt", lifetime).await,
    )
    .await;
    assert_eq!((status, code(&v)), (403, "bucket_not_listed"), "{v}");
    assert!(message(&v).contains(other.bucket()), "{v}");

    // A URL of another object than the one named: of another key, or of another bucket.
    let (status, v) = submit_ref(
        &api,
        &name(&listed, "a.txt"),
        &presign(&listed, "b.txt", lifetime).await,
    )
    .await;
    assert_eq!((status, code(&v)), (400, "presigned_url_mismatch"), "{v}");
    assert!(
        message(&v).contains("b.txt") && message(&v).contains("presign a GET"),
        "{v}"
    );
    let (status, v) = submit_ref(
        &api,
        &name(&listed, "a.txt"),
        &presign(&other, "a.txt", lifetime).await,
    )
    .await;
    assert_eq!((status, code(&v)), (400, "presigned_url_mismatch"), "{v}");

    // A URL that is not presigned.
    let plain = presign(&listed, "a.txt", lifetime).await;
    let plain = plain.split('?').next().unwrap();
    let (status, v) = submit_ref(&api, &name(&listed, "a.txt"), plain).await;
    assert_eq!((status, code(&v)), (400, "invalid_presigned_url"), "{v}");
    assert!(message(&v).contains("presign it"), "{v}");

    // No such object: S3 (the emulator) answers 404 through the URL.
    let (status, v) = submit_ref(
        &api,
        &name(&listed, "missing.txt"),
        &presign(&listed, "missing.txt", lifetime).await,
    )
    .await;
    assert_eq!((status, code(&v)), (404, "object_not_found"), "{v}");
    assert!(message(&v).contains("missing.txt"), "{v}");

    // Over the deployment's file limit.
    let mut small = api_config(&s.res);
    small.uploads.max_bytes = 4;
    small.references = ReferenceSettings {
        buckets: [listed.bucket()].into_iter().collect(),
        ..small.references
    };
    let small =
        Api::new(s.store.clone(), Some(s.queue.clone()), small).with_payloads(s.api_payloads());
    let (status, v) = submit_ref(
        &small,
        &name(&listed, "a.txt"),
        &presign(&listed, "a.txt", lifetime).await,
    )
    .await;
    assert_eq!((status, code(&v)), (413, "payload_too_large"), "{v}");

    // An empty object is a file of no bytes (S3 answers a range of it 416).
    listed
        .put_bytes("empty", Vec::new(), "text/plain")
        .await
        .unwrap();
    let (status, v) = submit_ref(
        &api,
        &name(&listed, "empty"),
        &presign(&listed, "empty", lifetime).await,
    )
    .await;
    assert_eq!(status, 202, "{v}");
    assert_eq!(v["input_file"]["size"], 0, "{v}");

    // Without its URL, or with an upload too.
    let body = json!({"input_file": {"s3": name(&listed, "a.txt")}});
    let (status, v) = decode(api.handle(post_json(ALICE, &body.to_string(), None)).await);
    assert_eq!((status, code(&v)), (400, "missing_presigned_url"), "{v}");
}

/// A loopback listener that counts the connections made to it.
async fn counting_listener() -> (u16, Arc<AtomicU32>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let seen = Arc::new(AtomicU32::new(0));
    let count = seen.clone();
    tokio::spawn(async move {
        while let Ok((mut conn, _)) = listener.accept().await {
            count.fetch_add(1, Ordering::SeqCst);
            let mut buf = vec![0u8; 16 * 1024];
            let mut n = 0;
            while !buf[..n].windows(4).any(|w| w == b"\r\n\r\n") && n < buf.len() {
                match conn.read(&mut buf[n..]).await {
                    Ok(0) | Err(_) => break,
                    Ok(m) => n += m,
                }
            }
            let _ = conn
                .write_all(b"HTTP/1.1 206 Partial Content\r\nContent-Range: bytes 0-0/1\r\nContent-Length: 1\r\n\r\nx")
                .await;
        }
    });
    (port, seen)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_url_to_any_other_host_is_refused_without_a_request_to_it() {
    let s = Stack::new("refs_ssrf").await;
    let listed = bucket(&s, "ssrf").await;
    listed
        .put_bytes("a.txt", b"hello".to_vec(), "text/plain")
        .await
        .unwrap();
    let api = api_listing(&s, &[listed.bucket()], None);
    let (port, seen) = counting_listener().await;
    let good = presign(&listed, "a.txt", Duration::from_secs(900)).await;
    let query = good.split_once('?').unwrap().1;
    let b = listed.bucket();
    let name = format!("s3://{b}/a.txt");
    let urls = [
        format!("http://127.0.0.1:{port}/{b}/a.txt?{query}"),
        format!("http://localhost:{port}/{b}/a.txt?{query}"),
        format!("https://127.0.0.1:{port}/{b}/a.txt?{query}"),
        format!("http://s3.amazonaws.com@127.0.0.1:{port}/{b}/a.txt?{query}"),
        format!("https://{b}.s3.amazonaws.com.127.0.0.1.nip.io:{port}/a.txt?{query}"),
        format!("http://[::ffff:127.0.0.1]:{port}/{b}/a.txt?{query}"),
    ];
    for url in &urls {
        let (status, v) = submit_ref(&api, &name, url).await;
        assert_eq!(
            (status, code(&v)),
            (400, "invalid_presigned_url"),
            "{url}: {v}"
        );
        assert!(message(&v).contains("presign"), "{url}: {v}");
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        seen.load(Ordering::SeqCst),
        0,
        "no request reaches another host"
    );

    // The listener does answer: with it as the deployment's emulator, the same URL is sent.
    let emulator = Emulator::from_endpoint(&format!("http://127.0.0.1:{port}"));
    let trusting = api_listing(&s, &[b], emulator);
    let (status, v) = submit_ref(&trusting, &name, &urls[0]).await;
    assert_eq!(status, 202, "{v}");
    assert_eq!(seen.load(Ordering::SeqCst), 1);
}

/// A stand-in S3 on loopback, for what moto does not check: it answers a GET through a URL
/// whose signature is one of `valid` (206, a 10-byte object), refuses an expired one (its
/// `X-Amz-Date` plus `X-Amz-Expires` past) and any other signature with 403, as S3 does.
async fn stand_in_s3(valid: Arc<Mutex<Vec<String>>>) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        while let Ok((mut conn, _)) = listener.accept().await {
            let valid = valid.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 16 * 1024];
                let mut n = 0;
                while !buf[..n].windows(4).any(|w| w == b"\r\n\r\n") && n < buf.len() {
                    match conn.read(&mut buf[n..]).await {
                        Ok(0) | Err(_) => return,
                        Ok(m) => n += m,
                    }
                }
                let head = String::from_utf8_lossy(&buf[..n]).into_owned();
                let target = head.split(' ').nth(1).unwrap_or_default();
                let url = url::Url::parse(&format!("http://x{target}")).unwrap();
                let q = |k: &str| {
                    url.query_pairs()
                        .find(|(n, _)| n == k)
                        .map(|(_, v)| v.into_owned())
                        .unwrap_or_default()
                };
                let format = time::format_description::parse_borrowed::<2>(
                    "[year][month][day]T[hour][minute][second]Z",
                )
                .unwrap();
                let signed_at = time::PrimitiveDateTime::parse(&q("X-Amz-Date"), &format)
                    .map(|t| t.assume_utc().unix_timestamp())
                    .unwrap_or(0);
                let expires: i64 = q("X-Amz-Expires").parse().unwrap_or(0);
                let now = time::OffsetDateTime::now_utc().unix_timestamp();
                let answer = if now > signed_at + expires {
                    "HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n".to_owned()
                } else if valid.lock().unwrap().contains(&q("X-Amz-Signature")) {
                    "HTTP/1.1 206 Partial Content\r\nContent-Type: text/plain\r\nContent-Range: bytes 0-0/10\r\nContent-Length: 1\r\n\r\nx".to_owned()
                } else {
                    "HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n".to_owned()
                };
                let _ = conn.write_all(answer.as_bytes()).await;
            });
        }
    });
    endpoint
}

/// A presigned GET of `s3://bucket/key` on `endpoint`, signed with `secret`.
async fn presign_on(
    endpoint: &str,
    secret: &str,
    bucket: &str,
    key: &str,
    lifetime: Duration,
) -> String {
    let aws = aws_config::defaults(BehaviorVersion::latest())
        .endpoint_url(endpoint)
        .region(Region::new("us-east-1"))
        .credentials_provider(Credentials::new("test", secret, None, None, "tests"))
        .load()
        .await;
    presign(&Payloads::from_sdk(&aws, bucket), key, lifetime).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn urls_s3_refuses_are_refused_403_and_say_what_to_do() {
    let s = Stack::new("refs_forbidden").await;
    let valid = Arc::new(Mutex::new(Vec::new()));
    let endpoint = stand_in_s3(valid.clone()).await;
    let bucket = "refs-forbidden-data";
    let api = api_listing(&s, &[bucket], Emulator::from_endpoint(&endpoint));
    let name = format!("s3://{bucket}/a.txt");
    let sig = |url: &str| {
        url::Url::parse(url)
            .unwrap()
            .query_pairs()
            .find(|(k, _)| k == "X-Amz-Signature")
            .unwrap()
            .1
            .into_owned()
    };

    let good = presign_on(&endpoint, "test", bucket, "a.txt", Duration::from_secs(900)).await;
    valid.lock().unwrap().push(sig(&good));
    let (status, v) = submit_ref(&api, &name, &good).await;
    assert_eq!(status, 202, "{v}");
    assert_eq!(v["input_file"]["size"], 10, "{v}");

    // One character of the signature changed.
    let s0 = sig(&good);
    let flipped = format!(
        "{}{}",
        if s0.starts_with('0') { '1' } else { '0' },
        &s0[1..]
    );
    let forged = good.replace(&s0, &flipped);
    // Made with credentials that are not the caller's (a wrong secret).
    let wrong = presign_on(
        &endpoint,
        "not-the-secret",
        bucket,
        "a.txt",
        Duration::from_secs(900),
    )
    .await;
    // Expired: a second's lifetime, two seconds ago.
    let expired = presign_on(&endpoint, "test", bucket, "a.txt", Duration::from_secs(1)).await;
    valid.lock().unwrap().push(sig(&expired));
    tokio::time::sleep(Duration::from_millis(2_100)).await;
    for (what, url) in [
        ("forged", &forged),
        ("wrong credentials", &wrong),
        ("expired", &expired),
    ] {
        let (status, v) = submit_ref(&api, &name, url).await;
        assert_eq!((status, code(&v)), (403, "object_forbidden"), "{what}: {v}");
        assert!(
            message(&v).contains(&format!("does not grant read access to {name}"))
                && message(&v).contains("presign a fresh GET"),
            "{what}: {v}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_version_s3_showed_is_recorded_with_the_job() {
    let s = Stack::new("refs_version").await;
    let data = bucket(&s, "version").await;
    data.client()
        .put_bucket_versioning()
        .bucket(data.bucket())
        .versioning_configuration(
            aws_sdk_s3::types::VersioningConfiguration::builder()
                .status(aws_sdk_s3::types::BucketVersioningStatus::Enabled)
                .build(),
        )
        .send()
        .await
        .unwrap();
    let put = data
        .client()
        .put_object()
        .bucket(data.bucket())
        .key("model.bin")
        .body(b"first".to_vec().into())
        .send()
        .await
        .unwrap();
    let version = put
        .version_id
        .expect("a versioned bucket answers a version");
    let api = api_listing(&s, &[data.bucket()], None);
    let url = presign(&data, "model.bin", Duration::from_secs(900)).await;
    let (status, v) = submit_ref(&api, &format!("s3://{}/model.bin", data.bucket()), &url).await;
    assert_eq!(status, 202, "{v}");
    let id: JobId = v["id"].as_str().unwrap().parse().unwrap();
    let object = s
        .store
        .get(&id)
        .await
        .unwrap()
        .unwrap()
        .input_object
        .unwrap();
    assert_eq!(object.version_id.as_deref(), Some(version.as_str()));
    assert_eq!(object.size, 5);

    // Overwritten since, the object is still read as it was when the job was accepted.
    data.put_bytes("model.bin", b"second!".to_vec(), "application/octet-stream")
        .await
        .unwrap();
    let path = std::env::temp_dir().join(format!("sluice-refs-version-{id}"));
    let size = data
        .download_version_to_file("model.bin", object.version_id.as_deref(), &path)
        .await
        .unwrap();
    assert_eq!(
        (size, std::fs::read(&path).unwrap()),
        (5, b"first".to_vec())
    );
    std::fs::remove_file(&path).unwrap();

    // And the worker reads that version too.
    let command = json!(["python3", fixture("file_handler.py")]).to_string();
    let _worker = s.worker(
        "refs-version",
        &[
            ("SLUICE_HANDLER", "process"),
            ("SLUICE_COMMAND", command.as_str()),
        ],
    );
    let done = s.wait_terminal(ALICE, &id, Duration::from_secs(60)).await;
    assert_eq!(done.status, Status::Succeeded, "{done:?}");
    let result = done.result.unwrap();
    assert_eq!(
        (&result["size"], &result["sha256"]),
        (&json!(5), &json!(sha256(b"first"))),
        "the version the job was accepted with, not the one written since"
    );
}
