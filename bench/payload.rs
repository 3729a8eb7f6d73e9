//! `make bench-payload`: how fast the S3 payload adapter moves a file up and down, and how much
//! memory it takes to do it, against the local AWS emulator (moto in server mode) on loopback.
//!
//! For each size: writes a file of pseudo-random bytes, `Payloads::upload_file` sends it (one PUT
//! up to 16 MiB, above it 8 MiB parts four at a time), `Payloads::download_to_file` brings it
//! back, and the two are compared by sha256. Prints MiB/s each way and how far this process's
//! peak resident memory rose above where it stood before each transfer. Figures are printed,
//! never asserted; the program exits non-zero only when a transfer fails or the file comes back
//! changed.
//!
//! Then, with `--job-size`, one job with a file of that size through a real `sluice-worker`
//! process (the built-in Rust handler, asked to copy its file to an output file): the client
//! uploads the file through `POST /uploads` (presigned parts), the worker downloads it, the
//! handler copies it, the worker uploads the copy, and the client downloads it from the job's
//! presigned URL. Prints each leg and the worker's peak resident memory (`VmHWM`), which must
//! not grow with the file. Needs the release worker (`make bench-payload` builds it).
//!
//! `cargo bench -p sluice --bench payload -- --size 256MiB --size 1GiB --job-size 1GiB`

#[allow(dead_code)]
#[path = "../tests/integration/support.rs"]
mod support;

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::Parser;
use sha2::{Digest, Sha256};
use sluice::payload::Payloads;

const MIB: u64 = 1 << 20;

#[derive(Parser)]
#[command(about = "Upload and download throughput of the S3 payload adapter against the emulator")]
struct Args {
    /// A payload size: a number of bytes, or with a unit (KiB, MiB, GiB, or KB, MB, GB). Repeat
    /// for several.
    #[arg(long = "size", value_parser = parse_size, default_values = ["64MiB", "256MiB"])]
    sizes: Vec<u64>,
    /// Where the files are written (two of each size at once); the system's temporary folder
    /// unless given.
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Also run one job with a file of this size through a worker process (0: none).
    #[arg(long = "job-size", value_parser = parse_size, default_value = "0")]
    job_size: u64,
    /// Ignored: cargo's bench runner passes it.
    #[arg(long, hide = true)]
    bench: bool,
}

/// A process's peak resident memory so far (`VmHWM`), in bytes.
fn peak_of(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kib| kib * 1024)
}

/// One job with a file of `size` bytes through a worker process; prints each leg.
async fn through_worker(dir: &Path, size: u64) -> anyhow::Result<()> {
    use sluice::client::{Client, SubmitOptions};
    let s = support::Stack::new("bench_job_file").await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}", listener.local_addr()?);
    tokio::spawn(sluice::local::serve(
        s.api.clone(),
        listener,
        std::future::pending(),
    ));
    let worker = s.worker("bench", &[("SLUICE_HANDLER", "demo")]);
    let src = dir.join(format!("job-bench-{size}.in"));
    let out = dir.join(format!("job-bench-{size}.out"));
    let result = async {
        let sum = write_file(&src, size)?;
        let client = Client::new(&url)?;
        let input = serde_json::value::to_raw_value(&serde_json::json!({"copy_input": "copy.bin"}))?;
        let start = Instant::now();
        let view = client
            .submit_file(&src, "application/octet-stream", Some(&input), &SubmitOptions::default(), |_| {})
            .await?;
        let up = start.elapsed();
        let start = Instant::now();
        let done = client.wait(&view.id, Some(Duration::from_secs(1800))).await?;
        let ran = start.elapsed();
        anyhow::ensure!(
            done.status == sluice::job::Status::Succeeded,
            "the job ended {}: {:?}",
            done.status,
            done.error
        );
        let peak = peak_of(worker.child.id());
        let copy = done
            .outputs
            .iter()
            .find(|f| f.name.as_deref() == Some("copy.bin"))
            .and_then(|f| f.url.clone())
            .ok_or_else(|| anyhow::anyhow!("the job listed no copy.bin"))?;
        let start = Instant::now();
        let got = client.download(&copy, &out, |_| {}).await?;
        let down = start.elapsed();
        anyhow::ensure!(got == size, "{got} bytes came back of {size}");
        anyhow::ensure!(file_sha256(&out)? == sum, "the file came back changed");
        println!(
            "a job with a {:.0} MiB file through a worker process (Rust handler, file copied to an output file):",
            size as f64 / MIB as f64
        );
        println!(
            "  client upload {:.1} s ({:.1} MiB/s); the job (worker download, copy, worker upload) {:.1} s; \
             client download {:.1} s ({:.1} MiB/s)",
            up.as_secs_f64(),
            mib_s(size, up),
            ran.as_secs_f64(),
            down.as_secs_f64(),
            mib_s(size, down)
        );
        println!(
            "  worker peak resident memory: {:.1} MiB ({:.2}% of the file)",
            peak as f64 / MIB as f64,
            peak as f64 * 100.0 / size as f64
        );
        Ok(())
    }
    .await;
    let _ = std::fs::remove_file(&src);
    let _ = std::fs::remove_file(&out);
    result
}

fn parse_size(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let split = s
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(s.len());
    let (number, unit) = s.split_at(split);
    let number: f64 = number
        .parse()
        .map_err(|_| format!("{s:?} is not a size such as 512MiB"))?;
    let scale: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "kib" | "k" => 1 << 10,
        "mib" | "m" => 1 << 20,
        "gib" | "g" => 1 << 30,
        "kb" => 1_000,
        "mb" => 1_000_000,
        "gb" => 1_000_000_000,
        other => {
            return Err(format!(
                "unknown unit {other:?}: use KiB, MiB, GiB, KB, MB or GB"
            ))
        }
    };
    Ok((number * scale as f64) as u64)
}

/// Writes `len` pseudo-random bytes (splitmix64) to `path`; returns their sha256.
fn write_file(path: &Path, len: u64) -> std::io::Result<[u8; 32]> {
    let mut file = std::io::BufWriter::with_capacity(MIB as usize, std::fs::File::create(path)?);
    let mut hash = Sha256::new();
    let mut state = 0x5EED_u64;
    let mut buf = vec![0u8; MIB as usize];
    let mut left = len;
    while left > 0 {
        for word in buf.chunks_exact_mut(8) {
            state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = state;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            word.copy_from_slice(&(z ^ (z >> 31)).to_le_bytes());
        }
        let n = left.min(MIB) as usize;
        hash.update(&buf[..n]);
        file.write_all(&buf[..n])?;
        left -= n as u64;
    }
    file.flush()?;
    Ok(hash.finalize().into())
}

fn file_sha256(path: &Path) -> std::io::Result<[u8; 32]> {
    let mut file = std::fs::File::open(path)?;
    let mut hash = Sha256::new();
    let mut buf = vec![0; MIB as usize];
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            return Ok(hash.finalize().into());
        }
        hash.update(&buf[..n]);
    }
}

/// This process's resident memory now and its peak since the last [`reset_peak`], in bytes.
fn memory() -> (u64, u64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|kib| kib.parse::<u64>().ok())
            .map_or(0, |kib| kib * 1024)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// Starts the peak (VmHWM) afresh from the current resident memory.
fn reset_peak() -> bool {
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
}

struct Row {
    size: u64,
    up: Duration,
    down: Duration,
    up_peak: u64,
    down_peak: u64,
}

fn mib_s(bytes: u64, d: Duration) -> f64 {
    bytes as f64 / MIB as f64 / d.as_secs_f64()
}

async fn measure(p: &Payloads, dir: &Path, size: u64) -> anyhow::Result<Row> {
    let src = dir.join(format!("payload-bench-{size}.in"));
    let out = dir.join(format!("payload-bench-{size}.out"));
    let result = async {
        let sum = write_file(&src, size)?;
        let key = format!("bench/{size}");

        let resettable = reset_peak();
        let (rss, _) = memory();
        let start = Instant::now();
        p.upload_file(&src, &key, "application/octet-stream")
            .await?;
        let up = start.elapsed();
        let up_peak = memory().1.saturating_sub(rss);

        reset_peak();
        let (rss, _) = memory();
        let start = Instant::now();
        let got = p.download_to_file(&key, &out).await?;
        let down = start.elapsed();
        let down_peak = memory().1.saturating_sub(rss);
        if !resettable {
            eprintln!(
                "note: /proc/self/clear_refs refused a reset; memory figures are upper bounds"
            );
        }

        anyhow::ensure!(got == size, "{got} bytes came back of {size}");
        anyhow::ensure!(file_sha256(&out)? == sum, "the file came back changed");
        p.delete(&key).await?;
        Ok(Row {
            size,
            up,
            down,
            up_peak,
            down_peak,
        })
    }
    .await;
    let _ = std::fs::remove_file(&src);
    let _ = std::fs::remove_file(&out);
    result
}

fn main() -> ExitCode {
    let args = Args::parse();
    let dir = args.dir.clone().unwrap_or_else(std::env::temp_dir);
    let rt = tokio::runtime::Runtime::new().expect("a runtime");
    rt.block_on(async move {
        let emulator = support::Emulator::start(&[]);
        let p = Payloads::from_sdk(&emulator.sdk().await, "payload-bench");
        if let Err(e) = p.client().create_bucket().bucket(p.bucket()).send().await {
            eprintln!(
                "the bucket cannot be created: {}",
                sluice::aws::DisplayErrorContext(e)
            );
            return ExitCode::FAILURE;
        }
        println!(
            "S3 payloads on the emulator (moto, loopback); parts of {} MiB, {} at a time",
            sluice::payload::PREFERRED_PART_SIZE / MIB,
            sluice::payload::PART_CONCURRENCY
        );
        println!(
            "{:>10}  {:>9} {:>10} {:>14}  {:>9} {:>10} {:>14}",
            "size", "upload", "MiB/s", "peak +MiB", "download", "MiB/s", "peak +MiB"
        );
        let mut failed = false;
        for &size in &args.sizes {
            match measure(&p, &dir, size).await {
                Ok(r) => println!(
                    "{:>10}  {:>8.1}s {:>10.1} {:>14.1}  {:>8.1}s {:>10.1} {:>14.1}",
                    format!("{:.0} MiB", r.size as f64 / MIB as f64),
                    r.up.as_secs_f64(),
                    mib_s(r.size, r.up),
                    r.up_peak as f64 / MIB as f64,
                    r.down.as_secs_f64(),
                    mib_s(r.size, r.down),
                    r.down_peak as f64 / MIB as f64,
                ),
                Err(e) => {
                    eprintln!("{size} bytes: {e:#}");
                    failed = true;
                }
            }
        }
        if args.job_size > 0 {
            if let Err(e) = through_worker(&dir, args.job_size).await {
                eprintln!("the job through a worker: {e:#}");
                failed = true;
            }
        }
        if failed {
            ExitCode::FAILURE
        } else {
            ExitCode::SUCCESS
        }
    })
}
