import * as path from 'node:path';
import { Duration, Stack } from 'aws-cdk-lib';
import * as appscaling from 'aws-cdk-lib/aws-applicationautoscaling';
import * as cloudwatch from 'aws-cdk-lib/aws-cloudwatch';
import * as cwactions from 'aws-cdk-lib/aws-cloudwatch-actions';
import * as dynamodb from 'aws-cdk-lib/aws-dynamodb';
import * as ecs from 'aws-cdk-lib/aws-ecs';
import * as events from 'aws-cdk-lib/aws-events';
import * as targets from 'aws-cdk-lib/aws-events-targets';
import * as iam from 'aws-cdk-lib/aws-iam';
import * as lambda from 'aws-cdk-lib/aws-lambda';
import * as logs from 'aws-cdk-lib/aws-logs';
import * as s3 from 'aws-cdk-lib/aws-s3';
import * as sqs from 'aws-cdk-lib/aws-sqs';
import { JobTable } from './job-table';
import { Construct } from 'constructs';
import { backlogEnv } from '../env';
import { BacklogMetricName, MetricSource, backlogMetric } from '../metrics';
import { MAX_TASKS_LIMIT, ScalingPolicy, effectivePolicy, keepIdleSeconds, policyJson, targetBacklogPerTask } from '../policy';
import { acknowledge } from '../nag';
import { JobEvents } from './job-events';
import { RustFunction } from './rust-function';

/**
 * The period of the backstop alarm and of the metrics it reads. The Lambda samples every
 * `metric_period_seconds`; a minute holds a datapoint as long as one sample of it arrived.
 */
export const SCALING_ALARM_PERIOD = Duration.minutes(1);

/**
 * Minutes without a single sample from the backlog Lambda, with nothing visible or in flight in
 * the queue, before the backstop parks the service at `minTasks`: what bounds the cost of a dead
 * controller. Long enough that a late or failed run or two never trips it.
 */
export const BACKSTOP_MINUTES = 15;

/**
 * The reservation that fits the backlog Lambda (one scheduled run and the next one's overlap),
 * when the account can grant one (`reservedConcurrency`).
 */
export const BACKLOG_RESERVED_CONCURRENCY = 2;

/** Properties of {@link BacklogScaling}. */
export interface BacklogScalingProps {
  readonly queue: sqs.IQueue;
  /** The jobs queue's dead-letter queue, reconciled on every run. */
  readonly deadLetterQueue: sqs.IQueue;
  /** The jobs table, where the reconciler ends stranded jobs FAILED. */
  readonly table: dynamodb.ITable;
  /** Days a finished job's record is kept. */
  readonly retentionDays: number;
  /**
   * The payload bucket, which the outbox copies a pipeline job's files from (the grants come
   * with the pipeline, which alone has sinks).
   */
  readonly payloadBucket: s3.IBucket;
  /** The worker service to scale. */
  readonly service: ecs.IBaseService;
  /** The folder with cargo-lambda's output: `<lambdaAssetDir>/backlog/bootstrap`. */
  readonly lambdaAssetDir: string;
  /** The scaling policy (`scaling/policy.json`). */
  readonly policy: ScalingPolicy;
  /**
   * Fewest tasks.
   *
   * @default - the policy's `min_tasks`
   */
  readonly minTasks?: number;
  /**
   * Most tasks.
   *
   * @default - the policy's `max_tasks`
   */
  readonly maxTasks?: number;
  /**
   * Principals that may scale the service from zero directly (the submit Lambda's fast path):
   * `ecs:DescribeServices` and `ecs:UpdateService` on the service. They take the same lease item
   * in the jobs table as the backlog Lambda (granted by their own construct).
   *
   * @default - none
   */
  readonly nudgers?: iam.IGrantable[];
  /**
   * Concurrency reserved for the backlog Lambda, so long-polling status calls cannot starve the
   * loop. Lambda refuses a reservation that leaves fewer than 100 of the account's concurrency
   * unreserved (a new account's quota may be 10), so none is made unless asked for.
   *
   * @default - none: the account's unreserved pool; a throttled run waits in Lambda's queue for
   * at most a minute, and the Throttles alarm reports it
   */
  readonly reservedConcurrency?: number;
  /**
   * Retention of the backlog Lambda's logs.
   *
   * @default logs.RetentionDays.ONE_MONTH
   */
  readonly logRetention?: logs.RetentionDays;
  /**
   * The topics and bus every job's end is published to: the outbox publishes the ends that are
   * due, those a worker could not and those the reconciler and the sweeper make (granted here).
   *
   * @default - none: no job's end is published
   */
  readonly events?: JobEvents;
}

/**
 * The backlog Lambda on a one-minute schedule: it samples every `metric_period_seconds` for about
 * a minute and is the one controller of the service's desired count, both ways (up to
 * `NeededTasks` at once; down once spare tasks stayed unused for `keep_idle_startups` start-ups,
 * never below the tasks that hold jobs). No alarm or step policy changes the count while it runs:
 * the only one left is the backstop, which parks an idle fleet whose controller published nothing
 * for {@link BACKSTOP_MINUTES} minutes. The loop's own health (errors, throttles, missing samples)
 * is alarmed in {@link Observability}.
 */
export class BacklogScaling extends Construct {
  public readonly function: lambda.IFunction;
  public readonly schedule: events.Rule;
  public readonly scalableTarget: appscaling.ScalableTarget;
  /** The backstop: no sample for {@link BACKSTOP_MINUTES} minutes and an empty queue. */
  public readonly backstopAlarm: cloudwatch.Alarm;
  /** The backstop's action: `ExactCapacity minTasks`. */
  public readonly backstopAction: appscaling.StepScalingAction;
  /** Where the backlog metrics are published. */
  public readonly metricSource: MetricSource;
  /** The backstop alarm's period (one minute). */
  public readonly period: Duration;
  /** Target backlog per task. */
  public readonly target: number;
  public readonly minTasks: number;
  public readonly maxTasks: number;
  /** Seconds the controller keeps a spare task: `keep_idle_startups × task_startup_seconds`. */
  public readonly keepIdleSeconds: number;
  /** The policy as deployed (the backlog Lambda's `SLUICE_SCALING_POLICY`): min/max tasks are the stack's. */
  public readonly effectivePolicy: ScalingPolicy;

  constructor(scope: Construct, id: string, props: BacklogScalingProps) {
    super(scope, id);
    this.minTasks = props.minTasks ?? props.policy.minTasks;
    this.maxTasks = props.maxTasks ?? props.policy.maxTasks;
    if (!Number.isInteger(this.minTasks) || this.minTasks < 0) {
      throw new Error(`minTasks must be a non-negative integer, got ${this.minTasks}`);
    }
    if (!Number.isInteger(this.maxTasks) || this.maxTasks < 1) {
      throw new Error(`maxTasks must be a positive integer, got ${this.maxTasks}`);
    }
    if (this.minTasks > this.maxTasks) {
      throw new Error(`minTasks (${this.minTasks}) must not exceed maxTasks (${this.maxTasks})`);
    }
    if (this.maxTasks > MAX_TASKS_LIMIT) {
      throw new Error(`maxTasks must be at most ${MAX_TASKS_LIMIT} (tasks per ECS service), got ${this.maxTasks}`);
    }
    // Validated again as the Lambda will read it: what it raises to never exceeds the target's max.
    const policy = effectivePolicy(props.policy, this.minTasks, this.maxTasks);
    this.effectivePolicy = policy;
    this.period = SCALING_ALARM_PERIOD;
    this.target = targetBacklogPerTask(policy);

    // The sampler and scaler.
    const backlog = new RustFunction(this, 'Backlog', {
      assetDir: path.join(props.lambdaAssetDir, 'backlog'),
      description: 'sluice backlog: samples queue and service, sets the desired count both ways, publishes the scaling metrics',
      memorySize: 128,
      // One run samples for about a minute.
      timeout: Duration.seconds(90),
      // The next scheduled run is the retry.
      retryAttempts: 0,
      // Its own pool when the account can grant one (see reservedConcurrency).
      reservedConcurrentExecutions: props.reservedConcurrency,
      // A run throttled by the schedule's asynchronous invocation is retried by Lambda while it is
      // under a minute old, then dropped: the next scheduled run takes over, none arrives late.
      maxEventAge: Duration.seconds(60),
      logRetention: props.logRetention,
      environment: backlogEnv({
        queueUrl: props.queue.queueUrl,
        clusterName: props.service.cluster.clusterName,
        serviceName: props.service.serviceName,
        scalingPolicy: policyJson(policy),
        // The policy's metric_period_seconds is the one source of the sampling interval (the
        // function defaults to it too; the variable exists to override it in local runs).
        sampleIntervalSeconds: policy.metricPeriodSeconds,
        deadLetterQueueUrl: props.deadLetterQueue.queueUrl,
        tableName: props.table.tableName,
        retentionDays: props.retentionDays,
        payloadBucket: props.payloadBucket.bucketName,
        events: props.events?.env,
      }),
    });
    this.function = backlog.function;
    props.events?.grantPublish(backlog.role);
    // GetQueueAttributes: the depth, and how long each queue keeps a message (the sweeper).
    // SendMessage: the reconciler sends back to the jobs queue a job whose message ran out of
    // deliveries with attempts left.
    props.queue.grant(this.function, 'sqs:GetQueueAttributes', 'sqs:SendMessage');
    // Every accepted job ends: the reconciler reads the dead-letter queue, ends FAILED the jobs
    // that run nowhere (leaving one message each for `sluice dlq redrive`), and deletes the
    // messages with nothing left to act on.
    props.deadLetterQueue.grant(
      this.function,
      'sqs:ReceiveMessage',
      'sqs:ChangeMessageVisibility',
      'sqs:DeleteMessage',
      'sqs:GetQueueAttributes',
    );
    // GetItem/BatchGetItem/UpdateItem: the reconciler and the sweeper, and giving the scaling
    // lease back. PutItem: the scaling lease the backlog Lambda and the submit nudge take around
    // UpdateService, and retiring the id of a dead-lettered message that has no record.
    // Query: the sweeper's open-jobs index, and the webhook deliverer's notify-due index
    // (UpdateItem also makes an owner's signing secret on first use).
    JobTable.grantItems(
      props.table,
      this.function,
      'dynamodb:GetItem',
      'dynamodb:BatchGetItem',
      'dynamodb:UpdateItem',
      'dynamodb:PutItem',
    );
    JobTable.grantOpenIndexQuery(props.table, this.function);
    JobTable.grantNotifyIndexQuery(props.table, this.function);
    // The deadline pass: queued jobs whose deadline passed end EXPIRED, paused or not.
    JobTable.grantDeadlineIndexQuery(props.table, this.function);
    // The controller: read the desired count and set it, both ways.
    iam.Grant.addToPrincipal({
      grantee: this.function,
      actions: ['ecs:DescribeServices', 'ecs:UpdateService'],
      resourceArns: [props.service.serviceArn],
    });
    // PutMetricData has no resource-level permissions; the namespace condition scopes it.
    iam.Grant.addToPrincipal({
      grantee: this.function,
      actions: ['cloudwatch:PutMetricData'],
      resourceArns: ['*'],
      conditions: { StringEquals: { 'cloudwatch:namespace': policy.namespace } },
    });
    acknowledge(
      backlog.role,
      'AwsSolutions-IAM5[Resource::*]',
      'cloudwatch:PutMetricData has no resource-level permissions; a cloudwatch:namespace condition limits it to ' +
        `the policy's namespace (${policy.namespace})`,
    );
    this.schedule = new events.Rule(this, 'Schedule', {
      description: 'sluice: sample the backlog and set the desired count, for a minute per run',
      schedule: events.Schedule.rate(Duration.minutes(1)),
      targets: [new targets.LambdaFunction(this.function, { retryAttempts: 0, maxEventAge: Duration.minutes(1) })],
    });

    // The fast path from zero: submit sets the desired count itself.
    for (const nudger of props.nudgers ?? []) {
      iam.Grant.addToPrincipal({
        grantee: nudger,
        actions: ['ecs:DescribeServices', 'ecs:UpdateService'],
        resourceArns: [props.service.serviceArn],
      });
    }

    // The scalable target, with the ECS service-linked role (as BaseService.autoScaleTaskCount does).
    const stack = Stack.of(this);
    this.scalableTarget = new appscaling.ScalableTarget(this, 'Target', {
      serviceNamespace: appscaling.ServiceNamespace.ECS,
      scalableDimension: 'ecs:service:DesiredCount',
      resourceId: `service/${props.service.cluster.clusterName}/${props.service.serviceName}`,
      minCapacity: this.minTasks,
      maxCapacity: this.maxTasks,
      role: iam.Role.fromRoleArn(
        this,
        'ScalingRole',
        stack.formatArn({
          region: '',
          service: 'iam',
          resource: 'role/aws-service-role/ecs.application-autoscaling.amazonaws.com',
          resourceName: 'AWSServiceRoleForApplicationAutoScaling_ECSService',
        }),
      ),
    });

    this.metricSource = {
      namespace: policy.namespace,
      queueName: props.queue.queueName,
      serviceName: props.service.serviceName,
    };
    const metric = (name: string, statistic: string) =>
      backlogMetric(this.metricSource, name, statistic, this.period);

    // The backstop, for a dead controller only: no sample in the minute (the function failed or
    // never ran) and nothing visible or in flight in the queue (SQS's own metrics, which need no
    // sluice code) for BACKSTOP_MINUTES minutes → minTasks. While the controller publishes, every
    // datapoint is 1 and the alarm stays OK, so it never changes the count the controller set.
    // With no data at all (no samples, and SQS quiet for hours) the alarm breaches too.
    const sqsMetric = (metricName: string) =>
      new cloudwatch.Metric({
        namespace: 'AWS/SQS',
        metricName,
        dimensionsMap: { QueueName: props.queue.queueName },
        statistic: cloudwatch.Stats.MAXIMUM,
        period: this.period,
      });
    this.backstopAction = new appscaling.StepScalingAction(this, 'Backstop', {
      scalingTarget: this.scalableTarget,
      adjustmentType: appscaling.AdjustmentType.EXACT_CAPACITY,
      cooldown: this.period,
      metricAggregationType: appscaling.MetricAggregationType.MAXIMUM,
    });
    this.backstopAction.addAdjustment({ upperBound: 0, adjustment: this.minTasks });
    this.backstopAlarm = new cloudwatch.Alarm(this, 'BackstopAlarm', {
      alarmDescription:
        `sluice: no backlog sample and an empty queue for ${BACKSTOP_MINUTES} min (the controller is dead) -> ` +
        `${this.minTasks} tasks`,
      metric: new cloudwatch.MathExpression({
        expression: 'IF(FILL(samples, 0) == 0 AND FILL(visible, 0) + FILL(inflight, 0) == 0, 0, 1)',
        label: '0 while no sample arrives and the queue is empty',
        usingMetrics: {
          samples: metric(BacklogMetricName.DESIRED_TASKS, cloudwatch.Stats.SAMPLE_COUNT),
          visible: sqsMetric('ApproximateNumberOfMessagesVisible'),
          inflight: sqsMetric('ApproximateNumberOfMessagesNotVisible'),
        },
        period: this.period,
      }),
      threshold: 0,
      comparisonOperator: cloudwatch.ComparisonOperator.LESS_THAN_OR_EQUAL_TO_THRESHOLD,
      evaluationPeriods: BACKSTOP_MINUTES,
      datapointsToAlarm: BACKSTOP_MINUTES,
      treatMissingData: cloudwatch.TreatMissingData.BREACHING,
    });
    this.backstopAlarm.addAlarmAction(new cwactions.ApplicationScalingAction(this.backstopAction));
    // What the controller keeps a spare task for, for readers of the construct.
    this.keepIdleSeconds = keepIdleSeconds(policy);
  }
}
