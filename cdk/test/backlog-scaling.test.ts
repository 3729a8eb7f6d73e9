import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { App, Duration, Stack } from 'aws-cdk-lib';
import { Template } from 'aws-cdk-lib/assertions';
import { BacklogScaling } from '../lib/constructs/backlog-scaling';
import { parseScalingPolicy } from '../lib/policy';
import { actionsOf, grantsOf, j, logicalId, policyFile, sluiceStack, template } from './helpers';

// Expected numbers come from scaling/policy.json itself, computed here rather than copied.
const file = policyFile();
const target = (file.acceptable_latency_seconds / file.average_job_seconds) * (file.jobs_per_task ?? 1);
const p = file.metric_period_seconds;
const period = p <= 10 ? 10 : p <= 30 ? 30 : Math.ceil(p / 60) * 60;

type Resources = Record<string, any>;

function alarmOn(t: Template, metricName: string): any {
  const alarms = Object.values(t.findResources('AWS::CloudWatch::Alarm')).filter(
    (a) => a.Properties.MetricName === metricName && a.Properties.Namespace === file.namespace,
  );
  assert.equal(alarms.length, 1, metricName);
  return alarms;
}

/** The scaling policy an alarm's first action points at. */
function policyOf(t: Template, alarm: any): any {
  const actions = alarm.Properties.AlarmActions;
  assert.equal(actions.length, 1);
  const policies: Resources = t.findResources('AWS::ApplicationAutoScaling::ScalingPolicy');
  return policies[actions[0].Ref].Properties;
}

test('the scale-out alarm and steps follow the policy file', () => {
  const { stack, t } = template();
  const alarm = alarmOn(t, 'BacklogPerTask').find(
    (a: any) => a.Properties.ComparisonOperator === 'GreaterThanOrEqualToThreshold',
  );
  const threshold = file.scale_out_steps[0].above_ratio * target;
  assert.equal(alarm.Properties.Threshold, threshold);
  assert.equal(alarm.Properties.Period, period);
  assert.equal(alarm.Properties.Statistic, 'Average');
  assert.deepEqual(alarm.Properties.Dimensions, [
    { Name: 'QueueName', Value: { 'Fn::GetAtt': [logicalId(stack.jobQueue.queue), 'QueueName'] } },
    { Name: 'ServiceName', Value: { 'Fn::GetAtt': [logicalId(stack.workers.service), 'Name'] } },
  ]);
  const policy = policyOf(t, alarm);
  assert.equal(policy.PolicyType, 'StepScaling');
  const cfg = policy.StepScalingPolicyConfiguration;
  assert.equal(cfg.AdjustmentType, 'PercentChangeInCapacity');
  assert.equal(cfg.MinAdjustmentMagnitude, 1);
  assert.equal(cfg.Cooldown, file.cooldown_seconds);
  const expected = file.scale_out_steps.map((s: any, i: number) => {
    const next = file.scale_out_steps[i + 1];
    const step: any = { MetricIntervalLowerBound: s.above_ratio * target - threshold, ScalingAdjustment: s.change_percent };
    if (next) step.MetricIntervalUpperBound = next.above_ratio * target - threshold;
    return step;
  });
  assert.deepEqual(cfg.StepAdjustments, expected);
  // The intervals are contiguous and the last one is open.
  assert.equal(expected[0].MetricIntervalLowerBound, 0);
  assert.equal(cfg.StepAdjustments.at(-1).MetricIntervalUpperBound, undefined);
});

/** The alarm on a metric-math expression that mentions `term`. */
function mathAlarm(t: Template, term: string): any {
  const alarms = Object.values(t.findResources('AWS::CloudWatch::Alarm')).filter((a) =>
    (a.Properties.Metrics ?? []).some((m: any) => m.Expression?.includes(term)),
  );
  assert.equal(alarms.length, 1, term);
  return alarms[0];
}

test('the scale-in alarm waits evaluation_periods below the ratio, never below one task', () => {
  const { t } = template();
  const alarm = mathAlarm(t, 'bpt');
  const expression = alarm.Properties.Metrics.find((m: any) => m.Expression).Expression;
  assert.equal(expression, 'IF(desired > 1, bpt, 1000000000)');
  const stats = Object.fromEntries(
    alarm.Properties.Metrics.filter((m: any) => m.MetricStat).map((m: any) => [m.Id, m.MetricStat.Metric.MetricName]),
  );
  assert.deepEqual(stats, { bpt: 'BacklogPerTask', desired: 'DesiredTasks' });
  for (const m of alarm.Properties.Metrics.filter((m: any) => m.MetricStat)) {
    assert.equal(m.MetricStat.Period, period);
  }
  assert.equal(alarm.Properties.Threshold, file.scale_in.below_ratio * target);
  assert.equal(alarm.Properties.EvaluationPeriods, file.scale_in.evaluation_periods);
  const cfg = policyOf(t, alarm).StepScalingPolicyConfiguration;
  assert.equal(cfg.AdjustmentType, 'PercentChangeInCapacity');
  assert.equal(cfg.MinAdjustmentMagnitude, 1);
  assert.equal(cfg.Cooldown, file.cooldown_seconds);
  assert.deepEqual(cfg.StepAdjustments, [{ MetricIntervalUpperBound: 0, ScalingAdjustment: file.scale_in.change_percent }]);
});

test('the service scales to min tasks after the idle time with nothing queued or in flight', () => {
  const { t } = template();
  const alarms = [mathAlarm(t, 'inflight')];
  const alarm = alarms[0].Properties;
  const expression = alarm.Metrics.find((m: any) => m.Expression);
  // Above min tasks only, so a parked service's alarm returns to OK and cannot undo a nudge.
  assert.equal(expression.Expression, `IF(desired > ${file.min_tasks}, backlog + inflight, 1)`);
  const names = alarm.Metrics.filter((m: any) => m.MetricStat).map((m: any) => m.MetricStat.Metric.MetricName).sort();
  assert.deepEqual(names, ['Backlog', 'DesiredTasks', 'InFlight']);
  for (const m of alarm.Metrics.filter((m: any) => m.MetricStat)) {
    assert.equal(m.MetricStat.Period, period);
    assert.equal(m.MetricStat.Metric.Namespace, file.namespace);
  }
  assert.equal(alarm.Threshold, 0);
  assert.equal(alarm.ComparisonOperator, 'LessThanOrEqualToThreshold');
  assert.equal(alarm.EvaluationPeriods, Math.ceil(file.scale_to_zero_after_idle_seconds / period));
  assert.ok(alarm.EvaluationPeriods * period >= file.scale_to_zero_after_idle_seconds);
  const cfg = policyOf(t, alarms[0]).StepScalingPolicyConfiguration;
  assert.equal(cfg.AdjustmentType, 'ExactCapacity');
  assert.deepEqual(cfg.StepAdjustments, [{ MetricIntervalUpperBound: 0, ScalingAdjustment: file.min_tasks }]);
});

test('backlog without capacity scales the service from zero', () => {
  const { t } = template();
  const [alarm] = alarmOn(t, 'BacklogWithoutCapacity');
  assert.equal(alarm.Properties.Threshold, 1);
  assert.equal(alarm.Properties.ComparisonOperator, 'GreaterThanOrEqualToThreshold');
  assert.equal(alarm.Properties.EvaluationPeriods, 1);
  assert.equal(alarm.Properties.Period, period);
  const cfg = policyOf(t, alarm).StepScalingPolicyConfiguration;
  assert.equal(cfg.AdjustmentType, 'ExactCapacity');
  assert.deepEqual(cfg.StepAdjustments, [{ MetricIntervalLowerBound: 0, ScalingAdjustment: Math.max(1, file.min_tasks) }]);
});

test('from zero starts min tasks when min tasks is above one', () => {
  const { t } = template({ minTasks: 3, maxTasks: 9 });
  const [alarm] = alarmOn(t, 'BacklogWithoutCapacity');
  assert.deepEqual(policyOf(t, alarm).StepScalingPolicyConfiguration.StepAdjustments, [
    { MetricIntervalLowerBound: 0, ScalingAdjustment: 3 },
  ]);
  t.hasResourceProperties('AWS::ApplicationAutoScaling::ScalableTarget', { MinCapacity: 3, MaxCapacity: 9 });
});

test('the scalable target takes min and max tasks from the policy file', () => {
  const { stack, t } = template();
  t.resourceCountIs('AWS::ApplicationAutoScaling::ScalableTarget', 1);
  t.hasResourceProperties('AWS::ApplicationAutoScaling::ScalableTarget', {
    MinCapacity: file.min_tasks,
    MaxCapacity: file.max_tasks,
    ScalableDimension: 'ecs:service:DesiredCount',
    ServiceNamespace: 'ecs',
  });
  const resourceId = j(Object.values(t.findResources('AWS::ApplicationAutoScaling::ScalableTarget'))[0].Properties.ResourceId);
  assert.ok(resourceId.includes(logicalId(stack.workers.cluster)) && resourceId.includes(logicalId(stack.workers.service)));
  t.resourceCountIs('AWS::ApplicationAutoScaling::ScalingPolicy', 4);
});

test('the backlog lambda runs every minute with the policy and only its permissions', () => {
  const { stack, t } = template();
  t.hasResourceProperties('AWS::Events::Rule', {
    ScheduleExpression: 'rate(1 minute)',
    State: 'ENABLED',
    Targets: [{ Arn: { 'Fn::GetAtt': [logicalId(stack.scaling.function), 'Arn'] }, RetryPolicy: { MaximumRetryAttempts: 0 } }],
  });
  const fn = t.toJSON().Resources[logicalId(stack.scaling.function)].Properties;
  assert.equal(fn.Runtime, 'provided.al2023');
  assert.deepEqual(fn.Architectures, ['arm64']);
  assert.deepEqual(JSON.parse(fn.Environment.Variables.SLUICE_SCALING_POLICY), file);
  assert.equal(fn.Environment.Variables.SLUICE_SAMPLE_INTERVAL_SECONDS, '10');
  const role = stack.scaling.function.role!;
  assert.deepEqual(actionsOf(t, role), [
    'cloudwatch:PutMetricData',
    'dynamodb:GetItem',
    'dynamodb:UpdateItem',
    'ecs:DescribeServices',
    'logs:CreateLogStream',
    'logs:PutLogEvents',
    'sqs:ChangeMessageVisibility',
    'sqs:GetQueueAttributes',
    'sqs:ReceiveMessage',
  ]);
  // The reconciler reads the dead-letter queue only, and never deletes from it.
  assert.equal(
    j(grantsOf(t, role, 'sqs:ReceiveMessage')[0].Resource),
    j({ 'Fn::GetAtt': [logicalId(stack.jobQueue.deadLetterQueue), 'Arn'] }),
  );
  assert.equal(fn.Environment.Variables.SLUICE_DLQ_URL.Ref, logicalId(stack.jobQueue.deadLetterQueue));
  const put = grantsOf(t, role, 'cloudwatch:PutMetricData');
  assert.deepEqual(put[0].Condition, { StringEquals: { 'cloudwatch:namespace': file.namespace } });
  assert.equal(j(grantsOf(t, role, 'ecs:DescribeServices')[0].Resource), j({ Ref: logicalId(stack.workers.service) }));
  assert.equal(
    j(grantsOf(t, role, 'sqs:GetQueueAttributes')[0].Resource),
    j({ 'Fn::GetAtt': [logicalId(stack.jobQueue.queue), 'Arn'] }),
  );
});

test('overridden min and max tasks reach the backlog lambda policy too', () => {
  const { stack, t } = template({ minTasks: 1, maxTasks: 5 });
  const fn = t.toJSON().Resources[logicalId(stack.scaling.function)].Properties;
  assert.deepEqual(JSON.parse(fn.Environment.Variables.SLUICE_SCALING_POLICY), { ...file, min_tasks: 1, max_tasks: 5 });
});

test('a policy with another period and steps changes the alarms accordingly', () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'sluice-policy-'));
  const custom = {
    ...file,
    namespace: 'SluiceTest',
    metric_period_seconds: 45,
    scale_out_steps: [
      { above_ratio: 1.5, change_percent: 20 },
      { above_ratio: 3, change_percent: 80 },
    ],
    future_field: { kept: true },
  };
  const policyPath = path.join(dir, 'policy.json');
  fs.writeFileSync(policyPath, JSON.stringify(custom));
  const { t } = template({ scalingPolicyFile: policyPath });
  const out = Object.values(t.findResources('AWS::CloudWatch::Alarm')).find(
    (a) => a.Properties.MetricName === 'BacklogPerTask' && a.Properties.ComparisonOperator === 'GreaterThanOrEqualToThreshold',
  )!;
  assert.equal(out.Properties.Namespace, 'SluiceTest');
  assert.equal(out.Properties.Period, 60);
  assert.equal(out.Properties.Threshold, 1.5 * target);
  assert.deepEqual(policyOf(t, out).StepScalingPolicyConfiguration.StepAdjustments, [
    { MetricIntervalLowerBound: 0, MetricIntervalUpperBound: 1.5 * target, ScalingAdjustment: 20 },
    { MetricIntervalLowerBound: 1.5 * target, ScalingAdjustment: 80 },
  ]);
  const fn = Object.values(t.findResources('AWS::Lambda::Function')).find(
    (f) => f.Properties.Environment.Variables.SLUICE_SCALING_POLICY,
  )!;
  assert.deepEqual(JSON.parse(fn.Properties.Environment.Variables.SLUICE_SCALING_POLICY).future_field, { kept: true });
});

test('bad scaling props and policies are rejected', () => {
  const text = JSON.stringify(file);
  const bad = (patch: object) => () => parseScalingPolicy(JSON.stringify({ ...file, ...patch }));
  assert.doesNotThrow(() => parseScalingPolicy(text));
  assert.throws(bad({ namespace: 'AWS/ECS' }), /namespace AWS\/ECS is reserved/);
  assert.throws(bad({ min_tasks: 5, max_tasks: 2 }), /min_tasks \(5\) must not exceed max_tasks \(2\)/);
  assert.throws(bad({ scale_out_steps: [] }), /scale_out_steps must be a non-empty list/);
  assert.throws(
    bad({ scale_out_steps: [{ above_ratio: 2, change_percent: 50 }, { above_ratio: 1, change_percent: 100 }] }),
    /strictly increasing above_ratio/,
  );
  assert.throws(bad({ scale_in: { ...file.scale_in, change_percent: 25 } }), /scale_in.change_percent must be negative/);
  assert.throws(bad({ average_job_seconds: 0 }), /average_job_seconds must be positive/);
  assert.throws(() => parseScalingPolicy('{'), /not valid json/);
  const { namespace: _omit, ...noNamespace } = file;
  assert.throws(() => parseScalingPolicy(JSON.stringify(noNamespace)), /missing field namespace/);

  assert.throws(() => template({ minTasks: 4, maxTasks: 2 }), /minTasks \(4\) must not exceed maxTasks \(2\)/);
  assert.throws(() => template({ maxTasks: 0 }), /maxTasks must be a positive integer/);
  assert.throws(() => template({ minTasks: -1 }), /minTasks must be a non-negative integer/);
});

test('the sample interval must fit in the alarm period', () => {
  const stack = sluiceStack();
  const scope = new Stack(stack.node.root as App, 'Other');
  const policy = parseScalingPolicy(JSON.stringify(file));
  const make = (sampleInterval: Duration) =>
    new BacklogScaling(scope, `S${sampleInterval.toMilliseconds()}`, {
      queue: stack.jobQueue.queue,
      deadLetterQueue: stack.jobQueue.deadLetterQueue,
      table: stack.jobTable.table,
      retentionDays: 7,
      service: stack.workers.service,
      lambdaAssetDir: path.join(__dirname, 'fixtures', 'lambda'),
      policy,
      sampleInterval,
    });
  assert.throws(() => make(Duration.seconds(period + 1)), /sampleInterval must be whole seconds from 1 to/);
  assert.throws(() => make(Duration.millis(2500)), /sampleInterval must be whole seconds/);
});
