import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { App, Duration, Stack, Token, Validations } from 'aws-cdk-lib';
import * as s3 from 'aws-cdk-lib/aws-s3';
import { AwsSolutionsChecks } from 'cdk-nag';
import { stackConfigFromContext } from '../lib/config';
import { MAX_JOB_TIMEOUT_LIMIT } from '../lib/handler';
import { JOB_MAX_ATTEMPTS_LIMIT, SluiceStack } from '../lib/sluice-stack';
import { WorkerImage } from '../lib/worker-image';
import { REPO, STUB_IMAGE, STUB_LAMBDAS, j, logicalId, policyWith, template, testApp } from './helpers';

/** Every acknowledgement recorded with Validations.of(x).acknowledge, by construct path. */
function acknowledgements(app: App): { path: string; id: string; reason: string }[] {
  return app.node
    .findAll()
    .flatMap((c) =>
      c.node.metadata
        .filter((m) => m.type === Validations.ACKNOWLEDGED_RULES_METADATA_KEY)
        .flatMap((m) => Object.entries(m.data as Record<string, string>).map(([id, reason]) => ({ path: c.node.path, id, reason }))),
    );
}

test('the whole stack passes the AwsSolutions checks with specific acknowledgements only', (t) => {
  // The Docker image asset as in production (ecr pull permissions included).
  const app = testApp({}, true);
  new SluiceStack(app, 'Sluice', { lambdaAssetDir: STUB_LAMBDAS });
  Validations.of(app).addPlugins(new AwsSolutionsChecks(app));
  assert.doesNotThrow(() => app.synth());
  // CDK acknowledges a few of its own CloudFormation-Validate findings; these are the app's.
  const nag = acknowledgements(app).filter((a) => a.id.startsWith('AwsSolutions::'));
  assert.ok(nag.length > 0);
  for (const a of nag) {
    assert.ok(a.reason.length >= 60, `acknowledgement ${a.id} at ${a.path} needs a specific reason`);
    // Each finding is acknowledged where it occurs, never for the whole stack.
    assert.notEqual(a.path, 'Sluice', `${a.id} is acknowledged for the whole stack`);
    t.diagnostic(`${a.path}: ${a.id}: ${a.reason}`);
  }
});

test('every option together passes cloudformation validation and the AwsSolutions checks', () => {
  const app = testApp({}, true);
  new SluiceStack(app, 'Sluice', {
    lambdaAssetDir: STUB_LAMBDAS,
    existingVpc: {
      vpcId: 'vpc-0123456789abcdef0',
      subnetIds: ['subnet-0123456789abcdef0', 'subnet-0123456789abcdef1'],
      availabilityZones: ['us-east-1a', 'us-east-1b'],
    },
    modelFileSystem: {
      fileSystemId: 'fs-0123456789abcdef0',
      accessPointId: 'fsap-0123456789abcdef0',
      securityGroupId: 'sg-0123456789abcdef0',
    },
    jwt: { issuer: 'https://idp.example.com/', audience: ['sluice'] },
    spot: true,
    alarmEmail: 'oncall@example.com',
    minTasks: 1,
    maxTasks: 4,
    inputBuckets: ['data-lake', 'raw.images.example'],
  });
  Validations.of(app).addPlugins(new AwsSolutionsChecks(app));
  assert.doesNotThrow(() => app.synth());
});

test('the handler modes pass cloudformation validation and the AwsSolutions checks', () => {
  const app = testApp({}, true);
  // An example's image, built from the repository root with its own dockerignore.
  new SluiceStack(app, 'Sentiment', {
    lambdaAssetDir: STUB_LAMBDAS,
    workerImage: WorkerImage.fromDirectory('examples/sentiment'),
    workerHandler: { mode: 'process', command: ['python3', '/app/handler.py'], startupTimeout: Duration.minutes(5) },
    jobTimeout: Duration.minutes(10),
    maxJobTimeout: Duration.hours(2),
  });
  // A worker image and a model server from ecr, the server with a health check and the models on efs.
  new SluiceStack(app, 'Model', {
    lambdaAssetDir: STUB_LAMBDAS,
    workerImage: WorkerImage.fromUri('123456789012.dkr.ecr.us-east-1.amazonaws.com/sluice-worker:1.0.0'),
    workerHandler: {
      mode: 'http',
      modelServer: {
        image: WorkerImage.fromUri('123456789012.dkr.ecr.us-east-1.amazonaws.com/my-model:3'),
        command: ['serve'],
        environment: { SAGEMAKER_MODEL_SERVER_WORKERS: '2' },
        healthCheck: { command: ['CMD-SHELL', 'curl -fs http://127.0.0.1:8080/ping || exit 1'] },
      },
    },
    modelFileSystem: { fileSystemId: 'fs-0123456789abcdef0', accessPointId: 'fsap-0123456789abcdef0', mountPath: '/opt/ml/model' },
  });
  Validations.of(app).addPlugins(new AwsSolutionsChecks(app));
  assert.doesNotThrow(() => app.synth());
});

test('an unacknowledged finding fails synthesis (the check above is live)', () => {
  const app = testApp({}, true);
  new s3.Bucket(new Stack(app, 'Bad'), 'Bucket');
  Validations.of(app).addPlugins(new AwsSolutionsChecks(app));
  // Keep the expected report out of the test output.
  const write = process.stderr.write;
  const log = console.error;
  process.stderr.write = () => true;
  console.error = () => undefined;
  try {
    assert.throws(() => app.synth(), /Validation failed/);
  } finally {
    process.stderr.write = write;
    console.error = log;
  }
});

test('the stack outputs what a caller and an operator need', () => {
  const { stack, t } = template();
  const outputs = t.toJSON().Outputs;
  for (const name of ['ApiUrl', 'TableName', 'QueueUrl', 'DeadLetterQueueUrl', 'ClusterName', 'ServiceName', 'DashboardName']) {
    assert.ok(outputs[name], name);
  }
  assert.equal(j(outputs.TableName.Value), j({ Ref: logicalId(stack.jobTable.table) }));
  assert.equal(j(outputs.QueueUrl.Value), j({ Ref: logicalId(stack.jobQueue.queue) }));
  assert.equal(j(outputs.DeadLetterQueueUrl.Value), j({ Ref: logicalId(stack.jobQueue.deadLetterQueue) }));
  assert.equal(j(outputs.ServiceName.Value), j({ 'Fn::GetAtt': [logicalId(stack.workers.service), 'Name'] }));
  assert.ok(j(outputs.ApiUrl.Value).includes('execute-api'));
});

test('the stack is environment-agnostic and names nothing physically', () => {
  const { stack, t } = template();
  assert.ok(Token.isUnresolved(stack.account) && Token.isUnresolved(stack.region));
  const physical: Record<string, string> = {
    'AWS::DynamoDB::Table': 'TableName',
    'AWS::SQS::Queue': 'QueueName',
    'AWS::Lambda::Function': 'FunctionName',
    'AWS::ECS::Cluster': 'ClusterName',
    'AWS::ECS::Service': 'ServiceName',
    'AWS::S3::Bucket': 'BucketName',
    'AWS::SNS::Topic': 'TopicName',
    'AWS::CloudWatch::Alarm': 'AlarmName',
    'AWS::CloudWatch::Dashboard': 'DashboardName',
    'AWS::Logs::LogGroup': 'LogGroupName',
    'AWS::IAM::Role': 'RoleName',
    'AWS::EC2::SecurityGroup': 'GroupName',
    'AWS::Events::Rule': 'Name',
  };
  let checked = 0;
  for (const [id, r] of Object.entries(t.toJSON().Resources as Record<string, any>)) {
    const key = physical[r.Type];
    if (key === undefined) continue;
    checked++;
    assert.equal(r.Properties?.[key], undefined, `${id} (${r.Type}) sets ${key}`);
  }
  assert.ok(checked > 20);
});

test('the dead-letter redrive leaves every attempt a caller may ask for its delivery', () => {
  // The API's per-job cap, read from the Rust side when it is there.
  const api = fs.readFileSync(path.join(REPO, 'src', 'api', 'mod.rs'), 'utf8');
  const limit = /pub const MAX_ATTEMPTS_LIMIT: u32 = (\d+);/.exec(api);
  if (limit !== null) assert.equal(JOB_MAX_ATTEMPTS_LIMIT, Number(limit[1]));
  const redrive = (t: ReturnType<typeof template>['t']) =>
    Object.values(t.findResources('AWS::SQS::Queue')).find((q) => q.Properties.RedrivePolicy)!.Properties.RedrivePolicy;
  assert.equal(redrive(template().t).maxReceiveCount, JOB_MAX_ATTEMPTS_LIMIT + 2);
  assert.equal(redrive(template({ maxAttempts: 15 }).t).maxReceiveCount, 17);
  assert.equal(redrive(template({ maxReceiveCount: 4 }).t).maxReceiveCount, 4);
  assert.throws(() => template({ maxAttempts: 4, maxReceiveCount: 3 }), /maxReceiveCount \(3\) must be at least maxAttempts \(4\)/);
});

test('the longest job time limit is the rust side\'s', () => {
  const limits = fs.readFileSync(path.join(REPO, 'src', 'limits.rs'), 'utf8');
  const limit = /pub const MAX_JOB_TIMEOUT: Duration = Duration::from_secs\(([\d_]+)\);/.exec(limits);
  assert.ok(limit !== null, 'MAX_JOB_TIMEOUT in src/limits.rs');
  assert.equal(MAX_JOB_TIMEOUT_LIMIT.toSeconds(), Number(limit[1].replace(/_/g, '')));
  // Below SQS's 12-hour cap on a message's visibility from its receipt.
  assert.ok(MAX_JOB_TIMEOUT_LIMIT.toSeconds() < 43_200);
});

test('context configures the stack, with strings from the command line parsed', () => {
  const app = new App({
    context: {
      name: 'SluiceDev',
      vpcId: 'vpc-0123456789abcdef0',
      subnetIds: 'subnet-0123456789abcdef0, subnet-0123456789abcdef1',
      availabilityZones: ['eu-west-1a', 'eu-west-1b'],
      assignPublicIp: 'true',
      taskCpu: '2048',
      taskMemory: 4096,
      workerConcurrency: '2',
      scalingPolicyFile: policyWith({ jobs_per_task: 2 }),
      minTasks: '1',
      maxTasks: '8',
      spot: 'true',
      jwtIssuer: 'https://idp.example.com',
      jwtAudience: 'cli,web',
      lambdaAssetDir: 'cdk/test/fixtures/lambda',
      efsFileSystemId: 'fs-0123456789abcdef0',
      efsAccessPointId: 'fsap-0123456789abcdef0',
    },
  });
  const { name, props } = stackConfigFromContext(app.node);
  assert.equal(name, 'SluiceDev');
  assert.deepEqual(props.existingVpc, {
    vpcId: 'vpc-0123456789abcdef0',
    subnetIds: ['subnet-0123456789abcdef0', 'subnet-0123456789abcdef1'],
    availabilityZones: ['eu-west-1a', 'eu-west-1b'],
    assignPublicIp: true,
  });
  assert.equal(props.taskCpu, 2048);
  assert.equal(props.taskMemoryMiB, 4096);
  assert.equal(props.workerConcurrency, 2);
  assert.equal(props.minTasks, 1);
  assert.equal(props.maxTasks, 8);
  assert.equal(props.spot, true);
  assert.deepEqual(props.jwt, { issuer: 'https://idp.example.com', audience: ['cli', 'web'] });
  assert.equal(props.lambdaAssetDir, STUB_LAMBDAS);
  assert.equal(props.modelFileSystem?.fileSystemId, 'fs-0123456789abcdef0');
  // And the stack builds from it.
  const stack = new SluiceStack(app, name, { ...props, workerImage: STUB_IMAGE, workerHandler: { mode: 'demo' } });
  assert.equal(stack.scaling.maxTasks, 8);
});

test('bad context is rejected', () => {
  const config = (context: Record<string, unknown>) => stackConfigFromContext(new App({ context }).node);
  assert.throws(() => config({ taskCpu: 'lots' }), /context taskCpu must be a number/);
  assert.throws(() => config({ spot: 'yes' }), /context spot must be true or false/);
  assert.throws(() => config({ vpcId: 'vpc-0123456789abcdef0' }), /context vpcId needs subnetIds and availabilityZones/);
  assert.throws(() => config({ subnetIds: 'subnet-01234567' }), /context subnetIds and availabilityZones need vpcId/);
  assert.throws(() => config({ jwtIssuer: 'https://idp.example.com' }), /context jwtIssuer and jwtAudience go together/);
  assert.throws(() => config({ efsFileSystemId: 'fs-01234567' }), /context efsFileSystemId and efsAccessPointId go together/);
  assert.throws(() => config({ name: 'has space' }), /context name must be a valid stack name/);
  assert.throws(
    () => template({ existingVpc: { vpcId: 'vpc-123', subnetIds: ['subnet-01234567'], availabilityZones: ['a'] } }),
    /vpcId must look like vpc-/,
  );
  assert.throws(
    () => template({ modelFileSystem: { fileSystemId: 'fs-01234567', accessPointId: 'fsap-01234567', securityGroupId: 'sg-1' } }),
    /security group ids must look like sg-/,
  );
  assert.throws(() => template({ scalingPolicyFile: '/nonexistent/policy.json' }), /scaling policy: cannot read/);
});
