//! The status function: `GET /jobs/{id}` (with `?wait=N`), `DELETE /jobs/{id}`,
//! `GET /webhook-secret` and `POST /webhook-secret/rotate` behind API Gateway (HTTP API, payload
//! format 2.0).

use lambda_http::{run, service_fn, Error, Request};
use sluice::api::Api;
use sluice::config::ApiConfig;

#[tokio::main]
async fn main() -> Result<(), Error> {
    sluice::telemetry::init();
    let api = Api::from_config(ApiConfig::from_env()?).await;
    let api = &api;
    run(service_fn(move |req: Request| async move {
        Ok::<_, Error>(api.status_routes(req).await)
    }))
    .await
}
