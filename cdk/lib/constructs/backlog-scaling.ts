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
import * as sqs from 'aws-cdk-lib/aws-sqs';
import { Construct } from 'constructs';
import { backlogEnv } from '../env';
import { BacklogMetricName, MetricSource, backlogMetric } from '../metrics';
import {
  ScalingPolicy,
  alarmPeriodSeconds,
  effectivePolicyJson,
  scaleOutSteps,
  targetBacklogPerTask,
} from '../policy';
import { acknowledge } from '../nag';
import { wholeSeconds } from '../validate';
import { RustFunction } from './rust-function';

/** A value no backlog per task reaches: the scale-in alarm's value while one task is left. */
const NEVER = 1_000_000_000;

/** Properties of {@link BacklogScaling}. */
export interface BacklogScalingProps {
  readonly queue: sqs.IQueue;
  /** The jobs queue's dead-letter queue, reconciled on every run. */
  readonly deadLetterQueue: sqs.IQueue;
  /** The jobs table, where the reconciler ends stranded jobs FAILED. */
  readonly table: dynamodb.ITable;
  /** Days a finished job's record is kept. */
  readonly retentionDays: number;
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
   * Time between two samples inside one backlog run; at most the alarm period.
   *
   * @default Duration.seconds(10)
   */
  readonly sampleInterval?: Duration;
  /**
   * Principals that may scale the service from zero directly (the submit Lambda's fast path):
   * `ecs:DescribeServices` and `ecs:UpdateService` on the service.
   *
   * @default - none
   */
  readonly nudgers?: iam.IGrantable[];
  /**
   * Retention of the backlog Lambda's logs.
   *
   * @default logs.RetentionDays.ONE_MONTH
   */
  readonly logRetention?: logs.RetentionDays;
}

/**
 * The backlog Lambda on a one-minute schedule, and the step scaling of the worker service that its
 * metrics drive: scale out and in on backlog per task, to zero when idle, from zero on backlog.
 */
export class BacklogScaling extends Construct {
  public readonly function: lambda.IFunction;
  public readonly schedule: events.Rule;
  public readonly scalableTarget: appscaling.ScalableTarget;
  public readonly scaleOutAlarm: cloudwatch.Alarm;
  public readonly scaleInAlarm: cloudwatch.Alarm;
  public readonly idleAlarm: cloudwatch.Alarm;
  public readonly fromZeroAlarm: cloudwatch.Alarm;
  public readonly scaleOutAction: appscaling.StepScalingAction;
  public readonly scaleInAction: appscaling.StepScalingAction;
  public readonly idleAction: appscaling.StepScalingAction;
  public readonly fromZeroAction: appscaling.StepScalingAction;
  /** Where the backlog metrics are published. */
  public readonly metricSource: MetricSource;
  /** The alarms' period. */
  public readonly period: Duration;
  /** Target backlog per task. */
  public readonly target: number;
  public readonly minTasks: number;
  public readonly maxTasks: number;

  constructor(scope: Construct, id: string, props: BacklogScalingProps) {
    super(scope, id);
    const policy = props.policy;
    this.minTasks = props.minTasks ?? policy.minTasks;
    this.maxTasks = props.maxTasks ?? policy.maxTasks;
    if (!Number.isInteger(this.minTasks) || this.minTasks < 0) {
      throw new Error(`minTasks must be a non-negative integer, got ${this.minTasks}`);
    }
    if (!Number.isInteger(this.maxTasks) || this.maxTasks < 1) {
      throw new Error(`maxTasks must be a positive integer, got ${this.maxTasks}`);
    }
    if (this.minTasks > this.maxTasks) {
      throw new Error(`minTasks (${this.minTasks}) must not exceed maxTasks (${this.maxTasks})`);
    }
    const periodSeconds = alarmPeriodSeconds(policy.metricPeriodSeconds);
    this.period = Duration.seconds(periodSeconds);
    const sampleSeconds = wholeSeconds(props.sampleInterval ?? Duration.seconds(10), 'sampleInterval');
    if (sampleSeconds < 1 || sampleSeconds > Math.min(60, periodSeconds)) {
      throw new Error(
        `sampleInterval must be whole seconds from 1 to ${Math.min(60, periodSeconds)} (the alarm period), got ${sampleSeconds}`,
      );
    }
    const idlePeriods = Math.ceil(policy.scaleToZeroAfterIdleSeconds / periodSeconds);
    if (idlePeriods * periodSeconds > 86_400 || policy.scaleIn.evaluationPeriods * periodSeconds > 86_400) {
      throw new Error('scaling policy: an alarm may evaluate at most one day of periods');
    }
    this.target = targetBacklogPerTask(policy);

    // The sampler.
    const backlog = new RustFunction(this, 'Backlog', {
      assetDir: path.join(props.lambdaAssetDir, 'backlog'),
      description: 'sluice backlog: samples queue and service, publishes the scaling metrics',
      memorySize: 128,
      // One run samples for about a minute.
      timeout: Duration.seconds(90),
      // The next scheduled run is the retry.
      retryAttempts: 0,
      logRetention: props.logRetention,
      environment: backlogEnv({
        queueUrl: props.queue.queueUrl,
        clusterName: props.service.cluster.clusterName,
        serviceName: props.service.serviceName,
        scalingPolicy: effectivePolicyJson(policy, this.minTasks, this.maxTasks),
        sampleIntervalSeconds: sampleSeconds,
        deadLetterQueueUrl: props.deadLetterQueue.queueUrl,
        tableName: props.table.tableName,
        retentionDays: props.retentionDays,
      }),
    });
    this.function = backlog.function;
    props.queue.grant(this.function, 'sqs:GetQueueAttributes');
    // Every accepted job ends: the reconciler reads the dead-letter queue (leaving its messages
    // for `sluice dlq`) and ends FAILED the jobs that run nowhere.
    props.deadLetterQueue.grant(this.function, 'sqs:ReceiveMessage', 'sqs:ChangeMessageVisibility');
    props.table.grant(this.function, 'dynamodb:GetItem', 'dynamodb:UpdateItem');
    iam.Grant.addToPrincipal({
      grantee: this.function,
      actions: ['ecs:DescribeServices'],
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
      description: 'sluice: sample the backlog every minute',
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
    const cooldown = Duration.seconds(policy.cooldownSeconds);

    // Scale out: one step policy whose intervals are the policy's steps.
    const out = scaleOutSteps(policy);
    this.scaleOutAction = new appscaling.StepScalingAction(this, 'ScaleOut', {
      scalingTarget: this.scalableTarget,
      adjustmentType: appscaling.AdjustmentType.PERCENT_CHANGE_IN_CAPACITY,
      minAdjustmentMagnitude: 1,
      cooldown,
      metricAggregationType: appscaling.MetricAggregationType.AVERAGE,
    });
    for (const s of out.steps) {
      this.scaleOutAction.addAdjustment({ lowerBound: s.lowerBound, upperBound: s.upperBound, adjustment: s.adjustment });
    }
    this.scaleOutAlarm = new cloudwatch.Alarm(this, 'ScaleOutAlarm', {
      alarmDescription: `sluice: backlog per task >= ${out.threshold} (${policy.scaleOutSteps[0].aboveRatio} x target ${this.target})`,
      metric: metric(BacklogMetricName.BACKLOG_PER_TASK, cloudwatch.Stats.AVERAGE),
      threshold: out.threshold,
      comparisonOperator: cloudwatch.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
      evaluationPeriods: 1,
      treatMissingData: cloudwatch.TreatMissingData.NOT_BREACHING,
    });
    this.scaleOutAlarm.addAlarmAction(new cwactions.ApplicationScalingAction(this.scaleOutAction));

    // Scale in: backlog per task low for evaluation_periods periods. The guard leaves the last
    // task to the idle rule: -25 % of one task rounds to -1 and would strand a short queue.
    const inThreshold = policy.scaleIn.belowRatio * this.target;
    this.scaleInAction = new appscaling.StepScalingAction(this, 'ScaleIn', {
      scalingTarget: this.scalableTarget,
      adjustmentType: appscaling.AdjustmentType.PERCENT_CHANGE_IN_CAPACITY,
      minAdjustmentMagnitude: 1,
      cooldown,
      metricAggregationType: appscaling.MetricAggregationType.AVERAGE,
    });
    this.scaleInAction.addAdjustment({ upperBound: 0, adjustment: policy.scaleIn.changePercent });
    this.scaleInAlarm = new cloudwatch.Alarm(this, 'ScaleInAlarm', {
      alarmDescription: `sluice: backlog per task <= ${inThreshold} (${policy.scaleIn.belowRatio} x target ${this.target}) with more than one task`,
      metric: new cloudwatch.MathExpression({
        expression: `IF(desired > 1, bpt, ${NEVER})`,
        label: 'BacklogPerTask while DesiredTasks > 1',
        usingMetrics: {
          bpt: metric(BacklogMetricName.BACKLOG_PER_TASK, cloudwatch.Stats.AVERAGE),
          desired: metric(BacklogMetricName.DESIRED_TASKS, cloudwatch.Stats.MAXIMUM),
        },
        period: this.period,
      }),
      threshold: inThreshold,
      comparisonOperator: cloudwatch.ComparisonOperator.LESS_THAN_OR_EQUAL_TO_THRESHOLD,
      evaluationPeriods: policy.scaleIn.evaluationPeriods,
      treatMissingData: cloudwatch.TreatMissingData.NOT_BREACHING,
    });
    this.scaleInAlarm.addAlarmAction(new cwactions.ApplicationScalingAction(this.scaleInAction));

    // Scale to zero (min tasks): nothing visible and nothing in flight for the idle time. The
    // guard returns the alarm to OK once the service is parked, so its once-a-minute repeat
    // cannot undo a submit's nudge from zero.
    this.idleAction = new appscaling.StepScalingAction(this, 'ScaleToIdle', {
      scalingTarget: this.scalableTarget,
      adjustmentType: appscaling.AdjustmentType.EXACT_CAPACITY,
      cooldown,
      metricAggregationType: appscaling.MetricAggregationType.MAXIMUM,
    });
    this.idleAction.addAdjustment({ upperBound: 0, adjustment: this.minTasks });
    this.idleAlarm = new cloudwatch.Alarm(this, 'IdleAlarm', {
      alarmDescription: `sluice: no backlog and nothing in flight for ${policy.scaleToZeroAfterIdleSeconds} s`,
      metric: new cloudwatch.MathExpression({
        expression: `IF(desired > ${this.minTasks}, backlog + inflight, 1)`,
        label: 'Backlog + InFlight while above min tasks',
        usingMetrics: {
          backlog: metric(BacklogMetricName.BACKLOG, cloudwatch.Stats.MAXIMUM),
          inflight: metric(BacklogMetricName.IN_FLIGHT, cloudwatch.Stats.MAXIMUM),
          desired: metric(BacklogMetricName.DESIRED_TASKS, cloudwatch.Stats.MAXIMUM),
        },
        period: this.period,
      }),
      threshold: 0,
      comparisonOperator: cloudwatch.ComparisonOperator.LESS_THAN_OR_EQUAL_TO_THRESHOLD,
      evaluationPeriods: idlePeriods,
      treatMissingData: cloudwatch.TreatMissingData.NOT_BREACHING,
    });
    this.idleAlarm.addAlarmAction(new cwactions.ApplicationScalingAction(this.idleAction));

    // Scale from zero, the safety net behind submit's nudge: backlog and no task at all.
    this.fromZeroAction = new appscaling.StepScalingAction(this, 'ScaleFromZero', {
      scalingTarget: this.scalableTarget,
      adjustmentType: appscaling.AdjustmentType.EXACT_CAPACITY,
      cooldown,
      metricAggregationType: appscaling.MetricAggregationType.MAXIMUM,
    });
    this.fromZeroAction.addAdjustment({ lowerBound: 0, adjustment: Math.max(1, this.minTasks) });
    this.fromZeroAlarm = new cloudwatch.Alarm(this, 'FromZeroAlarm', {
      alarmDescription: 'sluice: backlog with no running or pending task',
      metric: metric(BacklogMetricName.BACKLOG_WITHOUT_CAPACITY, cloudwatch.Stats.MAXIMUM),
      threshold: 1,
      comparisonOperator: cloudwatch.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
      evaluationPeriods: 1,
      treatMissingData: cloudwatch.TreatMissingData.NOT_BREACHING,
    });
    this.fromZeroAlarm.addAlarmAction(new cwactions.ApplicationScalingAction(this.fromZeroAction));
  }
}
