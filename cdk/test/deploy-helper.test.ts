import { after, before, test } from 'node:test';
import * as assert from 'node:assert/strict';
import {
  AutoScalingClient,
  CreateAutoScalingGroupCommand,
  CreateLaunchConfigurationCommand,
  DescribeAutoScalingGroupsCommand,
} from '@aws-sdk/client-auto-scaling';
import { CreateClusterCommand, CreateServiceCommand, ECSClient, RegisterTaskDefinitionCommand, UpdateServiceCommand } from '@aws-sdk/client-ecs';
import { Emulator, startEmulator } from './emulator';

// The deploy-time custom resources' handler, run against the emulator as Lambda would run it.
// eslint-disable-next-line @typescript-eslint/no-require-imports
const helper = require('../lib/deploy-helper/index.js');

let emulator: Emulator;
before(async () => {
  emulator = await startEmulator();
});
after(() => emulator?.stop());

const event = (type: string, requestType: string, props: Record<string, string>, physical?: string) => ({
  ResourceType: type,
  RequestType: requestType,
  ResourceProperties: props,
  PhysicalResourceId: physical,
});

test('the service is created at the initial count, then keeps its own count, raised to the floor on a deploy', async () => {
  const ecs = new ECSClient({});
  const cluster = 'helper-cluster';
  await ecs.send(new CreateClusterCommand({ clusterName: cluster }));
  const props = { Cluster: cluster, Initial: '0', Floor: '1', TaskDefinition: 'arn:td:1' };
  // No service yet (the stack is being created): the initial count, zero for GPU workers.
  const created = await helper.handler(event('Custom::SluiceDesiredCount', 'Create', props));
  assert.equal(created.Data.DesiredCount, 0);

  await ecs.send(
    new RegisterTaskDefinitionCommand({
      family: 'worker',
      containerDefinitions: [{ name: 'worker', image: 'busybox', memory: 128 }],
    }),
  );
  await ecs.send(new CreateServiceCommand({ cluster, serviceName: 'workers', taskDefinition: 'worker', desiredCount: 3 }));
  // A deploy while the backlog scaled the service to 3 keeps 3: no reset to a template value.
  const update = (floor: string) =>
    helper.handler(event('Custom::SluiceDesiredCount', 'Update', { ...props, Floor: floor, TaskDefinition: 'arn:td:2' }, created.PhysicalResourceId));
  assert.equal((await update('1')).Data.DesiredCount, 3);
  // Parked at zero: a deploy that proves its image starts one task; one that does not stays at zero.
  await ecs.send(new UpdateServiceCommand({ cluster, service: 'workers', desiredCount: 0 }));
  assert.equal((await update('1')).Data.DesiredCount, 1);
  assert.equal((await update('0')).Data.DesiredCount, 0);
  // Deleting the custom resource changes nothing.
  const deleted = await helper.handler(event('Custom::SluiceDesiredCount', 'Delete', props, created.PhysicalResourceId));
  assert.equal(deleted.PhysicalResourceId, created.PhysicalResourceId);
  await assert.rejects(
    helper.handler(event('Custom::SluiceDesiredCount', 'Create', { ...props, Floor: '-1' })),
    /Floor must be a whole number/,
  );
});

test('deleting the drain lifts every instance\'s scale-in protection and empties the group', async () => {
  const asg = new AutoScalingClient({});
  const group = 'gpu-group';
  await asg.send(new CreateLaunchConfigurationCommand({ LaunchConfigurationName: 'gpu', ImageId: 'ami-12c6146b', InstanceType: 'g5.xlarge' }));
  await asg.send(
    new CreateAutoScalingGroupCommand({
      AutoScalingGroupName: group,
      LaunchConfigurationName: 'gpu',
      MinSize: 2,
      MaxSize: 3,
      DesiredCapacity: 2,
      AvailabilityZones: ['us-east-1a'],
      NewInstancesProtectedFromScaleIn: true,
    }),
  );
  const describe = async () =>
    (await asg.send(new DescribeAutoScalingGroupsCommand({ AutoScalingGroupNames: [group] }))).AutoScalingGroups![0];
  const before = await describe();
  assert.equal(before.Instances!.length, 2);
  assert.ok(before.Instances!.every((i) => i.ProtectedFromScaleIn), 'instances start protected, as ECS keeps them');

  // Create and update do nothing.
  const created = await helper.handler(event('Custom::SluiceGroupDrain', 'Create', { GroupName: group }));
  assert.equal((await describe()).DesiredCapacity, 2);
  await helper.handler(event('Custom::SluiceGroupDrain', 'Delete', { GroupName: group }, created.PhysicalResourceId));
  const drained = await describe();
  assert.equal(drained.DesiredCapacity, 0);
  assert.equal(drained.MinSize, 0);
  assert.equal(drained.NewInstancesProtectedFromScaleIn, false);
  assert.ok((drained.Instances ?? []).every((i) => !i.ProtectedFromScaleIn), 'no instance holds the group\'s deletion');
  // A group already gone (a retried delete) is no error.
  await helper.handler(event('Custom::SluiceGroupDrain', 'Delete', { GroupName: 'gone' }, 'gone/drain'));
});
