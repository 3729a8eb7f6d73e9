import * as fs from 'node:fs';
import * as path from 'node:path';

/** The repository root (this file lives in `<repo>/cdk/lib`). */
export const REPO_ROOT = path.resolve(__dirname, '..', '..');

/** `scaling/policy.json`, shared with the backlog Lambda and `sluice simulate`. */
export const DEFAULT_POLICY_FILE = path.join(REPO_ROOT, 'scaling', 'policy.json');

/** One scale-out step: at `aboveRatio` × target backlog per task, change capacity by `changePercent`. */
export interface ScaleOutStep {
  readonly aboveRatio: number;
  readonly changePercent: number;
}

/** The scale-in rule. */
export interface ScaleIn {
  readonly belowRatio: number;
  /** Negative. */
  readonly changePercent: number;
  readonly evaluationPeriods: number;
}

/** `scaling/policy.json`, typed. Fields may be added to the file; unknown ones are kept in `raw`. */
export interface ScalingPolicy {
  readonly namespace: string;
  readonly acceptableLatencySeconds: number;
  readonly averageJobSeconds: number;
  /** @default 1 */
  readonly jobsPerTask: number;
  readonly minTasks: number;
  readonly maxTasks: number;
  readonly metricPeriodSeconds: number;
  readonly scaleOutSteps: readonly ScaleOutStep[];
  readonly scaleIn: ScaleIn;
  readonly scaleToZeroAfterIdleSeconds: number;
  readonly cooldownSeconds: number;
  /** The parsed file, every field included, for the backlog Lambda. */
  readonly raw: Readonly<Record<string, unknown>>;
}

type Json = Record<string, unknown>;

function field(obj: Json, key: string, where: string): unknown {
  if (!(key in obj)) {
    throw new Error(`scaling policy: missing field ${where}${key}`);
  }
  return obj[key];
}

function num(obj: Json, key: string, where = ''): number {
  const v = field(obj, key, where);
  if (typeof v !== 'number' || !Number.isFinite(v)) {
    throw new Error(`scaling policy: ${where}${key} must be a number, got ${JSON.stringify(v)}`);
  }
  return v;
}

function int(obj: Json, key: string, min: number, where = ''): number {
  const v = num(obj, key, where);
  if (!Number.isInteger(v) || v < min) {
    throw new Error(`scaling policy: ${where}${key} must be an integer >= ${min}, got ${v}`);
  }
  return v;
}

function positive(obj: Json, key: string, where = ''): number {
  const v = num(obj, key, where);
  if (v <= 0) {
    throw new Error(`scaling policy: ${where}${key} must be positive, got ${v}`);
  }
  return v;
}

function object(v: unknown, what: string): Json {
  if (typeof v !== 'object' || v === null || Array.isArray(v)) {
    throw new Error(`scaling policy: ${what} must be an object`);
  }
  return v as Json;
}

/** Parses and validates the policy file's text; throws a lowercase message on a bad policy. */
export function parseScalingPolicy(text: string): ScalingPolicy {
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch (e) {
    throw new Error(`scaling policy: not valid json (${(e as Error).message})`);
  }
  const raw = object(parsed, 'the policy');

  const namespace = field(raw, 'namespace', '');
  if (typeof namespace !== 'string' || namespace.length === 0 || namespace.length > 255) {
    throw new Error('scaling policy: namespace must be a non-empty string of at most 255 characters');
  }
  if (namespace.startsWith('AWS/')) {
    throw new Error(`scaling policy: namespace ${namespace} is reserved by cloudwatch (AWS/...)`);
  }

  const stepsRaw = field(raw, 'scale_out_steps', '');
  if (!Array.isArray(stepsRaw) || stepsRaw.length === 0) {
    throw new Error('scaling policy: scale_out_steps must be a non-empty list');
  }
  const scaleOutSteps = stepsRaw.map((s, i) => {
    const o = object(s, `scale_out_steps[${i}]`);
    const where = `scale_out_steps[${i}].`;
    return { aboveRatio: positive(o, 'above_ratio', where), changePercent: positive(o, 'change_percent', where) };
  });
  scaleOutSteps.forEach((s, i) => {
    if (i > 0 && s.aboveRatio <= scaleOutSteps[i - 1].aboveRatio) {
      throw new Error('scaling policy: scale_out_steps must have strictly increasing above_ratio');
    }
  });

  const si = object(field(raw, 'scale_in', ''), 'scale_in');
  const scaleIn: ScaleIn = {
    belowRatio: positive(si, 'below_ratio', 'scale_in.'),
    changePercent: num(si, 'change_percent', 'scale_in.'),
    evaluationPeriods: int(si, 'evaluation_periods', 1, 'scale_in.'),
  };
  if (scaleIn.changePercent >= 0) {
    throw new Error(`scaling policy: scale_in.change_percent must be negative, got ${scaleIn.changePercent}`);
  }
  if (scaleIn.belowRatio >= scaleOutSteps[0].aboveRatio) {
    throw new Error('scaling policy: scale_in.below_ratio must be below the first scale_out_steps above_ratio');
  }

  const minTasks = int(raw, 'min_tasks', 0);
  const maxTasks = int(raw, 'max_tasks', 1);
  if (minTasks > maxTasks) {
    throw new Error(`scaling policy: min_tasks (${minTasks}) must not exceed max_tasks (${maxTasks})`);
  }

  const policy: ScalingPolicy = {
    namespace,
    acceptableLatencySeconds: positive(raw, 'acceptable_latency_seconds'),
    averageJobSeconds: positive(raw, 'average_job_seconds'),
    jobsPerTask: 'jobs_per_task' in raw ? positive(raw, 'jobs_per_task') : 1,
    minTasks,
    maxTasks,
    metricPeriodSeconds: int(raw, 'metric_period_seconds', 1),
    scaleOutSteps,
    scaleIn,
    scaleToZeroAfterIdleSeconds: int(raw, 'scale_to_zero_after_idle_seconds', 1),
    cooldownSeconds: int(raw, 'cooldown_seconds', 0),
    raw,
  };
  return policy;
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

/** Target backlog per task = acceptable latency / average job duration × jobs per task. */
export function targetBacklogPerTask(p: ScalingPolicy): number {
  return (p.acceptableLatencySeconds / p.averageJobSeconds) * p.jobsPerTask;
}

/**
 * The alarm period for the policy's metric period: CloudWatch alarms accept 10, 30 or a multiple
 * of 60 seconds, so other values round up to the next allowed period.
 */
export function alarmPeriodSeconds(metricPeriodSeconds: number): number {
  if (metricPeriodSeconds <= 10) return 10;
  if (metricPeriodSeconds <= 30) return 30;
  return Math.ceil(metricPeriodSeconds / 60) * 60;
}

/** One interval of a step scaling policy, as offsets from the alarm threshold. */
export interface StepInterval {
  readonly lowerBound?: number;
  readonly upperBound?: number;
  readonly adjustment: number;
}

/**
 * The scale-out alarm threshold and step intervals: step i covers
 * [above_ratio_i × target, above_ratio_{i+1} × target), the last one is unbounded, and the alarm
 * fires at the first step's lower bound.
 */
export function scaleOutSteps(p: ScalingPolicy): { threshold: number; steps: StepInterval[] } {
  const target = targetBacklogPerTask(p);
  const threshold = p.scaleOutSteps[0].aboveRatio * target;
  const steps = p.scaleOutSteps.map((s, i) => {
    const next = p.scaleOutSteps[i + 1];
    return {
      lowerBound: s.aboveRatio * target - threshold,
      upperBound: next === undefined ? undefined : next.aboveRatio * target - threshold,
      adjustment: s.changePercent,
    };
  });
  return { threshold, steps };
}

/** The policy as the backlog Lambda sees it: the file's fields, with min/max tasks as deployed. */
export function effectivePolicyJson(p: ScalingPolicy, minTasks: number, maxTasks: number): string {
  return JSON.stringify({ ...p.raw, min_tasks: minTasks, max_tasks: maxTasks });
}
