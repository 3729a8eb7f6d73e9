//! The AWS SDK configuration: the SDK's default chain, so region, credentials and endpoints
//! (`AWS_ENDPOINT_URL`, which points the local stack and the tests at the emulator) come from
//! the environment. There is no second code path for the emulator.

use aws_config::{BehaviorVersion, SdkConfig};

/// How long one attempt of an AWS call may take (above SQS's 20 s long poll), and a whole call
/// with the SDK's retries: no call hangs a worker, a heartbeat or a function forever.
pub const ATTEMPT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);
pub const CALL_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(90);

/// Loads the shared SDK configuration once; build every client from it.
pub async fn load() -> SdkConfig {
    let timeouts = aws_config::timeout::TimeoutConfig::builder()
        .connect_timeout(std::time::Duration::from_millis(3100))
        .operation_attempt_timeout(ATTEMPT_TIMEOUT)
        .operation_timeout(CALL_TIMEOUT)
        .build();
    aws_config::defaults(BehaviorVersion::latest())
        .timeout_config(timeouts)
        .load()
        .await
}

pub use aws_smithy_types::error::display::DisplayErrorContext;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use aws_smithy_runtime_api::box_error::BoxError;
use aws_smithy_runtime_api::client::interceptors::context::BeforeTransmitInterceptorContextRef;
use aws_smithy_runtime_api::client::interceptors::Intercept;
use aws_smithy_runtime_api::client::orchestrator::Metadata;
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use aws_smithy_types::config_bag::ConfigBag;

/// Counts the requests an SDK client sends (every attempt, as AWS bills them), by service and
/// operation. Add it to a client's config with `.interceptor(counter.clone())`.
#[derive(Debug, Clone, Default)]
pub struct RequestCounter {
    counts: Arc<Mutex<BTreeMap<(String, String), u64>>>,
}

impl RequestCounter {
    /// Requests so far, keyed by (service, operation).
    pub fn snapshot(&self) -> BTreeMap<(String, String), u64> {
        self.counts
            .lock()
            .expect("the counter's lock is never poisoned")
            .clone()
    }

    /// Requests so far of one operation.
    pub fn count(&self, operation: &str) -> u64 {
        self.snapshot()
            .iter()
            .filter(|((_, op), _)| op == operation)
            .map(|(_, n)| n)
            .sum()
    }
}

impl Intercept for RequestCounter {
    fn name(&self) -> &'static str {
        "RequestCounter"
    }

    fn read_before_transmit(
        &self,
        _context: &BeforeTransmitInterceptorContextRef<'_>,
        _components: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        if let Some(m) = cfg.load::<Metadata>() {
            let key = (m.service().to_owned(), m.name().to_owned());
            *self
                .counts
                .lock()
                .expect("the counter's lock is never poisoned")
                .entry(key)
                .or_default() += 1;
        }
        Ok(())
    }
}
