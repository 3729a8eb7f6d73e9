import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import { App, Duration, RemovalPolicy } from 'aws-cdk-lib';
import { stackConfigFromContext } from '../lib/config';
import { policyWith, template } from './helpers';

type Template = ReturnType<typeof template>['t'];

/** The worker container's environment (the task's first container is the worker). */
function workerEnv(t: Template): Record<string, unknown> {
  const def = Object.values(t.findResources('AWS::ECS::TaskDefinition'))[0];
  const worker = def.Properties.ContainerDefinitions.find((c: { Name: string }) => c.Name === 'Worker');
  return Object.fromEntries(worker.Environment.map((e: { Name: string; Value: unknown }) => [e.Name, e.Value]));
}

const config = (context: Record<string, unknown>) => stackConfigFromContext(new App({ context }).node).props;

test("the workers run as many jobs at once as the scaling policy's jobs_per_task", () => {
  // The policy file says 1: so do the workers, whatever the Workers construct's own default.
  assert.equal(workerEnv(template().t).SLUICE_CONCURRENCY, '1');
  const four = policyWith({ jobs_per_task: 4 });
  assert.equal(workerEnv(template({ scalingPolicyFile: four }).t).SLUICE_CONCURRENCY, '4');
  assert.equal(workerEnv(template({ scalingPolicyFile: four, workerConcurrency: 4 }).t).SLUICE_CONCURRENCY, '4');
  assert.throws(
    () => template({ workerConcurrency: 4 }),
    /workerConcurrency \(4\) differs from the scaling policy's jobs_per_task \(1\): set jobs_per_task in the scaling policy file .* to the worker's concurrency, 4/,
  );
  assert.throws(() => template({ scalingPolicyFile: four, workerConcurrency: 2 }), /workerConcurrency \(2\) differs .* jobs_per_task \(4\)/);
});

test('a worker stops taking jobs at its maximum age, six hours unless told', () => {
  assert.equal(workerEnv(template().t).SLUICE_MAX_TASK_AGE_SECONDS, String(6 * 3600));
  assert.equal(workerEnv(template({ maxTaskAge: Duration.hours(2) }).t).SLUICE_MAX_TASK_AGE_SECONDS, '7200');
  assert.equal(config({ maxTaskAgeSeconds: '5400' }).maxTaskAge?.toSeconds(), 5400);
  assert.throws(() => template({ maxTaskAge: Duration.seconds(30) }), /maxTaskAge must be from 60 seconds to 30 days \(2592000 s\), got 30/);
  assert.throws(() => template({ maxTaskAge: Duration.days(31) }), /maxTaskAge must be from 60 seconds to 30 days/);
  assert.equal(workerEnv(template({ maxTaskAge: Duration.days(30) }).t).SLUICE_MAX_TASK_AGE_SECONDS, '2592000');
  assert.throws(() => template({ maxTaskAge: Duration.millis(90_500) }), /maxTaskAge must be whole seconds/);
  assert.throws(() => config({ maxTaskAgeSeconds: 'a day' }), /context maxTaskAgeSeconds must be a number/);
});

test('every log group goes with the stack by default, or every one stays', () => {
  const policies = (t: Template) => Object.values(t.findResources('AWS::Logs::LogGroup')).map((g) => [g.DeletionPolicy, g.UpdateReplacePolicy]);
  // The functions' (submit, status, backlog), the workers', the access logs and the flow log.
  const destroyed = policies(template().t);
  assert.ok(destroyed.length >= 6, `only ${destroyed.length} log groups`);
  for (const p of destroyed) assert.deepEqual(p, ['Delete', 'Delete']);
  for (const p of policies(template({ logRemovalPolicy: RemovalPolicy.RETAIN }).t)) assert.deepEqual(p, ['Retain', 'Retain']);
  assert.equal(config({ logRemovalPolicy: 'retain' }).logRemovalPolicy, RemovalPolicy.RETAIN);
  assert.equal(config({ logRemovalPolicy: 'destroy' }).logRemovalPolicy, RemovalPolicy.DESTROY);
  assert.throws(() => config({ logRemovalPolicy: 'keep' }), /context logRemovalPolicy must be destroy or retain, got keep/);
  assert.throws(() => template({ logRemovalPolicy: RemovalPolicy.SNAPSHOT }), /logRemovalPolicy must be RemovalPolicy.DESTROY or RemovalPolicy.RETAIN/);
});

test("the new vpc's default security group is restricted", () => {
  const { t } = template();
  const restrict = Object.values(t.findResources('Custom::VpcRestrictDefaultSG'));
  assert.equal(restrict.length, 1);
  assert.deepEqual(restrict[0].Properties.DefaultSecurityGroupId, { 'Fn::GetAtt': [Object.keys(t.findResources('AWS::EC2::VPC'))[0], 'DefaultSecurityGroup'] });
  // An existing vpc is the owner's to restrict.
  const existing = template({
    existingVpc: { vpcId: 'vpc-0123456789abcdef0', subnetIds: ['subnet-0123456789abcdef0'], availabilityZones: ['us-east-1a'] },
  }).t;
  assert.equal(Object.keys(existing.findResources('Custom::VpcRestrictDefaultSG')).length, 0);
});

test('the api throttles each route at the configured rate', () => {
  const { t } = template({ apiRateLimit: 20, apiBurstLimit: 40 });
  t.hasResourceProperties('AWS::ApiGatewayV2::Stage', {
    StageName: '$default',
    DefaultRouteSettings: { ThrottlingRateLimit: 20, ThrottlingBurstLimit: 40 },
  });
});

test('spot and gpu context is parsed and validated', () => {
  const spot = config({ spot: 'true', spotOnDemandBase: '2', spotOnDemandWeight: '0', spotWeight: '5' });
  assert.deepEqual(spot.spotStrategy, { onDemandBase: 2, onDemandWeight: 0, spotWeight: 5 });
  assert.equal(config({ spot: true }).spotStrategy, undefined);
  assert.throws(() => config({ spotWeight: '2' }), /context spotWeight needs spot=true/);
  assert.throws(() => config({ spot: 'true', spotOnDemandBase: '1.5' }), /context spotOnDemandBase must be a whole number/);

  const gpu = config({ gpuInstanceTypes: 'g5.xlarge, g6.xlarge', gpusPerTask: '1', gpuMaxInstances: '4', gpuRootVolumeGiB: '200', gpuAmi: 'al2' }).gpu!;
  assert.deepEqual(gpu.instanceTypes.map(String), ['g5.xlarge', 'g6.xlarge']);
  assert.equal(gpu.gpusPerTask, 1);
  assert.equal(gpu.maxInstances, 4);
  assert.equal(gpu.rootVolumeGiB, 200);
  assert.equal(gpu.ami, 'al2');
  assert.deepEqual(config({ gpuInstanceTypes: ['g6.2xlarge'] }).gpu!.instanceTypes.map(String), ['g6.2xlarge']);
  assert.equal(config({}).gpu, undefined);
  assert.throws(() => config({ gpusPerTask: '1' }), /context gpusPerTask needs gpuInstanceTypes/);
  assert.throws(() => config({ gpuInstanceTypes: 'g5 xlarge' }), /context gpuInstanceTypes must be instance types like g5.xlarge/);
  assert.throws(() => config({ gpuInstanceTypes: 'g5.xlarge', gpuAmi: 'ubuntu' }), /context gpuAmi must be al2023 or al2, got ubuntu/);
});
