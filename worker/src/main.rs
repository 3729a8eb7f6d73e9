//! `sluice-worker`: runs the built-in handler on a sluice queue. `sluice-worker healthcheck`
//! answers the container health check.

use std::process::ExitCode;

use sluice_worker::{
    demo, handler_fn, health, run, shutdown_signal, HttpHandler, Mode, ProcessHandler, WorkerConfig,
};

#[tokio::main]
async fn main() -> ExitCode {
    match std::env::args().nth(1).as_deref() {
        Some("healthcheck") => {
            return match health::check() {
                Ok(note) => {
                    if let Some(note) = note {
                        println!("healthy: {note}");
                    }
                    ExitCode::SUCCESS
                }
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
    // Orphans of the handler's programs come to the worker, which waits for them: no zombie
    // piles up, with an init in the container or without one.
    tokio::spawn(sluice_worker::reaper::run(
        std::time::Duration::from_millis(500),
    ));
    let result = match config.mode.clone() {
        Mode::Demo => run(handler_fn(demo::demo), config, shutdown_signal()).await,
        Mode::Process { command } => {
            let pool = ProcessHandler::new(command, &config);
            run(pool, config, shutdown_signal()).await
        }
        Mode::Http { url } => {
            let server = HttpHandler::new(&url, &config);
            run(server, config, shutdown_signal()).await
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
