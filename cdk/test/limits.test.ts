import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { Duration, Stack } from 'aws-cdk-lib';
import { JobQueue } from '../lib/constructs/job-queue';
import {
  LIMITS_FILE,
  MAX_DEADLINE,
  MAX_JOB_TIMEOUT,
  MESSAGE_RETENTION,
  SQS_VISIBILITY_CAP,
  STATUS_FUNCTION_TIMEOUT,
  SUBMIT_FUNCTION_TIMEOUT,
} from '../lib/limits';
import { REPO, template, testApp } from './helpers';

test('the shared limits are one consistent set', () => {
  assert.equal(LIMITS_FILE, path.join(REPO, 'src', 'limits.json'));
  assert.ok(MESSAGE_RETENTION.toSeconds() <= 14 * 86_400, 'SQS keeps messages 14 days at most');
  assert.ok(MAX_DEADLINE.toSeconds() <= MESSAGE_RETENTION.toSeconds(), 'a job cannot wait longer than its message lives');
  assert.ok(MAX_JOB_TIMEOUT.toSeconds() + 900 <= SQS_VISIBILITY_CAP.toSeconds());
  // The Rust side's constants are the file's (src/limits.rs has the same check).
  const rust = fs.readFileSync(path.join(REPO, 'src', 'limits.rs'), 'utf8');
  assert.match(rust, /MESSAGE_RETENTION: Duration = Duration::from_secs\(14 \* 86_400\)/);
  assert.equal(MESSAGE_RETENTION.toSeconds(), 14 * 86_400);
});

test('the deployed queues keep a job\'s message as long as the job may wait', () => {
  const { t } = template();
  const queues = Object.values(t.findResources('AWS::SQS::Queue'));
  assert.equal(queues.length, 2, 'the jobs queue and its dead-letter queue');
  for (const q of queues) {
    assert.equal(q.Properties.MessageRetentionPeriod, MESSAGE_RETENTION.toSeconds());
    assert.ok(q.Properties.MessageRetentionPeriod >= MAX_DEADLINE.toSeconds());
  }
  // A retention shorter than the longest deadline is refused (the old default was 4 days).
  assert.throws(
    () => new JobQueue(new Stack(testApp(), 'Short'), 'JobQueue', { retentionPeriod: Duration.days(4) }),
    /retentionPeriod must be whole seconds from 1209600 \(the longest deadline a job may carry\)/,
  );
});

test('the functions are deployed with the timeouts their AWS calls are budgeted for', () => {
  const { t } = template();
  const timeouts = Object.values(t.findResources('AWS::Lambda::Function'))
    .filter((f) => /sluice (submit|status)/.test(String(f.Properties.Description)))
    .map((f) => [String(f.Properties.Description).split(':')[0], f.Properties.Timeout]);
  assert.deepEqual(Object.fromEntries(timeouts), {
    'sluice submit': SUBMIT_FUNCTION_TIMEOUT.toSeconds(),
    'sluice status': STATUS_FUNCTION_TIMEOUT.toSeconds(),
  });
  const file = JSON.parse(fs.readFileSync(LIMITS_FILE, 'utf8'));
  assert.equal(SUBMIT_FUNCTION_TIMEOUT.toSeconds(), file.submit_function_timeout_seconds);
  assert.equal(STATUS_FUNCTION_TIMEOUT.toSeconds(), file.status_function_timeout_seconds);
});
