//! Payloads: large job inputs and results as S3 objects.
//!
//! A thin adapter over the S3 client. Callers upload through presigned URLs (one PUT, or a
//! multipart upload whose parts each get their own URL) and download through presigned GETs;
//! workers and the CLI move local files with [`Payloads::upload_file`] and
//! [`Payloads::download_to_file`], which stream from and to disk: a payload never sits whole in
//! memory, whatever its size. How a size is cut into parts is the pure [`part_plan`].

use std::path::{Path, PathBuf};
use std::time::Duration;

use aws_sdk_s3::config::timeout::TimeoutConfig;
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_s3::presigning::{PresignedRequest, PresigningConfig};
use aws_sdk_s3::primitives::{ByteStream, Length};
use aws_sdk_s3::types::{
    ChecksumAlgorithm, CompletedMultipartUpload, CompletedPart, Delete, ObjectIdentifier,
};
use aws_sdk_s3::Client;
use aws_smithy_runtime_api::client::orchestrator::HttpResponse;
use tokio::io::AsyncWriteExt;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A mebibyte.
pub const MIB: u64 = 1 << 20;
const GIB: u64 = 1 << 30;
const TIB: u64 = 1 << 40;

/// The smallest part S3 accepts (all but the last part of an upload).
pub const MIN_PART_SIZE: u64 = 5 * MIB;
/// The largest part S3 accepts.
pub const MAX_PART_SIZE: u64 = 5 * GIB;
/// The most parts one multipart upload may have.
pub const MAX_PARTS: u32 = 10_000;
/// The largest object S3 stores.
pub const MAX_OBJECT_SIZE: u64 = 5 * TIB;
/// The part size [`part_plan`] prefers: as small as the part count allows, so a retried part
/// costs little and the parts in flight hold little.
pub const PREFERRED_PART_SIZE: u64 = 8 * MIB;
/// [`Payloads::upload_file`] sends a file up to this size in one PUT, a larger one in parts.
pub const MULTIPART_THRESHOLD: u64 = 16 * MIB;
/// How many parts [`Payloads::upload_file`] sends at once.
pub const PART_CONCURRENCY: usize = 4;
/// The slowest sending an attempt to upload is given time for, on top of the client's own limit
/// for an attempt: 32 KiB/s, so that a part or a small file still goes up over a poor link
/// (a connection that stops moving at all is cut sooner, by the SDK's stalled-stream protection).
pub const MIN_SEND_RATE: u64 = 32 * 1024;
/// The largest object one CopyObject copies; a larger one is copied in parts.
pub const SINGLE_COPY_LIMIT: u64 = 5 * GIB;
/// The part size a copy in parts prefers: few requests, each a server-side copy.
pub const COPY_PART_SIZE: u64 = 512 * MIB;

/// A SHA-256 in hex as S3's `x-amz-checksum-sha256` wants it (base64); `None` for anything
/// but 64 hex digits. Pure.
pub fn checksum_sha256(hex: &str) -> Option<String> {
    use base64::Engine;
    if hex.len() != 64 {
        return None;
    }
    let bytes: Option<Vec<u8>> = (0..32)
        .map(|i| u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok())
        .collect();
    Some(base64::engine::general_purpose::STANDARD.encode(bytes?))
}

/// How a copy in parts of `size` bytes is cut: `(part_size, parts)`, parts of `preferred`
/// bytes, larger when that would make more than [`MAX_PARTS`]. Pure.
pub fn copy_plan(size: u64, preferred: u64) -> Result<(u64, u32), PayloadError> {
    if size > MAX_OBJECT_SIZE {
        return Err(PayloadError::TooLarge { size });
    }
    let part = preferred
        .max(MIN_PART_SIZE)
        .max(size.div_ceil(u64::from(MAX_PARTS)).div_ceil(MIB) * MIB)
        .min(MAX_PART_SIZE);
    let parts = size.div_ceil(part).max(1);
    Ok((part, u32::try_from(parts).expect("at most MAX_PARTS parts")))
}

/// The `x-amz-copy-source` of `key` in `bucket`: the key percent-encoded but its slashes. Pure.
pub fn copy_source(bucket: &str, key: &str) -> String {
    const KEEP: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
        .remove(b'/')
        .remove(b'-')
        .remove(b'_')
        .remove(b'.')
        .remove(b'~');
    format!(
        "{bucket}/{}",
        percent_encoding::utf8_percent_encode(key, KEEP)
    )
}

/// How long one attempt to complete a multipart upload may take: S3 can take minutes to join
/// the parts of a large object.
pub const COMPLETE_ATTEMPT_TIMEOUT: Duration = Duration::from_secs(15 * 60);

#[derive(Debug, thiserror::Error)]
pub enum PayloadError {
    #[error("no object or upload at {key}")]
    NotFound { key: String },
    #[error("a payload of {size} bytes is over S3's limit of {MAX_OBJECT_SIZE} bytes (5 TiB)")]
    TooLarge { size: u64 },
    #[error("part number {number} is outside 1..={MAX_PARTS}")]
    PartNumber { number: u32 },
    #[error("a presigned url cannot last that long")]
    Expiry(#[source] BoxError),
    #[error("s3 throttled the request")]
    Throttled(#[source] BoxError),
    #[error("s3 request failed")]
    Unavailable(#[source] BoxError),
    #[error("s3 refused the request")]
    Rejected(#[source] BoxError),
    #[error("{key} ended after {got} of its {expected} bytes")]
    Truncated {
        key: String,
        expected: u64,
        got: u64,
    },
    #[error("{failed} objects could not be deleted; the first, {key}: {code}")]
    NotDeleted {
        failed: usize,
        key: String,
        code: String,
    },
    #[error("an empty prefix names every object in the bucket")]
    EmptyPrefix,
    #[error("cannot read or write {}", path.display())]
    File {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl PayloadError {
    /// Throttling, time-outs, 5xx and a download cut short: worth trying again later.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            PayloadError::Throttled(_)
                | PayloadError::Unavailable(_)
                | PayloadError::Truncated { .. }
        )
    }

    fn file(path: &Path) -> impl FnOnce(std::io::Error) -> PayloadError + '_ {
        move |source| PayloadError::File {
            path: path.to_owned(),
            source,
        }
    }
}

/// Sorts an SDK error: absent key or upload, throttling, worth retrying (time-outs, dropped
/// connections, 5xx), or refused (any other 4xx: denied, bad request, no such bucket).
fn classify<E>(key: &str, err: SdkError<E, HttpResponse>) -> PayloadError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    let status = err.raw_response().map(|r| r.status().as_u16());
    match err.code() {
        Some("NoSuchKey" | "NotFound" | "NoSuchUpload") => {
            return PayloadError::NotFound { key: key.into() }
        }
        Some(
            "SlowDown"
            | "Throttling"
            | "ThrottlingException"
            | "RequestThrottled"
            | "TooManyRequestsException"
            | "RequestLimitExceeded",
        ) => return PayloadError::Throttled(Box::new(err)),
        Some("RequestTimeout" | "InternalError" | "ServiceUnavailable") => {
            return PayloadError::Unavailable(Box::new(err))
        }
        _ => {}
    }
    match (&err, status) {
        // A HEAD has no body, so its 404 carries no code.
        (SdkError::ServiceError(_), Some(404)) if err.code().is_none() => {
            PayloadError::NotFound { key: key.into() }
        }
        (SdkError::ServiceError(_), Some(429)) => PayloadError::Throttled(Box::new(err)),
        (SdkError::ServiceError(_), Some(400..=499)) => PayloadError::Rejected(Box::new(err)),
        (SdkError::ConstructionFailure(_), _) => PayloadError::Rejected(Box::new(err)),
        _ => PayloadError::Unavailable(Box::new(err)),
    }
}

/// How a multipart upload of `size` bytes is cut: `(part_size, parts)`, every part
/// `part_size` bytes but the last. Parts are [`PREFERRED_PART_SIZE`] unless that would need more
/// than [`MAX_PARTS`], then the smallest whole number of MiB that fits; an empty payload is one
/// empty part. Refuses a payload over [`MAX_OBJECT_SIZE`].
pub fn part_plan(size: u64) -> Result<(u64, u32), PayloadError> {
    if size > MAX_OBJECT_SIZE {
        return Err(PayloadError::TooLarge { size });
    }
    let fewest = size.div_ceil(u64::from(MAX_PARTS));
    let part_size = PREFERRED_PART_SIZE.max(fewest.div_ceil(MIB) * MIB);
    let parts = size.div_ceil(part_size).max(1);
    Ok((
        part_size,
        u32::try_from(parts).expect("at most MAX_PARTS parts"),
    ))
}

/// The byte range of part `number` (from 1) of a `size`-byte payload cut by [`part_plan`]:
/// `(offset, length)`.
pub fn part_range(size: u64, part_size: u64, number: u32) -> (u64, u64) {
    debug_assert!(number >= 1, "parts are numbered from 1");
    let offset = u64::from(number - 1) * part_size;
    (offset, part_size.min(size.saturating_sub(offset)))
}

/// The time limit of one attempt to send `bytes`: the client's own limit (`base`, none when it
/// has none) plus the time to send them at [`MIN_SEND_RATE`].
pub fn send_attempt_timeout(base: Option<Duration>, bytes: u64) -> Option<Duration> {
    base.map(|t| t + Duration::from_secs(bytes.div_ceil(MIN_SEND_RATE)))
}

/// A presigned request: whoever holds it may send it, without AWS credentials, until it expires
/// (or the credentials that signed it do, whichever comes first).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Presigned {
    pub method: String,
    pub url: String,
    /// Headers the request must carry as they are (they are signed), e.g. `content-type`.
    pub headers: Vec<(String, String)>,
}

impl From<PresignedRequest> for Presigned {
    fn from(r: PresignedRequest) -> Self {
        Presigned {
            method: r.method().to_owned(),
            url: r.uri().to_owned(),
            headers: r
                .headers()
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect(),
        }
    }
}

/// A multipart upload under way.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UploadId(pub String);

/// One finished part of a multipart upload: its number and the ETag S3 answered its PUT with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UploadedPart {
    pub number: u32,
    pub etag: String,
}

/// What S3 holds at a key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectInfo {
    pub size: u64,
    pub content_type: Option<String>,
    /// As S3 gives it, quotes included; a multipart object's ends in `-<parts>`.
    pub etag: String,
}

/// The S3 payload store: one bucket. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Payloads {
    client: Client,
    bucket: String,
}

impl Payloads {
    pub fn new(client: Client, bucket: impl Into<String>) -> Self {
        Payloads {
            client,
            bucket: bucket.into(),
        }
    }

    /// A client from the shared SDK configuration. With an endpoint override (`AWS_ENDPOINT_URL`
    /// or `AWS_ENDPOINT_URL_S3`: the emulator) it addresses buckets by path, which needs no
    /// per-bucket host name; on AWS it keeps the default virtual-hosted addressing.
    pub fn from_sdk(aws: &aws_config::SdkConfig, bucket: impl Into<String>) -> Self {
        let overridden =
            aws.endpoint_url().is_some() || std::env::var_os("AWS_ENDPOINT_URL_S3").is_some();
        let config = aws_sdk_s3::config::Builder::from(aws)
            .force_path_style(overridden)
            .build();
        Payloads::new(Client::from_conf(config), bucket)
    }

    pub fn bucket(&self) -> &str {
        &self.bucket
    }

    /// The client, for what this adapter does not wrap.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// The client's time limits with `attempt` as the limit of each attempt and none on the
    /// call as a whole: a transfer is bounded by its attempts (and the SDK's count of them).
    fn time_limits(&self, attempt: Option<Duration>) -> aws_sdk_s3::config::Builder {
        let base = self
            .client
            .config()
            .timeout_config()
            .cloned()
            .unwrap_or_else(TimeoutConfig::disabled);
        let limits = base.to_builder().disable_operation_timeout();
        let limits = match attempt {
            Some(t) => limits.operation_attempt_timeout(t),
            None => limits.disable_operation_attempt_timeout(),
        };
        aws_sdk_s3::config::Builder::default().timeout_config(limits.build())
    }

    /// [`Payloads::time_limits`] for sending `bytes`.
    fn send_limits(&self, bytes: u64) -> aws_sdk_s3::config::Builder {
        let base = self
            .client
            .config()
            .timeout_config()
            .and_then(|t| t.operation_attempt_timeout());
        self.time_limits(send_attempt_timeout(base, bytes))
    }

    /// A URL for one PUT of the whole object; the uploader must send the `content-type` given
    /// here (it is signed). For objects up to 5 GiB; larger ones need a multipart upload.
    pub async fn presigned_put(
        &self,
        key: &str,
        content_type: &str,
        expires_in: Duration,
    ) -> Result<Presigned, PayloadError> {
        self.presign_put(key, content_type, None, None, expires_in)
            .await
    }

    /// [`Payloads::presigned_put`] for exactly `size` bytes: the length is signed, so S3
    /// refuses a body of any other size.
    pub async fn presigned_put_sized(
        &self,
        key: &str,
        content_type: &str,
        size: u64,
        expires_in: Duration,
    ) -> Result<Presigned, PayloadError> {
        self.presign_put(key, content_type, Some(size), None, expires_in)
            .await
    }

    /// [`Payloads::presigned_put_sized`] whose body S3 also checks against `sha256` (hex):
    /// the PUT carries it as `x-amz-checksum-sha256`, signed, and S3 refuses other bytes.
    pub async fn presigned_put_checked(
        &self,
        key: &str,
        content_type: &str,
        size: u64,
        sha256: &str,
        expires_in: Duration,
    ) -> Result<Presigned, PayloadError> {
        let checksum = checksum_sha256(sha256).ok_or_else(|| {
            PayloadError::Rejected(format!("{sha256:?} is not a SHA-256 in hex").into())
        })?;
        self.presign_put(key, content_type, Some(size), Some(checksum), expires_in)
            .await
    }

    /// One presigned PUT, with its length and its checksum (`x-amz-checksum-sha256`, base64)
    /// signed when given.
    async fn presign_put(
        &self,
        key: &str,
        content_type: &str,
        size: Option<u64>,
        checksum_sha256: Option<String>,
        expires_in: Duration,
    ) -> Result<Presigned, PayloadError> {
        let length = size
            .map(|size| i64::try_from(size).map_err(|_| PayloadError::TooLarge { size }))
            .transpose()?;
        let req = self
            .client
            .put_object()
            .bucket(&self.bucket)
            .key(key)
            .content_type(content_type)
            .set_content_length(length)
            .set_checksum_sha256(checksum_sha256)
            .presigned(presigning(expires_in)?)
            .await
            .map_err(|e| classify(key, e))?;
        Ok(req.into())
    }

    /// A URL for one GET of the object.
    pub async fn presigned_get(
        &self,
        key: &str,
        expires_in: Duration,
    ) -> Result<Presigned, PayloadError> {
        let req = self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(key)
            .presigned(presigning(expires_in)?)
            .await
            .map_err(|e| classify(key, e))?;
        Ok(req.into())
    }

    /// Starts a multipart upload whose parts are sent through [`Payloads::presigned_part`] URLs.
    pub async fn create_multipart(
        &self,
        key: &str,
        content_type: &str,
    ) -> Result<UploadId, PayloadError> {
        let out = self
            .client
            .create_multipart_upload()
            .bucket(&self.bucket)
            .key(key)
            .content_type(content_type)
            .send()
            .await
            .map_err(|e| classify(key, e))?;
        let id = out.upload_id.ok_or_else(|| {
            PayloadError::Unavailable("s3 started a multipart upload without an id".into())
        })?;
        Ok(UploadId(id))
    }

    /// A URL for the PUT of part `number` (1 to [`MAX_PARTS`]); the answer's `ETag` header is
    /// the part's [`UploadedPart::etag`].
    pub async fn presigned_part(
        &self,
        key: &str,
        upload: &UploadId,
        number: u32,
        expires_in: Duration,
    ) -> Result<Presigned, PayloadError> {
        if !(1..=MAX_PARTS).contains(&number) {
            return Err(PayloadError::PartNumber { number });
        }
        let req = self
            .client
            .upload_part()
            .bucket(&self.bucket)
            .key(key)
            .upload_id(&upload.0)
            .part_number(number as i32)
            .presigned(presigning(expires_in)?)
            .await
            .map_err(|e| classify(key, e))?;
        Ok(req.into())
    }

    /// Joins the parts into the object; they may come in any order.
    pub async fn complete_multipart(
        &self,
        key: &str,
        upload: &UploadId,
        parts: &[UploadedPart],
    ) -> Result<(), PayloadError> {
        let mut parts: Vec<_> = parts
            .iter()
            .map(|p| {
                CompletedPart::builder()
                    .part_number(p.number as i32)
                    .e_tag(&p.etag)
                    .build()
            })
            .collect();
        parts.sort_by_key(|p| p.part_number());
        self.complete(key, upload, parts).await
    }

    async fn complete(
        &self,
        key: &str,
        upload: &UploadId,
        parts: Vec<CompletedPart>,
    ) -> Result<(), PayloadError> {
        self.client
            .complete_multipart_upload()
            .bucket(&self.bucket)
            .key(key)
            .upload_id(&upload.0)
            .multipart_upload(
                CompletedMultipartUpload::builder()
                    .set_parts(Some(parts))
                    .build(),
            )
            .customize()
            .config_override(self.time_limits(Some(COMPLETE_ATTEMPT_TIMEOUT)))
            .send()
            .await
            .map_err(|e| classify(key, e))?;
        Ok(())
    }

    /// Copies the object at `key` (`size` bytes) to `to_key` in `to_bucket`, server-side: one
    /// CopyObject up to [`SINGLE_COPY_LIMIT`], a copy in parts above it.
    pub async fn copy_to(
        &self,
        key: &str,
        size: u64,
        to_bucket: &str,
        to_key: &str,
    ) -> Result<(), PayloadError> {
        self.copy_to_with(
            key,
            size,
            to_bucket,
            to_key,
            SINGLE_COPY_LIMIT,
            COPY_PART_SIZE,
        )
        .await
    }

    /// [`Payloads::copy_to`] with its limit and part size given.
    pub async fn copy_to_with(
        &self,
        key: &str,
        size: u64,
        to_bucket: &str,
        to_key: &str,
        single_copy_limit: u64,
        part_size: u64,
    ) -> Result<(), PayloadError> {
        let source = copy_source(&self.bucket, key);
        if size <= single_copy_limit {
            self.client
                .copy_object()
                .copy_source(&source)
                .bucket(to_bucket)
                .key(to_key)
                .send()
                .await
                .map_err(|e| classify(key, e))?;
            return Ok(());
        }
        let (part_size, parts) = copy_plan(size, part_size)?;
        let head = self
            .client
            .head_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
            .map_err(|e| classify(key, e))?;
        let out = self
            .client
            .create_multipart_upload()
            .bucket(to_bucket)
            .key(to_key)
            .set_content_type(head.content_type)
            .send()
            .await
            .map_err(|e| classify(to_key, e))?;
        let upload = UploadId(out.upload_id.ok_or_else(|| {
            PayloadError::Unavailable("s3 started a multipart upload without an id".into())
        })?);
        let dest = Payloads::new(self.client.clone(), to_bucket);
        let copied = async {
            let mut running = tokio::task::JoinSet::new();
            let mut done = Vec::with_capacity(parts as usize);
            let mut next = 1u32;
            loop {
                while next <= parts && running.len() < PART_CONCURRENCY {
                    let (offset, length) = part_range(size, part_size, next);
                    let copy = self
                        .client
                        .upload_part_copy()
                        .bucket(to_bucket)
                        .key(to_key)
                        .upload_id(&upload.0)
                        .part_number(next as i32)
                        .copy_source(&source)
                        .copy_source_range(format!("bytes={offset}-{}", offset + length - 1));
                    let number = next;
                    let to_key = to_key.to_owned();
                    running.spawn(async move {
                        let out = copy.send().await.map_err(|e| classify(&to_key, e))?;
                        Ok::<_, PayloadError>(
                            CompletedPart::builder()
                                .part_number(number as i32)
                                .set_e_tag(out.copy_part_result.and_then(|r| r.e_tag))
                                .build(),
                        )
                    });
                    next += 1;
                }
                let Some(joined) = running.join_next().await else {
                    break;
                };
                done.push(joined.map_err(|e| PayloadError::Unavailable(Box::new(e)))??);
            }
            done.sort_by_key(|p| p.part_number());
            dest.complete(to_key, &upload, done).await
        };
        match copied.await {
            Ok(_) => Ok(()),
            Err(e) => {
                dest.abort_quietly(to_key, &upload).await;
                Err(e)
            }
        }
    }

    /// Abandons a multipart upload and frees its parts' storage.
    pub async fn abort_multipart(&self, key: &str, upload: &UploadId) -> Result<(), PayloadError> {
        self.client
            .abort_multipart_upload()
            .bucket(&self.bucket)
            .key(key)
            .upload_id(&upload.0)
            .send()
            .await
            .map_err(|e| classify(key, e))?;
        Ok(())
    }

    /// The object at `key`, or `None` when there is none (an unfinished multipart upload is
    /// none yet). A HEAD's answer has no body to name its error, so a bucket that does not
    /// exist reads as `None` too.
    pub async fn head(&self, key: &str) -> Result<Option<ObjectInfo>, PayloadError> {
        let out = match self
            .client
            .head_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
            .map_err(|e| classify(key, e))
        {
            Ok(out) => out,
            Err(PayloadError::NotFound { .. }) => return Ok(None),
            Err(e) => return Err(e),
        };
        Ok(Some(ObjectInfo {
            size: out.content_length.unwrap_or(0).max(0) as u64,
            content_type: out.content_type,
            etag: out.e_tag.unwrap_or_default(),
        }))
    }

    /// Stores `bytes` at `key` with one PUT (bytes already in memory: a result, say).
    pub async fn put_bytes(
        &self,
        key: &str,
        bytes: Vec<u8>,
        content_type: &str,
    ) -> Result<ObjectInfo, PayloadError> {
        let size = bytes.len() as u64;
        self.put(key, ByteStream::from(bytes), size, content_type)
            .await
    }

    /// One PUT of `body` (`size` bytes) to `key`, within the send limits of its size.
    async fn put(
        &self,
        key: &str,
        body: ByteStream,
        size: u64,
        content_type: &str,
    ) -> Result<ObjectInfo, PayloadError> {
        let out = self
            .client
            .put_object()
            .bucket(&self.bucket)
            .key(key)
            .content_type(content_type)
            .content_length(size as i64)
            .body(body)
            .customize()
            .config_override(self.send_limits(size))
            .send()
            .await
            .map_err(|e| classify(key, e))?;
        Ok(ObjectInfo {
            size,
            content_type: Some(content_type.to_owned()),
            etag: out.e_tag.unwrap_or_default(),
        })
    }

    /// Sends a local file to `key`, streaming it from disk: one PUT up to
    /// [`MULTIPART_THRESHOLD`], above it a multipart upload of [`part_plan`]'s parts,
    /// [`PART_CONCURRENCY`] at a time, each read from the file as it is sent.
    pub async fn upload_file(
        &self,
        path: &Path,
        key: &str,
        content_type: &str,
    ) -> Result<ObjectInfo, PayloadError> {
        self.upload_file_with_progress(path, key, content_type, |_| {})
            .await
    }

    /// [`Payloads::upload_file`], calling `progress` with the bytes sent so far as each part
    /// (or the single PUT) finishes.
    pub async fn upload_file_with_progress(
        &self,
        path: &Path,
        key: &str,
        content_type: &str,
        progress: impl Fn(u64) + Send + Sync,
    ) -> Result<ObjectInfo, PayloadError> {
        let size = tokio::fs::metadata(path)
            .await
            .map_err(PayloadError::file(path))?
            .len();
        if size <= MULTIPART_THRESHOLD {
            let body = ByteStream::read_from()
                .path(path)
                .length(Length::Exact(size))
                .build()
                .await
                .map_err(|e| PayloadError::File {
                    path: path.to_owned(),
                    source: std::io::Error::other(e),
                })?;
            let put = self.put(key, body, size, content_type).await?;
            progress(size);
            return Ok(put);
        }

        let (part_size, parts) = part_plan(size)?;
        let out = self
            .client
            .create_multipart_upload()
            .bucket(&self.bucket)
            .key(key)
            .content_type(content_type)
            .checksum_algorithm(ChecksumAlgorithm::Crc32)
            .send()
            .await
            .map_err(|e| classify(key, e))?;
        let upload = UploadId(out.upload_id.ok_or_else(|| {
            PayloadError::Unavailable("s3 started a multipart upload without an id".into())
        })?);
        tracing::debug!(key, size, part_size, parts, "multipart upload started");
        match self
            .send_parts(path, key, &upload, size, part_size, parts, &progress)
            .await
        {
            Ok(done) => {
                let out = self.complete(key, &upload, done).await;
                if out.is_err() {
                    self.abort_quietly(key, &upload).await;
                }
                out?;
            }
            Err(e) => {
                self.abort_quietly(key, &upload).await;
                return Err(e);
            }
        }
        // The multipart ETag is S3's to compute; read it back rather than guess.
        self.head(key)
            .await?
            .ok_or_else(|| PayloadError::NotFound { key: key.into() })
    }

    /// Sends every part, at most [`PART_CONCURRENCY`] at once; the parts come back in order.
    #[allow(clippy::too_many_arguments)]
    async fn send_parts(
        &self,
        path: &Path,
        key: &str,
        upload: &UploadId,
        size: u64,
        part_size: u64,
        parts: u32,
        progress: &(impl Fn(u64) + Send + Sync),
    ) -> Result<Vec<CompletedPart>, PayloadError> {
        let mut running = tokio::task::JoinSet::new();
        let mut done = Vec::with_capacity(parts as usize);
        let mut sent = 0u64;
        let mut next = 1u32;
        loop {
            while next <= parts && running.len() < PART_CONCURRENCY {
                let (offset, length) = part_range(size, part_size, next);
                running.spawn(self.clone().send_part(
                    path.to_owned(),
                    key.to_owned(),
                    upload.clone(),
                    next,
                    offset,
                    length,
                ));
                next += 1;
            }
            let Some(joined) = running.join_next().await else {
                break;
            };
            // Dropping `running` on an error cancels the other parts.
            let (part, length) = joined.map_err(|e| PayloadError::Unavailable(Box::new(e)))??;
            sent += length;
            progress(sent);
            done.push(part);
        }
        done.sort_by_key(|p| p.part_number());
        Ok(done)
    }

    async fn send_part(
        self,
        path: PathBuf,
        key: String,
        upload: UploadId,
        number: u32,
        offset: u64,
        length: u64,
    ) -> Result<(CompletedPart, u64), PayloadError> {
        let body = ByteStream::read_from()
            .path(&path)
            .offset(offset)
            .length(Length::Exact(length))
            .build()
            .await
            .map_err(|e| PayloadError::File {
                path: path.clone(),
                source: std::io::Error::other(e),
            })?;
        let out = self
            .client
            .upload_part()
            .bucket(&self.bucket)
            .key(&key)
            .upload_id(&upload.0)
            .part_number(number as i32)
            .content_length(length as i64)
            .body(body)
            .customize()
            .config_override(self.send_limits(length))
            .send()
            .await
            .map_err(|e| classify(&key, e))?;
        let part = CompletedPart::builder()
            .part_number(number as i32)
            .set_e_tag(out.e_tag)
            .set_checksum_crc32(out.checksum_crc32)
            .build();
        Ok((part, length))
    }

    async fn abort_quietly(&self, key: &str, upload: &UploadId) {
        if let Err(e) = self.abort_multipart(key, upload).await {
            tracing::warn!(
                key,
                error = %crate::aws::DisplayErrorContext(&e),
                "a failed multipart upload could not be aborted; the bucket's lifecycle rule will"
            );
        }
    }

    /// Writes the object at `key` to a local file, streaming it to disk; returns its size. On
    /// failure the partial file is removed.
    pub async fn download_to_file(&self, key: &str, path: &Path) -> Result<u64, PayloadError> {
        self.download_to_file_with_progress(key, path, |_| {}).await
    }

    /// [`Payloads::download_to_file`] of one version of the object (`None`: the latest), as a
    /// job that named an object in a versioned bucket recorded it.
    pub async fn download_version_to_file(
        &self,
        key: &str,
        version_id: Option<&str>,
        path: &Path,
    ) -> Result<u64, PayloadError> {
        self.download_version(key, version_id, path, |_| {}).await
    }

    /// [`Payloads::download_to_file`], calling `progress` with the bytes written so far at
    /// most once a MiB, and once at the end.
    pub async fn download_to_file_with_progress(
        &self,
        key: &str,
        path: &Path,
        progress: impl Fn(u64) + Send + Sync,
    ) -> Result<u64, PayloadError> {
        self.download_version(key, None, path, progress).await
    }

    async fn download_version(
        &self,
        key: &str,
        version_id: Option<&str>,
        path: &Path,
        progress: impl Fn(u64) + Send + Sync,
    ) -> Result<u64, PayloadError> {
        let out = self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(key)
            .set_version_id(version_id.map(str::to_owned))
            .send()
            .await
            .map_err(|e| classify(key, e))?;
        let expected = out.content_length.map(|n| n.max(0) as u64);
        let written = write_stream(out.body, key, path, expected, &progress).await;
        if written.is_err() {
            let _ = tokio::fs::remove_file(path).await;
        }
        written
    }

    /// Deletes the object at `key`; deleting what is not there succeeds.
    pub async fn delete(&self, key: &str) -> Result<(), PayloadError> {
        self.client
            .delete_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
            .map_err(|e| classify(key, e))?;
        Ok(())
    }

    /// Deletes every object whose key starts with `prefix`, a page (up to 1,000 keys) per batch
    /// delete; returns how many were deleted. Refuses an empty prefix, which would empty the
    /// bucket.
    pub async fn delete_prefix(&self, prefix: &str) -> Result<u64, PayloadError> {
        if prefix.is_empty() {
            return Err(PayloadError::EmptyPrefix);
        }
        let mut pages = self
            .client
            .list_objects_v2()
            .bucket(&self.bucket)
            .prefix(prefix)
            .into_paginator()
            .send();
        let mut deleted = 0u64;
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| classify(prefix, e))?;
            let objects = page
                .contents
                .unwrap_or_default()
                .into_iter()
                .filter_map(|o| o.key)
                .map(|k| ObjectIdentifier::builder().key(k).build())
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| PayloadError::Rejected(Box::new(e)))?;
            if objects.is_empty() {
                continue;
            }
            let count = objects.len() as u64;
            let delete = Delete::builder()
                .set_objects(Some(objects))
                .quiet(true)
                .build()
                .map_err(|e| PayloadError::Rejected(Box::new(e)))?;
            let out = self
                .client
                .delete_objects()
                .bucket(&self.bucket)
                .delete(delete)
                .send()
                .await
                .map_err(|e| classify(prefix, e))?;
            let errors = out.errors.unwrap_or_default();
            if let Some(first) = errors.first() {
                return Err(PayloadError::NotDeleted {
                    failed: errors.len(),
                    key: first.key.clone().unwrap_or_default(),
                    code: first.code.clone().unwrap_or_default(),
                });
            }
            deleted += count;
        }
        Ok(deleted)
    }
}

fn presigning(expires_in: Duration) -> Result<PresigningConfig, PayloadError> {
    PresigningConfig::expires_in(expires_in).map_err(|e| PayloadError::Expiry(Box::new(e)))
}

/// Writes a body to `path` chunk by chunk, through a 1 MiB buffer, telling `progress` as each
/// MiB boundary is passed and at the end.
async fn write_stream(
    mut body: ByteStream,
    key: &str,
    path: &Path,
    expected: Option<u64>,
    progress: &(impl Fn(u64) + Send + Sync),
) -> Result<u64, PayloadError> {
    let file = tokio::fs::File::create(path)
        .await
        .map_err(PayloadError::file(path))?;
    let mut out = tokio::io::BufWriter::with_capacity(MIB as usize, file);
    let (mut got, mut told) = (0u64, None);
    loop {
        let chunk = match body.try_next().await {
            Ok(Some(chunk)) => chunk,
            Ok(None) => break,
            Err(e) => return Err(PayloadError::Unavailable(Box::new(e))),
        };
        let before = got;
        got += chunk.len() as u64;
        out.write_all(&chunk)
            .await
            .map_err(PayloadError::file(path))?;
        if got / MIB > before / MIB {
            progress(got);
            told = Some(got);
        }
    }
    out.flush().await.map_err(PayloadError::file(path))?;
    if told != Some(got) {
        progress(got);
    }
    if let Some(expected) = expected.filter(|&n| n != got) {
        return Err(PayloadError::Truncated {
            key: key.into(),
            expected,
            got,
        });
    }
    Ok(got)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn a_sha256_in_hex_is_sent_to_s3_in_base64() {
        let abc = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";
        assert_eq!(
            checksum_sha256(abc).as_deref(),
            Some("ungWv48Bz+pBQUDeXa4iI7ADYaOWF3qctBD/YfIAFa0=")
        );
        assert_eq!(
            checksum_sha256(&abc.to_uppercase()).as_deref(),
            Some("ungWv48Bz+pBQUDeXa4iI7ADYaOWF3qctBD/YfIAFa0=")
        );
        for bad in ["", "abc", &abc[1..], &format!("{abc}00"), &"zz".repeat(32)] {
            assert_eq!(checksum_sha256(bad), None, "{bad}");
        }
    }

    #[test]
    fn copy_plans() {
        const GIB: u64 = 1 << 30;
        let cases: &[(u64, u64, (u64, u32))] = &[
            (0, COPY_PART_SIZE, (COPY_PART_SIZE, 1)),
            (6 * GIB, COPY_PART_SIZE, (COPY_PART_SIZE, 12)),
            (12 * MIB + 7, 5 * MIB, (5 * MIB, 3)),
            // Smaller than S3's smallest part: the smallest.
            (12 * MIB, MIB, (5 * MIB, 3)),
            // 5 TiB in 512 MiB parts would be 10,240: the parts grow.
            (MAX_OBJECT_SIZE, COPY_PART_SIZE, (525 * MIB, 9987)),
        ];
        for &(size, preferred, want) in cases {
            let got = copy_plan(size, preferred).unwrap();
            assert_eq!(got, want, "size {size}");
            assert!(got.1 <= MAX_PARTS && got.0 <= MAX_PART_SIZE);
        }
        assert!(copy_plan(MAX_OBJECT_SIZE + 1, COPY_PART_SIZE).is_err());
    }

    #[test]
    fn part_plans() {
        let cases: &[(u64, Option<(u64, u32)>)] = &[
            (0, Some((8 * MIB, 1))),
            (1, Some((8 * MIB, 1))),
            (8 * MIB, Some((8 * MIB, 1))),
            (8 * MIB + 1, Some((8 * MIB, 2))),
            (200 * 1_000_000, Some((8 * MIB, 24))),
            (GIB, Some((8 * MIB, 128))),
            // 10,000 parts of the preferred size, exactly.
            (80_000 * MIB, Some((8 * MIB, 10_000))),
            // One byte more: the parts grow to the next whole MiB.
            (80_000 * MIB + 1, Some((9 * MIB, 8_889))),
            (TIB, Some((105 * MIB, 9_987))),
            (MAX_OBJECT_SIZE, Some((525 * MIB, 9_987))),
            (MAX_OBJECT_SIZE + 1, None),
            (u64::MAX, None),
        ];
        for &(size, want) in cases {
            match (part_plan(size), want) {
                (Ok(got), Some(want)) => assert_eq!(got, want, "size {size}"),
                (Err(PayloadError::TooLarge { size: s }), None) => assert_eq!(s, size),
                (got, want) => panic!("size {size}: {got:?}, wanted {want:?}"),
            }
        }
    }

    #[test]
    fn too_large_says_what_the_limit_is() {
        let err = part_plan(MAX_OBJECT_SIZE + 1).unwrap_err();
        assert_eq!(
            err.to_string(),
            "a payload of 5497558138881 bytes is over S3's limit of 5497558138880 bytes (5 TiB)"
        );
    }

    #[test]
    fn part_ranges_cover_the_payload() {
        let size = 20 * MIB + 3;
        let (part_size, parts) = part_plan(size).unwrap();
        assert_eq!(parts, 3);
        assert_eq!(part_range(size, part_size, 1), (0, 8 * MIB));
        assert_eq!(part_range(size, part_size, 2), (8 * MIB, 8 * MIB));
        assert_eq!(part_range(size, part_size, 3), (16 * MIB, 4 * MIB + 3));
        assert_eq!(part_range(0, 8 * MIB, 1), (0, 0));
    }

    #[test]
    fn a_send_may_take_as_long_as_the_slowest_allowed_rate_needs() {
        let base = Some(Duration::from_secs(30));
        assert_eq!(send_attempt_timeout(base, 0), base);
        assert_eq!(
            send_attempt_timeout(base, 8 * MIB),
            Some(Duration::from_secs(30 + 256))
        );
        assert_eq!(
            send_attempt_timeout(base, MULTIPART_THRESHOLD),
            Some(Duration::from_secs(30 + 512))
        );
        assert_eq!(send_attempt_timeout(None, GIB), None);
    }

    proptest! {
        #[test]
        fn every_plan_keeps_s3s_limits(size in 0..=MAX_OBJECT_SIZE) {
            let (part_size, parts) = part_plan(size).unwrap();
            prop_assert!((MIN_PART_SIZE..=MAX_PART_SIZE).contains(&part_size));
            prop_assert!((1..=MAX_PARTS).contains(&parts));
            // The parts cover the payload, and the last is not empty (unless the payload is).
            prop_assert!(part_size * u64::from(parts) >= size);
            prop_assert!(size == 0 || part_size * u64::from(parts - 1) < size);
            let (offset, length) = part_range(size, part_size, parts);
            prop_assert_eq!(offset + length, size);
        }
    }
}
