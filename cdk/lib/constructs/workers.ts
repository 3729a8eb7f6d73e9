import * as path from 'node:path';
import { Aws, Duration, RemovalPolicy, Size, Stack } from 'aws-cdk-lib';
import * as dynamodb from 'aws-cdk-lib/aws-dynamodb';
import * as ec2 from 'aws-cdk-lib/aws-ec2';
import * as ecs from 'aws-cdk-lib/aws-ecs';
import * as iam from 'aws-cdk-lib/aws-iam';
import * as logs from 'aws-cdk-lib/aws-logs';
import * as s3 from 'aws-cdk-lib/aws-s3';
import * as sqs from 'aws-cdk-lib/aws-sqs';
import { JobTable } from './job-table';
import { Construct } from 'constructs';
import { workerEnv } from '../env';
import { JobEvents } from './job-events';
import { ResolvedHandler, WorkerHandler, jobTimeouts, resolveHandler } from '../handler';
import { acknowledge, nagRef } from '../nag';
import { checkInputBucket, wholeSeconds } from '../validate';
import { Capacity, CpuArchitecture, resolveCapacity } from '../capacity';
import { desiredCount } from '../deploy-helper';
import { REPO_ROOT } from '../policy';
import { DEFAULT_WORKER_DOCKERFILE, WorkerImage, defaultWorkerImage } from '../worker-image';
import { GpuAmi, GpuCapacity } from './gpu-capacity';

/** The worker binary's path in the image (`worker/Dockerfile`). */
export const WORKER_BINARY = '/usr/local/bin/sluice-worker';

/** ECS's longest health check start period. */
const MAX_START_PERIOD_SECONDS = 300;

/** The worker's age limit when none is given: a rolling deploy waits at most this for busy tasks. */
export const DEFAULT_MAX_TASK_AGE = Duration.hours(6);

/** The longest age the worker accepts (`SLUICE_MAX_TASK_AGE_SECONDS`). */
export const MAX_TASK_AGE_LIMIT = Duration.days(30);

/** The model server's link alias in bridge mode (GPU workers in public subnets). */
const MODEL_SERVER_ALIAS = 'model-server';

/**
 * How Spot capacity is mixed with on-demand capacity (ECS capacity provider strategy). The first
 * `onDemandBase` tasks run on-demand; the tasks above it are split `onDemandWeight` to
 * `spotWeight`. ECS does not move a task to on-demand when Spot has no capacity: the on-demand
 * base and share are what keeps the service running then.
 */
export interface SpotStrategy {
  /**
   * Tasks placed on on-demand capacity before any on Spot (the first task after a scale from zero
   * among them).
   *
   * @default 1
   */
  readonly onDemandBase?: number;
  /**
   * The on-demand share of the tasks above the base (0 for Spot alone above it).
   *
   * @default 1
   */
  readonly onDemandWeight?: number;
  /**
   * The Spot share of the tasks above the base.
   *
   * @default 3
   */
  readonly spotWeight?: number;
}

/** The resolved strategy. */
export interface ResolvedSpotStrategy {
  readonly onDemandBase: number;
  readonly onDemandWeight: number;
  readonly spotWeight: number;
}

/** Validates a Spot strategy and fills in its defaults. */
export function resolveSpotStrategy(s: SpotStrategy = {}): ResolvedSpotStrategy {
  const onDemandBase = s.onDemandBase ?? 1;
  const onDemandWeight = s.onDemandWeight ?? 1;
  const spotWeight = s.spotWeight ?? 3;
  if (!Number.isInteger(onDemandBase) || onDemandBase < 0 || onDemandBase > 100_000) {
    throw new Error(`spot onDemandBase must be an integer from 0 to 100000, got ${onDemandBase}`);
  }
  for (const [name, w] of [['onDemandWeight', onDemandWeight], ['spotWeight', spotWeight]] as const) {
    if (!Number.isInteger(w) || w < 0 || w > 1000) {
      throw new Error(`spot ${name} must be an integer from 0 to 1000, got ${w}`);
    }
  }
  if (spotWeight === 0) {
    throw new Error('spot spotWeight must be at least 1 (without spot, leave spot off)');
  }
  return { onDemandBase, onDemandWeight, spotWeight };
}

/** GPU workers: the same service on EC2 GPU instances (ECS GPU-optimised AMI, x86_64). */
export interface GpuWorkers {
  /**
   * Instance types, in order of preference, e.g. `[new ec2.InstanceType('g5.xlarge'),
   * new ec2.InstanceType('g6.xlarge')]`. Each needs at least `gpusPerTask` GPUs.
   */
  readonly instanceTypes: ec2.InstanceType[];
  /**
   * GPUs reserved for each task (the task definition's `gpu` resource requirement).
   *
   * @default 1
   */
  readonly gpusPerTask?: number;
  /**
   * Most instances per Auto Scaling group (on-demand, and Spot with `spot`).
   *
   * @default 10
   */
  readonly maxInstances?: number;
  /**
   * Root volume size in GiB; it holds the image cache (CUDA images are several GB).
   *
   * @default 100
   */
  readonly rootVolumeGiB?: number;
  /**
   * The ECS GPU-optimised AMI: Amazon Linux 2023 or Amazon Linux 2, resolved from its public
   * SSM parameter when the stack deploys (no lookup at synth).
   *
   * @default 'al2023'
   */
  readonly ami?: GpuAmi;
}

/** A read-only EFS mount for model files (in the worker container and the model server's). */
export interface ModelFileSystem {
  /** The file system, `fs-…`. */
  readonly fileSystemId: string;
  /** The access point the task mounts through (IAM-authorised, TLS), `fsap-…`. */
  readonly accessPointId: string;
  /**
   * Where the files appear in the container.
   *
   * @default '/models'
   */
  readonly mountPath?: string;
  /**
   * The security group of the file system's mount targets; when given, NFS from the workers is
   * allowed into it. Otherwise allow TCP 2049 from {@link Workers.securityGroup} yourself.
   *
   * @default - no rule is added
   */
  readonly securityGroup?: ec2.ISecurityGroup;
}

/** Properties of {@link Workers}. */
export interface WorkersProps {
  readonly vpc: ec2.IVpc;
  /**
   * Where the tasks run.
   *
   * @default - the VPC's public subnets when `assignPublicIp`, else its private ones
   */
  readonly vpcSubnets?: ec2.SubnetSelection;
  /**
   * Give each task a public IP (public subnets without a NAT gateway).
   *
   * @default false
   */
  readonly assignPublicIp?: boolean;
  readonly queue: sqs.IQueue;
  readonly table: dynamodb.ITable;
  /** The bucket of uploaded job inputs: the worker downloads a job's file from it. */
  readonly payloadBucket: s3.IBucket;
  /** The queue's visibility timeout, which the worker also asks for on each receive. */
  readonly visibilityTimeout: Duration;
  /** The lease on a claimed job; keep it shorter than the visibility timeout. */
  readonly leaseDuration: Duration;
  /** The queue's redrive limit (its `maxReceiveCount`). */
  readonly maxReceiveCount: number;
  /**
   * The worker image: sluice-worker, with whatever the handler needs (an example's Dockerfile adds
   * Python and the handler's program). With an image of your own, give `handler` too: the task's
   * environment sets `SLUICE_HANDLER` and overrides the image's.
   *
   * @default - built from `worker/Dockerfile` with the repository root as the context, linux/arm64
   */
  readonly image?: WorkerImage;
  /**
   * Task CPU units (Fargate sizes: 256, 512, 1024, 2048, 4096, 8192, 16384). With `gpu`, the CPU
   * units reserved for the container that computes (the worker, or the model server in http mode).
   *
   * @default 1024; 2048 with `gpu`
   */
  readonly cpu?: number;
  /**
   * Task memory in MiB, valid for the CPU size. With `gpu`, the memory reserved for the container
   * that computes (a soft limit: it fits g5.xlarge and g6.xlarge, 16 GiB each, by default).
   *
   * @default 2048; 8192 with `gpu`
   */
  readonly memoryLimitMiB?: number;
  /**
   * Fargate ephemeral storage of a task, in GiB (21 to 200): a job's file and its outputs sit on it
   * while the job runs (`concurrency` jobs at once), so jobs of several GB each need more than the
   * default. Fargate only: GPU instances use their own volume.
   *
   * @default 20 GiB, Fargate's own default
   */
  readonly ephemeralStorageGiB?: number;
  /**
   * Jobs one worker runs at once. Keep it equal to the scaling policy's `jobs_per_task` (the stack
   * does), or the service scales for a fleet it does not have.
   *
   * @default 4
   */
  readonly concurrency?: number;
  /**
   * Age after which a worker takes no new job, finishes the ones it runs and exits
   * (`SLUICE_MAX_TASK_AGE_SECONDS`); the service starts a fresh task if one is still wanted. A
   * rolling deploy under load so completes within this age, not whenever the queue runs dry.
   *
   * @default DEFAULT_MAX_TASK_AGE (6 hours)
   */
  readonly maxTaskAge?: Duration;
  /**
   * Days a finished job's record is kept (the TTL the worker writes when a job ends).
   *
   * @default 7
   */
  readonly retentionDays?: number;
  /**
   * What the worker computes: `{ mode: 'demo' }`, `{ mode: 'process', command }` (the user's
   * program over JSON lines) or `{ mode: 'http', modelServer? }` (a model server in the task).
   * See worker/PROTOCOL.md.
   *
   * @default { mode: 'demo' } with the default image; required with an image of your own
   */
  readonly handler?: WorkerHandler;
  /**
   * Time limit of a job that sets no `timeout_seconds` (`SLUICE_JOB_TIMEOUT_SECONDS`); at most
   * `maxJobTimeout`.
   *
   * @default - 1 hour, or maxJobTimeout if that is shorter
   */
  readonly jobTimeout?: Duration;
  /**
   * The longest time limit a job may ask for (`SLUICE_MAX_JOB_TIMEOUT_SECONDS`), at most 42,300 s
   * (SQS's 12-hour visibility cap less 15 minutes). Give the submit Lambda the same.
   *
   * @default MAX_JOB_TIMEOUT_LIMIT (42,300 s)
   */
  readonly maxJobTimeout?: Duration;
  /**
   * CloudWatch namespace of the worker's job metrics.
   *
   * @default 'Sluice'
   */
  readonly metricNamespace?: string;
  /**
   * How long a stopping worker lets running jobs finish; must be below `stopTimeout`.
   *
   * @default Duration.seconds(90)
   */
  readonly drainTimeout?: Duration;
  /**
   * Time between SIGTERM and SIGKILL (Fargate allows at most 120 s).
   *
   * @default Duration.seconds(120)
   */
  readonly stopTimeout?: Duration;
  /**
   * Run on Spot capacity as well as on-demand: Fargate Spot beside Fargate, or with `gpu` a Spot
   * Auto Scaling group beside the on-demand one, mixed by `spotStrategy` (a two-minute
   * interruption notice arrives as SIGTERM, which the drain covers).
   *
   * @default false
   */
  readonly spot?: boolean;
  /**
   * How Spot and on-demand capacity share the tasks, with `spot`.
   *
   * @default - the first task on-demand, then 1 on-demand to 3 Spot
   */
  readonly spotStrategy?: SpotStrategy;
  /**
   * Run the service on EC2 GPU instances (an Auto Scaling group capacity provider from zero
   * instances) instead of Fargate. The worker image must then be linux/amd64: an image built
   * here is.
   *
   * @default - Fargate, ARM64
   */
  readonly gpu?: GpuWorkers;
  /**
   * The tasks' CPU architecture; images built here are built for it. Fargate Spot runs X86_64
   * tasks only and GPU instances are x86_64, so ARM64 with either is refused.
   *
   * @default - 'arm64' on Fargate; 'x86_64' with `spot` or `gpu`
   */
  readonly cpuArchitecture?: CpuArchitecture;
  /**
   * Every deploy that changes the task definition runs at least one task of it, which must turn
   * healthy before the deploy completes (the circuit breaker rolls back one that does not), even
   * when the service is parked at zero; the idle rule parks it again afterwards.
   *
   * @default true on Fargate; false with `gpu` (a deploy would start a GPU instance)
   */
  readonly deployProvesImage?: boolean;
  /**
   * Mount an EFS file system read-only for model files.
   *
   * @default - no file system
   */
  readonly modelFileSystem?: ModelFileSystem;
  /**
   * Names of the S3 buckets whose objects jobs may name (JobApiProps.inputBuckets): the task role
   * may read any object in them (`s3:GetObject`, `s3:GetObjectVersion` for a job that recorded a
   * version), by name, without a lookup. It never writes or deletes there.
   *
   * @default - none
   */
  readonly inputBuckets?: string[];
  /**
   * Grace period before failed health checks count (model loading), at most 300 s (ECS's limit).
   *
   * @default - 60 s in demo mode; else the startup timeout plus 30 s, at least 60 s and at most 300 s
   */
  readonly healthCheckStartPeriod?: Duration;
  /**
   * Retention of the worker's logs.
   *
   * @default logs.RetentionDays.ONE_MONTH
   */
  readonly logRetention?: logs.RetentionDays;
  /**
   * What happens to the worker's log group when it leaves the stack.
   *
   * @default RemovalPolicy.DESTROY
   */
  readonly logRemovalPolicy?: RemovalPolicy;
  /**
   * The topics and bus every job's end is published to: the workers' outbox publishes the ends
   * it announces (granted here).
   *
   * @default - none: no job's end is published
   */
  readonly events?: JobEvents;
}

/** Fargate CPU units → allowed memory (MiB). */
const FARGATE_SIZES: Record<number, (m: number) => boolean> = {
  256: (m) => [512, 1024, 2048].includes(m),
  512: (m) => m >= 1024 && m <= 4096 && m % 1024 === 0,
  1024: (m) => m >= 2048 && m <= 8192 && m % 1024 === 0,
  2048: (m) => m >= 4096 && m <= 16384 && m % 1024 === 0,
  4096: (m) => m >= 8192 && m <= 30720 && m % 1024 === 0,
  8192: (m) => m >= 16384 && m <= 61440 && m % 4096 === 0,
  16384: (m) => m >= 32768 && m <= 122880 && m % 8192 === 0,
};

/** Throws unless cpu/memory is a Fargate task size. */
export function validateFargateSize(cpu: number, memoryMiB: number): void {
  const fits = FARGATE_SIZES[cpu];
  if (fits === undefined) {
    throw new Error(`task cpu must be one of ${Object.keys(FARGATE_SIZES).join(', ')}, got ${cpu}`);
  }
  if (!fits(memoryMiB)) {
    throw new Error(`task memory ${memoryMiB} MiB is not a fargate size for ${cpu} cpu units`);
  }
}

/** Whether the image is the default one, `worker/Dockerfile`: sluice-worker alone, no shell. */
function isDefaultImage(image: WorkerImage | undefined): boolean {
  if (image === undefined) return true;
  const src = image.source;
  return (
    src.kind === 'directory' &&
    path.resolve(src.buildContext, src.file) === path.resolve(REPO_ROOT, DEFAULT_WORKER_DOCKERFILE)
  );
}

/**
 * Refuses a handler whose program the image cannot hold: the default image has sluice-worker and
 * nothing else (no shell, no Python), so a process-mode command, or an http-mode server on its
 * own loopback, would never start and the tasks would be replaced forever.
 */
function refuseHandlerWithoutProgram(image: WorkerImage | undefined, handler: WorkerHandler | undefined): void {
  if (handler === undefined || !isDefaultImage(image)) return;
  if (handler.mode === 'process') {
    throw new Error(
      'process mode runs a program of yours, and the default worker image (worker/Dockerfile) holds only ' +
        'sluice-worker (no shell, no python): give an image that holds the program, e.g. ' +
        '-c workerImageDirectory=examples/sentiment (WorkerImage.fromDirectory), or use handlerMode=demo',
    );
  }
  if (handler.mode === 'http' && handler.modelServer === undefined) {
    const host = handler.modelUrl === undefined ? '127.0.0.1' : new URL(handler.modelUrl).hostname;
    if (host === '127.0.0.1' || host === 'localhost' || host === '[::1]') {
      throw new Error(
        'http mode on the default worker image needs a modelServer or a modelUrl of a server elsewhere: ' +
          `nothing in the image listens on ${host} (add -c modelServerImageUri=... or -c modelUrl=http://<host>:<port>)`,
      );
    }
  }
}

/**
 * The ECS cluster and the service running `sluice-worker` (on Fargate, or on GPU instances),
 * scaled from zero by others.
 */
export class Workers extends Construct {
  public readonly cluster: ecs.Cluster;
  /** A FargateService, or an Ec2Service with `gpu`. */
  public readonly service: ecs.BaseService;
  /** A FargateTaskDefinition, or an Ec2TaskDefinition with `gpu`. */
  public readonly taskDefinition: ecs.TaskDefinition;
  /** The GPU instances' capacity, with `gpu`. */
  public readonly gpuCapacity?: GpuCapacity;
  /** The capacity provider strategy of the service (empty: the Fargate launch type). */
  public readonly capacityProviderStrategies: ecs.CapacityProviderStrategy[];
  /** The worker's container. */
  public readonly container: ecs.ContainerDefinition;
  /** The model server's container (http mode with `modelServer`). */
  public readonly modelServerContainer?: ecs.ContainerDefinition;
  /** The handler as validated, with its defaults. */
  public readonly handler: ResolvedHandler;
  /** Launch type, architecture, image platform and network mode of the tasks. */
  public readonly capacity: Capacity;
  public readonly securityGroup: ec2.SecurityGroup;
  public readonly logGroup: logs.LogGroup;

  constructor(scope: Construct, id: string, props: WorkersProps) {
    super(scope, id);
    const gpu = props.gpu;
    const cpu = props.cpu ?? (gpu === undefined ? 1024 : 2048);
    const memoryLimitMiB = props.memoryLimitMiB ?? (gpu === undefined ? 2048 : 8192);
    if (gpu === undefined) {
      validateFargateSize(cpu, memoryLimitMiB);
    } else {
      if (!Number.isInteger(cpu) || cpu < 128) {
        throw new Error(`task cpu must be an integer of at least 128 units on gpu instances, got ${cpu}`);
      }
      if (!Number.isInteger(memoryLimitMiB) || memoryLimitMiB < 512) {
        throw new Error(`task memory must be an integer of at least 512 MiB on gpu instances, got ${memoryLimitMiB}`);
      }
    }
    const storage = props.ephemeralStorageGiB;
    if (storage !== undefined) {
      if (gpu !== undefined) {
        throw new Error('task storage applies to Fargate workers only: GPU workers use their instances\' volumes');
      }
      if (!Number.isInteger(storage) || storage < 21 || storage > 200) {
        throw new Error(`task storage must be a whole number of GiB from 21 to 200 (Fargate's range; 20 is the default), got ${storage}`);
      }
    }
    const gpusPerTask = gpu?.gpusPerTask ?? 1;
    if (gpu !== undefined && (!Number.isInteger(gpusPerTask) || gpusPerTask < 1 || gpusPerTask > 16)) {
      throw new Error(`gpusPerTask must be an integer from 1 to 16, got ${gpusPerTask}`);
    }
    if (props.spotStrategy !== undefined && props.spot !== true) {
      throw new Error('spotStrategy needs spot: true');
    }
    const spotStrategy = props.spot === true ? resolveSpotStrategy(props.spotStrategy) : undefined;
    const maxTaskAgeSeconds = wholeSeconds(props.maxTaskAge ?? DEFAULT_MAX_TASK_AGE, 'maxTaskAge');
    // The worker accepts 1 s to 30 days; a task older than its first minute is the least that
    // makes sense, and 30 days the most the worker takes.
    if (maxTaskAgeSeconds < 60 || maxTaskAgeSeconds > MAX_TASK_AGE_LIMIT.toSeconds()) {
      throw new Error(
        `maxTaskAge must be from 60 seconds to 30 days (${MAX_TASK_AGE_LIMIT.toSeconds()} s), got ${maxTaskAgeSeconds}`,
      );
    }
    const concurrency = props.concurrency ?? 4;
    if (!Number.isInteger(concurrency) || concurrency < 1) {
      throw new Error(`concurrency must be a positive integer, got ${concurrency}`);
    }
    const retentionDays = props.retentionDays ?? 7;
    if (!Number.isInteger(retentionDays) || retentionDays < 1) {
      throw new Error(`retentionDays must be a positive integer, got ${retentionDays}`);
    }
    if (props.image !== undefined && props.handler === undefined) {
      throw new Error(
        "handler is required with a worker image of your own: the task's environment sets SLUICE_HANDLER " +
          "and overrides the image's (give { mode: 'demo' } for the built-in handler)",
      );
    }
    if (props.image !== undefined && !(props.image instanceof WorkerImage)) {
      throw new Error('image must be a WorkerImage (WorkerImage.fromDirectory, fromUri or fromContainerImage)');
    }
    refuseHandlerWithoutProgram(props.image, props.handler);
    const assignPublicIp = props.assignPublicIp ?? false;
    // Every combination ECS refuses fails here, with its rule (lib/capacity.ts).
    this.capacity = resolveCapacity({
      gpu: gpu !== undefined,
      spot: props.spot === true,
      architecture: props.cpuArchitecture,
      publicSubnets: assignPublicIp,
    });
    const networkMode = this.capacity.networkMode === 'bridge' ? ecs.NetworkMode.BRIDGE : ecs.NetworkMode.AWS_VPC;
    const bridge = networkMode === ecs.NetworkMode.BRIDGE;
    const handler = resolveHandler(props.handler ?? { mode: 'demo' }, bridge ? MODEL_SERVER_ALIAS : '127.0.0.1');
    this.handler = handler;
    const { jobTimeoutSeconds, maxJobTimeoutSeconds } = jobTimeouts(props.jobTimeout, props.maxJobTimeout);
    const stopTimeout = props.stopTimeout ?? Duration.seconds(120);
    const drainTimeout = props.drainTimeout ?? Duration.seconds(90);
    const stopSeconds = wholeSeconds(stopTimeout, 'stopTimeout');
    const drainSeconds = wholeSeconds(drainTimeout, 'drainTimeout');
    if (stopSeconds > 120 || stopSeconds < 2) {
      throw new Error(`stopTimeout must be from 2 to 120 seconds on fargate, got ${stopSeconds}`);
    }
    if (drainSeconds < 1 || drainSeconds >= stopSeconds) {
      throw new Error(`drainTimeout (${drainSeconds} s) must be positive and below stopTimeout (${stopSeconds} s)`);
    }
    const visibilitySeconds = wholeSeconds(props.visibilityTimeout, 'visibilityTimeout');
    const leaseSeconds = wholeSeconds(props.leaseDuration, 'leaseDuration');
    if (leaseSeconds < 1 || leaseSeconds >= visibilitySeconds) {
      throw new Error(`leaseDuration (${leaseSeconds} s) must be positive and shorter than visibilityTimeout (${visibilitySeconds} s)`);
    }
    // ECS ignores failed health checks during the start period, which it caps at 300 s. By default
    // it covers the handler's startup timeout (plus 30 s for the worker's own start) up to that cap.
    // A longer startup still works: while its handler starts (up to SLUICE_STARTUP_SECONDS and 30 s
    // of slack) `sluice-worker healthcheck` reports healthy; past that it fails, and after 3 failed
    // checks 30 s apart ECS stops the task and the service starts a new one.
    const startPeriod =
      props.healthCheckStartPeriod ??
      Duration.seconds(
        handler.startupSeconds === undefined
          ? 60
          : Math.min(MAX_START_PERIOD_SECONDS, Math.max(60, handler.startupSeconds + 30)),
      );
    const startSeconds = wholeSeconds(startPeriod, 'healthCheckStartPeriod');
    if (startSeconds > MAX_START_PERIOD_SECONDS) {
      throw new Error(`healthCheckStartPeriod must be at most ${MAX_START_PERIOD_SECONDS} seconds, got ${startSeconds}`);
    }
    const efs = props.modelFileSystem;
    if (efs !== undefined) {
      if (!/^fs-[0-9a-f]{8,40}$/.test(efs.fileSystemId)) {
        throw new Error(`modelFileSystem.fileSystemId must look like fs-0123abcd, got ${efs.fileSystemId}`);
      }
      if (!/^fsap-[0-9a-f]{8,40}$/.test(efs.accessPointId)) {
        throw new Error(`modelFileSystem.accessPointId must look like fsap-0123abcd, got ${efs.accessPointId}`);
      }
      if (efs.mountPath !== undefined && !path.posix.isAbsolute(efs.mountPath)) {
        throw new Error(`modelFileSystem.mountPath must be an absolute path, got ${efs.mountPath}`);
      }
    }

    this.cluster = new ecs.Cluster(this, 'Cluster', {
      vpc: props.vpc,
      containerInsightsV2: ecs.ContainerInsights.ENABLED,
      enableFargateCapacityProviders: true,
    });

    this.taskDefinition =
      gpu === undefined
        ? new ecs.FargateTaskDefinition(this, 'TaskDefinition', {
            cpu,
            memoryLimitMiB,
            ephemeralStorageGiB: storage,
            runtimePlatform: {
              cpuArchitecture: this.capacity.cpuArchitecture,
              operatingSystemFamily: ecs.OperatingSystemFamily.LINUX,
            },
          })
        : new ecs.Ec2TaskDefinition(this, 'TaskDefinition', { networkMode });
    const platform = this.capacity.platform;

    this.logGroup = new logs.LogGroup(this, 'LogGroup', {
      retention: props.logRetention ?? logs.RetentionDays.ONE_MONTH,
      removalPolicy: props.logRemovalPolicy ?? RemovalPolicy.DESTROY,
    });

    // On GPU instances the container that computes holds the GPUs and the task's size as its
    // reservation: the model server in http mode with one, else the worker.
    const computesInServer = handler.modelServer !== undefined;
    const reservation = (computes: boolean): Partial<ecs.ContainerDefinitionOptions> =>
      gpu === undefined
        ? {}
        : computes
          ? { cpu, memoryReservationMiB: memoryLimitMiB, gpuCount: gpusPerTask }
          : { cpu: 256, memoryReservationMiB: 256 };

    const logging = (streamPrefix: string) =>
      ecs.LogDrivers.awsLogs({
        logGroup: this.logGroup,
        streamPrefix,
        mode: ecs.AwsLogDriverMode.NON_BLOCKING,
        maxBufferSize: Size.mebibytes(25),
      });

    // An init process (ECS's, docker-init) as PID 1 of each container: it forwards SIGTERM to the
    // worker or server and reaps whatever a handler's process group leaves behind.
    const withInit = (id: string) => new ecs.LinuxParameters(this, id, { initProcessEnabled: true });

    this.container = this.taskDefinition.addContainer('Worker', {
      image: (props.image ?? defaultWorkerImage()).bind(this, 'WorkerImage', platform),
      essential: true,
      linuxParameters: withInit('WorkerLinuxParameters'),
      ...reservation(!computesInServer),
      environment: workerEnv({
        tableName: props.table.tableName,
        queueUrl: props.queue.queueUrl,
        payloadBucket: props.payloadBucket.bucketName,
        retentionDays,
        concurrency,
        visibilityTimeoutSeconds: visibilitySeconds,
        leaseSeconds,
        maxReceiveCount: props.maxReceiveCount,
        drainSeconds,
        maxTaskAgeSeconds,
        handler: handler.env,
        jobTimeoutSeconds,
        maxJobTimeoutSeconds,
        metricNamespace: props.metricNamespace ?? 'Sluice',
        events: props.events?.env,
      }),
      stopTimeout,
      healthCheck: {
        command: ['CMD', WORKER_BINARY, 'healthcheck'],
        interval: Duration.seconds(30),
        timeout: Duration.seconds(5),
        retries: 3,
        startPeriod,
      },
      logging: logging('worker'),
    });

    // The AWS SDKs' region, which Fargate sets and EC2 tasks would take from the instance
    // metadata, closed to them here (a task never reaches the instance role).
    if (gpu !== undefined) this.container.addEnvironment('AWS_REGION', Stack.of(this).region);

    const server = handler.modelServer;
    if (server !== undefined) {
      // Essential: a crashed server takes the task down and the service replaces it. Container
      // dependencies also order the shutdown: ECS stops the worker (which drains) before the server.
      this.modelServerContainer = this.taskDefinition.addContainer('ModelServer', {
        image: server.image.bind(this, 'ModelServerImage', platform),
        essential: true,
        linuxParameters: withInit('ModelServerLinuxParameters'),
        ...reservation(true),
        command: server.command,
        environment: server.environment,
        healthCheck:
          server.healthCheck === undefined
            ? undefined
            : { ...server.healthCheck, startPeriod: server.healthCheck.startPeriod ?? startPeriod },
        logging: logging('model-server'),
      });
      this.container.addContainerDependencies({
        container: this.modelServerContainer,
        condition:
          server.healthCheck === undefined ? ecs.ContainerDependencyCondition.START : ecs.ContainerDependencyCondition.HEALTHY,
      });
      // Bridge mode: the containers have a network each; the worker reaches the server by its alias.
      if (bridge) this.container.addLink(this.modelServerContainer, MODEL_SERVER_ALIAS);
    }

    this.securityGroup = new ec2.SecurityGroup(this, 'SecurityGroup', {
      vpc: props.vpc,
      description: 'sluice workers: no inbound; outbound to AWS APIs and model sources',
      allowAllOutbound: true,
    });

    const vpcSubnets =
      props.vpcSubnets ?? { subnetType: assignPublicIp ? ec2.SubnetType.PUBLIC : ec2.SubnetType.PRIVATE_WITH_EGRESS };
    // Spot with an on-demand fallback: a strategy of both, the base on on-demand.
    const strategy = (onDemand: string, spot: string | undefined): ecs.CapacityProviderStrategy[] =>
      spot === undefined || spotStrategy === undefined
        ? [{ capacityProvider: onDemand, weight: 1 }]
        : [
            { capacityProvider: onDemand, base: spotStrategy.onDemandBase, weight: spotStrategy.onDemandWeight },
            { capacityProvider: spot, weight: spotStrategy.spotWeight },
          ];
    // Shared by both kinds of service. No desiredCount: CloudFormation then leaves the running
    // count to the scaling policies on every update (a template value would reset it on each
    // deploy). New tasks start before old ones stop, so a deploy never drops capacity under load.
    // ECS creates a service without a DesiredCount at one task, and CloudFormation resets a
    // template value on updates: the count comes from the service itself at deploy time (zero at
    // creation on GPU instances, whose first task would wait on an instance launch).
    const provesImage = props.deployProvesImage ?? gpu === undefined;
    const desired = desiredCount(this, 'DesiredCount', {
      cluster: this.cluster,
      taskDefinition: this.taskDefinition,
      initial: gpu === undefined ? 1 : 0,
      floor: provesImage ? 1 : 0,
    });
    const common = {
      cluster: this.cluster,
      desiredCount: desired,
      minHealthyPercent: 100,
      maxHealthyPercent: 200,
      circuitBreaker: { enable: true, rollback: true },
      propagateTags: ecs.PropagatedTagSource.SERVICE,
      enableECSManagedTags: true,
    };
    if (gpu === undefined) {
      this.capacityProviderStrategies = spotStrategy === undefined ? [] : strategy('FARGATE', 'FARGATE_SPOT');
      this.service = new ecs.FargateService(this, 'Service', {
        ...common,
        taskDefinition: this.taskDefinition,
        assignPublicIp,
        vpcSubnets,
        securityGroups: [this.securityGroup],
        capacityProviderStrategies: this.capacityProviderStrategies.length === 0 ? undefined : this.capacityProviderStrategies,
        platformVersion: ecs.FargatePlatformVersion.LATEST,
      });
    } else {
      this.gpuCapacity = new GpuCapacity(this, 'GpuCapacity', {
        cluster: this.cluster,
        vpc: props.vpc,
        vpcSubnets,
        securityGroup: this.securityGroup,
        instanceTypes: gpu.instanceTypes,
        maxInstances: gpu.maxInstances ?? 10,
        spot: spotStrategy !== undefined,
        rootVolumeGiB: gpu.rootVolumeGiB,
        ami: gpu.ami,
        associatePublicIp: assignPublicIp,
      });
      this.capacityProviderStrategies = strategy(
        this.gpuCapacity.onDemand.capacityProviderName,
        this.gpuCapacity.spot?.capacityProviderName,
      );
      const service = new ecs.Ec2Service(this, 'Service', {
        ...common,
        taskDefinition: this.taskDefinition,
        capacityProviderStrategies: this.capacityProviderStrategies,
        // Fill an instance before starting another (an instance with several GPUs takes several tasks).
        placementStrategies: [ecs.PlacementStrategy.packedByCpu()],
        ...(bridge ? {} : { vpcSubnets, securityGroups: [this.securityGroup] }),
      });
      this.service = service;
      // Destroy: the service goes first, then each group's drain, then the group.
      for (const drain of this.gpuCapacity.drains) service.node.addDependency(drain);
    }
    // Tasks with public IPs reach the internet through the subnets' default routes: create the
    // service after them (its first task pulls the image) and delete it before them (the gateway
    // cannot be detached while a task holds a public address).
    if (assignPublicIp) {
      this.service.node.addDependency(props.vpc.selectSubnets(vpcSubnets).internetConnectivityEstablished);
    }
    // A service that names capacity providers fails to create before they are the cluster's: the
    // cluster's subtree holds the association (made at synth), so depend on all of it.
    if (this.capacityProviderStrategies.length > 0) this.service.node.addDependency(this.cluster);

    const taskRole = this.taskDefinition.taskRole;
    props.queue.grant(
      taskRole,
      'sqs:ReceiveMessage',
      'sqs:DeleteMessage',
      'sqs:ChangeMessageVisibility',
      // A message near the redrive limit for a reason not the job's own is sent again, fresh.
      'sqs:SendMessage',
    );
    // PutItem: retiring the id of a message whose record never came (an orphan), so that no
    // record can come after its message is deleted.
    JobTable.grantItems(props.table, taskRole, 'dynamodb:GetItem', 'dynamodb:UpdateItem', 'dynamodb:PutItem');
    // The outbox publishes each end it announces to the topics and the bus, and only there.
    props.events?.grantPublish(taskRole);
    // A job's uploaded file, read only: every upload lies under uploads/.
    taskRole.addToPrincipalPolicy(
      new iam.PolicyStatement({ actions: ['s3:GetObject'], resources: [props.payloadBucket.arnForObjects('uploads/*')] }),
    );
    // What a job produces, written only: a large result under results/, output files under
    // outputs/ (PutObject covers a multipart upload's parts and completion).
    taskRole.addToPrincipalPolicy(
      new iam.PolicyStatement({
        actions: ['s3:PutObject', 's3:AbortMultipartUpload'],
        resources: [props.payloadBucket.arnForObjects('results/*'), props.payloadBucket.arnForObjects('outputs/*')],
      }),
    );
    for (const prefix of ['results', 'outputs']) {
      acknowledge(
        taskRole,
        `AwsSolutions-IAM5[Resource::${nagRef(props.payloadBucket)}.Arn>/${prefix}/*]`.replace('>.Arn>', '.Arn>'),
        `the wildcard is what any job produces: the worker writes ${prefix}/<owner hash>/<job>/<attempt>/… for the ` +
          'jobs it runs',
      );
    }
    acknowledge(
      taskRole,
      `AwsSolutions-IAM5[Resource::${nagRef(props.payloadBucket)}.Arn>/uploads/*]`.replace('>.Arn>', '.Arn>'),
      'the wildcard is the uploaded file of any job: the worker reads the object its job names, which submit checked ' +
        'belongs to the job\'s owner',
    );
    // The objects jobs name in the listed buckets (submit checked each with a GET the caller
    // presigned), read only, any version a job recorded.
    for (const bucket of (props.inputBuckets ?? []).map(checkInputBucket)) {
      iam.Grant.addToPrincipal({
        grantee: taskRole,
        actions: ['s3:GetObject', 's3:GetObjectVersion'],
        resourceArns: [`arn:${Aws.PARTITION}:s3:::${bucket}/*`],
      });
      acknowledge(
        taskRole,
        `AwsSolutions-IAM5[Resource::arn:<AWS::Partition>:s3:::${bucket}/*]`,
        `the wildcard is any object of ${bucket}, a bucket the deployment lists for jobs to name objects in: the ` +
          'worker reads the object its job names, which submit checked its caller may read (a GET the caller ' +
          'presigned with its own credentials)',
      );
    }
    // Scale-in protection through the ECS agent endpoint: only tasks of this cluster.
    const stack = Stack.of(this);
    iam.Grant.addToPrincipal({
      grantee: taskRole,
      actions: ['ecs:UpdateTaskProtection', 'ecs:GetTaskProtection'],
      resourceArns: [
        stack.formatArn({ service: 'ecs', resource: 'task', resourceName: `${this.cluster.clusterName}/*` }),
      ],
    });

    if (efs !== undefined) {
      this.mountModels(efs, taskRole);
    }

    acknowledge(
      this.taskDefinition,
      'AwsSolutions-ECS2',
      'the worker environment carries only resource names, the queue url, the handler command and tuning numbers ' +
        '(the src/env.rs contract), its AWS access comes from the task role; a model server gets only the ' +
        'environment its props give, documented as never for secrets',
    );
    acknowledge(
      taskRole,
      `AwsSolutions-IAM5[Resource::arn:<AWS::Partition>:ecs:<AWS::Region>:<AWS::AccountId>:task/${nagRef(this.cluster)}/*]`,
      'ecs:UpdateTaskProtection/GetTaskProtection act on the calling task, whose id is only known at run time; ' +
        'the resource is limited to tasks of this cluster',
    );
    acknowledge(
      this.taskDefinition.obtainExecutionRole(),
      'AwsSolutions-IAM5[Resource::*]',
      'the execution role\'s ecr:GetAuthorizationToken (added by CDK to pull the images) has no resource-level ' +
        'permissions; image pulls themselves are limited to the asset repository or the given ecr repositories',
    );
  }

  private mountModels(efs: ModelFileSystem, taskRole: iam.IRole): void {
    const stack = Stack.of(this);
    const volumeName = 'models';
    this.taskDefinition.addVolume({
      name: volumeName,
      efsVolumeConfiguration: {
        fileSystemId: efs.fileSystemId,
        transitEncryption: 'ENABLED',
        authorizationConfig: { accessPointId: efs.accessPointId, iam: 'ENABLED' },
      },
    });
    for (const container of [this.container, this.modelServerContainer]) {
      container?.addMountPoints({
        sourceVolume: volumeName,
        containerPath: efs.mountPath ?? '/models',
        readOnly: true,
      });
    }
    // Read-only: ClientMount without ClientWrite, and only through the given access point.
    iam.Grant.addToPrincipal({
      grantee: taskRole,
      actions: ['elasticfilesystem:ClientMount'],
      resourceArns: [
        stack.formatArn({ service: 'elasticfilesystem', resource: 'file-system', resourceName: efs.fileSystemId }),
      ],
      conditions: {
        StringEquals: {
          'elasticfilesystem:AccessPointArn': stack.formatArn({
            service: 'elasticfilesystem',
            resource: 'access-point',
            resourceName: efs.accessPointId,
          }),
        },
      },
    });
    efs.securityGroup?.connections.allowFrom(this.securityGroup, ec2.Port.tcp(2049), 'NFS from sluice workers');
  }
}
