import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { Binary, ENV, HandlerMode, NOT_DEPLOYED, READS, WORKER_MODE_READS, workerReads } from '../lib/env';
import { WorkerHandler } from '../lib/handler';
import { WorkerImage } from '../lib/worker-image';
import { REPO, binaryEnvs, template } from './helpers';

const ENV_RS = path.join(REPO, 'src', 'env.rs');

interface RustVar {
  readonly constName: string;
  readonly name: string;
  /** The binaries its doc comment says read it ("Read by: submit, worker, …"). */
  readonly readBy: string;
}

/** Every `pub const NAME: &str = "SLUICE_…";` of src/env.rs, with the doc comment above it. */
function rustVars(): RustVar[] {
  const text = fs.readFileSync(ENV_RS, 'utf8');
  const re = /((?:^[ \t]*\/\/\/.*\n)*)^[ \t]*pub const ([A-Z0-9_]+): &str = "(SLUICE_[A-Z0-9_]+)";/gm;
  const vars: RustVar[] = [];
  for (const m of text.matchAll(re)) {
    const doc = m[1].replace(/^[ \t]*\/\/\/ ?/gm, '').replace(/\s+/g, ' ');
    const readBy = /Read by: ([^.]*)\./.exec(doc)?.[1] ?? '';
    vars.push({ constName: m[2], name: m[3], readBy });
  }
  return vars;
}

/** The S3 pipeline, which every stack of these tests has, so that the ingest function is deployed. */
const PIPELINE = { owner: 'iam:arn:aws:sts::123456789012:assumed-role/Ops' };

/** Both kinds of event target, which every stack of these tests has, so that their variables are set. */
const EVENTS = { topics: true, eventBus: 'default' };

/** One stack per handler mode, with everything the mode can have. */
const HANDLERS: Record<HandlerMode, WorkerHandler> = {
  demo: { mode: 'demo' },
  process: { mode: 'process', command: ['python3', '/app/handler.py'] },
  http: { mode: 'http', modelServer: { image: WorkerImage.fromUri('ghcr.io/example/model-server:1') } },
};

/** The variables a synthesized stack gives each binary (the worker in one handler mode). */
function deployedEnvIn(mode: HandlerMode): Record<Binary, Record<string, unknown>> {
  const { stack, t } = template({ workerHandler: HANDLERS[mode], pipeline: PIPELINE, events: EVENTS });
  return binaryEnvs(stack, t);
}

const MODES = Object.keys(HANDLERS) as HandlerMode[];

/** What each binary gets in any handler mode (the union of the modes' variables). */
function deployedEnv(): Record<Binary, Record<string, unknown>> {
  const all = MODES.map(deployedEnvIn);
  const union = (b: Binary) => Object.assign({}, ...all.map((e) => e[b]));
  return {
    submit: union('submit'),
    status: union('status'),
    backlog: union('backlog'),
    ingest: union('ingest'),
    worker: union('worker'),
  };
}

test('src/env.rs parses into the variables the rust side declares', () => {
  const vars = rustVars();
  assert.ok(vars.length >= 10, `only ${vars.length} variables found in ${ENV_RS}`);
  for (const v of vars) {
    assert.equal(v.name, `SLUICE_${v.constName}`, 'constant and variable names line up');
  }
});

test('the cdk module knows exactly the variables of src/env.rs', () => {
  const rust = new Set(rustVars().map((v) => v.name));
  const ts = new Set<string>(Object.values(ENV));
  assert.deepEqual([...ts].filter((n) => !rust.has(n)), [], 'names in lib/env.ts missing from src/env.rs');
  assert.deepEqual([...rust].filter((n) => !ts.has(n)), [], 'names in src/env.rs missing from lib/env.ts');
  // The constant names match as well.
  for (const v of rustVars()) {
    assert.equal((ENV as Record<string, string>)[v.constName], v.name);
  }
});

test('every deployed variable exists in src/env.rs, and every rust variable but the local ones is deployed', () => {
  const rust = new Set(rustVars().map((v) => v.name));
  const deployed = new Set(Object.values(deployedEnv()).flatMap((env) => Object.keys(env)));
  assert.deepEqual([...deployed].filter((n) => !rust.has(n)), [], 'set by the stack but unknown to rust');
  const expected = [...rust].filter((n) => !(NOT_DEPLOYED as readonly string[]).includes(n)).sort();
  assert.deepEqual([...deployed].sort(), expected);
  assert.deepEqual(
    [...NOT_DEPLOYED].sort(),
    [
      'SLUICE_HEARTBEAT_SECONDS',
      'SLUICE_LISTEN_ADDR',
      'SLUICE_RECEIVE_WAIT_SECONDS',
      'SLUICE_RETRY_BASE_SECONDS',
      'SLUICE_RETRY_MAX_SECONDS',
      'SLUICE_WEBHOOK_ALLOW_LOOPBACK',
      'SLUICE_WORKER_ID',
    ],
  );
});

test('each binary gets exactly the variables it reads', () => {
  const env = deployedEnv();
  for (const binary of Object.keys(READS) as Binary[]) {
    assert.deepEqual(Object.keys(env[binary]).sort(), [...READS[binary]].sort(), binary);
  }
  assert.equal(env.worker.SLUICE_LOG_FORMAT, 'json');
  assert.equal(env.status.SLUICE_QUEUE_URL, undefined, 'status does not read the queue');
  assert.equal(env.ingest.SLUICE_PIPELINE_OWNER, PIPELINE.owner);
  assert.equal(env.ingest.SLUICE_PIPELINE_INPUT_PREFIX, 'in/');
  assert.equal(env.ingest.SLUICE_PIPELINE_OUTPUT_PREFIX, 'out/');
  assert.equal(env.ingest.SLUICE_PAYLOAD_BUCKET, undefined, 'ingest reads the pipeline bucket, not the payload bucket');
  assert.ok('SLUICE_PAYLOAD_BUCKET' in env.backlog, 'the backlog function\'s outbox copies from the payload bucket');
});

test('in each handler mode the worker gets the common variables and only that mode\'s own', () => {
  const modal = new Set(Object.values(WORKER_MODE_READS).flat());
  assert.ok(modal.size > 0);
  for (const mode of MODES) {
    const env = deployedEnvIn(mode);
    assert.deepEqual(Object.keys(env.worker).sort(), workerReads(mode).sort(), mode);
    assert.equal(env.worker.SLUICE_HANDLER, mode);
    for (const name of modal) {
      assert.equal(name in env.worker, WORKER_MODE_READS[mode].includes(name), `${mode}: ${name}`);
    }
    // The lambdas do not depend on the mode.
    assert.deepEqual(Object.keys(env.submit).sort(), [...READS.submit].sort(), mode);
  }
  assert.ok(READS.submit.includes(ENV.MAX_JOB_TIMEOUT_SECONDS), 'submit checks timeout_seconds against the maximum');
});

test('each binary gets exactly what the doc comments of src/env.rs say it reads', () => {
  const vars = rustVars();
  assert.ok(vars.every((v) => v.readBy !== ''), 'every variable documents its readers ("Read by: …")');
  const env = deployedEnv();
  for (const binary of Object.keys(READS) as Binary[]) {
    const documented = vars
      .filter((v) => {
        const readers = v.readBy.toLowerCase();
        return readers.includes('every binary') || new RegExp(`\\b${binary}\\b`).test(readers);
      })
      .map((v) => v.name)
      .filter((n) => !(NOT_DEPLOYED as readonly string[]).includes(n))
      .sort();
    assert.deepEqual(Object.keys(env[binary]).sort(), documented, `${binary}: set by the stack vs "Read by:" in src/env.rs`);
  }
});
