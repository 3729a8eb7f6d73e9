import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import * as ec2 from 'aws-cdk-lib/aws-ec2';
import { CpuArchitecture, resolveCapacity } from '../lib/capacity';
import { SluiceStack, SluiceStackProps } from '../lib/sluice-stack';
import { WorkerImage } from '../lib/worker-image';
import { STUB_LAMBDAS, template, testApp } from './helpers';

// Every combination of capacity, architecture and subnets the props allow, and what ECS makes of
// it: the row is what resolveCapacity must answer, or the rule its refusal must name.
const ALLOWED: [gpu: boolean, spot: boolean, arch: CpuArchitecture | undefined, publicSubnets: boolean, launch: string, arch: string, network: string][] = [
  [false, false, undefined, true, 'FARGATE', 'arm64', 'awsvpc'],
  [false, false, 'arm64', false, 'FARGATE', 'arm64', 'awsvpc'],
  [false, false, 'x86_64', true, 'FARGATE', 'x86_64', 'awsvpc'],
  [false, true, undefined, true, 'FARGATE', 'x86_64', 'awsvpc'],
  [false, true, 'x86_64', false, 'FARGATE', 'x86_64', 'awsvpc'],
  [true, false, undefined, true, 'EC2', 'x86_64', 'bridge'],
  [true, false, 'x86_64', false, 'EC2', 'x86_64', 'awsvpc'],
  [true, true, undefined, true, 'EC2', 'x86_64', 'bridge'],
  [true, true, undefined, false, 'EC2', 'x86_64', 'awsvpc'],
];

test('each allowed capacity and architecture gets the launch type, platform and network mode ecs supports', () => {
  for (const [gpu, spot, architecture, publicSubnets, launch, arch, network] of ALLOWED) {
    const c = resolveCapacity({ gpu, spot, architecture, publicSubnets });
    const row = JSON.stringify({ gpu, spot, architecture, publicSubnets });
    assert.equal(c.launchType, launch, row);
    assert.equal(c.architecture, arch, row);
    assert.equal(c.networkMode, network, row);
    assert.equal(c.platform.platform, arch === 'arm64' ? 'linux/arm64' : 'linux/amd64', row);
  }
});

test('arm64 with fargate spot is refused, naming ecs rule and the fix', () => {
  for (const publicSubnets of [true, false]) {
    assert.throws(
      () => resolveCapacity({ gpu: false, spot: true, architecture: 'arm64', publicSubnets }),
      /ARM64 architecture don't support the Fargate Spot capacity provider.*fargate-capacity-providers\.html.*leave cpuArchitecture unset/,
    );
  }
});

test('arm64 gpu workers are refused: the ecs gpu ami is x86_64 only', () => {
  for (const spot of [true, false]) {
    assert.throws(
      () => resolveCapacity({ gpu: true, spot, architecture: 'arm64', publicSubnets: true }),
      /cpuArchitecture arm64 cannot run gpu workers.*x86_64 only.*ecs-gpu\.html/,
    );
  }
  assert.throws(
    () => resolveCapacity({ gpu: false, spot: false, architecture: 'armv7' as CpuArchitecture, publicSubnets: true }),
    /cpuArchitecture must be arm64 or x86_64, got "armv7"/,
  );
});

test('fargate spot runs x86_64 tasks, built for linux/amd64, on both fargate providers', () => {
  const { t } = template({ spot: true });
  t.hasResourceProperties('AWS::ECS::TaskDefinition', {
    RuntimePlatform: { CpuArchitecture: 'X86_64', OperatingSystemFamily: 'LINUX' },
  });
  const app = testApp();
  new SluiceStack(app, 'Spot', { lambdaAssetDir: STUB_LAMBDAS, spot: true });
  const manifest = JSON.parse(fs.readFileSync(path.join(app.synth().directory, 'Spot.assets.json'), 'utf8'));
  const images = Object.values(manifest.dockerImages) as any[];
  assert.equal(images.length, 1);
  assert.equal(images[0].source.platform, 'linux/amd64');
  assert.equal(images[0].source.dockerFile, 'worker/Dockerfile');
});

test('the stack refuses arm64 with spot, and arm64 gpu workers', () => {
  const stack = (props: SluiceStackProps) =>
    new SluiceStack(testApp(), 'Refused', {
      lambdaAssetDir: STUB_LAMBDAS,
      workerImage: WorkerImage.fromUri('public.ecr.aws/docker/library/busybox:stable'),
      workerHandler: { mode: 'demo' },
      ...props,
    });
  assert.throws(() => stack({ spot: true, cpuArchitecture: 'arm64' }), /Fargate Spot capacity provider/);
  assert.throws(
    () => stack({ cpuArchitecture: 'arm64', gpu: { instanceTypes: [new ec2.InstanceType('g5.xlarge')] } }),
    /cannot run gpu workers/,
  );
  // x86_64 on on-demand Fargate, asked for.
  template({ cpuArchitecture: 'x86_64' }).t.hasResourceProperties('AWS::ECS::TaskDefinition', {
    RuntimePlatform: { CpuArchitecture: 'X86_64', OperatingSystemFamily: 'LINUX' },
  });
});
