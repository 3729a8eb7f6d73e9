//! The compute modes side by side: no-op jobs per second through one worker running the
//! in-process Rust handler, the child-process mode (the Python helper, one process per slot)
//! and the HTTP mode (a Python SageMaker-style server), at the same concurrency in the same run;
//! and each mode's own cost per job, measured on the handler alone, without AWS.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use aws_config::SdkConfig;
use serde_json::value::RawValue;
use serde_json::{json, Value};
use sluice::job::JobId;
use sluice_worker::{
    handler_fn, Handler, HttpHandler, JobContext, JobError, ProcessHandler, WorkerConfig,
};
use tokio_util::sync::CancellationToken;

use super::{worker_throughput_of, Table, WorkerRun};

/// Jobs run at once in every mode.
pub const MODE_CONCURRENCY: usize = 8;
/// Calls made straight to each handler, for its cost per job.
const DIRECT_CALLS: usize = 2_000;
/// Wall-time cap of one direct measurement.
const DIRECT_CAP: Duration = Duration::from_secs(30);

pub struct ModeRun {
    name: &'static str,
    pipeline: WorkerRun,
    /// One call at a time: microseconds per job.
    direct_us: f64,
    /// `MODE_CONCURRENCY` calls at once: jobs per second.
    direct_per_s: f64,
}

pub struct Modes {
    runs: Vec<ModeRun>,
}

/// A model server process, stopped when dropped.
struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn config(concurrency: usize) -> anyhow::Result<WorkerConfig> {
    let c = concurrency.to_string();
    let vars = [
        ("SLUICE_TABLE_NAME", "direct"),
        ("SLUICE_QUEUE_URL", "http://direct"),
        ("SLUICE_CONCURRENCY", c.as_str()),
        ("SLUICE_STARTUP_SECONDS", "30"),
    ];
    Ok(WorkerConfig::from_source(&vars[..])?)
}

/// Calls `handler` directly: `DIRECT_CALLS` one at a time, then as many spread over
/// `MODE_CONCURRENCY` tasks. Returns (µs per call, calls per second at concurrency).
async fn direct<H>(handler: H) -> anyhow::Result<(f64, f64)>
where
    H: Handler<Input = Box<RawValue>>,
{
    handler.ready().await.map_err(anyhow::Error::msg)?;
    let handler = Arc::new(handler);
    let ctx = || {
        JobContext::new(
            JobId::generate(),
            1,
            1,
            "bench".into(),
            CancellationToken::new(),
        )
    };
    let input = || RawValue::from_string("{}".into()).expect("{} is JSON");
    let start = Instant::now();
    let mut n = 0;
    while n < DIRECT_CALLS && start.elapsed() < DIRECT_CAP {
        handler
            .call(input(), ctx())
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        n += 1;
    }
    let sequential_us = start.elapsed().as_secs_f64() * 1e6 / n as f64;

    let start = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..MODE_CONCURRENCY {
        let h = handler.clone();
        tasks.spawn(async move {
            let mut done = 0usize;
            while done < DIRECT_CALLS / MODE_CONCURRENCY && start.elapsed() < DIRECT_CAP {
                h.call(input(), ctx())
                    .await
                    .map_err(|e| anyhow::anyhow!("{e}"))?;
                done += 1;
            }
            Ok::<_, anyhow::Error>(done)
        });
    }
    let mut total = 0;
    while let Some(r) = tasks.join_next().await {
        total += r??;
    }
    Ok((sequential_us, total as f64 / start.elapsed().as_secs_f64()))
}

fn noop() -> impl Handler<Input = Box<RawValue>> {
    handler_fn(|_: Box<RawValue>, _: JobContext| async {
        Ok::<_, JobError>(RawValue::from_string("null".into()).expect("null is JSON"))
    })
}

fn process(root: &Path, concurrency: usize) -> anyhow::Result<ProcessHandler> {
    let script = root.join("bench/noop_handler.py").display().to_string();
    Ok(ProcessHandler::new(
        vec!["python3".into(), script],
        &config(concurrency)?,
    ))
}

fn http_server(root: &Path) -> anyhow::Result<(Server, String)> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let child = Command::new("python3")
        .arg(root.join("tests/fixtures/model_server.py"))
        .arg(port.to_string())
        .stdin(Stdio::null())
        .spawn()?;
    Ok((Server(child), format!("http://127.0.0.1:{port}")))
}

pub async fn section(sdk: &SdkConfig, root: &Path) -> anyhow::Result<Modes> {
    let c = MODE_CONCURRENCY;
    let (_server, url) = http_server(root)?;
    let mut runs = Vec::new();

    let (direct_us, direct_per_s) = direct(noop()).await?;
    let pipeline = worker_throughput_of(sdk, c, noop(), "mode-rust").await?;
    runs.push(ModeRun {
        name: "in-process Rust handler",
        pipeline,
        direct_us,
        direct_per_s,
    });

    let (direct_us, direct_per_s) = direct(process(root, c)?).await?;
    let pipeline = worker_throughput_of(sdk, c, process(root, c)?, "mode-process").await?;
    runs.push(ModeRun {
        name: "child processes (Python helper)",
        pipeline,
        direct_us,
        direct_per_s,
    });

    let (direct_us, direct_per_s) = direct(HttpHandler::new(&url, &config(c)?)).await?;
    let pipeline =
        worker_throughput_of(sdk, c, HttpHandler::new(&url, &config(c)?), "mode-http").await?;
    runs.push(ModeRun {
        name: "HTTP model server (Python http.server)",
        pipeline,
        direct_us,
        direct_per_s,
    });
    Ok(Modes { runs })
}

impl Modes {
    /// Adds the section's rows to the table and returns its JSON.
    pub fn report(&self, t: &mut Table) -> Value {
        t.heading(format!(
            "2b. compute modes: no-op jobs through one worker at concurrency {MODE_CONCURRENCY}, \
             same run; then each handler called directly ({DIRECT_CALLS} calls, no AWS)"
        ));
        let base = self.runs.first().map(|r| r.pipeline.throughput.per_sec());
        let base_us = self.runs.first().map(|r| r.direct_us).unwrap_or(0.0);
        let mut out = Vec::new();
        for (i, r) in self.runs.iter().enumerate() {
            let rate = r.pipeline.throughput.per_sec();
            let ratio = base.map(|b| rate / b).unwrap_or(f64::NAN);
            let value = format!(
                "{rate:.1} jobs/s = {ratio:.3} x in-process{}",
                if r.pipeline.throughput.capped {
                    " (capped)"
                } else {
                    ""
                }
            );
            if i == 0 {
                t.row(format!("pipeline, {}", r.name), value);
            } else {
                t.target(
                    format!("pipeline, {}", r.name),
                    value,
                    ">= 0.9 x",
                    ratio >= 0.9,
                );
            }
            t.row(
                format!("  direct, {}", r.name),
                format!(
                    "{:.1} us per job one at a time (overhead {:+.1} us); {:.0} jobs/s at {MODE_CONCURRENCY} at once",
                    r.direct_us,
                    r.direct_us - base_us,
                    r.direct_per_s
                ),
            );
            out.push(json!({
                "mode": r.name,
                "pipeline": r.pipeline.throughput.to_json(),
                "ratio_to_in_process": ratio,
                "direct_us_per_job": r.direct_us,
                "direct_overhead_us_per_job": r.direct_us - base_us,
                "direct_jobs_per_second_concurrent": r.direct_per_s,
            }));
        }
        Value::Array(out)
    }
}
