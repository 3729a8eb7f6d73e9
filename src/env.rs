//! The environment-variable contract between the deployment (the CDK app in `cdk/`, the local
//! stack in `Makefile`) and the sluice binaries.
//!
//! Every variable a binary reads is named here and nowhere else; the CDK app keeps the same list
//! on its side and a test compares the two. Resource names have no default; tuning knobs do.

/// DynamoDB table holding the job records. Read by: submit, status, worker, backlog, ingest,
/// local API.
pub const TABLE_NAME: &str = "SLUICE_TABLE_NAME";
/// URL of the SQS jobs queue. Read by: submit, worker, local API, backlog, ingest.
pub const QUEUE_URL: &str = "SLUICE_QUEUE_URL";

/// S3 bucket holding uploaded job inputs (`POST /uploads`, `uploads/<owner>/<id>` keys) and what
/// jobs produce (`results/…`, `outputs/…`, which the status route presigns downloads of, and the
/// outbox copies to a pipeline job's sink). Unset: the API refuses uploads, the worker runs only
/// jobs without a file and stores no output files, and the backlog function's outbox writes a
/// pipeline job's view but copies none of its files. Read by: submit, status, worker, backlog,
/// local API.
pub const PAYLOAD_BUCKET: &str = "SLUICE_PAYLOAD_BUCKET";
/// The largest upload `POST /uploads` accepts, in bytes (default and upper bound 5 TiB, S3's
/// largest object). Read by: submit, local API.
pub const MAX_UPLOAD_BYTES: &str = "SLUICE_MAX_UPLOAD_BYTES";
/// Seconds an upload's presigned URLs stay valid and within which a job must reference it
/// (default 3600, at most 7 days: SigV4's limit). Read by: submit, local API.
pub const UPLOAD_EXPIRY_SECONDS: &str = "SLUICE_UPLOAD_EXPIRY_SECONDS";
/// Comma-separated names of the S3 buckets whose objects jobs may name (`"input_file": {"s3":
/// "s3://bucket/key", "presigned_url": …}`), for data that already sits there; the caller proves
/// it may read the object with a GET presigned by its own credentials, and the worker reads it
/// with its role (the CDK app's `inputBuckets` grants it). Unset: jobs may name no such object.
/// Read by: submit, local API.
pub const INPUT_BUCKETS: &str = "SLUICE_INPUT_BUCKETS";

/// Attempts a job gets before it ends `FAILED` (default 3). Read by: submit, ingest, local API.
pub const MAX_ATTEMPTS: &str = "SLUICE_MAX_ATTEMPTS";
/// Days a finished job's record is kept before DynamoDB's TTL removes it (default 7).
/// Read by: submit, worker, backlog, ingest, local API.
pub const RETENTION_DAYS: &str = "SLUICE_RETENTION_DAYS";

/// Jobs one worker runs at once (default 4). Read by: worker.
pub const CONCURRENCY: &str = "SLUICE_CONCURRENCY";
/// Seconds a received message stays invisible, renewed by the heartbeat (default 60).
/// Read by: worker.
pub const VISIBILITY_TIMEOUT_SECONDS: &str = "SLUICE_VISIBILITY_TIMEOUT_SECONDS";
/// Seconds a claimed job's lease lasts, renewed by the heartbeat (default 60). Read by: worker.
pub const LEASE_SECONDS: &str = "SLUICE_LEASE_SECONDS";
/// Seconds between heartbeats of a running job (default: a third of the lease). Read by: worker.
pub const HEARTBEAT_SECONDS: &str = "SLUICE_HEARTBEAT_SECONDS";
/// Seconds a stopping worker lets running jobs finish before it releases them (default 90;
/// keep it below the task's stop timeout). Read by: worker.
pub const DRAIN_SECONDS: &str = "SLUICE_DRAIN_SECONDS";
/// Seconds after which a worker retires: it takes no new job, finishes those it runs without
/// a deadline, gives up its scale-in protection and exits, so ECS replaces it with a task of
/// the service's current definition (a rolling deploy under load completes). Each worker
/// retires up to a tenth earlier, by its id, so tasks started together do not leave together.
/// Unset: never. Read by: worker.
pub const MAX_TASK_AGE_SECONDS: &str = "SLUICE_MAX_TASK_AGE_SECONDS";
/// Long-poll wait of one receive, 1 to 20 seconds (default 20). Read by: worker.
pub const RECEIVE_WAIT_SECONDS: &str = "SLUICE_RECEIVE_WAIT_SECONDS";
/// First retry delay in seconds; doubles per attempt (default 2). Read by: worker.
pub const RETRY_BASE_SECONDS: &str = "SLUICE_RETRY_BASE_SECONDS";
/// Longest retry delay in seconds (default 300). Read by: worker.
pub const RETRY_MAX_SECONDS: &str = "SLUICE_RETRY_MAX_SECONDS";
/// Deliveries of a message before SQS moves it to the dead-letter queue: the queue's redrive
/// policy's `maxReceiveCount` (default 12). The worker sends a job's message again, fresh,
/// before an event that is not the job's fault would spend its last delivery. Read by: worker.
pub const MAX_RECEIVE_COUNT: &str = "SLUICE_MAX_RECEIVE_COUNT";
/// Which compute the `sluice-worker` binary runs: `demo` (default), `process` (the user's program
/// over JSON lines, see `COMMAND`) or `http` (a model server, see `MODEL_URL`). Read by: worker.
pub const HANDLER: &str = "SLUICE_HANDLER";
/// The command of the `process` handler: the user's program, started once per slot, speaking the
/// JSON-lines protocol of `worker/PROTOCOL.md` (a JSON array of strings, or words split as a shell
/// would, without a shell's expansions). Read by: worker.
pub const COMMAND: &str = "SLUICE_COMMAND";
/// Base URL of the `http` handler's model server in the same task, which answers `GET /ping` and
/// `POST /invocations` (default `http://127.0.0.1:8080`). Read by: worker.
pub const MODEL_URL: &str = "SLUICE_MODEL_URL";
/// Seconds the handler's process or model server may take to become ready (default 600).
/// Read by: worker.
pub const STARTUP_SECONDS: &str = "SLUICE_STARTUP_SECONDS";
/// Time limit in seconds of a job that sets no `timeout_seconds` (default 3600). Read by: worker.
pub const JOB_TIMEOUT_SECONDS: &str = "SLUICE_JOB_TIMEOUT_SECONDS";
/// The longest `timeout_seconds` a job may ask for (default and upper bound 42300, below SQS's
/// 12-hour visibility cap). Read by: submit, worker, local API.
pub const MAX_JOB_TIMEOUT_SECONDS: &str = "SLUICE_MAX_JOB_TIMEOUT_SECONDS";
/// The worker's name in job records and logs (default: host name and process id).
/// Read by: worker.
pub const WORKER_ID: &str = "SLUICE_WORKER_ID";
/// CloudWatch namespace of the worker's job metrics (default `Sluice`; the deployment sets the
/// scaling policy's namespace). Read by: worker.
pub const METRIC_NAMESPACE: &str = "SLUICE_METRIC_NAMESPACE";
/// Log format: `json` (default in AWS) or `text` (default elsewhere). Read by: every binary.
pub const LOG_FORMAT: &str = "SLUICE_LOG_FORMAT";

/// What makes two IAM callers the same owner of jobs: `session` (default; each IAM user, IAM
/// Identity Center user, Cognito identity and session of a pinned role its own, every other
/// assumed role one owner) or `role` (every session of a role one owner). Read by: submit,
/// status, local API.
pub const OWNER_SCOPE: &str = "SLUICE_OWNER_SCOPE";
/// Comma-separated ARNs of roles whose trust policies pin their session names (a condition on
/// `sts:RoleSessionName`), so that each of their sessions is its own owner (default: none).
/// Read by: submit, status, local API.
pub const PINNED_SESSION_ROLES: &str = "SLUICE_PINNED_SESSION_ROLES";
/// Comma-separated IAM ARNs of the operators, who alone may pause and resume the pipeline
/// (`GET /pipeline`, `POST /pipeline/pause`, `POST /pipeline/resume`): users
/// (`arn:aws:iam::123456789012:user/ops`), the account's root, or roles
/// (`arn:aws:iam::123456789012:role/Operators`: every session of the role). Unset: nobody may.
/// Read by: status, local API.
pub const OPERATORS: &str = "SLUICE_OPERATORS";
/// `true` lets webhooks reach loopback addresses (and plain http): the local stack's setting,
/// where the receiver runs on the same machine. Unset or `false` (every deployment): webhooks go
/// over https to public addresses only, checked at submit and again at each send.
/// Read by: submit, worker, backlog, local API.
pub const WEBHOOK_ALLOW_LOOPBACK: &str = "SLUICE_WEBHOOK_ALLOW_LOOPBACK";
/// ARN of the SNS topic every job that `SUCCEEDED` is published to (unset: none).
/// Read by: submit, ingest, local API (which mark the jobs they accept), worker, backlog (which
/// publish).
pub const SUCCESS_TOPIC_ARN: &str = "SLUICE_SUCCESS_TOPIC_ARN";
/// ARN of the SNS topic every job that ended otherwise (`FAILED`, `CANCELLED`, `EXPIRED`) is
/// published to (unset: none). Read by: submit, ingest, local API, worker, backlog.
pub const ERROR_TOPIC_ARN: &str = "SLUICE_ERROR_TOPIC_ARN";
/// Name or ARN of the EventBridge bus every job's end is put on, as source `sluice` (unset:
/// none). Read by: submit, ingest, local API, worker, backlog.
pub const EVENT_BUS: &str = "SLUICE_EVENT_BUS";
/// Address the local API server listens on (default `127.0.0.1:8080`). Read by: local API.
pub const LISTEN_ADDR: &str = "SLUICE_LISTEN_ADDR";

/// URL of the jobs queue's dead-letter queue: the backlog function ends `FAILED` the jobs whose
/// messages sit there and that run nowhere (unset: it does not). Read by: backlog, `sluice dlq`.
pub const DLQ_URL: &str = "SLUICE_DLQ_URL";
/// Name or ARN of the ECS cluster running the workers. Read by: backlog, submit (scale from zero).
pub const CLUSTER: &str = "SLUICE_CLUSTER";
/// Name of the ECS service running the workers. Read by: backlog, submit (scale from zero).
pub const SERVICE: &str = "SLUICE_SERVICE";
/// The scaling policy as JSON text (the content of `scaling/policy.json`). Read by: backlog.
pub const SCALING_POLICY: &str = "SLUICE_SCALING_POLICY";
/// Seconds between two samples inside one backlog run (default 10). Read by: backlog.
pub const SAMPLE_INTERVAL_SECONDS: &str = "SLUICE_SAMPLE_INTERVAL_SECONDS";

/// The pipeline's bucket: objects created under its input prefix become jobs (unset: no
/// pipeline; the ingest function refuses to start). Read by: ingest (the local stack sets its
/// own pipeline up: its bucket, `in/`, `out/` and the local identity).
pub const PIPELINE_BUCKET: &str = "SLUICE_PIPELINE_BUCKET";
/// The key prefix whose new objects become jobs (default `in/`). Read by: ingest.
pub const PIPELINE_INPUT_PREFIX: &str = "SLUICE_PIPELINE_INPUT_PREFIX";
/// The key prefix pipeline jobs' outcomes are written under (default `out/`); it must not
/// overlap the input prefix. Read by: ingest.
pub const PIPELINE_OUTPUT_PREFIX: &str = "SLUICE_PIPELINE_OUTPUT_PREFIX";
/// The owner of the pipeline's jobs, as the API names callers (`iam:` and an IAM user's ARN,
/// `iam:arn:aws:sts::123456789012:assumed-role/Role` for every session of a role, `jwt:…`,
/// `lambda:…`): the caller who sees them through the API and the CLI. Read by: ingest.
pub const PIPELINE_OWNER: &str = "SLUICE_PIPELINE_OWNER";

/// Every variable above, for the contract test against the CDK app's list.
pub const ALL: &[&str] = &[
    TABLE_NAME,
    QUEUE_URL,
    PAYLOAD_BUCKET,
    MAX_UPLOAD_BYTES,
    UPLOAD_EXPIRY_SECONDS,
    INPUT_BUCKETS,
    MAX_ATTEMPTS,
    RETENTION_DAYS,
    CONCURRENCY,
    VISIBILITY_TIMEOUT_SECONDS,
    LEASE_SECONDS,
    HEARTBEAT_SECONDS,
    DRAIN_SECONDS,
    MAX_TASK_AGE_SECONDS,
    RECEIVE_WAIT_SECONDS,
    RETRY_BASE_SECONDS,
    RETRY_MAX_SECONDS,
    MAX_RECEIVE_COUNT,
    HANDLER,
    COMMAND,
    MODEL_URL,
    STARTUP_SECONDS,
    JOB_TIMEOUT_SECONDS,
    MAX_JOB_TIMEOUT_SECONDS,
    WORKER_ID,
    METRIC_NAMESPACE,
    LOG_FORMAT,
    OWNER_SCOPE,
    PINNED_SESSION_ROLES,
    OPERATORS,
    WEBHOOK_ALLOW_LOOPBACK,
    SUCCESS_TOPIC_ARN,
    ERROR_TOPIC_ARN,
    EVENT_BUS,
    LISTEN_ADDR,
    DLQ_URL,
    CLUSTER,
    SERVICE,
    SCALING_POLICY,
    SAMPLE_INTERVAL_SECONDS,
    PIPELINE_BUCKET,
    PIPELINE_INPUT_PREFIX,
    PIPELINE_OUTPUT_PREFIX,
    PIPELINE_OWNER,
];
