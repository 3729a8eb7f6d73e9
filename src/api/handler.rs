//! The request handlers behind `POST /jobs`, `GET /jobs/{id}`, `DELETE /jobs/{id}`,
//! `GET /webhook-secret` and `POST /webhook-secret/rotate`: the same code in Lambda and in the
//! local stack.

use std::sync::Arc;
use std::time::Duration;

use crate::aws::DisplayErrorContext;
use lambda_http::http::header::{CONTENT_TYPE, HOST, LOCATION, RETRY_AFTER};
use lambda_http::http::{HeaderValue, Method, StatusCode};
use lambda_http::request::RequestContext;
use lambda_http::{Body, Request, RequestExt, Response};
use serde::Serialize;

use super::budget::Budget;
use super::{
    caller, job_url, operator, parse_job_id, parse_wait, probe_refused, reference_refused,
    sha256_hex, upload_refused, validate_idempotency_key, validate_submit, validate_upload,
    validate_webhook, ApiError, CompleteRequest, InputFile, JobView, NotOperator, PartUrl,
    UploadView,
};
use crate::config::ApiConfig;
use crate::ecs::Service;
use crate::job::{JobId, JobRecord, Owner, Status};
use crate::nudge::{ScaleFromZero, NUDGE_INTERVAL};
use crate::outbox::{OutboxError, Secrets};
use crate::payload::{PayloadError, Payloads, UploadedPart};
use crate::pipeline::{check_reason, PauseRequest, Pipeline, PipelineView, State};
use crate::queue::{Envelope, JobQueue};
use crate::store::{Created, IdempotencyRecord, JobStore, StoreError};
use crate::time::Millis;
use crate::upload::{self, InputObject, UploadId, UploadRecord};

/// The time a submit keeps back, before the job's record is written, for writing it and reading
/// it back; and, before reading it back, for that read.
const RECORD_RESERVE: Duration = Duration::from_secs(4);
const READBACK_RESERVE: Duration = Duration::from_secs(1);

/// The request's budget: until its Lambda invocation's deadline (which the local stack sets to
/// the function's deployed timeout), or the deployed timeout from now when called directly.
fn budget_of(req: &Request, deployed: Duration) -> Budget {
    match req.lambda_context_ref().filter(|c| c.deadline > 0) {
        Some(ctx) => Budget::before(ctx.deadline()),
        None => Budget::of_timeout(deployed),
    }
}

/// What a long-poll keeps back from its function's time for its last look.
const LOOK_RESERVE: Duration = Duration::from_secs(2);

/// Runs `call` within what is left of `budget` beyond `keep`; a 503 when it does not finish in
/// time.
async fn within<T>(
    budget: &Budget,
    keep: Duration,
    call: impl std::future::Future<Output = T>,
) -> Result<T, ApiError> {
    budget.spend(keep, call).await.ok_or_else(out_of_time)
}

/// The answer of a request that ran out of its function's time (its cause, for the log).
fn out_of_time() -> ApiError {
    ApiError::Unavailable("AWS did not answer within the function's time".into())
}

/// The API's handlers over one store and queue. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Api {
    store: JobStore,
    queue: Option<JobQueue>,
    config: ApiConfig,
    scale_from_zero: Option<Arc<ScaleFromZero>>,
    payloads: Option<Payloads>,
    /// Checks jobs' objects in S3 through their presigned URLs: no redirects, a short timeout.
    references: reqwest::Client,
}

impl Api {
    pub fn new(store: JobStore, queue: Option<JobQueue>, config: ApiConfig) -> Self {
        Api {
            store: store.publishing(config.publishes),
            queue,
            config,
            scale_from_zero: None,
            payloads: None,
            references: crate::reference::http_client(),
        }
    }

    /// Takes uploads into `payloads`' bucket.
    pub fn with_payloads(mut self, payloads: Payloads) -> Self {
        self.payloads = Some(payloads);
        self
    }

    /// Raises the worker service from zero tasks when a job is accepted.
    pub fn with_scale_from_zero(mut self, nudge: ScaleFromZero) -> Self {
        self.scale_from_zero = Some(Arc::new(nudge));
        self
    }

    /// Builds the SDK clients from the default chain (region, credentials, `AWS_ENDPOINT_URL`).
    pub async fn from_config(config: ApiConfig) -> Self {
        let aws = crate::aws::load().await;
        let store = JobStore::from_sdk(&aws, &config.table_name).with_retention(config.retention);
        let queue = config
            .queue_url
            .as_ref()
            .map(|url| JobQueue::from_sdk(&aws, url));
        let nudge = config.workers.as_ref().map(|(cluster, service)| {
            ScaleFromZero::new(
                Service::from_sdk(&aws, cluster, service),
                store.clone(),
                NUDGE_INTERVAL,
            )
        });
        let payloads = config
            .uploads
            .bucket
            .as_ref()
            .map(|b| Payloads::from_sdk(&aws, b));
        let mut api = Api::new(store, queue, config);
        if let Some(p) = payloads {
            api = api.with_payloads(p);
        }
        match nudge {
            Some(n) => api.with_scale_from_zero(n),
            None => api,
        }
    }

    /// Routes a request to its handler: what the local stack serves. In AWS, API Gateway routes
    /// and each function calls its handler directly.
    pub async fn handle(&self, req: Request) -> Response<Body> {
        let path = req.uri().path().trim_end_matches('/').to_owned();
        let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
        match (req.method(), segments.as_slice()) {
            (&Method::POST, ["jobs"]) => self.submit(req).await,
            (&Method::POST, ["uploads"]) => self.create_upload(req).await,
            (&Method::POST, ["uploads", _, "complete"]) => self.complete_upload(req).await,
            (_, ["uploads"] | ["uploads", _, "complete"]) => respond_error(ApiError::bad_request(
                "method_not_allowed",
                format!("{} is not allowed here: use POST /uploads or POST /uploads/{{id}}/complete", req.method()),
            )),
            (&Method::GET | &Method::DELETE, ["jobs", _]) => self.job(req).await,
            (&Method::GET, ["webhook-secret"]) | (&Method::POST, ["webhook-secret", "rotate"]) => {
                self.webhook_secret(req).await
            }
            (_, ["webhook-secret"] | ["webhook-secret", "rotate"]) => respond_error(ApiError::bad_request(
                "method_not_allowed",
                format!("{} is not allowed here: use GET /webhook-secret or POST /webhook-secret/rotate", req.method()),
            )),
            (_, ["pipeline", ..]) => self.pipeline(req).await,
            (_, ["jobs"] | ["jobs", _]) => respond_error(ApiError::bad_request(
                "method_not_allowed",
                format!("{} is not allowed here: use POST /jobs, GET /jobs/{{id}} or DELETE /jobs/{{id}}", req.method()),
            )),
            _ => respond_error(ApiError::NoRoute {
                method: req.method().to_string(),
                path: path.chars().take(200).collect(),
            }),
        }
    }

    /// The submit function's routes: `POST /jobs`, `POST /uploads` and
    /// `POST /uploads/{id}/complete`.
    pub async fn submit_routes(&self, req: Request) -> Response<Body> {
        let path = req.uri().path().trim_end_matches('/').to_owned();
        let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
        match segments.as_slice() {
            [.., "uploads"] => self.create_upload(req).await,
            [.., "uploads", _, "complete"] => self.complete_upload(req).await,
            _ => self.submit(req).await,
        }
    }

    /// `POST /uploads`: records an upload and answers where to send the file.
    pub async fn create_upload(&self, req: Request) -> Response<Body> {
        match Box::pin(self.try_create_upload(&req)).await {
            Ok(view) => {
                let mut resp = json_response(StatusCode::CREATED, &view);
                if let Ok(v) = HeaderValue::from_str(&view.upload_id) {
                    resp.headers_mut().insert("x-sluice-upload-id", v);
                }
                resp
            }
            Err(e) => respond_error(e),
        }
    }

    /// `POST /uploads/{id}/complete`: joins a multipart upload's parts into the file.
    pub async fn complete_upload(&self, req: Request) -> Response<Body> {
        match Box::pin(self.try_complete_upload(&req)).await {
            Ok(view) => json_response(StatusCode::OK, &view),
            Err(e) => respond_error(e),
        }
    }

    fn payloads(&self) -> Result<&Payloads, ApiError> {
        self.payloads.as_ref().ok_or_else(|| {
            ApiError::bad_request(
                "uploads_disabled",
                "this deployment has no payload bucket, so it takes no files: send the input inline",
            )
        })
    }

    async fn try_create_upload(&self, req: &Request) -> Result<UploadView, ApiError> {
        let owner = caller(req.request_context_ref(), &self.config.owner_scope)
            .ok_or(ApiError::Unauthenticated)?;
        let payloads = self.payloads()?;
        let settings = &self.config.uploads;
        let content_type = req
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok());
        let asked = validate_upload(content_type, req.body().as_ref())?;
        let file_type = asked
            .content_type
            .unwrap_or_else(|| upload::DEFAULT_CONTENT_TYPE.to_owned());
        let plan = upload::plan(asked.size, settings.single_put_limit, settings.max_bytes)
            .map_err(|_| {
                ApiError::PayloadTooLarge(format!(
                    "an upload of {} bytes is over this deployment's limit of {} bytes",
                    asked.size,
                    settings.max_bytes.min(crate::payload::MAX_OBJECT_SIZE)
                ))
            })?;
        let budget = budget_of(req, crate::limits::SUBMIT_FUNCTION_TIMEOUT);
        let id = UploadId::generate();
        let key = upload::object_key(&owner, &id);
        let now = Millis::now();
        let expires_at = now.plus(settings.expiry);
        let mut view = UploadView {
            upload_id: id.to_string(),
            key: key.clone(),
            size: asked.size,
            content_type: file_type.clone(),
            expires_at: expires_at.to_rfc3339(),
            method: "PUT".into(),
            url: None,
            headers: Default::default(),
            part_size: None,
            parts: Vec::new(),
            complete_url: None,
            completed: false,
        };
        let multipart = match plan {
            None => {
                let put = match &asked.sha256 {
                    Some(sum) => {
                        payloads
                            .presigned_put_checked(
                                &key,
                                &file_type,
                                asked.size,
                                sum,
                                settings.expiry,
                            )
                            .await?
                    }
                    None => {
                        payloads
                            .presigned_put_sized(&key, &file_type, asked.size, settings.expiry)
                            .await?
                    }
                };
                view.url = Some(put.url);
                view.headers = put.headers.into_iter().collect();
                None
            }
            Some((part_size, parts)) => {
                let mp = within(
                    &budget,
                    RECORD_RESERVE,
                    payloads.create_multipart(&key, &file_type),
                )
                .await??;
                view.part_size = Some(part_size);
                for number in 1..=parts {
                    let part = payloads
                        .presigned_part(&key, &mp, number, settings.expiry)
                        .await?;
                    view.parts.push(PartUrl {
                        number,
                        url: part.url,
                    });
                }
                view.complete_url = Some(api_url(req, &format!("uploads/{id}/complete")));
                Some(mp.0)
            }
        };
        let record = UploadRecord {
            id: id.clone(),
            owner: owner.clone(),
            key,
            size: asked.size,
            content_type: file_type,
            created_at: now,
            expires_at,
            multipart,
            completed_at: None,
            sha256: asked.sha256,
        };
        within(&budget, Duration::ZERO, self.store.create_upload(&record)).await??;
        tracing::info!(upload_id = %id, owner = %owner, size = asked.size, parts = view.parts.len(), "upload created");
        Ok(view)
    }

    async fn try_complete_upload(&self, req: &Request) -> Result<UploadView, ApiError> {
        let owner = caller(req.request_context_ref(), &self.config.owner_scope)
            .ok_or(ApiError::Unauthenticated)?;
        let payloads = self.payloads()?;
        let id = upload_path_id(req)?;
        let body: CompleteRequest = serde_json::from_slice(req.body().as_ref()).map_err(|e| {
            ApiError::bad_request(
                "invalid_json",
                format!("the body is not a completion ({e}); expected {{\"parts\": [{{\"number\": 1, \"etag\": \"…\"}}, …]}}"),
            )
        })?;
        let budget = budget_of(req, crate::limits::SUBMIT_FUNCTION_TIMEOUT);
        let found = within(&budget, RECORD_RESERVE, self.store.upload(&id)).await??;
        upload::usable(found.as_ref(), &owner, Millis::now())
            .map_err(|why| upload_refused(&id, why))?;
        let up = found.expect("a usable upload is recorded");
        let Some(mp) = up.multipart.clone() else {
            return Err(ApiError::Conflict {
                code: "not_multipart",
                message: format!(
                    "upload {id} is one PUT, which needs no completion: PUT the file to its url and submit the job"
                ),
            });
        };
        if up.completed_at.is_none() {
            let parts: Vec<UploadedPart> = body
                .parts
                .iter()
                .map(|p| UploadedPart {
                    number: p.number,
                    etag: p.etag.clone(),
                })
                .collect();
            let joined = within(
                &budget,
                RECORD_RESERVE,
                payloads.complete_multipart(&up.key, &crate::payload::UploadId(mp), &parts),
            )
            .await?;
            match joined {
                Ok(()) => {}
                // Completed already by a request whose answer was lost: the object tells.
                Err(PayloadError::NotFound { .. }) => {}
                Err(PayloadError::Rejected(_)) => {
                    return Err(ApiError::bad_request(
                        "invalid_parts",
                        "S3 refused the parts: send every part's number and the ETag its PUT answered, \
                         every part but the last at least 5 MiB",
                    ))
                }
                Err(e) => return Err(e.into()),
            }
        }
        let object = within(&budget, RECORD_RESERVE, payloads.head(&up.key)).await??;
        let done = UploadRecord {
            completed_at: Some(Millis::now()),
            ..up.clone()
        };
        upload::matches_object(&done, object.as_ref()).map_err(|why| upload_refused(&id, why))?;
        within(
            &budget,
            Duration::ZERO,
            self.store.complete_upload(&id, Millis::now()),
        )
        .await??;
        tracing::info!(upload_id = %id, size = up.size, "upload completed");
        Ok(UploadView {
            upload_id: id.to_string(),
            key: up.key,
            size: up.size,
            content_type: up.content_type,
            expires_at: up.expires_at.to_rfc3339(),
            method: "PUT".into(),
            url: None,
            headers: Default::default(),
            part_size: None,
            parts: Vec::new(),
            complete_url: None,
            completed: true,
        })
    }

    /// The job's file, checked: the caller's own upload, not expired, its object there and of
    /// the announced size; `read` is the upload's record when already read.
    async fn input_object(
        &self,
        id: &UploadId,
        read: Option<Option<UploadRecord>>,
        owner: &Owner,
        budget: &Budget,
    ) -> Result<InputObject, ApiError> {
        let payloads = self.payloads()?;
        let found = match read {
            Some(found) => found,
            None => within(budget, RECORD_RESERVE, self.store.upload(id)).await??,
        };
        upload::usable(found.as_ref(), owner, Millis::now())
            .map_err(|why| upload_refused(id, why))?;
        let up = found.expect("a usable upload is recorded");
        let object = within(budget, RECORD_RESERVE, payloads.head(&up.key)).await??;
        upload::matches_object(&up, object.as_ref()).map_err(|why| upload_refused(id, why))?;
        Ok(InputObject {
            upload_id: id.to_string(),
            bucket: None,
            key: up.key,
            size: up.size,
            content_type: up.content_type,
            version_id: None,
        })
    }

    /// The job's object already in S3, checked: its bucket listed, its presigned URL one of S3's
    /// own for exactly that object, and one GET of its first byte through the URL answered, which
    /// S3 does only if the URL's credentials may read it. The URL itself is not kept.
    async fn referenced_object(
        &self,
        name: &crate::reference::S3Name,
        presigned_url: &str,
        owner: &Owner,
        budget: &Budget,
    ) -> Result<InputObject, ApiError> {
        let refs = &self.config.references;
        let checked =
            crate::reference::check(name, presigned_url, &refs.buckets, refs.emulator.as_ref())
                .map_err(reference_refused)?;
        let found = within(
            budget,
            RECORD_RESERVE,
            crate::reference::probe(&self.references, &checked.url),
        )
        .await?
        .map_err(|e| {
            tracing::info!(object = %name, owner = %owner, error = %DisplayErrorContext(&e), "object reference refused");
            probe_refused(name, e)
        })?;
        let max = self
            .config
            .uploads
            .max_bytes
            .min(crate::payload::MAX_OBJECT_SIZE);
        if found.size > max {
            return Err(ApiError::PayloadTooLarge(format!(
                "{name} is {} bytes, over this deployment's limit of {max} bytes for a job's file: \
                 name a smaller object, or ask the operator to raise {}",
                found.size,
                crate::env::MAX_UPLOAD_BYTES
            )));
        }
        Ok(InputObject {
            upload_id: String::new(),
            bucket: Some(name.bucket.clone()),
            key: name.key.clone(),
            size: found.size,
            content_type: found.content_type,
            version_id: found.version_id,
        })
    }

    /// `POST /jobs`.
    pub async fn submit(&self, req: Request) -> Response<Body> {
        // Boxed: the submit's state machine (each AWS call within its budget) is large, and a
        // caller may poll it on a thread's stack.
        match Box::pin(self.try_submit(&req)).await {
            Ok((status, view)) => {
                let mut resp = json_response(status, &view);
                if let Some(url) = view
                    .url
                    .as_deref()
                    .and_then(|u| HeaderValue::from_str(u).ok())
                {
                    resp.headers_mut().insert(LOCATION, url);
                }
                resp
            }
            Err(e) => respond_error(e),
        }
    }

    /// The status function's routes: `GET /jobs/{id}`, `DELETE /jobs/{id}` and the webhook
    /// secret's.
    pub async fn status_routes(&self, req: Request) -> Response<Body> {
        let path = req.uri().path().trim_end_matches('/').to_owned();
        let secret = path.split('/').any(|s| s == "webhook-secret");
        if path.split('/').any(|s| s == "pipeline") {
            self.pipeline(req).await
        } else if secret {
            self.webhook_secret(req).await
        } else {
            self.job(req).await
        }
    }

    /// The operators' routes: `GET /pipeline`, `POST /pipeline/pause` (an optional
    /// `{"reason": "…"}`) and `POST /pipeline/resume`. Only the deployment's operators
    /// (`SLUICE_OPERATORS`) may call them; anyone else gets `403 not_operator`.
    pub async fn pipeline(&self, req: Request) -> Response<Body> {
        match Box::pin(self.try_pipeline(&req)).await {
            Ok(view) => json_response(StatusCode::OK, &view),
            Err(e) => respond_error(e),
        }
    }

    async fn try_pipeline(&self, req: &Request) -> Result<PipelineView, ApiError> {
        let path = req.uri().path().trim_end_matches('/').to_owned();
        let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
        // The last segments: behind a stage the path may carry its name first.
        let to = match (req.method(), segments.as_slice()) {
            (&Method::GET, [.., "pipeline"]) => None,
            (&Method::POST, [.., "pipeline", "pause"]) => Some(State::Paused),
            (&Method::POST, [.., "pipeline", "resume"]) => Some(State::Running),
            (_, [.., "pipeline"] | [.., "pipeline", "pause" | "resume"]) => {
                return Err(ApiError::bad_request(
                    "method_not_allowed",
                    format!(
                        "{} is not allowed here: use GET /pipeline, POST /pipeline/pause or POST /pipeline/resume",
                        req.method()
                    ),
                ))
            }
            _ => {
                return Err(ApiError::NoRoute {
                    method: req.method().to_string(),
                    path: path.chars().take(200).collect(),
                })
            }
        };
        let by = operator(req.request_context_ref(), &self.config.operators).map_err(|why| {
            ApiError::NotOperator(match why {
                _ if self.config.operators.is_empty() => {
                    "this deployment names no operators, so nobody may pause or resume it: list \
                     IAM users or roles in SLUICE_OPERATORS (the CDK app's operators)"
                        .to_owned()
                }
                NotOperator::NoIamIdentity => {
                    "only the deployment's operators may pause or resume the pipeline, and they \
                     are IAM principals: sign the request with SigV4 as one"
                        .to_owned()
                }
                NotOperator::Other(arn) => format!(
                    "only the deployment's operators (SLUICE_OPERATORS) may pause or resume the \
                     pipeline; {arn} is not one"
                ),
            })
        })?;
        let reason = match to {
            Some(State::Paused) => pause_reason(req)?,
            _ => None,
        };
        let budget = budget_of(req, crate::limits::STATUS_FUNCTION_TIMEOUT);
        let pipeline = Pipeline::of(&self.store);
        let Some(to) = to else {
            let state = within(&budget, Duration::ZERO, pipeline.read(true)).await??;
            return Ok(state.view());
        };
        let (state, changed) = within(
            &budget,
            Duration::ZERO,
            pipeline.set(to, &by, reason.as_deref(), Millis::now()),
        )
        .await??;
        if changed {
            tracing::warn!(by = %by, state = %state.state, reason = state.reason.as_deref().unwrap_or(""), "pipeline {}", if to == State::Paused { "paused" } else { "resumed" });
        }
        Ok(PipelineView {
            changed: Some(changed),
            ..state.view()
        })
    }

    /// `GET /webhook-secret` (made on first use) and `POST /webhook-secret/rotate`: the
    /// caller's own signing secret for its webhooks.
    pub async fn webhook_secret(&self, req: Request) -> Response<Body> {
        match Box::pin(self.try_webhook_secret(&req)).await {
            Ok(view) => json_response(StatusCode::OK, &view),
            Err(e) => respond_error(e),
        }
    }

    async fn try_webhook_secret(&self, req: &Request) -> Result<SecretView, ApiError> {
        let owner = caller(req.request_context_ref(), &self.config.owner_scope)
            .ok_or(ApiError::Unauthenticated)?;
        let budget = budget_of(req, crate::limits::STATUS_FUNCTION_TIMEOUT);
        let secrets = Secrets {
            store: self.store.clone(),
        };
        let now = Millis::now();
        let rotate = req.method() == Method::POST;
        let keys = if rotate {
            within(&budget, Duration::ZERO, secrets.rotate(&owner, now)).await?
        } else {
            within(&budget, Duration::ZERO, secrets.get(&owner, now)).await?
        }
        .map_err(|e| match e {
            OutboxError::Store(e) => ApiError::from(e),
            other => ApiError::Internal(Box::new(other)),
        })?;
        if rotate {
            tracing::info!(owner = %owner, "webhook secret rotated");
        }
        Ok(SecretView {
            secret: keys.current.expose(),
            created_at: keys.stored.created_at.to_rfc3339(),
            rotated_at: keys.stored.rotated_at.map(Millis::to_rfc3339),
            previous_valid_until: keys
                .previous
                .and(keys.stored.previous.as_ref().map(|p| p.1.to_rfc3339())),
        })
    }

    /// `GET /jobs/{id}` and `DELETE /jobs/{id}`.
    pub async fn job(&self, req: Request) -> Response<Body> {
        let result = match *req.method() {
            Method::DELETE => Box::pin(self.try_cancel(&req)).await,
            _ => Box::pin(self.try_status(&req)).await,
        };
        match result {
            Ok((status, view)) => json_response(status, &view),
            Err(e) => respond_error(e),
        }
    }

    async fn try_submit(&self, req: &Request) -> Result<(StatusCode, JobView), ApiError> {
        let owner = caller(req.request_context_ref(), &self.config.owner_scope)
            .ok_or(ApiError::Unauthenticated)?;
        let content_type = req
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok());
        let valid = validate_submit(
            content_type,
            req.body().as_ref(),
            self.config.max_job_timeout,
        )?;
        let webhook = validate_webhook(valid.webhook.as_deref(), self.config.webhook_policy)?;
        let key =
            validate_idempotency_key(req.headers().get("idempotency-key").map(|v| v.as_bytes()))?;
        let queue = self
            .queue
            .as_ref()
            .ok_or_else(|| ApiError::Internal("this function has no queue configured".into()))?;
        let url_of = |id: &JobId| self_url(req, id);
        let budget = budget_of(req, crate::limits::SUBMIT_FUNCTION_TIMEOUT);

        // A keyed submit's upload is read first: the request is compared by the file the upload
        // declares (its SHA-256), so that the same file uploaded again is the same request.
        let upload = match (&key, &valid.input_file) {
            (Some(_), Some(InputFile::Upload(id))) => {
                Some(within(&budget, RECORD_RESERVE, self.store.upload(id)).await??)
            }
            _ => None,
        };
        // The key is scoped to the caller; the request is compared by its meaning, not its bytes.
        let idempotency = key.map(|k| {
            let canonical = serde_json::from_str::<serde_json::Value>(valid.input.get())
                .map(|v| v.to_string())
                .unwrap_or_default();
            let mut shape = format!(
                "{:?}|{:?}|{:?}|{:?}|{:?}",
                valid.deadline,
                valid.max_attempts,
                valid.timeout_seconds,
                valid.on_timeout,
                webhook
            );
            // A job without a file hashes as before, so keys in use keep their meaning.
            match (&valid.input_file, &upload) {
                (Some(_), Some(Some(up))) if up.owner == owner => {
                    shape.push_str(&format!("|{}", up.identity()))
                }
                (Some(f), _) => shape.push_str(&format!("|{f}")),
                (None, _) => {}
            }
            (
                sha256_hex(&[owner.as_str().as_bytes(), k.as_bytes()]),
                sha256_hex(&[canonical.as_bytes(), shape.as_bytes()]),
                k,
            )
        });
        let mut stale: Option<JobId> = None;
        if let Some((key_hash, request_hash, key)) = &idempotency {
            let found = within(
                &budget,
                RECORD_RESERVE,
                self.store.find_idempotent(key_hash),
            )
            .await??;
            if let Some(found) = found {
                match self
                    .replay(&found, request_hash, key, &owner, &url_of, &budget)
                    .await
                {
                    // The key's job is gone (its retention passed): the key went with it, and
                    // this submit makes a new job under it.
                    Err(ApiError::NotFound(_)) => stale = Some(found.job_id),
                    answer => return answer,
                }
            }
        }

        let input_object = match &valid.input_file {
            Some(InputFile::Upload(id)) => {
                Some(self.input_object(id, upload, &owner, &budget).await?)
            }
            Some(InputFile::S3 {
                name,
                presigned_url,
            }) => Some(
                self.referenced_object(name, presigned_url, &owner, &budget)
                    .await?,
            ),
            None => None,
        };
        let now = Millis::now();
        let id = JobId::generate();
        let message = Envelope::new(id.clone(), valid.input).encode()?;
        let mut record = JobRecord::queued(
            id.clone(),
            owner.clone(),
            now,
            valid.deadline.map(|d| now.plus(d)),
            valid.max_attempts.unwrap_or(self.config.max_attempts),
            valid.input.get().len() as u64,
        );
        record.timeout_seconds = valid.timeout_seconds;
        record.on_timeout = valid.on_timeout;
        record.webhook = webhook;
        record.input_object = input_object;
        // The message goes first and the record second. A submit that fails between the two
        // answers an error and leaves only a message without a record, which workers delete
        // once it is older than `job::ORPHAN_GRACE`; the other order could leave a QUEUED record
        // that no message will ever run.
        within(&budget, RECORD_RESERVE, queue.send(message)).await??;
        let create = self.store.create_with_key(
            &record,
            self.config.retention,
            idempotency
                .as_ref()
                .map(|(k, r, _)| (k.as_str(), r.as_str())),
            stale.as_ref(),
        );
        let created = match budget.spend(READBACK_RESERVE, create).await {
            Some(Ok(created)) => created,
            // Cut short or failed, the write may still have been applied: a record found is
            // this call's own, and its job will run, so it is accepted. Otherwise the caller is
            // told to retry (with the same Idempotency-Key, the retry finds the job if a late
            // write recorded it after all).
            failed => {
                let own = budget
                    .spend(Duration::ZERO, self.store.get(&id))
                    .await
                    .and_then(Result::ok)
                    .flatten()
                    .filter(|f| f.owner == record.owner && f.submitted_at == record.submitted_at);
                match (own, failed) {
                    (Some(_), _) => Created::Created,
                    (None, Some(Err(e))) => return Err(e.into()),
                    (None, _) => return Err(out_of_time()),
                }
            }
        };
        match created {
            Created::Created => {
                tracing::info!(job_id = %id, owner = %owner, "job submitted");
                if let Some(nudge) = &self.scale_from_zero {
                    // Within what is left: the job is accepted, and its answer must get out.
                    let _ = budget.spend(Duration::ZERO, nudge.after_accept()).await;
                }
                let mut view = JobView::of(&record);
                view.url = Some(url_of(&id));
                Ok((StatusCode::ACCEPTED, view))
            }
            // A concurrent submit with the same key won; the message just sent is an orphan.
            Created::Existing(found) => {
                let (_, request_hash, key) =
                    idempotency.as_ref().expect("only keyed submits meet a key");
                self.replay(&found, request_hash, key, &owner, &url_of, &budget)
                    .await
            }
        }
    }

    async fn replay(
        &self,
        found: &IdempotencyRecord,
        request_hash: &str,
        key: &str,
        owner: &Owner,
        url_of: &impl Fn(&JobId) -> String,
        budget: &Budget,
    ) -> Result<(StatusCode, JobView), ApiError> {
        let job = within(budget, Duration::ZERO, self.store.get(&found.job_id))
            .await??
            .filter(|j| j.owner == *owner)
            .ok_or_else(|| ApiError::NotFound(found.job_id.to_string()))?;
        if found.request_hash != request_hash {
            return Err(ApiError::Unprocessable(format!(
                "Idempotency-Key {key:?} was first used for job {} with a different request; \
                 use a new key for a new job",
                found.job_id
            )));
        }
        let mut view = JobView::of(&job);
        view.url = Some(url_of(&job.id));
        self.add_download_urls(&mut view, &job, budget).await?;
        Ok((StatusCode::OK, view))
    }

    /// Presigned download URLs for the files a job produced, valid for
    /// [`crate::output::DOWNLOAD_URL_LIFETIME`]. Signing is local: no call to S3.
    async fn add_download_urls(
        &self,
        view: &mut JobView,
        job: &JobRecord,
        budget: &Budget,
    ) -> Result<(), ApiError> {
        if job.result_object.is_none() && job.outputs.is_empty() {
            return Ok(());
        }
        let payloads = self.payloads()?;
        let lifetime = crate::output::DOWNLOAD_URL_LIFETIME;
        let expires_at = Millis::now().plus(lifetime).to_rfc3339();
        let files = job
            .result_object
            .iter()
            .zip(view.result_file.iter_mut())
            .chain(
                job.outputs
                    .iter()
                    .map(|f| &f.object)
                    .zip(view.outputs.iter_mut()),
            );
        for (object, file) in files {
            let get = within(
                budget,
                Duration::ZERO,
                payloads.presigned_get(&object.key, lifetime),
            )
            .await??;
            file.url = Some(get.url);
            file.expires_at = Some(expires_at.clone());
        }
        Ok(())
    }

    async fn try_status(&self, req: &Request) -> Result<(StatusCode, JobView), ApiError> {
        let owner = caller(req.request_context_ref(), &self.config.owner_scope)
            .ok_or(ApiError::Unauthenticated)?;
        let id = parse_job_id(&path_id(req))?;
        let wait = parse_wait(
            req.query_string_parameters_ref()
                .and_then(|q| q.first("wait")),
        )?;
        let budget = budget_of(req, crate::limits::STATUS_FUNCTION_TIMEOUT);
        // The wait ends early enough for one more look within the function's time.
        let until = (tokio::time::Instant::now() + wait)
            .min(budget.ends() - LOOK_RESERVE.min(budget.left()));
        // A job often finishes within milliseconds of a submit: look again soon, then less often.
        let mut pause = Duration::from_millis(20);
        loop {
            let job = within(&budget, Duration::ZERO, self.owned(&id, &owner)).await??;
            let job = budget
                .spend(Duration::ZERO, self.settled(job.clone()))
                .await
                .unwrap_or(job);
            let left = until.saturating_duration_since(tokio::time::Instant::now());
            if job.status.is_terminal() || left.is_zero() {
                let mut view = JobView::of(&job);
                view.url = Some(self_url(req, &id));
                self.add_download_urls(&mut view, &job, &budget).await?;
                return Ok((StatusCode::OK, view));
            }
            tokio::time::sleep(pause.min(left)).await;
            pause = (pause * 2).min(Duration::from_secs(1));
        }
    }

    async fn try_cancel(&self, req: &Request) -> Result<(StatusCode, JobView), ApiError> {
        let owner = caller(req.request_context_ref(), &self.config.owner_scope)
            .ok_or(ApiError::Unauthenticated)?;
        let id = parse_job_id(&path_id(req))?;
        let budget = budget_of(req, crate::limits::STATUS_FUNCTION_TIMEOUT);
        // A cancel can race a worker's claim or finish; the second try sees where it landed.
        for _ in 0..3 {
            let now = Millis::now();
            match within(
                &budget,
                Duration::ZERO,
                self.store.cancel(&id, &owner, now, self.config.retention),
            )
            .await?
            {
                Ok(job) => {
                    let status = if job.status == Status::Cancelled {
                        tracing::info!(job_id = %id, "job cancelled while queued");
                        StatusCode::OK
                    } else {
                        tracing::info!(job_id = %id, "cancel requested for a running job");
                        StatusCode::ACCEPTED
                    };
                    return Ok((status, JobView::of(&job)));
                }
                Err(StoreError::Conflict { current: Some(job) }) if job.owner == owner => {
                    let seen = job.effective_status(now);
                    if seen == Status::Expired && job.status == Status::Queued {
                        // Record the expiry; one that lost to a claim means the job runs:
                        // look again.
                        match within(
                            &budget,
                            Duration::ZERO,
                            self.store.expire(&id, now, self.config.retention),
                        )
                        .await?
                        {
                            Ok(_) => {}
                            Err(StoreError::Conflict { .. }) => continue,
                            Err(e) => return Err(e.into()),
                        }
                    }
                    if seen.is_terminal() {
                        return Err(ApiError::Conflict {
                            code: "already_finished",
                            message: format!(
                                "job {id} already ended {seen}; there is nothing to cancel"
                            ),
                        });
                    }
                }
                Err(StoreError::Conflict { .. }) => return Err(ApiError::NotFound(id.to_string())),
                Err(e) => return Err(e.into()),
            }
        }
        Err(ApiError::Unavailable(
            "the job kept changing while it was being cancelled".into(),
        ))
    }

    /// The job as the table has it, after recording the expiry of a job whose deadline passed
    /// before it started. The table decides, not this function's clock: a worker whose clock is
    /// behind may have claimed the job first (the job is then shown running), and once the
    /// expiry is written no worker can claim it. A failed write shows the job still queued.
    async fn settled(&self, job: JobRecord) -> JobRecord {
        let now = Millis::now();
        if job.status != Status::Queued || job.effective_status(now) != Status::Expired {
            return job;
        }
        match self.store.expire(&job.id, now, self.config.retention).await {
            Ok(expired) => expired,
            Err(StoreError::Conflict {
                current: Some(current),
            }) => *current,
            Err(e) => {
                tracing::warn!(job_id = %job.id, error = %DisplayErrorContext(&e), "could not record a job's expiry");
                job
            }
        }
    }

    /// The caller's job; another caller's job is indistinguishable from a missing one.
    async fn owned(&self, id: &JobId, owner: &Owner) -> Result<JobRecord, ApiError> {
        self.store
            .get(id)
            .await?
            .filter(|j| j.owner == *owner)
            .ok_or_else(|| ApiError::NotFound(id.to_string()))
    }
}

/// The answer of the webhook secret's routes. The secret is the caller's own: it verifies the
/// webhooks of the caller's jobs.
#[derive(Debug, Serialize)]
struct SecretView {
    /// `whsec_…`: what a Standard Webhooks library takes to verify.
    secret: String,
    created_at: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    rotated_at: Option<String>,
    /// After a rotation, until when webhooks also carry a signature by the secret before.
    #[serde(skip_serializing_if = "Option::is_none")]
    previous_valid_until: Option<String>,
}

/// The `{id}` of `/jobs/{id}`: API Gateway's path parameter, or the path's last segment.
fn path_id(req: &Request) -> String {
    if let Some(id) = req.path_parameters_ref().and_then(|p| p.first("id")) {
        return id.to_owned();
    }
    req.uri()
        .path()
        .trim_end_matches('/')
        .rsplit('/')
        .next()
        .unwrap_or_default()
        .to_owned()
}

/// The `{id}` of `/uploads/{id}/complete`.
fn upload_path_id(req: &Request) -> Result<UploadId, ApiError> {
    let raw = match req.path_parameters_ref().and_then(|p| p.first("id")) {
        Some(id) => id.to_owned(),
        None => {
            let path = req.uri().path().trim_end_matches('/');
            let mut segments = path.rsplit('/');
            segments.next();
            segments.next().unwrap_or_default().to_owned()
        }
    };
    raw.parse()
        .map_err(|e: String| ApiError::bad_request("invalid_upload_id", e))
}

/// A pause's reason from its optional body: none, or `{"reason": "…"}` as JSON.
fn pause_reason(req: &Request) -> Result<Option<String>, ApiError> {
    let body = req.body().as_ref();
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    let content_type = req
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok());
    if let Some(ct) = content_type {
        let essence = ct.split(';').next().unwrap_or("").trim();
        if !essence.eq_ignore_ascii_case("application/json") {
            return Err(ApiError::UnsupportedMediaType(format!(
                "a pause's body is JSON (Content-Type: application/json), not {ct}"
            )));
        }
    }
    let asked: PauseRequest = serde_json::from_slice(body).map_err(|e| {
        ApiError::bad_request(
            "invalid_json",
            format!("the body is not a pause ({e}); expected nothing, or {{\"reason\": \"…\"}}"),
        )
    })?;
    check_reason(asked.reason.as_deref()).map_err(|e| ApiError::bad_request("invalid_reason", e))
}

/// The URL of `path` (no leading slash) as seen from the caller's side of the gateway.
fn api_url(req: &Request, path: &str) -> String {
    let job = self_url(req, &JobId::generate());
    let base = job
        .rsplit_once("/jobs/")
        .map_or(job.as_str(), |(base, _)| base);
    format!("{base}/{path}")
}

/// The URL a caller fetches a job from, as seen from the caller's side of the gateway.
fn self_url(req: &Request, id: &JobId) -> String {
    let header = |name: &str| req.headers().get(name).and_then(|v| v.to_str().ok());
    let (domain, stage) = match req.request_context_ref() {
        Some(RequestContext::ApiGatewayV2(ctx)) => (ctx.domain_name.clone(), ctx.stage.clone()),
        _ => (None, None),
    };
    let host = domain
        .or_else(|| header(HOST.as_str()).map(str::to_owned))
        .unwrap_or_else(|| "localhost".into());
    let scheme = header("x-forwarded-proto").unwrap_or(
        if host.starts_with("127.") || host.starts_with("localhost") {
            "http"
        } else {
            "https"
        },
    );
    job_url(scheme, &host, stage.as_deref(), id)
}

fn json_response(status: StatusCode, body: &impl Serialize) -> Response<Body> {
    let text = serde_json::to_string(body).expect("API types always serialize");
    let mut resp = Response::new(Body::Text(text));
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    resp
}

/// The one place errors become answers. A 5xx is logged once with its whole cause chain; the
/// caller sees only the error's public message.
pub(crate) fn respond_error(e: ApiError) -> Response<Body> {
    let (status, code) = e.status_and_code();
    if status >= 500 {
        tracing::error!(code, error = %DisplayErrorContext(&e), "request failed");
    } else if status == 429 {
        tracing::warn!(code, error = %DisplayErrorContext(&e), "request throttled");
    }
    let mut resp = json_response(
        StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        &e.body(),
    );
    if matches!(status, 429 | 503) {
        resp.headers_mut()
            .insert(RETRY_AFTER, HeaderValue::from_static("1"));
    }
    resp
}
