/**
 * The environment-variable contract between this app and the sluice binaries.
 *
 * The Rust side names every variable in `src/env.rs`; this module is the only place on the CDK side
 * that spells them, and `test/env-contract.test.ts` proves that both lists agree. Each binary gets
 * exactly the variables it reads, through one typed builder per binary.
 */

/** Every variable of `src/env.rs`, keyed by the Rust constant's name. */
export const ENV = {
  TABLE_NAME: 'SLUICE_TABLE_NAME',
  QUEUE_URL: 'SLUICE_QUEUE_URL',
  PAYLOAD_BUCKET: 'SLUICE_PAYLOAD_BUCKET',
  MAX_UPLOAD_BYTES: 'SLUICE_MAX_UPLOAD_BYTES',
  UPLOAD_EXPIRY_SECONDS: 'SLUICE_UPLOAD_EXPIRY_SECONDS',
  INPUT_BUCKETS: 'SLUICE_INPUT_BUCKETS',
  MAX_ATTEMPTS: 'SLUICE_MAX_ATTEMPTS',
  RETENTION_DAYS: 'SLUICE_RETENTION_DAYS',
  CONCURRENCY: 'SLUICE_CONCURRENCY',
  VISIBILITY_TIMEOUT_SECONDS: 'SLUICE_VISIBILITY_TIMEOUT_SECONDS',
  LEASE_SECONDS: 'SLUICE_LEASE_SECONDS',
  HEARTBEAT_SECONDS: 'SLUICE_HEARTBEAT_SECONDS',
  DRAIN_SECONDS: 'SLUICE_DRAIN_SECONDS',
  MAX_TASK_AGE_SECONDS: 'SLUICE_MAX_TASK_AGE_SECONDS',
  RECEIVE_WAIT_SECONDS: 'SLUICE_RECEIVE_WAIT_SECONDS',
  RETRY_BASE_SECONDS: 'SLUICE_RETRY_BASE_SECONDS',
  RETRY_MAX_SECONDS: 'SLUICE_RETRY_MAX_SECONDS',
  MAX_RECEIVE_COUNT: 'SLUICE_MAX_RECEIVE_COUNT',
  HANDLER: 'SLUICE_HANDLER',
  COMMAND: 'SLUICE_COMMAND',
  MODEL_URL: 'SLUICE_MODEL_URL',
  STARTUP_SECONDS: 'SLUICE_STARTUP_SECONDS',
  JOB_TIMEOUT_SECONDS: 'SLUICE_JOB_TIMEOUT_SECONDS',
  MAX_JOB_TIMEOUT_SECONDS: 'SLUICE_MAX_JOB_TIMEOUT_SECONDS',
  WORKER_ID: 'SLUICE_WORKER_ID',
  METRIC_NAMESPACE: 'SLUICE_METRIC_NAMESPACE',
  LOG_FORMAT: 'SLUICE_LOG_FORMAT',
  OWNER_SCOPE: 'SLUICE_OWNER_SCOPE',
  PINNED_SESSION_ROLES: 'SLUICE_PINNED_SESSION_ROLES',
  OPERATORS: 'SLUICE_OPERATORS',
  WEBHOOK_ALLOW_LOOPBACK: 'SLUICE_WEBHOOK_ALLOW_LOOPBACK',
  LISTEN_ADDR: 'SLUICE_LISTEN_ADDR',
  CLUSTER: 'SLUICE_CLUSTER',
  SERVICE: 'SLUICE_SERVICE',
  DLQ_URL: 'SLUICE_DLQ_URL',
  SCALING_POLICY: 'SLUICE_SCALING_POLICY',
  SAMPLE_INTERVAL_SECONDS: 'SLUICE_SAMPLE_INTERVAL_SECONDS',
  PIPELINE_BUCKET: 'SLUICE_PIPELINE_BUCKET',
  PIPELINE_INPUT_PREFIX: 'SLUICE_PIPELINE_INPUT_PREFIX',
  PIPELINE_OUTPUT_PREFIX: 'SLUICE_PIPELINE_OUTPUT_PREFIX',
  PIPELINE_OWNER: 'SLUICE_PIPELINE_OWNER',
  SUCCESS_TOPIC_ARN: 'SLUICE_SUCCESS_TOPIC_ARN',
  ERROR_TOPIC_ARN: 'SLUICE_ERROR_TOPIC_ARN',
  EVENT_BUS: 'SLUICE_EVENT_BUS',
} as const;

/** One variable name of the contract. */
export type EnvName = (typeof ENV)[keyof typeof ENV];

/**
 * Variables the deployment never sets: local-only ones (the local API's listen address) and tuning
 * knobs whose Rust defaults are right in AWS (the worker id defaults to the task's host name).
 */
export const NOT_DEPLOYED: readonly EnvName[] = [
  ENV.LISTEN_ADDR,
  // Webhooks to loopback are for the local stack only: unset, every deployment refuses them.
  ENV.WEBHOOK_ALLOW_LOOPBACK,
  ENV.WORKER_ID,
  ENV.HEARTBEAT_SECONDS,
  ENV.RECEIVE_WAIT_SECONDS,
  ENV.RETRY_BASE_SECONDS,
  ENV.RETRY_MAX_SECONDS,
];

/** The binaries this app deploys. */
export type Binary = 'submit' | 'status' | 'worker' | 'backlog' | 'ingest';

/** Log format every deployed binary gets: CloudWatch Logs Insights parses JSON lines. */
const LOG_FORMAT_IN_AWS = 'json';

/**
 * The variables each deployed binary reads, in the order the builders below set them. The worker's
 * list is what it may read in any handler mode; {@link WORKER_MODE_READS} says which of those only
 * one mode reads, and the builder sets those in that mode only.
 */
export const READS: Readonly<Record<Binary, readonly EnvName[]>> = {
  submit: [
    ENV.TABLE_NAME,
    ENV.QUEUE_URL,
    ENV.PAYLOAD_BUCKET,
    ENV.MAX_UPLOAD_BYTES,
    ENV.UPLOAD_EXPIRY_SECONDS,
    ENV.INPUT_BUCKETS,
    ENV.MAX_ATTEMPTS,
    ENV.RETENTION_DAYS,
    ENV.CLUSTER,
    ENV.SERVICE,
    ENV.MAX_JOB_TIMEOUT_SECONDS,
    ENV.OWNER_SCOPE,
    ENV.PINNED_SESSION_ROLES,
    ENV.SUCCESS_TOPIC_ARN,
    ENV.ERROR_TOPIC_ARN,
    ENV.EVENT_BUS,
    ENV.LOG_FORMAT,
  ],
  status: [ENV.TABLE_NAME, ENV.PAYLOAD_BUCKET, ENV.OWNER_SCOPE, ENV.PINNED_SESSION_ROLES, ENV.OPERATORS, ENV.LOG_FORMAT],
  worker: [
    ENV.TABLE_NAME,
    ENV.QUEUE_URL,
    ENV.PAYLOAD_BUCKET,
    ENV.RETENTION_DAYS,
    ENV.CONCURRENCY,
    ENV.VISIBILITY_TIMEOUT_SECONDS,
    ENV.LEASE_SECONDS,
    ENV.DRAIN_SECONDS,
    ENV.MAX_TASK_AGE_SECONDS,
    ENV.MAX_RECEIVE_COUNT,
    ENV.HANDLER,
    ENV.COMMAND,
    ENV.MODEL_URL,
    ENV.STARTUP_SECONDS,
    ENV.JOB_TIMEOUT_SECONDS,
    ENV.MAX_JOB_TIMEOUT_SECONDS,
    ENV.METRIC_NAMESPACE,
    ENV.SUCCESS_TOPIC_ARN,
    ENV.ERROR_TOPIC_ARN,
    ENV.EVENT_BUS,
    ENV.LOG_FORMAT,
  ],
  backlog: [
    ENV.QUEUE_URL,
    ENV.CLUSTER,
    ENV.SERVICE,
    ENV.SCALING_POLICY,
    ENV.SAMPLE_INTERVAL_SECONDS,
    ENV.DLQ_URL,
    ENV.TABLE_NAME,
    ENV.RETENTION_DAYS,
    ENV.PAYLOAD_BUCKET,
    ENV.SUCCESS_TOPIC_ARN,
    ENV.ERROR_TOPIC_ARN,
    ENV.EVENT_BUS,
    ENV.LOG_FORMAT,
  ],
  ingest: [
    ENV.TABLE_NAME,
    ENV.QUEUE_URL,
    ENV.PIPELINE_BUCKET,
    ENV.PIPELINE_INPUT_PREFIX,
    ENV.PIPELINE_OUTPUT_PREFIX,
    ENV.PIPELINE_OWNER,
    ENV.MAX_ATTEMPTS,
    ENV.RETENTION_DAYS,
    ENV.SUCCESS_TOPIC_ARN,
    ENV.ERROR_TOPIC_ARN,
    ENV.EVENT_BUS,
    ENV.LOG_FORMAT,
  ],
};

/** The worker's handler modes (`SLUICE_HANDLER`, worker/PROTOCOL.md). */
export type HandlerMode = 'demo' | 'process' | 'http';

/** Worker variables that only some handler modes read; every other worker variable is always set. */
export const WORKER_MODE_READS: Readonly<Record<HandlerMode, readonly EnvName[]>> = {
  demo: [],
  process: [ENV.COMMAND, ENV.STARTUP_SECONDS],
  http: [ENV.MODEL_URL, ENV.STARTUP_SECONDS],
};

/**
 * Variables set only with the `events` option, and then only for the targets the deployment has
 * (a success and an error topic, a bus): without it the binaries that read them get none.
 */
export const EVENTS_READS: readonly EnvName[] = [ENV.SUCCESS_TOPIC_ARN, ENV.ERROR_TOPIC_ARN, ENV.EVENT_BUS];

/** Variables a binary reads, less those of the `events` option: what a deployment without it sets. */
export function withoutEvents(names: readonly EnvName[]): EnvName[] {
  return names.filter((n) => !EVENTS_READS.includes(n));
}

/** The variables the worker reads in one handler mode, in the builder's order. */
export function workerReads(mode: HandlerMode): EnvName[] {
  const modal = new Set(Object.values(WORKER_MODE_READS).flat());
  return READS.worker.filter((n) => !modal.has(n) || WORKER_MODE_READS[mode].includes(n));
}

/**
 * Where every job's end is published (src/events.rs): a success topic, an error topic and a bus,
 * each optional. A variable whose target the deployment does not have is not set at all.
 */
export interface EventsEnv {
  /** SNS topic of the jobs that `SUCCEEDED`. */
  readonly successTopicArn?: string;
  /** SNS topic of the jobs that ended otherwise (`FAILED`, `CANCELLED`, `EXPIRED`). */
  readonly errorTopicArn?: string;
  /** EventBridge bus (name or ARN) every end is put on. */
  readonly eventBus?: string;
}

/** What the submit Lambda reads. */
export interface SubmitEnv {
  readonly tableName: string;
  readonly queueUrl: string;
  /** The bucket uploads (`POST /uploads`) go to. */
  readonly payloadBucket: string;
  /** The largest upload accepted, in bytes. */
  readonly maxUploadBytes: number;
  /** How long an upload's URLs last, and within which a job must name it. */
  readonly uploadExpirySeconds: number;
  /** The buckets whose objects jobs may name (`s3://bucket/key`); empty: none. */
  readonly inputBuckets: readonly string[];
  readonly maxAttempts: number;
  readonly retentionDays: number;
  /** Cluster of the worker service, for the scale-from-zero nudge. */
  readonly clusterName: string;
  /** The worker service, for the scale-from-zero nudge. */
  readonly serviceName: string;
  /** The longest `timeout_seconds` a job may ask for. */
  readonly maxJobTimeoutSeconds: number;
  /** What makes two IAM callers the same owner. */
  readonly ownerScope: OwnerScope;
  /** ARNs of the roles whose trust policies pin their session names. */
  readonly pinnedSessionRoleArns: readonly string[];
  /**
   * Where job ends are published: submit marks each job it accepts as one to publish.
   *
   * @default - none: no job is published
   */
  readonly events?: EventsEnv;
}

/**
 * Whose jobs a caller sees: each caller its own as far as AWS vouches for it (`session`: IAM users,
 * IAM Identity Center users, Cognito identities, sessions of pinned roles; any other assumed role is
 * one owner), or one owner per role (`role`).
 */
export type OwnerScope = 'session' | 'role';

/** What the status Lambda reads. */
export interface StatusEnv {
  readonly tableName: string;
  /** The bucket of the files jobs produced, which the status function presigns downloads of. */
  readonly payloadBucket: string;
  readonly ownerScope: OwnerScope;
  readonly pinnedSessionRoleArns: readonly string[];
  /** IAM user and role ARNs of the operators, who alone may pause and resume the pipeline. */
  readonly operatorArns: readonly string[];
}

/** What the worker reads. */
export interface WorkerEnv {
  readonly tableName: string;
  readonly queueUrl: string;
  /** The bucket the jobs' uploaded files are downloaded from, and their outputs stored in. */
  readonly payloadBucket: string;
  /** Days a finished job's record is kept (the worker sets the TTL when it finishes a job). */
  readonly retentionDays: number;
  readonly concurrency: number;
  readonly visibilityTimeoutSeconds: number;
  readonly leaseSeconds: number;
  /** The queue's redrive limit, so the worker can keep releases and retries from spending it. */
  readonly maxReceiveCount: number;
  readonly drainSeconds: number;
  /**
   * Age after which a worker takes no new job, finishes the ones it runs and exits (the service
   * starts a fresh task if one is still wanted), so a rolling deploy under load completes.
   */
  readonly maxTaskAgeSeconds: number;
  /** The handler mode and its settings. */
  readonly handler: WorkerHandlerEnv;
  /** Time limit of a job that sets no `timeout_seconds`. */
  readonly jobTimeoutSeconds: number;
  /** The longest `timeout_seconds` a job may ask for (the worker caps every attempt at it). */
  readonly maxJobTimeoutSeconds: number;
  /** Namespace of the job metrics (EMF), the scaling policy's. */
  readonly metricNamespace: string;
  /**
   * Where job ends are published: the worker's outbox publishes each end it announces.
   *
   * @default - none
   */
  readonly events?: EventsEnv;
}

/** The handler settings in the worker's environment, one shape per mode. */
export type WorkerHandlerEnv =
  | { readonly mode: 'demo' }
  | {
      readonly mode: 'process';
      /** The program and its arguments; written as a JSON array. */
      readonly command: readonly string[];
      readonly startupSeconds: number;
    }
  | {
      readonly mode: 'http';
      /** Base URL of the model server. */
      readonly modelUrl: string;
      readonly startupSeconds: number;
    };

/** What the backlog Lambda reads. */
export interface BacklogEnv {
  readonly queueUrl: string;
  readonly clusterName: string;
  readonly serviceName: string;
  /** The scaling policy as JSON text. */
  readonly scalingPolicy: string;
  readonly sampleIntervalSeconds: number;
  /** Reconciled on every run: jobs whose messages sit there and run nowhere end FAILED. */
  readonly deadLetterQueueUrl: string;
  readonly tableName: string;
  readonly retentionDays: number;
  /**
   * The payload bucket: the outbox copies a pipeline job's stored result and output files from
   * it to the job's sink.
   */
  readonly payloadBucket: string;
  /**
   * Where job ends are published: the outbox publishes the ends that are due.
   *
   * @default - none
   */
  readonly events?: EventsEnv;
}

/** What the ingest Lambda reads: where jobs go, and the pipeline it makes them for. */
export interface IngestEnv {
  readonly tableName: string;
  readonly queueUrl: string;
  /** The bucket whose new objects under `inputPrefix` become jobs. */
  readonly pipelineBucket: string;
  readonly inputPrefix: string;
  /** Where the outcomes of its jobs are written; never overlaps `inputPrefix`. */
  readonly outputPrefix: string;
  /** The owner of its jobs, as the API names callers (`iam:arn:aws:sts::…:assumed-role/ops`). */
  readonly owner: string;
  readonly maxAttempts: number;
  readonly retentionDays: number;
  /**
   * Where job ends are published: ingest marks each job it makes as one to publish.
   *
   * @default - none
   */
  readonly events?: EventsEnv;
}

/** The event targets' variables: only those of the targets the deployment has. */
function eventsVars(e: EventsEnv | undefined): Record<string, string> {
  return {
    ...(e?.successTopicArn === undefined ? {} : { [ENV.SUCCESS_TOPIC_ARN]: e.successTopicArn }),
    ...(e?.errorTopicArn === undefined ? {} : { [ENV.ERROR_TOPIC_ARN]: e.errorTopicArn }),
    ...(e?.eventBus === undefined ? {} : { [ENV.EVENT_BUS]: e.eventBus }),
  };
}

/** Environment of the submit Lambda. */
export function submitEnv(e: SubmitEnv): Record<string, string> {
  return {
    [ENV.TABLE_NAME]: e.tableName,
    [ENV.QUEUE_URL]: e.queueUrl,
    [ENV.PAYLOAD_BUCKET]: e.payloadBucket,
    [ENV.MAX_UPLOAD_BYTES]: String(e.maxUploadBytes),
    [ENV.UPLOAD_EXPIRY_SECONDS]: String(e.uploadExpirySeconds),
    [ENV.INPUT_BUCKETS]: e.inputBuckets.join(','),
    [ENV.MAX_ATTEMPTS]: String(e.maxAttempts),
    [ENV.RETENTION_DAYS]: String(e.retentionDays),
    [ENV.CLUSTER]: e.clusterName,
    [ENV.SERVICE]: e.serviceName,
    [ENV.MAX_JOB_TIMEOUT_SECONDS]: String(e.maxJobTimeoutSeconds),
    [ENV.OWNER_SCOPE]: e.ownerScope,
    [ENV.PINNED_SESSION_ROLES]: e.pinnedSessionRoleArns.join(','),
    ...eventsVars(e.events),
    [ENV.LOG_FORMAT]: LOG_FORMAT_IN_AWS,
  };
}

/** Environment of the status Lambda. */
export function statusEnv(e: StatusEnv): Record<string, string> {
  return {
    [ENV.TABLE_NAME]: e.tableName,
    [ENV.PAYLOAD_BUCKET]: e.payloadBucket,
    [ENV.OWNER_SCOPE]: e.ownerScope,
    [ENV.PINNED_SESSION_ROLES]: e.pinnedSessionRoleArns.join(','),
    [ENV.OPERATORS]: e.operatorArns.join(','),
    [ENV.LOG_FORMAT]: LOG_FORMAT_IN_AWS,
  };
}

/** Environment of the worker container: the mode's own variables only in that mode. */
export function workerEnv(e: WorkerEnv): Record<string, string> {
  const h = e.handler;
  return {
    [ENV.TABLE_NAME]: e.tableName,
    [ENV.QUEUE_URL]: e.queueUrl,
    [ENV.PAYLOAD_BUCKET]: e.payloadBucket,
    [ENV.RETENTION_DAYS]: String(e.retentionDays),
    [ENV.CONCURRENCY]: String(e.concurrency),
    [ENV.VISIBILITY_TIMEOUT_SECONDS]: String(e.visibilityTimeoutSeconds),
    [ENV.LEASE_SECONDS]: String(e.leaseSeconds),
    [ENV.MAX_RECEIVE_COUNT]: String(e.maxReceiveCount),
    [ENV.DRAIN_SECONDS]: String(e.drainSeconds),
    [ENV.MAX_TASK_AGE_SECONDS]: String(e.maxTaskAgeSeconds),
    [ENV.HANDLER]: h.mode,
    ...(h.mode === 'process' ? { [ENV.COMMAND]: JSON.stringify(h.command) } : {}),
    ...(h.mode === 'http' ? { [ENV.MODEL_URL]: h.modelUrl } : {}),
    ...(h.mode === 'demo' ? {} : { [ENV.STARTUP_SECONDS]: String(h.startupSeconds) }),
    [ENV.JOB_TIMEOUT_SECONDS]: String(e.jobTimeoutSeconds),
    [ENV.MAX_JOB_TIMEOUT_SECONDS]: String(e.maxJobTimeoutSeconds),
    [ENV.METRIC_NAMESPACE]: e.metricNamespace,
    ...eventsVars(e.events),
    [ENV.LOG_FORMAT]: LOG_FORMAT_IN_AWS,
  };
}

/** Environment of the backlog Lambda. */
export function backlogEnv(e: BacklogEnv): Record<string, string> {
  return {
    [ENV.QUEUE_URL]: e.queueUrl,
    [ENV.CLUSTER]: e.clusterName,
    [ENV.SERVICE]: e.serviceName,
    [ENV.SCALING_POLICY]: e.scalingPolicy,
    [ENV.SAMPLE_INTERVAL_SECONDS]: String(e.sampleIntervalSeconds),
    [ENV.DLQ_URL]: e.deadLetterQueueUrl,
    [ENV.TABLE_NAME]: e.tableName,
    [ENV.RETENTION_DAYS]: String(e.retentionDays),
    [ENV.PAYLOAD_BUCKET]: e.payloadBucket,
    ...eventsVars(e.events),
    [ENV.LOG_FORMAT]: LOG_FORMAT_IN_AWS,
  };
}

/** Environment of the ingest Lambda. */
export function ingestEnv(e: IngestEnv): Record<string, string> {
  return {
    [ENV.TABLE_NAME]: e.tableName,
    [ENV.QUEUE_URL]: e.queueUrl,
    [ENV.PIPELINE_BUCKET]: e.pipelineBucket,
    [ENV.PIPELINE_INPUT_PREFIX]: e.inputPrefix,
    [ENV.PIPELINE_OUTPUT_PREFIX]: e.outputPrefix,
    [ENV.PIPELINE_OWNER]: e.owner,
    [ENV.MAX_ATTEMPTS]: String(e.maxAttempts),
    [ENV.RETENTION_DAYS]: String(e.retentionDays),
    ...eventsVars(e.events),
    [ENV.LOG_FORMAT]: LOG_FORMAT_IN_AWS,
  };
}
