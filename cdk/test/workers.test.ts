import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { Duration } from 'aws-cdk-lib';
import { Match } from 'aws-cdk-lib/assertions';
import { validateFargateSize } from '../lib/constructs/workers';
import { READS } from '../lib/env';
import { actionsOf, grantsOf, j, logicalId, policyFile, sluiceStack, template, testApp } from './helpers';

function container(t: ReturnType<typeof template>['t']): any {
  const defs = Object.values(t.findResources('AWS::ECS::TaskDefinition'));
  assert.equal(defs.length, 1);
  assert.equal(defs[0].Properties.ContainerDefinitions.length, 1);
  return defs[0].Properties.ContainerDefinitions[0];
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

test('the service starts at zero and leaves the desired count to scaling', () => {
  const { t } = template();
  const services = Object.values(t.findResources('AWS::ECS::Service'));
  assert.equal(services.length, 1);
  const props = services[0].Properties;
  // No DesiredCount in the template: ECS keeps the scaled count across deploys.
  assert.equal(props.DesiredCount, undefined);
  assert.deepEqual(props.DeploymentConfiguration, {
    DeploymentCircuitBreaker: { Enable: true, Rollback: true },
    MaximumPercent: 200,
    MinimumHealthyPercent: 100,
  });
  assert.equal(props.LaunchType, 'FARGATE');
  assert.equal(props.CapacityProviderStrategy, undefined);
});

test('fargate spot is a capacity provider strategy', () => {
  const { t } = template({ spot: true });
  t.hasResourceProperties('AWS::ECS::Service', {
    CapacityProviderStrategy: [{ CapacityProvider: 'FARGATE_SPOT', Weight: 1 }],
    LaunchType: Match.absent(),
  });
  t.hasResourceProperties('AWS::ECS::ClusterCapacityProviderAssociations', {
    CapacityProviders: Match.arrayWith(['FARGATE', 'FARGATE_SPOT']),
  });
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
  assert.deepEqual(Object.keys(env).sort(), [...READS.worker].sort());
});

test('the worker gets the queue visibility and a shorter lease', () => {
  const { stack, t } = template({ jobTimeout: Duration.minutes(10), workerConcurrency: 8, workerHandler: 'echo' });
  const env = Object.fromEntries(
    container(t).Environment.map((e: { Name: string; Value: unknown }) => [e.Name, e.Value]),
  );
  const queue = Object.values(t.findResources('AWS::SQS::Queue')).find((q) => q.Properties.RedrivePolicy);
  assert.equal(env.SLUICE_VISIBILITY_TIMEOUT_SECONDS, String(queue!.Properties.VisibilityTimeout));
  assert.equal(env.SLUICE_LEASE_SECONDS, '600');
  assert.ok(Number(env.SLUICE_LEASE_SECONDS) < Number(env.SLUICE_VISIBILITY_TIMEOUT_SECONDS));
  assert.equal(env.SLUICE_CONCURRENCY, '8');
  assert.equal(env.SLUICE_HANDLER, 'echo');
  assert.equal(j(env.SLUICE_QUEUE_URL), j({ Ref: logicalId(stack.jobQueue.queue) }));
  assert.equal(j(env.SLUICE_TABLE_NAME), j({ Ref: logicalId(stack.jobTable.table) }));
});

test('the task role has exactly what the worker uses', () => {
  const { stack, t } = template();
  const role = stack.workers.taskDefinition.taskRole;
  assert.deepEqual(actionsOf(t, role), [
    'dynamodb:GetItem',
    'dynamodb:UpdateItem',
    'ecs:GetTaskProtection',
    'ecs:UpdateTaskProtection',
    'sqs:ChangeMessageVisibility',
    'sqs:DeleteMessage',
    'sqs:GetQueueAttributes',
    'sqs:ReceiveMessage',
  ]);
  const queueArn = { 'Fn::GetAtt': [logicalId(stack.jobQueue.queue), 'Arn'] };
  assert.equal(j(grantsOf(t, role, 'sqs:ReceiveMessage')[0].Resource), j(queueArn));
  const tableResource = j(grantsOf(t, role, 'dynamodb:UpdateItem')[0].Resource);
  assert.ok(tableResource.includes(logicalId(stack.jobTable.table)));
  const protection = j(grantsOf(t, role, 'ecs:UpdateTaskProtection')[0].Resource);
  assert.ok(protection.includes(':task/') && protection.includes(logicalId(stack.workers.cluster)));
  assert.equal(grantsOf(t, role, 'sqs:SendMessage').length, 0);
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
  assert.throws(() => template({ workerConcurrency: 0 }), /concurrency must be a positive integer/);
  assert.throws(() => template({ workerHandler: ' ' }), /handler must not be empty/);
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
