import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { RemovalPolicy, Stack } from 'aws-cdk-lib';
import { Match, Template } from 'aws-cdk-lib/assertions';
import { JobTable } from '../lib/constructs/job-table';
import { testApp } from './helpers';

function tableTemplate(removalPolicy?: RemovalPolicy): Template {
  const stack = new Stack(testApp(), 'Test');
  new JobTable(stack, 'JobTable', { removalPolicy });
  return Template.fromStack(stack);
}

test('the table is on-demand, keyed by id, with ttl, point-in-time recovery and encryption', () => {
  const t = tableTemplate();
  t.resourceCountIs('AWS::DynamoDB::Table', 1);
  t.hasResourceProperties('AWS::DynamoDB::Table', {
    BillingMode: 'PAY_PER_REQUEST',
    KeySchema: [{ AttributeName: 'id', KeyType: 'HASH' }],
    TimeToLiveSpecification: { AttributeName: 'expires_at', Enabled: true },
    PointInTimeRecoverySpecification: { PointInTimeRecoveryEnabled: true },
    SSESpecification: { SSEEnabled: true },
    TableName: Match.absent(),
  });
});

test('three sparse indexes, the open jobs, the webhooks due and the open deadlines, keys only, and no provisioned throughput', () => {
  const props = Object.values(tableTemplate().findResources('AWS::DynamoDB::Table'))[0].Properties;
  // The names the Rust side writes (src/store.rs: OPEN_INDEX, OPEN_INDEX_KEYS).
  const store = readFileSync(join(__dirname, '..', '..', 'src', 'store.rs'), 'utf8');
  assert.ok(store.includes('pub const OPEN_INDEX: &str = "open-jobs";'));
  assert.ok(store.includes('pub const OPEN: &str = "open";') && store.includes('pub const SENT_AT: &str = "sent_at";'));
  assert.ok(store.includes('pub const NOTIFY_INDEX: &str = "notify-due";'));
  assert.ok(store.includes('pub const NOTIFY: &str = "notify";') && store.includes('pub const NOTIFY_AT: &str = "notify_at";'));
  assert.ok(store.includes('pub const DEADLINE_INDEX: &str = "open-deadlines";'));
  assert.ok(store.includes('pub const DEADLINE: &str = "deadline";'));
  assert.deepEqual(props.GlobalSecondaryIndexes, [
    {
      IndexName: 'open-jobs',
      KeySchema: [
        { AttributeName: 'open', KeyType: 'HASH' },
        { AttributeName: 'sent_at', KeyType: 'RANGE' },
      ],
      Projection: { ProjectionType: 'KEYS_ONLY' },
    },
    {
      IndexName: 'notify-due',
      KeySchema: [
        { AttributeName: 'notify', KeyType: 'HASH' },
        { AttributeName: 'notify_at', KeyType: 'RANGE' },
      ],
      Projection: { ProjectionType: 'KEYS_ONLY' },
    },
    {
      IndexName: 'open-deadlines',
      KeySchema: [
        { AttributeName: 'open', KeyType: 'HASH' },
        { AttributeName: 'deadline', KeyType: 'RANGE' },
      ],
      Projection: { ProjectionType: 'KEYS_ONLY' },
    },
  ]);
  assert.deepEqual(props.AttributeDefinitions, [
    { AttributeName: 'id', AttributeType: 'S' },
    { AttributeName: 'open', AttributeType: 'S' },
    { AttributeName: 'sent_at', AttributeType: 'N' },
    { AttributeName: 'notify', AttributeType: 'S' },
    { AttributeName: 'notify_at', AttributeType: 'N' },
    { AttributeName: 'deadline', AttributeType: 'N' },
  ]);
  assert.equal(props.ProvisionedThroughput, undefined);
});

test('job records are retained when the table leaves the stack, unless told otherwise', () => {
  tableTemplate().hasResource('AWS::DynamoDB::Table', { DeletionPolicy: 'Retain', UpdateReplacePolicy: 'Retain' });
  tableTemplate(RemovalPolicy.DESTROY).hasResource('AWS::DynamoDB::Table', { DeletionPolicy: 'Delete' });
});
