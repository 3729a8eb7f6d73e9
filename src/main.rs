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
    #[command(subcommand)]
    command: Command,
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
        /// Expire the job if it has not started within this many seconds.
        #[arg(long, value_name = "SECONDS")]
        deadline: Option<u64>,
        /// Attempts before the job fails (default: the deployment's setting).
        #[arg(long)]
        max_attempts: Option<u32>,
        /// Submitting again with the same key returns the same job instead of a new one.
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
    let client = Client::new(&cli.url)?;
    let (view, must_succeed) = match cli.command {
        Command::Submit {
            input,
            file,
            deadline,
            max_attempts,
            idempotency_key,
            wait,
            timeout,
        } => {
            let input = read_input(input, file)?;
            let opts = SubmitOptions {
                deadline_seconds: deadline,
                max_attempts,
                idempotency_key,
            };
            let view = client.submit(&input, &opts).await?;
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
        Command::Dev { .. } => unreachable!("handled above"),
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

/// A job for people.
fn describe(v: &JobView) -> String {
    let mut out = format!("job       {}\nstatus    {}\n", v.id, v.status);
    if v.cancel_requested {
        out.push_str("          cancel requested; the worker stops it at its next heartbeat\n");
    }
    out.push_str(&format!("attempt   {} of {}\n", v.attempt, v.max_attempts));
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
    out
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
        let config = ApiConfig {
            table_name: res.table_name.clone(),
            queue_url: Some(res.queue_url.clone()),
            max_attempts: 3,
            retention: std::time::Duration::from_secs(7 * 86_400),
        };
        let api = Api::from_config(config).await;
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .with_context(|| format!("cannot listen on {listen}"))?;

        let mut child = match worker {
            None => None,
            Some(path) => {
                let path = match path {
                    Some(p) => p,
                    None => sibling("sluice-worker")?,
                };
                let child = tokio::process::Command::new(&path)
                    .env(sluice::env::TABLE_NAME, &res.table_name)
                    .env(sluice::env::QUEUE_URL, &res.queue_url)
                    .kill_on_drop(true)
                    .spawn()
                    .with_context(|| format!("cannot start the worker {}", path.display()))?;
                Some(child)
            }
        };
        tracing::info!(
            url = %format!("http://{listen}"),
            table = %res.table_name,
            queue = %res.queue_url,
            dlq = %res.dlq_url,
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
        local::serve(api, listener, shutdown).await?;
        if let Some(child) = child.as_mut() {
            // The worker got the same Ctrl-C from the terminal and is draining; a SIGTERM
            // reaches it when the stack was stopped some other way.
            if let Some(pid) = child.id() {
                let _ = std::process::Command::new("kill")
                    .arg("-TERM")
                    .arg(pid.to_string())
                    .status();
            }
            let _ = child.wait().await;
        }
        Ok(())
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
