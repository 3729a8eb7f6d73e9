import * as autoscaling from 'aws-cdk-lib/aws-autoscaling';
import * as ec2 from 'aws-cdk-lib/aws-ec2';
import * as ecs from 'aws-cdk-lib/aws-ecs';
import * as iam from 'aws-cdk-lib/aws-iam';
import { Construct } from 'constructs';
import { CustomResource } from 'aws-cdk-lib';
import { groupDrain } from '../deploy-helper';
import { acknowledge, nagRef } from '../nag';

/** The ECS GPU-optimised AMI generation, resolved through its public SSM parameter at deploy time. */
export type GpuAmi = 'al2023' | 'al2';

/** Properties of {@link GpuCapacity}. */
export interface GpuCapacityProps {
  /** The cluster the instances join. */
  readonly cluster: ecs.Cluster;
  readonly vpc: ec2.IVpc;
  /** Where the instances run. */
  readonly vpcSubnets: ec2.SubnetSelection;
  /** The instances' security group (no inbound rule). */
  readonly securityGroup: ec2.ISecurityGroup;
  /**
   * Instance types, in order of preference for on-demand (the first that has capacity wins);
   * Spot picks among them by price and capacity. All must be x86_64 NVIDIA G/P types with the
   * same GPU count or more than `gpusPerTask`.
   */
  readonly instanceTypes: ec2.InstanceType[];
  /** Most instances in each Auto Scaling group. */
  readonly maxInstances: number;
  /**
   * A second, Spot Auto Scaling group and its capacity provider.
   *
   * @default false
   */
  readonly spot?: boolean;
  /**
   * Size of the root volume in GiB (the image cache: CUDA images are several GB).
   *
   * @default 100
   */
  readonly rootVolumeGiB?: number;
  /**
   * The AMI generation.
   *
   * @default 'al2023'
   */
  readonly ami?: GpuAmi;
  /**
   * Give the instances public IPs (public subnets without a NAT gateway).
   *
   * @default false
   */
  readonly associatePublicIp?: boolean;
}

/**
 * GPU instances for the worker service: an Auto Scaling group of the ECS GPU-optimised AMI (and a
 * Spot one) behind ECS capacity providers with managed scaling (target capacity 100 %, from zero
 * instances) and managed termination protection, so the service's desired count alone decides how
 * many instances run, and an instance running a task (scale-in protected while busy) is never
 * terminated by a scale-in.
 */
export class GpuCapacity extends Construct {
  /** The on-demand capacity provider (the strategy's base). */
  public readonly onDemand: ecs.AsgCapacityProvider;
  /** The Spot capacity provider, with `spot`. */
  public readonly spot?: ecs.AsgCapacityProvider;
  public readonly autoScalingGroups: autoscaling.AutoScalingGroup[];
  /** The instances' role (the ECS agent's permissions). */
  public readonly instanceRole: iam.Role;
  public readonly launchTemplates: ec2.LaunchTemplate[];
  /**
   * One per group: on delete, lifts its instances' scale-in protection and empties it, so the
   * group's deletion completes (a protected instance would hold it for ever). The service must
   * depend on them.
   */
  public readonly drains: CustomResource[];

  constructor(scope: Construct, id: string, props: GpuCapacityProps) {
    super(scope, id);
    if (props.instanceTypes.length === 0) {
      throw new Error('gpu instanceTypes must list at least one instance type, e.g. g5.xlarge');
    }
    if (props.instanceTypes.length > 20) {
      throw new Error(`gpu instanceTypes may list at most 20 types (an Auto Scaling group's limit), got ${props.instanceTypes.length}`);
    }
    for (const type of props.instanceTypes) {
      if (type.architecture !== ec2.InstanceArchitecture.X86_64) {
        throw new Error(`gpu instance type ${type} is not x86_64: the ECS GPU-optimised AMI is x86_64 only (g4dn, g5, g6, g6e, p4d, p5 are)`);
      }
    }
    if (!Number.isInteger(props.maxInstances) || props.maxInstances < 1) {
      throw new Error(`gpu maxInstances must be a positive integer, got ${props.maxInstances}`);
    }
    const rootVolumeGiB = props.rootVolumeGiB ?? 100;
    if (!Number.isInteger(rootVolumeGiB) || rootVolumeGiB < 30 || rootVolumeGiB > 16384) {
      throw new Error(`gpu rootVolumeGiB must be an integer from 30 to 16384, got ${rootVolumeGiB}`);
    }
    const ami = props.ami ?? 'al2023';
    if (ami !== 'al2023' && ami !== 'al2') {
      throw new Error(`gpu ami must be al2023 or al2, got ${String(ami)}`);
    }
    // A public SSM parameter, resolved by CloudFormation at deploy time: no lookup at synth.
    const machineImage =
      ami === 'al2023'
        ? ecs.EcsOptimizedImage.amazonLinux2023(ecs.AmiHardwareType.GPU)
        : ecs.EcsOptimizedImage.amazonLinux2(ecs.AmiHardwareType.GPU);

    this.instanceRole = new iam.Role(this, 'InstanceRole', {
      assumedBy: new iam.ServicePrincipal('ec2.amazonaws.com'),
      description: 'sluice GPU instances: the ECS agent (register, poll, pull images, write logs)',
    });

    const group = (name: 'OnDemand' | 'Spot'): ecs.AsgCapacityProvider => {
      const spot = name === 'Spot';
      const userData = ec2.UserData.forLinux();
      // Task roles through the agent's credential endpoint; no task reaches the instance metadata
      // (and the instance role) in awsvpc mode, nor in bridge mode, where the hop limit of 1 stops it.
      userData.addCommands(
        'echo ECS_ENABLE_GPU_SUPPORT=true >> /etc/ecs/ecs.config',
        'echo ECS_ENABLE_TASK_IAM_ROLE=true >> /etc/ecs/ecs.config',
        'echo ECS_AWSVPC_BLOCK_IMDS=true >> /etc/ecs/ecs.config',
        // SIGTERM at the two-minute interruption notice: the worker drains.
        ...(spot ? ['echo ECS_ENABLE_SPOT_INSTANCE_DRAINING=true >> /etc/ecs/ecs.config'] : []),
      );
      const launchTemplate = new ec2.LaunchTemplate(this, `${name}LaunchTemplate`, {
        machineImage,
        userData,
        role: this.instanceRole,
        securityGroup: props.securityGroup,
        requireImdsv2: true,
        httpPutResponseHopLimit: 1,
        associatePublicIpAddress: props.associatePublicIp ?? false,
        blockDevices: [
          {
            deviceName: '/dev/xvda',
            volume: ec2.BlockDeviceVolume.ebs(rootVolumeGiB, {
              encrypted: true,
              volumeType: ec2.EbsDeviceVolumeType.GP3,
              deleteOnTermination: true,
            }),
          },
        ],
      });
      this.launchTemplates.push(launchTemplate);
      const asg = new autoscaling.AutoScalingGroup(this, `${name}Group`, {
        vpc: props.vpc,
        vpcSubnets: props.vpcSubnets,
        // From zero: ECS managed scaling sets the desired capacity; no template value resets it.
        minCapacity: 0,
        maxCapacity: props.maxInstances,
        mixedInstancesPolicy: {
          launchTemplate,
          launchTemplateOverrides: props.instanceTypes.map((instanceType) => ({ instanceType })),
          instancesDistribution: spot
            ? {
                onDemandBaseCapacity: 0,
                onDemandPercentageAboveBaseCapacity: 0,
                spotAllocationStrategy: autoscaling.SpotAllocationStrategy.PRICE_CAPACITY_OPTIMIZED,
              }
            : {
                onDemandBaseCapacity: 0,
                onDemandPercentageAboveBaseCapacity: 100,
                onDemandAllocationStrategy: autoscaling.OnDemandAllocationStrategy.PRIORITIZED,
              },
        },
        // Spot: launch a replacement when an instance is at risk of interruption.
        capacityRebalance: spot ? true : undefined,
      });
      // Instances with public IPs: after the default routes at creation, before them at deletion.
      if (props.associatePublicIp === true) {
        asg.node.addDependency(props.vpc.selectSubnets(props.vpcSubnets).internetConnectivityEstablished);
      }
      this.autoScalingGroups.push(asg);
      this.drains.push(groupDrain(this, `${name}Drain`, asg));
      const provider = new ecs.AsgCapacityProvider(this, `${name}Provider`, {
        autoScalingGroup: asg,
        enableManagedScaling: true,
        targetCapacityPercent: 100,
        // Instances running tasks are protected from scale-in; ECS lifts it once they are empty.
        enableManagedTerminationProtection: true,
        // ECS drains an instance's tasks (SIGTERM, the worker's drain) before it is terminated.
        enableManagedDraining: true,
        machineImageType: ecs.MachineImageType.AMAZON_LINUX_2,
      });
      props.cluster.addAsgCapacityProvider(provider);
      acknowledge(
        asg,
        'AwsSolutions-AS3',
        'the instances are launched and terminated by ECS managed scaling for the worker service; its events, ' +
          'the capacity provider and the backlog alarms report capacity problems, so no SNS notification is configured',
      );
      acknowledge(
        asg,
        'AwsSolutions-EC26',
        'the launch template\'s only block device, the root volume, is encrypted (gp3, test/gpu.test.ts checks it); ' +
          'cdk-nag reads an Auto Scaling group\'s LaunchTemplate property only, not a MixedInstancesPolicy\'s, and errs here',
      );
      return provider;
    };

    this.autoScalingGroups = [];
    this.launchTemplates = [];
    this.drains = [];
    this.onDemand = group('OnDemand');
    if (props.spot === true) this.spot = group('Spot');

    acknowledge(
      this.instanceRole,
      'AwsSolutions-IAM5[Resource::*]',
      'the ECS agent\'s ecs:DiscoverPollEndpoint, ecr:GetAuthorizationToken, logs:CreateLogStream/PutLogEvents (added by ' +
        'Cluster.addAsgCapacityProvider) have no resource-level permissions, and ecs:Poll/StartTelemetrySession are ' +
        'conditioned on this cluster',
    );
    acknowledge(
      this.instanceRole,
      `AwsSolutions-IAM5[Action::ecs:Submit*]`,
      'ecs:Submit* are the ECS agent\'s state-change reports (SubmitTaskStateChange, SubmitContainerStateChange, ...), ' +
        `limited to this cluster (${nagRef(props.cluster)})`,
    );
  }

  /** Every capacity provider, on-demand first. */
  public get providers(): ecs.AsgCapacityProvider[] {
    return this.spot === undefined ? [this.onDemand] : [this.onDemand, this.spot];
  }
}
