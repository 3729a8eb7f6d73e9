import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { Duration } from 'aws-cdk-lib';
import * as ec2 from 'aws-cdk-lib/aws-ec2';
import { Match } from 'aws-cdk-lib/assertions';
import { validateFargateSize } from '../lib/constructs/workers';
import { READS, withoutEvents, workerReads } from '../lib/env';
import { MAX_JOB_TIMEOUT_LIMIT } from '../lib/handler';
import { WorkerImage } from '../lib/worker-image';
import { REPO, actionsOf, grantsOf, j, logicalId, policyFile, policyWith, sluiceStack, template, testApp } from './helpers';

type Template = ReturnType<typeof template>['t'];

/** The task definition's containers (there is one task definition). */
function containers(t: Template): any[] {
  const defs = Object.values(t.findResources('AWS::ECS::TaskDefinition'));
  assert.equal(defs.length, 1);
  return defs[0].Properties.ContainerDefinitions;
}

/** The worker's container, the only one unless a model server is configured. */
function container(t: Template): any {
  const all = containers(t);
  assert.equal(all.length, 1);
  return all[0];
}

/** A container's environment as a plain object. */
function envOf(c: any): Record<string, unknown> {
  return Object.fromEntries(c.Environment.map((e: { Name: string; Value: unknown }) => [e.Name, e.Value]));
}

test('the task runs on linux/arm64 with the configured size', () => {
  const { t } = template({ taskCpu: 2048, taskMemoryMiB: 8192 });
  t.hasResourceProperties('AWS::ECS::TaskDefinition', {
    RequiresCompatibilities: ['FARGATE'],
    Cpu: '2048',
    Memory: '8192',
    RuntimePlatform: { CpuArchitecture: 'ARM64', OperatingSystemFamily: 'LINUX' },
  });
});

test('a task keeps fargate\'s 20 gib of storage unless told, and takes 21 to 200', () => {
  const { t } = template();
  const [def] = Object.values(t.findResources('AWS::ECS::TaskDefinition'));
  assert.equal(def.Properties.EphemeralStorage, undefined);
  template({ taskStorageGiB: 100 }).t.hasResourceProperties('AWS::ECS::TaskDefinition', {
    EphemeralStorage: { SizeInGiB: 100 },
  });
  for (const bad of [20, 201, 50.5]) {
    assert.throws(() => sluiceStack({ taskStorageGiB: bad }), /task storage must be a whole number of GiB from 21 to 200/);
  }
  assert.throws(
    () =>
      sluiceStack({
        taskStorageGiB: 100,
        gpu: { instanceTypes: [new ec2.InstanceType('g5.xlarge')] },
        workerHandler: { mode: 'process', command: ['python3', '/app/handler.py'] },
      }),
    /Fargate workers only/,
  );
});

test('the service leaves the desired count to scaling', () => {
  const { t } = template();
  const services = Object.values(t.findResources('AWS::ECS::Service'));
  assert.equal(services.length, 1);
  const props = services[0].Properties;
  // DesiredCount is the service's own at deploy time (test/deploy-safety.test.ts): ECS keeps
  // the scaled count across deploys.
  assert.equal(props.DesiredCount['Fn::GetAtt'][1], 'DesiredCount');
  assert.deepEqual(props.DeploymentConfiguration, {
    DeploymentCircuitBreaker: { Enable: true, Rollback: true },
    MaximumPercent: 200,
    MinimumHealthyPercent: 100,
  });
  assert.equal(props.LaunchType, 'FARGATE');
  assert.equal(props.CapacityProviderStrategy, undefined);
});

test('fargate spot is a capacity provider strategy with an on-demand fargate base and share', () => {
  const { stack, t } = template({ spot: true });
  t.hasResourceProperties('AWS::ECS::Service', {
    CapacityProviderStrategy: [
      { CapacityProvider: 'FARGATE', Base: 1, Weight: 1 },
      { CapacityProvider: 'FARGATE_SPOT', Weight: 3 },
    ],
    LaunchType: Match.absent(),
  });
  t.hasResourceProperties('AWS::ECS::ClusterCapacityProviderAssociations', {
    CapacityProviders: Match.arrayWith(['FARGATE', 'FARGATE_SPOT']),
  });
  // The service is created once the providers are the cluster's.
  const service = t.toJSON().Resources[logicalId(stack.workers.service)];
  const association = Object.keys(t.findResources('AWS::ECS::ClusterCapacityProviderAssociations'))[0];
  assert.ok(service.DependsOn.includes(association));
  // The mix is configurable: Spot alone above a base of two on-demand tasks.
  template({ spot: true, spotStrategy: { onDemandBase: 2, onDemandWeight: 0, spotWeight: 1 } }).t.hasResourceProperties(
    'AWS::ECS::Service',
    {
      CapacityProviderStrategy: [
        { CapacityProvider: 'FARGATE', Base: 2, Weight: 0 },
        { CapacityProvider: 'FARGATE_SPOT', Weight: 1 },
      ],
    },
  );
  assert.throws(() => template({ spotStrategy: { spotWeight: 2 } }), /spotStrategy needs spot: true/);
  assert.throws(() => template({ spot: true, spotStrategy: { spotWeight: 0 } }), /spotWeight must be at least 1/);
  assert.throws(() => template({ spot: true, spotStrategy: { onDemandBase: -1 } }), /onDemandBase must be an integer from 0/);
  assert.throws(() => template({ spot: true, spotStrategy: { onDemandWeight: 1.5 } }), /onDemandWeight must be an integer from 0 to 1000/);
});

test('the cluster has container insights', () => {
  const { t } = template();
  t.hasResourceProperties('AWS::ECS::Cluster', {
    ClusterSettings: [{ Name: 'containerInsights', Value: 'enabled' }],
  });
});

test('the container drains within its stop timeout, checks its health and logs to cloudwatch', () => {
  const { t } = template();
  const c = container(t);
  assert.equal(c.StopTimeout, 120);
  assert.deepEqual(c.HealthCheck.Command, ['CMD', '/usr/local/bin/sluice-worker', 'healthcheck']);
  assert.equal(c.LogConfiguration.LogDriver, 'awslogs');
  assert.equal(c.Essential, true);
  const env = Object.fromEntries(c.Environment.map((e: { Name: string; Value: unknown }) => [e.Name, e.Value]));
  assert.equal(env.SLUICE_DRAIN_SECONDS, '90');
  assert.ok(Number(env.SLUICE_DRAIN_SECONDS) < c.StopTimeout);
  assert.equal(env.SLUICE_LOG_FORMAT, 'json');
  // Job metrics land where the dashboard and the failed-jobs alarm look: the policy's namespace.
  assert.equal(env.SLUICE_METRIC_NAMESPACE, policyFile().namespace);
  assert.deepEqual(Object.keys(env).sort(), withoutEvents(workerReads('demo')).sort());
});

test('the worker gets the queue visibility and a shorter lease', () => {
  const { stack, t } = template({
    leaseDuration: Duration.minutes(10),
    workerConcurrency: 8,
    scalingPolicyFile: policyWith({ jobs_per_task: 8 }),
  });
  const env = Object.fromEntries(
    container(t).Environment.map((e: { Name: string; Value: unknown }) => [e.Name, e.Value]),
  );
  const queue = Object.values(t.findResources('AWS::SQS::Queue')).find((q) => q.Properties.RedrivePolicy);
  assert.equal(env.SLUICE_VISIBILITY_TIMEOUT_SECONDS, String(queue!.Properties.VisibilityTimeout));
  assert.equal(env.SLUICE_LEASE_SECONDS, '600');
  assert.ok(Number(env.SLUICE_LEASE_SECONDS) < Number(env.SLUICE_VISIBILITY_TIMEOUT_SECONDS));
  assert.equal(env.SLUICE_CONCURRENCY, '8');
  assert.equal(j(env.SLUICE_QUEUE_URL), j({ Ref: logicalId(stack.jobQueue.queue) }));
  assert.equal(j(env.SLUICE_TABLE_NAME), j({ Ref: logicalId(stack.jobTable.table) }));
});

test('the task role has exactly what the worker uses', () => {
  const { stack, t } = template();
  const role = stack.workers.taskDefinition.taskRole;
  assert.deepEqual(actionsOf(t, role), [
    'dynamodb:GetItem',
    'dynamodb:PutItem',
    'dynamodb:UpdateItem',
    'ecs:GetTaskProtection',
    'ecs:UpdateTaskProtection',
    's3:AbortMultipartUpload',
    's3:GetObject',
    's3:PutObject',
    'sqs:ChangeMessageVisibility',
    'sqs:DeleteMessage',
    'sqs:ReceiveMessage',
    'sqs:SendMessage',
  ]);
  const queueArn = { 'Fn::GetAtt': [logicalId(stack.jobQueue.queue), 'Arn'] };
  assert.equal(j(grantsOf(t, role, 'sqs:ReceiveMessage')[0].Resource), j(queueArn));
  const tableResource = j(grantsOf(t, role, 'dynamodb:UpdateItem')[0].Resource);
  assert.ok(tableResource.includes(logicalId(stack.jobTable.table)));
  const protection = j(grantsOf(t, role, 'ecs:UpdateTaskProtection')[0].Resource);
  assert.ok(protection.includes(':task/') && protection.includes(logicalId(stack.workers.cluster)));
  // It sends only to the jobs queue (a fresh copy of a message near the redrive limit).
  assert.equal(j(grantsOf(t, role, 'sqs:SendMessage')[0].Resource), j(queueArn));
  assert.equal(grantsOf(t, role, 'sqs:GetQueueAttributes').length, 0, 'the worker never calls it');
  const env = Object.fromEntries(
    Object.values(t.findResources('AWS::ECS::TaskDefinition'))[0].Properties.ContainerDefinitions[0].Environment.map(
      (e: { Name: string; Value: unknown }) => [e.Name, e.Value],
    ),
  );
  assert.equal(env.SLUICE_MAX_RECEIVE_COUNT, String(stack.jobQueue.maxReceiveCount));
  // A job's uploaded file: read only, under uploads/ only, from the stack's payload bucket.
  const bucket = logicalId(stack.jobQueue.payloadBucket);
  assert.equal(
    j(grantsOf(t, role, 's3:GetObject')[0].Resource),
    j({ 'Fn::Join': ['', [{ 'Fn::GetAtt': [bucket, 'Arn'] }, '/uploads/*']] }),
  );
  assert.deepEqual(env.SLUICE_PAYLOAD_BUCKET, { Ref: bucket });
  // What jobs produce: written only, under results/ and outputs/ only.
  const under = (prefix: string) => ({ 'Fn::Join': ['', [{ 'Fn::GetAtt': [bucket, 'Arn'] }, `/${prefix}/*`]] });
  assert.equal(j(grantsOf(t, role, 's3:PutObject')[0].Resource), j([under('outputs'), under('results')]));
});

test('tasks get public ips in the new vpc without nat, and no inbound rule', () => {
  const { t } = template();
  t.resourceCountIs('AWS::EC2::NatGateway', 0);
  t.hasResourceProperties('AWS::ECS::Service', {
    NetworkConfiguration: { AwsvpcConfiguration: { AssignPublicIp: 'ENABLED' } },
  });
  const sgs = Object.values(t.findResources('AWS::EC2::SecurityGroup'));
  assert.equal(sgs.length, 1);
  assert.equal(sgs[0].Properties.SecurityGroupIngress, undefined);
  t.resourceCountIs('AWS::EC2::SecurityGroupIngress', 0);
});

test('an existing vpc is used by ids, without a lookup', () => {
  const { t } = template({
    existingVpc: {
      vpcId: 'vpc-0123456789abcdef0',
      subnetIds: ['subnet-0a1b2c3d4e5f60001', 'subnet-0a1b2c3d4e5f60002'],
      availabilityZones: ['us-east-1a', 'us-east-1b'],
    },
  });
  t.resourceCountIs('AWS::EC2::VPC', 0);
  t.hasResourceProperties('AWS::ECS::Service', {
    NetworkConfiguration: {
      AwsvpcConfiguration: { AssignPublicIp: 'DISABLED', Subnets: ['subnet-0a1b2c3d4e5f60001', 'subnet-0a1b2c3d4e5f60002'] },
    },
  });
  t.hasResourceProperties('AWS::EC2::SecurityGroup', { VpcId: 'vpc-0123456789abcdef0' });
});

test('model files mount read-only from efs through the access point', () => {
  const { stack, t } = template({
    modelFileSystem: {
      fileSystemId: 'fs-0123456789abcdef0',
      accessPointId: 'fsap-0456789abcdef0123',
      mountPath: '/opt/models',
      securityGroupId: 'sg-0789abcdef0123456',
    },
  });
  t.hasResourceProperties('AWS::ECS::TaskDefinition', {
    Volumes: [
      {
        Name: 'models',
        EFSVolumeConfiguration: {
          FilesystemId: 'fs-0123456789abcdef0',
          TransitEncryption: 'ENABLED',
          AuthorizationConfig: { AccessPointId: 'fsap-0456789abcdef0123', IAM: 'ENABLED' },
        },
      },
    ],
  });
  assert.deepEqual(container(t).MountPoints, [{ SourceVolume: 'models', ContainerPath: '/opt/models', ReadOnly: true }]);
  const role = stack.workers.taskDefinition.taskRole;
  const mount = grantsOf(t, role, 'elasticfilesystem:ClientMount');
  assert.equal(mount.length, 1);
  assert.ok(j(mount[0].Condition).includes('access-point/fsap-0456789abcdef0123'));
  assert.equal(grantsOf(t, role, 'elasticfilesystem:ClientWrite').length, 0);
  t.hasResourceProperties('AWS::EC2::SecurityGroupIngress', {
    GroupId: 'sg-0789abcdef0123456',
    FromPort: 2049,
    ToPort: 2049,
    SourceSecurityGroupId: { 'Fn::GetAtt': [logicalId(stack.workers.securityGroup), 'GroupId'] },
  });
});

test('the default image is built from worker/Dockerfile for linux/arm64 with the repo root as context', () => {
  const app = testApp();
  const stack = sluiceStack({ workerImage: undefined }, app);
  const assembly = app.synth();
  const manifest = JSON.parse(
    fs.readFileSync(path.join(assembly.directory, `${stack.artifactId}.assets.json`), 'utf8'),
  );
  const images = Object.values(manifest.dockerImages) as any[];
  assert.equal(images.length, 1);
  assert.equal(images[0].source.dockerFile, 'worker/Dockerfile');
  assert.equal(images[0].source.platform, 'linux/arm64');
  const staged = path.join(assembly.directory, images[0].source.directory);
  // The context holds the workspace, and .dockerignore keeps target/ and cdk/ out of it.
  assert.ok(fs.existsSync(path.join(staged, 'Cargo.toml')));
  assert.ok(fs.existsSync(path.join(staged, 'worker', 'Dockerfile')));
  assert.ok(fs.existsSync(path.join(staged, 'scaling', 'policy.json')));
  assert.ok(!fs.existsSync(path.join(staged, 'target')));
  assert.ok(!fs.existsSync(path.join(staged, 'cdk')));
});

test('bad worker props are rejected', () => {
  assert.throws(() => template({ drainTimeout: Duration.seconds(120) }), /drainTimeout \(120 s\) must be positive and below stopTimeout \(120 s\)/);
  assert.throws(() => template({ drainTimeout: Duration.seconds(150) }), /must be positive and below stopTimeout/);
  assert.throws(() => template({ drainTimeout: Duration.millis(1500) }), /drainTimeout must be whole seconds/);
  assert.throws(() => template({ taskCpu: 3000 }), /task cpu must be one of/);
  assert.throws(() => template({ taskCpu: 1024, taskMemoryMiB: 512 }), /task memory 512 MiB is not a fargate size/);
  assert.throws(() => template({ workerConcurrency: 0 }), /workerConcurrency \(0\) differs from the scaling policy's jobs_per_task \(1\)/);
  assert.throws(
    () => template({ modelFileSystem: { fileSystemId: 'efs-1', accessPointId: 'fsap-1' } }),
    /fileSystemId must look like fs-/,
  );
  assert.throws(
    () => template({ modelFileSystem: { fileSystemId: 'fs-01234567', accessPointId: 'ap-1' } }),
    /accessPointId must look like fsap-/,
  );
  assert.throws(
    () => template({ modelFileSystem: { fileSystemId: 'fs-01234567', accessPointId: 'fsap-01234567', mountPath: 'models' } }),
    /mountPath must be an absolute path/,
  );
  assert.throws(
    () => template({ existingVpc: { vpcId: 'vpc-01234567', subnetIds: ['subnet-01234567', 'subnet-01234568', 'subnet-01234569'], availabilityZones: ['a', 'b'] } }),
    /subnetIds \(3\) must be a multiple of availabilityZones \(2\)/,
  );
});

test('fargate sizes follow the published table', () => {
  for (const [cpu, mem] of [[256, 512], [512, 4096], [4096, 30720], [8192, 16384], [16384, 122880]]) {
    assert.doesNotThrow(() => validateFargateSize(cpu, mem));
  }
  for (const [cpu, mem] of [[256, 4096], [2048, 2048], [8192, 18432], [16384, 36864]]) {
    assert.throws(() => validateFargateSize(cpu, mem), /not a fargate size/);
  }
});

test('the demo mode sets the time limits and none of the other modes\' variables', () => {
  const { t } = template();
  const c = container(t);
  const env = envOf(c);
  assert.equal(env.SLUICE_HANDLER, 'demo');
  assert.equal(env.SLUICE_JOB_TIMEOUT_SECONDS, '3600');
  assert.equal(env.SLUICE_MAX_JOB_TIMEOUT_SECONDS, String(MAX_JOB_TIMEOUT_LIMIT.toSeconds()));
  for (const name of ['SLUICE_COMMAND', 'SLUICE_MODEL_URL', 'SLUICE_STARTUP_SECONDS']) {
    assert.equal(env[name], undefined, name);
  }
  assert.equal(c.HealthCheck.StartPeriod, 60);
  assert.equal(c.DependsOn, undefined);
});

test('the process mode writes its command as a json array and its startup timeout', () => {
  const { t } = template({
    workerHandler: { mode: 'process', command: ['python3', '/app/handler.py', '--model', 'a b'], startupTimeout: Duration.minutes(2) },
  });
  const c = container(t);
  const env = envOf(c);
  assert.equal(env.SLUICE_HANDLER, 'process');
  assert.deepEqual(JSON.parse(env.SLUICE_COMMAND as string), ['python3', '/app/handler.py', '--model', 'a b']);
  assert.equal(env.SLUICE_STARTUP_SECONDS, '120');
  assert.equal(env.SLUICE_MODEL_URL, undefined);
  assert.deepEqual(Object.keys(env).sort(), withoutEvents(workerReads('process')).sort());
  // The start period covers the startup timeout and the worker's own start.
  assert.equal(c.HealthCheck.StartPeriod, 150);
  assert.deepEqual(c.HealthCheck.Command, ['CMD', '/usr/local/bin/sluice-worker', 'healthcheck']);
});

test('the start period covers the startup timeout up to ecs\'s 300 s', () => {
  const startPeriod = (startupTimeout?: Duration) =>
    container(template({ workerHandler: { mode: 'process', command: ['/app/run'], startupTimeout } }).t).HealthCheck.StartPeriod;
  assert.equal(startPeriod(), 300); // the default startup of 600 s
  assert.equal(startPeriod(Duration.seconds(10)), 60);
  assert.equal(startPeriod(Duration.seconds(270)), 300);
  assert.equal(startPeriod(Duration.hours(2)), 300);
  const env = envOf(container(template({ workerHandler: { mode: 'process', command: ['/app/run'] } }).t));
  assert.equal(env.SLUICE_STARTUP_SECONDS, '600');
});

test('the http mode without a model server points at the sagemaker port on loopback', () => {
  const { t } = template({ workerHandler: { mode: 'http' } });
  const env = envOf(container(t));
  assert.equal(env.SLUICE_HANDLER, 'http');
  assert.equal(env.SLUICE_MODEL_URL, 'http://127.0.0.1:8080');
  assert.equal(env.SLUICE_STARTUP_SECONDS, '600');
  assert.equal(env.SLUICE_COMMAND, undefined);
  assert.deepEqual(Object.keys(env).sort(), withoutEvents(workerReads('http')).sort());
  const remote = envOf(container(template({ workerHandler: { mode: 'http', modelUrl: 'https://models.internal.example.com/v1' } }).t));
  assert.equal(remote.SLUICE_MODEL_URL, 'https://models.internal.example.com/v1');
});

test('a model server is an essential second container the worker waits for', () => {
  const { stack, t } = template({
    workerHandler: {
      mode: 'http',
      startupTimeout: Duration.seconds(900),
      modelServer: {
        image: WorkerImage.fromUri('763104351884.dkr.ecr.us-east-1.amazonaws.com/pytorch-inference-graviton:2.1.0-cpu-py310-ubuntu20.04-sagemaker'),
        port: 9000,
        command: ['serve'],
        environment: { SAGEMAKER_PROGRAM: 'inference.py' },
      },
    },
    modelFileSystem: { fileSystemId: 'fs-0123456789abcdef0', accessPointId: 'fsap-0456789abcdef0123', mountPath: '/opt/ml/model' },
  });
  const [worker, server] = containers(t);
  assert.equal(worker.Name, 'Worker');
  assert.equal(server.Name, 'ModelServer');
  assert.equal(server.Essential, true);
  assert.deepEqual(server.Command, ['serve']);
  assert.deepEqual(server.Environment, [{ Name: 'SAGEMAKER_PROGRAM', Value: 'inference.py' }]);
  assert.equal(server.HealthCheck, undefined);
  assert.equal(server.PortMappings, undefined, 'the worker reaches it on loopback: nothing is opened');
  assert.equal(server.LogConfiguration.Options['awslogs-stream-prefix'], 'model-server');
  assert.ok(j(server.Image).includes('763104351884.dkr.ecr.us-east-1.'));
  assert.ok(j(server.Image).includes('/pytorch-inference-graviton:2.1.0-cpu-py310-ubuntu20.04-sagemaker'));
  // Without a health check the worker waits for the server to start, then polls GET /ping.
  assert.deepEqual(worker.DependsOn, [{ ContainerName: 'ModelServer', Condition: 'START' }]);
  assert.equal(envOf(worker).SLUICE_MODEL_URL, 'http://127.0.0.1:9000');
  assert.equal(envOf(worker).SLUICE_STARTUP_SECONDS, '900');
  // Both see the model files.
  for (const c of [worker, server]) {
    assert.deepEqual(c.MountPoints, [{ SourceVolume: 'models', ContainerPath: '/opt/ml/model', ReadOnly: true }]);
  }
  // The execution role may pull from that repository only.
  const pull = grantsOf(t, stack.workers.taskDefinition.obtainExecutionRole(), 'ecr:BatchGetImage');
  assert.equal(pull.length, 1);
  assert.equal(pull[0].Resource, 'arn:aws:ecr:us-east-1:763104351884:repository/pytorch-inference-graviton');
});

test('a model server with a health check must be healthy before the worker starts', () => {
  const { t } = template({
    workerHandler: {
      mode: 'http',
      modelServer: {
        image: WorkerImage.fromUri('ghcr.io/example/model-server:1.0'),
        healthCheck: { command: ['CMD-SHELL', 'curl -fs http://127.0.0.1:8080/ping || exit 1'] },
      },
    },
  });
  const [worker, server] = containers(t);
  assert.deepEqual(worker.DependsOn, [{ ContainerName: 'ModelServer', Condition: 'HEALTHY' }]);
  assert.equal(server.Image, 'ghcr.io/example/model-server:1.0');
  assert.deepEqual(server.HealthCheck.Command, ['CMD-SHELL', 'curl -fs http://127.0.0.1:8080/ping || exit 1']);
  // Its start period is the worker's, which covers the startup timeout (600 s) as far as ecs allows.
  assert.equal(server.HealthCheck.StartPeriod, 300);
  assert.equal(worker.HealthCheck.StartPeriod, 300);
  assert.equal(envOf(worker).SLUICE_MODEL_URL, 'http://127.0.0.1:8080');
});

test('the job time limits reach the worker and the submit lambda', () => {
  const { stack, t } = template({ jobTimeout: Duration.minutes(20), maxJobTimeout: Duration.hours(2) });
  const env = envOf(container(t));
  assert.equal(env.SLUICE_JOB_TIMEOUT_SECONDS, '1200');
  assert.equal(env.SLUICE_MAX_JOB_TIMEOUT_SECONDS, '7200');
  const submit = t.toJSON().Resources[logicalId(stack.jobApi.submitFunction)].Properties.Environment.Variables;
  assert.equal(submit.SLUICE_MAX_JOB_TIMEOUT_SECONDS, '7200');
  assert.deepEqual(Object.keys(submit).sort(), withoutEvents(READS.submit).sort());
  // The default time limit never exceeds the longest.
  const short = envOf(container(template({ maxJobTimeout: Duration.minutes(30) }).t));
  assert.equal(short.SLUICE_JOB_TIMEOUT_SECONDS, '1800');
  assert.equal(short.SLUICE_MAX_JOB_TIMEOUT_SECONDS, '1800');
  const submitDefault = template().t.toJSON().Resources[logicalId(template().stack.jobApi.submitFunction)];
  assert.equal(submitDefault.Properties.Environment.Variables.SLUICE_MAX_JOB_TIMEOUT_SECONDS, '42300');
});

test('bad time limits are rejected', () => {
  assert.throws(
    () => template({ jobTimeout: Duration.hours(3), maxJobTimeout: Duration.hours(2) }),
    /jobTimeout \(10800 s\) must be at most maxJobTimeout \(7200 s\)/,
  );
  assert.throws(() => template({ maxJobTimeout: Duration.hours(12) }), /maxJobTimeout must be from 1 to 42300 seconds/);
  assert.throws(() => template({ jobTimeout: Duration.hours(12) }), /jobTimeout \(43200 s\) must be at most maxJobTimeout \(42300 s\)/);
  assert.throws(() => template({ jobTimeout: Duration.millis(1500) }), /jobTimeout must be whole seconds/);
  assert.throws(() => template({ maxJobTimeout: Duration.millis(2500) }), /maxJobTimeout must be whole seconds/);
  assert.throws(() => template({ jobTimeout: Duration.seconds(0) }), /jobTimeout must be at least 1 second/);
});

test('bad handlers are rejected', () => {
  const h = (workerHandler: any) => () => template({ workerHandler });
  assert.throws(h({ mode: 'batch' }), /handler mode must be one of demo, process, http, got "batch"/);
  assert.throws(h({ mode: 'process', command: [] }), /handler command must list the program and its arguments/);
  assert.throws(h({ mode: 'process' }), /handler command must list the program/);
  assert.throws(h({ mode: 'process', command: ['python3', ''] }), /handler command must be a list of strings/);
  assert.throws(h({ mode: 'process', command: ['/app/run'], startupTimeout: Duration.seconds(0) }), /startupTimeout must be from 1 to 86400 seconds, got 0/);
  assert.throws(h({ mode: 'http', startupTimeout: Duration.millis(500) }), /startupTimeout must be whole seconds/);
  assert.throws(h({ mode: 'http', modelUrl: 'ftp://models/' }), /modelUrl must be an http or https url, got "ftp:\/\/models\/"/);
  assert.throws(h({ mode: 'http', modelUrl: '127.0.0.1:8080' }), /modelUrl must be an http or https url/);
  assert.throws(h({ mode: 'http', modelUrl: 'http://127.0.0.1:8080/?x=1' }), /modelUrl must be a base url without credentials, query or fragment/);
  const image = WorkerImage.fromUri('ghcr.io/example/model-server:1.0');
  assert.throws(h({ mode: 'http', modelServer: { image, port: 70000 } }), /modelServer.port must be an integer from 1 to 65535, got 70000/);
  assert.throws(h({ mode: 'http', modelServer: { image: 'ghcr.io/x:1' } }), /modelServer.image must be a WorkerImage/);
  assert.throws(h({ mode: 'http', modelServer: { image, command: [] } }), /modelServer.command must list the program/);
  assert.throws(h({ mode: 'http', modelServer: { image, environment: { 'BAD-NAME': 'x' } } }), /modelServer.environment names must be/);
  assert.throws(
    h({ mode: 'http', modelServer: { image, healthCheck: { command: ['curl', 'http://127.0.0.1:8080/ping'] } } }),
    /modelServer.healthCheck.command must start with CMD or CMD-SHELL/,
  );
});

test('an image of ones own needs the handler stated', () => {
  assert.throws(
    () => sluiceStack({ workerImage: WorkerImage.fromUri('ghcr.io/example/worker:1'), workerHandler: undefined }),
    /handler is required with a worker image of your own: the task's environment sets SLUICE_HANDLER and overrides the image's/,
  );
  // The default image runs the demo handler without being told.
  assert.doesNotThrow(() => sluiceStack({ workerImage: undefined, workerHandler: undefined }));
});

test('an image from a uri: ecr is pulled with the execution role, other registries as they are', () => {
  const ecrStack = template({
    workerImage: WorkerImage.fromUri('123456789012.dkr.ecr.eu-west-1.amazonaws.com/sluice/sentiment:1.2.0'),
    workerHandler: { mode: 'process', command: ['python3', '/app/handler.py'] },
  });
  const image = j(container(ecrStack.t).Image);
  assert.ok(image.includes('123456789012.dkr.ecr.eu-west-1.') && image.includes('/sluice/sentiment:1.2.0'), image);
  const pull = grantsOf(ecrStack.t, ecrStack.stack.workers.taskDefinition.obtainExecutionRole(), 'ecr:BatchGetImage');
  assert.equal(pull.length, 1);
  assert.equal(pull[0].Resource, 'arn:aws:ecr:eu-west-1:123456789012:repository/sluice/sentiment');

  const digest = `sha256:${'a'.repeat(64)}`;
  const pinned = template({
    workerImage: WorkerImage.fromUri(`123456789012.dkr.ecr.cn-north-1.amazonaws.com.cn/worker@${digest}`),
    workerHandler: { mode: 'demo' },
  });
  assert.ok(j(container(pinned.t).Image).includes(`/worker@${digest}`));
  const cnPull = grantsOf(pinned.t, pinned.stack.workers.taskDefinition.obtainExecutionRole(), 'ecr:BatchGetImage');
  assert.equal(cnPull[0].Resource, 'arn:aws-cn:ecr:cn-north-1:123456789012:repository/worker');

  const pub = template({ workerImage: WorkerImage.fromUri('public.ecr.aws/example/worker:2'), workerHandler: { mode: 'demo' } });
  assert.equal(container(pub.t).Image, 'public.ecr.aws/example/worker:2');
  assert.equal(grantsOf(pub.t, pub.stack.workers.taskDefinition.obtainExecutionRole(), 'ecr:BatchGetImage').length, 0);
});

test('bad image uris and directories are rejected eagerly', () => {
  assert.throws(() => WorkerImage.fromUri(''), /worker image uri must be an image reference like/);
  assert.throws(() => WorkerImage.fromUri('My Image'), /worker image uri must be an image reference/);
  assert.throws(() => WorkerImage.fromUri('ghcr.io/Example/worker:1'), /worker image uri must be an image reference/);
  assert.throws(
    () => WorkerImage.fromUri('123456789012.dkr.ecr.amazonaws.com/worker:1'),
    /worker image uri looks like ecr but is not <account>.dkr.ecr.<region>.amazonaws.com/,
  );
  assert.throws(() => WorkerImage.fromDirectory('no/such/dir'), /worker image directory no\/such\/dir does not exist/);
  assert.throws(() => WorkerImage.fromDirectory('scaling'), /worker image dockerfile scaling\/Dockerfile does not exist/);
  assert.throws(
    () => WorkerImage.fromDirectory('worker', { buildContext: 'examples' }),
    /worker image dockerfile .*worker\/Dockerfile must be inside its build context/,
  );
  assert.throws(
    () => WorkerImage.fromDirectory('worker', { buildArgs: { 'BAD NAME': 'x' } }),
    /worker image build args must map names to strings/,
  );
});

test('an image from a directory inside the repository builds with the repository root as the context', () => {
  const sentiment = WorkerImage.fromDirectory('examples/sentiment', { buildArgs: { PIP_INDEX_URL: 'https://pypi.org/simple' } });
  assert.deepEqual(sentiment.source, {
    kind: 'directory',
    buildContext: REPO,
    file: 'examples/sentiment/Dockerfile',
    buildArgs: { PIP_INDEX_URL: 'https://pypi.org/simple' },
    dockerignore: path.join(REPO, 'examples', 'sentiment', 'Dockerfile.dockerignore'),
  });
  // The default image uses the root .dockerignore.
  assert.deepEqual(WorkerImage.fromDirectory(path.join(REPO, 'worker')).source, {
    kind: 'directory',
    buildContext: REPO,
    file: 'worker/Dockerfile',
    buildArgs: {},
    dockerignore: undefined,
  });
  // A directory outside the repository is its own context.
  const outside = fs.mkdtempSync(path.join(os.tmpdir(), 'sluice-image-'));
  try {
    fs.writeFileSync(path.join(outside, 'Dockerfile.gpu'), 'FROM scratch\n');
    const own = WorkerImage.fromDirectory(outside, { file: 'Dockerfile.gpu' }).source;
    assert.equal(own.kind === 'directory' && own.buildContext, outside);
    assert.equal(own.kind === 'directory' && own.file, 'Dockerfile.gpu');
  } finally {
    fs.rmSync(outside, { recursive: true, force: true });
  }

  const app = testApp();
  const stack = sluiceStack({ workerImage: sentiment, workerHandler: { mode: 'process', command: ['python3', '/app/handler.py'] } }, app);
  const manifest = JSON.parse(fs.readFileSync(path.join(app.synth().directory, `${stack.artifactId}.assets.json`), 'utf8'));
  const images = Object.values(manifest.dockerImages) as any[];
  assert.equal(images.length, 1);
  assert.equal(images[0].source.dockerFile, 'examples/sentiment/Dockerfile');
  assert.equal(images[0].source.platform, 'linux/arm64');
  assert.deepEqual(images[0].source.dockerBuildArgs, { PIP_INDEX_URL: 'https://pypi.org/simple' });
});

test('listed input buckets: submit gets their names, the workers read their objects and nothing more', () => {
  const buckets = ['data-lake', 'raw.images.example'];
  const { stack, t } = template({ inputBuckets: buckets });
  const role = stack.workers.taskDefinition.taskRole;
  const statements = grantsOf(t, role, 's3:GetObjectVersion');
  const resources = statements.flatMap((s) => (Array.isArray(s.Resource) ? s.Resource : [s.Resource])).map(j);
  for (const s of statements) {
    assert.deepEqual([...s.Action].sort(), ['s3:GetObject', 's3:GetObjectVersion']);
  }
  assert.deepEqual(
    resources.sort(),
    buckets.map((b) => j({ 'Fn::Join': ['', ['arn:', { Ref: 'AWS::Partition' }, `:s3:::${b}/*`]] })).sort(),
    'by name: no lookup, the stack stays environment-agnostic',
  );
  // Never a write or a delete in them.
  for (const action of ['s3:PutObject', 's3:DeleteObject', 's3:DeleteObjectVersion']) {
    for (const g of grantsOf(t, role, action)) {
      assert.ok(!buckets.some((b) => j(g.Resource).includes(b)), `${action} on ${j(g.Resource)}`);
    }
  }
  const submit = t.toJSON().Resources[logicalId(stack.jobApi.submitFunction)].Properties.Environment.Variables;
  assert.equal(submit.SLUICE_INPUT_BUCKETS, 'data-lake,raw.images.example');
  // Without the option: the variable is empty (no references), and no grant.
  const plain = template();
  const plainSubmit = plain.t.toJSON().Resources[logicalId(plain.stack.jobApi.submitFunction)].Properties.Environment.Variables;
  assert.equal(plainSubmit.SLUICE_INPUT_BUCKETS, '');
  assert.equal(grantsOf(plain.t, plain.stack.workers.taskDefinition.taskRole, 's3:GetObjectVersion').length, 0);
});

test('input buckets must be bucket names', () => {
  for (const bad of ['Data', 'ab', 'data_lake', '-data', 'arn:aws:s3:::data', 's3://data']) {
    assert.throws(() => sluiceStack({ inputBuckets: [bad] }), /inputBuckets must be s3 bucket names/, bad);
  }
});
