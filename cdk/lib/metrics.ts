import { Duration } from 'aws-cdk-lib';
import * as cloudwatch from 'aws-cdk-lib/aws-cloudwatch';

/**
 * Published by the backlog Lambda once per sample (every `metric_period_seconds`, high resolution),
 * dimensions `QueueName` and `ServiceName`.
 */
export const BacklogMetricName = {
  BACKLOG: 'Backlog',
  IN_FLIGHT: 'InFlight',
  RUNNING_TASKS: 'RunningTasks',
  /**
   * Tasks started but not yet running (pulling the image, placing on capacity): with `RunningTasks`,
   * where a scale-out stands while it takes effect.
   */
  PENDING_TASKS: 'PendingTasks',
  DESIRED_TASKS: 'DesiredTasks',
  BACKLOG_PER_TASK: 'BacklogPerTask',
  BACKLOG_WITHOUT_CAPACITY: 'BacklogWithoutCapacity',
  /**
   * The capacity the work needs (`needed_tasks` in `src/scaling/decide.rs`: the tasks that meet the
   * acceptable latency, and a slot per job beyond what running tasks start before a new one could),
   * within the bounds: what the backlog Lambda raises the service to, and the scale-in alarm's
   * numerator.
   */
  NEEDED_TASKS: 'NeededTasks',
  /**
   * 1 while the pipeline is paused (`sluice pause`: workers take no job, jobs wait on purpose),
   * else 0. The alarms on waiting jobs are multiplied by `1 - Paused`.
   */
  PAUSED: 'Paused',
} as const;

/** Published by the worker as Embedded Metric Format log lines, dimension `QueueName`. */
export const WorkerMetricName = {
  JOBS_SUCCEEDED: 'JobsSucceeded',
  JOBS_FAILED: 'JobsFailed',
  JOBS_RETRIED: 'JobsRetried',
  JOBS_CANCELLED: 'JobsCancelled',
  JOBS_EXPIRED: 'JobsExpired',
  /** Milliseconds. */
  JOB_DURATION: 'JobDuration',
  /** Milliseconds. */
  QUEUE_WAIT: 'QueueWait',
} as const;

/** Where sluice's custom metrics live for one deployment. */
export interface MetricSource {
  /** The custom namespace (from the scaling policy). */
  readonly namespace: string;
  readonly queueName: string;
  readonly serviceName: string;
}

/** A metric of one deployment's namespace with the given dimensions. */
function sluiceMetric(
  src: MetricSource,
  dimensionsMap: Record<string, string>,
  metricName: string,
  statistic: string,
  period: Duration,
  label?: string,
): cloudwatch.Metric {
  return new cloudwatch.Metric({ namespace: src.namespace, metricName, dimensionsMap, statistic, period, label });
}

/** A backlog Lambda metric. */
export function backlogMetric(
  src: MetricSource,
  metricName: string,
  statistic: string,
  period: Duration,
  label?: string,
): cloudwatch.Metric {
  const dimensions = { QueueName: src.queueName, ServiceName: src.serviceName };
  return sluiceMetric(src, dimensions, metricName, statistic, period, label);
}

/** A worker (EMF) metric. */
export function workerMetric(
  src: MetricSource,
  metricName: string,
  statistic: string,
  period: Duration,
  label?: string,
): cloudwatch.Metric {
  return sluiceMetric(src, { QueueName: src.queueName }, metricName, statistic, period, label);
}
