//! The worker service on ECS: its task counts, and the scale-from-zero nudge.

use aws_sdk_ecs::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_ecs::Client;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

#[derive(Debug, thiserror::Error)]
pub enum EcsError {
    #[error("ecs service {service} not found in cluster {cluster}")]
    NotFound { cluster: String, service: String },
    #[error("ecs throttled the request")]
    Throttled(#[source] BoxError),
    #[error("ecs request failed")]
    Unavailable(#[source] BoxError),
}

fn classify<E, R>(err: SdkError<E, R>) -> EcsError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    R: std::fmt::Debug + Send + Sync + 'static,
{
    match err.code() {
        Some("ThrottlingException") => EcsError::Throttled(Box::new(err)),
        _ => EcsError::Unavailable(Box::new(err)),
    }
}

/// A service's task counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
pub struct TaskCounts {
    pub running: u32,
    pub pending: u32,
    pub desired: u32,
}

/// One ECS service. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Service {
    client: Client,
    cluster: String,
    service: String,
}

impl Service {
    pub fn new(client: Client, cluster: impl Into<String>, service: impl Into<String>) -> Self {
        Service {
            client,
            cluster: cluster.into(),
            service: service.into(),
        }
    }

    pub fn from_sdk(
        aws: &aws_config::SdkConfig,
        cluster: impl Into<String>,
        service: impl Into<String>,
    ) -> Self {
        Service::new(Client::new(aws), cluster, service)
    }

    pub fn name(&self) -> &str {
        &self.service
    }

    pub fn cluster(&self) -> &str {
        &self.cluster
    }

    pub async fn counts(&self) -> Result<TaskCounts, EcsError> {
        let out = self
            .client
            .describe_services()
            .cluster(&self.cluster)
            .services(&self.service)
            .send()
            .await
            .map_err(classify)?;
        let svc = out.services().first().ok_or_else(|| EcsError::NotFound {
            cluster: self.cluster.clone(),
            service: self.service.clone(),
        })?;
        let count = |n: i32| u32::try_from(n).unwrap_or(0);
        Ok(TaskCounts {
            running: count(svc.running_count()),
            pending: count(svc.pending_count()),
            desired: count(svc.desired_count()),
        })
    }

    pub async fn set_desired(&self, desired: u32) -> Result<(), EcsError> {
        self.client
            .update_service()
            .cluster(&self.cluster)
            .service(&self.service)
            .desired_count(i32::try_from(desired).unwrap_or(i32::MAX))
            .send()
            .await
            .map(|_| ())
            .map_err(classify)
    }
}
