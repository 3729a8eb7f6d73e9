import { ArnFormat, Duration, RemovalPolicy, Stack } from 'aws-cdk-lib';
import * as cloudwatch from 'aws-cdk-lib/aws-cloudwatch';
import * as cwactions from 'aws-cdk-lib/aws-cloudwatch-actions';
import * as iam from 'aws-cdk-lib/aws-iam';
import * as kms from 'aws-cdk-lib/aws-kms';
import * as lambda from 'aws-cdk-lib/aws-lambda';
import * as sns from 'aws-cdk-lib/aws-sns';
import * as subscriptions from 'aws-cdk-lib/aws-sns-subscriptions';
import * as sqs from 'aws-cdk-lib/aws-sqs';
import * as ecs from 'aws-cdk-lib/aws-ecs';
import * as events_ from 'aws-cdk-lib/aws-events';
import * as targets from 'aws-cdk-lib/aws-events-targets';
import { Construct } from 'constructs';
import { wholeSeconds } from '../validate';
import { BacklogMetricName, MetricSource, WorkerMetricName, backlogMetric, workerMetric } from '../metrics';

/** Properties of {@link Observability}. */
export interface ObservabilityProps {
  /** Where the backlog and worker metrics are published. */
  readonly metrics: MetricSource;
  readonly queue: sqs.IQueue;
  readonly deadLetterQueue: sqs.IQueue;
  /**
   * The S3 pipeline's events dead-letter queue: events whose objects could not become jobs.
   *
   * @default - no pipeline
   */
  readonly pipelineDeadLetterQueue?: sqs.IQueue;
  /**
   * The job-event topics, by label: the dashboard shows the messages published to each and the
   * deliveries to its subscribers that failed (SNS's `NumberOfNotificationsFailed`).
   *
   * @default - no events option: no graph
   */
  readonly eventTopics?: Record<string, sns.ITopic>;
  /** The Lambdas whose errors and duration the dashboard shows, by label. */
  readonly functions: Record<string, lambda.IFunction>;
  /**
   * The backlog Lambda (the scaling loop), alarmed on errors and throttles.
   *
   * @default - `functions.backlog`; one of the two is required
   */
  readonly backlogFunction?: lambda.IFunction;
  /**
   * Target backlog per task, drawn on the backlog-per-task graph.
   *
   * @default - no annotation
   */
  readonly targetBacklogPerTask?: number;
  /**
   * Subscribe this address to the alarm topic.
   *
   * @default - no subscription
   */
  readonly alarmEmail?: string;
  /**
   * The worker service: its tasks that fail to start or stop soon after starting, its placement
   * failures and its failed deployments are sent to the topic (ECS events through EventBridge).
   *
   * @default - none
   */
  readonly workerService?: ecs.IBaseService;
  /**
   * Alarm when the oldest queued message is older than this.
   *
   * @default Duration.minutes(15)
   */
  readonly maxMessageAge?: Duration;
  /**
   * Alarm when at least this many jobs fail within five minutes.
   *
   * @default 5
   */
  readonly failedJobsThreshold?: number;
}

/**
 * The dashboard, and alarms on what a person must look at (the dead-letter queue, old messages,
 * failed jobs, and the scaling loop's health), sent to an encrypted SNS topic.
 */
export class Observability extends Construct {
  public readonly dashboard: cloudwatch.Dashboard;
  public readonly topic: sns.Topic;
  public readonly topicKey: kms.Key;
  public readonly deadLetterAlarm: cloudwatch.Alarm;
  /** Events of the S3 pipeline in its dead-letter queue, with the `pipeline` option. */
  public readonly pipelineDeadLetterAlarm?: cloudwatch.Alarm;
  public readonly oldestMessageAlarm: cloudwatch.Alarm;
  public readonly failedJobsAlarm: cloudwatch.Alarm;
  /** The backlog Lambda fails in 3 of 5 minutes. */
  public readonly backlogErrorsAlarm: cloudwatch.Alarm;
  /** The backlog Lambda is throttled (its reserved concurrency is exhausted). */
  public readonly backlogThrottlesAlarm: cloudwatch.Alarm;
  /** No backlog sample for 3 minutes: nothing scales out, and the scaling alarms see no data. */
  public readonly missingSamplesAlarm: cloudwatch.Alarm;

  constructor(scope: Construct, id: string, props: ObservabilityProps) {
    super(scope, id);
    const maxAgeSeconds = wholeSeconds(props.maxMessageAge ?? Duration.minutes(15), 'maxMessageAge');
    if (maxAgeSeconds < 60) {
      throw new Error(`maxMessageAge must be at least one minute, got ${maxAgeSeconds} s`);
    }
    const failedJobsThreshold = props.failedJobsThreshold ?? 5;
    if (!Number.isInteger(failedJobsThreshold) || failedJobsThreshold < 1) {
      throw new Error(`failedJobsThreshold must be a positive integer, got ${failedJobsThreshold}`);
    }
    if (props.alarmEmail !== undefined && !/^[^@\s]+@[^@\s]+\.[^@\s]+$/.test(props.alarmEmail)) {
      throw new Error(`alarmEmail must be an e-mail address, got ${props.alarmEmail}`);
    }
    const backlogFunction = props.backlogFunction ?? props.functions.backlog;
    if (backlogFunction === undefined) {
      throw new Error('Observability needs the backlog function (backlogFunction or functions.backlog) to alarm on the scaling loop');
    }

    // SNS encryption needs a customer managed key: CloudWatch cannot use the aws/sns key.
    this.topicKey = new kms.Key(this, 'TopicKey', {
      description: 'sluice alarm topic',
      enableKeyRotation: true,
      removalPolicy: RemovalPolicy.DESTROY,
      pendingWindow: Duration.days(7),
    });
    // CloudWatch publishes the alarms: enforceSSL's deny-only resource policy replaces SNS's
    // default one, so the topic must allow it in so many words. Both grants are for this
    // account's alarms only (the confused-deputy conditions).
    const stack = Stack.of(this);
    const cloudwatchPrincipal = new iam.ServicePrincipal('cloudwatch.amazonaws.com');
    const ownAlarms = {
      StringEquals: { 'aws:SourceAccount': stack.account },
      ArnLike: { 'aws:SourceArn': stack.formatArn({ service: 'cloudwatch', resource: 'alarm', resourceName: '*', arnFormat: ArnFormat.COLON_RESOURCE_NAME }) },
    };
    this.topicKey.addToResourcePolicy(
      new iam.PolicyStatement({
        sid: 'CloudWatchAlarmsEncrypt',
        principals: [cloudwatchPrincipal],
        actions: ['kms:Decrypt', 'kms:GenerateDataKey*'],
        resources: ['*'],
        conditions: ownAlarms,
      }),
    );
    this.topic = new sns.Topic(this, 'AlarmTopic', { masterKey: this.topicKey, enforceSSL: true });
    this.topic.addToResourcePolicy(
      new iam.PolicyStatement({
        sid: 'CloudWatchAlarmsPublish',
        principals: [cloudwatchPrincipal],
        actions: ['sns:Publish'],
        resources: [this.topic.topicArn],
        conditions: ownAlarms,
      }),
    );
    if (props.alarmEmail !== undefined) {
      this.topic.addSubscription(new subscriptions.EmailSubscription(props.alarmEmail));
    }
    const notify = new cwactions.SnsAction(this.topic);

    if (props.workerService !== undefined) this.notifyWorkerFailures(props.workerService);

    const minute = Duration.minutes(1);
    const dlqDepth = props.deadLetterQueue.metricApproximateNumberOfMessagesVisible({
      statistic: cloudwatch.Stats.MAXIMUM,
      period: minute,
      label: 'DLQ depth',
    });
    const pipelineDlqDepth = props.pipelineDeadLetterQueue?.metricApproximateNumberOfMessagesVisible({
      statistic: cloudwatch.Stats.MAXIMUM,
      period: minute,
      label: 'Pipeline events DLQ depth',
    });
    const oldestAge = props.queue.metricApproximateAgeOfOldestMessage({
      statistic: cloudwatch.Stats.MAXIMUM,
      period: minute,
      label: 'Oldest message age (s)',
    });
    const m = props.metrics;
    // 1 while the pipeline is paused: jobs then wait on purpose. No sample (a dead backlog
    // function, alarmed on its own) counts as running, so the alarms below still fire.
    const paused = backlogMetric(m, BacklogMetricName.PAUSED, cloudwatch.Stats.MAXIMUM, minute, 'Paused');
    const failed5m = workerMetric(m, WorkerMetricName.JOBS_FAILED, cloudwatch.Stats.SUM, Duration.minutes(5), 'Failed');

    this.deadLetterAlarm = new cloudwatch.Alarm(this, 'DeadLetterAlarm', {
      alarmDescription: 'sluice: messages in the dead-letter queue',
      metric: dlqDepth,
      threshold: 1,
      comparisonOperator: cloudwatch.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
      evaluationPeriods: 1,
      treatMissingData: cloudwatch.TreatMissingData.NOT_BREACHING,
    });
    if (pipelineDlqDepth !== undefined) {
      this.pipelineDeadLetterAlarm = new cloudwatch.Alarm(this, 'PipelineDeadLetterAlarm', {
        alarmDescription: 'sluice: pipeline events in their dead-letter queue (objects that did not become jobs)',
        metric: pipelineDlqDepth,
        threshold: 1,
        comparisonOperator: cloudwatch.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
        evaluationPeriods: 1,
        treatMissingData: cloudwatch.TreatMissingData.NOT_BREACHING,
      });
    }
    this.oldestMessageAlarm = new cloudwatch.Alarm(this, 'OldestMessageAlarm', {
      alarmDescription: `sluice: a queued job has waited more than ${maxAgeSeconds} s (not while the pipeline is paused)`,
      metric: new cloudwatch.MathExpression({
        expression: 'age * (1 - FILL(paused, 0))',
        usingMetrics: { age: oldestAge, paused },
        period: minute,
        label: 'Oldest message age while running (s)',
      }),
      threshold: maxAgeSeconds,
      comparisonOperator: cloudwatch.ComparisonOperator.GREATER_THAN_THRESHOLD,
      evaluationPeriods: 1,
      treatMissingData: cloudwatch.TreatMissingData.NOT_BREACHING,
    });
    this.failedJobsAlarm = new cloudwatch.Alarm(this, 'FailedJobsAlarm', {
      alarmDescription: `sluice: ${failedJobsThreshold} or more jobs failed within five minutes`,
      metric: failed5m,
      threshold: failedJobsThreshold,
      comparisonOperator: cloudwatch.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
      evaluationPeriods: 1,
      treatMissingData: cloudwatch.TreatMissingData.NOT_BREACHING,
    });

    // The scaling loop cannot die silently: the backlog Lambda alone scales out, and the scaling
    // alarms treat missing data as missing (no action), so without these a dead loop would
    // leave the service where it is and nobody would hear of it.
    this.backlogErrorsAlarm = new cloudwatch.Alarm(this, 'BacklogErrorsAlarm', {
      alarmDescription: 'sluice: the backlog lambda (scale-out and scaling metrics) failed in 3 of the last 5 minutes',
      metric: backlogFunction.metricErrors({ statistic: cloudwatch.Stats.SUM, period: minute, label: 'Backlog errors' }),
      threshold: 1,
      comparisonOperator: cloudwatch.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
      evaluationPeriods: 5,
      datapointsToAlarm: 3,
      treatMissingData: cloudwatch.TreatMissingData.NOT_BREACHING,
    });
    this.backlogThrottlesAlarm = new cloudwatch.Alarm(this, 'BacklogThrottlesAlarm', {
      alarmDescription: 'sluice: the backlog lambda (scale-out and scaling metrics) was throttled',
      metric: backlogFunction.metricThrottles({ statistic: cloudwatch.Stats.SUM, period: minute, label: 'Backlog throttles' }),
      threshold: 1,
      comparisonOperator: cloudwatch.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
      evaluationPeriods: 1,
      datapointsToAlarm: 1,
      treatMissingData: cloudwatch.TreatMissingData.NOT_BREACHING,
    });
    // Every sample publishes BacklogPerTask, idle or not: no sample at all is the failure, so
    // missing data breaches here.
    this.missingSamplesAlarm = new cloudwatch.Alarm(this, 'MissingSamplesAlarm', {
      alarmDescription: 'sluice: no backlog sample for 3 minutes; the service neither scales out nor in',
      metric: backlogMetric(m, BacklogMetricName.BACKLOG_PER_TASK, cloudwatch.Stats.SAMPLE_COUNT, minute, 'Samples'),
      threshold: 1,
      comparisonOperator: cloudwatch.ComparisonOperator.LESS_THAN_THRESHOLD,
      evaluationPeriods: 3,
      datapointsToAlarm: 3,
      treatMissingData: cloudwatch.TreatMissingData.BREACHING,
    });
    const operatorAlarms = [
      this.deadLetterAlarm,
      this.oldestMessageAlarm,
      this.failedJobsAlarm,
      this.backlogErrorsAlarm,
      this.backlogThrottlesAlarm,
      this.missingSamplesAlarm,
      ...(this.pipelineDeadLetterAlarm === undefined ? [] : [this.pipelineDeadLetterAlarm]),
    ];
    for (const alarm of operatorAlarms) {
      alarm.addAlarmAction(notify);
      alarm.addOkAction(notify);
    }

    const b = (name: string, stat: string, label?: string) => backlogMetric(m, name, stat, minute, label);
    const w = (name: string, stat: string, label?: string) => workerMetric(m, name, stat, minute, label);
    const fns = Object.entries(props.functions);
    const eventTopics = Object.entries(props.eventTopics ?? {});
    const width = 8;
    const height = 6;

    this.dashboard = new cloudwatch.Dashboard(this, 'Dashboard', {
      defaultInterval: Duration.hours(3),
      widgets: [
        [
          new cloudwatch.GraphWidget({
            title: 'Backlog and in flight (and paused)',
            width,
            height,
            left: [
              b(BacklogMetricName.BACKLOG, cloudwatch.Stats.MAXIMUM, 'Backlog'),
              b(BacklogMetricName.IN_FLIGHT, cloudwatch.Stats.MAXIMUM, 'In flight'),
            ],
            right: [paused],
            rightYAxis: { min: 0, max: 1, label: 'Paused' },
          }),
          new cloudwatch.GraphWidget({
            title: 'Backlog per task',
            width,
            height,
            left: [b(BacklogMetricName.BACKLOG_PER_TASK, cloudwatch.Stats.AVERAGE, 'Backlog per task')],
            leftAnnotations:
              props.targetBacklogPerTask === undefined
                ? undefined
                : [{ value: props.targetBacklogPerTask, label: 'Target' }],
          }),
          new cloudwatch.GraphWidget({
            title: 'Tasks',
            width,
            height,
            left: [
              b(BacklogMetricName.NEEDED_TASKS, cloudwatch.Stats.MAXIMUM, 'Needed'),
              b(BacklogMetricName.DESIRED_TASKS, cloudwatch.Stats.MAXIMUM, 'Desired'),
              b(BacklogMetricName.RUNNING_TASKS, cloudwatch.Stats.MAXIMUM, 'Running'),
              b(BacklogMetricName.PENDING_TASKS, cloudwatch.Stats.MAXIMUM, 'Pending'),
              b(BacklogMetricName.BACKLOG_WITHOUT_CAPACITY, cloudwatch.Stats.MAXIMUM, 'Backlog without capacity'),
            ],
          }),
        ],
        [
          new cloudwatch.GraphWidget({
            title: 'Job outcomes',
            width,
            height,
            stacked: true,
            left: [
              w(WorkerMetricName.JOBS_SUCCEEDED, cloudwatch.Stats.SUM, 'Succeeded'),
              w(WorkerMetricName.JOBS_FAILED, cloudwatch.Stats.SUM, 'Failed'),
              w(WorkerMetricName.JOBS_RETRIED, cloudwatch.Stats.SUM, 'Retried'),
              w(WorkerMetricName.JOBS_CANCELLED, cloudwatch.Stats.SUM, 'Cancelled'),
              w(WorkerMetricName.JOBS_EXPIRED, cloudwatch.Stats.SUM, 'Expired'),
            ],
          }),
          new cloudwatch.GraphWidget({
            title: 'Job latency (ms)',
            width,
            height,
            left: [
              w(WorkerMetricName.JOB_DURATION, cloudwatch.Stats.p(50), 'Duration p50'),
              w(WorkerMetricName.JOB_DURATION, cloudwatch.Stats.p(99), 'Duration p99'),
              w(WorkerMetricName.QUEUE_WAIT, cloudwatch.Stats.p(50), 'Queue wait p50'),
              w(WorkerMetricName.QUEUE_WAIT, cloudwatch.Stats.p(99), 'Queue wait p99'),
            ],
          }),
          new cloudwatch.GraphWidget({
            title: 'Dead-letter queue and oldest message',
            width,
            height,
            left: pipelineDlqDepth === undefined ? [dlqDepth] : [dlqDepth, pipelineDlqDepth],
            right: [oldestAge],
          }),
        ],
        [
          new cloudwatch.GraphWidget({
            title: 'Lambda errors',
            width: 12,
            height,
            left: fns.map(([label, fn]) => fn.metricErrors({ statistic: cloudwatch.Stats.SUM, period: minute, label })),
          }),
          new cloudwatch.GraphWidget({
            title: 'Lambda duration p99 (ms)',
            width: 12,
            height,
            left: fns.map(([label, fn]) =>
              fn.metricDuration({ statistic: cloudwatch.Stats.p(99), period: minute, label }),
            ),
          }),
        ],
        [
          new cloudwatch.SingleValueWidget({
            title: 'Pipeline: 1 paused (sluice pause), 0 running',
            width: 6,
            height: 3,
            metrics: [paused],
          }),
          new cloudwatch.AlarmStatusWidget({
            title: 'Alarms',
            width: 18,
            height: 3,
            alarms: operatorAlarms,
          }),
        ],
        ...(eventTopics.length === 0
          ? []
          : [
              [
                new cloudwatch.GraphWidget({
                  title: 'Job events: published, and deliveries to subscribers that failed',
                  width: 24,
                  height,
                  left: eventTopics.map(([label, topic]) =>
                    topic.metricNumberOfNotificationsFailed({
                      statistic: cloudwatch.Stats.SUM,
                      period: minute,
                      label: `${label} deliveries failed`,
                    }),
                  ),
                  right: eventTopics.map(([label, topic]) =>
                    topic.metricNumberOfMessagesPublished({ statistic: cloudwatch.Stats.SUM, period: minute, label: `${label} published` }),
                  ),
                }),
              ],
            ]),
      ],
    });
  }

  /**
   * ECS's own events about the worker service, to the topic: a task that fails to start, or whose
   * essential container exits (a crash soon after starting, a broken image), ECS's report that
   * the service cannot start tasks consistently, placement and configuration failures, and a
   * deployment that failed (and was rolled back).
   */
  private notifyWorkerFailures(service: ecs.IBaseService): void {
    const events = new iam.ServicePrincipal('events.amazonaws.com');
    this.topicKey.addToResourcePolicy(
      new iam.PolicyStatement({
        sid: 'EventBridgeEncrypt',
        principals: [events],
        actions: ['kms:Decrypt', 'kms:GenerateDataKey*'],
        resources: ['*'],
      }),
    );
    const target = new targets.SnsTopic(this.topic);
    new events_.Rule(this, 'WorkerServiceEvents', {
      description: 'sluice: the worker service cannot start tasks, or a deployment failed',
      eventPattern: {
        source: ['aws.ecs'],
        detailType: ['ECS Service Action', 'ECS Deployment State Change'],
        resources: [service.serviceArn],
        detail: {
          eventName: [
            'SERVICE_TASK_START_IMPAIRED',
            'SERVICE_TASK_PLACEMENT_FAILURE',
            'SERVICE_TASK_CONFIGURATION_FAILURE',
            'SERVICE_DEPLOYMENT_FAILED',
          ],
        },
      },
      targets: [target],
    });
    new events_.Rule(this, 'WorkerTaskFailures', {
      description: 'sluice: a worker task failed to start or its essential container exited',
      eventPattern: {
        source: ['aws.ecs'],
        detailType: ['ECS Task State Change'],
        detail: {
          clusterArn: [service.cluster.clusterArn],
          lastStatus: ['STOPPED'],
          stopCode: ['TaskFailedToStart', 'EssentialContainerExited'],
        },
      },
      targets: [target],
    });
  }
}
