import * as path from 'node:path';
import * as fs from 'node:fs';
import { CfnOutput, CfnResource, Duration, RemovalPolicy, Stack, StackProps } from 'aws-cdk-lib';
import * as lambda from 'aws-cdk-lib/aws-lambda';
import * as ec2 from 'aws-cdk-lib/aws-ec2';
import * as iam from 'aws-cdk-lib/aws-iam';
import * as logs from 'aws-cdk-lib/aws-logs';
import { Construct } from 'constructs';
import { CpuArchitecture } from './capacity';
import { OwnerScope } from './env';
import { BacklogScaling } from './constructs/backlog-scaling';
import { JobApi, JwtAuthorization, checkPinnedSessionRole } from './constructs/job-api';
import { EventsOptions, JobEvents } from './constructs/job-events';
import { JobQueue } from './constructs/job-queue';
import { JobTable } from './constructs/job-table';
import { Observability } from './constructs/observability';
import { Pipeline, PipelineOptions } from './constructs/pipeline';
import { GpuWorkers, SpotStrategy, Workers } from './constructs/workers';
import { WorkerHandler } from './handler';
import { acknowledge } from './nag';
import { DEFAULT_POLICY_FILE, REPO_ROOT, loadScalingPolicy } from './policy';
import { WorkerImage } from './worker-image';

/**
 * The most attempts a caller may ask for per job (`max_attempts` in `POST /jobs`; the Rust API's
 * `MAX_ATTEMPTS_LIMIT`). Retries reuse the job's message, so each attempt is one delivery.
 */
export const JOB_MAX_ATTEMPTS_LIMIT = 10;

/** EC2 ids: a prefix and 8 or 17 hex digits. */
const EC2_ID = (prefix: string) => new RegExp(`^${prefix}-([0-9a-f]{8}|[0-9a-f]{17})$`);

/** cargo-lambda's output folder: `<repo>/target/lambda/<name>/bootstrap`. */
export const DEFAULT_LAMBDA_ASSET_DIR = path.join(REPO_ROOT, 'target', 'lambda');

/** An existing VPC, given without a lookup. */
export interface ExistingVpc {
  readonly vpcId: string;
  /** Subnets for the worker tasks; a multiple of the number of AZs, in AZ order. */
  readonly subnetIds: string[];
  /** The subnets' availability zones. */
  readonly availabilityZones: string[];
  /**
   * The subnets are public (route to an internet gateway): tasks get public IPs.
   *
   * @default false - private subnets with a NAT gateway or VPC endpoints
   */
  readonly assignPublicIp?: boolean;
}

/** The optional EFS mount for model files, by id. */
export interface ModelFileSystemIds {
  readonly fileSystemId: string;
  readonly accessPointId: string;
  /**
   * @default '/models'
   */
  readonly mountPath?: string;
  /**
   * The mount targets' security group, to open NFS from the workers.
   *
   * @default - no rule is added
   */
  readonly securityGroupId?: string;
}

/** Properties of {@link SluiceStack}. */
export interface SluiceStackProps extends StackProps {
  /**
   * Folder with cargo-lambda's output (`submit/bootstrap`, `status/bootstrap`, `backlog/bootstrap`,
   * `ingest/bootstrap`).
   *
   * @default DEFAULT_LAMBDA_ASSET_DIR (`<repo>/target/lambda`)
   */
  readonly lambdaAssetDir?: string;
  /**
   * The scaling policy file.
   *
   * @default `<repo>/scaling/policy.json`
   */
  readonly scalingPolicyFile?: string;
  /**
   * Run the workers in an existing VPC.
   *
   * @default - a new two-AZ VPC with public subnets only (no NAT gateway) and gateway endpoints
   */
  readonly existingVpc?: ExistingVpc;
  /**
   * The worker image: `WorkerImage.fromDirectory('examples/sentiment')` (a Dockerfile inside the
   * repository, built with the repository root as the context), `WorkerImage.fromDirectory(dir)` (a
   * directory elsewhere, its own context) or `WorkerImage.fromUri(uri)` (an image in a registry).
   * An image of your own needs `workerHandler`.
   *
   * @default - built from `worker/Dockerfile` for linux/arm64
   */
  readonly workerImage?: WorkerImage;
  /**
   * Worker task CPU units.
   *
   * @default 1024
   */
  readonly taskCpu?: number;
  /**
   * Worker task memory (MiB).
   *
   * @default 2048
   */
  readonly taskMemoryMiB?: number;
  /**
   * Worker task ephemeral storage (GiB, 21 to 200): room for the files of the jobs a task runs at
   * once.
   *
   * @default 20
   */
  readonly taskStorageGiB?: number;
  /**
   * Jobs one worker runs at once (`SLUICE_CONCURRENCY`). It must equal the scaling policy's
   * `jobs_per_task`, from which the scaling targets are computed: a different value fails synth
   * (set `jobs_per_task` in the policy file to the worker's concurrency).
   *
   * @default - the scaling policy's `jobs_per_task`
   */
  readonly workerConcurrency?: number;
  /**
   * Age after which a worker takes no new job, finishes what it runs and exits
   * (`SLUICE_MAX_TASK_AGE_SECONDS`), so that a rolling deploy under load completes; the service
   * starts a fresh task if one is still wanted.
   *
   * @default Duration.hours(6)
   */
  readonly maxTaskAge?: Duration;
  /**
   * What the worker computes (worker/PROTOCOL.md): `{ mode: 'demo' }`, `{ mode: 'process', command,
   * startupTimeout? }` or `{ mode: 'http', modelUrl?, startupTimeout?, modelServer? }`.
   *
   * @default { mode: 'demo' } with the default image; required with `workerImage`
   */
  readonly workerHandler?: WorkerHandler;
  /**
   * Fewest worker tasks.
   *
   * @default - the policy's `min_tasks`
   */
  readonly minTasks?: number;
  /**
   * Most worker tasks.
   *
   * @default - the policy's `max_tasks`
   */
  readonly maxTasks?: number;
  /**
   * Run the workers on Spot capacity with an on-demand fallback: a capacity provider strategy of
   * Fargate Spot and Fargate (with `gpu`, of a Spot and an on-demand Auto Scaling group), the
   * base on on-demand, mixed by `spotStrategy`.
   *
   * @default false
   */
  readonly spot?: boolean;
  /**
   * How Spot and on-demand share the tasks, with `spot`: `onDemandBase` tasks on-demand first,
   * the rest `onDemandWeight` to `spotWeight`.
   *
   * @default { onDemandBase: 1, onDemandWeight: 1, spotWeight: 3 }
   */
  readonly spotStrategy?: SpotStrategy;
  /**
   * Run the worker service on EC2 GPU instances (the ECS GPU-optimised AMI, x86_64) instead of
   * Fargate: an Auto Scaling group capacity provider from zero instances, with managed scaling
   * and termination protection, `gpusPerTask` GPUs per task. The worker image must be
   * linux/amd64 (an image built here is), e.g. `WorkerImage.fromDirectory('examples/gpu-onnx')`.
   *
   * @default - Fargate (ARM64), no GPU
   */
  readonly gpu?: GpuWorkers;
  /**
   * The worker tasks' CPU architecture, and the platform images are built for. ECS runs Fargate
   * Spot tasks on X86_64 only and the GPU instances are x86_64: ARM64 with `spot` or `gpu` fails
   * synth with the rule.
   *
   * @default - 'arm64' (Graviton) on Fargate; 'x86_64' with `spot` or `gpu`
   */
  readonly cpuArchitecture?: CpuArchitecture;
  /**
   * Concurrency reserved for the backlog Lambda, so that a flood of long-polling status calls
   * cannot throttle the scaling loop (BACKLOG_RESERVED_CONCURRENCY, 2, fits it). Lambda refuses a
   * reservation that leaves fewer than 100 of the account's concurrency unreserved, and a new
   * account's quota may be 10: ask for it once the quota allows (`make preflight` checks).
   *
   * @default - none: a throttled run waits in Lambda's queue for at most a minute, the submit
   * function's nudge still starts the first task, and the loop's Throttles alarm reports it
   */
  readonly backlogReservedConcurrency?: number;
  /**
   * Every deploy that changes the workers' task definition runs at least one task of it, which
   * must turn healthy before the deploy completes, even with the service parked at zero (the
   * deployment circuit breaker rolls a broken image back); the idle rule parks it again after.
   *
   * @default true on Fargate; false with `gpu` (each deploy would start a GPU instance)
   */
  readonly deployProvesImage?: boolean;
  /**
   * Time limit of a job that sets no `timeout_seconds`; at the limit the attempt fails (or is
   * retried, with `"on_timeout": "retry"`).
   *
   * @default - 1 hour, or maxJobTimeout if that is shorter
   */
  readonly jobTimeout?: Duration;
  /**
   * The longest `timeout_seconds` a job may ask for (submit rejects longer; the worker caps every
   * attempt at it). At most 42,300 s: SQS's 12-hour visibility cap less 15 minutes.
   *
   * @default MAX_JOB_TIMEOUT_LIMIT (42,300 s)
   */
  readonly maxJobTimeout?: Duration;
  /**
   * A worker's lease on a claimed job, renewed by its heartbeat (every third of it); a crashed
   * worker's jobs are taken over after it. The queue's visibility timeout is this plus 30 s.
   *
   * @default Duration.seconds(60)
   */
  readonly leaseDuration?: Duration;
  /**
   * Attempts a job gets.
   *
   * @default 3
   */
  readonly maxAttempts?: number;
  /**
   * Deliveries before a message goes to the dead-letter queue; at least `maxAttempts`. Each attempt
   * (retries reuse the message) and each release by a draining worker is one delivery.
   *
   * @default max(maxAttempts, JOB_MAX_ATTEMPTS_LIMIT) + 2
   */
  readonly maxReceiveCount?: number;
  /**
   * Days job records (and payloads, a day longer) are kept.
   *
   * @default 7
   */
  readonly retentionDays?: number;
  /**
   * Whose jobs a caller sees: each caller its own as far as AWS vouches for who it is (`session`:
   * IAM users, IAM Identity Center users, Cognito identities, sessions of `pinnedSessionRoleArns`;
   * every session of any other assumed role is the role), or every session of a role one owner
   * (`role`).
   *
   * @default 'session'
   */
  readonly ownerScope?: OwnerScope;
  /**
   * ARNs of the roles whose trust policies pin their session names: each of their sessions is its
   * own owner (see JobApiProps.pinnedSessionRoles).
   *
   * @default - none
   */
  readonly pinnedSessionRoleArns?: string[];
  /**
   * IAM user or role ARNs of the operators, who alone may pause and resume the pipeline (see
   * JobApiProps.operators); give them the `OperatorPolicyArn` output's policy too.
   *
   * @default - none: nobody may pause or resume
   */
  readonly operatorArns?: string[];
  /**
   * Names of S3 buckets whose objects jobs may name (`s3://bucket/key`), for data that already sits
   * there: submit gets them as `SLUICE_INPUT_BUCKETS` and accepts an object only through a GET its
   * caller presigned with its own credentials; the workers' role may read their objects (see
   * JobApiProps.inputBuckets and WorkersProps.inputBuckets). A bucket of another account must
   * also allow the workers' role in its bucket policy.
   *
   * @default - none: jobs may name no object in S3
   */
  readonly inputBuckets?: string[];
  /**
   * How long a stopping worker drains; below the container's 120 s stop timeout.
   *
   * @default Duration.seconds(90)
   */
  readonly drainTimeout?: Duration;
  /**
   * Authorize the API with JWTs instead of IAM.
   *
   * @default - IAM (SigV4)
   */
  readonly jwt?: JwtAuthorization;
  /**
   * Steady-state requests per second of each route of the API (the `$default` stage's default
   * route settings apply to every route separately: `POST /jobs`, `GET /jobs/{id}` and
   * `DELETE /jobs/{id}` each get this rate; it is not a limit for the API as a whole).
   *
   * @default 50
   */
  readonly apiRateLimit?: number;
  /**
   * Burst of each route of the API (per route, as `apiRateLimit`).
   *
   * @default 100
   */
  readonly apiBurstLimit?: number;
  /**
   * E-mail address for the alarm topic. SNS sends it a confirmation message first: no alarm
   * reaches the address until its link is followed.
   *
   * @default - no subscription
   */
  readonly alarmEmail?: string;
  /**
   * Read-only EFS mount for model files.
   *
   * @default - none
   */
  readonly modelFileSystem?: ModelFileSystemIds;
  /**
   * Retention of every log group.
   *
   * @default logs.RetentionDays.ONE_MONTH
   */
  readonly logRetention?: logs.RetentionDays;
  /**
   * What happens to every log group of the stack when it is deleted (or the group leaves the
   * stack): `RemovalPolicy.DESTROY` deletes the logs with it, `RemovalPolicy.RETAIN` keeps them
   * (delete them by hand, or they stay and cost storage).
   *
   * @default RemovalPolicy.DESTROY
   */
  readonly logRemovalPolicy?: RemovalPolicy;
  /**
   * A job input the deployed handler accepts, published as the `SmokeInput` output for
   * `make smoke`.
   *
   * @default - `{"text": "hello sluice"}` for the demo handler; the `smoke-input.json` beside the
   * image's Dockerfile (each example has one); else none, and `make smoke` asks for one
   */
  readonly smokeInput?: unknown;
  /**
   * The S3 pipeline: objects created in a bucket under `inputPrefix` become jobs of `owner` (one
   * per object version), and each job's outcome is written back under `outputPrefix` (see
   * {@link PipelineOptions}).
   *
   * @default - none
   */
  readonly pipeline?: PipelineOptions;
  /**
   * Publish every job's end: to a success topic and an error topic the stack makes
   * (`{ topics: true }`, as SageMaker Asynchronous Inference does), to an EventBridge bus of the
   * account (`{ eventBus: 'default' }`, a bus name or ARN), or both (see {@link EventsOptions}).
   * The workers and the backlog function publish; submit and ingest mark the jobs they accept.
   *
   * @default - none: no topic is made, nothing is published
   */
  readonly events?: EventsOptions;
}

/** The file beside a Dockerfile that holds a job input its handler accepts. */
export const SMOKE_INPUT_FILE = 'smoke-input.json';

/** The smoke input that follows the handler and image, when one is known. */
function defaultSmokeInput(image: WorkerImage | undefined, handler: WorkerHandler | undefined): unknown {
  if (handler === undefined || handler.mode === 'demo') return { text: 'hello sluice' };
  const src = image?.source;
  if (src?.kind !== 'directory') return undefined;
  const file = path.join(path.dirname(path.resolve(src.buildContext, src.file)), SMOKE_INPUT_FILE);
  if (!fs.existsSync(file)) return undefined;
  try {
    return JSON.parse(fs.readFileSync(file, 'utf8'));
  } catch (e) {
    throw new Error(`${file} must hold a json job input: ${(e as Error).message}`);
  }
}

/** sluice: the jobs API, queue and table, the Fargate workers and their backlog scaling. */
export class SluiceStack extends Stack {
  public readonly vpc: ec2.IVpc;
  public readonly jobTable: JobTable;
  public readonly jobQueue: JobQueue;
  public readonly workers: Workers;
  public readonly jobApi: JobApi;
  public readonly scaling: BacklogScaling;
  public readonly observability: Observability;
  /** The S3 pipeline, with the `pipeline` option. */
  public readonly pipeline?: Pipeline;
  /** Where every job's end is published, with the `events` option. */
  public readonly events?: JobEvents;

  constructor(scope: Construct, id: string, props: SluiceStackProps = {}) {
    super(scope, id, props);
    const policy = loadScalingPolicy(props.scalingPolicyFile ?? DEFAULT_POLICY_FILE);
    const lambdaAssetDir = props.lambdaAssetDir ?? DEFAULT_LAMBDA_ASSET_DIR;
    const maxAttempts = props.maxAttempts ?? 3;
    const maxReceiveCount = props.maxReceiveCount ?? Math.max(maxAttempts, JOB_MAX_ATTEMPTS_LIMIT) + 2;
    if (maxReceiveCount < maxAttempts) {
      throw new Error(
        `maxReceiveCount (${maxReceiveCount}) must be at least maxAttempts (${maxAttempts}), or jobs reach the dead-letter queue early`,
      );
    }
    const retentionDays = props.retentionDays ?? 7;
    const logRetention = props.logRetention ?? logs.RetentionDays.ONE_MONTH;
    const logRemovalPolicy = props.logRemovalPolicy ?? RemovalPolicy.DESTROY;
    if (logRemovalPolicy !== RemovalPolicy.DESTROY && logRemovalPolicy !== RemovalPolicy.RETAIN) {
      throw new Error(`logRemovalPolicy must be RemovalPolicy.DESTROY or RemovalPolicy.RETAIN, got ${String(logRemovalPolicy)}`);
    }
    // The scaling targets count jobs_per_task jobs per task: the workers must run that many.
    const concurrency = props.workerConcurrency ?? policy.jobsPerTask;
    if (concurrency !== policy.jobsPerTask) {
      throw new Error(
        `workerConcurrency (${concurrency}) differs from the scaling policy's jobs_per_task (${policy.jobsPerTask}): ` +
          `set jobs_per_task in the scaling policy file (${props.scalingPolicyFile ?? 'scaling/policy.json'}) to the ` +
          `worker's concurrency, ${concurrency}, or the service scales for a fleet it does not have`,
      );
    }

    const reserved = props.backlogReservedConcurrency;
    if (reserved !== undefined && (!Number.isInteger(reserved) || reserved < 1 || reserved > 10)) {
      throw new Error(
        `backlogReservedConcurrency must be a whole number from 1 to 10 (2 fits one run and the next one's overlap), ` +
          `got ${reserved}; 0 would throttle every run of the scaling loop: leave it unset for no reservation`,
      );
    }

    const network = this.network(props.existingVpc, logRetention, logRemovalPolicy);
    this.vpc = network.vpc;

    this.jobTable = new JobTable(this, 'JobTable');
    this.events = props.events === undefined ? undefined : new JobEvents(this, 'Events', props.events);
    this.jobQueue = new JobQueue(this, 'JobQueue', {
      maxReceiveCount,
      leaseDuration: props.leaseDuration,
      payloadRetention: Duration.days(retentionDays + 1),
    });

    this.workers = new Workers(this, 'Workers', {
      inputBuckets: props.inputBuckets,
      vpc: this.vpc,
      vpcSubnets: network.subnets,
      assignPublicIp: network.assignPublicIp,
      queue: this.jobQueue.queue,
      table: this.jobTable.table,
      payloadBucket: this.jobQueue.payloadBucket,
      visibilityTimeout: this.jobQueue.visibilityTimeout,
      leaseDuration: this.jobQueue.leaseDuration,
      maxReceiveCount: this.jobQueue.maxReceiveCount,
      image: props.workerImage,
      cpu: props.taskCpu,
      memoryLimitMiB: props.taskMemoryMiB,
      ephemeralStorageGiB: props.taskStorageGiB,
      concurrency,
      maxTaskAge: props.maxTaskAge,
      retentionDays,
      handler: props.workerHandler,
      jobTimeout: props.jobTimeout,
      maxJobTimeout: props.maxJobTimeout,
      metricNamespace: policy.namespace,
      drainTimeout: props.drainTimeout,
      spot: props.spot,
      spotStrategy: props.spotStrategy,
      cpuArchitecture: props.cpuArchitecture,
      deployProvesImage: props.deployProvesImage,
      gpu:
        props.gpu === undefined
          ? undefined
          : { ...props.gpu, maxInstances: props.gpu.maxInstances ?? props.maxTasks ?? policy.maxTasks },
      logRetention,
      logRemovalPolicy,
      events: this.events,
      modelFileSystem:
        props.modelFileSystem === undefined
          ? undefined
          : {
              fileSystemId: props.modelFileSystem.fileSystemId,
              accessPointId: props.modelFileSystem.accessPointId,
              mountPath: props.modelFileSystem.mountPath,
              securityGroup:
                props.modelFileSystem.securityGroupId === undefined
                  ? undefined
                  : this.importSecurityGroup('ModelFileSystemSecurityGroup', props.modelFileSystem.securityGroupId),
            },
    });

    this.jobApi = new JobApi(this, 'JobApi', {
      table: this.jobTable.table,
      queue: this.jobQueue.queue,
      payloadBucket: this.jobQueue.payloadBucket,
      inputBuckets: props.inputBuckets,
      workerService: this.workers.service,
      lambdaAssetDir,
      maxAttempts,
      retentionDays,
      maxJobTimeout: props.maxJobTimeout,
      ownerScope: props.ownerScope,
      pinnedSessionRoles: (props.pinnedSessionRoleArns ?? []).map((arn, i) =>
        iam.Role.fromRoleArn(this, `PinnedSessionRole${i}`, checkPinnedSessionRole(arn), { mutable: false }),
      ),
      operators: props.operatorArns,
      jwt: props.jwt,
      throttleRateLimit: props.apiRateLimit,
      throttleBurstLimit: props.apiBurstLimit,
      logRetention,
      logRemovalPolicy,
      events: this.events,
    });

    this.scaling = new BacklogScaling(this, 'BacklogScaling', {
      queue: this.jobQueue.queue,
      deadLetterQueue: this.jobQueue.deadLetterQueue,
      table: this.jobTable.table,
      retentionDays,
      payloadBucket: this.jobQueue.payloadBucket,
      service: this.workers.service,
      lambdaAssetDir,
      policy,
      minTasks: props.minTasks,
      maxTasks: props.maxTasks,
      nudgers: [this.jobApi.submitFunction],
      reservedConcurrency: reserved,
      logRetention,
      events: this.events,
    });

    if (props.pipeline !== undefined) {
      const backlogRole = this.scaling.function.role;
      if (backlogRole === undefined) throw new Error('the backlog function has no role to grant the outbox to');
      this.pipeline = new Pipeline(this, 'Pipeline', {
        ...props.pipeline,
        table: this.jobTable.table,
        queue: this.jobQueue.queue,
        payloadBucket: this.jobQueue.payloadBucket,
        workers: this.workers.taskDefinition.taskRole,
        outbox: backlogRole,
        lambdaAssetDir,
        maxAttempts,
        retentionDays,
        logRetention,
        logRemovalPolicy,
        events: this.events,
      });
    }

    this.observability = new Observability(this, 'Observability', {
      metrics: this.scaling.metricSource,
      queue: this.jobQueue.queue,
      deadLetterQueue: this.jobQueue.deadLetterQueue,
      targetBacklogPerTask: this.scaling.target,
      functions: {
        submit: this.jobApi.submitFunction,
        status: this.jobApi.statusFunction,
        backlog: this.scaling.function,
        ...(this.pipeline === undefined ? {} : { ingest: this.pipeline.function }),
      },
      pipelineDeadLetterQueue: this.pipeline?.eventsDeadLetterQueue,
      eventTopics:
        this.events?.successTopic === undefined || this.events.errorTopic === undefined
          ? undefined
          : { Success: this.events.successTopic, Error: this.events.errorTopic },
      alarmEmail: props.alarmEmail,
      workerService: this.workers.service,
    });

    // A function without a log group of the stack (the default security group's custom resource
    // provider, CDK's) would log to one Lambda makes, which outlives the stack: give it one.
    for (const c of this.node.findAll()) {
      if (!(c instanceof CfnResource) || c.cfnResourceType !== 'AWS::Lambda::Function') continue;
      if (c instanceof lambda.CfnFunction && c.loggingConfig !== undefined) continue;
      const group = new logs.LogGroup(c.node.scope as Construct, `${c.node.id}LogGroup`, {
        retention: logRetention,
        removalPolicy: logRemovalPolicy,
      });
      c.addPropertyOverride('LoggingConfig.LogGroup', group.logGroupName);
    }

    // Every log group of the stack, those of the constructs' own functions included, goes with it
    // or stays, as one setting says.
    for (const c of this.node.findAll()) {
      if (c instanceof logs.CfnLogGroup) c.applyRemovalPolicy(logRemovalPolicy);
    }

    new CfnOutput(this, 'ApiUrl', { value: this.jobApi.url, description: 'Base URL of the jobs API' });
    new CfnOutput(this, 'ApiId', { value: this.jobApi.api.apiId });
    new CfnOutput(this, 'ExecuteApiArn', {
      value: this.jobApi.api.arnForExecuteApi(),
      description: 'execute-api ARN of the jobs API, for IAM policies of your own',
    });
    new CfnOutput(this, 'CallerPolicyArn', {
      value: this.jobApi.callerPolicy.managedPolicyArn,
      description: 'Attach to the roles and users that call the API (execute-api:Invoke on its three routes)',
    });
    new CfnOutput(this, 'OperatorPolicyArn', {
      value: this.jobApi.operatorPolicy.managedPolicyArn,
      description:
        'Attach to the operators (the operators context key): execute-api:Invoke on GET /pipeline, ' +
        'POST /pipeline/pause and POST /pipeline/resume',
    });
    new CfnOutput(this, 'TableName', { value: this.jobTable.table.tableName });
    new CfnOutput(this, 'QueueUrl', { value: this.jobQueue.queue.queueUrl });
    new CfnOutput(this, 'DeadLetterQueueUrl', { value: this.jobQueue.deadLetterQueue.queueUrl });
    new CfnOutput(this, 'ClusterName', { value: this.workers.cluster.clusterName });
    new CfnOutput(this, 'ServiceName', { value: this.workers.service.serviceName });
    new CfnOutput(this, 'DashboardName', { value: this.observability.dashboard.dashboardName });
    new CfnOutput(this, 'PayloadBucketName', { value: this.jobQueue.payloadBucket.bucketName });
    new CfnOutput(this, 'AlarmTopicArn', { value: this.observability.topic.topicArn });
    if (this.pipeline !== undefined) {
      new CfnOutput(this, 'PipelineBucketName', {
        value: this.pipeline.bucket.bucketName,
        description: `Objects put under ${this.pipeline.inputPrefix} become jobs; outcomes land under ${this.pipeline.outputPrefix}`,
      });
      new CfnOutput(this, 'PipelineDeadLetterQueueUrl', { value: this.pipeline.eventsDeadLetterQueue.queueUrl });
    }
    if (this.events?.successTopic !== undefined) {
      new CfnOutput(this, 'SuccessTopicArn', {
        value: this.events.successTopic.topicArn,
        description: 'Every job that SUCCEEDED is published here: subscribe a queue, a function or an address',
      });
    }
    if (this.events?.errorTopic !== undefined) {
      new CfnOutput(this, 'ErrorTopicArn', {
        value: this.events.errorTopic.topicArn,
        description: 'Every job that ended FAILED, CANCELLED or EXPIRED is published here',
      });
    }
    if (this.events?.eventBus !== undefined) {
      new CfnOutput(this, 'EventBusArn', {
        value: this.events.eventBus.eventBusArn,
        description: 'Every job\'s end is put on this bus as source sluice: match it with a rule on {"source": ["sluice"]}',
      });
    }
    const smokeInput = props.smokeInput ?? defaultSmokeInput(props.workerImage, props.workerHandler);
    if (smokeInput !== undefined) {
      new CfnOutput(this, 'SmokeInput', {
        value: JSON.stringify(smokeInput),
        description: 'A job input the deployed handler accepts, submitted by make smoke',
      });
    }
  }

  private importSecurityGroup(id: string, securityGroupId: string): ec2.ISecurityGroup {
    if (!EC2_ID('sg').test(securityGroupId)) {
      throw new Error(`security group ids must look like sg-0123456789abcdef0, got ${securityGroupId}`);
    }
    return ec2.SecurityGroup.fromSecurityGroupId(this, id, securityGroupId);
  }

  private network(
    existing: ExistingVpc | undefined,
    logRetention: logs.RetentionDays,
    logRemovalPolicy: RemovalPolicy,
  ): { vpc: ec2.IVpc; subnets: ec2.SubnetSelection; assignPublicIp: boolean } {
    if (existing !== undefined) {
      const { vpcId, subnetIds, availabilityZones } = existing;
      if (!EC2_ID('vpc').test(vpcId)) {
        throw new Error(`vpcId must look like vpc-0123456789abcdef0, got ${vpcId}`);
      }
      if (availabilityZones.length === 0 || subnetIds.length === 0) {
        throw new Error('an existing vpc needs subnetIds and availabilityZones');
      }
      if (subnetIds.length % availabilityZones.length !== 0) {
        throw new Error(
          `subnetIds (${subnetIds.length}) must be a multiple of availabilityZones (${availabilityZones.length})`,
        );
      }
      const bad = subnetIds.find((s) => !EC2_ID('subnet').test(s));
      if (bad !== undefined) {
        throw new Error(`subnet ids must look like subnet-0123456789abcdef0, got ${bad}`);
      }
      const assignPublicIp = existing.assignPublicIp ?? false;
      const vpc = ec2.Vpc.fromVpcAttributes(this, 'Vpc', {
        vpcId,
        availabilityZones,
        ...(assignPublicIp ? { publicSubnetIds: subnetIds } : { privateSubnetIds: subnetIds }),
      });
      for (const subnet of [...vpc.publicSubnets, ...vpc.privateSubnets]) {
        acknowledge(
          subnet,
          'Annotation::@aws-cdk/aws-ec2:noSubnetRouteTableId',
          'existing subnets are given by id only to place worker tasks; nothing in this app reads their route tables',
        );
      }
      return { vpc, subnets: { subnets: assignPublicIp ? vpc.publicSubnets : vpc.privateSubnets }, assignPublicIp };
    }
    // No NAT gateway: tasks in public subnets with public IPs (no inbound rule), and free gateway
    // endpoints keep DynamoDB and S3 traffic inside the VPC.
    const vpc = new ec2.Vpc(this, 'Vpc', {
      maxAzs: 2,
      natGateways: 0,
      subnetConfiguration: [{ name: 'Public', subnetType: ec2.SubnetType.PUBLIC, cidrMask: 20 }],
      gatewayEndpoints: {
        DynamoDb: { service: ec2.GatewayVpcEndpointAwsService.DYNAMODB },
        S3: { service: ec2.GatewayVpcEndpointAwsService.S3 },
      },
      // The default security group loses its rules (a custom resource at deploy time; Security Hub
      // EC2.2): nothing here uses it, every resource in the VPC has a group of its own.
      restrictDefaultSecurityGroup: true,
    });
    vpc.addFlowLog('FlowLog', {
      trafficType: ec2.FlowLogTrafficType.REJECT,
      destination: ec2.FlowLogDestination.toCloudWatchLogs(
        new logs.LogGroup(this, 'FlowLogGroup', { retention: logRetention, removalPolicy: logRemovalPolicy }),
      ),
    });
    return { vpc, subnets: { subnetType: ec2.SubnetType.PUBLIC }, assignPublicIp: true };
  }
}
