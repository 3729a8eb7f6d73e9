//! The Rust client of the sluice HTTP API, behind the `sluice` command.

use std::time::Duration;

use serde_json::value::RawValue;

use crate::api::{ErrorBody, JobView, MAX_WAIT};

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
}

/// Options of a submit beyond the input.
#[derive(Debug, Clone, Default)]
pub struct SubmitOptions {
    pub deadline_seconds: Option<u64>,
    pub max_attempts: Option<u32>,
    pub idempotency_key: Option<String>,
}

/// A client of one sluice API.
#[derive(Debug, Clone)]
pub struct Client {
    base: String,
    http: reqwest::Client,
}

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
        Ok(Client { base, http })
    }

    /// Submits a job with `input` (any JSON). A `202` (new job) and a `200` (the job an
    /// idempotency key already names) both return the job.
    pub async fn submit(
        &self,
        input: &RawValue,
        opts: &SubmitOptions,
    ) -> Result<JobView, ClientError> {
        let mut body = format!("{{\"input\":{}", input.get());
        if let Some(d) = opts.deadline_seconds {
            body.push_str(&format!(",\"deadline_seconds\":{d}"));
        }
        if let Some(n) = opts.max_attempts {
            body.push_str(&format!(",\"max_attempts\":{n}"));
        }
        body.push('}');
        let mut req = self
            .http
            .post(format!("{}/jobs", self.base))
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body);
        if let Some(key) = &opts.idempotency_key {
            req = req.header("Idempotency-Key", key);
        }
        self.send(req).await
    }

    /// The job now, or once it finishes if that is within `wait` (at most 25 s).
    pub async fn status(&self, id: &str, wait: Duration) -> Result<JobView, ClientError> {
        let mut url = format!("{}/jobs/{}", self.base, id);
        let secs = wait.min(MAX_WAIT).as_secs();
        if secs > 0 {
            url.push_str(&format!("?wait={secs}"));
        }
        self.send(self.http.get(url)).await
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

    async fn send(&self, req: reqwest::RequestBuilder) -> Result<JobView, ClientError> {
        let resp = req.send().await.map_err(|e| ClientError::Transport {
            url: self.base.clone(),
            source: e,
        })?;
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
