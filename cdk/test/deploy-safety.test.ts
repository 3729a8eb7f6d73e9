import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import * as ec2 from 'aws-cdk-lib/aws-ec2';
import { SluiceStackProps } from '../lib/sluice-stack';
import { logicalId, template } from './helpers';

const GPU: SluiceStackProps = {
  gpu: { instanceTypes: [new ec2.InstanceType('g5.xlarge'), new ec2.InstanceType('g6.xlarge')] },
  workerHandler: { mode: 'process', command: ['python3', '/app/handler.py'] },
};

type T = ReturnType<typeof template>['t'];

/** The service's resource, and the desired-count custom resource its DesiredCount comes from. */
function serviceAndCount(t: T): { service: any; count: any; countId: string } {
  const [service] = Object.values(t.findResources('AWS::ECS::Service'));
  const countId = service.Properties.DesiredCount?.['Fn::GetAtt']?.[0];
  assert.ok(countId !== undefined, 'DesiredCount comes from the desired-count custom resource');
  assert.deepEqual(service.Properties.DesiredCount, { 'Fn::GetAtt': [countId, 'DesiredCount'] });
  const count = t.toJSON().Resources[countId];
  assert.equal(count.Type, 'Custom::SluiceDesiredCount');
  return { service, count, countId };
}

test('gpu workers are created with no task: the first deploy waits on no instance, the first job starts capacity', () => {
  const { stack, t } = template(GPU);
  const { count } = serviceAndCount(t);
  assert.equal(count.Properties.Initial, 0);
  // A GPU deploy does not start an instance to prove its image unless asked to.
  assert.equal(count.Properties.Floor, 0);
  assert.deepEqual(count.Properties.Cluster, { Ref: logicalId(stack.workers.cluster) });
  // A new task definition re-reads the service's count, so no deploy resets the scaled count.
  assert.deepEqual(count.Properties.TaskDefinition, { Ref: logicalId(stack.workers.taskDefinition) });
  const proving = serviceAndCount(template({ ...GPU, deployProvesImage: true }).t).count;
  assert.equal(proving.Properties.Floor, 1);
});

test('on fargate the service starts with one task and every deploy runs one of the new image before it completes', () => {
  const { t } = template();
  const { service, count } = serviceAndCount(t);
  assert.equal(count.Properties.Initial, 1);
  assert.equal(count.Properties.Floor, 1);
  // The circuit breaker rolls a deploy back when the new tasks do not turn healthy.
  assert.deepEqual(service.Properties.DeploymentConfiguration.DeploymentCircuitBreaker, { Enable: true, Rollback: true });
  assert.equal(serviceAndCount(template({ deployProvesImage: false }).t).count.Properties.Floor, 0);
});

test('destroy: each gpu group is drained (protection off, zero instances) after the service and before the group', () => {
  for (const spot of [false, true]) {
    const { stack, t } = template({ ...GPU, spot });
    const resources = t.toJSON().Resources;
    const serviceId = logicalId(stack.workers.service);
    const groups = stack.workers.gpuCapacity!.autoScalingGroups;
    assert.equal(groups.length, spot ? 2 : 1);
    for (const group of groups) {
      const groupId = logicalId(group);
      const drains = Object.entries(resources).filter(
        ([, r]: [string, any]) => r.Type === 'Custom::SluiceGroupDrain' && r.Properties.GroupName?.Ref === groupId,
      );
      assert.equal(drains.length, 1, `one drain for ${groupId}`);
      const [drainId] = drains[0];
      // CloudFormation deletes in reverse dependency order: the service first (it depends on the
      // drain), then the drain (which lifts protection and empties the group), then the group
      // (the drain refers to it).
      assert.ok(resources[serviceId].DependsOn.includes(drainId), 'the service depends on the drain');
    }
  }
});

test('the operator hears of tasks that fail to start, stop right after starting, and of failed deployments', () => {
  const { stack, t } = template();
  const topic = { Ref: logicalId(stack.observability.topic) };
  const rules = Object.values(t.findResources('AWS::Events::Rule')).filter((r: any) => r.Properties.EventPattern?.source?.[0] === 'aws.ecs');
  assert.equal(rules.length, 2);
  const byType = (type: string) => rules.find((r: any) => r.Properties.EventPattern['detail-type'].includes(type)) as any;
  const service = byType('ECS Service Action');
  assert.deepEqual(service.Properties.EventPattern['detail-type'], ['ECS Service Action', 'ECS Deployment State Change']);
  assert.deepEqual(service.Properties.EventPattern.resources, [{ Ref: logicalId(stack.workers.service) }]);
  assert.deepEqual(service.Properties.EventPattern.detail.eventName.sort(), [
    'SERVICE_DEPLOYMENT_FAILED',
    'SERVICE_TASK_CONFIGURATION_FAILURE',
    'SERVICE_TASK_PLACEMENT_FAILURE',
    'SERVICE_TASK_START_IMPAIRED',
  ]);
  const task = byType('ECS Task State Change');
  assert.deepEqual(task.Properties.EventPattern.detail.lastStatus, ['STOPPED']);
  assert.deepEqual(task.Properties.EventPattern.detail.stopCode.sort(), ['EssentialContainerExited', 'TaskFailedToStart']);
  assert.deepEqual(task.Properties.EventPattern.detail.clusterArn, [{ 'Fn::GetAtt': [logicalId(stack.workers.cluster), 'Arn'] }]);
  for (const r of rules) assert.deepEqual((r as any).Properties.Targets.map((x: any) => x.Arn), [topic]);
  // EventBridge may encrypt with the topic's key.
  const [key] = Object.values(t.findResources('AWS::KMS::Key'));
  const statements = (key as any).Properties.KeyPolicy.Statement;
  assert.ok(statements.some((s: any) => s.Principal?.Service === 'events.amazonaws.com' && s.Action.includes('kms:GenerateDataKey*')));
});

test('tasks and instances in public subnets come after the internet route and go before it', () => {
  for (const props of [{}, GPU, { ...GPU, spot: true }]) {
    const { stack, t } = template(props);
    const resources = t.toJSON().Resources;
    const routes = Object.entries(resources)
      .filter(([, r]: [string, any]) => r.Type === 'AWS::EC2::Route' && r.Properties.GatewayId !== undefined)
      .map(([id]) => id);
    assert.equal(routes.length, 2, 'a default route per public subnet');
    // Created after the routes (a first task pulls its image over them); deleted before them, so
    // the internet gateway is never detached while a task or an instance holds a public address.
    const dependents = [stack.workers.service, ...(stack.workers.gpuCapacity?.autoScalingGroups ?? [])];
    for (const d of dependents) {
      const dependsOn: string[] = resources[logicalId(d)].DependsOn ?? [];
      for (const route of routes) assert.ok(dependsOn.includes(route), `${logicalId(d)} depends on ${route}`);
    }
  }
});
