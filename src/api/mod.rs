//! The HTTP API: request and response types, validation, the caller's identity, and the one
//! mapping from errors to HTTP answers.

mod budget;
mod handler;
mod identity;

pub use budget::{Budget, ANSWER_MARGIN};
pub(crate) use handler::respond_error;
pub use handler::Api;
pub use identity::{caller, local_context, operator, NotOperator, Operator, OwnerScope, RoleArn};

use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::job::{JobId, JobRecord, OnTimeout, Progress, Status};
use crate::queue::MAX_MESSAGE_BYTES;
use crate::time::Millis;

/// The longest `?wait=` a status request may ask for, within API Gateway's 30 s limit.
pub const MAX_WAIT: Duration = Duration::from_secs(25);
pub use crate::limits::MAX_DEADLINE;
/// The most attempts a caller may ask for.
pub const MAX_ATTEMPTS_LIMIT: u32 = 10;
/// The longest `Idempotency-Key` accepted.
pub const MAX_IDEMPOTENCY_KEY: usize = 255;
/// The deepest nesting of arrays and objects a job's input may have.
pub const MAX_INPUT_DEPTH: usize = 64;
/// The largest input the `sluice` CLI and client send inline: a larger one is uploaded first
/// and submitted as the job's file, which the handler reads as its input (well inside a queue
/// message, whatever its envelope).
pub const OFFLOAD_ABOVE: usize = 768 * 1024;
/// The largest request body read at all; larger ones are refused before parsing.
pub const MAX_BODY_BYTES: usize = MAX_MESSAGE_BYTES + 64 * 1024;

/// `POST /jobs`.
#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SubmitRequest<'a> {
    /// The handler's input: any JSON value. Optional with an `input_file` (the handler then gets
    /// `null`).
    #[serde(borrow, default, deserialize_with = "present")]
    pub input: Option<&'a RawValue>,
    /// An upload (`POST /uploads`), or an object already in S3, the handler gets as a file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input_file: Option<InputFileRef>,
    /// Seconds from now after which the job expires instead of starting.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deadline_seconds: Option<u64>,
    /// Attempts before the job ends `FAILED` (default: the deployment's setting).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_attempts: Option<u32>,
    /// The time limit of one attempt in seconds (default: the deployment's setting).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_seconds: Option<u64>,
    /// What an attempt past its time limit does: `"fail"` (default) or `"retry"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_timeout: Option<OnTimeout>,
    /// A URL POSTed the job's view, signed, when the job reaches a terminal state.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook: Option<String>,
}

/// A present `input`, `null` included (serde would read `null` as absent).
fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<&'de RawValue>, D::Error> {
    <&'de RawValue as Deserialize<'de>>::deserialize(d).map(Some)
}

/// A job's file: `{"upload_id": …}` for an upload, or `{"s3": "s3://bucket/key",
/// "presigned_url": "https://…"}` for an object already in S3 in a bucket the deployment lists,
/// with a GET of it presigned by the caller's own credentials (the proof that the caller may read
/// it; never stored).
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct InputFileRef {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upload_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub s3: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub presigned_url: Option<String>,
}

/// A job's file, checked for form: an upload, or an object in S3 with its presigned GET.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InputFile {
    Upload(crate::upload::UploadId),
    S3 {
        name: crate::reference::S3Name,
        presigned_url: String,
    },
}

impl std::fmt::Display for InputFile {
    /// What an idempotent retry is compared by: the upload, or the object's name (a retry may
    /// carry a fresh presigned URL of the same object).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            InputFile::Upload(id) => write!(f, "{id}"),
            InputFile::S3 { name, .. } => write!(f, "{name}"),
        }
    }
}

/// `POST /uploads`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct UploadRequest {
    /// The file's exact size in bytes.
    pub size: u64,
    /// Its media type (default `application/octet-stream`): what the handler is told, and the
    /// body type a model server gets.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_type: Option<String>,
    /// The file's SHA-256 in hex, when the caller knows it: a job naming the upload is compared
    /// by it under an `Idempotency-Key` (the same file uploaded again is the same request), and
    /// S3 refuses a single PUT of other bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
}

/// An upload as the API shows it: where to send the file, and how.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UploadView {
    pub upload_id: String,
    /// The object's key in the payload bucket.
    pub key: String,
    pub size: u64,
    pub content_type: String,
    /// The URLs stop working, and no new job may name the upload, from then on.
    pub expires_at: String,
    /// `PUT`: the method of the URL(s).
    pub method: String,
    /// One PUT of the whole file (uploads up to the single-PUT limit).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// Headers the PUT(s) must carry as they are (they are signed).
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub headers: std::collections::BTreeMap<String, String>,
    /// A multipart upload: every part is `part_size` bytes but the last.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub part_size: Option<u64>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub parts: Vec<PartUrl>,
    /// Where to POST the parts' ETags once every part is sent (multipart only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub complete_url: Option<String>,
    /// A multipart upload completed.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub completed: bool,
}

/// One part's URL.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartUrl {
    pub number: u32,
    pub url: String,
}

/// `POST /uploads/{id}/complete`: each part's number and the `ETag` its PUT answered.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct CompleteRequest {
    pub parts: Vec<CompletedPartRef>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct CompletedPartRef {
    pub number: u32,
    pub etag: String,
}

/// A job's file as the API shows it: its upload, or its object's name (`s3://bucket/key`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InputFileView {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub upload_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub s3: Option<String>,
    pub size: u64,
    pub content_type: String,
}

/// A file a job produced, as the API shows it: the result stored in the payload bucket, or an
/// output file. The status route adds a presigned download URL and when it stops working.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileView {
    /// An output file's path below the handler's output directory; absent for the result.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    pub size: u64,
    pub content_type: String,
    /// One GET of it, until `expires_at`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<String>,
}

impl FileView {
    fn of(name: Option<&str>, o: &crate::output::StoredObject) -> Self {
        FileView {
            name: name.map(str::to_owned),
            size: o.size,
            content_type: o.content_type.clone(),
            url: None,
            expires_at: None,
        }
    }
}

/// A job as the API shows it (`GET /jobs/{id}`, and the answer to submit and cancel).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobView {
    pub id: String,
    pub status: Status,
    pub attempt: u32,
    pub max_attempts: u32,
    pub submitted_at: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deadline: Option<String>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub cancel_requested: bool,
    /// The time limit of one attempt the caller asked for (else the deployment's default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_seconds: Option<u64>,
    /// `"retry"` when an attempt past its time limit is retried; absent for the default, `"fail"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_timeout: Option<OnTimeout>,
    /// The handler's latest report stored while the current (or last) attempt ran.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress: Option<Progress>,
    /// The uploaded file the job reads, when it names one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input_file: Option<InputFileView>,
    /// The handler's output, once `SUCCEEDED`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<serde_json::Value>,
    /// The handler's output when it is too large to answer inline (over 350,000 bytes, or a
    /// model server's non-JSON answer): stored in the payload bucket, fetched from its `url`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result_file: Option<FileView>,
    /// The files the handler wrote, each fetched from its `url`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub outputs: Vec<FileView>,
    /// Why the job failed, or why its last attempt did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Where to fetch the job.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// How many times an operator ran the job again after it ended `FAILED` in the dead-letter
    /// queue; absent when never.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub redrives: u32,
    /// The webhook the job's terminal state is announced to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook: Option<String>,
    /// Where the announcement stands, once the job has ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delivery: Option<DeliveryView>,
}

/// The delivery of a job's webhook as the API shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeliveryView {
    /// `pending` (attempts go on), `delivered`, or `failed` (given up: the schedule of more
    /// than 24 hours is spent, or the receiver answered 410 Gone).
    pub state: DeliveryState,
    /// Attempts made so far.
    pub attempts: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_attempt_at: Option<String>,
    /// The HTTP status of the receiver's last answer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_status: Option<u16>,
    /// Why the last attempt failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delivered_at: Option<String>,
    /// When the next attempt is due, while pending.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_attempt_at: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DeliveryState {
    Pending,
    Delivered,
    Failed,
}

impl DeliveryView {
    /// The delivery of an ended job with a webhook; `None` otherwise. Pure.
    pub fn of(job: &JobRecord) -> Option<DeliveryView> {
        let d = &job.delivery;
        if job.webhook.is_none() || !job.status.is_terminal() {
            return None;
        }
        let state = match (d.delivered_at, d.gave_up_at) {
            (Some(_), _) => DeliveryState::Delivered,
            (None, Some(_)) => DeliveryState::Failed,
            (None, None) => DeliveryState::Pending,
        };
        Some(DeliveryView {
            state,
            attempts: d.attempts,
            last_attempt_at: d.last_attempt_at.map(Millis::to_rfc3339),
            last_status: d.last_status,
            last_error: d.last_error.clone(),
            delivered_at: d.delivered_at.map(Millis::to_rfc3339),
            next_attempt_at: match state {
                DeliveryState::Pending => d.due_at.map(Millis::to_rfc3339),
                _ => None,
            },
        })
    }
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

impl JobView {
    /// The job as stored: the table, where every transition is a conditional write, is the
    /// one judge of its status (a reader's clock never turns a queued job into an expired one;
    /// the status function records the expiry first).
    pub fn of(job: &JobRecord) -> Self {
        let status = job.status;
        JobView {
            id: job.id.to_string(),
            status,
            attempt: job.attempt,
            max_attempts: job.max_attempts,
            submitted_at: job.submitted_at.to_rfc3339(),
            started_at: job.started_at.map(Millis::to_rfc3339),
            finished_at: match (job.finished_at, status) {
                (Some(t), _) => Some(t.to_rfc3339()),
                (None, Status::Expired) => job.deadline.map(Millis::to_rfc3339),
                (None, _) => None,
            },
            deadline: job.deadline.map(Millis::to_rfc3339),
            cancel_requested: job.cancel_requested && !status.is_terminal(),
            timeout_seconds: job.timeout_seconds,
            on_timeout: (job.on_timeout != OnTimeout::Fail).then_some(job.on_timeout),
            progress: job.progress.clone(),
            input_file: job.input_object.as_ref().map(|o| InputFileView {
                upload_id: o.upload_id.clone(),
                s3: o.bucket.as_ref().map(|b| format!("s3://{b}/{}", o.key)),
                size: o.size,
                content_type: o.content_type.clone(),
            }),
            result: job.result.as_deref().map(|r| {
                serde_json::from_str(r).unwrap_or_else(|_| serde_json::Value::String(r.to_owned()))
            }),
            result_file: job.result_object.as_ref().map(|o| FileView::of(None, o)),
            outputs: job
                .outputs
                .iter()
                .map(|f| FileView::of(Some(&f.name), &f.object))
                .collect(),
            error: match status {
                Status::Expired if job.error.is_none() => {
                    Some("the deadline passed before the job started".into())
                }
                _ => job.error.clone(),
            },
            url: None,
            redrives: job.redrives,
            webhook: job.webhook.clone(),
            delivery: DeliveryView::of(job),
        }
    }
}

/// The body of every error answer: `{"error": {"code": "...", "message": "..."}}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorDetail {
    pub code: String,
    pub message: String,
}

/// Everything the API answers with other than success. The message is shown to the caller,
/// so it never carries internal detail; `Internal` and `Unavailable` keep their cause for the
/// log only.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{message}")]
    BadRequest { code: &'static str, message: String },
    #[error("no caller identity: the API must be called through an authorizer")]
    Unauthenticated,
    #[error(
        "the local API answers only loopback host names (localhost, 127.0.0.1, [::1]), not {0:?}"
    )]
    ForbiddenHost(String),
    /// The pipeline's routes, called by someone who is not an operator.
    #[error("{0}")]
    NotOperator(String),
    #[error("no job with id {0}")]
    NotFound(String),
    #[error("no upload with id {0}; create one with POST /uploads (an upload is usable only by the caller that created it)")]
    UploadNotFound(String),
    #[error("{0}")]
    Gone(String),
    /// A job's object in S3 that the caller may not name or read.
    #[error("{message}")]
    Forbidden { code: &'static str, message: String },
    /// A job's object in S3 that is not there.
    #[error("{0}")]
    ObjectNotFound(String),
    /// S3 answered the check of a job's object in a way that shows nothing.
    #[error("{0}")]
    BadGateway(String),
    #[error("{message}")]
    Conflict { code: &'static str, message: String },
    #[error("{0}")]
    PayloadTooLarge(String),
    #[error("{0}")]
    UnsupportedMediaType(String),
    #[error("{0}")]
    Unprocessable(String),
    #[error("no route for {method} {path}")]
    NoRoute { method: String, path: String },
    #[error("too many requests; retry after a short pause")]
    Throttled(#[source] Box<dyn std::error::Error + Send + Sync>),
    #[error("the service is temporarily unavailable; retry shortly")]
    Unavailable(#[source] Box<dyn std::error::Error + Send + Sync>),
    #[error("internal error")]
    Internal(#[source] Box<dyn std::error::Error + Send + Sync>),
}

impl ApiError {
    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        ApiError::BadRequest {
            code,
            message: message.into(),
        }
    }

    /// The HTTP status and the error code of the answer.
    pub fn status_and_code(&self) -> (u16, &'static str) {
        match self {
            ApiError::BadRequest { code, .. } => (400, code),
            ApiError::Unauthenticated => (403, "forbidden"),
            ApiError::ForbiddenHost(_) => (403, "forbidden_host"),
            ApiError::NotOperator(_) => (403, "not_operator"),
            ApiError::NotFound(_) => (404, "not_found"),
            ApiError::NoRoute { .. } => (404, "no_route"),
            ApiError::UploadNotFound(_) => (404, "upload_not_found"),
            ApiError::Gone(_) => (410, "upload_expired"),
            ApiError::Forbidden { code, .. } => (403, code),
            ApiError::ObjectNotFound(_) => (404, "object_not_found"),
            ApiError::BadGateway(_) => (502, "s3_answer"),
            ApiError::Conflict { code, .. } => (409, code),
            ApiError::PayloadTooLarge(_) => (413, "payload_too_large"),
            ApiError::UnsupportedMediaType(_) => (415, "unsupported_media_type"),
            ApiError::Unprocessable(_) => (422, "idempotency_key_reused"),
            ApiError::Throttled(_) => (429, "throttled"),
            ApiError::Unavailable(_) => (503, "unavailable"),
            ApiError::Internal(_) => (500, "internal"),
        }
    }

    pub fn body(&self) -> ErrorBody {
        let (_, code) = self.status_and_code();
        ErrorBody {
            error: ErrorDetail {
                code: code.to_owned(),
                message: self.to_string(),
            },
        }
    }
}

impl From<crate::store::StoreError> for ApiError {
    fn from(e: crate::store::StoreError) -> Self {
        use crate::store::StoreError;
        match e {
            StoreError::Throttled(_) => ApiError::Throttled(Box::new(e)),
            StoreError::Unavailable(_) => ApiError::Unavailable(Box::new(e)),
            StoreError::Conflict { .. } | StoreError::Corrupt { .. } => {
                ApiError::Internal(Box::new(e))
            }
        }
    }
}

impl From<crate::payload::PayloadError> for ApiError {
    fn from(e: crate::payload::PayloadError) -> Self {
        use crate::payload::PayloadError;
        match e {
            PayloadError::Throttled(_) => ApiError::Throttled(Box::new(e)),
            PayloadError::Unavailable(_) => ApiError::Unavailable(Box::new(e)),
            other => ApiError::Internal(Box::new(other)),
        }
    }
}

/// What the caller is told when its upload cannot be used. Pure.
pub fn upload_refused(id: &crate::upload::UploadId, why: crate::upload::Refusal) -> ApiError {
    use crate::upload::Refusal;
    match why {
        Refusal::Unknown => ApiError::UploadNotFound(id.to_string()),
        Refusal::Expired { at } => ApiError::Gone(format!(
            "upload {id} expired at {}; create a new upload with POST /uploads and send the file again",
            at.to_rfc3339()
        )),
        Refusal::Unfinished { multipart: false } => ApiError::Conflict {
            code: "upload_unfinished",
            message: format!(
                "upload {id} has no file yet: PUT the file to the upload's url, then submit the job"
            ),
        },
        Refusal::Unfinished { multipart: true } => ApiError::Conflict {
            code: "upload_unfinished",
            message: format!(
                "upload {id} is not complete: PUT every part to its url, then POST /uploads/{id}/complete \
                 with each part's number and ETag, then submit the job"
            ),
        },
        Refusal::SizeMismatch { announced, stored } => ApiError::Conflict {
            code: "upload_size_mismatch",
            message: format!(
                "upload {id} holds {stored} bytes, not the {announced} announced; \
                 create a new upload with the file's exact size"
            ),
        },
    }
}

/// What the caller is told when its reference to an object in S3 is refused before any request.
/// Pure.
pub fn reference_refused(why: crate::reference::Refusal) -> ApiError {
    use crate::reference::Refusal;
    match why {
        Refusal::NoBuckets => ApiError::Forbidden {
            code: "references_disabled",
            message: format!(
                "this deployment lists no buckets whose objects jobs may name: its operator lists \
                 them in {} (the CDK app's inputBuckets); until then, upload the file \
                 (POST /uploads) or send the input inline",
                crate::env::INPUT_BUCKETS
            ),
        },
        Refusal::NotListed(bucket) => ApiError::Forbidden {
            code: "bucket_not_listed",
            message: format!(
                "jobs may not name objects in the bucket {bucket}: this deployment lists only \
                 certain buckets ({}, the CDK app's inputBuckets); ask its operator to add it, or \
                 upload the file (POST /uploads)",
                crate::env::INPUT_BUCKETS
            ),
        },
        Refusal::Url(e) => ApiError::bad_request("invalid_presigned_url", e.to_string()),
        Refusal::Mismatch { named, signed } => ApiError::bad_request(
            "presigned_url_mismatch",
            format!(
                "the presigned URL is for {signed}, not the {named} the job names: presign a GET \
                 of exactly the object named in s3"
            ),
        ),
    }
}

/// What the caller is told when S3 does not show its object through the presigned URL.
pub fn probe_refused(name: &crate::reference::S3Name, e: crate::reference::ProbeError) -> ApiError {
    use crate::reference::ProbeError;
    match e {
        ProbeError::Forbidden => ApiError::Forbidden {
            code: "object_forbidden",
            message: format!(
                "the presigned URL does not grant read access to {name} (expired, or its \
                 credentials may not read it): presign a fresh GET with credentials that may \
                 read the object"
            ),
        },
        ProbeError::NotFound => ApiError::ObjectNotFound(format!(
            "S3 has no object {name}: check the bucket and key (and the object's version, if the \
             URL names one)"
        )),
        ProbeError::Unreachable(_) => ApiError::BadGateway(format!(
            "S3 did not answer the check of {name} within {} s; retry shortly",
            crate::reference::PROBE_TIMEOUT.as_secs()
        )),
        other => ApiError::BadGateway(format!(
            "{other} for the presigned GET of {name}, which shows neither the object nor a \
             refusal: check the URL is a GET presign of the object, then retry"
        )),
    }
}

impl From<crate::queue::QueueError> for ApiError {
    fn from(e: crate::queue::QueueError) -> Self {
        use crate::queue::QueueError;
        match e {
            QueueError::TooLarge { size } => ApiError::PayloadTooLarge(too_large_message(size)),
            QueueError::Throttled(_) => ApiError::Throttled(Box::new(e)),
            QueueError::Unavailable(_) | QueueError::StaleReceipt(_) => {
                ApiError::Unavailable(Box::new(e))
            }
        }
    }
}

fn too_large_message(size: usize) -> String {
    format!(
        "the job is {size} bytes; a job's input must fit in one queue message of {MAX_MESSAGE_BYTES} bytes \
         (about 1 MiB) with its envelope: upload a larger input (POST /uploads, as JSON) and submit \
         {{\"input_file\": {{\"upload_id\": …}}}} without an input, which the handler then reads \
         as its input (the sluice CLI and client do this for you)"
    )
}

/// A submit request, checked.
#[derive(Debug)]
pub struct ValidSubmit<'a> {
    pub input: &'a RawValue,
    /// The upload, or the object in S3, the handler gets as a file.
    pub input_file: Option<InputFile>,
    pub deadline: Option<Duration>,
    pub max_attempts: Option<u32>,
    pub timeout_seconds: Option<u64>,
    pub on_timeout: OnTimeout,
    /// The webhook URL as given, checked with [`validate_webhook`].
    pub webhook: Option<String>,
}

/// Checks a `POST /uploads` request: JSON with the file's size and, optionally, a valid media
/// type. Pure.
pub fn validate_upload(content_type: Option<&str>, body: &[u8]) -> Result<UploadRequest, ApiError> {
    let json = content_type
        .and_then(|c| c.split(';').next())
        .is_some_and(|m| m.trim().eq_ignore_ascii_case("application/json"));
    if !json {
        return Err(ApiError::UnsupportedMediaType(
            "send the upload's request as JSON with Content-Type: application/json".into(),
        ));
    }
    let req: UploadRequest = serde_json::from_slice(body).map_err(|e| {
        ApiError::bad_request(
            "invalid_json",
            format!("the body is not an upload request ({e}); expected {{\"size\": <bytes>, \"content_type\"?: \"image/jpeg\", \"sha256\"?: \"<64 hex digits>\"}}"),
        )
    })?;
    let mut req = req;
    if let Some(sum) = &req.sha256 {
        if sum.len() != 64 || !sum.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(ApiError::bad_request(
                "invalid_sha256",
                "sha256 must be the file's SHA-256 as 64 hex digits (sha256sum prints it), or left out",
            ));
        }
        req.sha256 = Some(sum.to_ascii_lowercase());
    }
    if let Some(ct) = &req.content_type {
        if !crate::upload::valid_content_type(ct) {
            return Err(ApiError::bad_request(
                "invalid_content_type",
                format!(
                    "content_type must be a media type such as image/jpeg, at most {} characters",
                    crate::upload::MAX_CONTENT_TYPE
                ),
            ));
        }
    }
    Ok(req)
}

/// Checks a submit's webhook URL against the deployment's policy (deployed: https to public
/// addresses only). Pure.
pub fn validate_webhook(
    url: Option<&str>,
    policy: crate::webhook::TargetPolicy,
) -> Result<Option<String>, ApiError> {
    let Some(url) = url else {
        return Ok(None);
    };
    crate::webhook::validate_url(url, policy)
        .map(|_| Some(url.to_owned()))
        .map_err(|e| ApiError::bad_request("invalid_webhook", e.to_string()))
}

/// Checks a submit request's content type and body; `max_timeout` is the deployment's longest
/// time limit. Pure.
pub fn validate_submit<'a>(
    content_type: Option<&str>,
    body: &'a [u8],
    max_timeout: Duration,
) -> Result<ValidSubmit<'a>, ApiError> {
    let media_type = content_type
        .map(|ct| {
            ct.split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase()
        })
        .unwrap_or_default();
    if media_type != "application/json" {
        let got = content_type.map_or("no Content-Type".to_owned(), |c| {
            format!("Content-Type {c:?}")
        });
        return Err(ApiError::UnsupportedMediaType(format!(
            "{got} is not accepted: send the job as JSON with Content-Type: application/json"
        )));
    }
    if body.len() > MAX_BODY_BYTES {
        return Err(ApiError::PayloadTooLarge(too_large_message(body.len())));
    }
    let text = std::str::from_utf8(body)
        .map_err(|_| ApiError::bad_request("invalid_json", "the body is not UTF-8 text"))?;
    if text.trim().is_empty() {
        return Err(ApiError::bad_request(
            "invalid_json",
            "the body is empty: send {\"input\": <any JSON>}",
        ));
    }
    // serde would read an array as the request's fields in order: `[1, 2, 3]` is no job.
    if text.trim_start().starts_with('[') {
        return Err(ApiError::bad_request(
            "invalid_json",
            "the body must be a JSON object: {\"input\": <any JSON>}",
        ));
    }
    let req: SubmitRequest<'a> = serde_json::from_str(text).map_err(|e| {
        let what = if e.is_data() {
            "the body is JSON but not a job"
        } else {
            "the body is not valid JSON"
        };
        ApiError::bad_request(
            "invalid_json",
            format!("{what} ({e}); expected {{\"input\": <any JSON>, \"input_file\"?: {{\"upload_id\": \"…\"}} | {{\"s3\": \"s3://…\", \"presigned_url\": \"https://…\"}}, \"deadline_seconds\"?: N, \"max_attempts\"?: N, \"timeout_seconds\"?: N, \"on_timeout\"?: \"fail\" | \"retry\", \"webhook\"?: \"https://…\"}}"),
        )
    })?;
    let deadline = match req.deadline_seconds {
        None => None,
        Some(s) if s == 0 || s > MAX_DEADLINE.as_secs() => {
            return Err(ApiError::bad_request(
                "invalid_deadline",
                format!("deadline_seconds must be 1 to {}", MAX_DEADLINE.as_secs()),
            ))
        }
        Some(s) => Some(Duration::from_secs(s)),
    };
    if let Some(n) = req.max_attempts {
        if n == 0 || n > MAX_ATTEMPTS_LIMIT {
            return Err(ApiError::bad_request(
                "invalid_max_attempts",
                format!("max_attempts must be 1 to {MAX_ATTEMPTS_LIMIT}"),
            ));
        }
    }
    let input_file = match req.input_file {
        None => None,
        Some(f) => Some(validate_input_file(f)?),
    };
    let input = match (req.input, &input_file) {
        (Some(input), _) => input,
        (None, Some(_)) => null_input(),
        (None, None) => {
            return Err(ApiError::bad_request(
                "invalid_json",
                "the body has no input: send {\"input\": <any JSON>}, or {\"input_file\": {\"upload_id\": \"…\"}} for an uploaded file \
                 ({\"s3\": \"s3://bucket/key\", \"presigned_url\": \"https://…\"} for an object already in S3)",
            ))
        }
    };
    check_input(input.get())?;
    if let Some(s) = req.timeout_seconds {
        if s == 0 || s > max_timeout.as_secs() {
            return Err(ApiError::bad_request(
                "invalid_timeout",
                format!(
                    "timeout_seconds must be 1 to {} (this deployment's longest time limit)",
                    max_timeout.as_secs()
                ),
            ));
        }
    }
    Ok(ValidSubmit {
        input,
        input_file,
        deadline,
        max_attempts: req.max_attempts,
        timeout_seconds: req.timeout_seconds,
        on_timeout: req.on_timeout.unwrap_or_default(),
        webhook: req.webhook,
    })
}

/// Checks the form of a job's file: exactly one of `{"upload_id": …}` and `{"s3": "s3://…",
/// "presigned_url": "https://…"}`. Pure.
fn validate_input_file(f: InputFileRef) -> Result<InputFile, ApiError> {
    const FORMS: &str =
        "send {\"upload_id\": \"…\"} for an upload, or {\"s3\": \"s3://bucket/key\", \
                         \"presigned_url\": \"https://…\"} for an object already in S3";
    match (f.upload_id, f.s3, f.presigned_url) {
        (Some(id), None, None) => id
            .parse::<crate::upload::UploadId>()
            .map(InputFile::Upload)
            .map_err(|e| {
                ApiError::bad_request(
                    "invalid_upload_id",
                    format!("{e}; use the upload_id POST /uploads answered"),
                )
            }),
        (None, Some(name), Some(url)) => {
            let name = name.parse::<crate::reference::S3Name>().map_err(|e| {
                ApiError::bad_request("invalid_s3_name", format!("input_file.s3 {e}"))
            })?;
            Ok(InputFile::S3 {
                name,
                presigned_url: url,
            })
        }
        (None, Some(_), None) => Err(ApiError::bad_request(
            "missing_presigned_url",
            "input_file names an object in S3 without a presigned_url: add a GET of it presigned \
             with your own credentials (`aws s3 presign s3://bucket/key`), which proves you may \
             read it; `sluice submit --s3` does this for you",
        )),
        (None, None, Some(_)) => Err(ApiError::bad_request(
            "invalid_input_file",
            format!("input_file has a presigned_url but no s3 name of its object: {FORMS}"),
        )),
        (Some(_), _, _) => Err(ApiError::bad_request(
            "invalid_input_file",
            format!("input_file names both an upload and an object in S3: {FORMS}"),
        )),
        (None, None, None) => Err(ApiError::bad_request(
            "invalid_input_file",
            format!("input_file names no file: {FORMS}"),
        )),
    }
}

/// The input of a job that sends only a file: `null`.
fn null_input() -> &'static RawValue {
    static NULL: std::sync::OnceLock<Box<RawValue>> = std::sync::OnceLock::new();
    NULL.get_or_init(|| RawValue::from_string("null".into()).expect("null is JSON"))
}

/// Refuses, at submit, an input that a worker could not decode: nested deeper than
/// [`MAX_INPUT_DEPTH`], or with text that is not Unicode (a lone surrogate escape). Pure.
fn check_input(input: &str) -> Result<(), ApiError> {
    let depth = json_depth(input);
    if depth > MAX_INPUT_DEPTH {
        return Err(ApiError::bad_request(
            "invalid_input",
            format!(
                "the input nests arrays and objects {depth} deep; at most {MAX_INPUT_DEPTH} levels are accepted"
            ),
        ));
    }
    serde_json::from_str::<serde_json::Value>(input).map_err(|e| {
        ApiError::bad_request(
            "invalid_input",
            format!("the input cannot be decoded ({e}); send valid JSON with Unicode text"),
        )
    })?;
    if let Some((at, c)) = unsendable_char(input) {
        return Err(ApiError::bad_request(
            "invalid_input",
            format!(
                "the input holds U+{:04X} at byte {at}, a character a queue message cannot carry; \
                 write it as the JSON escape \\u{:04X} instead",
                c as u32, c as u32
            ),
        ));
    }
    Ok(())
}

/// The first character, with its byte offset, that SQS refuses in a message body: it takes
/// only tab, line feed, carriage return, U+0020 to U+D7FF, U+E000 to U+FFFD and U+10000 up.
/// In JSON text only U+FFFE and U+FFFF can appear raw (control characters must be escaped).
/// Pure.
pub fn unsendable_char(text: &str) -> Option<(usize, char)> {
    text.char_indices().find(|&(_, c)| {
        !matches!(c, '\t' | '\n' | '\r' | '\u{20}'..='\u{D7FF}' | '\u{E000}'..='\u{FFFD}' | '\u{10000}'..)
    })
}

/// The deepest nesting of arrays and objects in JSON text, strings skipped. Pure.
pub fn json_depth(text: &str) -> usize {
    let (mut depth, mut deepest, mut in_string, mut escaped) = (0usize, 0usize, false, false);
    for b in text.bytes() {
        if in_string {
            match (escaped, b) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                deepest = deepest.max(depth);
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    deepest
}

/// Checks an `Idempotency-Key` header. Pure.
pub fn validate_idempotency_key(key: Option<&[u8]>) -> Result<Option<&str>, ApiError> {
    let Some(raw) = key else { return Ok(None) };
    let bad = || {
        ApiError::bad_request(
            "invalid_idempotency_key",
            format!("Idempotency-Key must be 1 to {MAX_IDEMPOTENCY_KEY} visible ASCII characters"),
        )
    };
    let key = std::str::from_utf8(raw).map_err(|_| bad())?;
    if key.is_empty()
        || key.len() > MAX_IDEMPOTENCY_KEY
        || !key.bytes().all(|b| b.is_ascii_graphic())
    {
        return Err(bad());
    }
    Ok(Some(key))
}

/// Parses `?wait=N`. Pure.
pub fn parse_wait(raw: Option<&str>) -> Result<Duration, ApiError> {
    let Some(raw) = raw else {
        return Ok(Duration::ZERO);
    };
    match raw.parse::<u64>() {
        Ok(s) if s <= MAX_WAIT.as_secs() => Ok(Duration::from_secs(s)),
        _ => Err(ApiError::bad_request(
            "invalid_wait",
            format!(
                "wait must be a whole number of seconds from 0 to {}",
                MAX_WAIT.as_secs()
            ),
        )),
    }
}

/// Parses a job id from the path; a malformed one is simply not found.
pub fn parse_job_id(raw: &str) -> Result<JobId, ApiError> {
    raw.parse()
        .map_err(|_| ApiError::NotFound(raw.chars().take(64).collect()))
}

/// The absolute URL of a job. `stage` is API Gateway's stage (`$default` adds nothing).
pub fn job_url(scheme: &str, host: &str, stage: Option<&str>, id: &JobId) -> String {
    match stage {
        Some(stage) if stage != "$default" && !stage.is_empty() => {
            format!("{scheme}://{host}/{stage}/jobs/{id}")
        }
        _ => format!("{scheme}://{host}/jobs/{id}"),
    }
}

/// SHA-256 as lowercase hex.
pub fn sha256_hex(parts: &[&[u8]]) -> String {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    for p in parts {
        h.update((p.len() as u64).to_be_bytes());
        h.update(p);
    }
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::job::MAX_JOB_TIMEOUT;

    #[test]
    fn submit_validation_explains_every_refusal() {
        let json = Some("application/json");
        type Case<'a> = (Option<&'a str>, &'a str, Result<(), (u16, &'a str)>);
        let cases: &[Case] = &[
            (json, r#"{"input": {"text": "hi"}}"#, Ok(())),
            (
                Some("application/json; charset=utf-8"),
                r#"{"input": 1}"#,
                Ok(()),
            ),
            (Some("Application/JSON"), r#"{"input": null}"#, Ok(())),
            (
                json,
                r#"{"input": [1,2], "deadline_seconds": 60, "max_attempts": 5}"#,
                Ok(()),
            ),
            (
                None,
                r#"{"input": 1}"#,
                Err((415, "no Content-Type is not accepted")),
            ),
            (
                Some("text/plain"),
                r#"{"input": 1}"#,
                Err((415, "Content-Type \"text/plain\" is not accepted")),
            ),
            (json, "", Err((400, "the body is empty"))),
            (
                json,
                "{\"input\": ",
                Err((400, "the body is not valid JSON")),
            ),
            (json, "not json", Err((400, "the body is not valid JSON"))),
            (
                json,
                r#"{"text": "hi"}"#,
                Err((400, "the body is JSON but not a job")),
            ),
            (
                json,
                r#"{"input": 1, "inptu": 2}"#,
                Err((400, "unknown field `inptu`")),
            ),
            (
                json,
                r#"{"input": 1, "deadline_seconds": 0}"#,
                Err((400, "deadline_seconds must be 1 to 1209600")),
            ),
            (
                json,
                r#"{"input": 1, "deadline_seconds": -5}"#,
                Err((400, "the body is JSON but not a job")),
            ),
            (
                json,
                r#"{"input": 1, "max_attempts": 11}"#,
                Err((400, "max_attempts must be 1 to 10")),
            ),
            (json, r#"{"input": 1, "timeout_seconds": 600}"#, Ok(())),
            (
                json,
                r#"{"input": 1, "timeout_seconds": 601}"#,
                Err((400, "timeout_seconds must be 1 to 600")),
            ),
            (
                json,
                r#"{"input": 1, "timeout_seconds": 0}"#,
                Err((400, "timeout_seconds must be 1 to 600")),
            ),
            (json, r#"{"input": 1, "on_timeout": "retry"}"#, Ok(())),
            (
                json,
                "[1, 2, 3]",
                Err((400, "the body must be a JSON object")),
            ),
            (json, " \n {\"input\": [[1]]}", Ok(())),
            (
                json,
                r#"{"input": "\ud800"}"#,
                Err((
                    400,
                    "the input cannot be decoded (unexpected end of hex escape",
                )),
            ),
            (json, r#"{"input": "\ud83d\ude00 \u00e9"}"#, Ok(())),
            // Raw, SQS refuses these code points; escaped, they are plain ASCII text.
            (
                json,
                "{\"input\": \"a\u{FFFE}b\"}",
                Err((400, "the input holds U+FFFE at byte 2, a character a queue message cannot carry; write it as the JSON escape \\uFFFE")),
            ),
            (
                json,
                "{\"input\": [\"\u{FFFF}\"]}",
                Err((400, "U+FFFF at byte 2")),
            ),
            (json, r#"{"input": "a\uFFFEb\uffff\u0001"}"#, Ok(())),
            (json, "{\"input\": \"\u{FFFD}\u{10FFFF}\u{E000}\u{D7FF} ok\"}", Ok(())),
            (
                json,
                r#"{"input": 1, "on_timeout": "later"}"#,
                Err((400, "unknown variant `later`")),
            ),
        ];
        for (ct, body, want) in cases {
            let got = validate_submit(*ct, body.as_bytes(), Duration::from_secs(600)).map(|_| ());
            match (got, want) {
                (Ok(()), Ok(())) => {}
                (Err(e), Err((status, text))) => {
                    assert_eq!(e.status_and_code().0, *status, "{body}: {e}");
                    assert!(e.to_string().contains(text), "{body}: {e}");
                }
                (got, want) => panic!("{body}: got {got:?}, want {want:?}"),
            }
        }
    }

    #[test]
    fn a_jobs_file_is_an_upload_or_an_object_in_s3() {
        let up = "01JDQ3ZV1T8Y3G7Q0M9K2D4XWE";
        let url = "https://data.s3.amazonaws.com/a?X-Amz-Signature=x";
        type Case<'a> = (String, Result<&'a str, (u16, &'a str)>);
        let cases: Vec<Case> = vec![
            (
                format!(r#"{{"input_file": {{"upload_id": "{up}"}}}}"#),
                Ok(up),
            ),
            (
                format!(r#"{{"input_file": {{"s3": "s3://data/a", "presigned_url": "{url}"}}}}"#),
                Ok("s3://data/a"),
            ),
            (
                r#"{"input_file": {"s3": "s3://data/a"}}"#.into(),
                Err((400, "without a presigned_url")),
            ),
            (
                format!(r#"{{"input_file": {{"presigned_url": "{url}"}}}}"#),
                Err((400, "no s3 name")),
            ),
            (
                format!(
                    r#"{{"input_file": {{"upload_id": "{up}", "s3": "s3://data/a", "presigned_url": "{url}"}}}}"#
                ),
                Err((400, "both an upload and an object")),
            ),
            (r#"{"input_file": {}}"#.into(), Err((400, "names no file"))),
            (
                format!(r#"{{"input_file": {{"s3": "s3://Data/a", "presigned_url": "{url}"}}}}"#),
                Err((400, "not an S3 bucket name")),
            ),
            (
                format!(r#"{{"input_file": {{"s3": "data/a", "presigned_url": "{url}"}}}}"#),
                Err((400, "write s3://bucket/key")),
            ),
            (
                r#"{"input_file": {"s3": "s3://data/a", "url": "x"}}"#.into(),
                Err((400, "unknown field `url`")),
            ),
        ];
        for (body, want) in cases {
            let got = validate_submit(Some("application/json"), body.as_bytes(), MAX_JOB_TIMEOUT);
            match (got, want) {
                (Ok(v), Ok(shown)) => {
                    assert_eq!(v.input_file.unwrap().to_string(), shown, "{body}");
                    assert_eq!(v.input.get(), "null");
                }
                (Err(e), Err((status, text))) => {
                    assert_eq!(e.status_and_code().0, status, "{body}: {e}");
                    assert!(e.to_string().contains(text), "{body}: {e}");
                }
                (got, want) => panic!("{body}: got {got:?}, want {want:?}"),
            }
        }
    }

    #[test]
    fn inputs_nested_too_deep_are_refused_at_submit() {
        let nested = |n: usize| format!("{}1{}", "[".repeat(n), "]".repeat(n));
        let ok = format!(r#"{{"input": {}}}"#, nested(MAX_INPUT_DEPTH));
        assert!(validate_submit(Some("application/json"), ok.as_bytes(), MAX_JOB_TIMEOUT).is_ok());
        for n in [MAX_INPUT_DEPTH + 1, 100_000] {
            let body = format!(r#"{{"input": {}}}"#, nested(n));
            let e = validate_submit(Some("application/json"), body.as_bytes(), MAX_JOB_TIMEOUT)
                .unwrap_err();
            assert_eq!(e.status_and_code(), (400, "invalid_input"));
            assert!(
                e.to_string().contains(&format!("{n} deep; at most 64")),
                "{e}"
            );
        }
        let cases = [
            ("1", 0),
            ("[]", 1),
            (r#"{"a": [{"b": []}]}"#, 4),
            (r#"["[[[[", "\"]]]"]"#, 1),
            (r#"{"k\\": [1]}"#, 2),
        ];
        for (text, want) in cases {
            assert_eq!(json_depth(text), want, "{text}");
        }
    }

    #[test]
    fn oversized_bodies_are_refused_with_the_limit() {
        let body = format!(r#"{{"input": "{}"}}"#, "x".repeat(MAX_BODY_BYTES));
        let e = validate_submit(
            Some("application/json"),
            body.as_bytes(),
            crate::job::MAX_JOB_TIMEOUT,
        )
        .unwrap_err();
        assert_eq!(e.status_and_code(), (413, "payload_too_large"));
        assert!(e.to_string().contains("1048576 bytes"), "{e}");
    }

    #[test]
    fn idempotency_keys_and_waits_are_checked() {
        assert_eq!(validate_idempotency_key(None).unwrap(), None);
        assert_eq!(
            validate_idempotency_key(Some(b"order-42")).unwrap(),
            Some("order-42")
        );
        let long = "k".repeat(256);
        for bad in [&b""[..], b"has space", "é".as_bytes(), long.as_bytes()] {
            assert!(validate_idempotency_key(Some(bad)).is_err(), "{bad:?}");
        }
        let cases = [
            (None, Ok(0)),
            (Some("0"), Ok(0)),
            (Some("25"), Ok(25)),
            (Some("26"), Err(())),
            (Some("-1"), Err(())),
            (Some("1.5"), Err(())),
            (Some(""), Err(())),
        ];
        for (raw, want) in cases {
            assert_eq!(
                parse_wait(raw).map(|d| d.as_secs()).map_err(|_| ()),
                want,
                "{raw:?}"
            );
        }
    }

    #[test]
    fn every_error_maps_to_one_status_and_a_json_body_without_internals() {
        let secret = std::io::Error::other("arn:aws:dynamodb:secret-table");
        let cases: Vec<(ApiError, u16, &str)> = vec![
            (
                ApiError::bad_request("invalid_json", "x"),
                400,
                "invalid_json",
            ),
            (ApiError::Unauthenticated, 403, "forbidden"),
            (
                ApiError::ForbiddenHost("evil.example".into()),
                403,
                "forbidden_host",
            ),
            (ApiError::NotOperator("x".into()), 403, "not_operator"),
            (ApiError::NotFound("x".into()), 404, "not_found"),
            (
                ApiError::Conflict {
                    code: "already_finished",
                    message: "x".into(),
                },
                409,
                "already_finished",
            ),
            (
                ApiError::PayloadTooLarge("x".into()),
                413,
                "payload_too_large",
            ),
            (
                ApiError::UnsupportedMediaType("x".into()),
                415,
                "unsupported_media_type",
            ),
            (
                ApiError::Unprocessable("x".into()),
                422,
                "idempotency_key_reused",
            ),
            (
                ApiError::Throttled(Box::new(std::io::Error::other(
                    "arn:aws:dynamodb:secret-table",
                ))),
                429,
                "throttled",
            ),
            (
                ApiError::Unavailable(Box::new(std::io::Error::other(
                    "arn:aws:dynamodb:secret-table",
                ))),
                503,
                "unavailable",
            ),
            (ApiError::Internal(Box::new(secret)), 500, "internal"),
        ];
        for (e, status, code) in cases {
            assert_eq!(e.status_and_code(), (status, code));
            let body = serde_json::to_string(&e.body()).unwrap();
            assert!(body.starts_with(r#"{"error":{"code":""#), "{body}");
            assert!(!body.contains("secret"), "{body}");
        }
    }

    #[test]
    fn job_urls_follow_the_stage() {
        let id: JobId = "01JDQ3ZV1T8Y3G7Q0M9K2D4XWE".parse().unwrap();
        let cases = [
            (
                "https",
                "abc.execute-api.eu-west-1.amazonaws.com",
                Some("$default"),
                "https://abc.execute-api.eu-west-1.amazonaws.com/jobs/01JDQ3ZV1T8Y3G7Q0M9K2D4XWE",
            ),
            (
                "https",
                "abc.example.com",
                Some("prod"),
                "https://abc.example.com/prod/jobs/01JDQ3ZV1T8Y3G7Q0M9K2D4XWE",
            ),
            (
                "http",
                "127.0.0.1:8080",
                None,
                "http://127.0.0.1:8080/jobs/01JDQ3ZV1T8Y3G7Q0M9K2D4XWE",
            ),
        ];
        for (scheme, host, stage, want) in cases {
            assert_eq!(job_url(scheme, host, stage, &id), want);
        }
    }

    #[test]
    fn views_show_what_a_caller_needs() {
        let mut job = JobRecord::queued(
            JobId::generate(),
            crate::job::Owner::new("a"),
            Millis(1_000),
            Some(Millis(5_000)),
            3,
            1,
        );
        let v = JobView::of(&job);
        assert_eq!(
            (v.status, v.error.as_deref(), v.finished_at.as_deref()),
            (Status::Queued, None, None)
        );
        // Past its deadline a queued job is shown queued until its expiry is recorded: the
        // table decides, not the reader's clock.
        job.status = Status::Expired;
        let v = JobView::of(&job);
        assert_eq!(v.status, Status::Expired);
        assert_eq!(
            v.error.as_deref(),
            Some("the deadline passed before the job started")
        );
        assert_eq!(v.finished_at.as_deref(), Some("1970-01-01T00:00:05.000Z"));

        job.status = Status::Succeeded;
        job.result = Some(r#"{"answer":42}"#.into());
        job.cancel_requested = true;
        let v = JobView::of(&job);
        assert_eq!(v.result, Some(serde_json::json!({"answer": 42})));
        assert!(!v.cancel_requested, "a finished job has no pending cancel");
    }

    #[test]
    fn a_webhook_is_checked_against_the_deployments_policy() {
        use crate::webhook::TargetPolicy;
        let cases = [
            (None, TargetPolicy::DEPLOYED, Ok(None)),
            (
                Some("https://hooks.example.com/in"),
                TargetPolicy::DEPLOYED,
                Ok(Some("https://hooks.example.com/in")),
            ),
            (
                Some("http://127.0.0.1:9000/in"),
                TargetPolicy::LOCAL_STACK,
                Ok(Some("http://127.0.0.1:9000/in")),
            ),
            (
                Some("https://127.0.0.1/in"),
                TargetPolicy::DEPLOYED,
                Err("127.0.0.1 is a loopback address"),
            ),
            (
                Some("https://169.254.169.254/"),
                TargetPolicy::LOCAL_STACK,
                Err("a cloud metadata address"),
            ),
        ];
        for (url, policy, want) in cases {
            match (validate_webhook(url, policy), want) {
                (Ok(got), Ok(want)) => assert_eq!(got.as_deref(), want, "{url:?}"),
                (Err(e), Err(text)) => {
                    assert_eq!(e.status_and_code(), (400, "invalid_webhook"));
                    assert!(e.to_string().contains(text), "{url:?}: {e}");
                }
                (got, want) => panic!("{url:?}: got {got:?}, want {want:?}"),
            }
        }
    }

    #[test]
    fn the_view_shows_where_a_webhook_delivery_stands_once_the_job_ended() {
        let mut job = JobRecord::queued(
            JobId::generate(),
            crate::job::Owner::new("a"),
            Millis(1_000),
            None,
            3,
            1,
        );
        assert_eq!(JobView::of(&job).delivery, None, "no webhook");
        job.webhook = Some("https://hooks.example.com/in".into());
        assert_eq!(JobView::of(&job).delivery, None, "not ended");
        job.status = Status::Succeeded;
        job.delivery.due_at = Some(Millis(2_000));
        let pending = JobView::of(&job).delivery.unwrap();
        assert_eq!(pending.state, DeliveryState::Pending);
        assert_eq!(
            pending.next_attempt_at.as_deref(),
            Some("1970-01-01T00:00:02.000Z")
        );
        job.delivery = crate::job::Delivery {
            attempts: 2,
            last_status: Some(204),
            delivered_at: Some(Millis(3_000)),
            ..Default::default()
        };
        let delivered = JobView::of(&job).delivery.unwrap();
        assert_eq!(
            (
                delivered.state,
                delivered.attempts,
                delivered.next_attempt_at
            ),
            (DeliveryState::Delivered, 2, None)
        );
        job.delivery = crate::job::Delivery {
            attempts: 8,
            last_error: Some("the receiver answered HTTP 500".into()),
            gave_up_at: Some(Millis(4_000)),
            ..Default::default()
        };
        assert_eq!(
            JobView::of(&job).delivery.unwrap().state,
            DeliveryState::Failed
        );
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        /// Any JSON value, nested a few levels.
        fn json() -> impl Strategy<Value = serde_json::Value> {
            let leaf = prop_oneof![
                Just(serde_json::Value::Null),
                any::<bool>().prop_map(serde_json::Value::from),
                any::<i64>().prop_map(serde_json::Value::from),
                any::<f64>()
                    .prop_filter("finite", |f| f.is_finite())
                    .prop_map(serde_json::Value::from),
                ".*".prop_map(serde_json::Value::from),
            ];
            leaf.prop_recursive(4, 32, 6, |inner| {
                prop_oneof![
                    prop::collection::vec(inner.clone(), 0..6).prop_map(serde_json::Value::from),
                    prop::collection::btree_map("[a-z_]{1,16}", inner, 0..6)
                        .prop_map(|m| { serde_json::Value::Object(m.into_iter().collect()) }),
                ]
            })
        }

        fn client_error(e: &ApiError) -> bool {
            (400..500).contains(&e.status_and_code().0)
        }

        proptest! {
            #[test]
            fn any_bytes_get_an_answer_never_a_panic_or_a_5xx(
                body in prop::collection::vec(any::<u8>(), 0..512),
                content_type in prop::option::of(".{0,40}"),
                max in 1u64..100_000,
            ) {
                if let Err(e) = validate_submit(content_type.as_deref(), &body, Duration::from_secs(max)) {
                    prop_assert!(client_error(&e), "{e}");
                }
            }

            #[test]
            fn any_json_body_gets_an_answer_never_a_panic_or_a_5xx(
                body in json(),
                input in json(),
                extra in prop::option::of(json()),
            ) {
                let mut job = serde_json::json!({"input": input});
                if let Some(x) = extra {
                    job["deadline_seconds"] = x;
                }
                for text in [body.to_string(), job.to_string()] {
                    match validate_submit(Some("application/json"), text.as_bytes(), MAX_JOB_TIMEOUT) {
                        Ok(v) => prop_assert!(serde_json::from_str::<serde_json::Value>(v.input.get()).is_ok()),
                        Err(e) => prop_assert!(client_error(&e), "{e}"),
                    }
                }
            }

            #[test]
            fn waits_ids_and_keys_are_checked_without_panics(
                raw in ".{0,64}",
                bytes in prop::collection::vec(any::<u8>(), 0..300),
            ) {
                match parse_wait(Some(&raw)) {
                    Ok(d) => prop_assert!(d <= MAX_WAIT),
                    Err(e) => prop_assert!(client_error(&e)),
                }
                if let Err(e) = parse_job_id(&raw) {
                    prop_assert_eq!(e.status_and_code().0, 404);
                }
                if let Err(e) = validate_idempotency_key(Some(&bytes)) {
                    prop_assert!(client_error(&e));
                }
            }
        }
    }
}
