//! `make bench`: what one sluice worker pushes through, what a job costs in AWS requests, how
//! long a trivial job takes end to end, and how small and fast the Lambdas are, measured
//! against the local AWS emulator (moto in server mode) on loopback. Prints one table and
//! writes it as JSON to `bench-results/bench.json`. See `bench/README.md`.
//!
//! Every section is bounded in jobs and wall time. Figures are printed, never asserted; the
//! program exits non-zero only when a section could not run at all.

#[allow(dead_code)]
#[path = "../../tests/integration/support.rs"]
mod support;

#[allow(dead_code)]
#[path = "lambda_init.rs"]
mod lambda_init;

#[path = "pipeline/modes.rs"]
mod modes;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aws_config::SdkConfig;
use aws_sdk_dynamodb::types::AttributeValue;
use aws_sdk_sqs::operation::delete_message::DeleteMessageOutput;
use aws_sdk_sqs::operation::delete_message_batch::DeleteMessageBatchOutput;
use aws_sdk_sqs::operation::receive_message::ReceiveMessageOutput;
use aws_sdk_sqs::types::SendMessageBatchRequestEntry;
use aws_smithy_runtime_api::box_error::BoxError;
use aws_smithy_runtime_api::client::interceptors::context::{
    BeforeTransmitInterceptorContextRef, FinalizerInterceptorContextRef,
};
use aws_smithy_runtime_api::client::interceptors::Intercept;
use aws_smithy_runtime_api::client::orchestrator::Metadata;
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use aws_smithy_types::config_bag::ConfigBag;
use serde_json::value::RawValue;
use serde_json::{json, Value};
use sluice::api::{Api, JobView};
use sluice::aws::RequestCounter;
use sluice::config::ApiConfig;
use sluice::job::{JobId, JobRecord, Owner, Status};
use sluice::local::{self, QueueSettings, Resources};
use sluice::queue::{Envelope, JobQueue};
use sluice::store::{self, Finish, JobStore};
use sluice::time::Millis;
use sluice_worker::{handler_fn, run_with, JobContext, JobError, WorkerConfig};
use tokio_util::sync::CancellationToken;

// ---- the run's bounds -------------------------------------------------------------------

/// Jobs through the floor loop and through the worker at each concurrency, after warm-up.
const THROUGHPUT_JOBS: usize = 500;
const WARMUP_JOBS: usize = 20;
const CONCURRENCY: [usize; 3] = [1, 8, 32];
/// The producer sends a batch of 10 whenever at most this many jobs are outstanding (sent and
/// not yet deleted), so the queue never holds more than 50.
const REFILL_AT: usize = 40;
/// End-to-end latency: sequential jobs.
const E2E_JOBS: usize = 500;
/// The idle worker's window (the production `receive_wait` of 20 s).
const IDLE_WINDOW: Duration = Duration::from_secs(65);
/// Hard caps.
const SECTION_CAP: Duration = Duration::from_secs(60);
const E2E_CAP: Duration = Duration::from_secs(120);
const CEILING_SQS: Duration = Duration::from_secs(8);
const CEILING_DDB: Duration = Duration::from_secs(4);

const RETENTION: Duration = Duration::from_secs(86_400);

// ---- prices: us-east-1, on-demand list prices -------------------------------------------

const SQS_PER_M_REQUESTS: f64 = 0.40;
const DDB_PER_M_WRU: f64 = 0.625;
const DDB_PER_M_RRU: f64 = 0.125;
const APIGW_HTTP_PER_M: f64 = 1.00;
const LAMBDA_PER_M_REQUESTS: f64 = 0.20;
/// Lambda duration at 128 MB on arm64, per ms.
const LAMBDA_PER_MS_128_ARM: f64 = 0.000_000_001_7;

// ---- counting at the SDK ----------------------------------------------------------------

type Counts = BTreeMap<(String, String), u64>;

fn delta(after: &Counts, before: &Counts) -> Counts {
    after
        .iter()
        .map(|(k, v)| (k.clone(), v - before.get(k).copied().unwrap_or(0)))
        .filter(|(_, v)| *v > 0)
        .collect()
}

/// An SDK interceptor beside `RequestCounter`: messages deleted and received (from the
/// operations' outputs), and when each receive was sent.
#[derive(Debug, Clone, Default)]
struct Probe(Arc<ProbeState>);

#[derive(Debug, Default)]
struct ProbeState {
    deleted: AtomicU64,
    received: AtomicU64,
    receive_sent: Mutex<Vec<Instant>>,
}

impl Probe {
    fn deleted(&self) -> u64 {
        self.0.deleted.load(Ordering::SeqCst)
    }
    fn received(&self) -> u64 {
        self.0.received.load(Ordering::SeqCst)
    }
    fn receive_times(&self) -> Vec<Instant> {
        self.0.receive_sent.lock().expect("not poisoned").clone()
    }
}

impl Intercept for Probe {
    fn name(&self) -> &'static str {
        "BenchProbe"
    }

    fn read_before_transmit(
        &self,
        _context: &BeforeTransmitInterceptorContextRef<'_>,
        _components: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        if cfg
            .load::<Metadata>()
            .is_some_and(|m| m.name() == "ReceiveMessage")
        {
            self.0
                .receive_sent
                .lock()
                .expect("not poisoned")
                .push(Instant::now());
        }
        Ok(())
    }

    fn read_after_execution(
        &self,
        context: &FinalizerInterceptorContextRef<'_>,
        _components: &RuntimeComponents,
        _cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        if let Some(Ok(out)) = context.output_or_error() {
            if let Some(o) = out.downcast_ref::<DeleteMessageBatchOutput>() {
                self.0
                    .deleted
                    .fetch_add(o.successful().len() as u64, Ordering::SeqCst);
            } else if out.downcast_ref::<DeleteMessageOutput>().is_some() {
                self.0.deleted.fetch_add(1, Ordering::SeqCst);
            } else if let Some(o) = out.downcast_ref::<ReceiveMessageOutput>() {
                self.0
                    .received
                    .fetch_add(o.messages().len() as u64, Ordering::SeqCst);
            }
        }
        Ok(())
    }
}

fn ddb_client(sdk: &SdkConfig, counter: &RequestCounter) -> aws_sdk_dynamodb::Client {
    aws_sdk_dynamodb::Client::from_conf(
        aws_sdk_dynamodb::config::Builder::from(sdk)
            .interceptor(counter.clone())
            .build(),
    )
}

fn sqs_client(sdk: &SdkConfig, counter: &RequestCounter, probe: &Probe) -> aws_sdk_sqs::Client {
    aws_sdk_sqs::Client::from_conf(
        aws_sdk_sqs::config::Builder::from(sdk)
            .interceptor(counter.clone())
            .interceptor(probe.clone())
            .build(),
    )
}

// ---- billing ----------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq)]
enum Unit {
    SqsRequest,
    Wru,
    Rru,
}

/// What one request of an operation bills, for a no-op job's record (well under 1 KB).
fn bills(service: &str, op: &str) -> (Unit, f64) {
    let service = service.to_ascii_lowercase();
    if service.contains("sqs") {
        return (Unit::SqsRequest, 1.0);
    }
    match op {
        // Strongly consistent, item ≤ 4 KB: 1 RRU.
        "GetItem" | "Query" | "Scan" | "BatchGetItem" => (Unit::Rru, 1.0),
        // Two items, each written at twice the cost inside a transaction.
        "TransactWriteItems" => (Unit::Wru, 4.0),
        // Item ≤ 1 KB: 1 WRU (a failed conditional write bills too).
        _ => (Unit::Wru, 1.0),
    }
}

fn price(u: Unit) -> f64 {
    match u {
        Unit::SqsRequest => SQS_PER_M_REQUESTS,
        Unit::Wru => DDB_PER_M_WRU,
        Unit::Rru => DDB_PER_M_RRU,
    }
}

/// Requests per job by operation, and what they bill.
#[derive(Debug, Clone, Default)]
struct PathCost {
    per_job: Vec<(String, String, f64)>,
    /// Requests to SQS and DynamoDB per job: each is billed.
    requests: f64,
    wru: f64,
    rru: f64,
    /// API Gateway requests and Lambda invocations per job.
    http: f64,
    /// Dollars per million jobs, Lambda duration excluded.
    usd_per_m: f64,
}

impl PathCost {
    fn of(counts: &Counts, jobs: f64, http_per_job: f64) -> PathCost {
        let mut c = PathCost {
            http: http_per_job,
            usd_per_m: http_per_job * (APIGW_HTTP_PER_M + LAMBDA_PER_M_REQUESTS),
            ..Default::default()
        };
        for ((service, op), n) in counts {
            let per = *n as f64 / jobs;
            c.per_job.push((service.clone(), op.clone(), per));
            c.requests += per;
            let (unit, units) = bills(service, op);
            match unit {
                Unit::Wru => c.wru += per * units,
                Unit::Rru => c.rru += per * units,
                Unit::SqsRequest => {}
            }
            c.usd_per_m += per * units * price(unit);
        }
        c
    }

    fn ops(&self) -> String {
        self.per_job
            .iter()
            .map(|(s, o, n)| format!("{} {o} {n:.2}", short(s)))
            .collect::<Vec<_>>()
            .join(", ")
    }

    fn to_json(&self) -> Value {
        json!({
            "per_job": self.per_job.iter().map(|(s, o, n)| json!({"service": s, "operation": o, "per_job": n})).collect::<Vec<_>>(),
            "billable_aws_requests_per_job": self.requests,
            "dynamodb_wru_per_job": self.wru,
            "dynamodb_rru_per_job": self.rru,
            "api_gateway_and_lambda_requests_per_job": self.http,
            "usd_per_million_jobs_excluding_lambda_duration": self.usd_per_m,
        })
    }
}

fn short(service: &str) -> &'static str {
    let s = service.to_ascii_lowercase();
    if s.contains("sqs") {
        "SQS"
    } else if s.contains("dynamo") {
        "DDB"
    } else {
        "AWS"
    }
}

// ---- helpers ----------------------------------------------------------------------------

/// The owner the producer's records carry: the API's form of `support::ALICE`.
fn owner() -> Owner {
    Owner::new(format!("iam:{}", support::ALICE))
}

/// A fresh table, queue and dead-letter queue, as deployed (60 s visibility).
async fn fresh(sdk: &SdkConfig, what: &str) -> anyhow::Result<Resources> {
    static N: AtomicU32 = AtomicU32::new(0);
    let prefix = format!(
        "bench-{what}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    );
    local::ensure_resources(
        sdk,
        &prefix,
        QueueSettings {
            visibility_timeout: Duration::from_secs(60),
            max_receive_count: 5,
        },
    )
    .await
}

/// Records `n` queued jobs, as submit would, before the clock starts.
async fn pre_record(store: &JobStore, n: usize) -> anyhow::Result<Vec<JobId>> {
    let ids: Vec<JobId> = (0..n).map(|_| JobId::generate()).collect();
    let mut tasks = tokio::task::JoinSet::new();
    for chunk in ids.chunks(n.div_ceil(4).max(1)) {
        let (store, chunk) = (store.clone(), chunk.to_vec());
        tasks.spawn(async move {
            for id in chunk {
                let rec = JobRecord::queued(id, owner(), Millis::now(), None, 3, 2);
                store.create(&rec, RETENTION, None).await?;
            }
            Ok::<_, anyhow::Error>(())
        });
    }
    while let Some(r) = tasks.join_next().await {
        r??;
    }
    Ok(ids)
}

/// One `SendMessageBatch` of job messages with the input `{}`.
async fn send_batch(sqs: &aws_sdk_sqs::Client, url: &str, ids: &[JobId]) -> anyhow::Result<()> {
    let input = RawValue::from_string("{}".into())?;
    let mut entries = Vec::with_capacity(ids.len());
    for (i, id) in ids.iter().enumerate() {
        entries.push(
            SendMessageBatchRequestEntry::builder()
                .id(i.to_string())
                .message_body(Envelope::new(id.clone(), &input).encode()?)
                .build()?,
        );
    }
    let out = sqs
        .send_message_batch()
        .queue_url(url)
        .set_entries(Some(entries))
        .send()
        .await?;
    anyhow::ensure!(
        out.failed().is_empty(),
        "the emulator refused {} messages",
        out.failed().len()
    );
    Ok(())
}

#[derive(Debug, Clone, Copy, Default)]
struct Throughput {
    jobs: usize,
    secs: f64,
    /// The section hit its wall-time cap before all its jobs were done.
    capped: bool,
}

impl Throughput {
    fn per_sec(&self) -> f64 {
        if self.secs > 0.0 {
            self.jobs as f64 / self.secs
        } else {
            0.0
        }
    }
    fn to_json(self) -> Value {
        json!({"jobs": self.jobs, "seconds": self.secs, "jobs_per_second": self.per_sec(), "capped": self.capped})
    }
}

/// The producer: sends `ids` ten to a batch whenever at most `REFILL_AT` are outstanding, and
/// returns once the worker has deleted all of them (or at the cap).
async fn produce(
    sqs: &aws_sdk_sqs::Client,
    url: &str,
    ids: &[JobId],
    probe: &Probe,
    cap: Duration,
) -> anyhow::Result<Throughput> {
    let base = probe.deleted();
    let start = Instant::now();
    let mut sent = 0;
    loop {
        let done = (probe.deleted() - base) as usize;
        if done >= ids.len() || start.elapsed() > cap {
            return Ok(Throughput {
                jobs: done.min(ids.len()),
                secs: start.elapsed().as_secs_f64(),
                capped: done < ids.len(),
            });
        }
        while sent < ids.len() && sent.saturating_sub(done) <= REFILL_AT {
            let k = (ids.len() - sent).min(10);
            send_batch(sqs, url, &ids[sent..sent + k]).await?;
            sent += k;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn noop_worker_config(
    res: &Resources,
    concurrency: usize,
    receive_wait: Option<u64>,
) -> anyhow::Result<WorkerConfig> {
    let conc = concurrency.to_string();
    let wait = receive_wait.map(|w| w.to_string());
    let mut vars = vec![
        ("SLUICE_TABLE_NAME", res.table_name.as_str()),
        ("SLUICE_QUEUE_URL", res.queue_url.as_str()),
        ("SLUICE_CONCURRENCY", conc.as_str()),
        ("SLUICE_WORKER_ID", "bench-worker"),
    ];
    if let Some(w) = &wait {
        vars.push(("SLUICE_RECEIVE_WAIT_SECONDS", w.as_str()));
    }
    Ok(WorkerConfig::from_source(&vars[..])?)
}

macro_rules! noop {
    () => {
        handler_fn(|_: Value, _: JobContext| async { Ok::<Value, JobError>(Value::Null) })
    };
}

// ---- 1. the emulator's ceiling ----------------------------------------------------------

#[derive(Debug, Default)]
struct Ceiling {
    sqs_msgs_per_s: f64,
    sqs_send_ms: f64,
    sqs_receive_ms: f64,
    sqs_delete_ms: f64,
    ddb_updates_per_s_1: f64,
    ddb_update_ms: f64,
    ddb_updates_per_s_8: f64,
}

async fn ceiling(sdk: &SdkConfig) -> anyhow::Result<Ceiling> {
    let res = fresh(sdk, "ceiling").await?;
    let sqs = aws_sdk_sqs::Client::new(sdk);
    let ddb = aws_sdk_dynamodb::Client::new(sdk);
    let mut c = Ceiling::default();

    // SQS: send-batch(10) → receive(10) → delete-batch(10) of job messages, one client, through
    // the same queue calls the worker makes.
    let queue = JobQueue::new(sqs.clone(), &res.queue_url);
    let ids: Vec<JobId> = (0..10).map(|_| JobId::generate()).collect();
    let (mut moved, mut cycles) = (0usize, 0usize);
    let (mut t_send, mut t_recv, mut t_del, mut receives) =
        (Duration::ZERO, Duration::ZERO, Duration::ZERO, 0usize);
    let start = Instant::now();
    while start.elapsed() < CEILING_SQS {
        let t = Instant::now();
        send_batch(&sqs, &res.queue_url, &ids).await?;
        t_send += t.elapsed();
        let mut receipts = Vec::new();
        for _ in 0..20 {
            let t = Instant::now();
            let got = queue.receive(10, Duration::ZERO).await?;
            t_recv += t.elapsed();
            receives += 1;
            receipts.extend(got.into_iter().map(|m| m.receipt));
            if receipts.len() >= 10 {
                break;
            }
        }
        let t = Instant::now();
        let refused = queue.delete_batch(&receipts).await?;
        anyhow::ensure!(refused.is_empty(), "the emulator refused deletes");
        t_del += t.elapsed();
        moved += receipts.len();
        cycles += 1;
    }
    let secs = start.elapsed().as_secs_f64();
    c.sqs_msgs_per_s = moved as f64 / secs;
    c.sqs_send_ms = ms(t_send) / cycles.max(1) as f64;
    c.sqs_receive_ms = ms(t_recv) / receives.max(1) as f64;
    c.sqs_delete_ms = ms(t_del) / cycles.max(1) as f64;

    // DynamoDB: UpdateItem on a few small items, one caller, then eight at once.
    let update = |ddb: aws_sdk_dynamodb::Client, table: String, i: usize| async move {
        ddb.update_item()
            .table_name(table)
            .key("id", AttributeValue::S(format!("ceiling-{}", i % 10)))
            .update_expression("ADD #n :one")
            .expression_attribute_names("#n", "n")
            .expression_attribute_values(":one", AttributeValue::N("1".into()))
            .send()
            .await
            .map(|_| ())
    };
    let start = Instant::now();
    let mut n = 0usize;
    while start.elapsed() < CEILING_DDB {
        update(ddb.clone(), res.table_name.clone(), n).await?;
        n += 1;
    }
    let secs = start.elapsed().as_secs_f64();
    c.ddb_updates_per_s_1 = n as f64 / secs;
    c.ddb_update_ms = secs * 1e3 / n.max(1) as f64;

    let start = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for w in 0..8 {
        let (ddb, table) = (ddb.clone(), res.table_name.clone());
        tasks.spawn(async move {
            let mut n = 0usize;
            while start.elapsed() < CEILING_DDB {
                update(ddb.clone(), table.clone(), w + n).await?;
                n += 1;
            }
            Ok::<_, anyhow::Error>(n)
        });
    }
    let mut total = 0;
    while let Some(r) = tasks.join_next().await {
        total += r??;
    }
    c.ddb_updates_per_s_8 = total as f64 / start.elapsed().as_secs_f64();
    Ok(c)
}

// ---- 2. the floor -----------------------------------------------------------------------

/// The bare minimum a job needs, by a plain loop over the same store and queue calls the
/// worker makes: its share of send-batch(10), receive(10), the claim write, the result
/// write, and its share of delete-batch(10). Records are written before the clock starts,
/// as for the worker; the queue is kept as deep as the worker's producer keeps it.
async fn floor_loop(
    store: &JobStore,
    queue: &JobQueue,
    sqs: &aws_sdk_sqs::Client,
    ids: &[JobId],
    cap: Duration,
) -> anyhow::Result<Floor> {
    let start = Instant::now();
    let (mut sent, mut done) = (0usize, 0usize);
    let mut spent = [Duration::ZERO; 5];
    while done < ids.len() && start.elapsed() < cap {
        let t = Instant::now();
        while sent < ids.len() && sent - done <= REFILL_AT {
            let k = (ids.len() - sent).min(10);
            send_batch(sqs, queue.url(), &ids[sent..sent + k]).await?;
            sent += k;
        }
        spent[0] += t.elapsed();
        let t = Instant::now();
        let msgs = queue.receive(10, Duration::from_secs(1)).await?;
        spent[1] += t.elapsed();
        let mut receipts = Vec::with_capacity(msgs.len());
        for m in &msgs {
            let env = Envelope::decode(&m.body).map_err(anyhow::Error::msg)?;
            let t = Instant::now();
            let job = store
                .claim(&env.job_id, "floor", Millis::now(), Duration::from_secs(60))
                .await?;
            spent[2] += t.elapsed();
            let t = Instant::now();
            let result = Finish::Succeeded {
                result: "null".into(),
            };
            store
                .finish(&job.id, job.attempt, result, Millis::now(), RETENTION)
                .await?;
            spent[3] += t.elapsed();
            receipts.push(m.receipt.clone());
        }
        let t = Instant::now();
        let refused = queue.delete_batch(&receipts).await?;
        spent[4] += t.elapsed();
        anyhow::ensure!(refused.is_empty(), "the emulator refused deletes");
        done += receipts.len();
    }
    Ok(Floor {
        throughput: Throughput {
            jobs: done,
            secs: start.elapsed().as_secs_f64(),
            capped: done < ids.len(),
        },
        ms_per_job: spent.map(|d| ms(d) / done.max(1) as f64),
    })
}

#[derive(Debug, Clone, Copy, Default)]
struct Floor {
    throughput: Throughput,
    /// Wall time per job in send-batch, receive, claim, finish, delete-batch.
    ms_per_job: [f64; 5],
}

async fn floor(sdk: &SdkConfig) -> anyhow::Result<Floor> {
    let res = fresh(sdk, "floor").await?;
    let store = JobStore::from_sdk(sdk, &res.table_name);
    let queue = JobQueue::from_sdk(sdk, &res.queue_url);
    let sqs = aws_sdk_sqs::Client::new(sdk);
    let ids = pre_record(&store, WARMUP_JOBS + THROUGHPUT_JOBS).await?;
    floor_loop(&store, &queue, &sqs, &ids[..WARMUP_JOBS], SECTION_CAP).await?;
    floor_loop(&store, &queue, &sqs, &ids[WARMUP_JOBS..], SECTION_CAP).await
}

// ---- 3. the worker ----------------------------------------------------------------------

#[derive(Debug, Clone, Default)]
struct WorkerRun {
    concurrency: usize,
    throughput: Throughput,
    /// The worker's requests during the measured jobs.
    counts: Counts,
    /// Messages per receive request, on average.
    messages_per_receive: f64,
}

async fn worker_throughput(sdk: &SdkConfig, concurrency: usize) -> anyhow::Result<WorkerRun> {
    worker_throughput_of(sdk, concurrency, noop!(), &format!("c{concurrency}")).await
}

/// One worker running `handler` over no-op jobs at `concurrency`.
async fn worker_throughput_of<H: sluice_worker::Handler>(
    sdk: &SdkConfig,
    concurrency: usize,
    handler: H,
    tag: &str,
) -> anyhow::Result<WorkerRun> {
    let res = fresh(sdk, tag).await?;
    let (counter, probe) = (RequestCounter::default(), Probe::default());
    let store = JobStore::new(ddb_client(sdk, &counter), &res.table_name);
    let queue = JobQueue::new(sqs_client(sdk, &counter, &probe), &res.queue_url);
    let producer_store = JobStore::from_sdk(sdk, &res.table_name);
    let producer_sqs = aws_sdk_sqs::Client::new(sdk);
    let ids = pre_record(&producer_store, WARMUP_JOBS + THROUGHPUT_JOBS).await?;
    let config = noop_worker_config(&res, concurrency, Some(1))?;

    let stop = CancellationToken::new();
    let worker = run_with(
        handler,
        config,
        store,
        queue,
        stop.clone().cancelled_owned(),
    );
    let measure = async {
        let r = async {
            let url = &res.queue_url;
            produce(&producer_sqs, url, &ids[..WARMUP_JOBS], &probe, SECTION_CAP).await?;
            let (before, recv_before) = (counter.snapshot(), probe.received());
            let t = produce(&producer_sqs, url, &ids[WARMUP_JOBS..], &probe, SECTION_CAP).await?;
            let counts = delta(&counter.snapshot(), &before);
            let receives = counts
                .iter()
                .filter(|((_, op), _)| op == "ReceiveMessage")
                .map(|(_, n)| *n)
                .sum::<u64>();
            Ok::<_, anyhow::Error>(WorkerRun {
                concurrency,
                throughput: t,
                messages_per_receive: (probe.received() - recv_before) as f64
                    / receives.max(1) as f64,
                counts,
            })
        }
        .await;
        stop.cancel();
        r
    };
    let (w, m) = tokio::join!(worker, measure);
    w?;
    m
}

// ---- 4. submit and status paths ---------------------------------------------------------

#[derive(Debug, Default)]
struct Paths {
    submit: Counts,
    submit_n: usize,
    submit_ms: Vec<f64>,
    keyed: Counts,
    keyed_n: usize,
    get: Counts,
    get_n: usize,
    get_ms: Vec<f64>,
    wait: Counts,
    wait_n: usize,
    wait_ms: Vec<f64>,
    /// How long the waited-on jobs ran after the GET began.
    wait_job_runs: Duration,
    record_bytes: usize,
}

fn counted_api(sdk: &SdkConfig, res: &Resources, counter: &RequestCounter) -> Api {
    Api::new(
        JobStore::new(ddb_client(sdk, counter), &res.table_name),
        Some(JobQueue::new(
            sqs_client(sdk, counter, &Probe::default()),
            &res.queue_url,
        )),
        ApiConfig {
            table_name: res.table_name.clone(),
            queue_url: Some(res.queue_url.clone()),
            max_attempts: 3,
            retention: RETENTION,
            workers: None,
            max_job_timeout: sluice::job::MAX_JOB_TIMEOUT,
            owner_scope: Default::default(),
            webhook_policy: sluice::webhook::TargetPolicy::DEPLOYED,
            uploads: Default::default(),
            operators: Vec::new(),
            publishes: false,
            references: Default::default(),
        },
    )
}

async fn submit_one(api: &Api, key: Option<&str>) -> anyhow::Result<JobId> {
    let req = support::post_json(support::ALICE, r#"{"input":{}}"#, key);
    let (status, v) = support::decode(api.handle(req).await);
    anyhow::ensure!(status == 202, "submit answered {status}: {v}");
    Ok(v["id"].as_str().unwrap_or_default().parse()?)
}

async fn get_view(api: &Api, id: &JobId, wait: Option<u64>) -> anyhow::Result<JobView> {
    let req = support::get(support::ALICE, &format!("/jobs/{id}"), wait);
    let (status, v) = support::decode(api.handle(req).await);
    anyhow::ensure!(status == 200, "GET answered {status}: {v}");
    Ok(serde_json::from_value(v)?)
}

/// DynamoDB's size of an item: attribute names plus values (numbers about one byte per two
/// digits, plus one).
fn item_bytes(item: &std::collections::HashMap<String, AttributeValue>) -> usize {
    item.iter()
        .map(|(k, v)| {
            k.len()
                + match v {
                    AttributeValue::S(s) => s.len(),
                    AttributeValue::N(n) => {
                        let digits = n.trim_start_matches('-').replace('.', "");
                        digits.trim_start_matches('0').len().div_ceil(2) + 1
                    }
                    _ => 1,
                }
        })
        .sum()
}

async fn paths(sdk: &SdkConfig) -> anyhow::Result<Paths> {
    let res = fresh(sdk, "paths").await?;
    let plain_store = JobStore::from_sdk(sdk, &res.table_name);
    let mut p = Paths::default();

    // Submit: plain, then with an Idempotency-Key.
    let c = RequestCounter::default();
    let api = counted_api(sdk, &res, &c);
    let mut ids = Vec::new();
    for _ in 0..50 {
        let t = Instant::now();
        ids.push(submit_one(&api, None).await?);
        p.submit_ms.push(ms(t.elapsed()));
    }
    (p.submit, p.submit_n) = (c.snapshot(), ids.len());
    let c = RequestCounter::default();
    let api = counted_api(sdk, &res, &c);
    for i in 0..20 {
        submit_one(&api, Some(&format!("bench-key-{i}"))).await?;
    }
    (p.keyed, p.keyed_n) = (c.snapshot(), 20);

    // Status without wait, on a finished job.
    let done = &ids[0];
    let job = plain_store
        .claim(done, "bench", Millis::now(), Duration::from_secs(60))
        .await?;
    let finished = plain_store
        .finish(
            done,
            job.attempt,
            Finish::Succeeded {
                result: "null".into(),
            },
            Millis::now(),
            RETENTION,
        )
        .await?;
    p.record_bytes = item_bytes(&store::to_item(&finished)) + "expires_at".len() + 6;
    let c = RequestCounter::default();
    let api = counted_api(sdk, &res, &c);
    for _ in 0..50 {
        let t = Instant::now();
        let v = get_view(&api, done, None).await?;
        p.get_ms.push(ms(t.elapsed()));
        anyhow::ensure!(
            v.status == Status::Succeeded,
            "the finished job reads {:?}",
            v.status
        );
    }
    (p.get, p.get_n) = (c.snapshot(), 50);

    // Status with ?wait=20 on running jobs that finish 3 s later.
    p.wait_job_runs = Duration::from_secs(3);
    let running: Vec<JobRecord> = {
        let mut v = Vec::new();
        for id in &ids[1..4] {
            v.push(
                plain_store
                    .claim(id, "bench", Millis::now(), Duration::from_secs(60))
                    .await?,
            );
        }
        v
    };
    let c = RequestCounter::default();
    let api = counted_api(sdk, &res, &c);
    let finisher = {
        let (store, running, after) = (plain_store.clone(), running.clone(), p.wait_job_runs);
        async move {
            tokio::time::sleep(after).await;
            for job in running {
                let done = Finish::Succeeded {
                    result: "null".into(),
                };
                store
                    .finish(&job.id, job.attempt, done, Millis::now(), RETENTION)
                    .await?;
            }
            Ok::<_, anyhow::Error>(())
        }
    };
    let waiters = async {
        let mut set = tokio::task::JoinSet::new();
        for job in &running {
            let (api, id) = (api.clone(), job.id.clone());
            set.spawn(async move {
                let t = Instant::now();
                let v = get_view(&api, &id, Some(20)).await?;
                anyhow::ensure!(
                    v.status == Status::Succeeded,
                    "waited job reads {:?}",
                    v.status
                );
                Ok(ms(t.elapsed()))
            });
        }
        let mut out = Vec::new();
        while let Some(r) = set.join_next().await {
            out.push(r??);
        }
        Ok::<_, anyhow::Error>(out)
    };
    let (f, w) = tokio::join!(finisher, waiters);
    f?;
    p.wait_ms = w?;
    (p.wait, p.wait_n) = (c.snapshot(), running.len());
    Ok(p)
}

// ---- 5. the idle worker -----------------------------------------------------------------

#[derive(Debug, Default)]
struct Idle {
    window: Duration,
    receives: usize,
    mean_interval_s: f64,
    per_minute: f64,
}

async fn idle(sdk: &SdkConfig) -> anyhow::Result<Idle> {
    let res = fresh(sdk, "idle").await?;
    let (counter, probe) = (RequestCounter::default(), Probe::default());
    let store = JobStore::new(ddb_client(sdk, &counter), &res.table_name);
    let queue = JobQueue::new(sqs_client(sdk, &counter, &probe), &res.queue_url);
    // The production defaults: receive_wait 20 s, concurrency 4.
    let config = WorkerConfig::from_source(
        &[
            ("SLUICE_TABLE_NAME", res.table_name.as_str()),
            ("SLUICE_QUEUE_URL", res.queue_url.as_str()),
            ("SLUICE_WORKER_ID", "bench-idle"),
        ][..],
    )?;
    let start = Instant::now();
    let stop = CancellationToken::new();
    let worker = run_with(
        noop!(),
        config,
        store,
        queue,
        stop.clone().cancelled_owned(),
    );
    let timer = async {
        tokio::time::sleep(IDLE_WINDOW).await;
        stop.cancel();
    };
    let (w, ()) = tokio::join!(worker, timer);
    w?;
    let times: Vec<f64> = probe
        .receive_times()
        .iter()
        .map(|t| t.duration_since(start).as_secs_f64())
        .filter(|t| *t < IDLE_WINDOW.as_secs_f64())
        .collect();
    let others = counter
        .snapshot()
        .into_iter()
        .filter(|((_, op), _)| op != "ReceiveMessage")
        .collect::<Vec<_>>();
    anyhow::ensure!(
        others.is_empty(),
        "the idle worker made other requests: {others:?}"
    );
    let mean = if times.len() >= 2 {
        (times[times.len() - 1] - times[0]) / (times.len() - 1) as f64
    } else {
        f64::NAN
    };
    Ok(Idle {
        window: IDLE_WINDOW,
        receives: times.len(),
        mean_interval_s: mean,
        per_minute: if mean > 0.0 {
            60.0 / mean
        } else {
            times.len() as f64 * 60.0 / IDLE_WINDOW.as_secs_f64()
        },
    })
}

// ---- 6. end to end ----------------------------------------------------------------------

#[derive(Debug, Default)]
struct E2e {
    jobs: usize,
    capped: bool,
    /// Submit → SUCCEEDED seen by GET ?wait=20, per job, ms.
    latency_ms: Vec<f64>,
    /// From the records: submitted_at → finished_at (the pipeline without the status poll).
    recorded_ms: Vec<f64>,
    /// submitted_at → started_at.
    queued_ms: Vec<f64>,
    worker: Counts,
    submit: Counts,
    status: Counts,
}

async fn e2e(sdk: &SdkConfig) -> anyhow::Result<E2e> {
    let res = fresh(sdk, "e2e").await?;
    let (wc, wp) = (RequestCounter::default(), Probe::default());
    let store = JobStore::new(ddb_client(sdk, &wc), &res.table_name);
    let queue = JobQueue::new(sqs_client(sdk, &wc, &wp), &res.queue_url);
    // Concurrency 8 and the production long poll (20 s), which wakes early on a new message.
    let config = noop_worker_config(&res, 8, None)?;
    let (sc, tc) = (RequestCounter::default(), RequestCounter::default());
    let submit_api = counted_api(sdk, &res, &sc);
    let status_api = counted_api(sdk, &res, &tc);
    let stop = CancellationToken::new();
    let worker = run_with(
        noop!(),
        config,
        store,
        queue,
        stop.clone().cancelled_owned(),
    );
    let one = |submit_api: Api, status_api: Api| async move {
        let t = Instant::now();
        let id = submit_one(&submit_api, None).await?;
        loop {
            let v = get_view(&status_api, &id, Some(20)).await?;
            match v.status {
                Status::Succeeded => return Ok::<_, anyhow::Error>((id, ms(t.elapsed()))),
                Status::Queued | Status::Running => continue,
                other => anyhow::bail!("job {id} ended {other:?}"),
            }
        }
    };
    let measure = async {
        let r = async {
            tokio::time::sleep(Duration::from_millis(300)).await;
            for _ in 0..WARMUP_JOBS {
                one(submit_api.clone(), status_api.clone()).await?;
            }
            let (w0, s0, t0) = (wc.snapshot(), sc.snapshot(), tc.snapshot());
            let start = Instant::now();
            let mut out = E2e::default();
            let mut ids = Vec::new();
            for _ in 0..E2E_JOBS {
                if start.elapsed() > E2E_CAP {
                    out.capped = true;
                    break;
                }
                let (id, latency) = one(submit_api.clone(), status_api.clone()).await?;
                out.latency_ms.push(latency);
                ids.push(id);
            }
            out.jobs = ids.len();
            out.submit = delta(&sc.snapshot(), &s0);
            out.status = delta(&tc.snapshot(), &t0);
            // Let the last deletes go out before counting the worker.
            tokio::time::sleep(Duration::from_millis(200)).await;
            out.worker = delta(&wc.snapshot(), &w0);
            Ok::<_, anyhow::Error>((out, ids))
        }
        .await;
        stop.cancel();
        r
    };
    let (w, m) = tokio::join!(worker, measure);
    w?;
    let (mut out, ids) = m?;
    let plain = JobStore::from_sdk(sdk, &res.table_name);
    for id in &ids {
        if let Some(job) = plain.get(id).await? {
            if let (Some(started), Some(finished)) = (job.started_at, job.finished_at) {
                out.recorded_ms
                    .push(finished.0.saturating_sub(job.submitted_at.0) as f64);
                out.queued_ms
                    .push(started.0.saturating_sub(job.submitted_at.0) as f64);
            }
        }
    }
    Ok(out)
}

// ---- the table --------------------------------------------------------------------------

struct Row {
    figure: String,
    value: String,
    target: String,
    met: Option<bool>,
}

#[derive(Default)]
struct Table {
    rows: Vec<Row>,
    /// Headings interleaved with rows: (index of the first row under it, heading).
    headings: Vec<(usize, String)>,
}

impl Table {
    fn heading(&mut self, h: impl Into<String>) {
        self.headings.push((self.rows.len(), h.into()));
    }
    fn row(&mut self, figure: impl Into<String>, value: impl Into<String>) {
        self.rows.push(Row {
            figure: figure.into(),
            value: value.into(),
            target: String::new(),
            met: None,
        });
    }
    fn target(
        &mut self,
        figure: impl Into<String>,
        value: impl Into<String>,
        target: impl Into<String>,
        met: bool,
    ) {
        self.rows.push(Row {
            figure: figure.into(),
            value: value.into(),
            target: target.into(),
            met: Some(met),
        });
    }
    fn print(&self) {
        let fw = self.rows.iter().map(|r| r.figure.len()).max().unwrap_or(10) + 2;
        println!("{:<fw$}  {:<10}  {:<7}  value", "figure", "target", "met");
        println!("{}", "-".repeat(fw + 40));
        let mut h = self.headings.iter().peekable();
        for (i, r) in self.rows.iter().enumerate() {
            while let Some((_, heading)) = h.next_if(|(at, _)| *at == i) {
                println!("{heading}");
            }
            let met = match r.met {
                Some(true) => "met",
                Some(false) => "NOT MET",
                None => "",
            };
            println!(
                "  {:<w$}  {:<10}  {:<7}  {}",
                r.figure,
                r.target,
                met,
                r.value,
                w = fw - 2
            );
        }
        for (_, heading) in h {
            println!("{heading}");
        }
    }
    fn to_json(&self) -> Value {
        let mut section = String::new();
        let mut h = self.headings.iter().peekable();
        let mut out = Vec::new();
        for (i, r) in self.rows.iter().enumerate() {
            while let Some((_, heading)) = h.next_if(|(at, _)| *at == i) {
                section = heading.clone();
            }
            out.push(json!({
                "section": section,
                "figure": r.figure,
                "value": r.value,
                "target": (!r.target.is_empty()).then_some(&r.target),
                "met": r.met,
            }));
        }
        Value::Array(out)
    }
}

fn stats(v: &[f64]) -> (f64, f64, f64) {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    (
        percentile(&s, 0.5),
        percentile(&s, 0.99),
        s.last().copied().unwrap_or(f64::NAN),
    )
}

fn moto_version() -> String {
    let python = PathBuf::from(std::env::var("SLUICE_EMULATOR_PYTHON").unwrap_or_default());
    std::process::Command::new(python)
        .args(["-c", "import moto; print(moto.__version__)"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_else(|| "unknown".into())
}

fn main() -> ExitCode {
    // Before any thread starts. Text logs: the in-process worker then writes no metric lines
    // to stdout, which carries the table.
    std::env::set_var("SLUICE_LOG_FORMAT", "text");
    let root = lambda_init::workspace_root();
    if std::env::var_os("SLUICE_EMULATOR_PYTHON").is_none() {
        std::env::set_var("SLUICE_EMULATOR_PYTHON", root.join(".venv/bin/python"));
    }
    let python = PathBuf::from(std::env::var_os("SLUICE_EMULATOR_PYTHON").unwrap_or_default());
    if !python.exists() {
        eprintln!(
            "the emulator is not installed at {}: run `make setup` (or set SLUICE_EMULATOR_PYTHON)",
            python.display()
        );
        return ExitCode::FAILURE;
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    rt.block_on(run(root))
}

/// Runs one section, reporting progress on stderr; `None` when it could not run.
async fn section<T>(
    name: &str,
    failures: &mut Vec<String>,
    fut: impl std::future::Future<Output = anyhow::Result<T>>,
) -> Option<T> {
    eprintln!("bench: {name} …");
    let t = Instant::now();
    match fut.await {
        Ok(v) => {
            eprintln!("bench: {name} done in {:.1} s", t.elapsed().as_secs_f64());
            Some(v)
        }
        Err(e) => {
            eprintln!("bench: {name} could not run: {e:#}");
            failures.push(format!("{name}: {e:#}"));
            None
        }
    }
}

async fn run(root: PathBuf) -> ExitCode {
    let started = Instant::now();
    let sdk = support::sdk().await;
    let endpoint = sdk.endpoint_url().map(str::to_owned).unwrap_or_default();
    let moto = moto_version();
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let mut failures = Vec::new();
    let mut t = Table::default();
    let mut j = serde_json::Map::new();

    // 1.
    let ceil = section("emulator ceiling", &mut failures, ceiling(&sdk)).await;
    // 2.
    let floor = section("floor loop", &mut failures, floor(&sdk)).await;
    // 3.
    let mut runs = Vec::new();
    for c in CONCURRENCY {
        let name = format!("worker at concurrency {c}");
        if let Some(r) = section(&name, &mut failures, worker_throughput(&sdk, c)).await {
            runs.push(r);
        }
    }
    // 3b. the compute modes, beside each other at one concurrency.
    let modes_r = section("compute modes", &mut failures, modes::section(&sdk, &root)).await;
    // 4.–6.: the idle worker runs on its own queue beside the paths and end-to-end sections
    // (a long poll costs the emulator nothing while it waits).
    let mut f_idle = Vec::new();
    let mut f_rest = Vec::new();
    let (idle_r, (paths_r, e2e_r)) = tokio::join!(
        section(
            "idle worker (65 s, beside the next sections)",
            &mut f_idle,
            idle(&sdk)
        ),
        async {
            let p = section("submit and status paths", &mut f_rest, paths(&sdk)).await;
            let e = section("end-to-end latency", &mut f_rest, e2e(&sdk)).await;
            (p, e)
        }
    );
    failures.extend(f_idle);
    failures.extend(f_rest);

    // Lambda artefacts, with the emulator behind submit and status.
    let lambda = {
        eprintln!("bench: Lambda artefacts …");
        let backend = async {
            let res = fresh(&sdk, "lambda").await?;
            let api = counted_api(&sdk, &res, &RequestCounter::default());
            let id = submit_one(&api, None).await?;
            Ok::<_, anyhow::Error>(lambda_init::Backend {
                endpoint: endpoint.clone(),
                table: res.table_name.clone(),
                queue_url: res.queue_url.clone(),
                caller_arn: support::ALICE.to_owned(),
                job_id: id.to_string(),
            })
        }
        .await;
        match backend {
            Ok(b) => {
                let r = lambda_init::section(Some(&b)).await;
                // A function none of whose cold starts worked could not be measured at all.
                if r.startup_skipped.is_none() {
                    for f in r.functions.iter().filter(|f| f.init_ms.is_empty()) {
                        failures.push(format!("Lambda start-up of {}: {:?}", f.name, r.errors));
                    }
                }
                Some(r)
            }
            Err(e) => {
                failures.push(format!("Lambda artefacts: {e:#}"));
                None
            }
        }
    };

    // ---- the table ----
    t.heading(format!(
        "1. emulator ceiling (moto {moto}, one process, single-threaded Python; measured in this run)"
    ));
    if let Some(c) = &ceil {
        t.row(
            "SQS send-batch(10) -> receive(10) -> delete-batch, 1 client",
            format!("{:.0} msg/s", c.sqs_msgs_per_s),
        );
        t.row(
            "  per call: send-batch / receive / delete-batch",
            format!(
                "{:.1} / {:.1} / {:.1} ms",
                c.sqs_send_ms, c.sqs_receive_ms, c.sqs_delete_ms
            ),
        );
        t.row(
            "DynamoDB UpdateItem, 1 caller",
            format!(
                "{:.0} calls/s ({:.1} ms each)",
                c.ddb_updates_per_s_1, c.ddb_update_ms
            ),
        );
        t.row(
            "DynamoDB UpdateItem, 8 callers at once",
            format!("{:.0} calls/s", c.ddb_updates_per_s_8),
        );
        j.insert(
            "ceiling".into(),
            json!({
                "sqs_messages_per_second": c.sqs_msgs_per_s,
                "sqs_send_batch_ms": c.sqs_send_ms,
                "sqs_receive_ms": c.sqs_receive_ms,
                "sqs_delete_batch_ms": c.sqs_delete_ms,
                "ddb_update_item_per_second_1": c.ddb_updates_per_s_1,
                "ddb_update_item_ms": c.ddb_update_ms,
                "ddb_update_item_per_second_8": c.ddb_updates_per_s_8,
            }),
        );
    }

    t.heading(format!(
        "2. throughput: no-op jobs, {THROUGHPUT_JOBS} per figure after {WARMUP_JOBS} warm-up, queue kept <= {} deep",
        REFILL_AT + 10
    ));
    let floor_rate = floor.map(|f| f.throughput.per_sec());
    if let Some(f) = &floor {
        let tp = f.throughput;
        t.row(
            "floor: plain loop, send-batch/receive(10)/claim/finish/delete-batch",
            format!(
                "{:.1} jobs/s{}",
                tp.per_sec(),
                if tp.capped { " (capped)" } else { "" }
            ),
        );
        let [send, recv, claim, finish, del] = f.ms_per_job;
        t.row(
            "  floor's time per job: send / receive / claim / finish / delete",
            format!("{send:.1} / {recv:.1} / {claim:.1} / {finish:.1} / {del:.1} ms"),
        );
        j.insert(
            "floor".into(),
            json!({
                "throughput": tp.to_json(),
                "ms_per_job": {"send_batch_share": send, "receive_share": recv, "claim": claim, "finish": finish, "delete_batch_share": del},
            }),
        );
    }
    let mut jruns = Vec::new();
    for r in &runs {
        let rate = r.throughput.per_sec();
        let ratio = floor_rate.map(|f| rate / f);
        let value = format!(
            "{rate:.1} jobs/s{}, {:.1} msg/receive{}",
            ratio.map_or(String::new(), |x| format!(" = {x:.3} x floor")),
            r.messages_per_receive,
            if r.throughput.capped { " (capped)" } else { "" }
        );
        match ratio {
            Some(x) => t.target(
                format!("sluice worker, concurrency {}", r.concurrency),
                value,
                ">= 0.8 x",
                x >= 0.8,
            ),
            None => t.row(
                format!("sluice worker, concurrency {}", r.concurrency),
                value,
            ),
        }
        let cost = PathCost::of(&r.counts, r.throughput.jobs.max(1) as f64, 0.0);
        jruns.push(json!({
            "concurrency": r.concurrency,
            "throughput": r.throughput.to_json(),
            "ratio_to_floor": ratio,
            "messages_per_receive": r.messages_per_receive,
            "requests": cost.to_json(),
        }));
    }
    j.insert("worker".into(), Value::Array(jruns));
    if let Some(m) = &modes_r {
        j.insert("modes".into(), m.report(&mut t));
    }

    t.heading(
        "3. AWS requests per job, counted at the SDK (every attempt), and $ per million jobs",
    );
    t.row(
        "prices: us-east-1 on-demand list",
        format!(
            "SQS ${SQS_PER_M_REQUESTS:.2}/M requests; DynamoDB ${DDB_PER_M_WRU:.3}/M WRU, \
             ${DDB_PER_M_RRU:.3}/M RRU; API Gateway HTTP API ${APIGW_HTTP_PER_M:.2}/M; \
             Lambda ${LAMBDA_PER_M_REQUESTS:.2}/M requests + ${LAMBDA_PER_MS_128_ARM}/ms \
             at 128 MB arm64 (duration shown apart, not in the $ totals)"
        ),
    );
    let mut jreq = serde_json::Map::new();
    let mut totals: Vec<(&str, f64)> = Vec::new();
    if let Some(p) = &paths_r {
        t.row(
            "no-op job record (finished) size",
            format!(
                "~{} B: each write 1 WRU, each consistent read 1 RRU",
                p.record_bytes
            ),
        );
        let submit = PathCost::of(&p.submit, p.submit_n as f64, 1.0);
        t.row(
            "submit POST /jobs",
            format!(
                "{:.2} req: {} +1 APIGW +1 Lambda = ${:.3}/M",
                submit.requests,
                submit.ops(),
                submit.usd_per_m
            ),
        );
        let keyed = PathCost::of(&p.keyed, p.keyed_n as f64, 1.0);
        t.row(
            "submit with Idempotency-Key",
            format!(
                "{:.2} req: {} = ${:.3}/M",
                keyed.requests,
                keyed.ops(),
                keyed.usd_per_m
            ),
        );
        let get = PathCost::of(&p.get, p.get_n as f64, 1.0);
        t.row(
            "status GET, finished job, no wait",
            format!(
                "{:.2} req: {} = ${:.3}/M",
                get.requests,
                get.ops(),
                get.usd_per_m
            ),
        );
        let wait = PathCost::of(&p.wait, p.wait_n as f64, 1.0);
        let wait_ms = stats(&p.wait_ms).0;
        t.row(
            format!(
                "status GET ?wait=20 on a job running {} s more",
                p.wait_job_runs.as_secs()
            ),
            format!(
                "{:.2} req: {} = ${:.3}/M + Lambda duration {:.0} ms = ${:.2}/M",
                wait.requests,
                wait.ops(),
                wait.usd_per_m,
                wait_ms,
                wait_ms * LAMBDA_PER_MS_128_ARM * 1e6
            ),
        );
        let (s50, _, _) = stats(&p.submit_ms);
        let (g50, _, _) = stats(&p.get_ms);
        t.row(
            "Lambda duration (local handler time, p50): submit / GET",
            format!(
                "{s50:.1} / {g50:.1} ms = ${:.4} / ${:.4} per M",
                s50 * LAMBDA_PER_MS_128_ARM * 1e6,
                g50 * LAMBDA_PER_MS_128_ARM * 1e6
            ),
        );
        totals.push(("submit", submit.usd_per_m));
        totals.push(("status GET", get.usd_per_m));
        jreq.insert("record_bytes".into(), json!(p.record_bytes));
        jreq.insert("submit".into(), submit.to_json());
        jreq.insert("submit_idempotency_key".into(), keyed.to_json());
        jreq.insert("status_get_no_wait".into(), get.to_json());
        jreq.insert(
            "status_get_wait".into(),
            json!({"job_runs_seconds": p.wait_job_runs.as_secs(), "handler_ms": p.wait_ms, "requests": wait.to_json()}),
        );
        jreq.insert(
            "local_handler_ms_p50".into(),
            json!({"submit": s50, "status_get": g50}),
        );
    }
    if let Some(r) = runs.iter().find(|r| r.concurrency == 32) {
        let w = PathCost::of(&r.counts, r.throughput.jobs.max(1) as f64, 0.0);
        t.target(
            "worker path, busy queue (concurrency 32)",
            format!("{:.2} req: {} = ${:.3}/M", w.requests, w.ops(), w.usd_per_m),
            "<= 2.5 req",
            w.requests <= 2.5,
        );
        totals.push(("worker", w.usd_per_m));
        jreq.insert("worker_busy_c32".into(), w.to_json());
    }
    for r in runs.iter().filter(|r| r.concurrency != 32) {
        let w = PathCost::of(&r.counts, r.throughput.jobs.max(1) as f64, 0.0);
        t.row(
            format!("worker path, busy queue (concurrency {})", r.concurrency),
            format!("{:.2} req: {} = ${:.3}/M", w.requests, w.ops(), w.usd_per_m),
        );
    }
    if let Some(e) = &e2e_r {
        let w = PathCost::of(&e.worker, e.jobs.max(1) as f64, 0.0);
        t.row(
            "worker path, one job at a time (end-to-end run)",
            format!("{:.2} req: {} = ${:.3}/M", w.requests, w.ops(), w.usd_per_m),
        );
        let s = PathCost::of(&e.status, e.jobs.max(1) as f64, 0.0);
        t.row(
            "status GET ?wait=20 until SUCCEEDED (end-to-end run)",
            format!("{:.2} req/job: {}", s.requests, s.ops()),
        );
        jreq.insert("worker_one_at_a_time".into(), w.to_json());
        jreq.insert("status_wait_e2e".into(), s.to_json());
    }
    if totals.len() == 3 {
        let sum: f64 = totals.iter().map(|(_, c)| c).sum();
        t.row(
            "a job: submit + worker (busy) + one status GET",
            format!("${sum:.2} per million jobs, Lambda duration excluded"),
        );
        jreq.insert("usd_per_million_jobs_total".into(), json!(sum));
    }
    jreq.insert(
        "prices".into(),
        json!({
            "region": "us-east-1",
            "sqs_standard_per_million_requests": SQS_PER_M_REQUESTS,
            "dynamodb_on_demand_per_million_wru": DDB_PER_M_WRU,
            "dynamodb_on_demand_per_million_rru": DDB_PER_M_RRU,
            "api_gateway_http_per_million_requests": APIGW_HTTP_PER_M,
            "lambda_per_million_requests": LAMBDA_PER_M_REQUESTS,
            "lambda_per_ms_128mb_arm64": LAMBDA_PER_MS_128_ARM,
        }),
    );
    j.insert("requests".into(), Value::Object(jreq));

    t.heading("4. idle worker (production receive_wait 20 s, no jobs)");
    if let Some(i) = &idle_r {
        t.target(
            format!(
                "receive requests per minute ({} s window)",
                i.window.as_secs()
            ),
            format!(
                "{:.2}/min ({} receives, one every {:.1} s)",
                i.per_minute, i.receives, i.mean_interval_s
            ),
            "<= 3/min",
            i.per_minute <= 3.0,
        );
        j.insert(
            "idle".into(),
            json!({"window_seconds": i.window.as_secs(), "receives": i.receives, "mean_interval_seconds": i.mean_interval_s, "per_minute": i.per_minute}),
        );
    }

    t.heading("5. end-to-end latency, no-op job, warm local stack (worker concurrency 8, receive_wait 20 s)");
    if let Some(e) = &e2e_r {
        let (p50, p99, max) = stats(&e.latency_ms);
        t.row(
            format!(
                "submit -> SUCCEEDED seen by GET ?wait=20, {} jobs{}",
                e.jobs,
                if e.capped { " (capped)" } else { "" }
            ),
            format!("p50 {p50:.1} ms, p99 {p99:.1} ms, max {max:.1} ms"),
        );
        let (r50, r99, rmax) = stats(&e.recorded_ms);
        t.row(
            "  of which submit -> result recorded (record timestamps)",
            format!("p50 {r50:.0} ms, p99 {r99:.0} ms, max {rmax:.0} ms"),
        );
        let (q50, q99, _) = stats(&e.queued_ms);
        t.row(
            "  of which submit -> claimed",
            format!("p50 {q50:.0} ms, p99 {q99:.0} ms"),
        );
        j.insert(
            "latency".into(),
            json!({
                "jobs": e.jobs, "capped": e.capped,
                "submit_to_succeeded_seen_ms": {"p50": p50, "p99": p99, "max": max},
                "submit_to_recorded_ms": {"p50": r50, "p99": r99, "max": rmax},
                "submit_to_claimed_ms": {"p50": q50, "p99": q99},
            }),
        );
    }

    t.heading("6. Lambda artefacts (arm64 sizes from make lambdas; start-up of the host build under a Runtime API emulator)");
    if let Some(l) = &lambda {
        for (figure, value) in l.lines() {
            t.row(figure, value);
        }
        j.insert("lambda".into(), l.to_json());
    }

    let took = started.elapsed().as_secs_f64();
    println!();
    println!("sluice bench: moto {moto} at {endpoint}, {cores} cores, run took {took:.0} s");
    println!();
    t.print();
    if !failures.is_empty() {
        println!();
        println!("sections that could not run:");
        for f in &failures {
            println!("  {f}");
        }
    }
    j.insert(
        "run".into(),
        json!({"moto": moto, "endpoint": endpoint, "cores": cores, "seconds": took, "failures": failures}),
    );
    j.insert("summary".into(), t.to_json());
    let out = root.join("bench-results");
    let written = std::fs::create_dir_all(&out).and_then(|()| {
        std::fs::write(
            out.join("bench.json"),
            serde_json::to_string_pretty(&Value::Object(j)).unwrap_or_default(),
        )
    });
    match written {
        Ok(()) => println!("\nwritten to {}", out.join("bench.json").display()),
        Err(e) => {
            eprintln!("could not write {}: {e}", out.display());
            return ExitCode::FAILURE;
        }
    }
    if failures.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
