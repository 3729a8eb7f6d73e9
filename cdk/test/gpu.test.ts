import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { Validations } from 'aws-cdk-lib';
import { Match } from 'aws-cdk-lib/assertions';
import * as ec2 from 'aws-cdk-lib/aws-ec2';
import { AwsSolutionsChecks } from 'cdk-nag';
import { SluiceStackProps, SluiceStack } from '../lib/sluice-stack';
import { WorkerImage } from '../lib/worker-image';
import { REPO, STUB_LAMBDAS, j, logicalId, template, testApp } from './helpers';

type Template = ReturnType<typeof template>['t'];

const G5 = new ec2.InstanceType('g5.xlarge');
const G6 = new ec2.InstanceType('g6.xlarge');
const GPU: SluiceStackProps = {
  gpu: { instanceTypes: [G5, G6] },
  workerHandler: { mode: 'process', command: ['python3', '/app/handler.py'] },
};
const PRIVATE_VPC = {
  vpcId: 'vpc-0123456789abcdef0',
  subnetIds: ['subnet-0123456789abcdef0', 'subnet-0123456789abcdef1'],
  availabilityZones: ['us-east-1a', 'us-east-1b'],
};

function resources(t: Template, type: string): [string, any][] {
  return Object.entries(t.findResources(type));
}

/** The user data of a launch template, as text with references as `${logicalId}`. */
function userData(lt: any): string {
  const parts = lt.Properties.LaunchTemplateData.UserData['Fn::Base64']['Fn::Join'][1] as unknown[];
  return parts.map((p) => (typeof p === 'string' ? p : `\${${(p as { Ref: string }).Ref}}`)).join('');
}

test('gpu workers run on an ec2 task definition that reserves gpus', () => {
  const { t } = template({ ...GPU, gpu: { instanceTypes: [G5], gpusPerTask: 2 } });
  const [[, def]] = resources(t, 'AWS::ECS::TaskDefinition');
  assert.deepEqual(def.Properties.RequiresCompatibilities, ['EC2']);
  const worker = def.Properties.ContainerDefinitions[0];
  assert.deepEqual(worker.ResourceRequirements, [{ Type: 'GPU', Value: '2' }]);
  assert.equal(worker.Cpu, 2048);
  assert.equal(worker.MemoryReservation, 8192);
  // Public subnets (no NAT gateway): the instance's network, through the Docker bridge.
  assert.equal(def.Properties.NetworkMode, 'bridge');
  assert.equal(def.Properties.RuntimePlatform, undefined, 'x86_64, the GPU instances');
});

test('the gpu instances come from zero through an asg capacity provider with managed scaling and termination protection', () => {
  const { stack, t } = template(GPU);
  const groups = resources(t, 'AWS::AutoScaling::AutoScalingGroup');
  assert.equal(groups.length, 1, 'on-demand only without spot');
  const [[groupId, group]] = groups;
  assert.equal(group.Properties.MinSize, '0');
  assert.equal(group.Properties.MaxSize, '20', "the policy's max_tasks");
  assert.equal(group.Properties.DesiredCapacity, undefined, 'managed scaling sets it');
  assert.equal(group.Properties.NewInstancesProtectedFromScaleIn, true);
  assert.deepEqual(group.Properties.MixedInstancesPolicy.LaunchTemplate.Overrides, [
    { InstanceType: 'g5.xlarge' },
    { InstanceType: 'g6.xlarge' },
  ]);
  assert.equal(group.Properties.MixedInstancesPolicy.InstancesDistribution.OnDemandPercentageAboveBaseCapacity, 100);
  t.hasResourceProperties('AWS::ECS::CapacityProvider', {
    AutoScalingGroupProvider: {
      AutoScalingGroupArn: { Ref: groupId },
      ManagedScaling: Match.objectLike({ Status: 'ENABLED', TargetCapacity: 100 }),
      ManagedTerminationProtection: 'ENABLED',
      ManagedDraining: 'ENABLED',
    },
  });
  const [[providerId]] = resources(t, 'AWS::ECS::CapacityProvider');
  t.hasResourceProperties('AWS::ECS::ClusterCapacityProviderAssociations', {
    CapacityProviders: Match.arrayWith([{ Ref: providerId }]),
  });
  // The service asks for the provider; scaling (the desired count) drives the instances.
  const service = t.toJSON().Resources[logicalId(stack.workers.service)];
  assert.equal(service.Type, 'AWS::ECS::Service');
  assert.deepEqual(service.Properties.CapacityProviderStrategy, [{ CapacityProvider: { Ref: providerId }, Weight: 1 }]);
  assert.equal(service.Properties.LaunchType, undefined);
  // Created with no task, then its own count (test/deploy-safety.test.ts).
  assert.equal(service.Properties.DesiredCount['Fn::GetAtt'][1], 'DesiredCount');
  assert.ok(service.DependsOn.includes(Object.keys(t.findResources('AWS::ECS::ClusterCapacityProviderAssociations'))[0]));
  t.hasResourceProperties('AWS::ApplicationAutoScaling::ScalableTarget', {
    ScalableDimension: 'ecs:service:DesiredCount',
    ResourceId: Match.objectLike({ 'Fn::Join': Match.arrayWith([Match.arrayWith([{ 'Fn::GetAtt': [logicalId(stack.workers.service), 'Name'] }])]) }),
  });
  assert.equal(workerEnvOf(t).SLUICE_CONCURRENCY, '1');
  // The instance metadata is closed to tasks: the SDK's region comes from the environment.
  assert.deepEqual(workerEnvOf(t).AWS_REGION, { Ref: 'AWS::Region' });
});

function workerEnvOf(t: Template): Record<string, unknown> {
  const [[, def]] = resources(t, 'AWS::ECS::TaskDefinition');
  const worker = def.Properties.ContainerDefinitions.find((c: { Name: string }) => c.Name === 'Worker');
  return Object.fromEntries(worker.Environment.map((e: { Name: string; Value: unknown }) => [e.Name, e.Value]));
}

test('the instances run the ecs gpu-optimised ami from its ssm parameter, encrypted, imdsv2 only', () => {
  const { stack, t } = template(GPU);
  const [[, lt]] = resources(t, 'AWS::EC2::LaunchTemplate');
  const data = lt.Properties.LaunchTemplateData;
  const parameters = t.toJSON().Parameters;
  const ami = parameters[data.ImageId.Ref];
  assert.equal(ami.Type, 'AWS::SSM::Parameter::Value<AWS::EC2::Image::Id>');
  assert.equal(ami.Default, '/aws/service/ecs/optimized-ami/amazon-linux-2023/gpu/recommended/image_id');
  assert.deepEqual(data.BlockDeviceMappings, [
    { DeviceName: '/dev/xvda', Ebs: { DeleteOnTermination: true, Encrypted: true, VolumeSize: 100, VolumeType: 'gp3' } },
  ]);
  assert.deepEqual(data.MetadataOptions, { HttpPutResponseHopLimit: 1, HttpTokens: 'required' });
  assert.equal(data.NetworkInterfaces[0].AssociatePublicIpAddress, true);
  const text = userData(lt);
  assert.ok(text.includes(`ECS_CLUSTER=\${${logicalId(stack.workers.cluster)}}`), text);
  assert.ok(text.includes('ECS_ENABLE_GPU_SUPPORT=true'));
  assert.ok(!text.includes('ECS_ENABLE_SPOT_INSTANCE_DRAINING'), 'on-demand instances are not drained for spot');
  // Amazon Linux 2 on request.
  const al2 = template({ ...GPU, gpu: { instanceTypes: [G5], ami: 'al2' } }).t;
  const [[, lt2]] = resources(al2, 'AWS::EC2::LaunchTemplate');
  assert.equal(al2.toJSON().Parameters[lt2.Properties.LaunchTemplateData.ImageId.Ref].Default, '/aws/service/ecs/optimized-ami/amazon-linux-2/gpu/recommended/image_id');
});

test('gpu spot is a spot asg provider beside the on-demand one, the base on-demand, draining on interruption', () => {
  const { stack, t } = template({ ...GPU, spot: true, spotStrategy: { onDemandBase: 1, onDemandWeight: 1, spotWeight: 2 } });
  const gpu = stack.workers.gpuCapacity!;
  const onDemand = stack.resolve(gpu.onDemand.capacityProviderName);
  const spot = stack.resolve(gpu.spot!.capacityProviderName);
  const service = t.toJSON().Resources[logicalId(stack.workers.service)];
  assert.deepEqual(service.Properties.CapacityProviderStrategy, [
    { CapacityProvider: onDemand, Base: 1, Weight: 1 },
    { CapacityProvider: spot, Weight: 2 },
  ]);
  const groups = Object.fromEntries(resources(t, 'AWS::AutoScaling::AutoScalingGroup').map(([id, g]) => [id, g]));
  const spotGroup = groups[logicalId(gpu.autoScalingGroups[1])];
  assert.deepEqual(spotGroup.Properties.MixedInstancesPolicy.InstancesDistribution, {
    OnDemandBaseCapacity: 0,
    OnDemandPercentageAboveBaseCapacity: 0,
    SpotAllocationStrategy: 'price-capacity-optimized',
  });
  assert.equal(spotGroup.Properties.CapacityRebalance, true);
  // Both groups keep busy instances: protected from scale-in, terminated only once ECS lifts it.
  for (const g of Object.values(groups)) assert.equal(g.Properties.NewInstancesProtectedFromScaleIn, true);
  for (const [, p] of resources(t, 'AWS::ECS::CapacityProvider')) {
    assert.equal(p.Properties.AutoScalingGroupProvider.ManagedTerminationProtection, 'ENABLED');
  }
  const lts = Object.fromEntries(resources(t, 'AWS::EC2::LaunchTemplate'));
  assert.ok(userData(lts[logicalId(gpu.launchTemplates[1])]).includes('ECS_ENABLE_SPOT_INSTANCE_DRAINING=true'));
  assert.ok(!userData(lts[logicalId(gpu.launchTemplates[0])]).includes('ECS_ENABLE_SPOT_INSTANCE_DRAINING'));
  // The worker still holds task scale-in protection while busy.
  const role = stack.workers.taskDefinition.taskRole;
  const policies = Object.values(t.findResources('AWS::IAM::Policy')).filter((p) => j(p.Properties.Roles).includes(logicalId(role)));
  assert.ok(j(policies).includes('ecs:UpdateTaskProtection'));
});

test('gpu workers in private subnets use awsvpc with the workers security group', () => {
  const { stack, t } = template({ ...GPU, existingVpc: PRIVATE_VPC });
  const [[, def]] = resources(t, 'AWS::ECS::TaskDefinition');
  assert.equal(def.Properties.NetworkMode, 'awsvpc');
  const service = t.toJSON().Resources[logicalId(stack.workers.service)];
  const network = service.Properties.NetworkConfiguration.AwsvpcConfiguration;
  assert.deepEqual(network.Subnets, PRIVATE_VPC.subnetIds);
  assert.deepEqual(network.SecurityGroups, [{ 'Fn::GetAtt': [logicalId(stack.workers.securityGroup), 'GroupId'] }]);
  const [[, lt]] = resources(t, 'AWS::EC2::LaunchTemplate');
  assert.equal(lt.Properties.LaunchTemplateData.NetworkInterfaces[0].AssociatePublicIpAddress, false);
});

test('in http mode the model server holds the gpus, reached by its link in bridge mode', () => {
  const { t } = template({
    gpu: { instanceTypes: [G5] },
    workerHandler: { mode: 'http', modelServer: { image: WorkerImage.fromUri('ghcr.io/example/model-server:1'), port: 8081 } },
  });
  const [[, def]] = resources(t, 'AWS::ECS::TaskDefinition');
  const byName = Object.fromEntries(def.Properties.ContainerDefinitions.map((c: { Name: string }) => [c.Name, c]));
  assert.deepEqual(byName.ModelServer.ResourceRequirements, [{ Type: 'GPU', Value: '1' }]);
  assert.equal(byName.Worker.ResourceRequirements, undefined);
  assert.deepEqual(byName.Worker.Links, ['ModelServer:model-server']);
  assert.equal(workerEnvOf(t).SLUICE_MODEL_URL, 'http://model-server:8081');
  // awsvpc: one network for the task, 127.0.0.1 as on Fargate.
  const private_ = template({
    gpu: { instanceTypes: [G5] },
    existingVpc: PRIVATE_VPC,
    workerHandler: { mode: 'http', modelServer: { image: WorkerImage.fromUri('ghcr.io/example/model-server:1') } },
  }).t;
  assert.equal(workerEnvOf(private_).SLUICE_MODEL_URL, 'http://127.0.0.1:8080');
});

test('an image built for gpu workers is built for linux/amd64', () => {
  const app = testApp();
  new SluiceStack(app, 'Gpu', {
    lambdaAssetDir: STUB_LAMBDAS,
    workerImage: WorkerImage.fromDirectory('examples/gpu-onnx'),
    workerHandler: { mode: 'process', command: ['python3', '/app/handler.py'] },
    gpu: { instanceTypes: [G5] },
  });
  const assembly = app.synth();
  const manifest = JSON.parse(fs.readFileSync(path.join(assembly.directory, 'Gpu.assets.json'), 'utf8'));
  const images = Object.values(manifest.dockerImages) as any[];
  assert.equal(images.length, 1);
  assert.equal(images[0].source.platform, 'linux/amd64');
  assert.equal(images[0].source.dockerFile, 'examples/gpu-onnx/Dockerfile');
  assert.ok(fs.existsSync(path.join(REPO, 'examples', 'gpu-onnx', 'Dockerfile')));
});

test('bad gpu props are rejected', () => {
  assert.throws(() => template({ ...GPU, gpu: { instanceTypes: [] } }), /gpu instanceTypes must list at least one instance type/);
  assert.throws(
    () => template({ ...GPU, gpu: { instanceTypes: [new ec2.InstanceType('g5g.xlarge')] } }),
    /gpu instance type g5g.xlarge is not x86_64/,
  );
  assert.throws(() => template({ ...GPU, gpu: { instanceTypes: [G5], gpusPerTask: 0 } }), /gpusPerTask must be an integer from 1 to 16/);
  assert.throws(() => template({ ...GPU, gpu: { instanceTypes: [G5], rootVolumeGiB: 8 } }), /gpu rootVolumeGiB must be an integer from 30/);
  assert.throws(() => template({ ...GPU, gpu: { instanceTypes: [G5], maxInstances: 0 } }), /gpu maxInstances must be a positive integer/);
  assert.throws(() => template({ ...GPU, taskCpu: 64 }), /task cpu must be an integer of at least 128 units on gpu instances/);
});

test('the gpu option, on-demand and spot, passes cloudformation validation and the AwsSolutions checks', () => {
  const app = testApp({}, true);
  new SluiceStack(app, 'GpuSpot', {
    lambdaAssetDir: STUB_LAMBDAS,
    workerImage: WorkerImage.fromUri('123456789012.dkr.ecr.us-east-1.amazonaws.com/sluice-gpu:1'),
    workerHandler: { mode: 'process', command: ['python3', '/app/handler.py'] },
    gpu: { instanceTypes: [G5, G6] },
    spot: true,
  });
  new SluiceStack(app, 'GpuPrivate', {
    lambdaAssetDir: STUB_LAMBDAS,
    existingVpc: PRIVATE_VPC,
    workerImage: WorkerImage.fromUri('123456789012.dkr.ecr.us-east-1.amazonaws.com/sluice-gpu:1'),
    workerHandler: { mode: 'http', modelServer: { image: WorkerImage.fromUri('123456789012.dkr.ecr.us-east-1.amazonaws.com/model:1') } },
    gpu: { instanceTypes: [G6], ami: 'al2' },
  });
  Validations.of(app).addPlugins(new AwsSolutionsChecks(app));
  assert.doesNotThrow(() => app.synth());
});
