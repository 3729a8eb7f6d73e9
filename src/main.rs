//! `sluice`: submit jobs, follow them, cancel them; and `sluice dev`, the local stack's API.

use std::io::{IsTerminal, Read};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::{Parser, Subcommand};
use serde_json::value::RawValue;
use sluice::api::JobView;
use sluice::client::{Client, SubmitOptions};
use sluice::job::Status;

/// Exit status when the command worked but the job ended other than SUCCEEDED.
const EXIT_JOB_NOT_SUCCEEDED: u8 = 3;

#[derive(Parser)]
#[command(name = "sluice", version, about = "Run asynchronous jobs on sluice", long_about = None)]
struct Cli {
    /// The API's base URL.
    #[arg(
        long,
        global = true,
        env = "SLUICE_URL",
        default_value = "http://127.0.0.1:8080"
    )]
    url: String,
    /// Print JSON for scripts instead of text for people.
    #[arg(long, global = true)]
    json: bool,
    /// Sign requests with AWS SigV4 (a deployed API with IAM authorization), with credentials
    /// from the AWS default chain.
    #[arg(long, global = true)]
    sigv4: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum DlqAction {
    /// List the messages with what each is and what to do.
    List {
        /// At most this many.
        #[arg(long, default_value_t = 100)]
        max: usize,
    },
    /// End FAILED, with the reason, every job whose message sits there and that runs nowhere
    /// (or send it back to the jobs queue when it never spent an attempt), and delete the
    /// messages with nothing left to act on (the backlog function does this every minute).
    Reconcile {
        /// The jobs queue's URL, where a job that never spent an attempt is sent back; without
        /// it, such a job ends FAILED too.
        #[arg(long, env = "SLUICE_QUEUE_URL")]
        queue_url: Option<String>,
    },
    /// Send jobs' messages back to the jobs queue: the jobs named, or all with --all. A job the
    /// reconciler ended FAILED is queued again first.
    Redrive {
        /// Job ids to redrive.
        ids: Vec<String>,
        /// Every job in the dead-letter queue.
        #[arg(long, conflicts_with = "ids")]
        all: bool,
        /// Also delete the messages with nothing to run (not a job, no record, already ended).
        #[arg(long)]
        drop_dead: bool,
        /// The jobs queue's URL.
        #[arg(long, env = "SLUICE_QUEUE_URL")]
        queue_url: String,
    },
}

#[derive(Subcommand)]
enum Command {
    /// Submit a job. The input is JSON: an argument, a file (--file), or stdin (`-` or a pipe).
    Submit {
        /// The job's input as JSON text, or `-` to read stdin.
        input: Option<String>,
        /// Read the input from this file.
        #[arg(long, short, conflicts_with = "input")]
        file: Option<PathBuf>,
        /// Upload this file (any size, any type) for the handler to read; the JSON input is then
        /// optional (`null` when not given). A progress bar shows on a terminal.
        #[arg(long, value_name = "PATH")]
        upload: Option<PathBuf>,
        /// Let the handler read this object already in S3 (`s3://bucket/key`, in a bucket the
        /// deployment lists) instead of an upload; the JSON input is then optional. A GET of it is
        /// presigned with your own AWS credentials, which the API checks may read it.
        #[arg(long, value_name = "S3_URI", conflicts_with = "upload", value_parser = parse_s3_name)]
        s3: Option<sluice::reference::S3Name>,
        /// The uploaded file's media type, told to the handler (a model server gets it as the
        /// body's Content-Type).
        #[arg(
            long,
            value_name = "TYPE",
            requires = "upload",
            default_value = "application/octet-stream"
        )]
        content_type: String,
        /// Expire the job if it has not started within this many seconds.
        #[arg(long, value_name = "SECONDS")]
        deadline: Option<u64>,
        /// Attempts before the job fails (default: the deployment's setting).
        #[arg(long)]
        max_attempts: Option<u32>,
        /// Stop an attempt that runs longer than this many seconds (default: the deployment's).
        #[arg(long, value_name = "SECONDS")]
        time_limit: Option<u64>,
        /// Retry an attempt that runs past its time limit instead of failing the job.
        #[arg(long)]
        retry_on_timeout: bool,
        /// Submitting again with the same key returns the same job instead of a new one
        /// (default: a fresh key for this submit, sent again with each of its retries).
        #[arg(long)]
        idempotency_key: Option<String>,
        /// Wait for the job to finish and print its result.
        #[arg(long)]
        wait: bool,
        /// With --wait: give up after this many seconds.
        #[arg(long, value_name = "SECONDS", requires = "wait")]
        timeout: Option<u64>,
    },
    /// Show a job.
    Status {
        id: String,
        /// Wait up to this many seconds (at most 25) for the job to finish first.
        #[arg(long, value_name = "SECONDS", default_value_t = 0)]
        wait: u64,
    },
    /// Wait for a job to finish and print it.
    Wait {
        id: String,
        /// Give up after this many seconds.
        #[arg(long, value_name = "SECONDS")]
        timeout: Option<u64>,
    },
    /// Cancel a job: at once when queued, at the worker's next heartbeat when running.
    Cancel { id: String },
    /// Download what a job produced: its result when it is a file (too large to show, or a
    /// model server's binary answer) and its output files, into a directory.
    Download {
        id: String,
        /// Where to write them (made if missing; default: a directory named after the job).
        #[arg(long)]
        to: Option<PathBuf>,
    },
    /// Pause the pipeline (operators only): workers finish the jobs they hold and take nothing
    /// new, the service is held at min_tasks, jobs are still accepted and wait (their deadlines
    /// still apply). Undo with `sluice resume`.
    Pause {
        /// Why, for whoever looks (`sluice report`, GET /pipeline, the dashboard's logs).
        #[arg(long, value_name = "TEXT")]
        reason: Option<String>,
    },
    /// Resume a paused pipeline (operators only): workers take the waiting jobs again.
    Resume,
    /// Show whether the pipeline runs or is paused, since when, by whom and why (operators only).
    Pipeline,
    /// Show the queue, the worker service, the pipeline (running or paused), what the scaling
    /// controller would do now, and what it decided on the samples of the last minutes, and why.
    Report {
        /// The jobs queue's URL.
        #[arg(long, env = "SLUICE_QUEUE_URL")]
        queue_url: String,
        /// The workers' ECS cluster.
        #[arg(long, env = "SLUICE_CLUSTER")]
        cluster: String,
        /// The workers' ECS service.
        #[arg(long, env = "SLUICE_SERVICE")]
        service: String,
        /// The jobs table, where the pipeline's state (running or paused) is read.
        #[arg(long, env = "SLUICE_TABLE_NAME")]
        table: Option<String>,
        /// The scaling policy (default: the one built in, scaling/policy.json).
        #[arg(long, value_name = "FILE")]
        policy: Option<PathBuf>,
        /// Explain the samples the backlog function published in the last this many minutes
        /// (0: none).
        #[arg(long, value_name = "MINUTES", default_value_t = 5)]
        minutes: u32,
    },
    /// What sits in the dead-letter queue, and why; redrive it; end stranded jobs.
    Dlq {
        /// The dead-letter queue's URL.
        #[arg(long, env = "SLUICE_DLQ_URL", global = true)]
        dlq_url: Option<String>,
        /// The jobs table.
        #[arg(long, env = "SLUICE_TABLE_NAME", global = true)]
        table: Option<String>,
        /// Days an ended job's record is kept (the deployment's SLUICE_RETENTION_DAYS).
        #[arg(
            long,
            env = "SLUICE_RETENTION_DAYS",
            default_value_t = 7,
            global = true
        )]
        retention_days: u32,
        #[command(subcommand)]
        action: DlqAction,
    },
    /// Replay a workload through sluice's scaling policy, the scalers it replaces and an
    /// oracle; print each one's queue waits, task-seconds and time to first task.
    Simulate {
        /// `steady`, `burst`, `diurnal`, `spike`, or `csv:FILE` with lines of
        /// `arrival_seconds,duration_seconds` (default: burst).
        #[arg(long)]
        workload: Option<String>,
        /// The scaling policy to try (default: the one built in, scaling/policy.json).
        #[arg(long, value_name = "FILE")]
        policy: Option<PathBuf>,
        /// Seconds from a task's request until it takes jobs (default: the policy's
        /// task_startup_seconds).
        #[arg(long, value_name = "SECONDS")]
        startup_delay: Option<f64>,
        /// Seed of the built-in workloads' generator.
        #[arg(long, default_value_t = sluice::scaling::sim::DEFAULT_SEED)]
        seed: u64,
        /// Also draw backlog and tasks over time into this SVG file.
        #[arg(long, value_name = "FILE", conflicts_with = "grid")]
        svg: Option<PathBuf>,
        /// Run a grid of workloads instead of one (`short` or `full`): bursts, spikes, diurnal
        /// load and CSV traces at caps 5 to 200 and jobs of 1 s to 10 min, one line per case
        /// and a summary against the oracle and the anchors. Exits 1 when a target is missed.
        #[arg(long, value_name = "SIZE", conflicts_with = "workload")]
        grid: Option<sluice::scaling::sim::grid::GridSize>,
        /// With --grid: the folder of CSV traces (default: scaling/traces/, built into this
        /// command).
        #[arg(long, value_name = "DIR", requires = "grid")]
        traces: Option<PathBuf>,
        /// Phases of each clocked scaler averaged (default 8; the short grid 2).
        #[arg(long)]
        phases: Option<u32>,
        /// With --grid: run it once per keep_idle_startups of 0 to 4 and print the trade-off
        /// between wait and cost instead of the cases. Exits 1 when no value meets every
        /// target.
        #[arg(long, requires = "grid")]
        frontier: bool,
        /// With --grid: seconds a capacity provider keeps an instance after its last task stops
        /// (GPU tasks, one an instance; ECS managed scaling waits about 900): also report
        /// instance-seconds.
        #[arg(long, value_name = "SECONDS", default_value_t = 0.0, requires = "grid")]
        instance_linger: f64,
    },
    /// Serve the API locally (the local stack): creates the table and queues if missing and
    /// runs a worker beside it.
    Dev {
        /// Address to listen on (loopback only).
        #[arg(long, env = "SLUICE_LISTEN_ADDR", default_value = "127.0.0.1:8080")]
        listen: std::net::SocketAddr,
        /// Prefix of the table's and queues' names.
        #[arg(long, default_value = "sluice-local")]
        prefix: String,
        /// The worker binary to run beside the API.
        #[arg(long)]
        worker: Option<PathBuf>,
        /// Run no worker (run `sluice-worker` yourself).
        #[arg(long, conflicts_with = "worker")]
        no_worker: bool,
    },
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli).await {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    if let Command::Dev {
        listen,
        prefix,
        worker,
        no_worker,
    } = cli.command
    {
        sluice::telemetry::init();
        dev::run(listen, &prefix, if no_worker { None } else { Some(worker) }).await?;
        return Ok(ExitCode::SUCCESS);
    }
    if let Command::Simulate {
        workload,
        policy,
        startup_delay,
        seed,
        svg,
        grid,
        traces,
        phases,
        frontier,
        instance_linger,
    } = &cli.command
    {
        if let Some(size) = grid {
            return simulate_grid(
                GridArgs {
                    size: *size,
                    policy: policy.as_deref(),
                    traces: traces.as_deref(),
                    startup_delay: *startup_delay,
                    seed: *seed,
                    phases: *phases,
                    frontier: *frontier,
                    instance_linger: *instance_linger,
                },
                cli.json,
            );
        }
        return simulate(
            workload.as_deref().unwrap_or("burst"),
            *phases,
            policy.as_deref(),
            *startup_delay,
            *seed,
            svg.as_deref(),
            cli.json,
        );
    }
    if let Command::Dlq {
        dlq_url,
        table,
        retention_days,
        action,
    } = &cli.command
    {
        let retention = Duration::from_secs(86_400) * (*retention_days).max(1);
        return dlq(
            dlq_url.as_deref(),
            table.as_deref(),
            retention,
            action,
            cli.json,
        )
        .await;
    }
    if let Command::Report {
        queue_url,
        cluster,
        service,
        table,
        policy,
        minutes,
    } = &cli.command
    {
        let policy = report::load_policy(policy.as_deref())?;
        let aws = sluice::aws::load().await;
        let pipeline = match table {
            None => None,
            Some(t) => Some(
                sluice::pipeline::Pipeline::of(&sluice::store::JobStore::from_sdk(&aws, t))
                    .read(true)
                    .await
                    .with_context(|| format!("cannot read the pipeline's state in {t}"))?,
            ),
        };
        let mut r =
            report::Report::read(&aws, queue_url, cluster, service, &policy, pipeline).await?;
        if *minutes > 0 {
            r.explain_recent(&aws, queue_url, service, &policy, *minutes)
                .await?;
        }
        if cli.json {
            println!("{}", serde_json::to_string_pretty(&r)?);
        } else {
            print!("{r}");
        }
        return Ok(ExitCode::SUCCESS);
    }
    let mut client = Client::new(&cli.url)?;
    if cli.sigv4 {
        client = client.with_sigv4(sluice::client::Sigv4::for_url(&cli.url).await?);
    }
    if matches!(
        cli.command,
        Command::Pause { .. } | Command::Resume | Command::Pipeline
    ) {
        let view = match &cli.command {
            Command::Pause { reason } => client.pause(reason.as_deref()).await?,
            Command::Resume => client.resume().await?,
            _ => client.pipeline().await?,
        };
        if cli.json {
            println!("{}", serde_json::to_string_pretty(&view)?);
        } else if view.changed == Some(false) {
            println!("pipeline already {view}");
        } else {
            println!("pipeline {view}");
        }
        return Ok(ExitCode::SUCCESS);
    }
    let (view, must_succeed) = match cli.command {
        Command::Submit {
            input,
            file,
            upload,
            s3,
            content_type,
            deadline,
            max_attempts,
            time_limit,
            retry_on_timeout,
            idempotency_key,
            wait,
            timeout,
        } => {
            let opts = SubmitOptions {
                deadline_seconds: deadline,
                max_attempts,
                timeout_seconds: time_limit,
                retry_on_timeout,
                idempotency_key,
            };
            let view = match (upload, s3) {
                (None, Some(name)) => {
                    let input = match (&input, &file) {
                        (None, None) => None,
                        _ => Some(read_input(input, file)?),
                    };
                    client.submit_object(&name, input.as_deref(), &opts).await?
                }
                (None, None) => client.submit(&read_input(input, file)?, &opts).await?,
                (Some(path), _) => {
                    let input = match (&input, &file) {
                        (None, None) => None,
                        _ => Some(read_input(input, file)?),
                    };
                    let bar = upload_bar(&path, cli.json)?;
                    let tick = bar.clone();
                    let view = client
                        .submit_file(&path, &content_type, input.as_deref(), &opts, move |n| {
                            tick.set_position(n)
                        })
                        .await;
                    bar.finish_and_clear();
                    view?
                }
            };
            if wait {
                if !cli.json {
                    eprintln!("submitted {}; waiting for it to finish", view.id);
                }
                let done = client
                    .wait(&view.id, timeout.map(Duration::from_secs))
                    .await?;
                (done, true)
            } else {
                (view, false)
            }
        }
        Command::Status { id, wait } => {
            (client.status(&id, Duration::from_secs(wait)).await?, false)
        }
        Command::Wait { id, timeout } => (
            client.wait(&id, timeout.map(Duration::from_secs)).await?,
            true,
        ),
        Command::Cancel { id } => (client.cancel(&id).await?, false),
        Command::Download { id, to } => {
            download(&client, &id, to, cli.json).await?;
            return Ok(ExitCode::SUCCESS);
        }
        Command::Dev { .. }
        | Command::Pause { .. }
        | Command::Resume
        | Command::Pipeline
        | Command::Report { .. }
        | Command::Simulate { .. }
        | Command::Dlq { .. } => {
            unreachable!("handled above")
        }
    };
    if cli.json {
        println!("{}", serde_json::to_string_pretty(&view)?);
    } else {
        print!("{}", describe(&view));
    }
    if must_succeed && view.status != Status::Succeeded {
        return Ok(ExitCode::from(EXIT_JOB_NOT_SUCCEEDED));
    }
    Ok(ExitCode::SUCCESS)
}

async fn dlq(
    dlq_url: Option<&str>,
    table: Option<&str>,
    retention: Duration,
    action: &DlqAction,
    json: bool,
) -> anyhow::Result<ExitCode> {
    use sluice::deadletter::{DeadLetters, Finding, Redriven};
    let dlq_url = dlq_url
        .context("no dead-letter queue: pass --dlq-url or set SLUICE_DLQ_URL (the stack's DeadLetterQueueUrl output)")?;
    let table = table.context("no jobs table: pass --table or set SLUICE_TABLE_NAME")?;
    let aws = sluice::aws::load().await;
    let dead = DeadLetters::new(
        sluice::queue::JobQueue::from_sdk(&aws, dlq_url),
        sluice::store::JobStore::from_sdk(&aws, table).with_retention(retention),
        retention,
    );
    let job_of = |f: &Finding| f.job_id().map(ToString::to_string);
    let kind = |f: &Finding| f.kind();
    let rows: Vec<serde_json::Value> = match action {
        DlqAction::List { max } => dead
            .list(*max)
            .await?
            .into_iter()
            .map(|(m, f)| serde_json::json!({"message_id": m.message_id, "deliveries": m.receive_count, "job_id": job_of(&f), "finding": kind(&f), "explanation": f.explain()}))
            .collect(),
        DlqAction::Reconcile { queue_url } => {
            let dead = match queue_url {
                Some(url) => dead.with_jobs(sluice::queue::JobQueue::from_sdk(&aws, url)),
                None => dead,
            };
            let done = dead.reconcile().await?;
            if !done.complete {
                eprintln!("the pass ran out of time before it saw every message; run it again to see the rest");
            }
            done.seen
                .into_iter()
                .map(|(m, f, deleted)| serde_json::json!({"message_id": m.message_id, "job_id": job_of(&f), "finding": kind(&f), "deleted": deleted, "explanation": f.explain()}))
                .collect()
        }
        DlqAction::Redrive {
            ids,
            all,
            drop_dead,
            queue_url,
        } => {
            if ids.is_empty() && !*all && !*drop_dead {
                bail!("name the jobs to redrive, or pass --all (and --drop-dead to delete what has nothing to run)");
            }
            let jobs = sluice::queue::JobQueue::from_sdk(&aws, queue_url);
            let chosen = |f: &Finding| *all || *drop_dead && job_of(f).is_none() || job_of(f).is_some_and(|id| ids.contains(&id));
            dead.redrive(&jobs, chosen, *drop_dead)
                .await?
                .into_iter()
                .map(|(f, r)| {
                    let done = match r {
                        Redriven::Requeued => "requeued",
                        Redriven::Revived => "queued again",
                        Redriven::Dropped => "deleted",
                        Redriven::Left => "left",
                    };
                    serde_json::json!({"job_id": job_of(&f), "finding": kind(&f), "done": done})
                })
                .collect()
        }
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
    } else if rows.is_empty() {
        println!("the dead-letter queue holds nothing to show");
    } else {
        for r in &rows {
            let job = r["job_id"].as_str().unwrap_or("-");
            let text = r["explanation"]
                .as_str()
                .or(r["done"].as_str())
                .unwrap_or("");
            println!(
                "{:<11} {job:<26}  {text}",
                r["finding"].as_str().unwrap_or("")
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// What `sluice simulate --grid` was asked for.
struct GridArgs<'a> {
    size: sluice::scaling::sim::grid::GridSize,
    policy: Option<&'a std::path::Path>,
    traces: Option<&'a std::path::Path>,
    startup_delay: Option<f64>,
    seed: u64,
    phases: Option<u32>,
    frontier: bool,
    instance_linger: f64,
}

fn simulate_grid(args: GridArgs<'_>, json: bool) -> anyhow::Result<ExitCode> {
    use sluice::scaling::sim::grid::{self, GridSize, Trace};
    let GridArgs {
        size,
        policy,
        traces,
        startup_delay,
        seed,
        phases,
        frontier,
        instance_linger,
    } = args;
    if !(0.0..=86_400.0).contains(&instance_linger) {
        bail!("--instance-linger must be between 0 and 86400 seconds, got {instance_linger}");
    }
    check_startup(startup_delay)?;
    let policy = report::load_policy(policy)?;
    let traces = match traces {
        None => shipped_traces(),
        Some(dir) => {
            let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
                .with_context(|| format!("cannot read the traces folder {}", dir.display()))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|x| x == "csv"))
                .collect();
            files.sort();
            if files.is_empty() {
                bail!("{} holds no .csv trace", dir.display());
            }
            files
                .into_iter()
                .map(|p| {
                    let csv = std::fs::read_to_string(&p)
                        .with_context(|| format!("cannot read {}", p.display()))?;
                    let name = p
                        .file_name()
                        .map(|n| n.to_string_lossy().into_owned())
                        .unwrap_or_default();
                    Ok(Trace { name, csv })
                })
                .collect::<anyhow::Result<Vec<_>>>()?
        }
    };
    let cases = grid::cases(size, &policy, &traces, seed).map_err(anyhow::Error::msg)?;
    let phases = phases.unwrap_or(match size {
        GridSize::Short => 2,
        GridSize::Full => sluice::scaling::SimOptions::DEFAULT_PHASES,
    });
    let startup = startup_delay.unwrap_or(policy.task_startup_seconds);
    if frontier {
        let f = grid::frontier(
            &cases,
            startup,
            phases.max(1),
            &grid::FRONTIER_KEEP_IDLE_STARTUPS,
        );
        if json {
            println!("{}", f.to_json());
        } else {
            print!("{f}");
        }
        return Ok(if f.any_meets_all() {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        });
    }
    let report = grid::run(&cases, startup, phases.max(1), instance_linger);
    if json {
        println!("{}", report.to_json());
    } else {
        print!("{report}");
    }
    Ok(if report.all_targets_met() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// The traces in `scaling/traces/`, built into the command (not into the library the Lambdas
/// and the worker link).
fn shipped_traces() -> Vec<sluice::scaling::sim::grid::Trace> {
    [
        (
            "api-bursty.csv",
            include_str!("../scaling/traces/api-bursty.csv"),
        ),
        (
            "batch-night.csv",
            include_str!("../scaling/traces/batch-night.csv"),
        ),
        (
            "gpu-long.csv",
            include_str!("../scaling/traces/gpu-long.csv"),
        ),
    ]
    .into_iter()
    .map(|(name, csv)| sluice::scaling::sim::grid::Trace {
        name: name.into(),
        csv: csv.into(),
    })
    .collect()
}

fn check_startup(startup_delay: Option<f64>) -> anyhow::Result<()> {
    match startup_delay {
        Some(s) if !(s.is_finite() && s > 0.0 && s <= 86_400.0) => {
            bail!("--startup-delay must be a number of seconds above 0 and at most 86400, got {s}")
        }
        _ => Ok(()),
    }
}

fn simulate(
    workload: &str,
    phases: Option<u32>,
    policy: Option<&std::path::Path>,
    startup_delay: Option<f64>,
    seed: u64,
    svg: Option<&std::path::Path>,
    json: bool,
) -> anyhow::Result<ExitCode> {
    use sluice::scaling::sim::{simulate, ScalerKind, SimOptions, Workload};
    check_startup(startup_delay)?;
    let policy = report::load_policy(policy)?;
    let work = match workload.strip_prefix("csv:") {
        Some(path) => {
            let text =
                std::fs::read_to_string(path).with_context(|| format!("cannot read {path}"))?;
            Workload::from_csv(&text).with_context(|| format!("{path} is not a workload"))?
        }
        None => Workload::builtin(workload, seed)?,
    };
    let mut opts = SimOptions::new(policy);
    if let Some(s) = startup_delay {
        opts.startup_delay_seconds = s;
    }
    opts.record_series = svg.is_some();
    if let Some(p) = phases {
        opts.phases = p.max(1);
    }
    let report = simulate(&work, &ScalerKind::ALL, &opts);
    if let Some(path) = svg {
        std::fs::write(path, report.to_svg())
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    if json {
        println!("{}", report.to_json());
    } else {
        print!("{report}");
        if let Some(path) = svg {
            println!("backlog and tasks over time: {}", path.display());
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The progress bar of an upload: drawn on a terminal (stderr) only, never with --json.
fn upload_bar(path: &std::path::Path, json: bool) -> anyhow::Result<indicatif::ProgressBar> {
    let size = std::fs::metadata(path)
        .with_context(|| format!("cannot read {}", path.display()))?
        .len();
    if json || !std::io::stderr().is_terminal() {
        return Ok(indicatif::ProgressBar::hidden());
    }
    let bar = indicatif::ProgressBar::new(size);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "uploading {msg} {bar:30} {binary_bytes}/{binary_total_bytes} {binary_bytes_per_sec} eta {eta}",
        )
        .expect("the template is valid"),
    );
    bar.set_message(
        path.file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default(),
    );
    Ok(bar)
}

/// `--s3`: an object's name, `s3://bucket/key`.
fn parse_s3_name(text: &str) -> Result<sluice::reference::S3Name, String> {
    text.parse()
}

fn read_input(arg: Option<String>, file: Option<PathBuf>) -> anyhow::Result<Box<RawValue>> {
    let (text, source) = match (arg, file) {
        (_, Some(path)) => (
            std::fs::read_to_string(&path)
                .with_context(|| format!("cannot read {}", path.display()))?,
            path.display().to_string(),
        ),
        (Some(a), None) if a != "-" => (a, "the input argument".to_owned()),
        (arg, None) => {
            if arg.is_none() && std::io::stdin().is_terminal() {
                bail!("no input: give it as an argument ('{{\"text\": \"hi\"}}'), with --file FILE, or on stdin");
            }
            let mut s = String::new();
            std::io::stdin()
                .read_to_string(&mut s)
                .context("cannot read stdin")?;
            (s, "stdin".to_owned())
        }
    };
    serde_json::from_str::<Box<RawValue>>(text.trim()).with_context(|| {
        format!("{source} is not valid JSON (a string input needs quotes: '\"some text\"')")
    })
}

/// `sluice download`: the job's result file and output files, each streamed to disk.
async fn download(
    client: &Client,
    id: &str,
    to: Option<PathBuf>,
    json: bool,
) -> anyhow::Result<()> {
    let view = client.status(id, Duration::ZERO).await?;
    if view.status != Status::Succeeded {
        bail!(
            "job {id} is {}: only a job that succeeded has files to download",
            view.status
        );
    }
    let mut files: Vec<(String, &sluice::api::FileView)> = Vec::new();
    if let Some(r) = &view.result_file {
        let ext = if r.content_type.starts_with(sluice::output::JSON) {
            Some("json")
        } else {
            mime_guess::get_mime_extensions_str(&r.content_type).and_then(|e| e.first().copied())
        };
        files.push((ext.map_or("result".into(), |e| format!("result.{e}")), r));
    }
    for f in &view.outputs {
        let name = f.name.clone().unwrap_or_default();
        // The names come from the API: checked again, so none can write outside the directory.
        sluice::output::valid_name(&name).map_err(|e| {
            anyhow::anyhow!("the job names an output file that cannot be written: {e}")
        })?;
        files.push((name, f));
    }
    if files.is_empty() {
        bail!("job {id} produced no files: its result is in `sluice status {id}`");
    }
    let dir = to.unwrap_or_else(|| PathBuf::from(id));
    let mut written = Vec::new();
    for (name, file) in files {
        let path = dir.join(&name);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("cannot make {}", parent.display()))?;
        }
        let url = file
            .url
            .as_deref()
            .with_context(|| format!("the job's view has no download URL for {name}"))?;
        let bar = if json || !std::io::stderr().is_terminal() {
            indicatif::ProgressBar::hidden()
        } else {
            let bar = indicatif::ProgressBar::new(file.size);
            bar.set_style(
                indicatif::ProgressStyle::with_template(
                    "downloading {msg} {bar:30} {binary_bytes}/{binary_total_bytes} {binary_bytes_per_sec} eta {eta}",
                )
                .expect("the template is valid"),
            );
            bar.set_message(name.clone());
            bar
        };
        let size = client.download(url, &path, |n| bar.set_position(n)).await;
        bar.finish_and_clear();
        let size = size?;
        if size != file.size {
            bail!(
                "{} is {size} bytes, but the job says {}: download it again",
                path.display(),
                file.size
            );
        }
        if !json {
            println!("{}  {}", path.display(), indicatif::HumanBytes(size));
        }
        written.push(serde_json::json!({
            "path": path.display().to_string(),
            "size": size,
            "content_type": file.content_type,
        }));
    }
    if json {
        println!("{}", serde_json::to_string_pretty(&written)?);
    }
    Ok(())
}

/// A job for people.
fn describe(v: &JobView) -> String {
    let mut out = format!("job       {}\nstatus    {}\n", v.id, v.status);
    if v.cancel_requested {
        out.push_str("          cancel requested; the worker stops it at its next heartbeat\n");
    }
    out.push_str(&format!("attempt   {} of {}\n", v.attempt, v.max_attempts));
    if let Some(p) = &v.progress {
        out.push_str(&format!("progress  {}\n", describe_progress(p)));
    }
    if let Some(s) = v.timeout_seconds {
        let then = match v.on_timeout {
            Some(sluice::job::OnTimeout::Retry) => "retried",
            _ => "failed",
        };
        out.push_str(&format!("limit     {s} s per attempt, then {then}\n"));
    }
    out.push_str(&format!("submitted {}\n", v.submitted_at));
    for (label, value) in [
        ("started", &v.started_at),
        ("finished", &v.finished_at),
        ("deadline", &v.deadline),
    ] {
        if let Some(t) = value {
            out.push_str(&format!("{label:<9} {t}\n"));
        }
    }
    if let Some(url) = &v.url {
        out.push_str(&format!("url       {url}\n"));
    }
    if let Some(e) = &v.error {
        out.push_str(&format!("error     {e}\n"));
    }
    if let Some(r) = &v.result {
        let pretty = serde_json::to_string_pretty(r).unwrap_or_default();
        out.push_str(&format!(
            "result    {}\n",
            pretty.replace('\n', "\n          ")
        ));
    }
    if let Some(f) = &v.result_file {
        out.push_str(&format!(
            "result    a file of {} ({}): sluice download {}\n",
            indicatif::HumanBytes(f.size),
            f.content_type,
            v.id
        ));
    }
    for (i, f) in v.outputs.iter().enumerate() {
        out.push_str(&format!(
            "{:<9} {}  {} ({})\n",
            if i == 0 { "outputs" } else { "" },
            f.name.as_deref().unwrap_or("?"),
            indicatif::HumanBytes(f.size),
            f.content_type
        ));
    }
    if !v.outputs.is_empty() && v.result_file.is_none() {
        out.push_str(&format!(
            "          sluice download {} fetches them\n",
            v.id
        ));
    }
    out
}

/// `42% scoring batch 3`, `42%` or `scoring batch 3`.
fn describe_progress(p: &sluice::job::Progress) -> String {
    let percent = p.fraction.map(|f| format!("{:.0}%", f * 100.0));
    [percent, p.message.clone()]
        .into_iter()
        .flatten()
        .collect::<Vec<_>>()
        .join(" ")
}

mod report {
    use std::fmt;
    use std::path::Path;

    use anyhow::Context;
    use serde::Serialize;
    use sluice::backlog::controller;
    use sluice::backlog::sample_of;
    use sluice::cloudwatch::{Dimensions, Publisher};
    use sluice::ecs::{Service, TaskCounts};
    use sluice::pipeline::{PipelineState, PipelineView};
    use sluice::queue::{Depth, JobQueue};
    use sluice::scaling::{replay_with_pauses, tasks_for_backlog, Memory, Policy};
    use sluice::time::Millis;

    pub fn load_policy(path: Option<&Path>) -> anyhow::Result<Policy> {
        match path {
            None => Ok(Policy::builtin()?),
            Some(p) => {
                let text = std::fs::read_to_string(p)
                    .with_context(|| format!("cannot read {}", p.display()))?;
                Policy::from_json(&text)
                    .with_context(|| format!("{} is not a valid scaling policy", p.display()))
            }
        }
    }

    /// The state of the queue and the service, and the policy's verdict.
    #[derive(Debug, Serialize)]
    pub struct Report {
        /// The pipeline's state, when the jobs table was given: while paused, the controller
        /// holds the service at min_tasks.
        #[serde(skip_serializing_if = "Option::is_none")]
        pub pipeline: Option<PipelineView>,
        pub queue: Depth,
        pub service: TaskCounts,
        pub backlog_per_task: f64,
        pub target_backlog_per_task: f64,
        /// Tasks the backlog needs at the target.
        pub tasks_for_backlog: u32,
        /// The capacity the backlog function computes for this sample.
        pub needed_tasks: u32,
        /// The fewest tasks the controller may leave now.
        pub floor_tasks: u32,
        /// What the controller does on this sample, seen afresh: `scale-out`, `scale-in` or
        /// `none` (spare tasks are kept `keep_idle_startups` start-ups from the first sample that sees
        /// them, so a fresh look never lowers unless `keep_idle_startups` is 0).
        pub policy_action: String,
        pub policy_reason: String,
        pub policy_desired_tasks: u32,
        /// The samples the backlog function published lately, and the controller's decision on
        /// each, replayed with the same function.
        pub recent: Vec<Explained>,
    }

    /// One published sample and what the controller decided on it.
    #[derive(Debug, Serialize)]
    pub struct Explained {
        pub at: String,
        pub visible: u32,
        pub in_flight: u32,
        pub running: u32,
        pub pending: u32,
        pub desired: u32,
        pub needed: u32,
        pub floor: u32,
        pub action: String,
        pub desired_after: u32,
        pub reason: String,
    }

    impl Report {
        pub async fn read(
            aws: &aws_config::SdkConfig,
            queue_url: &str,
            cluster: &str,
            service: &str,
            policy: &Policy,
            pipeline: Option<PipelineState>,
        ) -> anyhow::Result<Report> {
            let queue = JobQueue::from_sdk(aws, queue_url);
            let svc = Service::from_sdk(aws, cluster, service);
            let (depth, tasks) = tokio::join!(queue.depth(), svc.counts());
            let depth = depth.with_context(|| format!("cannot read the queue {queue_url}"))?;
            let tasks =
                tasks.with_context(|| format!("cannot read the service {service} in {cluster}"))?;
            Ok(Report::of(depth, tasks, policy, pipeline))
        }

        /// Pure.
        pub fn of(
            depth: Depth,
            tasks: TaskCounts,
            policy: &Policy,
            pipeline: Option<PipelineState>,
        ) -> Report {
            let sample = sample_of(depth, tasks);
            let metrics = sample.metrics(policy);
            let paused = pipeline.as_ref().is_some_and(PipelineState::is_paused);
            let d = controller(paused)(policy, &sample, &Memory::default(), 0.0);
            Report {
                pipeline: pipeline.as_ref().map(PipelineState::view),
                queue: depth,
                service: tasks,
                backlog_per_task: metrics.backlog_per_task,
                target_backlog_per_task: policy.target_backlog_per_task(),
                tasks_for_backlog: tasks_for_backlog(
                    depth.visible,
                    policy.target_backlog_per_task(),
                ),
                needed_tasks: d.needed_tasks,
                floor_tasks: d.floor_tasks,
                policy_action: d.action.name().into(),
                policy_reason: d.reason.describe().into(),
                policy_desired_tasks: d.desired_tasks,
                recent: Vec::new(),
            }
        }

        /// Reads back the samples of the last `minutes` and replays the controller on them.
        pub async fn explain_recent(
            &mut self,
            aws: &aws_config::SdkConfig,
            queue_url: &str,
            service: &str,
            policy: &Policy,
            minutes: u32,
        ) -> anyhow::Result<()> {
            let dims = Dimensions {
                queue_name: JobQueue::from_sdk(aws, queue_url).name().to_owned(),
                service_name: service.to_owned(),
            };
            let now = Millis::now();
            let from = Millis(now.0 - i64::from(minutes) * 60_000);
            // The end is exclusive and whole seconds: a minute ahead holds the latest sample.
            let samples = Publisher::from_sdk(aws, &policy.namespace)
                .samples(&dims, from, Millis(now.0 + 60_000))
                .await
                .with_context(|| {
                    format!("cannot read the scaling samples in {}", policy.namespace)
                })?;
            let timed: Vec<(f64, sluice::scaling::Sample, bool)> = samples
                .iter()
                .map(|(t, s, paused)| (t.0 as f64 / 1000.0, *s, *paused))
                .collect();
            self.recent = samples
                .iter()
                .zip(replay_with_pauses(policy, &timed))
                .map(|((t, s, _), d)| Explained {
                    at: t.to_rfc3339(),
                    visible: s.visible,
                    in_flight: s.in_flight,
                    running: s.running_tasks,
                    pending: s.pending_tasks,
                    desired: s.desired_tasks,
                    needed: d.needed_tasks,
                    floor: d.floor_tasks,
                    action: d.action.name().into(),
                    desired_after: d.desired_tasks,
                    reason: d.reason.name().into(),
                })
                .collect();
            Ok(())
        }
    }

    impl fmt::Display for Report {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            match &self.pipeline {
                Some(p) => writeln!(f, "pipeline  {p}")?,
                None => writeln!(f, "pipeline  unknown (give --table or SLUICE_TABLE_NAME)")?,
            }
            writeln!(
                f,
                "queue     {} visible, {} in flight, {} delayed",
                self.queue.visible, self.queue.in_flight, self.queue.delayed
            )?;
            writeln!(
                f,
                "tasks     {} running, {} pending, {} desired",
                self.service.running, self.service.pending, self.service.desired
            )?;
            writeln!(
                f,
                "backlog   {:.2} per task (target {:.2}); the work needs {} task(s) now",
                self.backlog_per_task, self.target_backlog_per_task, self.needed_tasks
            )?;
            writeln!(
                f,
                "floor     {} task(s): the need, the tasks that may hold jobs, min_tasks",
                self.floor_tasks
            )?;
            let verdict = if self.policy_action == "none" {
                format!("no change: stays at {} desired", self.policy_desired_tasks)
            } else {
                format!(
                    "{}: {} → {} desired",
                    self.policy_action, self.service.desired, self.policy_desired_tasks
                )
            };
            writeln!(f, "policy    {verdict} ({})", self.policy_reason)?;
            if self.recent.is_empty() {
                return Ok(());
            }
            writeln!(
                f,
                "recent samples, and what the controller decided (replayed from an empty memory):"
            )?;
            writeln!(
                f,
                "  {:<24} {:>7} {:>8} {:>7} {:>7} {:>7} {:>6} {:>5}  decision",
                "at", "waiting", "running", "tasks", "pending", "desired", "needed", "floor"
            )?;
            for e in &self.recent {
                let decision = if e.action == "none" {
                    format!("keep {} ({})", e.desired, e.reason)
                } else {
                    format!("{} to {} ({})", e.action, e.desired_after, e.reason)
                };
                writeln!(
                    f,
                    "  {:<24} {:>7} {:>8} {:>7} {:>7} {:>7} {:>6} {:>5}  {decision}",
                    e.at,
                    e.visible,
                    e.in_flight,
                    e.running,
                    e.pending,
                    e.desired,
                    e.needed,
                    e.floor
                )?;
            }
            Ok(())
        }
    }
}

mod dev {
    use std::net::SocketAddr;
    use std::path::PathBuf;

    use anyhow::{bail, Context};
    use sluice::api::Api;
    use sluice::config::ApiConfig;
    use sluice::local::{self, QueueSettings};

    /// The local stack's API (and worker): until Ctrl-C or SIGTERM.
    pub async fn run(
        listen: SocketAddr,
        prefix: &str,
        worker: Option<Option<PathBuf>>,
    ) -> anyhow::Result<()> {
        if !listen.ip().is_loopback() {
            bail!("the local API listens on loopback only; {listen} is not a loopback address");
        }
        let aws = sluice::aws::load().await;
        let res = local::ensure_resources(&aws, prefix, QueueSettings::default())
            .await
            .context("cannot create the table and queues (is the emulator running and AWS_ENDPOINT_URL set?)")?;
        // Every job's end is published, as a deployment with topics and a bus does; the inbox
        // queue gets what a subscriber would.
        let published = local::ensure_events(&aws, prefix)
            .await
            .context("cannot create the event topics, bus and inbox")?;
        let config = ApiConfig {
            table_name: res.table_name.clone(),
            queue_url: Some(res.queue_url.clone()),
            max_attempts: 3,
            retention: std::time::Duration::from_secs(7 * 86_400),
            workers: None,
            max_job_timeout: sluice::config::max_job_timeout(&sluice::config::ProcessEnv)?,
            owner_scope: sluice::config::owner_scope(&sluice::config::ProcessEnv)?,
            // The receiver of a local job's webhook runs on this machine.
            webhook_policy: sluice::webhook::TargetPolicy::LOCAL_STACK,
            uploads: sluice::config::UploadSettings {
                bucket: Some(res.payload_bucket.clone()),
                ..sluice::config::upload_settings(&sluice::config::ProcessEnv)?
            },
            // The local identity operates the local stack (`sluice pause`, `sluice resume`),
            // beside any operators SLUICE_OPERATORS names.
            operators: {
                let mut ops = sluice::config::operators(&sluice::config::ProcessEnv)?;
                ops.push(local::LOCAL_IDENTITY.parse().map_err(anyhow::Error::msg)?);
                ops
            },
            publishes: true,
            // SLUICE_INPUT_BUCKETS names buckets of the emulator, whose presigned URLs (on the
            // loopback AWS_ENDPOINT_URL) the local API checks objects through.
            references: sluice::config::reference_settings(&sluice::config::ProcessEnv)?,
        };
        let api = Api::from_config(config).await;
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .with_context(|| format!("cannot listen on {listen}"))?;

        let stop = tokio_util::sync::CancellationToken::new();
        let supervisor = match worker {
            None => None,
            Some(path) => {
                let path = match path {
                    Some(p) => p,
                    None => sibling("sluice-worker")?,
                };
                let mut cmd = tokio::process::Command::new(&path);
                cmd.env(sluice::env::TABLE_NAME, &res.table_name)
                    .env(sluice::env::QUEUE_URL, &res.queue_url)
                    .env(sluice::env::PAYLOAD_BUCKET, &res.payload_bucket)
                    .env(sluice::env::WEBHOOK_ALLOW_LOOPBACK, "true")
                    .kill_on_drop(true);
                for (var, value) in [
                    (
                        sluice::env::SUCCESS_TOPIC_ARN,
                        &published.targets.success_topic,
                    ),
                    (sluice::env::ERROR_TOPIC_ARN, &published.targets.error_topic),
                    (sluice::env::EVENT_BUS, &published.targets.bus),
                ] {
                    if let Some(value) = value {
                        cmd.env(var, value);
                    }
                }
                let first = cmd
                    .spawn()
                    .with_context(|| format!("cannot start the worker {}", path.display()))?;
                Some(tokio::spawn(supervise(cmd, first, stop.clone())))
            }
        };
        // The pipeline: files dropped in its bucket under in/ become jobs of the local caller,
        // their outcomes written under out/ (as the ingest function does in AWS).
        let pipe = local::ensure_pipeline(&aws, prefix, "in/")
            .await
            .context("cannot create the pipeline's bucket and event queue")?;
        let ingest = sluice::ingest::Ingest {
            store: sluice::store::JobStore::from_sdk(&aws, &res.table_name).publishing(true),
            queue: sluice::queue::JobQueue::from_sdk(&aws, &res.queue_url),
            objects: sluice::payload::Payloads::from_sdk(&aws, &pipe.bucket),
            config: sluice::ingest::PipelineConfig {
                bucket: pipe.bucket.clone(),
                input_prefix: "in/".into(),
                output_prefix: "out/".into(),
                owner: sluice::job::Owner::new(format!("iam:{}", local::LOCAL_IDENTITY)),
                max_attempts: 3,
                retention: std::time::Duration::from_secs(7 * 86_400),
            },
        };
        let events = sluice::queue::JobQueue::from_sdk(&aws, &pipe.events_url);
        let ingester = {
            let stop = stop.clone();
            tokio::spawn(async move { ingest.poll(&events, stop).await })
        };
        tracing::info!(
            url = %format!("http://{listen}"),
            table = %res.table_name,
            queue = %res.queue_url,
            dlq = %res.dlq_url,
            bucket = %res.payload_bucket,
            pipeline = %format!("s3://{}/in/ -> s3://{}/out/", pipe.bucket, pipe.bucket),
            events = %published.inbox_url,
            "local API ready; try: sluice submit '{{\"text\": \"hello\"}}' --wait"
        );
        let shutdown = async {
            let mut term =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                    .expect("a SIGTERM handler can be installed");
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            tracing::info!("stopping");
        };
        // As the backlog function does in AWS: deliver the webhook announcements that are due
        // (retries, jobs cancelled while queued, a worker that died before delivering), and end
        // the queued jobs whose deadline passed (while paused, no worker meets them).
        let store = sluice::store::JobStore::from_sdk(&aws, &res.table_name);
        let deliverer = tokio::spawn(deliver_webhooks(
            sluice::outbox::Outbox::new(store.clone(), sluice::webhook::TargetPolicy::LOCAL_STACK)
                .with_payloads(sluice::payload::Payloads::from_sdk(
                    &aws,
                    &res.payload_bucket,
                ))
                .with_events(sluice::events::Publisher::from_sdk(
                    &aws,
                    published.targets.clone(),
                )),
            store,
            stop.clone(),
        ));
        local::serve(api, listener, shutdown).await?;
        stop.cancel();
        let _ = deliverer.await;
        let _ = ingester.await;
        if let Some(supervisor) = supervisor {
            let _ = supervisor.await;
        }
        Ok(())
    }

    /// Delivers the due webhook announcements every few seconds until `stop`.
    async fn deliver_webhooks(
        outbox: sluice::outbox::Outbox,
        store: sluice::store::JobStore,
        stop: tokio_util::sync::CancellationToken,
    ) {
        loop {
            tokio::select! {
                () = tokio::time::sleep(std::time::Duration::from_secs(5)) => {}
                () = stop.cancelled() => return,
            }
            let expire = sluice::pipeline::expire_overdue(
                &store,
                sluice::time::Millis::now(),
                std::time::Duration::from_secs(10),
            );
            tokio::select! {
                done = expire => if let Err(e) = done {
                    tracing::warn!(error = %sluice::aws::DisplayErrorContext(&e), "could not expire the jobs past their deadline");
                },
                () = stop.cancelled() => return,
            }
            let pass = outbox.deliver_due(
                sluice::time::Millis::now(),
                std::time::Duration::from_secs(60),
            );
            tokio::select! {
                done = pass => if let Err(e) = done {
                    tracing::warn!(error = %sluice::aws::DisplayErrorContext(&e), "could not deliver the due webhooks");
                },
                () = stop.cancelled() => return,
            }
        }
    }

    /// Keeps the local worker running: one that exits (killed, crashed) is started again after a
    /// pause that grows from 1 s to 30 s while it keeps exiting, and the terminal says so; jobs
    /// wait in the queue meanwhile. On `stop`, the worker is stopped and waited for.
    async fn supervise(
        mut cmd: tokio::process::Command,
        mut child: tokio::process::Child,
        stop: tokio_util::sync::CancellationToken,
    ) {
        let mut exits = 0u32;
        tracing::debug!(pid = child.id(), "keeping the worker running");
        loop {
            let started = std::time::Instant::now();
            let status = tokio::select! {
                status = child.wait() => status,
                () = stop.cancelled() => {
                    // The worker got the same Ctrl-C from the terminal and is draining; a
                    // SIGTERM reaches it when the stack was stopped some other way.
                    if let Some(pid) = child.id() {
                        let _ = std::process::Command::new("kill")
                            .arg("-TERM")
                            .arg(pid.to_string())
                            .status();
                    }
                    let _ = child.wait().await;
                    return;
                }
            };
            // One that ran a while before it exited starts again at once.
            if started.elapsed() > std::time::Duration::from_secs(60) {
                exits = 0;
            }
            exits += 1;
            let pause = sluice::job::RESTARTS.delay(exits, 1.0);
            let why = status.map_or_else(|e| e.to_string(), |s| s.to_string());
            tracing::error!(%why, ?pause, "the worker exited; jobs wait in the queue until it is started again");
            loop {
                tokio::select! {
                    () = tokio::time::sleep(pause) => {}
                    () = stop.cancelled() => return,
                }
                match cmd.spawn() {
                    Ok(c) => {
                        child = c;
                        tracing::info!(pid = child.id(), "the worker was started again");
                        break;
                    }
                    Err(e) => {
                        tracing::error!(error = %e, ?pause, "cannot start the worker; trying again")
                    }
                }
            }
        }
    }

    /// A binary built beside this one.
    fn sibling(name: &str) -> anyhow::Result<PathBuf> {
        let exe = std::env::current_exe().context("cannot find this program's path")?;
        let path = exe.with_file_name(name);
        if !path.exists() {
            bail!(
                "{} not found; build it with `cargo build -p sluice-worker` or pass --worker",
                path.display()
            );
        }
        Ok(path)
    }
}
