import * as path from 'node:path';
import { Duration, RemovalPolicy } from 'aws-cdk-lib';
import * as ec2 from 'aws-cdk-lib/aws-ec2';
import * as ecs from 'aws-cdk-lib/aws-ecs';
import { CpuArchitecture } from './capacity';
import { GpuAmi } from './constructs/gpu-capacity';
import { EventsOptions } from './constructs/job-events';
import { PipelineOptions } from './constructs/pipeline';
import { GpuWorkers, SpotStrategy } from './constructs/workers';
import { Node } from 'constructs';
import { OwnerScope } from './env';
import { ModelServer, WorkerHandler } from './handler';
import { REPO_ROOT } from './policy';
import { SluiceStackProps } from './sluice-stack';
import { WorkerImage } from './worker-image';

/**
 * The context keys this app reads (cdk.json or `-c key=value`). Values given on the command line
 * arrive as strings, so numbers, booleans and lists (comma-separated) are parsed here.
 */
export const CONTEXT_KEYS = [
  'name',
  'lambdaAssetDir',
  'scalingPolicyFile',
  'vpcId',
  'subnetIds',
  'availabilityZones',
  'assignPublicIp',
  'taskCpu',
  'taskMemory',
  'taskStorage',
  'workerConcurrency',
  'maxTaskAgeSeconds',
  'workerImageDirectory',
  'workerImageFile',
  'workerImageUri',
  'workerImageBuildContext',
  'workerImageBuildArgs',
  'handlerMode',
  'handlerCommand',
  'modelUrl',
  'startupTimeoutSeconds',
  'modelServerImageUri',
  'modelServerPort',
  'modelServerCommand',
  'modelServerEnvironment',
  'modelServerHealthCheck',
  'minTasks',
  'maxTasks',
  'spot',
  'spotOnDemandBase',
  'spotOnDemandWeight',
  'spotWeight',
  'gpuInstanceTypes',
  'gpusPerTask',
  'gpuMaxInstances',
  'gpuRootVolumeGiB',
  'gpuAmi',
  'cpuArchitecture',
  'backlogReservedConcurrency',
  'smokeInput',
  'deployProvesImage',
  'jobTimeoutSeconds',
  'maxJobTimeoutSeconds',
  'leaseSeconds',
  'maxAttempts',
  'maxReceiveCount',
  'retentionDays',
  'ownerScope',
  'pinnedSessionRoles',
  'operators',
  'inputBuckets',
  'drainSeconds',
  'jwtIssuer',
  'jwtAudience',
  'apiRateLimit',
  'apiBurstLimit',
  'alarmEmail',
  'logRemovalPolicy',
  'efsFileSystemId',
  'efsAccessPointId',
  'efsMountPath',
  'efsSecurityGroupId',
  'pipeline',
  'events',
] as const;

export type ContextKey = (typeof CONTEXT_KEYS)[number];

/** Keys this app no longer reads, and what replaced them: given, they fail synth instead of being ignored. */
export const REPLACED_CONTEXT_KEYS: Readonly<Record<string, string>> = {
  workerHandler: 'handlerMode (demo, process or http; with handlerCommand or modelUrl)',
};

type Lookup = (key: ContextKey) => unknown;

/** Whether a key is set at all (empty strings count as unset, as everywhere here). */
function given(get: Lookup, key: ContextKey): boolean {
  const v = get(key);
  return v !== undefined && v !== null && v !== '';
}

/** A value that cdk.json gives as JSON and the command line as a string holding JSON. */
function jsonish(get: Lookup, key: ContextKey, looksLikeJson: (s: string) => boolean): unknown {
  const v = get(key);
  if (typeof v !== 'string' || !looksLikeJson(v.trim())) return v;
  try {
    return JSON.parse(v);
  } catch (e) {
    throw new Error(`context ${key} is not valid json (${(e as Error).message}): ${v}`);
  }
}

/**
 * A command: a JSON array of strings, or words split on whitespace (no quoting: use a JSON array
 * for an argument with spaces).
 */
function command(get: Lookup, key: ContextKey): string[] | undefined {
  if (!given(get, key)) return undefined;
  const v = jsonish(get, key, (s) => s.startsWith('['));
  if (typeof v === 'string') {
    if (/["'\\]/.test(v)) {
      throw new Error(`context ${key} has quotes or backslashes: give it as a json array, e.g. ["python3", "/app/handler.py"], got ${v}`);
    }
    return v.trim().split(/\s+/);
  }
  if (!Array.isArray(v) || v.length === 0 || v.some((w) => typeof w !== 'string' || w === '')) {
    throw new Error(`context ${key} must be a json array of non-empty strings, e.g. ["python3", "/app/handler.py"], got ${JSON.stringify(v)}`);
  }
  return v;
}

/** A string map: a JSON object of strings, or `NAME=value` pairs separated by commas. */
function stringMap(get: Lookup, key: ContextKey): Record<string, string> | undefined {
  if (!given(get, key)) return undefined;
  const v = jsonish(get, key, (s) => s.startsWith('{'));
  if (typeof v === 'string') {
    const out: Record<string, string> = {};
    for (const pair of v.split(',').map((p) => p.trim()).filter((p) => p !== '')) {
      const eq = pair.indexOf('=');
      if (eq < 1) {
        throw new Error(`context ${key} must be a json object or NAME=value pairs separated by commas, got ${v}`);
      }
      out[pair.slice(0, eq).trim()] = pair.slice(eq + 1);
    }
    return out;
  }
  if (typeof v !== 'object' || v === null || Array.isArray(v) || Object.values(v).some((x) => typeof x !== 'string')) {
    throw new Error(`context ${key} must be a json object of strings or NAME=value pairs, got ${JSON.stringify(v)}`);
  }
  return v as Record<string, string>;
}

/** A container health check command: a JSON array starting with CMD or CMD-SHELL, or a shell line. */
function healthCheck(get: Lookup, key: ContextKey): ecs.HealthCheck | undefined {
  if (!given(get, key)) return undefined;
  const v = jsonish(get, key, (s) => s.startsWith('['));
  if (typeof v === 'string') return { command: ['CMD-SHELL', v] };
  if (!Array.isArray(v) || v.length < 2 || !['CMD', 'CMD-SHELL'].includes(v[0]) || v.some((w) => typeof w !== 'string')) {
    throw new Error(
      `context ${key} must be a shell command or a json array starting with CMD or CMD-SHELL, got ${JSON.stringify(v)}`,
    );
  }
  return { command: v };
}

function ownerScope(v: string | undefined): OwnerScope | undefined {
  if (v === undefined || v === 'session' || v === 'role') return v;
  throw new Error(`context ownerScope must be session or role, got ${v}`);
}

function str(get: Lookup, key: ContextKey): string | undefined {
  const v = get(key);
  if (v === undefined || v === null || v === '') return undefined;
  if (typeof v !== 'string') {
    throw new Error(`context ${key} must be a string, got ${JSON.stringify(v)}`);
  }
  return v;
}

function num(get: Lookup, key: ContextKey): number | undefined {
  const v = get(key);
  if (v === undefined || v === null || v === '') return undefined;
  const n = typeof v === 'number' ? v : typeof v === 'string' ? Number(v) : NaN;
  if (!Number.isFinite(n)) {
    throw new Error(`context ${key} must be a number, got ${JSON.stringify(v)}`);
  }
  return n;
}

function bool(get: Lookup, key: ContextKey): boolean | undefined {
  const v = get(key);
  if (v === undefined || v === null || v === '') return undefined;
  if (v === true || v === 'true') return true;
  if (v === false || v === 'false') return false;
  throw new Error(`context ${key} must be true or false, got ${JSON.stringify(v)}`);
}

function list(get: Lookup, key: ContextKey): string[] | undefined {
  const v = get(key);
  if (v === undefined || v === null || v === '') return undefined;
  const items = Array.isArray(v) ? v : typeof v === 'string' ? v.split(',') : undefined;
  if (items === undefined || items.some((i) => typeof i !== 'string')) {
    throw new Error(`context ${key} must be a list or a comma-separated string, got ${JSON.stringify(v)}`);
  }
  return items.map((i: string) => i.trim()).filter((i: string) => i !== '');
}

/** The worker image from context: at most one of a directory, a Dockerfile or a URI. */
function workerImage(get: Lookup): WorkerImage | undefined {
  const sources = (['workerImageDirectory', 'workerImageFile', 'workerImageUri'] as const).filter((k) => given(get, k));
  if (sources.length > 1) {
    throw new Error(
      `context workerImageDirectory, workerImageFile and workerImageUri are alternatives: give one, got ${sources.join(' and ')}`,
    );
  }
  const buildContext = str(get, 'workerImageBuildContext');
  const buildArgs = stringMap(get, 'workerImageBuildArgs');
  const source = sources[0];
  if (source !== 'workerImageDirectory' && source !== 'workerImageFile') {
    for (const k of ['workerImageBuildContext', 'workerImageBuildArgs'] as const) {
      if (given(get, k)) throw new Error(`context ${k} needs workerImageDirectory or workerImageFile (an image to build)`);
    }
  }
  switch (source) {
    case undefined:
      return undefined;
    case 'workerImageUri':
      return WorkerImage.fromUri(str(get, 'workerImageUri')!);
    case 'workerImageDirectory':
      return WorkerImage.fromDirectory(str(get, 'workerImageDirectory')!, { buildContext, buildArgs });
    case 'workerImageFile': {
      const file = path.resolve(REPO_ROOT, str(get, 'workerImageFile')!);
      return WorkerImage.fromDirectory(path.dirname(file), { file: path.basename(file), buildContext, buildArgs });
    }
  }
}

const MODEL_SERVER_KEYS = [
  'modelServerImageUri',
  'modelServerPort',
  'modelServerCommand',
  'modelServerEnvironment',
  'modelServerHealthCheck',
] as const;

/** The handler from context; undefined leaves the default (demo). */
function workerHandler(get: Lookup, seconds: (key: ContextKey) => Duration | undefined): WorkerHandler | undefined {
  const mode = str(get, 'handlerMode');
  if (mode !== undefined && !['demo', 'process', 'http'].includes(mode)) {
    throw new Error(`context handlerMode must be demo, process or http, got ${mode}`);
  }
  const needs: [ContextKey, string, boolean][] = [
    ['handlerCommand', 'handlerMode=process', mode === 'process'],
    ['modelUrl', 'handlerMode=http', mode === 'http'],
    ['startupTimeoutSeconds', 'handlerMode=process or http', mode === 'process' || mode === 'http'],
    ...MODEL_SERVER_KEYS.map((k): [ContextKey, string, boolean] => [k, 'handlerMode=http', mode === 'http']),
  ];
  for (const [key, what, ok] of needs) {
    if (!ok && given(get, key)) throw new Error(`context ${key} needs ${what}`);
  }
  const startupTimeout = seconds('startupTimeoutSeconds');
  switch (mode) {
    case undefined:
      return undefined;
    case 'demo':
      return { mode: 'demo' };
    case 'process': {
      const cmd = command(get, 'handlerCommand');
      if (cmd === undefined) {
        throw new Error('context handlerMode=process needs handlerCommand, e.g. ["python3", "/app/handler.py"]');
      }
      return { mode: 'process', command: cmd, startupTimeout };
    }
    default: {
      let modelServer: ModelServer | undefined;
      const uri = str(get, 'modelServerImageUri');
      if (uri === undefined) {
        const stray = MODEL_SERVER_KEYS.find((k) => given(get, k));
        if (stray !== undefined) throw new Error(`context ${stray} needs modelServerImageUri`);
      } else {
        const port = num(get, 'modelServerPort');
        if (port !== undefined && !Number.isInteger(port)) {
          throw new Error(`context modelServerPort must be an integer, got ${port}`);
        }
        modelServer = {
          image: WorkerImage.fromUri(uri),
          port,
          command: command(get, 'modelServerCommand'),
          environment: stringMap(get, 'modelServerEnvironment'),
          healthCheck: healthCheck(get, 'modelServerHealthCheck'),
        };
      }
      return { mode: 'http', modelUrl: str(get, 'modelUrl'), startupTimeout, modelServer };
    }
  }
}

/** `destroy` or `retain`: what happens to the stack's log groups when it is deleted. */
function removalPolicy(get: Lookup, key: ContextKey): RemovalPolicy | undefined {
  const v = str(get, key);
  if (v === undefined) return undefined;
  if (v === 'destroy') return RemovalPolicy.DESTROY;
  if (v === 'retain') return RemovalPolicy.RETAIN;
  throw new Error(`context ${key} must be destroy or retain, got ${v}`);
}

/** A whole number from context (an integer, not negative). */
function count(get: Lookup, key: ContextKey): number | undefined {
  const n = num(get, key);
  if (n !== undefined && (!Number.isInteger(n) || n < 0)) {
    throw new Error(`context ${key} must be a whole number, got ${JSON.stringify(get(key))}`);
  }
  return n;
}

const SPOT_KEYS = ['spotOnDemandBase', 'spotOnDemandWeight', 'spotWeight'] as const;
const GPU_KEYS = ['gpusPerTask', 'gpuMaxInstances', 'gpuRootVolumeGiB', 'gpuAmi'] as const;

/** The Spot mix from context; its keys need `spot=true`. */
function spotStrategy(get: Lookup, spot: boolean | undefined): SpotStrategy | undefined {
  const stray = SPOT_KEYS.find((k) => given(get, k));
  if (stray === undefined) return undefined;
  if (spot !== true) throw new Error(`context ${stray} needs spot=true`);
  return {
    onDemandBase: count(get, 'spotOnDemandBase'),
    onDemandWeight: count(get, 'spotOnDemandWeight'),
    spotWeight: count(get, 'spotWeight'),
  };
}

/** GPU workers from context: `gpuInstanceTypes` turns them on; the other gpu keys need it. */
function gpuWorkers(get: Lookup): GpuWorkers | undefined {
  const types = list(get, 'gpuInstanceTypes');
  if (types === undefined || types.length === 0) {
    const stray = GPU_KEYS.find((k) => given(get, k));
    if (stray !== undefined) throw new Error(`context ${stray} needs gpuInstanceTypes (e.g. g5.xlarge,g6.xlarge)`);
    return undefined;
  }
  const bad = types.find((t) => !/^[a-z][a-z0-9-]*\.[a-z0-9]+$/.test(t));
  if (bad !== undefined) {
    throw new Error(`context gpuInstanceTypes must be instance types like g5.xlarge, comma-separated, got ${bad}`);
  }
  const ami = str(get, 'gpuAmi');
  if (ami !== undefined && ami !== 'al2023' && ami !== 'al2') {
    throw new Error(`context gpuAmi must be al2023 or al2, got ${ami}`);
  }
  return {
    instanceTypes: types.map((t) => new ec2.InstanceType(t)),
    gpusPerTask: count(get, 'gpusPerTask'),
    maxInstances: count(get, 'gpuMaxInstances'),
    rootVolumeGiB: count(get, 'gpuRootVolumeGiB'),
    ami: ami as GpuAmi | undefined,
  };
}

const PIPELINE_KEYS = ['owner', 'bucketName', 'inputPrefix', 'outputPrefix'] as const;

/**
 * The S3 pipeline from context: a JSON object (cdk.json), or JSON text holding one (the command
 * line), with `owner` and optionally `bucketName`, `inputPrefix`, `outputPrefix`, all strings.
 */
function pipeline(get: Lookup): PipelineOptions | undefined {
  if (!given(get, 'pipeline')) return undefined;
  const v = jsonish(get, 'pipeline', () => true);
  const example = '{"owner": "iam:arn:aws:sts::123456789012:assumed-role/Ops"}';
  if (typeof v !== 'object' || v === null || Array.isArray(v)) {
    throw new Error(`context pipeline must be a json object such as ${example}, got ${JSON.stringify(v)}`);
  }
  const o = v as Record<string, unknown>;
  const stray = Object.keys(o).find((k) => !(PIPELINE_KEYS as readonly string[]).includes(k));
  if (stray !== undefined) {
    throw new Error(`context pipeline has an unknown key ${stray}: it takes ${PIPELINE_KEYS.join(', ')}`);
  }
  for (const k of PIPELINE_KEYS) {
    if (o[k] !== undefined && typeof o[k] !== 'string') {
      throw new Error(`context pipeline.${k} must be a string, got ${JSON.stringify(o[k])}`);
    }
  }
  if (o.owner === undefined || o.owner === '') {
    throw new Error(`context pipeline needs an owner, the caller who sees its jobs: ${example}`);
  }
  return o as unknown as PipelineOptions;
}

const EVENTS_KEYS = ['topics', 'eventBus'] as const;

/**
 * Where job ends are published, from context: a JSON object (cdk.json), or JSON text holding one
 * (the command line), with `topics` (true or false) and `eventBus` (`"default"`, a bus name or
 * ARN, or true for the default bus).
 */
function events(get: Lookup): EventsOptions | undefined {
  if (!given(get, 'events')) return undefined;
  const v = jsonish(get, 'events', () => true);
  const example = '{"topics": true, "eventBus": "default"}';
  if (typeof v !== 'object' || v === null || Array.isArray(v)) {
    throw new Error(`context events must be a json object such as ${example}, got ${JSON.stringify(v)}`);
  }
  const o = v as Record<string, unknown>;
  const stray = Object.keys(o).find((k) => !(EVENTS_KEYS as readonly string[]).includes(k));
  if (stray !== undefined) {
    throw new Error(`context events has an unknown key ${stray}: it takes ${EVENTS_KEYS.join(', ')}, e.g. ${example}`);
  }
  if (o.topics !== undefined && typeof o.topics !== 'boolean') {
    throw new Error(`context events.topics must be true or false, got ${JSON.stringify(o.topics)}`);
  }
  const bus = o.eventBus;
  if (bus !== undefined && bus !== true && bus !== false && (typeof bus !== 'string' || bus === '')) {
    throw new Error(
      `context events.eventBus must be "default", a bus name or ARN, or true (the default bus), got ${JSON.stringify(bus)}`,
    );
  }
  return {
    ...(o.topics === undefined ? {} : { topics: o.topics }),
    ...(bus === undefined || bus === false ? {} : { eventBus: bus === true ? 'default' : bus }),
  };
}

/** Relative paths in context are relative to the repository root. */
function repoPath(p: string | undefined): string | undefined {
  return p === undefined ? undefined : path.resolve(REPO_ROOT, p);
}

/** The stack's id and props from context; throws a lowercase message on a bad value. */
export function stackConfigFromContext(node: Node): { name: string; props: SluiceStackProps } {
  const get: Lookup = (key) => node.tryGetContext(key);
  for (const [old, replacement] of Object.entries(REPLACED_CONTEXT_KEYS)) {
    const v = node.tryGetContext(old);
    if (v !== undefined && v !== null && v !== '') {
      throw new Error(`context ${old} is no longer read: use ${replacement}`);
    }
  }
  const name = str(get, 'name') ?? 'Sluice';
  if (!/^[A-Za-z][A-Za-z0-9-]{0,127}$/.test(name)) {
    throw new Error(`context name must be a valid stack name (letters, digits, hyphens), got ${name}`);
  }

  const vpcId = str(get, 'vpcId');
  const subnetIds = list(get, 'subnetIds');
  const availabilityZones = list(get, 'availabilityZones');
  if (vpcId === undefined && (subnetIds !== undefined || availabilityZones !== undefined)) {
    throw new Error('context subnetIds and availabilityZones need vpcId');
  }
  if (vpcId !== undefined && (subnetIds === undefined || availabilityZones === undefined)) {
    throw new Error('context vpcId needs subnetIds and availabilityZones (no lookups are made)');
  }

  const jwtIssuer = str(get, 'jwtIssuer');
  const jwtAudience = list(get, 'jwtAudience');
  if ((jwtIssuer === undefined) !== (jwtAudience === undefined)) {
    throw new Error('context jwtIssuer and jwtAudience go together');
  }

  const efsFileSystemId = str(get, 'efsFileSystemId');
  const efsAccessPointId = str(get, 'efsAccessPointId');
  if ((efsFileSystemId === undefined) !== (efsAccessPointId === undefined)) {
    throw new Error('context efsFileSystemId and efsAccessPointId go together');
  }

  const seconds = (key: ContextKey) => {
    const n = num(get, key);
    if (n !== undefined && (!Number.isInteger(n) || n < 0)) {
      throw new Error(`context ${key} must be a whole number of seconds, got ${JSON.stringify(get(key))}`);
    }
    return n === undefined ? undefined : Duration.seconds(n);
  };
  const image = workerImage(get);
  const handler = workerHandler(get, seconds);
  if (image !== undefined && handler === undefined) {
    throw new Error(
      "context handlerMode is required with a worker image of your own (demo, process or http): the task's " +
        "environment sets SLUICE_HANDLER and overrides the image's",
    );
  }

  const props: SluiceStackProps = {
    lambdaAssetDir: repoPath(str(get, 'lambdaAssetDir')),
    scalingPolicyFile: repoPath(str(get, 'scalingPolicyFile')),
    existingVpc:
      vpcId === undefined
        ? undefined
        : {
            vpcId,
            subnetIds: subnetIds ?? [],
            availabilityZones: availabilityZones ?? [],
            assignPublicIp: bool(get, 'assignPublicIp'),
          },
    taskCpu: num(get, 'taskCpu'),
    taskMemoryMiB: num(get, 'taskMemory'),
    taskStorageGiB: num(get, 'taskStorage'),
    workerConcurrency: num(get, 'workerConcurrency'),
    maxTaskAge: seconds('maxTaskAgeSeconds'),
    workerImage: image,
    workerHandler: handler,
    minTasks: num(get, 'minTasks'),
    maxTasks: num(get, 'maxTasks'),
    spot: bool(get, 'spot'),
    spotStrategy: spotStrategy(get, bool(get, 'spot')),
    gpu: gpuWorkers(get),
    cpuArchitecture: str(get, 'cpuArchitecture') as CpuArchitecture | undefined,
    backlogReservedConcurrency: num(get, 'backlogReservedConcurrency'),
    deployProvesImage: bool(get, 'deployProvesImage'),
    smokeInput: given(get, 'smokeInput') ? jsonish(get, 'smokeInput', () => true) : undefined,
    jobTimeout: seconds('jobTimeoutSeconds'),
    maxJobTimeout: seconds('maxJobTimeoutSeconds'),
    leaseDuration: seconds('leaseSeconds'),
    maxAttempts: num(get, 'maxAttempts'),
    maxReceiveCount: num(get, 'maxReceiveCount'),
    retentionDays: num(get, 'retentionDays'),
    ownerScope: ownerScope(str(get, 'ownerScope')),
    pinnedSessionRoleArns: list(get, 'pinnedSessionRoles'),
    operatorArns: list(get, 'operators'),
    inputBuckets: list(get, 'inputBuckets'),
    drainTimeout: seconds('drainSeconds'),
    jwt: jwtIssuer === undefined ? undefined : { issuer: jwtIssuer, audience: jwtAudience ?? [] },
    apiRateLimit: num(get, 'apiRateLimit'),
    apiBurstLimit: num(get, 'apiBurstLimit'),
    alarmEmail: str(get, 'alarmEmail'),
    logRemovalPolicy: removalPolicy(get, 'logRemovalPolicy'),
    modelFileSystem:
      efsFileSystemId === undefined || efsAccessPointId === undefined
        ? undefined
        : {
            fileSystemId: efsFileSystemId,
            accessPointId: efsAccessPointId,
            mountPath: str(get, 'efsMountPath'),
            securityGroupId: str(get, 'efsSecurityGroupId'),
          },
    pipeline: pipeline(get),
    events: events(get),
  };
  return { name, props };
}
