//! The AWS SDK configuration: the SDK's default chain, so region, credentials and endpoints
//! (`AWS_ENDPOINT_URL`, which points the local stack and the tests at the emulator) come from
//! the environment. There is no second code path for the emulator.

use aws_config::{BehaviorVersion, SdkConfig};

/// Loads the shared SDK configuration once; build every client from it.
pub async fn load() -> SdkConfig {
    aws_config::load_defaults(BehaviorVersion::latest()).await
}

pub use aws_smithy_types::error::display::DisplayErrorContext;
