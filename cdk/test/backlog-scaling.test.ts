import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { App, Stack } from 'aws-cdk-lib';
import { Template } from 'aws-cdk-lib/assertions';
import { BACKSTOP_MINUTES, BacklogScaling } from '../lib/constructs/backlog-scaling';
import { parseScalingPolicy } from '../lib/policy';
import { SluiceStack } from '../lib/sluice-stack';
import { STUB_LAMBDAS, actionsOf, grantsOf, j, logicalId, policyFile, sluiceStack, template } from './helpers';

// Expected numbers come from scaling/policy.json itself, read independently of lib/policy.ts.
const file = policyFile();

type Resources = Record<string, any>;

/** A policy file of its own: the shipped one with `patch` applied. */
function customPolicyFile(patch: Record<string, unknown>): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'sluice-policy-'));
  const policyPath = path.join(dir, 'policy.json');
  fs.writeFileSync(policyPath, JSON.stringify({ ...file, ...patch }));
  return policyPath;
}

/** Every alarm whose metric (or one of whose metric-math metrics) is `metricName` of the namespace. */
function alarmsOn(t: Template, metricName: string, namespace: string = file.namespace): any[] {
  return Object.values(t.findResources('AWS::CloudWatch::Alarm')).filter((a) => {
    const p = a.Properties;
    if (p.MetricName === metricName && p.Namespace === namespace) return true;
    return (p.Metrics ?? []).some(
      (m: any) => m.MetricStat?.Metric.MetricName === metricName && m.MetricStat.Metric.Namespace === namespace,
    );
  });
}

/** The alarm on a metric-math expression that mentions `term`. */
function mathAlarm(t: Template, term: string): any {
  const alarms = Object.values(t.findResources('AWS::CloudWatch::Alarm')).filter((a) =>
    (a.Properties.Metrics ?? []).some((m: any) => m.Expression?.includes(term)),
  );
  assert.equal(alarms.length, 1, term);
  return alarms[0];
}

/** The metric-math alarm's expression and its metrics by id: `{ id: [name, stat, period, namespace] }`. */
function mathOf(alarm: any): { expression: string; metrics: Record<string, [string, string, number, string]> } {
  const ms: any[] = alarm.Properties.Metrics;
  const expr = ms.filter((m) => m.Expression !== undefined);
  assert.equal(expr.length, 1);
  assert.equal(expr[0].ReturnData, true);
  const metrics = Object.fromEntries(
    ms
      .filter((m) => m.MetricStat)
      .map((m) => {
        assert.equal(m.ReturnData, false, m.Id);
        const s = m.MetricStat;
        return [m.Id, [s.Metric.MetricName, s.Stat, s.Period, s.Metric.Namespace]];
      }),
  );
  return { expression: expr[0].Expression, metrics };
}

/** The scaling policy an alarm's only action points at. */
function policyOf(t: Template, alarm: any): any {
  const actions = alarm.Properties.AlarmActions;
  assert.equal(actions.length, 1);
  const policies: Resources = t.findResources('AWS::ApplicationAutoScaling::ScalingPolicy');
  const policy = policies[actions[0].Ref];
  assert.ok(policy, 'the action is a scaling policy of this stack');
  return policy.Properties;
}

/** The backlog Lambda's resource properties. */
function backlogFn(stack: SluiceStack, t: Template): any {
  return t.toJSON().Resources[logicalId(stack.scaling.function)].Properties;
}

test('the lambda is the one controller: the only alarm that acts on the service is the dead-controller backstop', () => {
  const { t } = template();
  const policies = Object.values(t.findResources('AWS::ApplicationAutoScaling::ScalingPolicy')).map(
    (p) => p.Properties.StepScalingPolicyConfiguration,
  );
  assert.equal(policies.length, 1);
  assert.equal(policies[0].AdjustmentType, 'ExactCapacity');
  assert.deepEqual(policies[0].StepAdjustments, [{ MetricIntervalUpperBound: 0, ScalingAdjustment: file.min_tasks }]);
  // No alarm on the controller's own decisions: none on the need, the backlog per task or the
  // lack of capacity, so no alarm repeats an action against a count the lambda set.
  assert.deepEqual(alarmsOn(t, 'NeededTasks'), []);
  assert.deepEqual(alarmsOn(t, 'BacklogWithoutCapacity'), [], 'no from-zero alarm');
  assert.deepEqual(alarmsOn(t, 'BacklogPerTask').filter((a) => a.Properties.ComparisonOperator.startsWith('Greater')), []);
  const policyIds = Object.keys(t.findResources('AWS::ApplicationAutoScaling::ScalingPolicy'));
  const scaling = Object.values(t.findResources('AWS::CloudWatch::Alarm')).filter((a) =>
    (a.Properties.AlarmActions ?? []).some((action: any) => policyIds.includes(action.Ref)),
  );
  assert.equal(scaling.length, 1);
  assert.equal(scaling[0], mathAlarm(t, 'samples'));
});

test('the backstop parks the fleet only after 15 minutes with no sample from the lambda and an empty queue', () => {
  const { stack, t } = template();
  const alarm = mathAlarm(t, 'samples');
  const { expression, metrics } = mathOf(alarm);
  assert.equal(expression, 'IF(FILL(samples, 0) == 0 AND FILL(visible, 0) + FILL(inflight, 0) == 0, 0, 1)');
  assert.deepEqual(metrics, {
    samples: ['DesiredTasks', 'SampleCount', 60, file.namespace],
    visible: ['ApproximateNumberOfMessagesVisible', 'Maximum', 60, 'AWS/SQS'],
    inflight: ['ApproximateNumberOfMessagesNotVisible', 'Maximum', 60, 'AWS/SQS'],
  });
  const queueName = { 'Fn::GetAtt': [logicalId(stack.jobQueue.queue), 'QueueName'] };
  for (const m of alarm.Properties.Metrics.filter((m: any) => m.MetricStat)) {
    const dims = m.MetricStat.Metric.Dimensions;
    assert.deepEqual(dims[0], { Name: 'QueueName', Value: queueName }, m.Id);
  }
  const a = alarm.Properties;
  assert.equal(a.Threshold, 0);
  assert.equal(a.ComparisonOperator, 'LessThanOrEqualToThreshold');
  assert.equal(a.EvaluationPeriods, BACKSTOP_MINUTES);
  assert.equal(a.DatapointsToAlarm, BACKSTOP_MINUTES);
  assert.equal(BACKSTOP_MINUTES, 15);
  // No data at all (no samples, SQS quiet for hours) is a dead controller too.
  assert.equal(a.TreatMissingData, 'breaching');
  const cfg = policyOf(t, alarm).StepScalingPolicyConfiguration;
  assert.equal(cfg.AdjustmentType, 'ExactCapacity');
  assert.deepEqual(cfg.StepAdjustments, [{ MetricIntervalUpperBound: 0, ScalingAdjustment: file.min_tasks }]);
  // Its action is the service's, not a page: the missing-samples alarm tells people.
  assert.ok(!j(a.AlarmActions).includes(logicalId(stack.observability.topic)));
});

test('another policy reaches the lambda whole and moves the backstop\'s target, never the one-minute period', () => {
  const policyPath = customPolicyFile({
    namespace: 'SluiceTest',
    metric_period_seconds: 10,
    min_tasks: 1,
    max_tasks: 8,
    task_startup_seconds: 300,
    keep_idle_startups: 0.5,
  });
  const { stack, t } = template({ scalingPolicyFile: policyPath });
  const backstop = mathAlarm(t, 'samples');
  assert.deepEqual(mathOf(backstop).metrics.samples, ['DesiredTasks', 'SampleCount', 60, 'SluiceTest']);
  const cfg = policyOf(t, backstop).StepScalingPolicyConfiguration;
  assert.deepEqual(cfg.StepAdjustments, [{ MetricIntervalUpperBound: 0, ScalingAdjustment: 1 }]);
  assert.equal(stack.scaling.keepIdleSeconds, 150);

  t.hasResourceProperties('AWS::ApplicationAutoScaling::ScalableTarget', { MinCapacity: 1, MaxCapacity: 8 });
  const env = backlogFn(stack, t).Environment.Variables;
  assert.deepEqual(JSON.parse(env.SLUICE_SCALING_POLICY), JSON.parse(fs.readFileSync(policyPath, 'utf8')));
  // The sampling interval has one source, the policy's metric_period_seconds.
  assert.ok(env.SLUICE_SAMPLE_INTERVAL_SECONDS === undefined || env.SLUICE_SAMPLE_INTERVAL_SECONDS === '10');
  const put = grantsOf(t, stack.scaling.function.role!, 'cloudwatch:PutMetricData');
  assert.deepEqual(put[0].Condition, { StringEquals: { 'cloudwatch:namespace': 'SluiceTest' } });
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
  t.resourceCountIs('AWS::ApplicationAutoScaling::ScalingPolicy', 1);
});

test('the backlog lambda runs every minute with the policy, and only its permissions', () => {
  const { stack, t } = template();
  t.hasResourceProperties('AWS::Events::Rule', {
    ScheduleExpression: 'rate(1 minute)',
    State: 'ENABLED',
    Targets: [{ Arn: { 'Fn::GetAtt': [logicalId(stack.scaling.function), 'Arn'] }, RetryPolicy: { MaximumRetryAttempts: 0 } }],
  });
  const fn = backlogFn(stack, t);
  assert.equal(fn.Runtime, 'provided.al2023');
  assert.deepEqual(fn.Architectures, ['arm64']);
  // Reserved concurrency only when asked for: test/fresh-account.test.ts.
  // Samples for about a minute, never longer than the next run's start plus a margin.
  assert.ok(fn.Timeout > 60 && fn.Timeout <= 120, `timeout ${fn.Timeout}`);
  assert.deepEqual(JSON.parse(fn.Environment.Variables.SLUICE_SCALING_POLICY), file);
  const interval = fn.Environment.Variables.SLUICE_SAMPLE_INTERVAL_SECONDS;
  assert.ok(interval === undefined || interval === String(file.metric_period_seconds), 'no sample interval of its own');
  const role = stack.scaling.function.role!;
  assert.deepEqual(actionsOf(t, role), [
    'cloudwatch:PutMetricData',
    'dynamodb:BatchGetItem',
    'dynamodb:GetItem',
    'dynamodb:PutItem',
    'dynamodb:Query',
    'dynamodb:UpdateItem',
    'ecs:DescribeServices',
    'ecs:UpdateService',
    'logs:CreateLogStream',
    'logs:PutLogEvents',
    'sqs:ChangeMessageVisibility',
    'sqs:DeleteMessage',
    'sqs:GetQueueAttributes',
    'sqs:ReceiveMessage',
    'sqs:SendMessage',
  ]);
  // Scale-out: the service only.
  for (const action of ['ecs:DescribeServices', 'ecs:UpdateService']) {
    const grants = grantsOf(t, role, action);
    assert.equal(grants.length, 1, action);
    assert.equal(j(grants[0].Resource), j({ Ref: logicalId(stack.workers.service) }), action);
  }
  // The jobs table, its open-jobs index (the sweeper's Query), its notify-due index (the webhook
  // deliverer's) and its open-deadlines index (the deadline pass's), nothing else.
  const table = j({ 'Fn::GetAtt': [logicalId(stack.jobTable.table), 'Arn'] });
  assert.equal(j(grantsOf(t, role, 'dynamodb:PutItem')[0].Resource), table);
  const queried = grantsOf(t, role, 'dynamodb:Query').flatMap((g) => [g.Resource].flat().map(j));
  assert.equal(queried.length, 3, queried.join(' '));
  for (const index of ['/index/open-jobs', '/index/notify-due', '/index/open-deadlines']) {
    const query = queried.find((q) => q.includes(index)) ?? '';
    assert.ok(query.includes(logicalId(stack.jobTable.table)), `${index}: ${queried.join(' ')}`);
  }
  // The reconciler receives from and deletes in the dead-letter queue only.
  for (const action of ['sqs:ReceiveMessage', 'sqs:DeleteMessage']) {
    assert.equal(
      j(grantsOf(t, role, action)[0].Resource),
      j({ 'Fn::GetAtt': [logicalId(stack.jobQueue.deadLetterQueue), 'Arn'] }),
      action,
    );
  }
  assert.equal(fn.Environment.Variables.SLUICE_DLQ_URL.Ref, logicalId(stack.jobQueue.deadLetterQueue));
  const put = grantsOf(t, role, 'cloudwatch:PutMetricData');
  assert.deepEqual(put[0].Condition, { StringEquals: { 'cloudwatch:namespace': file.namespace } });
  // It sends to the jobs queue only (a job sent back from the dead-letter queue).
  assert.equal(
    j(grantsOf(t, role, 'sqs:SendMessage')[0].Resource),
    j({ 'Fn::GetAtt': [logicalId(stack.jobQueue.queue), 'Arn'] }),
  );
  const attributes = grantsOf(t, role, 'sqs:GetQueueAttributes').map((g) => j(g.Resource));
  for (const queue of [stack.jobQueue.queue, stack.jobQueue.deadLetterQueue]) {
    assert.ok(attributes.includes(j({ 'Fn::GetAtt': [logicalId(queue), 'Arn'] })), 'both queues\' retention');
  }
});

test('overridden min and max tasks reach the scalable target, the backstop and the lambda\'s effective policy', () => {
  const { stack, t } = template({ minTasks: 3, maxTasks: 9 });
  t.hasResourceProperties('AWS::ApplicationAutoScaling::ScalableTarget', { MinCapacity: 3, MaxCapacity: 9 });
  const env = backlogFn(stack, t).Environment.Variables;
  const effective = JSON.parse(env.SLUICE_SCALING_POLICY);
  assert.deepEqual(effective, { ...file, min_tasks: 3, max_tasks: 9 });
  // In the file's field order, and a policy the parser (the Rust side's twin) accepts.
  assert.deepEqual(Object.keys(effective), Object.keys(file));
  assert.doesNotThrow(() => parseScalingPolicy(env.SLUICE_SCALING_POLICY));
  assert.equal(stack.scaling.effectivePolicy.maxTasks, 9);
  const backstop = mathAlarm(t, 'samples');
  assert.deepEqual(policyOf(t, backstop).StepScalingPolicyConfiguration.StepAdjustments, [
    { MetricIntervalUpperBound: 0, ScalingAdjustment: 3 },
  ]);
});

test('bad min and max tasks are rejected', () => {
  assert.throws(() => template({ minTasks: 4, maxTasks: 2 }), /minTasks \(4\) must not exceed maxTasks \(2\)/);
  assert.throws(() => template({ maxTasks: 0 }), /maxTasks must be a positive integer/);
  assert.throws(() => template({ minTasks: -1 }), /minTasks must be a non-negative integer/);
  assert.throws(() => template({ minTasks: 1.5 }), /minTasks must be a non-negative integer/);
  assert.throws(() => template({ maxTasks: 5001 }), /maxTasks must be at most 5000/);
  // A bad policy file fails the synth with the parser's message.
  assert.throws(
    () => template({ scalingPolicyFile: customPolicyFile({ scale_out_steps: [] }) }),
    { message: /^scaling policy: unknown field scale_out_steps \(/ },
  );
});

test('the construct on its own: the policy\'s bounds by default', () => {
  const stack = sluiceStack();
  const scope = new Stack(stack.node.root as App, 'Other');
  const policy = parseScalingPolicy(JSON.stringify({ ...file, min_tasks: 2, max_tasks: 6 }));
  const scaling = new BacklogScaling(scope, 'Scaling', {
    queue: stack.jobQueue.queue,
    deadLetterQueue: stack.jobQueue.deadLetterQueue,
    table: stack.jobTable.table,
    retentionDays: 7,
    payloadBucket: stack.jobQueue.payloadBucket,
    service: stack.workers.service,
    lambdaAssetDir: STUB_LAMBDAS,
    policy,
  });
  assert.equal(scaling.minTasks, 2);
  assert.equal(scaling.maxTasks, 6);
  assert.deepEqual(scaling.effectivePolicy, policy);
  assert.equal(scaling.period.toSeconds(), 60);
});
