//! The submit function: `POST /jobs`, `POST /uploads` and `POST /uploads/{id}/complete` behind
//! API Gateway (HTTP API, payload format 2.0).

use lambda_http::{run, service_fn, Error, Request};
use sluice::api::Api;
use sluice::config::ApiConfig;

#[tokio::main]
async fn main() -> Result<(), Error> {
    sluice::telemetry::init();
    let api = Api::from_config(ApiConfig::from_env()?).await;
    let api = &api;
    run(service_fn(move |req: Request| async move {
        Ok::<_, Error>(api.submit_routes(req).await)
    }))
    .await
}
