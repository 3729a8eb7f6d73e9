import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import { Duration } from 'aws-cdk-lib';
import { Match, Template } from 'aws-cdk-lib/assertions';
import { j, logicalId, policyFile, sluiceStack, template } from './helpers';
import { Observability } from '../lib/constructs/observability';

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
    'DesiredTasks',
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
  assert.equal(oldest.stat.Metric?.MetricName ?? oldest.MetricName, 'ApproximateAgeOfOldestMessage');
  assert.equal(oldest.Threshold, 15 * 60);
  assert.equal(failed.stat.Metric?.MetricName ?? failed.MetricName, 'JobsFailed');
  assert.ok(j(failed).includes(`"${file.namespace}"`));
  // Scaling alarms act on the service, not on people.
  for (const a of [stack.scaling.scaleOutAlarm, stack.scaling.idleAlarm]) {
    assert.ok(!j(t.toJSON().Resources[logicalId(a)].Properties.AlarmActions).includes(logicalId(stack.observability.topic)));
  }
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
