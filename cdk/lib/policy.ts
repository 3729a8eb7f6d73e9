import * as fs from 'node:fs';
import * as path from 'node:path';

/** The repository root (this file lives in `<repo>/cdk/lib`). */
export const REPO_ROOT = path.resolve(__dirname, '..', '..');

/** `scaling/policy.json`, shared with the backlog Lambda and `sluice simulate`. */
export const DEFAULT_POLICY_FILE = path.join(REPO_ROOT, 'scaling', 'policy.json');

/**
 * The policy file's fields, in declaration order (the order of `src/scaling/policy.rs`, of the
 * checks, and of the "the fields are …" list in the unknown-field message).
 */
export const POLICY_FIELDS = [
  'namespace',
  'acceptable_latency_seconds',
  'average_job_seconds',
  'jobs_per_task',
  'task_startup_seconds',
  'min_tasks',
  'max_tasks',
  'metric_period_seconds',
  'keep_idle_startups',
] as const;

/** The most start-ups a spare task may be kept. */
export const MAX_KEEP_IDLE_STARTUPS = 10;

/** The largest service ECS allows (tasks per service), the bound of `min_tasks` and `max_tasks`. */
export const MAX_TASKS_LIMIT = 5000;

/** The sampling periods that divide the minute, the allowed `metric_period_seconds`. */
export const METRIC_PERIODS = [1, 2, 3, 4, 5, 6, 10, 12, 15, 20, 30, 60] as const;

/** `scaling/policy.json` (format v3: one controller), validated and typed. */
export interface ScalingPolicy {
  readonly namespace: string;
  readonly acceptableLatencySeconds: number;
  readonly averageJobSeconds: number;
  readonly jobsPerTask: number;
  /** Seconds from a task's request until it takes jobs (the image's real start-up). */
  readonly taskStartupSeconds: number;
  readonly minTasks: number;
  readonly maxTasks: number;
  /** Seconds between two samples of the backlog Lambda. */
  readonly metricPeriodSeconds: number;
  /**
   * How long the backlog Lambda keeps a spare task (no job waits for it, it holds none), in
   * start-ups: 1 is the break-even, 0 releases it on the next sample.
   */
  readonly keepIdleStartups: number;
}

type Json = Record<string, unknown>;

/** The error of a bad policy: `scaling policy: <path> <rule>`. */
function fail(message: string): never {
  throw new Error(`scaling policy: ${message}`);
}

function isObject(v: unknown): v is Json {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/** The first key (in JS's default string sort) that is not one of `fields`, if any. */
function rejectUnknown(obj: Json, fields: readonly string[], prefix: string): void {
  const unknown = Object.keys(obj)
    .filter((k) => !fields.includes(k))
    .sort();
  if (unknown.length > 0) {
    fail(`unknown field ${prefix}${unknown[0]} (the fields are ${fields.join(', ')})`);
  }
}

/** JSON.parse accepts numbers beyond f64 as ±Infinity; serde_json (the Rust side) rejects them. */
function hasNonFiniteNumber(v: unknown): boolean {
  if (typeof v === 'number') return !Number.isFinite(v);
  if (Array.isArray(v)) return v.some(hasNonFiniteNumber);
  if (isObject(v)) return Object.values(v).some(hasNonFiniteNumber);
  return false;
}

/** Reads the fields of one JSON object in declaration order, with their paths in the messages. */
class Reader {
  constructor(
    private readonly obj: Json,
    private readonly prefix: string,
  ) {}

  private present(key: string): unknown {
    if (!Object.prototype.hasOwnProperty.call(this.obj, key)) {
      fail(`${this.prefix}${key} is required`);
    }
    return this.obj[key];
  }

  string(key: string): string {
    const v = this.present(key);
    if (typeof v !== 'string') {
      fail(`${this.prefix}${key} must be a string, got ${JSON.stringify(v)}`);
    }
    return v;
  }

  /** A number, and `ok` of it, or `<path> <rule>, got <v>`. */
  number(key: string, ok: (v: number) => boolean, rule: string): number {
    const v = this.present(key);
    if (typeof v !== 'number') {
      fail(`${this.prefix}${key} must be a number, got ${JSON.stringify(v)}`);
    }
    if (!ok(v)) {
      fail(`${this.prefix}${key} ${rule}, got ${String(v)}`);
    }
    return v;
  }

  /** A whole number (4.0 is one), and `ok` of it. */
  whole(key: string, ok: (v: number) => boolean, rule: string): number {
    return this.number(
      key,
      (v) => {
        if (!Number.isInteger(v)) {
          fail(`${this.prefix}${key} must be a whole number, got ${String(v)}`);
        }
        return ok(v);
      },
      rule,
    );
  }
}

/**
 * Unicode White_Space, what Rust's `str::trim` strips (JS's `trim` differs: it strips U+FEFF and
 * keeps U+0085), so a blank namespace is the same on both sides.
 */
const BLANK = /^[\u0009-\u000D\u0020\u0085\u00A0\u1680\u2000-\u200A\u2028\u2029\u202F\u205F\u3000]*$/;

const between = (lo: number, hi: number) => (v: number) => v >= lo && v <= hi;
const SECONDS_RULE = 'must be greater than 0 and at most 86400';
const secondsOk = (v: number) => v > 0 && v <= 86_400;

/**
 * Parses and validates the policy file's text. Accepts and rejects exactly what
 * `scaling/fixtures/policies.json` says, with the messages of `src/scaling/policy.rs`: the first
 * unknown field (sorted), then each field in declaration order (presence, type, whole number,
 * range), then the cross-field rules.
 */
export function parseScalingPolicy(text: string): ScalingPolicy {
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch (e) {
    throw new Error(`scaling policy is not valid json: ${(e as Error).message}`);
  }
  if (hasNonFiniteNumber(parsed)) {
    throw new Error('scaling policy is not valid json: number out of range');
  }
  if (!isObject(parsed)) {
    throw new Error('scaling policy must be a JSON object');
  }
  rejectUnknown(parsed, POLICY_FIELDS, '');
  const r = new Reader(parsed, '');

  const namespace = r.string('namespace');
  if (BLANK.test(namespace)) {
    fail('namespace must not be empty');
  }
  const chars = [...namespace].length;
  if (chars > 255) {
    fail(`namespace must be at most 255 characters, got ${chars}`);
  }
  if (namespace.startsWith('AWS/')) {
    fail(`namespace must not start with AWS/ (reserved by CloudWatch), got ${JSON.stringify(namespace)}`);
  }
  const acceptableLatencySeconds = r.number('acceptable_latency_seconds', secondsOk, SECONDS_RULE);
  const averageJobSeconds = r.number('average_job_seconds', secondsOk, SECONDS_RULE);
  const jobsPerTask = r.whole('jobs_per_task', between(1, 1000), 'must be between 1 and 1000');
  const taskStartupSeconds = r.number('task_startup_seconds', secondsOk, SECONDS_RULE);
  const minTasks = r.whole('min_tasks', between(0, MAX_TASKS_LIMIT), `must be between 0 and ${MAX_TASKS_LIMIT}`);
  const maxTasks = r.whole('max_tasks', between(1, MAX_TASKS_LIMIT), `must be between 1 and ${MAX_TASKS_LIMIT}`);
  const metricPeriodSeconds = r.whole(
    'metric_period_seconds',
    (v) => (METRIC_PERIODS as readonly number[]).includes(v),
    'must divide 60 (1, 2, 3, 4, 5, 6, 10, 12, 15, 20, 30 or 60)',
  );

  const keepIdleStartups = r.number(
    'keep_idle_startups',
    between(0, MAX_KEEP_IDLE_STARTUPS),
    `must be between 0 and ${MAX_KEEP_IDLE_STARTUPS}`,
  );

  if (minTasks > maxTasks) {
    fail(`min_tasks (${minTasks}) must not exceed max_tasks (${maxTasks})`);
  }

  return {
    namespace,
    acceptableLatencySeconds,
    averageJobSeconds,
    jobsPerTask,
    taskStartupSeconds,
    minTasks,
    maxTasks,
    metricPeriodSeconds,
    keepIdleStartups,
  };
}

/** Reads and validates a policy file at synth time. */
export function loadScalingPolicy(file: string = DEFAULT_POLICY_FILE): ScalingPolicy {
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch (e) {
    throw new Error(`scaling policy: cannot read ${file} (${(e as Error).message})`);
  }
  return parseScalingPolicy(text);
}

/** Seconds a spare task is kept: `keep_idle_startups × task_startup_seconds`. */
export function keepIdleSeconds(p: ScalingPolicy): number {
  return p.keepIdleStartups * p.taskStartupSeconds;
}

/** Target backlog per task = acceptable latency / average job duration × jobs per task. */
export function targetBacklogPerTask(p: ScalingPolicy): number {
  return (p.acceptableLatencySeconds / p.averageJobSeconds) * p.jobsPerTask;
}

/** The policy in the file's format (fields in declaration order), as `parseScalingPolicy` reads it. */
export function policyJson(p: ScalingPolicy): string {
  return JSON.stringify({
    namespace: p.namespace,
    acceptable_latency_seconds: p.acceptableLatencySeconds,
    average_job_seconds: p.averageJobSeconds,
    jobs_per_task: p.jobsPerTask,
    task_startup_seconds: p.taskStartupSeconds,
    min_tasks: p.minTasks,
    max_tasks: p.maxTasks,
    metric_period_seconds: p.metricPeriodSeconds,
    keep_idle_startups: p.keepIdleStartups,
  });
}

/**
 * The policy as deployed: `min_tasks` and `max_tasks` replaced by the stack's bounds (those of the
 * scalable target), validated again, so the backlog Lambda never raises the service above what
 * Application Auto Scaling allows and never starts on a policy it would reject.
 */
export function effectivePolicy(p: ScalingPolicy, minTasks: number, maxTasks: number): ScalingPolicy {
  return parseScalingPolicy(policyJson({ ...p, minTasks, maxTasks }));
}

/** {@link effectivePolicy} as the JSON text of `SLUICE_SCALING_POLICY`. */
export function effectivePolicyJson(p: ScalingPolicy, minTasks: number, maxTasks: number): string {
  return policyJson(effectivePolicy(p, minTasks, maxTasks));
}
