import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import { Duration } from 'aws-cdk-lib';
import { Match, Template } from 'aws-cdk-lib/assertions';
import { j, logicalId, policyFile, sluiceStack, template } from './helpers';
import { Construct } from 'constructs';
import { Observability } from '../lib/constructs/observability';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';

const file = policyFile();

/** The dashboard body with CloudFormation references flattened to their logical ids. */
function dashboardBody(t: Template): string {
  const dash = Object.values(t.findResources('AWS::CloudWatch::Dashboard'));
  assert.equal(dash.length, 1);
  return j(dash[0].Properties.DashboardBody);
}

test('the dashboard shows scaling, jobs, queues and lambdas', () => {
  const { t } = template();
  const body = dashboardBody(t);
  for (const metric of [
    'Backlog',
    'InFlight',
    'BacklogPerTask',
    'RunningTasks',
    'PendingTasks',
    'DesiredTasks',
    'NeededTasks',
    'BacklogWithoutCapacity',
    'JobsSucceeded',
    'JobsFailed',
    'JobsRetried',
    'JobsCancelled',
    'JobsExpired',
    'JobDuration',
    'QueueWait',
    'ApproximateNumberOfMessagesVisible',
    'ApproximateAgeOfOldestMessage',
    'Errors',
    'Duration',
  ]) {
    assert.ok(body.includes(`\\"${metric}\\"`), metric);
  }
  assert.ok(body.includes(`\\"${file.namespace}\\"`));
  assert.ok(body.includes('\\"AWS/SQS\\"') && body.includes('\\"AWS/Lambda\\"'));
});

test('alarms cover the dead-letter queue, old messages and failed jobs, and notify the topic', () => {
  const { stack, t } = template();
  const topic = { Ref: logicalId(stack.observability.topic) };
  const alarms = [
    stack.observability.deadLetterAlarm,
    stack.observability.oldestMessageAlarm,
    stack.observability.failedJobsAlarm,
  ].map((a) => t.toJSON().Resources[logicalId(a)].Properties);
  for (const alarm of alarms) {
    assert.deepEqual(alarm.AlarmActions, [topic]);
    assert.deepEqual(alarm.OKActions, [topic]);
  }
  const [dlq, oldest, failed] = alarms.map((a) => ({ ...a, stat: a.Metrics?.[0]?.MetricStat ?? a }));
  assert.equal(dlq.stat.Metric?.MetricName ?? dlq.MetricName, 'ApproximateNumberOfMessagesVisible');
  assert.ok(j(dlq).includes(logicalId(stack.jobQueue.deadLetterQueue)));
  assert.equal(dlq.Threshold, 1);
  assert.ok(j(oldest).includes('"ApproximateAgeOfOldestMessage"'), j(oldest));
  assert.equal(oldest.Threshold, 15 * 60);
  assert.equal(failed.stat.Metric?.MetricName ?? failed.MetricName, 'JobsFailed');
  assert.ok(j(failed).includes(`"${file.namespace}"`));
  // Scaling alarms act on the service, not on people.
  for (const a of [stack.scaling.backstopAlarm]) {
    assert.ok(!j(t.toJSON().Resources[logicalId(a)].Properties.AlarmActions).includes(logicalId(stack.observability.topic)));
  }
});

test('the waiting-jobs alarm is silenced while the pipeline is paused, and the dashboard shows the state', () => {
  const { stack, t } = template();
  const oldest = t.toJSON().Resources[logicalId(stack.observability.oldestMessageAlarm)].Properties;
  const queries: any[] = oldest.Metrics;
  const expr = queries.find((q) => q.Expression !== undefined);
  assert.equal(expr.Expression, 'age * (1 - FILL(paused, 0))', 'no sample counts as running');
  assert.equal(expr.ReturnData ?? true, true);
  const byId = (id: string) => queries.find((q) => q.Id === id);
  assert.equal(byId('age').MetricStat.Metric.MetricName, 'ApproximateAgeOfOldestMessage');
  assert.equal(byId('age').ReturnData, false);
  const paused = byId('paused').MetricStat;
  assert.equal(paused.Metric.MetricName, 'Paused');
  assert.equal(paused.Metric.Namespace, file.namespace);
  assert.deepEqual(paused.Metric.Dimensions.map((d: any) => d.Name).sort(), ['QueueName', 'ServiceName']);
  assert.equal(paused.Stat, 'Maximum', 'paused at any time in the minute');
  assert.equal(paused.Period, 60);
  assert.ok(oldest.AlarmDescription.includes('not while the pipeline is paused'));
  // The Rust side publishes the metric by that name (src/cloudwatch.rs).
  const cloudwatch = readFileSync(join(__dirname, '..', '..', 'src', 'cloudwatch.rs'), 'utf8');
  assert.ok(cloudwatch.includes('("Paused", f64::from(m.paused), StandardUnit::Count)'));

  const dash = Object.values(t.findResources('AWS::CloudWatch::Dashboard'))[0];
  const body = dash.Properties.DashboardBody;
  const text =
    typeof body === 'string' ? body : body['Fn::Join'][1].map((p: unknown) => (typeof p === 'string' ? p : 'REF')).join('');
  const widgets: any[] = JSON.parse(text).widgets;
  const state = widgets.find((w) => w.properties.title?.startsWith('Pipeline'));
  assert.ok(state, 'a pipeline widget');
  assert.equal(state.properties.view, 'singleValue');
  assert.ok(j(state.properties.metrics).includes('"Paused"'));
});

/** The tasks graph of the dashboard, with the metric names and stats it plots. */
function tasksGraph(t: Template): { metrics: string[][] } {
  const dash = Object.values(t.findResources('AWS::CloudWatch::Dashboard'))[0];
  // The body is an Fn::Join of strings and references: join it with placeholders, then parse.
  const body = dash.Properties.DashboardBody;
  const text =
    typeof body === 'string' ? body : body['Fn::Join'][1].map((p: unknown) => (typeof p === 'string' ? p : 'REF')).join('');
  const widgets: any[] = JSON.parse(text).widgets;
  const tasks = widgets.find((w) => w.properties.title === 'Tasks');
  assert.ok(tasks, 'a tasks graph');
  return { metrics: tasks.properties.metrics };
}

test('the dashboard shows needed tasks beside desired, running and pending', () => {
  const { t } = template();
  const names = tasksGraph(t).metrics.map((m) => m[1]);
  assert.deepEqual(names.slice(0, 4), ['NeededTasks', 'DesiredTasks', 'RunningTasks', 'PendingTasks']);
  for (const m of tasksGraph(t).metrics.slice(0, 4)) {
    assert.equal(m[0], file.namespace);
  }
});

/**
 * An alarm's properties by its construct, with its one metric flattened (CDK writes a labelled
 * metric as a one-element `Metrics` list).
 */
function props(t: Template, alarm: Construct): any {
  const p = t.toJSON().Resources[logicalId(alarm)].Properties;
  if (p.Metrics === undefined) return p;
  assert.equal(p.Metrics.length, 1);
  const s = p.Metrics[0].MetricStat;
  return { ...p, ...s.Metric, Statistic: s.Stat, Period: s.Period };
}

test('the scaling loop cannot die silently: errors, throttles and missing samples alarm the operator', () => {
  const { stack, t } = template();
  const o = stack.observability;
  const topic = [{ Ref: logicalId(o.topic) }];
  const fn = { Ref: logicalId(stack.scaling.function) };

  const errors = props(t, o.backlogErrorsAlarm);
  assert.equal(errors.Namespace, 'AWS/Lambda');
  assert.equal(errors.MetricName, 'Errors');
  assert.deepEqual(errors.Dimensions, [{ Name: 'FunctionName', Value: fn }]);
  assert.equal(errors.Statistic, 'Sum');
  assert.equal(errors.Period, 60);
  assert.equal(errors.Threshold, 1);
  assert.equal(errors.ComparisonOperator, 'GreaterThanOrEqualToThreshold');
  assert.equal(errors.EvaluationPeriods, 5);
  assert.equal(errors.DatapointsToAlarm, 3);
  assert.equal(errors.TreatMissingData, 'notBreaching');

  const throttles = props(t, o.backlogThrottlesAlarm);
  assert.equal(throttles.Namespace, 'AWS/Lambda');
  assert.equal(throttles.MetricName, 'Throttles');
  assert.deepEqual(throttles.Dimensions, [{ Name: 'FunctionName', Value: fn }]);
  assert.equal(throttles.Statistic, 'Sum');
  assert.equal(throttles.Period, 60);
  assert.equal(throttles.Threshold, 1);
  assert.equal(throttles.ComparisonOperator, 'GreaterThanOrEqualToThreshold');
  assert.equal(throttles.EvaluationPeriods, 1);
  assert.equal(throttles.DatapointsToAlarm, 1);
  assert.equal(throttles.TreatMissingData, 'notBreaching');

  // No sample at all is the failure: missing data breaches.
  const missing = props(t, o.missingSamplesAlarm);
  assert.equal(missing.Namespace, file.namespace);
  assert.equal(missing.MetricName, 'BacklogPerTask');
  assert.deepEqual(missing.Dimensions, [
    { Name: 'QueueName', Value: { 'Fn::GetAtt': [logicalId(stack.jobQueue.queue), 'QueueName'] } },
    { Name: 'ServiceName', Value: { 'Fn::GetAtt': [logicalId(stack.workers.service), 'Name'] } },
  ]);
  assert.equal(missing.Statistic, 'SampleCount');
  assert.equal(missing.Period, 60);
  assert.equal(missing.Threshold, 1);
  assert.equal(missing.ComparisonOperator, 'LessThanThreshold');
  assert.equal(missing.EvaluationPeriods, 3);
  assert.equal(missing.DatapointsToAlarm, 3);
  assert.equal(missing.TreatMissingData, 'breaching');

  for (const a of [errors, throttles, missing]) {
    assert.deepEqual(a.AlarmActions, topic);
    assert.deepEqual(a.OKActions, topic);
  }
  // All six operator alarms are on the dashboard's alarm widget.
  const body = j(Object.values(t.findResources('AWS::CloudWatch::Dashboard'))[0].Properties.DashboardBody);
  for (const a of [o.backlogErrorsAlarm, o.backlogThrottlesAlarm, o.missingSamplesAlarm, o.deadLetterAlarm]) {
    assert.ok(body.includes(logicalId(a)), a.node.id);
  }
});

test('the loop alarms follow a backlog function given on its own, and need one', () => {
  const stack = sluiceStack();
  const base = {
    metrics: stack.scaling.metricSource,
    queue: stack.jobQueue.queue,
    deadLetterQueue: stack.jobQueue.deadLetterQueue,
  };
  const o = new Observability(stack, 'O3', { ...base, functions: {}, backlogFunction: stack.scaling.function });
  const t = Template.fromStack(stack);
  assert.deepEqual(props(t, o.backlogErrorsAlarm).Dimensions, [
    { Name: 'FunctionName', Value: { Ref: logicalId(stack.scaling.function) } },
  ]);
  assert.throws(() => new Observability(stack, 'O4', { ...base, functions: {} }), /needs the backlog function/);
});

test('the topic is encrypted with a rotating key that cloudwatch may use, and refuses plain http', () => {
  const { stack, t } = template();
  t.hasResourceProperties('AWS::SNS::Topic', {
    KmsMasterKeyId: { 'Fn::GetAtt': [logicalId(stack.observability.topicKey), 'Arn'] },
  });
  t.hasResourceProperties('AWS::KMS::Key', {
    EnableKeyRotation: true,
    KeyPolicy: {
      Statement: Match.arrayWith([
        Match.objectLike({
          Principal: { Service: 'cloudwatch.amazonaws.com' },
          Action: ['kms:Decrypt', 'kms:GenerateDataKey*'],
          Condition: {
            StringEquals: { 'aws:SourceAccount': { Ref: 'AWS::AccountId' } },
            ArnLike: { 'aws:SourceArn': Match.anyValue() },
          },
        }),
      ]),
    },
  });
  // enforceSSL's deny-only policy replaces SNS's default one: CloudWatch must be allowed to
  // publish in so many words, or no alarm notification ever arrives.
  const policies = Object.values(t.findResources('AWS::SNS::TopicPolicy'));
  assert.equal(policies.length, 1);
  const statements: any[] = policies[0].Properties.PolicyDocument.Statement;
  assert.ok(statements.some((s) => s.Effect === 'Deny' && s.Condition?.Bool?.['aws:SecureTransport'] === 'false'));
  const publish = statements.find((s) => s.Effect === 'Allow' && s.Principal?.Service === 'cloudwatch.amazonaws.com');
  assert.ok(publish, 'cloudwatch may publish to the alarm topic');
  assert.equal(publish.Action, 'sns:Publish');
  assert.deepEqual(publish.Resource, { Ref: logicalId(stack.observability.topic) });
  assert.deepEqual(publish.Condition.StringEquals, { 'aws:SourceAccount': { Ref: 'AWS::AccountId' } });
  assert.ok(j(publish.Condition.ArnLike['aws:SourceArn']).includes(':alarm:*'));
  t.resourceCountIs('AWS::SNS::Subscription', 0);
});

test('an alarm e-mail subscribes to the topic', () => {
  const { t } = template({ alarmEmail: 'oncall@example.com' });
  t.hasResourceProperties('AWS::SNS::Subscription', { Protocol: 'email', Endpoint: 'oncall@example.com' });
});

test('bad observability props are rejected', () => {
  assert.throws(() => template({ alarmEmail: 'not-an-address' }), /alarmEmail must be an e-mail address/);
  const stack = sluiceStack();
  const base = {
    metrics: stack.scaling.metricSource,
    queue: stack.jobQueue.queue,
    deadLetterQueue: stack.jobQueue.deadLetterQueue,
    functions: {},
  };
  assert.throws(() => new Observability(stack, 'O1', { ...base, maxMessageAge: Duration.seconds(30) }), /maxMessageAge must be at least one minute/);
  assert.throws(() => new Observability(stack, 'O2', { ...base, failedJobsThreshold: 0 }), /failedJobsThreshold must be a positive integer/);
});
