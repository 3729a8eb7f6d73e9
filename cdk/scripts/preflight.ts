/**
 * `make preflight` (and the first step of `make deploy`): what a deploy of this app, with the same
 * context (`-c key=value`, as CDK_ARGS passes it), needs from this machine and the AWS account,
 * checked before CloudFormation starts. It prints each finding with its fix and exits 1 when one
 * of them blocks the deploy (or a first job), 0 otherwise.
 *
 *   npx tsx scripts/preflight.ts [-c key=value ...] [--check-only]
 *
 * Checks: credentials and region; the CDK bootstrap stack; Docker with BuildKit and the image's
 * platform (when an image is built); the service-linked roles the stack needs (created when
 * missing, unless --check-only); Lambda concurrency against what the stack reserves; the Fargate
 * vCPU quotas against `maxTasks` x the task's vCPUs; for GPU workers, the G and VT instance quotas
 * (on-demand and Spot) against the instances the stack may start. Every AWS call goes through the
 * SDK's default chain (AWS_PROFILE, AWS_REGION, AWS_ENDPOINT_URL...): no endpoint of its own.
 */
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { CloudFormationClient, DescribeStacksCommand } from '@aws-sdk/client-cloudformation';
import { DescribeInstanceTypesCommand, EC2Client } from '@aws-sdk/client-ec2';
import { CreateServiceLinkedRoleCommand, IAMClient, ListRolesCommand } from '@aws-sdk/client-iam';
import { GetAccountSettingsCommand, LambdaClient } from '@aws-sdk/client-lambda';
import { GetAWSDefaultServiceQuotaCommand, GetServiceQuotaCommand, ServiceQuotasClient } from '@aws-sdk/client-service-quotas';
import { GetCallerIdentityCommand, STSClient } from '@aws-sdk/client-sts';
import { App } from 'aws-cdk-lib';
import { CfnTaskDefinition } from 'aws-cdk-lib/aws-ecs';
import { stackConfigFromContext } from '../lib/config';
import { SluiceStack } from '../lib/sluice-stack';

export type Level = 'ok' | 'warn' | 'blocker';

/** One finding: what was checked, how it stands, and the fix when it is not ok. */
export interface Finding {
  readonly check: string;
  readonly level: Level;
  readonly message: string;
  readonly fix?: string;
}

/** What a deploy of the configured stack needs, read from the stack itself. */
export interface Plan {
  readonly launchType: 'FARGATE' | 'EC2';
  /** `linux/arm64` or `linux/amd64`. */
  readonly platform: string;
  readonly spot: boolean;
  readonly onDemandBase: number;
  readonly maxTasks: number;
  /** vCPUs of one Fargate task. */
  readonly taskVcpus: number;
  readonly gpu?: {
    readonly instanceTypes: string[];
    readonly maxInstances: number;
    readonly gpusPerTask: number;
    /** CPU units and MiB the task's containers reserve together. */
    readonly taskCpuUnits: number;
    readonly taskMemoryMiB: number;
  };
  readonly reservedConcurrency?: number;
  /** An image is built by `cdk deploy` (not taken from a registry). */
  readonly buildsImage: boolean;
  /** The image's Dockerfile runs commands for the target platform (an example's pip install). */
  readonly buildRunsOnTarget: boolean;
}

/** Lambda's rule: a reservation may leave no fewer than this unreserved. */
export const MIN_UNRESERVED_CONCURRENCY = 100;

/** Service Quotas codes (the quota's code in the Service Quotas console). */
export const QUOTAS = {
  fargateOnDemand: { service: 'fargate', code: 'L-3032A538', name: 'Fargate On-Demand vCPU resource count' },
  fargateSpot: { service: 'fargate', code: 'L-36FBB829', name: 'Fargate Spot vCPU resource count' },
  gpuOnDemand: { service: 'ec2', code: 'L-DB2E81BA', name: 'Running On-Demand G and VT instances' },
  gpuSpot: { service: 'ec2', code: 'L-3819A6DF', name: 'All G and VT Spot Instance Requests' },
  lambdaConcurrency: { service: 'lambda', code: 'L-B99A9384', name: 'Concurrent executions' },
} as const;

/** The service-linked roles the stack needs, by the service that owns them. */
export function serviceLinkedRoles(plan: Plan): { service: string; role: string }[] {
  const roles = [
    { service: 'ecs.amazonaws.com', role: 'AWSServiceRoleForECS' },
    { service: 'ecs.application-autoscaling.amazonaws.com', role: 'AWSServiceRoleForApplicationAutoScaling_ECSService' },
  ];
  if (plan.gpu !== undefined) roles.push({ service: 'autoscaling.amazonaws.com', role: 'AWSServiceRoleForAutoScaling' });
  if (plan.gpu !== undefined && plan.spot) roles.push({ service: 'spot.amazonaws.com', role: 'AWSServiceRoleForEC2Spot' });
  return roles;
}

/** The plan of the stack the context describes (synthesized in memory on stub Lambda assets). */
export function planFromContext(context: Record<string, string>): Plan {
  // cdk.json's context (feature flags and settings) under the command line's, as the CDK CLI does.
  const cdkJson = JSON.parse(fs.readFileSync(path.join(__dirname, '..', 'cdk.json'), 'utf8')).context ?? {};
  const lambdaAssetDir = path.join(__dirname, '..', 'test', 'fixtures', 'lambda');
  const app = new App({ context: { ...cdkJson, ...context, lambdaAssetDir } });
  const { name, props } = stackConfigFromContext(app.node);
  const stack = new SluiceStack(app, name, props);
  const capacity = stack.workers.capacity;
  const source = props.workerImage?.source;
  const dockerfile = source?.kind === 'directory' ? path.resolve(source.buildContext, source.file) : undefined;
  const defaultDockerfile = path.resolve(__dirname, '..', '..', 'worker', 'Dockerfile');
  const cpu = props.taskCpu ?? (props.gpu === undefined ? 1024 : 2048);
  return {
    launchType: capacity.launchType,
    platform: capacity.platform.platform,
    spot: props.spot === true,
    onDemandBase: props.spot === true ? (props.spotStrategy?.onDemandBase ?? 1) : 0,
    maxTasks: stack.scaling.maxTasks,
    taskVcpus: cpu / 1024,
    gpu:
      props.gpu === undefined
        ? undefined
        : {
            instanceTypes: props.gpu.instanceTypes.map((t) => t.toString()),
            maxInstances: props.gpu.maxInstances ?? stack.scaling.maxTasks,
            gpusPerTask: props.gpu.gpusPerTask ?? 1,
            // What the task definition's containers reserve (the worker's 256 beside a model server).
            taskCpuUnits: reserved(stack, 'Cpu'),
            taskMemoryMiB: reserved(stack, 'MemoryReservation'),
          },
    reservedConcurrency: props.backlogReservedConcurrency,
    buildsImage: source === undefined || source.kind === 'directory',
    buildRunsOnTarget: dockerfile !== undefined && dockerfile !== defaultDockerfile,
  };
}

/** The sum of a reservation over the worker task's containers, as synthesized. */
function reserved(stack: SluiceStack, field: 'Cpu' | 'MemoryReservation'): number {
  const def = stack.workers.taskDefinition.node.defaultChild as CfnTaskDefinition;
  const containers = stack.resolve(def.containerDefinitions) as Record<string, unknown>[];
  return containers.reduce((sum, c) => sum + Number(c[field.charAt(0).toLowerCase() + field.slice(1)] ?? 0), 0);
}

/** `-c key=value` / `--context key=value` pairs of a CDK command line; other words are ignored. */
export function contextArgs(argv: string[]): Record<string, string> {
  const context: Record<string, string> = {};
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    let pair: string | undefined;
    if (a === '-c' || a === '--context') pair = argv[++i];
    else if (a.startsWith('--context=')) pair = a.slice('--context='.length);
    if (pair === undefined) continue;
    const eq = pair.indexOf('=');
    if (eq <= 0) throw new Error(`context must be key=value, got ${pair}`);
    context[pair.slice(0, eq)] = pair.slice(eq + 1);
  }
  return context;
}

type Run = (cmd: string, args: string[]) => { status: number | null; stdout: string; stderr: string; error?: Error };

const run: Run = (cmd, args) => {
  const r = spawnSync(cmd, args, { encoding: 'utf8', timeout: 60_000 });
  return { status: r.status, stdout: r.stdout ?? '', stderr: r.stderr ?? '', error: r.error };
};

/** The platforms of `docker buildx inspect` output (its `Platforms:` line). */
export function builderPlatforms(inspect: string): string[] {
  const line = inspect.split('\n').find((l) => /^\s*Platforms:/.test(l));
  if (line === undefined) return [];
  return line
    .replace(/^\s*Platforms:/, '')
    .split(',')
    .map((p) => p.trim().replace(/\*$/, ''))
    .filter((p) => p !== '');
}

/** Docker, BuildKit (buildx) and the target platform, when `cdk deploy` builds the image. */
export function checkDocker(plan: Plan, exec: Run = run): Finding[] {
  const check = 'docker';
  if (!plan.buildsImage) return [{ check, level: 'ok', message: 'the worker image comes from a registry: nothing is built here' }];
  const version = exec('docker', ['version', '--format', '{{.Server.Version}}']);
  if (version.error !== undefined) {
    return [{
      check,
      level: 'blocker',
      message: 'docker is not installed: cdk deploy builds the worker image with it',
      fix: 'install Docker Engine (or Docker Desktop) with the buildx plugin, or deploy an image from a registry with -c workerImageUri=...',
    }];
  }
  if (version.status !== 0) {
    return [{ check, level: 'blocker', message: `the docker daemon does not answer: ${version.stderr.trim()}`, fix: 'start Docker (systemctl start docker, or Docker Desktop), and make sure this user may use it' }];
  }
  const findings: Finding[] = [{ check, level: 'ok', message: `docker ${version.stdout.trim()}` }];
  const buildx = exec('docker', ['buildx', 'version']);
  if (buildx.status !== 0) {
    findings.push({ check: 'buildkit', level: 'blocker', message: 'docker buildx (BuildKit) is missing: the Dockerfiles use BuildKit features (cache mounts, --platform)', fix: 'install the docker-buildx-plugin package (Docker Desktop has it)' });
    return findings;
  }
  findings.push({ check: 'buildkit', level: 'ok', message: buildx.stdout.trim().split('\n')[0] });
  const platforms = builderPlatforms(exec('docker', ['buildx', 'inspect', '--bootstrap']).stdout);
  if (platforms.includes(plan.platform)) {
    findings.push({ check: 'platform', level: 'ok', message: `the builder builds ${plan.platform}` });
  } else if (!plan.buildRunsOnTarget) {
    findings.push({ check: 'platform', level: 'ok', message: `worker/Dockerfile cross-compiles for ${plan.platform}: no emulation needed (the builder lists ${platforms.join(', ') || 'no platform'})` });
  } else {
    const arch = plan.platform.split('/')[1];
    findings.push({
      check: 'platform',
      level: 'blocker',
      message: `the image runs commands for ${plan.platform}, which this builder cannot run (it lists ${platforms.join(', ') || 'no platform'})`,
      fix: `install QEMU's binfmt handlers: docker run --privileged --rm tonistiigi/binfmt --install ${arch}`,
    });
  }
  return findings;
}

/** The tools `make deploy` runs after the preflight: rustup builds the Lambdas. */
export function checkTools(exec: Run = run): Finding[] {
  const rustup = exec('rustup', ['--version']);
  if (rustup.error !== undefined || rustup.status !== 0) {
    return [{
      check: 'rust',
      level: 'blocker',
      message: 'rustup is not installed: make lambdas builds the functions with the Rust release it pins',
      fix: 'install rustup (https://rustup.rs), then make deploy again: it installs that release and the aarch64 target',
    }];
  }
  return [{ check: 'rust', level: 'ok', message: rustup.stdout.trim().split('\n')[0] }];
}

/** Whether an SDK error is the named one. */
const isError = (e: unknown, name: string): boolean => (e as { name?: string })?.name === name;

/** A quota's applied value, or its default when none was ever applied (Service Quotas' own rule). */
async function quotaValue(client: ServiceQuotasClient, q: { service: string; code: string }): Promise<number | undefined> {
  try {
    return (await client.send(new GetServiceQuotaCommand({ ServiceCode: q.service, QuotaCode: q.code }))).Quota?.Value;
  } catch (e) {
    if (!isError(e, 'NoSuchResourceException')) throw e;
    return (await client.send(new GetAWSDefaultServiceQuotaCommand({ ServiceCode: q.service, QuotaCode: q.code }))).Quota?.Value;
  }
}

function quotaFix(q: { service: string; code: string; name: string }, need: number, region: string): string {
  return (
    `ask for ${need} or more: aws service-quotas request-service-quota-increase --service-code ${q.service} ` +
    `--quota-code ${q.code} --desired-value ${need} --region ${region} (Service Quotas console: "${q.name}")`
  );
}

/** Every check that needs the account; `createRoles` creates missing service-linked roles. */
export async function checkAccount(plan: Plan, createRoles: boolean): Promise<Finding[]> {
  const findings: Finding[] = [];
  const sts = new STSClient({});
  let region: string;
  try {
    region = await sts.config.region();
  } catch {
    return [{ check: 'region', level: 'blocker', message: 'no AWS region is configured', fix: 'set AWS_REGION (or a region in your AWS_PROFILE)' }];
  }
  try {
    const me = await sts.send(new GetCallerIdentityCommand({}));
    findings.push({ check: 'credentials', level: 'ok', message: `account ${me.Account} as ${me.Arn}, region ${region}` });
  } catch (e) {
    return [{ check: 'credentials', level: 'blocker', message: `no usable AWS credentials: ${(e as Error).message}`, fix: 'set AWS_PROFILE (aws sso login / aws configure) or the AWS_ACCESS_KEY_ID variables' }];
  }

  try {
    const { Stacks } = await new CloudFormationClient({}).send(new DescribeStacksCommand({ StackName: 'CDKToolkit' }));
    const status = Stacks?.[0]?.StackStatus ?? 'missing';
    findings.push(
      status.endsWith('_COMPLETE') && !status.startsWith('DELETE') && !status.includes('ROLLBACK_COMPLETE')
        ? { check: 'bootstrap', level: 'ok', message: `CDKToolkit is ${status}` }
        : { check: 'bootstrap', level: 'blocker', message: `the CDK bootstrap stack CDKToolkit is ${status}`, fix: 'run make bootstrap (once per account and region)' },
    );
  } catch (e) {
    if (!/does not exist/.test((e as Error).message)) throw e;
    findings.push({ check: 'bootstrap', level: 'blocker', message: `this account and region (${region}) are not bootstrapped for the CDK`, fix: 'run make bootstrap (once per account and region)' });
  }

  const iam = new IAMClient({});
  for (const { service, role } of serviceLinkedRoles(plan)) {
    // A service's linked roles live under /aws-service-role/<service>/ (whatever their suffix).
    const { Roles } = await iam.send(new ListRolesCommand({ PathPrefix: `/aws-service-role/${service}/` }));
    if ((Roles ?? []).length > 0) {
      findings.push({ check: 'service-linked role', level: 'ok', message: `${role} exists` });
      continue;
    }
    const fix = `aws iam create-service-linked-role --aws-service-name ${service}`;
    if (!createRoles) {
      findings.push({ check: 'service-linked role', level: 'blocker', message: `${role} does not exist: the stack's first ${service.split('.')[0]} call may fail on it`, fix });
      continue;
    }
    try {
      await iam.send(new CreateServiceLinkedRoleCommand({ AWSServiceName: service }));
      findings.push({ check: 'service-linked role', level: 'ok', message: `${role} created (it did not exist; IAM takes a few seconds to make it usable, long before the stack needs it)` });
    } catch (e) {
      findings.push({ check: 'service-linked role', level: 'blocker', message: `${role} does not exist and could not be created: ${(e as Error).message}`, fix: `${fix} (with iam:CreateServiceLinkedRole)` });
    }
  }

  // A check the identity may not read (Service Quotas and Lambda's account settings need their own
  // read permissions) is reported, not fatal: the deploy itself does not need them.
  const unreadable = (check: string, e: unknown): Finding => ({
    check,
    level: 'warn',
    message: `could not be read: ${(e as Error).message}`,
    fix: 'read it in the Service Quotas console, or grant servicequotas:GetServiceQuota, servicequotas:GetAWSDefaultServiceQuota and lambda:GetAccountSettings',
  });
  let limit;
  try {
    limit = (await new LambdaClient({}).send(new GetAccountSettingsCommand({}))).AccountLimit;
  } catch (e) {
    findings.push(unreadable('lambda concurrency', e));
  }
  const total = limit?.ConcurrentExecutions ?? 0;
  const unreserved = limit?.UnreservedConcurrentExecutions ?? 0;
  const r = plan.reservedConcurrency;
  if (limit === undefined) {
    // reported above
  } else if (r !== undefined) {
    findings.push(
      unreserved - r >= MIN_UNRESERVED_CONCURRENCY
        ? { check: 'lambda concurrency', level: 'ok', message: `reserving ${r} for the backlog function leaves ${unreserved - r} unreserved` }
        : {
            check: 'lambda concurrency',
            level: 'blocker',
            message: `backlogReservedConcurrency=${r} would leave ${unreserved - r} of the account's ${total} unreserved; Lambda refuses a reservation that leaves fewer than ${MIN_UNRESERVED_CONCURRENCY}`,
            fix: `leave backlogReservedConcurrency unset, or ${quotaFix(QUOTAS.lambdaConcurrency, Math.max(1000, total - unreserved + r + MIN_UNRESERVED_CONCURRENCY), region)}`,
          },
    );
  } else {
    findings.push(
      total >= MIN_UNRESERVED_CONCURRENCY
        ? { check: 'lambda concurrency', level: 'ok', message: `${total} concurrent executions (${unreserved} unreserved); the backlog function reserves none` }
        : {
            check: 'lambda concurrency',
            level: 'warn',
            message: `the account runs at most ${total} Lambda functions at once: a few long-polling status calls can throttle the API and the scaling loop`,
            fix: quotaFix(QUOTAS.lambdaConcurrency, 1000, region),
          },
    );
  }

  const quotas = new ServiceQuotasClient({});
  const capacityCheck = async (
    q: { service: string; code: string; name: string },
    check: string,
    need: number,
    least: number,
    level: Level,
    what: string,
  ) => {
    let value: number;
    try {
      value = (await quotaValue(quotas, q)) ?? 0;
    } catch (e) {
      findings.push(unreadable(check, e));
      return;
    }
    if (value >= need) {
      findings.push({ check, level: 'ok', message: `${q.name}: ${value}, ${what} need ${need}` });
    } else {
      findings.push({
        check,
        level: value < least ? level : 'warn',
        message: `${q.name} is ${value}: ${what} need ${need}${value < least ? `, and one needs ${least}` : ''}`,
        fix: quotaFix(q, need, region),
      });
    }
  };
  if (plan.gpu === undefined) {
    const need = plan.maxTasks * plan.taskVcpus;
    await capacityCheck(QUOTAS.fargateOnDemand, 'fargate vcpus', need, Math.max(1, plan.onDemandBase) * plan.taskVcpus, 'blocker', `maxTasks (${plan.maxTasks}) tasks of ${plan.taskVcpus} vCPU`);
    if (plan.spot) {
      await capacityCheck(QUOTAS.fargateSpot, 'fargate spot vcpus', need, plan.taskVcpus, 'warn', `maxTasks (${plan.maxTasks}) Spot tasks of ${plan.taskVcpus} vCPU`);
    }
  } else {
    const { InstanceTypes } = await new EC2Client({}).send(new DescribeInstanceTypesCommand({ InstanceTypes: plan.gpu.instanceTypes as never[] }));
    findings.push(...instanceFit(plan.gpu, InstanceTypes ?? []));
    const vcpus = (InstanceTypes ?? []).map((t) => t.VCpuInfo?.DefaultVCpus ?? 0);
    if (vcpus.length === 0) throw new Error(`no instance type of ${plan.gpu.instanceTypes.join(', ')} is offered in ${region}`);
    const need = plan.gpu.maxInstances * Math.max(...vcpus);
    const least = Math.min(...vcpus);
    const what = `gpuMaxInstances (${plan.gpu.maxInstances}) instances of up to ${Math.max(...vcpus)} vCPUs`;
    await capacityCheck(QUOTAS.gpuOnDemand, 'gpu vcpus', need, least, 'blocker', what);
    if (plan.spot) await capacityCheck(QUOTAS.gpuSpot, 'gpu spot vcpus', need, least, 'warn', what);
  }
  return findings;
}

/** ECS registers less memory than an instance's nominal size (what the OS and agent keep). */
export const REGISTERED_MEMORY_SHARE = 0.9;

/**
 * Whether a task (its GPUs, CPU units and memory) fits each instance type, as EC2 describes it:
 * a type it does not fit never takes a task (a warning), and none fitting is a blocker.
 */
export function instanceFit(
  gpu: NonNullable<Plan['gpu']>,
  types: { InstanceType?: string; VCpuInfo?: { DefaultVCpus?: number }; MemoryInfo?: { SizeInMiB?: number }; GpuInfo?: { Gpus?: { Count?: number }[] } }[],
): Finding[] {
  const misfits = types.flatMap((t) => {
    const gpus = (t.GpuInfo?.Gpus ?? []).reduce((n, g) => n + (g.Count ?? 0), 0);
    const cpu = (t.VCpuInfo?.DefaultVCpus ?? 0) * 1024;
    const memory = Math.floor((t.MemoryInfo?.SizeInMiB ?? 0) * REGISTERED_MEMORY_SHARE);
    const why = [
      gpus < gpu.gpusPerTask ? `${gpus} GPU(s) for gpusPerTask ${gpu.gpusPerTask}` : undefined,
      cpu < gpu.taskCpuUnits ? `${cpu} CPU units for the task's ${gpu.taskCpuUnits}` : undefined,
      memory < gpu.taskMemoryMiB ? `about ${memory} MiB for tasks, for the task's ${gpu.taskMemoryMiB}` : undefined,
    ].filter((w) => w !== undefined);
    return why.length === 0 ? [] : [`${t.InstanceType} has ${why.join(', ')}`];
  });
  const fix = 'list instance types with enough GPUs, CPU and memory for one task, or lower gpusPerTask, taskCpu or taskMemory';
  if (misfits.length === 0) return [{ check: 'gpu instance types', level: 'ok', message: `a task fits each of ${types.map((t) => t.InstanceType).join(', ')}` }];
  if (misfits.length === types.length) {
    return [{ check: 'gpu instance types', level: 'blocker', message: `no listed type can take a task: ${misfits.join('; ')}`, fix }];
  }
  return [{ check: 'gpu instance types', level: 'warn', message: `these types never take a task: ${misfits.join('; ')}`, fix }];
}

/** The report as printed: one line per finding, its fix under it. */
export function report(findings: Finding[]): string {
  const mark: Record<Level, string> = { ok: 'ok     ', warn: 'WARN   ', blocker: 'BLOCKER' };
  const lines = findings.flatMap((f) => [`${mark[f.level]} ${f.check}: ${f.message}`, ...(f.fix === undefined ? [] : [`        fix: ${f.fix}`])]);
  const blockers = findings.filter((f) => f.level === 'blocker').length;
  lines.push(blockers === 0 ? 'preflight: ready to deploy' : `preflight: ${blockers} blocker(s): fix them before make deploy`);
  return lines.join('\n');
}

async function main(argv: string[]): Promise<number> {
  const plan = planFromContext({ ...contextArgs(argv) });
  const findings = [...checkTools(), ...checkDocker(plan), ...(await checkAccount(plan, !argv.includes('--check-only')))];
  console.log(report(findings));
  return findings.some((f) => f.level === 'blocker') ? 1 : 0;
}

if (require.main === module) {
  main(process.argv.slice(2)).then(
    (code) => process.exit(code),
    (e) => {
      console.error(`preflight: ${(e as Error).message}`);
      process.exit(2);
    },
  );
}
