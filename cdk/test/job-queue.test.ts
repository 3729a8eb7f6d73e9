import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import { Duration, Stack } from 'aws-cdk-lib';
import { Match, Template } from 'aws-cdk-lib/assertions';
import { JobQueue, JobQueueProps } from '../lib/constructs/job-queue';
import { logicalId, sluiceStack, testApp } from './helpers';

function queueStack(props: JobQueueProps = {}): { q: JobQueue; t: Template } {
  const stack = new Stack(testApp(), 'Test');
  const q = new JobQueue(stack, 'JobQueue', props);
  return { q, t: Template.fromStack(stack) };
}

test('the queue redrives to the dead-letter queue after maxReceiveCount deliveries', () => {
  const { q, t } = queueStack({ maxReceiveCount: 7 });
  t.hasResourceProperties('AWS::SQS::Queue', {
    RedrivePolicy: { maxReceiveCount: 7, deadLetterTargetArn: { 'Fn::GetAtt': [logicalId(q.deadLetterQueue), 'Arn'] } },
  });
  assert.equal(q.maxReceiveCount, 7);
});

test('the visibility timeout derives from the lease', () => {
  const { q, t } = queueStack({ leaseDuration: Duration.minutes(5) });
  const expected = 5 * 60 + JobQueue.visibilityMargin.toSeconds();
  t.hasResourceProperties('AWS::SQS::Queue', { VisibilityTimeout: expected, RedrivePolicy: Match.anyValue() });
  assert.equal(q.visibilityTimeout.toSeconds(), expected);
  assert.equal(q.leaseDuration.toSeconds(), 300);
  // A message reappears only once the lease has expired.
  assert.ok(q.visibilityTimeout.toSeconds() > q.leaseDuration.toSeconds());
});

test('both queues are encrypted and refuse plain http', () => {
  const { q, t } = queueStack();
  const queues = t.findResources('AWS::SQS::Queue');
  assert.equal(Object.keys(queues).length, 2);
  for (const queue of Object.values(queues)) {
    assert.equal(queue.Properties.SqsManagedSseEnabled, true);
  }
  for (const queue of [q.queue, q.deadLetterQueue]) {
    t.hasResourceProperties('AWS::SQS::QueuePolicy', {
      Queues: [{ Ref: logicalId(queue) }],
      PolicyDocument: {
        Statement: Match.arrayWith([
          Match.objectLike({ Effect: 'Deny', Condition: { Bool: { 'aws:SecureTransport': 'false' } } }),
        ]),
      },
    });
  }
});

test('the payload bucket blocks public access, requires tls and expires objects', () => {
  const { t } = queueStack({ payloadRetention: Duration.days(9) });
  t.hasResourceProperties('AWS::S3::Bucket', {
    PublicAccessBlockConfiguration: {
      BlockPublicAcls: true,
      BlockPublicPolicy: true,
      IgnorePublicAcls: true,
      RestrictPublicBuckets: true,
    },
    BucketName: Match.absent(),
    LifecycleConfiguration: {
      Rules: Match.arrayWith([
        Match.objectLike({ ExpirationInDays: 9, Status: 'Enabled' }),
        Match.objectLike({ AbortIncompleteMultipartUpload: { DaysAfterInitiation: 1 } }),
      ]),
    },
  });
  t.hasResourceProperties('AWS::S3::BucketPolicy', {
    PolicyDocument: {
      Statement: Match.arrayWith([
        Match.objectLike({ Effect: 'Deny', Condition: { Bool: { 'aws:SecureTransport': 'false' } } }),
      ]),
    },
  });
});

test('bad queue props are rejected', () => {
  assert.throws(() => queueStack({ maxReceiveCount: 0 }), /maxReceiveCount must be an integer from 1 to 1000/);
  assert.throws(() => queueStack({ maxReceiveCount: 2.5 }), /maxReceiveCount must be an integer/);
  assert.throws(() => queueStack({ leaseDuration: Duration.seconds(5) }), /leaseDuration must be whole seconds from 10 to 43170/);
  assert.throws(() => queueStack({ leaseDuration: Duration.hours(12) }), /leaseDuration must be whole seconds/);
  assert.throws(() => queueStack({ payloadRetention: Duration.hours(1) }), /payloadRetention must be whole days/);
});

test('the queue alone and the stack default to the same redrive limit', () => {
  const { q } = queueStack();
  assert.equal(q.maxReceiveCount, JobQueue.defaultMaxReceiveCount);
  const stack = sluiceStack();
  assert.equal(stack.jobQueue.maxReceiveCount, JobQueue.defaultMaxReceiveCount);
});
