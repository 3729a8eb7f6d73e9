/**
 * The stack's deploy-time helper (`lib/deploy-helper/index.js`): one custom resource provider,
 * shared by the worker service's desired count and the GPU groups' drain on delete.
 */
import * as path from 'node:path';
import { ArnFormat, CustomResource, CustomResourceProvider, CustomResourceProviderRuntime, Duration, Stack, Token } from 'aws-cdk-lib';
import * as autoscaling from 'aws-cdk-lib/aws-autoscaling';
import * as ecs from 'aws-cdk-lib/aws-ecs';
import { Construct } from 'constructs';

const PROVIDER_ID = 'SluiceDeployHelper';

function provider(scope: Construct): CustomResourceProvider {
  return CustomResourceProvider.getOrCreateProvider(Stack.of(scope), PROVIDER_ID, {
    codeDirectory: path.join(__dirname, 'deploy-helper'),
    runtime: CustomResourceProviderRuntime.NODEJS_22_X,
    timeout: Duration.minutes(2),
    description: 'sluice: the worker service desired count at deploy time, and the GPU groups drain on delete',
  });
}

/** Properties of {@link desiredCount}. */
export interface DesiredCountProps {
  readonly cluster: ecs.ICluster;
  /** The service's task definition: a new one re-reads the service's count. */
  readonly taskDefinition: ecs.TaskDefinition;
  /** The count while the cluster has no service yet (its creation). */
  readonly initial: number;
  /** The least count a deploy leaves: 1 starts a task of the new task definition. */
  readonly floor: number;
}

/**
 * The worker service's DesiredCount: `initial` when the service is created, then its own count
 * (at least `floor`) on every deploy that changes its task definition, so no deploy resets what
 * the scaling set. A token for `desiredCount`.
 */
export function desiredCount(scope: Construct, id: string, props: DesiredCountProps): number {
  const p = provider(scope);
  const stack = Stack.of(scope);
  p.addToRolePolicy({
    Effect: 'Allow',
    Action: ['ecs:ListServices'],
    Resource: '*',
    Condition: { ArnEquals: { 'ecs:cluster': props.cluster.clusterArn } },
  });
  p.addToRolePolicy({
    Effect: 'Allow',
    Action: ['ecs:DescribeServices'],
    Resource: stack.formatArn({ service: 'ecs', resource: 'service', resourceName: `${props.cluster.clusterName}/*` }),
  });
  const resource = new CustomResource(scope, id, {
    serviceToken: p.serviceToken,
    resourceType: 'Custom::SluiceDesiredCount',
    properties: {
      Cluster: props.cluster.clusterName,
      TaskDefinition: props.taskDefinition.taskDefinitionArn,
      Initial: props.initial,
      Floor: props.floor,
    },
  });
  return Token.asNumber(resource.getAtt('DesiredCount'));
}

/**
 * On delete, lifts the scale-in protection of the group's instances and sets it to zero, so that
 * CloudFormation's deletion of the group (after this, which refers to it) completes. Make the
 * service depend on the returned resource, so it is deleted first.
 */
export function groupDrain(scope: Construct, id: string, group: autoscaling.AutoScalingGroup): CustomResource {
  const p = provider(scope);
  const stack = Stack.of(scope);
  p.addToRolePolicy({ Effect: 'Allow', Action: ['autoscaling:DescribeAutoScalingGroups'], Resource: '*' });
  p.addToRolePolicy({
    Effect: 'Allow',
    Action: ['autoscaling:SetInstanceProtection', 'autoscaling:UpdateAutoScalingGroup'],
    Resource: stack.formatArn({
      service: 'autoscaling',
      resource: 'autoScalingGroup',
      resourceName: `*:autoScalingGroupName/${group.autoScalingGroupName}`,
      arnFormat: ArnFormat.COLON_RESOURCE_NAME,
    }),
  });
  return new CustomResource(scope, id, {
    serviceToken: p.serviceToken,
    resourceType: 'Custom::SluiceGroupDrain',
    properties: { GroupName: group.autoScalingGroupName },
  });
}
