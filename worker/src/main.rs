//! `sluice-worker`: runs the built-in handler on a sluice queue. `sluice-worker healthcheck`
//! answers the container health check.

use std::process::ExitCode;

use sluice_worker::{demo, handler_fn, health, run, shutdown_signal, WorkerConfig};

#[tokio::main]
async fn main() -> ExitCode {
    match std::env::args().nth(1).as_deref() {
        Some("healthcheck") => {
            return match health::check() {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("unhealthy: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Some(other) => {
            eprintln!("error: unknown argument {other:?}; run `sluice-worker` or `sluice-worker healthcheck`");
            return ExitCode::from(2);
        }
        None => {}
    }
    sluice::telemetry::init();
    let config = match WorkerConfig::from_env() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = match config.handler.as_str() {
        "demo" => run(handler_fn(demo::demo), config, shutdown_signal()).await,
        other => {
            eprintln!(
                "error: SLUICE_HANDLER={other:?} is not a handler this binary has; use \"demo\""
            );
            return ExitCode::FAILURE;
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
