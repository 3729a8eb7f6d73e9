//! The Rust client of the sluice HTTP API, behind the `sluice` command.

use std::time::Duration;

use serde_json::value::RawValue;

use std::path::Path;
use std::sync::Arc;

use serde::de::DeserializeOwned;

use crate::api::{CompleteRequest, CompletedPartRef, ErrorBody, JobView, UploadView, MAX_WAIT};
use crate::pipeline::{PauseRequest, PipelineView};
use crate::reference::S3Name;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The API answered with an error.
    #[error("{message} (HTTP {status}, {code})")]
    Api {
        status: u16,
        code: String,
        message: String,
    },
    #[error("could not reach {url}")]
    Transport {
        url: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("the API's answer could not be read: {0}")]
    Decode(String),
    #[error("{0:?} is not an http:// or https:// URL")]
    InvalidUrl(String),
    #[error("timed out after {0:?} waiting for the job to finish")]
    TimedOut(Duration),
    #[error("cannot sign the request: {0}")]
    Signing(String),
    #[error("cannot read {path}")]
    File {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("the upload of {what} failed: {reason}")]
    Upload { what: String, reason: String },
    #[error("cannot write {path}")]
    Write {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

/// How long the GET [`Client::submit_object`] presigns lasts: the API uses it once, at submit.
pub const REFERENCE_URL_LIFETIME: Duration = Duration::from_secs(15 * 60);

/// A GET of the object `name` presigned with the caller's credentials from the SDK's default
/// chain (and its endpoint: the emulator's on the local stack, path style).
pub async fn presign_get(name: &S3Name, lifetime: Duration) -> Result<String, ClientError> {
    let aws = crate::aws::load().await;
    crate::payload::Payloads::from_sdk(&aws, name.bucket.as_str())
        .presigned_get(&name.key, lifetime)
        .await
        .map(|p| p.url)
        .map_err(|e| {
            ClientError::Signing(format!(
                "cannot presign a GET of {name}: {}",
                crate::aws::DisplayErrorContext(&e)
            ))
        })
}

/// Signs requests with AWS Signature Version 4 for API Gateway's IAM authorization, with
/// credentials from the SDK's default chain.
#[derive(Debug, Clone)]
pub struct Sigv4 {
    credentials: aws_credential_types::provider::SharedCredentialsProvider,
    region: String,
}

/// The region of an API Gateway URL (`https://ID.execute-api.REGION.amazonaws.com/...`). Pure.
pub fn region_from_url(url: &str) -> Option<&str> {
    let host = url.split("://").nth(1)?.split(['/', ':']).next()?;
    let rest = host.split(".execute-api.").nth(1)?;
    rest.split('.').next().filter(|r| !r.is_empty())
}

impl Sigv4 {
    /// Credentials from the default chain; the region from the URL, else from the SDK's
    /// configuration.
    pub async fn for_url(url: &str) -> Result<Self, ClientError> {
        let aws = crate::aws::load().await;
        let region = region_from_url(url)
            .map(str::to_owned)
            .or_else(|| aws.region().map(|r| r.to_string()))
            .ok_or_else(|| {
                ClientError::Signing("cannot tell the API's region: set AWS_REGION".into())
            })?;
        let credentials = aws.credentials_provider().ok_or_else(|| {
            ClientError::Signing(
                "no AWS credentials found (the SDK's default chain is empty)".into(),
            )
        })?;
        Ok(Sigv4 {
            credentials,
            region,
        })
    }

    async fn sign(&self, req: &mut reqwest::Request) -> Result<(), ClientError> {
        use aws_credential_types::provider::ProvideCredentials;
        use aws_sigv4::http_request::{sign, SignableBody, SignableRequest, SigningSettings};
        use aws_sigv4::sign::v4;

        let creds = self
            .credentials
            .provide_credentials()
            .await
            .map_err(|e| ClientError::Signing(format!("no AWS credentials: {e}")))?;
        let identity = creds.into();
        let params = v4::SigningParams::builder()
            .identity(&identity)
            .region(&self.region)
            .name("execute-api")
            .time(std::time::SystemTime::now())
            .settings(SigningSettings::default())
            .build()
            .map_err(|e| ClientError::Signing(e.to_string()))?
            .into();
        let body = req
            .body()
            .and_then(|b| b.as_bytes())
            .unwrap_or_default()
            .to_vec();
        let headers: Vec<(String, String)> = req
            .headers()
            .iter()
            .filter_map(|(k, v)| Some((k.as_str().to_owned(), v.to_str().ok()?.to_owned())))
            .collect();
        let signable = SignableRequest::new(
            req.method().as_str(),
            req.url().as_str(),
            headers.iter().map(|(k, v)| (k.as_str(), v.as_str())),
            SignableBody::Bytes(&body),
        )
        .map_err(|e| ClientError::Signing(e.to_string()))?;
        let (instructions, _) = sign(signable, &params)
            .map_err(|e| ClientError::Signing(e.to_string()))?
            .into_parts();
        for (name, value) in instructions.headers() {
            let name = reqwest::header::HeaderName::from_bytes(name.as_bytes())
                .map_err(|e| ClientError::Signing(e.to_string()))?;
            let value = reqwest::header::HeaderValue::from_str(value)
                .map_err(|e| ClientError::Signing(e.to_string()))?;
            req.headers_mut().insert(name, value);
        }
        Ok(())
    }
}

/// Options of a submit beyond the input.
#[derive(Debug, Clone, Default)]
pub struct SubmitOptions {
    pub deadline_seconds: Option<u64>,
    pub max_attempts: Option<u32>,
    /// The time limit of one attempt, in seconds.
    pub timeout_seconds: Option<u64>,
    /// Retry an attempt that runs past its time limit instead of failing the job.
    pub retry_on_timeout: bool,
    /// Submitting again with the same key returns the same job. Without one, the client makes
    /// one up for this submit ([`new_idempotency_key`]) and sends it with each of its retries.
    pub idempotency_key: Option<String>,
}

/// A fresh idempotency key: `sluice-` and a ULID, unique per logical submit.
pub fn new_idempotency_key() -> String {
    format!("sluice-{}", ulid::Ulid::new())
}

/// How often and how long the client tries a request again when the API or the network fails
/// in a way worth another try: about half a minute in all.
const RETRY_TIMES: usize = 5;
const RETRY_MIN: Duration = Duration::from_millis(250);
const RETRY_MAX: Duration = Duration::from_secs(8);
/// How long the client keeps asking to complete a multipart upload while the answers are worth
/// another try: S3 may take minutes to join the parts of a large file, and API Gateway answers
/// 504 after 30 s while the join goes on. Each try finds the file joined, or joins it.
pub const COMPLETE_PATIENCE: Duration = Duration::from_secs(15 * 60);
/// The longest pause between two of those tries.
const COMPLETE_RETRY_MAX: Duration = Duration::from_secs(15);

impl ClientError {
    /// Whether trying the same request again may succeed: the network failed, or the API answered
    /// 429 or 5xx (API Gateway's own 5xx, when a function was stopped, included). Pure.
    pub fn is_retryable(&self) -> bool {
        match self {
            ClientError::Api { status, .. } => *status == 429 || (500..600).contains(status),
            ClientError::Transport { .. } => true,
            _ => false,
        }
    }
}

/// A client of one sluice API.
#[derive(Debug, Clone)]
pub struct Client {
    base: String,
    http: reqwest::Client,
    /// For the presigned PUTs of uploads: no time limit on a whole request (a part of a large
    /// file takes what it takes over a slow link), no signing (the URL is signed).
    uploads: reqwest::Client,
    signer: Option<Sigv4>,
}

/// How many parts of a multipart upload are sent at once.
pub const UPLOAD_CONCURRENCY: usize = 4;
/// Tries of one part (or of a single PUT) before the upload fails.
const PART_TRIES: usize = 4;
/// The size of the reads that stream a file to S3.
const UPLOAD_CHUNK: usize = 256 * 1024;

impl Client {
    /// `base_url` is the API's root, e.g. `http://127.0.0.1:8080` or the deployed API's URL.
    pub fn new(base_url: &str) -> Result<Self, ClientError> {
        let base = base_url.trim_end_matches('/').to_owned();
        if !(base.starts_with("http://") || base.starts_with("https://")) {
            return Err(ClientError::InvalidUrl(base_url.to_owned()));
        }
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            // A long-poll takes up to MAX_WAIT; leave room for the network.
            .timeout(MAX_WAIT + Duration::from_secs(20))
            .build()
            .map_err(|e| ClientError::Transport {
                url: base.clone(),
                source: e,
            })?;
        let uploads = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .read_timeout(Duration::from_secs(120))
            .build()
            .map_err(|e| ClientError::Transport {
                url: base.clone(),
                source: e,
            })?;
        Ok(Client {
            base,
            http,
            uploads,
            signer: None,
        })
    }

    /// Signs every request with SigV4 (for an API deployed with IAM authorization).
    pub fn with_sigv4(mut self, signer: Sigv4) -> Self {
        self.signer = Some(signer);
        self
    }

    /// Submits a job with `input` (any JSON). A `202` (new job) and a `200` (the job an
    /// idempotency key already names) both return the job. An input over
    /// [`crate::api::OFFLOAD_ABOVE`] bytes is uploaded first and submitted as the job's file,
    /// which the handler reads as its input.
    pub async fn submit(
        &self,
        input: &RawValue,
        opts: &SubmitOptions,
    ) -> Result<JobView, ClientError> {
        if input.get().len() > crate::api::OFFLOAD_ABOVE {
            return self.submit_offloaded(input, opts).await;
        }
        let mut body = format!("{{\"input\":{}", input.get());
        if let Some(d) = opts.deadline_seconds {
            body.push_str(&format!(",\"deadline_seconds\":{d}"));
        }
        if let Some(n) = opts.max_attempts {
            body.push_str(&format!(",\"max_attempts\":{n}"));
        }
        if let Some(s) = opts.timeout_seconds {
            body.push_str(&format!(",\"timeout_seconds\":{s}"));
        }
        if opts.retry_on_timeout {
            body.push_str(",\"on_timeout\":\"retry\"");
        }
        body.push('}');
        // Every submit carries a key, the same on each retry: a try whose job was recorded but
        // whose answer was lost (a 5xx, a broken connection) is found, not made again.
        let key = opts
            .idempotency_key
            .clone()
            .unwrap_or_else(new_idempotency_key);
        let req = || {
            self.http
                .post(format!("{}/jobs", self.base))
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .header("Idempotency-Key", &key)
                .body(body.clone())
        };
        self.send_retrying(req).await
    }

    /// [`Client::submit`] of an input too large to send inline: uploaded as a JSON file, and the
    /// job submitted with it as its file and no input.
    async fn submit_offloaded(
        &self,
        input: &RawValue,
        opts: &SubmitOptions,
    ) -> Result<JobView, ClientError> {
        let path = std::env::temp_dir().join(format!("sluice-offload-{}.json", ulid::Ulid::new()));
        tokio::fs::write(&path, input.get())
            .await
            .map_err(|e| file_error(&path, e))?;
        // Declared by its SHA-256: the same input sent again under the same key is the same job.
        let sum = hex_sha256(input.get().as_bytes());
        let uploaded = self
            .upload_file_declared(&path, "application/json", Some(&sum), |_| {})
            .await;
        let _ = tokio::fs::remove_file(&path).await;
        self.submit_upload(&uploaded?.upload_id, None, opts).await
    }

    /// Submits a job whose handler gets the file at `path` (uploaded first, see
    /// [`Client::upload_file`]) and `input` as its JSON input (`null` when `None`).
    pub async fn submit_file(
        &self,
        path: &Path,
        content_type: &str,
        input: Option<&RawValue>,
        opts: &SubmitOptions,
        progress: impl Fn(u64) + Send + Sync + 'static,
    ) -> Result<JobView, ClientError> {
        // Under a key of the caller's, the file is declared by its SHA-256 (one more read of it),
        // so that the command run again is the same job.
        let sum = match &opts.idempotency_key {
            Some(_) => Some(file_sha256(path).await?),
            None => None,
        };
        let upload = self
            .upload_file_declared(path, content_type, sum.as_deref(), progress)
            .await?;
        self.submit_upload(&upload.upload_id, input, opts).await
    }

    /// Submits a job that reads the upload `upload_id` (finished) as its file.
    pub async fn submit_upload(
        &self,
        upload_id: &str,
        input: Option<&RawValue>,
        opts: &SubmitOptions,
    ) -> Result<JobView, ClientError> {
        let file = serde_json::json!({ "upload_id": upload_id });
        self.submit_with_file(file, input, opts).await
    }

    /// Submits a job that reads the object `name`, already in S3 in a bucket the deployment
    /// lists, as its file: a GET of it is presigned for [`REFERENCE_URL_LIFETIME`] with the
    /// caller's own credentials (the SDK's default chain, which the API checks the object with),
    /// then sent with the job ([`Client::submit_s3`]).
    pub async fn submit_object(
        &self,
        name: &S3Name,
        input: Option<&RawValue>,
        opts: &SubmitOptions,
    ) -> Result<JobView, ClientError> {
        let url = presign_get(name, REFERENCE_URL_LIFETIME).await?;
        self.submit_s3(name, &url, input, opts).await
    }

    /// Submits a job that reads the object `name` as its file, with `presigned_url`, a GET of
    /// it presigned with credentials that may read it.
    pub async fn submit_s3(
        &self,
        name: &S3Name,
        presigned_url: &str,
        input: Option<&RawValue>,
        opts: &SubmitOptions,
    ) -> Result<JobView, ClientError> {
        let file = serde_json::json!({ "s3": name.to_string(), "presigned_url": presigned_url });
        self.submit_with_file(file, input, opts).await
    }

    async fn submit_with_file(
        &self,
        file: serde_json::Value,
        input: Option<&RawValue>,
        opts: &SubmitOptions,
    ) -> Result<JobView, ClientError> {
        let mut body = serde_json::json!({ "input_file": file });
        if let Some(input) = input {
            body["input"] = serde_json::from_str(input.get())
                .map_err(|e| ClientError::Decode(e.to_string()))?;
        }
        let key = opts
            .idempotency_key
            .clone()
            .unwrap_or_else(new_idempotency_key);
        let body = with_options(body, opts).to_string();
        let req = || {
            self.http
                .post(format!("{}/jobs", self.base))
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .header("Idempotency-Key", &key)
                .body(body.clone())
        };
        self.send_retrying(req).await
    }

    /// `POST /uploads`: where to send a file of `size` bytes (and, when given, of this SHA-256
    /// in hex, which the API compares a keyed job's file by and S3 checks a single PUT against).
    pub async fn create_upload(
        &self,
        size: u64,
        content_type: &str,
        sha256: Option<&str>,
    ) -> Result<UploadView, ClientError> {
        let mut body = serde_json::json!({ "size": size, "content_type": content_type });
        if let Some(sum) = sha256 {
            body["sha256"] = sum.into();
        }
        let body = body.to_string();
        self.send_retrying(|| {
            self.http
                .post(format!("{}/uploads", self.base))
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(body.clone())
        })
        .await
    }

    /// `POST /uploads/{id}/complete` with the parts' ETags.
    pub async fn complete_upload(
        &self,
        upload_id: &str,
        parts: Vec<CompletedPartRef>,
    ) -> Result<UploadView, ClientError> {
        let body = serde_json::to_string(&CompleteRequest { parts })
            .map_err(|e| ClientError::Decode(e.to_string()))?;
        use backon::Retryable;
        let backoff = backon::ExponentialBuilder::default()
            .with_min_delay(RETRY_MIN)
            .with_max_delay(COMPLETE_RETRY_MAX)
            .without_max_times()
            .with_total_delay(Some(COMPLETE_PATIENCE))
            .with_jitter();
        let request = || {
            self.send(
                self.http
                    .post(format!("{}/uploads/{upload_id}/complete", self.base))
                    .header(reqwest::header::CONTENT_TYPE, "application/json")
                    .body(body.clone()),
            )
        };
        request
            .retry(backoff)
            .when(ClientError::is_retryable)
            .notify(|e, pause| {
                tracing::warn!(error = %e, ?pause, "the upload's completion did not answer; asking again")
            })
            .await
    }

    /// Uploads the file at `path`: asks for an upload, sends the file to its presigned URL (or
    /// its parts, [`UPLOAD_CONCURRENCY`] at a time, each streamed from disk), and completes a
    /// multipart upload. `progress` is told the bytes sent so far as they go.
    pub async fn upload_file(
        &self,
        path: &Path,
        content_type: &str,
        progress: impl Fn(u64) + Send + Sync + 'static,
    ) -> Result<UploadView, ClientError> {
        self.upload_file_declared(path, content_type, None, progress)
            .await
    }

    /// [`Client::upload_file`] of a file whose SHA-256 (hex) the caller knows.
    pub async fn upload_file_declared(
        &self,
        path: &Path,
        content_type: &str,
        sha256: Option<&str>,
        progress: impl Fn(u64) + Send + Sync + 'static,
    ) -> Result<UploadView, ClientError> {
        let size = tokio::fs::metadata(path)
            .await
            .map_err(|e| file_error(path, e))?
            .len();
        let upload = self.create_upload(size, content_type, sha256).await?;
        let parts = send_upload(&self.uploads, &upload, path, Arc::new(progress)).await?;
        if parts.is_empty() {
            return Ok(upload);
        }
        self.complete_upload(&upload.upload_id, parts).await
    }

    /// Sends the request made by `req`, again with backoff while the failure is retryable.
    async fn send_retrying<T: DeserializeOwned>(
        &self,
        req: impl Fn() -> reqwest::RequestBuilder,
    ) -> Result<T, ClientError> {
        use backon::Retryable;
        let backoff = backon::ExponentialBuilder::default()
            .with_min_delay(RETRY_MIN)
            .with_max_delay(RETRY_MAX)
            .with_max_times(RETRY_TIMES)
            .with_jitter();
        (|| self.send(req()))
            .retry(backoff)
            .when(ClientError::is_retryable)
            .notify(|e, pause| tracing::warn!(error = %e, ?pause, "request failed; trying again"))
            .await
    }

    /// Downloads a file a job produced (its view's `url`, a presigned GET) to `path`, streamed
    /// to disk; `progress` is told the bytes received so far. Returns the bytes written.
    pub async fn download(
        &self,
        url: &str,
        path: &Path,
        progress: impl Fn(u64),
    ) -> Result<u64, ClientError> {
        use tokio::io::AsyncWriteExt;
        // No SigV4 and no API timeout: the URL carries its own signature, and a large file
        // takes as long as it takes.
        let transport = |source| ClientError::Transport {
            url: url.split('?').next().unwrap_or(url).to_owned(),
            source,
        };
        let written_error = |source| ClientError::Write {
            path: path.display().to_string(),
            source,
        };
        let mut resp = self.uploads.get(url).send().await.map_err(transport)?;
        if !resp.status().is_success() {
            let status = resp.status().as_u16();
            let text = resp.text().await.unwrap_or_default();
            return Err(ClientError::Api {
                status,
                code: "download_failed".into(),
                message: format!(
                    "the download answered {status} (its URL may have expired: fetch the job again \
                     for a fresh one): {}",
                    text.chars().take(300).collect::<String>()
                ),
            });
        }
        let mut file = tokio::fs::File::create(path).await.map_err(written_error)?;
        let mut written = 0u64;
        while let Some(chunk) = resp.chunk().await.map_err(transport)? {
            file.write_all(&chunk).await.map_err(written_error)?;
            written += chunk.len() as u64;
            progress(written);
        }
        file.flush().await.map_err(written_error)?;
        Ok(written)
    }

    /// The job now, or once it finishes if that is within `wait` (at most 25 s).
    pub async fn status(&self, id: &str, wait: Duration) -> Result<JobView, ClientError> {
        let mut url = format!("{}/jobs/{}", self.base, id);
        let secs = wait.min(MAX_WAIT).as_secs();
        if secs > 0 {
            url.push_str(&format!("?wait={secs}"));
        }
        self.send_retrying(|| self.http.get(&url)).await
    }

    /// Waits until the job finishes, long-polling; `None` waits for as long as it takes.
    pub async fn wait(&self, id: &str, timeout: Option<Duration>) -> Result<JobView, ClientError> {
        let start = tokio::time::Instant::now();
        loop {
            let left = timeout.map(|t| t.saturating_sub(start.elapsed()));
            let poll = left.map_or(MAX_WAIT, |l| l.min(MAX_WAIT));
            let view = self.status(id, poll).await?;
            if view.status.is_terminal() {
                return Ok(view);
            }
            if let (Some(t), Some(l)) = (timeout, left) {
                if l <= poll {
                    return Err(ClientError::TimedOut(t));
                }
            }
        }
    }

    /// Cancels a job: at once when queued, at the worker's next heartbeat when running.
    pub async fn cancel(&self, id: &str) -> Result<JobView, ClientError> {
        self.send(self.http.delete(format!("{}/jobs/{}", self.base, id)))
            .await
    }

    /// The pipeline's state: running, or paused since when, by whom and why (operators only).
    pub async fn pipeline(&self) -> Result<PipelineView, ClientError> {
        self.send_retrying(|| self.http.get(format!("{}/pipeline", self.base)))
            .await
    }

    /// Pauses the pipeline (operators only): workers finish what they hold and take nothing
    /// new; jobs are still accepted and wait. Pausing a paused pipeline changes nothing
    /// (`changed` is `false`), so a retry is harmless.
    pub async fn pause(&self, reason: Option<&str>) -> Result<PipelineView, ClientError> {
        let body = serde_json::to_string(&PauseRequest {
            reason: reason.map(str::to_owned),
        })
        .map_err(|e| ClientError::Decode(e.to_string()))?;
        self.send_retrying(|| {
            self.http
                .post(format!("{}/pipeline/pause", self.base))
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(body.clone())
        })
        .await
    }

    /// Resumes the pipeline (operators only): workers take jobs again.
    pub async fn resume(&self) -> Result<PipelineView, ClientError> {
        self.send_retrying(|| self.http.post(format!("{}/pipeline/resume", self.base)))
            .await
    }

    async fn send<T: DeserializeOwned>(
        &self,
        req: reqwest::RequestBuilder,
    ) -> Result<T, ClientError> {
        let transport = |e| ClientError::Transport {
            url: self.base.clone(),
            source: e,
        };
        let mut req = req.build().map_err(transport)?;
        if let Some(signer) = &self.signer {
            signer.sign(&mut req).await?;
        }
        let resp = self.http.execute(req).await.map_err(transport)?;
        let status = resp.status().as_u16();
        let text = resp.text().await.map_err(|e| ClientError::Transport {
            url: self.base.clone(),
            source: e,
        })?;
        if (200..300).contains(&status) {
            return serde_json::from_str(&text).map_err(|e| ClientError::Decode(e.to_string()));
        }
        match serde_json::from_str::<ErrorBody>(&text) {
            Ok(body) => Err(ClientError::Api {
                status,
                code: body.error.code,
                message: body.error.message,
            }),
            Err(_) => Err(ClientError::Api {
                status,
                code: "unexpected_answer".into(),
                message: text.chars().take(200).collect(),
            }),
        }
    }
}

/// The submit options as fields of a request body.
fn with_options(mut body: serde_json::Value, opts: &SubmitOptions) -> serde_json::Value {
    if let Some(d) = opts.deadline_seconds {
        body["deadline_seconds"] = d.into();
    }
    if let Some(n) = opts.max_attempts {
        body["max_attempts"] = n.into();
    }
    if let Some(s) = opts.timeout_seconds {
        body["timeout_seconds"] = s.into();
    }
    if opts.retry_on_timeout {
        body["on_timeout"] = "retry".into();
    }
    body
}

/// The SHA-256 of `bytes`, in hex. Pure.
fn hex_sha256(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex(&sha2::Sha256::digest(bytes))
}

/// `bytes` in lowercase hex. Pure.
fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The SHA-256 (hex) of the file at `path`, read in chunks off the async threads.
async fn file_sha256(path: &Path) -> Result<String, ClientError> {
    let owned = path.to_owned();
    tokio::task::spawn_blocking(move || {
        use sha2::Digest;
        use std::io::Read;
        let mut file = std::fs::File::open(&owned)?;
        let mut hasher = sha2::Sha256::new();
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let n = file.read(&mut buf)?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
        }
        Ok(hex(&hasher.finalize()))
    })
    .await
    .map_err(|e| file_error(path, std::io::Error::other(e)))?
    .map_err(|e| file_error(path, e))
}

fn file_error(path: &Path, source: std::io::Error) -> ClientError {
    ClientError::File {
        path: path.display().to_string(),
        source,
    }
}

/// Sends the file at `path` where `upload` says: one PUT, or every part (a few at once); returns
/// the parts' numbers and ETags (none for one PUT). Each PUT streams its bytes from disk and is
/// tried again a few times when the network or S3 fails.
pub async fn send_upload(
    http: &reqwest::Client,
    upload: &UploadView,
    path: &Path,
    progress: Arc<dyn Fn(u64) + Send + Sync>,
) -> Result<Vec<CompletedPartRef>, ClientError> {
    let sent = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let headers: Vec<(String, String)> = upload
        .headers
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    if let Some(url) = &upload.url {
        put_range(
            http,
            url,
            &headers,
            path,
            (0, upload.size),
            &sent,
            &progress,
        )
        .await?;
        return Ok(Vec::new());
    }
    let part_size = upload.part_size.unwrap_or(upload.size.max(1));
    let gate = Arc::new(tokio::sync::Semaphore::new(UPLOAD_CONCURRENCY));
    let mut tasks = tokio::task::JoinSet::new();
    for part in &upload.parts {
        let offset = u64::from(part.number - 1) * part_size;
        let len = part_size.min(upload.size.saturating_sub(offset));
        let (http, url, headers, path) = (
            http.clone(),
            part.url.clone(),
            headers.clone(),
            path.to_owned(),
        );
        let (sent, progress, gate, number) =
            (sent.clone(), progress.clone(), gate.clone(), part.number);
        tasks.spawn(async move {
            let _turn = gate.acquire_owned().await.expect("the gate stays open");
            let etag = put_range(
                &http,
                &url,
                &headers,
                &path,
                (offset, len),
                &sent,
                &progress,
            )
            .await?;
            Ok::<_, ClientError>(CompletedPartRef { number, etag })
        });
    }
    let mut parts = Vec::with_capacity(upload.parts.len());
    while let Some(done) = tasks.join_next().await {
        let part = done.map_err(|e| ClientError::Upload {
            what: "a part".into(),
            reason: e.to_string(),
        })??;
        parts.push(part);
    }
    parts.sort_by_key(|p| p.number);
    Ok(parts)
}

/// PUTs `len` bytes of the file from `offset` to a presigned URL, streamed; returns the ETag.
async fn put_range(
    http: &reqwest::Client,
    url: &str,
    headers: &[(String, String)],
    path: &Path,
    (offset, len): (u64, u64),
    sent: &Arc<std::sync::atomic::AtomicU64>,
    progress: &Arc<dyn Fn(u64) + Send + Sync>,
) -> Result<String, ClientError> {
    use std::sync::atomic::Ordering;
    use tokio::io::{AsyncReadExt, AsyncSeekExt};
    let what = format!("bytes {offset}..{} of {}", offset + len, path.display());
    let mut last = String::new();
    for attempt in 0..PART_TRIES {
        if attempt > 0 {
            tokio::time::sleep(Duration::from_millis(500 << attempt)).await;
        }
        let mut file = tokio::fs::File::open(path)
            .await
            .map_err(|e| file_error(path, e))?;
        file.seek(std::io::SeekFrom::Start(offset))
            .await
            .map_err(|e| file_error(path, e))?;
        // Progress counts what this try sends; a failed try takes its count back.
        let counted = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let (sent2, counted2, progress2) = (sent.clone(), counted.clone(), progress.clone());
        let stream = tokio_util::io::ReaderStream::with_capacity(file.take(len), UPLOAD_CHUNK);
        let stream = inspect_chunks(stream, move |n| {
            counted2.fetch_add(n, Ordering::Relaxed);
            progress2(sent2.fetch_add(n, Ordering::Relaxed) + n);
        });
        let mut req = http
            .put(url)
            .header(reqwest::header::CONTENT_LENGTH, len)
            .body(reqwest::Body::wrap_stream(stream));
        for (k, v) in headers {
            if !k.eq_ignore_ascii_case("content-length") {
                req = req.header(k, v);
            }
        }
        let outcome = match req.send().await {
            Ok(resp) if resp.status().is_success() => {
                let etag = resp
                    .headers()
                    .get(reqwest::header::ETAG)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default()
                    .to_owned();
                return Ok(etag);
            }
            Ok(resp) => {
                let status = resp.status();
                let text: String = resp
                    .text()
                    .await
                    .unwrap_or_default()
                    .chars()
                    .take(300)
                    .collect();
                if status.is_client_error() && status.as_u16() != 408 && status.as_u16() != 429 {
                    return Err(ClientError::Upload {
                        what,
                        reason: format!("S3 answered {status}: {text}"),
                    });
                }
                format!("S3 answered {status}: {text}")
            }
            Err(e) => format!("{e}"),
        };
        sent.fetch_sub(counted.load(Ordering::Relaxed), Ordering::Relaxed);
        tracing::warn!(%what, error = %outcome, "upload failed; trying again");
        last = outcome;
    }
    Err(ClientError::Upload { what, reason: last })
}

/// The stream, with `f` told the size of each chunk as it passes.
fn inspect_chunks<S>(
    stream: S,
    f: impl Fn(u64) + Send + Sync + 'static,
) -> impl futures_util::Stream<Item = std::io::Result<bytes::Bytes>> + Send + 'static
where
    S: futures_util::Stream<Item = std::io::Result<bytes::Bytes>> + Send + 'static,
{
    use futures_util::StreamExt;
    stream.map(move |chunk| {
        if let Ok(c) = &chunk {
            f(c.len() as u64);
        }
        chunk
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_region_comes_from_an_api_gateway_url() {
        let cases = [
            (
                "https://abc123.execute-api.eu-west-1.amazonaws.com",
                Some("eu-west-1"),
            ),
            (
                "https://abc123.execute-api.us-east-1.amazonaws.com/prod/jobs",
                Some("us-east-1"),
            ),
            (
                "https://abc123.execute-api.cn-north-1.amazonaws.com.cn:443/",
                Some("cn-north-1"),
            ),
            ("https://api.example.com", None),
            ("http://127.0.0.1:8080", None),
            ("nonsense", None),
        ];
        for (url, want) in cases {
            assert_eq!(region_from_url(url), want, "{url}");
        }
    }

    #[tokio::test]
    async fn signed_requests_carry_a_sigv4_authorization() {
        let creds =
            aws_credential_types::Credentials::new("AKIDEXAMPLE", "secret", None, None, "test");
        let signer = Sigv4 {
            credentials: aws_credential_types::provider::SharedCredentialsProvider::new(creds),
            region: "eu-west-1".into(),
        };
        let http = reqwest::Client::new();
        let mut req = http
            .post("https://abc.execute-api.eu-west-1.amazonaws.com/jobs")
            .header("content-type", "application/json")
            .body("{\"input\":1}")
            .build()
            .unwrap();
        signer.sign(&mut req).await.unwrap();
        let auth = req.headers()["authorization"].to_str().unwrap();
        assert!(
            auth.starts_with("AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/"),
            "{auth}"
        );
        assert!(
            auth.contains("/eu-west-1/execute-api/aws4_request"),
            "{auth}"
        );
        assert!(
            auth.contains("SignedHeaders=content-type;host;x-amz-date"),
            "{auth}"
        );
        assert!(req.headers().contains_key("x-amz-date"));
    }
}
