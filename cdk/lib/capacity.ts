/**
 * Where the worker tasks run: the launch type, the CPU architecture (and so the image platform)
 * and the network mode, decided from the props in one place, with every combination ECS does not
 * support refused at synth with the rule it breaks.
 *
 * The combinations (each rests on ECS's documentation, linked beside its rule):
 *
 * | capacity | architecture | network mode |
 * | --- | --- | --- |
 * | Fargate, on-demand | ARM64 (default) or X86_64 | awsvpc |
 * | Fargate with Fargate Spot | X86_64 (default); ARM64 refused | awsvpc |
 * | GPU instances (EC2), on-demand or with a Spot group | X86_64; ARM64 refused | bridge in public subnets, awsvpc in private ones |
 */
import { Platform } from 'aws-cdk-lib/aws-ecr-assets';
import * as ecs from 'aws-cdk-lib/aws-ecs';

/** The task's CPU architecture. */
export type CpuArchitecture = 'arm64' | 'x86_64';

/** ECS's documentation for each rule below. */
export const CAPACITY_DOCS = {
  fargateSpot: 'https://docs.aws.amazon.com/AmazonECS/latest/developerguide/fargate-capacity-providers.html',
  fargateArm64: 'https://docs.aws.amazon.com/AmazonECS/latest/developerguide/ecs-arm64.html',
  fargateNetwork: 'https://docs.aws.amazon.com/AmazonECS/latest/developerguide/fargate-task-networking.html',
  gpu: 'https://docs.aws.amazon.com/AmazonECS/latest/developerguide/ecs-gpu.html',
  awsvpcOnEc2: 'https://docs.aws.amazon.com/AmazonECS/latest/developerguide/task-networking-awsvpc.html',
  strategy: 'https://docs.aws.amazon.com/AmazonECS/latest/developerguide/cluster-capacity-providers.html',
} as const;

/** What decides where the tasks run. */
export interface CapacityRequest {
  /** GPU instances (an EC2 Auto Scaling group capacity provider) instead of Fargate. */
  readonly gpu: boolean;
  /** Spot capacity beside the on-demand base. */
  readonly spot: boolean;
  /**
   * The architecture asked for.
   *
   * @default - ARM64 on Fargate on-demand; X86_64 with Fargate Spot and on GPU instances
   */
  readonly architecture?: CpuArchitecture;
  /** The tasks' subnets are public (no NAT gateway): they need public IPs for their outbound calls. */
  readonly publicSubnets: boolean;
}

/** Where the tasks run, as the task definition and the image build need it. */
export interface Capacity {
  readonly launchType: 'FARGATE' | 'EC2';
  readonly architecture: CpuArchitecture;
  readonly networkMode: 'awsvpc' | 'bridge';
  /** The platform images are built for (and a registry image needs a variant of). */
  readonly platform: Platform;
  readonly cpuArchitecture: ecs.CpuArchitecture;
}

/** Decides the launch type, architecture and network mode; throws on a combination ECS refuses. */
export function resolveCapacity(req: CapacityRequest): Capacity {
  const a = req.architecture;
  if (a !== undefined && a !== 'arm64' && a !== 'x86_64') {
    throw new Error(`cpuArchitecture must be arm64 or x86_64, got ${JSON.stringify(a)}`);
  }
  let architecture: CpuArchitecture;
  let launchType: Capacity['launchType'];
  let networkMode: Capacity['networkMode'];
  if (req.gpu) {
    if (a === 'arm64') {
      throw new Error(
        'cpuArchitecture arm64 cannot run gpu workers: they run on the ECS GPU-optimised AMI, which is x86_64 only ' +
          `(${CAPACITY_DOCS.gpu}); leave cpuArchitecture unset or set it to x86_64, and build the image for linux/amd64`,
      );
    }
    architecture = 'x86_64';
    launchType = 'EC2';
    // A task in awsvpc mode on EC2 gets an ENI without a public IP: in public subnets without a
    // NAT gateway it could reach nothing, so it shares the instance's network there (bridge).
    networkMode = req.publicSubnets ? 'bridge' : 'awsvpc';
  } else {
    if (req.spot && a === 'arm64') {
      throw new Error(
        'spot with cpuArchitecture arm64 is not supported by ECS: "Linux tasks with the ARM64 architecture don\'t ' +
          `support the Fargate Spot capacity provider" (${CAPACITY_DOCS.fargateSpot}); leave cpuArchitecture unset ` +
          '(Spot then runs x86_64 tasks, their image built for linux/amd64) or set it to x86_64, or turn spot off',
      );
    }
    architecture = a ?? (req.spot ? 'x86_64' : 'arm64');
    launchType = 'FARGATE';
    // Fargate supports the awsvpc network mode only.
    networkMode = 'awsvpc';
  }
  return {
    launchType,
    architecture,
    networkMode,
    platform: architecture === 'arm64' ? Platform.LINUX_ARM64 : Platform.LINUX_AMD64,
    cpuArchitecture: architecture === 'arm64' ? ecs.CpuArchitecture.ARM64 : ecs.CpuArchitecture.X86_64,
  };
}
