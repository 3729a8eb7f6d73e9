import * as path from 'node:path';
import { Duration } from 'aws-cdk-lib';
import { Node } from 'constructs';
import { REPO_ROOT } from './policy';
import { SluiceStackProps } from './sluice-stack';

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
  'workerConcurrency',
  'workerHandler',
  'minTasks',
  'maxTasks',
  'spot',
  'jobTimeoutSeconds',
  'maxAttempts',
  'maxReceiveCount',
  'retentionDays',
  'drainSeconds',
  'jwtIssuer',
  'jwtAudience',
  'apiRateLimit',
  'apiBurstLimit',
  'alarmEmail',
  'efsFileSystemId',
  'efsAccessPointId',
  'efsMountPath',
  'efsSecurityGroupId',
] as const;

export type ContextKey = (typeof CONTEXT_KEYS)[number];

type Lookup = (key: ContextKey) => unknown;

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

/** Relative paths in context are relative to the repository root. */
function repoPath(p: string | undefined): string | undefined {
  return p === undefined ? undefined : path.resolve(REPO_ROOT, p);
}

/** The stack's id and props from context; throws a lowercase message on a bad value. */
export function stackConfigFromContext(node: Node): { name: string; props: SluiceStackProps } {
  const get: Lookup = (key) => node.tryGetContext(key);
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
    return n === undefined ? undefined : Duration.seconds(n);
  };

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
    workerConcurrency: num(get, 'workerConcurrency'),
    workerHandler: str(get, 'workerHandler'),
    minTasks: num(get, 'minTasks'),
    maxTasks: num(get, 'maxTasks'),
    spot: bool(get, 'spot'),
    jobTimeout: seconds('jobTimeoutSeconds'),
    maxAttempts: num(get, 'maxAttempts'),
    maxReceiveCount: num(get, 'maxReceiveCount'),
    retentionDays: num(get, 'retentionDays'),
    drainTimeout: seconds('drainSeconds'),
    jwt: jwtIssuer === undefined ? undefined : { issuer: jwtIssuer, audience: jwtAudience ?? [] },
    apiRateLimit: num(get, 'apiRateLimit'),
    apiBurstLimit: num(get, 'apiBurstLimit'),
    alarmEmail: str(get, 'alarmEmail'),
    modelFileSystem:
      efsFileSystemId === undefined || efsAccessPointId === undefined
        ? undefined
        : {
            fileSystemId: efsFileSystemId,
            accessPointId: efsAccessPointId,
            mountPath: str(get, 'efsMountPath'),
            securityGroupId: str(get, 'efsSecurityGroupId'),
          },
  };
  return { name, props };
}
