import { test } from 'node:test';
import * as assert from 'node:assert/strict';
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
    AttributeDefinitions: [{ AttributeName: 'id', AttributeType: 'S' }],
    TimeToLiveSpecification: { AttributeName: 'expires_at', Enabled: true },
    PointInTimeRecoverySpecification: { PointInTimeRecoveryEnabled: true },
    SSESpecification: { SSEEnabled: true },
    TableName: Match.absent(),
  });
});

test('the table has no secondary index and no provisioned throughput', () => {
  const props = Object.values(tableTemplate().findResources('AWS::DynamoDB::Table'))[0].Properties;
  assert.equal(props.GlobalSecondaryIndexes, undefined);
  assert.equal(props.ProvisionedThroughput, undefined);
});

test('job records are retained when the table leaves the stack, unless told otherwise', () => {
  tableTemplate().hasResource('AWS::DynamoDB::Table', { DeletionPolicy: 'Retain', UpdateReplacePolicy: 'Retain' });
  tableTemplate(RemovalPolicy.DESTROY).hasResource('AWS::DynamoDB::Table', { DeletionPolicy: 'Delete' });
});
