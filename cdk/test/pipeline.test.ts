import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { App } from 'aws-cdk-lib';
import { Match, Template } from 'aws-cdk-lib/assertions';
import * as iam from 'aws-cdk-lib/aws-iam';
import { stackConfigFromContext } from '../lib/config';
import { INGEST_FUNCTION_TIMEOUT, PipelineOptions, checkOwner } from '../lib/constructs/pipeline';
import { SluiceStack } from '../lib/sluice-stack';
import { Statement, actionsOf, assertAwsSolutionsClean, j, logicalId, sluiceStack, statementsOf, template, testApp } from './helpers';

const OWNER = 'iam:arn:aws:sts::123456789012:assumed-role/Ops';

function withPipeline(pipeline: PipelineOptions = { owner: OWNER }): { stack: SluiceStack; t: Template } {
  return template({ pipeline });
}

/** The resources of the statements granting `action` (one statement may list several). */
function resourcesOf(statements: Statement[], action: string): string[] {
  return statements
    .filter((s) => (Array.isArray(s.Action) ? s.Action : [s.Action]).includes(action))
    .flatMap((s) => (Array.isArray(s.Resource) ? s.Resource : [s.Resource]))
    .map((r) => j(r))
    .sort();
}

/** `<bucket ARN><suffix>` as CloudFormation spells an object ARN of a bucket of the stack. */
const objectsOf = (bucketId: string, suffix: string) =>
  j({ 'Fn::Join': ['', [{ 'Fn::GetAtt': [bucketId, 'Arn'] }, suffix]] });

test('objects created under the input prefix are sent to the events queue, and nothing else is', () => {
  const { stack, t } = withPipeline();
  const p = stack.pipeline!;
  const notifications = Object.values(t.findResources('Custom::S3BucketNotifications'));
  assert.equal(notifications.length, 1);
  const props = notifications[0].Properties;
  assert.equal(j(props.BucketName), j({ Ref: logicalId(p.bucket) }));
  assert.deepEqual(props.NotificationConfiguration, {
    QueueConfigurations: [
      {
        Events: ['s3:ObjectCreated:*'],
        Filter: { Key: { FilterRules: [{ Name: 'prefix', Value: 'in/' }] } },
        QueueArn: { 'Fn::GetAtt': [logicalId(p.eventsQueue), 'Arn'] },
      },
    ],
  });
  // S3 may send to the queue for this bucket only.
  t.hasResourceProperties('AWS::SQS::QueuePolicy', {
    Queues: [{ Ref: logicalId(p.eventsQueue) }],
    PolicyDocument: {
      Statement: Match.arrayWith([
        Match.objectLike({
          Effect: 'Allow',
          Principal: { Service: 's3.amazonaws.com' },
          Action: Match.arrayWith(['sqs:SendMessage']),
          Condition: { ArnLike: { 'aws:SourceArn': { 'Fn::GetAtt': [logicalId(p.bucket), 'Arn'] } } },
        }),
      ]),
    },
  });
  // Another prefix pair is followed.
  const other = withPipeline({ owner: OWNER, inputPrefix: 'photos/new/', outputPrefix: 'photos/done/' });
  other.t.hasResourceProperties('Custom::S3BucketNotifications', {
    NotificationConfiguration: {
      QueueConfigurations: [Match.objectLike({ Filter: { Key: { FilterRules: [{ Name: 'prefix', Value: 'photos/new/' }] } } })],
    },
  });
});

test('the events queue is encrypted, tls only, outlasts the function and redrives to its own dead-letter queue', () => {
  const { stack, t } = withPipeline();
  const p = stack.pipeline!;
  const queues = t.toJSON().Resources;
  const events = queues[logicalId(p.eventsQueue)].Properties;
  assert.equal(events.SqsManagedSseEnabled, true);
  assert.ok(events.VisibilityTimeout > INGEST_FUNCTION_TIMEOUT.toSeconds(), 'visibility above the function timeout');
  assert.equal(events.VisibilityTimeout, 6 * INGEST_FUNCTION_TIMEOUT.toSeconds());
  assert.deepEqual(events.RedrivePolicy, {
    deadLetterTargetArn: { 'Fn::GetAtt': [logicalId(p.eventsDeadLetterQueue), 'Arn'] },
    maxReceiveCount: 5,
  });
  assert.notEqual(logicalId(p.eventsDeadLetterQueue), logicalId(stack.jobQueue.deadLetterQueue));
  assert.equal(queues[logicalId(p.eventsDeadLetterQueue)].Properties.SqsManagedSseEnabled, true);
  for (const q of [p.eventsQueue, p.eventsDeadLetterQueue]) {
    t.hasResourceProperties('AWS::SQS::QueuePolicy', {
      Queues: [{ Ref: logicalId(q) }],
      PolicyDocument: {
        Statement: Match.arrayWith([
          Match.objectLike({ Effect: 'Deny', Action: 'sqs:*', Condition: { Bool: { 'aws:SecureTransport': 'false' } } }),
        ]),
      },
    });
  }
});

test('the ingest function reads the events queue in small batches and reports failures per event', () => {
  const { stack, t } = withPipeline();
  const p = stack.pipeline!;
  const mappings = Object.values(t.findResources('AWS::Lambda::EventSourceMapping'));
  assert.equal(mappings.length, 1);
  assert.deepEqual(mappings[0].Properties, {
    BatchSize: 5,
    EventSourceArn: { 'Fn::GetAtt': [logicalId(p.eventsQueue), 'Arn'] },
    FunctionName: { Ref: logicalId(p.function) },
    FunctionResponseTypes: ['ReportBatchItemFailures'],
  });
  const fn = t.toJSON().Resources[logicalId(p.function)].Properties;
  assert.equal(fn.Timeout, INGEST_FUNCTION_TIMEOUT.toSeconds());
  assert.equal(fn.Runtime, 'provided.al2023');
  assert.deepEqual(fn.Architectures, ['arm64']);
});

test('the ingest function gets the pipeline, the table and the jobs queue in its environment', () => {
  const { stack, t } = withPipeline({ owner: OWNER, inputPrefix: 'incoming/', outputPrefix: 'done/' });
  const env = t.toJSON().Resources[logicalId(stack.pipeline!.function)].Properties.Environment.Variables;
  assert.deepEqual(Object.keys(env).sort(), [
    'SLUICE_LOG_FORMAT',
    'SLUICE_MAX_ATTEMPTS',
    'SLUICE_PIPELINE_BUCKET',
    'SLUICE_PIPELINE_INPUT_PREFIX',
    'SLUICE_PIPELINE_OUTPUT_PREFIX',
    'SLUICE_PIPELINE_OWNER',
    'SLUICE_QUEUE_URL',
    'SLUICE_RETENTION_DAYS',
    'SLUICE_TABLE_NAME',
  ]);
  assert.equal(j(env.SLUICE_PIPELINE_BUCKET), j({ Ref: logicalId(stack.pipeline!.bucket) }));
  assert.equal(env.SLUICE_PIPELINE_INPUT_PREFIX, 'incoming/');
  assert.equal(env.SLUICE_PIPELINE_OUTPUT_PREFIX, 'done/');
  assert.equal(env.SLUICE_PIPELINE_OWNER, OWNER);
  assert.equal(env.SLUICE_MAX_ATTEMPTS, '3');
  assert.equal(env.SLUICE_RETENTION_DAYS, '7');
  assert.equal(j(env.SLUICE_TABLE_NAME), j({ Ref: logicalId(stack.jobTable.table) }));
  assert.equal(j(env.SLUICE_QUEUE_URL), j({ Ref: logicalId(stack.jobQueue.queue) }));
  // The backlog function's outbox copies from the payload bucket.
  const backlog = t.toJSON().Resources[logicalId(stack.scaling.function)].Properties.Environment.Variables;
  assert.equal(j(backlog.SLUICE_PAYLOAD_BUCKET), j({ Ref: logicalId(stack.jobQueue.payloadBucket) }));
});

test('ingest may head input objects, send jobs and put job records, and nothing more', () => {
  const { stack, t } = withPipeline();
  const p = stack.pipeline!;
  const role = p.function.role!;
  assert.deepEqual(actionsOf(t, role), [
    'dynamodb:PutItem',
    'logs:CreateLogStream',
    'logs:PutLogEvents',
    's3:GetObject',
    's3:ListBucket',
    'sqs:ChangeMessageVisibility',
    'sqs:DeleteMessage',
    'sqs:GetQueueAttributes',
    'sqs:GetQueueUrl',
    'sqs:ReceiveMessage',
    'sqs:SendMessage',
  ]);
  const s = statementsOf(t, role);
  const bucket = logicalId(p.bucket);
  assert.deepEqual(resourcesOf(s, 's3:GetObject'), [objectsOf(bucket, '/in/*')]);
  assert.deepEqual(resourcesOf(s, 's3:ListBucket'), [j({ 'Fn::GetAtt': [bucket, 'Arn'] })]);
  assert.deepEqual(resourcesOf(s, 'sqs:SendMessage'), [j({ 'Fn::GetAtt': [logicalId(stack.jobQueue.queue), 'Arn'] })]);
  assert.deepEqual(resourcesOf(s, 'sqs:ReceiveMessage'), [j({ 'Fn::GetAtt': [logicalId(p.eventsQueue), 'Arn'] })]);
  // The table's items only: no index.
  assert.deepEqual(resourcesOf(s, 'dynamodb:PutItem'), [j({ 'Fn::GetAtt': [logicalId(stack.jobTable.table), 'Arn'] })]);
  assert.ok(s.every((st) => st.Effect === 'Allow' && st.Condition === undefined));
});

test('workers download inputs; workers and the backlog outbox copy results and outputs to the output prefix', () => {
  const { stack, t } = withPipeline();
  const p = stack.pipeline!;
  const payload = logicalId(stack.jobQueue.payloadBucket);
  const bucket = logicalId(p.bucket);
  const copySource = [objectsOf(payload, '/outputs/*'), objectsOf(payload, '/results/*')].sort();

  const worker = statementsOf(t, stack.workers.taskDefinition.taskRole);
  assert.deepEqual(
    resourcesOf(worker, 's3:GetObject'),
    [objectsOf(bucket, '/in/*'), ...copySource, objectsOf(payload, '/uploads/*')].sort(),
  );
  assert.deepEqual(
    resourcesOf(worker, 's3:PutObject'),
    [objectsOf(bucket, '/out/*'), objectsOf(payload, '/outputs/*'), objectsOf(payload, '/results/*')].sort(),
  );

  const backlogRole = stack.scaling.function.role!;
  const backlog = statementsOf(t, backlogRole);
  assert.deepEqual(resourcesOf(backlog, 's3:GetObject'), copySource);
  assert.deepEqual(resourcesOf(backlog, 's3:PutObject'), [objectsOf(bucket, '/out/*')]);
  assert.deepEqual(
    actionsOf(t, backlogRole).filter((a) => a.startsWith('s3:')),
    ['s3:GetObject', 's3:PutObject'],
  );
  // Nobody but ingest lists the bucket, and nobody writes under the input prefix.
  for (const role of [stack.workers.taskDefinition.taskRole, backlogRole]) {
    assert.deepEqual(resourcesOf(statementsOf(t, role), 's3:ListBucket'), []);
  }
});

test('without the option there is no pipeline and the backlog function touches no object', () => {
  const { stack, t } = template();
  assert.equal(stack.pipeline, undefined);
  t.resourceCountIs('Custom::S3BucketNotifications', 0);
  t.resourceCountIs('AWS::Lambda::EventSourceMapping', 0);
  assert.deepEqual(
    actionsOf(t, stack.scaling.function.role!).filter((a) => a.startsWith('s3:')),
    [],
  );
  assert.equal(stack.observability.pipelineDeadLetterAlarm, undefined);
});

test('a bucket of the stack is private, encrypted, tls only and retained', () => {
  const { stack, t } = withPipeline();
  const bucket = t.toJSON().Resources[logicalId(stack.pipeline!.bucket)];
  assert.equal(stack.pipeline!.ownsBucket, true);
  assert.equal(bucket.DeletionPolicy, 'Retain');
  assert.deepEqual(bucket.Properties.PublicAccessBlockConfiguration, {
    BlockPublicAcls: true,
    BlockPublicPolicy: true,
    IgnorePublicAcls: true,
    RestrictPublicBuckets: true,
  });
  assert.deepEqual(bucket.Properties.BucketEncryption, {
    ServerSideEncryptionConfiguration: [{ ServerSideEncryptionByDefault: { SSEAlgorithm: 'AES256' } }],
  });
  t.hasResourceProperties('AWS::S3::BucketPolicy', {
    Bucket: { Ref: logicalId(stack.pipeline!.bucket) },
    PolicyDocument: {
      Statement: Match.arrayWith([
        Match.objectLike({ Effect: 'Deny', Action: 's3:*', Condition: { Bool: { 'aws:SecureTransport': 'false' } } }),
      ]),
    },
  });
});

test('an existing bucket is given by name: notified and granted, not created', () => {
  const { stack, t } = withPipeline({ owner: OWNER, bucketName: 'my-photos', inputPrefix: 'incoming/', outputPrefix: 'done/' });
  const p = stack.pipeline!;
  assert.equal(p.ownsBucket, false);
  // Only the payload bucket is the stack's.
  t.resourceCountIs('AWS::S3::Bucket', 1);
  const notification = Object.values(t.findResources('Custom::S3BucketNotifications'))[0].Properties;
  assert.equal(notification.BucketName, 'my-photos');
  // An imported bucket's other notifications are kept.
  assert.equal(notification.Managed, false);
  assert.deepEqual(notification.NotificationConfiguration.QueueConfigurations[0].Filter, {
    Key: { FilterRules: [{ Name: 'prefix', Value: 'incoming/' }] },
  });
  const arn = (suffix: string) => j({ 'Fn::Join': ['', ['arn:', { Ref: 'AWS::Partition' }, `:s3:::my-photos${suffix}`]] });
  const ingest = statementsOf(t, p.function.role!);
  assert.deepEqual(resourcesOf(ingest, 's3:GetObject'), [arn('/incoming/*')]);
  assert.deepEqual(resourcesOf(ingest, 's3:ListBucket'), [arn('')]);
  assert.deepEqual(resourcesOf(statementsOf(t, stack.scaling.function.role!), 's3:PutObject'), [arn('/done/*')]);
  const env = t.toJSON().Resources[logicalId(p.function)].Properties.Environment.Variables;
  assert.equal(env.SLUICE_PIPELINE_BUCKET, 'my-photos');
});

test('the events dead-letter queue alarms the operators and shows on the dashboard', () => {
  const { stack, t } = withPipeline();
  const alarm = stack.observability.pipelineDeadLetterAlarm!;
  assert.ok(alarm !== undefined);
  const props = t.toJSON().Resources[logicalId(alarm)].Properties;
  const metrics = j(props.Metrics);
  assert.ok(metrics.includes('ApproximateNumberOfMessagesVisible') && metrics.includes('AWS/SQS'), metrics);
  assert.ok(metrics.includes(j({ 'Fn::GetAtt': [logicalId(stack.pipeline!.eventsDeadLetterQueue), 'QueueName'] })), metrics);
  assert.equal(props.Threshold, 1);
  assert.equal(props.ComparisonOperator, 'GreaterThanOrEqualToThreshold');
  assert.deepEqual(props.AlarmActions, [{ Ref: logicalId(stack.observability.topic) }]);
  assert.deepEqual(props.OKActions, [{ Ref: logicalId(stack.observability.topic) }]);
  const body = j(t.toJSON().Resources[logicalId(stack.observability.dashboard)].Properties.DashboardBody);
  assert.ok(body.includes('Pipeline events DLQ depth'));
  assert.ok(body.includes(logicalId(stack.pipeline!.function)), 'the ingest function is among the lambdas shown');
});

test('the stack stages the ingest stub as the function\'s code', () => {
  const app = testApp();
  const stack = sluiceStack({ pipeline: { owner: OWNER } }, app);
  const assembly = app.synth();
  const manifest = JSON.parse(fs.readFileSync(path.join(assembly.directory, `${stack.artifactId}.assets.json`), 'utf8'));
  const staged = (Object.values(manifest.files) as any[])
    .map((f) => path.join(assembly.directory, f.source.path, 'bootstrap'))
    .filter((p) => fs.existsSync(p))
    .map((p) => fs.readFileSync(p, 'utf8'));
  assert.equal(staged.filter((s) => s.includes('target/lambda/ingest/bootstrap')).length, 1);
});

test('owners are accepted in the forms the api gives callers, and a role arn is corrected', () => {
  for (const owner of [
    'iam:arn:aws:iam::123456789012:user/ops',
    'iam:arn:aws:iam::123456789012:user/team/alice',
    'iam:arn:aws:iam::123456789012:root',
    'iam:arn:aws:sts::123456789012:assumed-role/Ops',
    'iam:arn:aws:sts::123456789012:assumed-role/AWSReservedSSO_Dev_0123/alice@corp.example',
    'iam:arn:aws-us-gov:sts::123456789012:assumed-role/Ops',
    'iam:arn:aws:sts::123456789012:federated-user',
    'iam:cognito:us-east-1:0a1b2c3d-pool|us-east-1:1111-alice',
    'jwt:https://idp.example.com|u-1',
    'lambda:tenant-42',
  ]) {
    assert.equal(checkOwner(owner), owner);
  }
  assert.throws(
    () => checkOwner('iam:arn:aws:iam::123456789012:role/ops'),
    { message: /names a role, which is no caller: the callers of a role are iam:arn:aws:sts::123456789012:assumed-role\/ops/ },
  );
  for (const bad of ['', 'ops', 'arn:aws:iam::123456789012:user/ops', 'iam:ops', 'iam:arn:aws:iam::1234:user/ops', 'jwt:nobar']) {
    assert.throws(() => checkOwner(bad), { message: /^pipeline owner must name a caller as the API does/ }, bad);
  }
});

test('bad pipeline options are rejected with the reason', () => {
  const cases: [PipelineOptions, RegExp][] = [
    [{ owner: 'ops' }, /^pipeline owner must name a caller/],
    [{ owner: OWNER, inputPrefix: 'data/', outputPrefix: 'data/out/' }, /^pipeline outputPrefix "data\/out\/" must not overlap inputPrefix "data\/": outcomes written there would become jobs/],
    [{ owner: OWNER, inputPrefix: 'in/', outputPrefix: 'in/' }, /must not overlap/],
    [{ owner: OWNER, inputPrefix: 'a/b/', outputPrefix: 'a/' }, /must not overlap/],
    [{ owner: OWNER, inputPrefix: '' }, /^pipeline inputPrefix must be a key prefix such as 'in\/'/],
    [{ owner: OWNER, outputPrefix: 'out/*' }, /^pipeline outputPrefix must be a key prefix/],
    [{ owner: OWNER, inputPrefix: '/in/' }, /^pipeline inputPrefix must be a key prefix/],
    [{ owner: OWNER, bucketName: 'My_Bucket' }, /^pipeline bucketName must be an S3 bucket name, got "My_Bucket"/],
    [{ owner: OWNER, bucketName: 'a..b' }, /^pipeline bucketName must be an S3 bucket name/],
  ];
  for (const [pipeline, message] of cases) {
    assert.throws(() => sluiceStack({ pipeline }), { message }, JSON.stringify(pipeline));
  }
  // Prefixes that only share a beginning are fine: in/ and out/, inbox/ and in-done/ do not nest.
  assert.doesNotThrow(() => sluiceStack({ pipeline: { owner: OWNER, inputPrefix: 'inbox/', outputPrefix: 'in-done/' } }));
});

test('the pipeline context key takes a json object and names what is wrong', () => {
  const config = (context: Record<string, unknown>) => stackConfigFromContext(new App({ context }).node).props;
  assert.equal(config({}).pipeline, undefined);
  assert.deepEqual(config({ pipeline: `{"owner": "${OWNER}", "bucketName": "my-photos"}` }).pipeline, {
    owner: OWNER,
    bucketName: 'my-photos',
  });
  assert.deepEqual(config({ pipeline: { owner: OWNER, inputPrefix: 'a/', outputPrefix: 'b/' } }).pipeline, {
    owner: OWNER,
    inputPrefix: 'a/',
    outputPrefix: 'b/',
  });
  const cases: [unknown, RegExp][] = [
    ['owner=x', /^context pipeline is not valid json/],
    ['[1]', /^context pipeline must be a json object such as \{"owner": /],
    [{ bucketName: 'b' }, /^context pipeline needs an owner, the caller who sees its jobs/],
    [{ owner: OWNER, input: 'in/' }, /^context pipeline has an unknown key input: it takes owner, bucketName, inputPrefix, outputPrefix/],
    [{ owner: OWNER, inputPrefix: 3 }, /^context pipeline.inputPrefix must be a string, got 3/],
  ];
  for (const [pipeline, message] of cases) {
    assert.throws(() => config({ pipeline }), { message }, JSON.stringify(pipeline));
  }
});

test('the pipeline passes the AwsSolutions checks, with a bucket of its own and an existing one', async () => {
  await assertAwsSolutionsClean({
    Own: { pipeline: { owner: OWNER } },
    Existing: {
      pipeline: { owner: 'iam:arn:aws:iam::123456789012:user/ops', bucketName: 'my-photos', inputPrefix: 'incoming/', outputPrefix: 'done/' },
    },
  });
});

test('roles other than the three named get no pipeline grant', () => {
  const { stack, t } = withPipeline();
  const named = new Set(
    [stack.pipeline!.function.role!, stack.workers.taskDefinition.taskRole, stack.scaling.function.role!].map((r) => logicalId(r)),
  );
  const bucket = logicalId(stack.pipeline!.bucket);
  for (const [id, policy] of Object.entries(t.findResources('AWS::IAM::Policy'))) {
    const roles = (policy.Properties.Roles as { Ref: string }[]).map((r) => r.Ref);
    if (roles.some((r) => named.has(r))) continue;
    const text = j(policy.Properties.PolicyDocument);
    // CDK's notifications handler writes the bucket's notification configuration, nothing else.
    if (text.includes(bucket)) {
      assert.deepEqual(
        (policy.Properties.PolicyDocument.Statement as Statement[]).flatMap((s) => (Array.isArray(s.Action) ? s.Action : [s.Action])),
        ['s3:PutBucketNotification'],
        id,
      );
    }
  }
  assert.ok(iam.Role.isRole(stack.workers.taskDefinition.taskRole));
});
