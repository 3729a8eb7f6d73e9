import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import {
  POLICY_FIELDS,
  effectivePolicy,
  effectivePolicyJson,
  keepIdleSeconds,
  loadScalingPolicy,
  parseScalingPolicy,
  policyJson,
  targetBacklogPerTask,
} from '../lib/policy';
import { POLICY_FILE, REPO, policyFile } from './helpers';

/** The cases both the Rust side (src/scaling/policy.rs) and this app must agree on. */
const FIXTURES = path.join(REPO, 'scaling', 'fixtures', 'policies.json');

interface Case {
  readonly name: string;
  readonly patch?: Record<string, unknown>;
  readonly text?: string;
  readonly error?: string;
  readonly error_prefix?: string;
}

const fixtures: { valid: Case[]; invalid: Case[] } = JSON.parse(fs.readFileSync(FIXTURES, 'utf8'));

/** The case's policy text: `text` as is, or the shipped file with `patch` applied (null removes). */
function textOf(c: Case): string {
  if (c.text !== undefined) return c.text;
  const policy = policyFile();
  for (const [key, value] of Object.entries(c.patch ?? {})) {
    if (value === null) delete policy[key];
    else policy[key] = value;
  }
  return JSON.stringify(policy);
}

/** The message parseScalingPolicy throws, or undefined when it accepts. */
function errorOf(text: string): string | undefined {
  try {
    parseScalingPolicy(text);
    return undefined;
  } catch (e) {
    return (e as Error).message;
  }
}

test('the fixture file has cases of both kinds, each with one expectation', () => {
  assert.ok(fixtures.valid.length >= 5);
  assert.ok(fixtures.invalid.length >= 30);
  for (const c of fixtures.invalid) {
    assert.ok((c.error === undefined) !== (c.error_prefix === undefined), c.name);
  }
  const names = [...fixtures.valid, ...fixtures.invalid].map((c) => c.name);
  assert.equal(new Set(names).size, names.length, 'case names are unique');
});

for (const c of fixtures.valid) {
  test(`valid: ${c.name}`, () => {
    const text = textOf(c);
    const p = parseScalingPolicy(text);
    // What was parsed is what the file says (field by field).
    const raw = JSON.parse(text);
    assert.deepEqual(JSON.parse(policyJson(p)), raw);
  });
}

for (const c of fixtures.invalid) {
  test(`invalid: ${c.name}`, () => {
    const message = errorOf(textOf(c));
    assert.notEqual(message, undefined, 'rejected');
    if (c.error !== undefined) {
      assert.equal(message, c.error);
    } else {
      assert.ok(message!.startsWith(c.error_prefix!), `${message} starts with ${c.error_prefix}`);
    }
  });
}

test('the shipped file parses into the typed policy', () => {
  const file = policyFile();
  const p = loadScalingPolicy(POLICY_FILE);
  assert.deepEqual(p, {
    namespace: file.namespace,
    acceptableLatencySeconds: file.acceptable_latency_seconds,
    averageJobSeconds: file.average_job_seconds,
    jobsPerTask: file.jobs_per_task,
    taskStartupSeconds: file.task_startup_seconds,
    minTasks: file.min_tasks,
    maxTasks: file.max_tasks,
    metricPeriodSeconds: file.metric_period_seconds,
    keepIdleStartups: file.keep_idle_startups,
  });
  assert.equal(keepIdleSeconds(p), file.keep_idle_startups * file.task_startup_seconds);
  assert.equal(targetBacklogPerTask(p), (file.acceptable_latency_seconds / file.average_job_seconds) * file.jobs_per_task);
});

test('the rendered policy keeps the declaration order and parses back to itself', () => {
  const p = loadScalingPolicy(POLICY_FILE);
  const text = policyJson(p);
  assert.deepEqual(Object.keys(JSON.parse(text)), [...POLICY_FIELDS]);
  assert.deepEqual(parseScalingPolicy(text), p);
});

test('the effective policy takes the deployed bounds and is validated again', () => {
  const p = loadScalingPolicy(POLICY_FILE);
  const e = JSON.parse(effectivePolicyJson(p, 2, 7));
  assert.deepEqual(e, { ...policyFile(), min_tasks: 2, max_tasks: 7 });
  assert.deepEqual(effectivePolicy(p, p.minTasks, p.maxTasks), p);
  assert.throws(() => effectivePolicy(p, 0, 5001), { message: 'scaling policy: max_tasks must be between 1 and 5000, got 5001' });
  assert.throws(() => effectivePolicy(p, 3, 2), { message: 'scaling policy: min_tasks (3) must not exceed max_tasks (2)' });
});

test('edge cases beyond the fixtures', () => {
  const file = policyFile();
  const patched = (patch: Record<string, unknown>) => JSON.stringify({ ...file, ...patch });
  // Null is present with the wrong type, not absent.
  assert.equal(errorOf(patched({ max_tasks: null })), 'scaling policy: max_tasks must be a number, got null');
  assert.equal(errorOf(patched({ keep_idle_startups: null })), 'scaling policy: keep_idle_startups must be a number, got null');
  // Every non-object top level.
  for (const text of ['null', '7', '"policy"', 'true']) {
    assert.equal(errorOf(text), 'scaling policy must be a JSON object', text);
  }
  // Unknown fields are reported before a missing or bad one.
  assert.match(errorOf(JSON.stringify({ bogus: 1 }))!, /^scaling policy: unknown field bogus \(/);
  // The first missing field in declaration order.
  assert.equal(errorOf('{}'), 'scaling policy: namespace is required');
  // Code points, not UTF-16 units: 255 astral characters are allowed.
  assert.equal(errorOf(patched({ namespace: '\u{1F600}'.repeat(255) })), undefined);
  assert.equal(
    errorOf(patched({ namespace: '\u{1F600}'.repeat(256) })),
    'scaling policy: namespace must be at most 255 characters, got 256',
  );
  // Blank as Rust's str::trim sees it (Unicode White_Space): U+0085 is blank, U+FEFF is not.
  assert.equal(errorOf(patched({ namespace: ' \u0085\u3000\t' })), 'scaling policy: namespace must not be empty');
  assert.equal(errorOf(patched({ namespace: '\uFEFF' })), undefined);
  // Neither negative divisors nor zero divide the minute here.
  for (const v of [0, -10, -60]) {
    assert.equal(
      errorOf(patched({ metric_period_seconds: v })),
      `scaling policy: metric_period_seconds must divide 60 (1, 2, 3, 4, 5, 6, 10, 12, 15, 20, 30 or 60), got ${v}`,
    );
  }
  // Numbers beyond f64 are invalid json (serde_json rejects them; JSON.parse would give Infinity).
  assert.match(errorOf(patched({}).replace('"max_tasks":20', '"max_tasks":1e400'))!, /^scaling policy is not valid json/);
  // The keep-idle range includes both its bounds.
  assert.equal(errorOf(patched({ keep_idle_startups: 0 })), undefined);
  assert.equal(errorOf(patched({ keep_idle_startups: 10 })), undefined);
});
