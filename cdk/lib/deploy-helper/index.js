/**
 * The stack's deploy-time helper, a custom resource provider (CDK's entry point sends the answer
 * to CloudFormation; this file only decides it). Plain JavaScript: Lambda runs it as it is, with
 * the AWS SDK for JavaScript v3 of its Node.js runtime.
 *
 * Custom::SluiceDesiredCount - the worker service's DesiredCount. ECS creates a service without
 *   one at one task, and CloudFormation resets a service to a template value on updates; this
 *   answers `Initial` while the cluster has no service yet, then the service's own desired count,
 *   at least `Floor` (1 makes a deploy start a task of the new task definition, which must turn
 *   healthy before the deploy completes).
 * Custom::SluiceGroupDrain - on delete, lifts the scale-in protection of the Auto Scaling group's
 *   instances (ECS managed termination protection keeps it on while they run tasks, and
 *   CloudFormation then waits on the group for ever) and sets it to zero, so the group's own
 *   deletion, which comes after, completes.
 */
'use strict';

const { ECSClient, ListServicesCommand, DescribeServicesCommand } = require('@aws-sdk/client-ecs');
const {
  AutoScalingClient,
  DescribeAutoScalingGroupsCommand,
  SetInstanceProtectionCommand,
  UpdateAutoScalingGroupCommand,
} = require('@aws-sdk/client-auto-scaling');

/** A whole number from a resource property (CloudFormation passes strings). */
function whole(props, name) {
  const n = Number(props[name]);
  if (!Number.isInteger(n) || n < 0) throw new Error(`${name} must be a whole number, got ${JSON.stringify(props[name])}`);
  return n;
}

async function desiredCount(event, ecs) {
  const p = event.ResourceProperties;
  const physical = `${p.Cluster}/desired-count`;
  if (event.RequestType === 'Delete') return { PhysicalResourceId: event.PhysicalResourceId };
  const initial = whole(p, 'Initial');
  const floor = whole(p, 'Floor');
  // The stack's cluster holds its one service (and, for a while after a replacement, the old one
  // draining): the count of the active ones.
  const arns = (await ecs.send(new ListServicesCommand({ cluster: p.Cluster, maxResults: 10 }))).serviceArns ?? [];
  const { services } =
    arns.length === 0 ? { services: [] } : await ecs.send(new DescribeServicesCommand({ cluster: p.Cluster, services: arns }));
  const active = (services ?? []).filter((s) => s.status === 'ACTIVE');
  const count = active.length === 0 ? initial : Math.max(floor, ...active.map((s) => s.desiredCount ?? 0));
  return { PhysicalResourceId: physical, Data: { DesiredCount: count } };
}

async function drain(event, autoscaling) {
  const p = event.ResourceProperties;
  if (event.RequestType !== 'Delete') return { PhysicalResourceId: `${p.GroupName}/drain` };
  const { AutoScalingGroups: groups } = await autoscaling.send(
    new DescribeAutoScalingGroupsCommand({ AutoScalingGroupNames: [p.GroupName] }),
  );
  const group = (groups ?? [])[0];
  if (group === undefined) return { PhysicalResourceId: event.PhysicalResourceId };
  const ids = (group.Instances ?? []).map((i) => i.InstanceId);
  // SetInstanceProtection takes at most 50 instances per call.
  for (let i = 0; i < ids.length; i += 50) {
    await autoscaling.send(
      new SetInstanceProtectionCommand({
        AutoScalingGroupName: p.GroupName,
        InstanceIds: ids.slice(i, i + 50),
        ProtectedFromScaleIn: false,
      }),
    );
  }
  await autoscaling.send(
    new UpdateAutoScalingGroupCommand({
      AutoScalingGroupName: p.GroupName,
      MinSize: 0,
      DesiredCapacity: 0,
      NewInstancesProtectedFromScaleIn: false,
    }),
  );
  return { PhysicalResourceId: event.PhysicalResourceId };
}

exports.handler = async (event) => {
  switch (event.ResourceType) {
    case 'Custom::SluiceDesiredCount':
      return desiredCount(event, new ECSClient({}));
    case 'Custom::SluiceGroupDrain':
      return drain(event, new AutoScalingClient({}));
    default:
      throw new Error(`unknown resource type ${event.ResourceType}`);
  }
};
