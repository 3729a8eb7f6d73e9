import * as path from 'node:path';
import { Duration, Size, Stack } from 'aws-cdk-lib';
import * as dynamodb from 'aws-cdk-lib/aws-dynamodb';
import * as ec2 from 'aws-cdk-lib/aws-ec2';
import * as ecs from 'aws-cdk-lib/aws-ecs';
import * as iam from 'aws-cdk-lib/aws-iam';
import * as logs from 'aws-cdk-lib/aws-logs';
import * as sqs from 'aws-cdk-lib/aws-sqs';
import { Construct } from 'constructs';
import { workerEnv } from '../env';
import { ResolvedHandler, WorkerHandler, jobTimeouts, resolveHandler } from '../handler';
import { acknowledge, nagRef } from '../nag';
import { wholeSeconds } from '../validate';
import { WorkerImage, defaultWorkerImage } from '../worker-image';

/** The worker binary's path in the image (`worker/Dockerfile`). */
export const WORKER_BINARY = '/usr/local/bin/sluice-worker';

/** ECS's longest health check start period. */
const MAX_START_PERIOD_SECONDS = 300;

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
   * Task CPU units (Fargate sizes: 256, 512, 1024, 2048, 4096, 8192, 16384).
   *
   * @default 1024
   */
  readonly cpu?: number;
  /**
   * Task memory in MiB, valid for the CPU size.
   *
   * @default 2048
   */
  readonly memoryLimitMiB?: number;
  /**
   * Jobs one worker runs at once.
   *
   * @default 4
   */
  readonly concurrency?: number;
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
   * Run on Fargate Spot (a two-minute interruption notice arrives as SIGTERM, which the drain covers).
   *
   * @default false
   */
  readonly spot?: boolean;
  /**
   * Mount an EFS file system read-only for model files.
   *
   * @default - no file system
   */
  readonly modelFileSystem?: ModelFileSystem;
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

/** The ECS cluster and the Fargate service running `sluice-worker`, scaled from zero by others. */
export class Workers extends Construct {
  public readonly cluster: ecs.Cluster;
  public readonly service: ecs.FargateService;
  public readonly taskDefinition: ecs.FargateTaskDefinition;
  /** The worker's container. */
  public readonly container: ecs.ContainerDefinition;
  /** The model server's container (http mode with `modelServer`). */
  public readonly modelServerContainer?: ecs.ContainerDefinition;
  /** The handler as validated, with its defaults. */
  public readonly handler: ResolvedHandler;
  public readonly securityGroup: ec2.SecurityGroup;
  public readonly logGroup: logs.LogGroup;

  constructor(scope: Construct, id: string, props: WorkersProps) {
    super(scope, id);
    const cpu = props.cpu ?? 1024;
    const memoryLimitMiB = props.memoryLimitMiB ?? 2048;
    validateFargateSize(cpu, memoryLimitMiB);
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
    const handler = resolveHandler(props.handler ?? { mode: 'demo' });
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

    this.taskDefinition = new ecs.FargateTaskDefinition(this, 'TaskDefinition', {
      cpu,
      memoryLimitMiB,
      runtimePlatform: {
        cpuArchitecture: ecs.CpuArchitecture.ARM64,
        operatingSystemFamily: ecs.OperatingSystemFamily.LINUX,
      },
    });

    this.logGroup = new logs.LogGroup(this, 'LogGroup', {
      retention: props.logRetention ?? logs.RetentionDays.ONE_MONTH,
    });

    const logging = (streamPrefix: string) =>
      ecs.LogDrivers.awsLogs({
        logGroup: this.logGroup,
        streamPrefix,
        mode: ecs.AwsLogDriverMode.NON_BLOCKING,
        maxBufferSize: Size.mebibytes(25),
      });

    this.container = this.taskDefinition.addContainer('Worker', {
      image: (props.image ?? defaultWorkerImage()).bind(this, 'WorkerImage'),
      essential: true,
      environment: workerEnv({
        tableName: props.table.tableName,
        queueUrl: props.queue.queueUrl,
        retentionDays,
        concurrency,
        visibilityTimeoutSeconds: visibilitySeconds,
        leaseSeconds,
        maxReceiveCount: props.maxReceiveCount,
        drainSeconds,
        handler: handler.env,
        jobTimeoutSeconds,
        maxJobTimeoutSeconds,
        metricNamespace: props.metricNamespace ?? 'Sluice',
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

    const server = handler.modelServer;
    if (server !== undefined) {
      // Essential: a crashed server takes the task down and the service replaces it. Container
      // dependencies also order the shutdown: ECS stops the worker (which drains) before the server.
      this.modelServerContainer = this.taskDefinition.addContainer('ModelServer', {
        image: server.image.bind(this, 'ModelServerImage'),
        essential: true,
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
    }

    this.securityGroup = new ec2.SecurityGroup(this, 'SecurityGroup', {
      vpc: props.vpc,
      description: 'sluice workers: no inbound; outbound to AWS APIs and model sources',
      allowAllOutbound: true,
    });

    const assignPublicIp = props.assignPublicIp ?? false;
    this.service = new ecs.FargateService(this, 'Service', {
      cluster: this.cluster,
      taskDefinition: this.taskDefinition,
      // No desiredCount: CloudFormation then leaves the running count to the scaling policies on
      // every update (a template value would reset it on each deploy).
      assignPublicIp,
      vpcSubnets:
        props.vpcSubnets ??
        { subnetType: assignPublicIp ? ec2.SubnetType.PUBLIC : ec2.SubnetType.PRIVATE_WITH_EGRESS },
      securityGroups: [this.securityGroup],
      // Start new tasks before stopping old ones, so a deploy never drops capacity under load.
      minHealthyPercent: 100,
      maxHealthyPercent: 200,
      circuitBreaker: { enable: true, rollback: true },
      capacityProviderStrategies: props.spot ? [{ capacityProvider: 'FARGATE_SPOT', weight: 1 }] : undefined,
      platformVersion: ecs.FargatePlatformVersion.LATEST,
      propagateTags: ecs.PropagatedTagSource.SERVICE,
      enableECSManagedTags: true,
    });

    const taskRole = this.taskDefinition.taskRole;
    props.queue.grant(
      taskRole,
      'sqs:ReceiveMessage',
      'sqs:DeleteMessage',
      'sqs:ChangeMessageVisibility',
      // A message near the redrive limit for a reason not the job's own is sent again, fresh.
      'sqs:SendMessage',
    );
    props.table.grant(taskRole, 'dynamodb:GetItem', 'dynamodb:UpdateItem');
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
