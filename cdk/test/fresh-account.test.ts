import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { RemovalPolicy } from 'aws-cdk-lib';
import * as ec2 from 'aws-cdk-lib/aws-ec2';
import { stackConfigFromContext } from '../lib/config';
import { SluiceStack, SluiceStackProps } from '../lib/sluice-stack';
import { WorkerImage } from '../lib/worker-image';
import { smokeInput } from '../scripts/smoke-input';
import { CDK_DIR, REPO, STUB_LAMBDAS, logicalId, sluiceStack, template, testApp } from './helpers';

/** The backlog function's resource. */
function backlogFunction(t: ReturnType<typeof template>['t'], stack: ReturnType<typeof template>['stack']): any {
  return t.toJSON().Resources[logicalId(stack.scaling.function)].Properties;
}

test('by default the backlog function reserves no concurrency, so a new account with a quota of 10 can deploy', () => {
  const { stack, t } = template();
  // Lambda refuses any reservation that leaves fewer than 100 (10 on a new account's quota of
  // 10) unreserved: a default reservation fails the deploy on such an account.
  assert.equal(backlogFunction(t, stack).ReservedConcurrentExecutions, undefined);
  for (const fn of Object.values(t.findResources('AWS::Lambda::Function'))) {
    assert.equal(fn.Properties.ReservedConcurrentExecutions, undefined);
  }
});

test('a reservation for the backlog function is asked for, and zero (which stops it) is refused', () => {
  const { stack, t } = template({ backlogReservedConcurrency: 2 });
  assert.equal(backlogFunction(t, stack).ReservedConcurrentExecutions, 2);
  assert.throws(() => template({ backlogReservedConcurrency: 0 }), /backlogReservedConcurrency must be a whole number from 1 to 10.*0 would throttle every run/);
  assert.throws(() => template({ backlogReservedConcurrency: 1.5 }), /backlogReservedConcurrency must be a whole number from 1 to 10/);
  const app = testApp({ backlogReservedConcurrency: '2' });
  assert.equal(stackConfigFromContext(app.node).props.backlogReservedConcurrency, 2);
});

test('throttled scheduled runs are retried by lambda for at most a minute, never delivered late', () => {
  const { stack, t } = template();
  const configs = Object.values(t.findResources('AWS::Lambda::EventInvokeConfig')).filter(
    (c) => c.Properties.FunctionName.Ref === logicalId(stack.scaling.function),
  );
  assert.equal(configs.length, 1);
  assert.equal(configs[0].Properties.MaximumEventAgeInSeconds, 60);
  assert.equal(configs[0].Properties.MaximumRetryAttempts, 0);
});

test('process mode on the default image (no shell, no python) is refused at synth', () => {
  const process = { mode: 'process' as const, command: ['python3', '/app/handler.py'] };
  for (const workerImage of [undefined, WorkerImage.fromDirectory('worker')]) {
    assert.throws(
      () => sluiceStack({ workerImage, workerHandler: process }),
      /process mode runs a program of yours, and the default worker image \(worker\/Dockerfile\) holds only sluice-worker.*workerImageDirectory=examples\/sentiment/,
    );
  }
  // http mode on the default image with nothing listening on its loopback is refused too.
  assert.throws(
    () => sluiceStack({ workerImage: undefined, workerHandler: { mode: 'http' } }),
    /http mode on the default worker image needs a modelServer or a modelUrl/,
  );
  // From context: handlerMode=process without an image of one's own.
  const app = testApp({ handlerMode: 'process', handlerCommand: 'python3 /app/handler.py', lambdaAssetDir: STUB_LAMBDAS });
  assert.throws(() => new SluiceStack(app, 'Ctx', stackConfigFromContext(app.node).props), /default worker image/);
  // An example's image runs process mode.
  sluiceStack({ workerImage: WorkerImage.fromDirectory('examples/sentiment'), workerHandler: process });
  sluiceStack({ workerImage: undefined, workerHandler: { mode: 'http', modelUrl: 'http://10.0.0.5:8080' } });
});

test('every function of the stack, the custom resources\' included, logs to a log group of the stack that goes with it', () => {
  for (const props of [{}, { gpu: { instanceTypes: [new ec2.InstanceType('g5.xlarge')] }, spot: true }]) {
    const { t } = template(props);
    const resources = t.toJSON().Resources;
    const functions = Object.entries(t.findResources('AWS::Lambda::Function'));
    assert.ok(functions.length >= 4, 'the three functions and the default security group\'s custom resource');
    for (const [id, fn] of functions) {
      const ref = fn.Properties.LoggingConfig?.LogGroup?.Ref;
      assert.ok(ref !== undefined, `${id} logs to a log group of the stack, not one Lambda makes that outlives it`);
      assert.equal(resources[ref].Type, 'AWS::Logs::LogGroup', id);
      assert.equal(resources[ref].DeletionPolicy, 'Delete', id);
    }
  }
  // logRemovalPolicy=retain keeps every one of them.
  const { t } = template({ logRemovalPolicy: RemovalPolicy.RETAIN });
  for (const g of Object.values(t.findResources('AWS::Logs::LogGroup'))) assert.equal(g.DeletionPolicy, 'Retain');
});

test('the smoke input follows the deployed handler, or is given', () => {
  const output = (props: SluiceStackProps) => {
    const outputs = template(props).t.toJSON().Outputs;
    return outputs.SmokeInput === undefined ? undefined : JSON.parse(outputs.SmokeInput.Value);
  };
  assert.deepEqual(output({}), { text: 'hello sluice' });
  const process = { mode: 'process' as const, command: ['python3', '/app/handler.py'] };
  // An example's smoke-input.json, beside its Dockerfile.
  for (const example of ['sentiment', 'resize', 'gpu-onnx']) {
    const file = path.join(REPO, 'examples', example, 'smoke-input.json');
    assert.deepEqual(output({ workerImage: WorkerImage.fromDirectory(`examples/${example}`), workerHandler: process }), JSON.parse(fs.readFileSync(file, 'utf8')));
  }
  // An image of one's own without one: no output, and make smoke asks for the input.
  assert.equal(output({ workerHandler: process }), undefined);
  assert.deepEqual(output({ workerHandler: process, smokeInput: { x: 1 } }), { x: 1 });
  const app = testApp({ smokeInput: '{"text": "hi"}' });
  assert.deepEqual(stackConfigFromContext(app.node).props.smokeInput, { text: 'hi' });
});

test('make smoke takes the deployed stack\'s smoke input, and says how to give one when there is none', () => {
  const out = { Sluice: { ApiUrl: 'https://x/', SmokeInput: '{"text":"I love this"}' } };
  assert.equal(smokeInput(out), '{"text":"I love this"}');
  assert.throws(() => smokeInput({ Own: { ApiUrl: 'https://y/' } }), /publishes no SmokeInput.*SLUICE_SMOKE_INPUT=/);
  assert.throws(() => smokeInput({ ...out, Other: { ApiUrl: 'https://y/' } }), /several stacks.*SLUICE_SMOKE_STACK/);
  assert.equal(smokeInput({ ...out, Other: { ApiUrl: 'https://y/' } }, 'Sluice'), '{"text":"I love this"}');
  // Through the command make smoke runs, on a real outputs file.
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'sluice-smoke-'));
  fs.writeFileSync(path.join(dir, 'outputs.json'), JSON.stringify(out));
  const run = (file: string) =>
    spawnSync(process.execPath, ['--import', 'tsx', path.join(CDK_DIR, 'scripts', 'smoke-input.ts'), file], { encoding: 'utf8', cwd: CDK_DIR });
  const ok = run(path.join(dir, 'outputs.json'));
  assert.equal(ok.status, 0, ok.stderr);
  assert.equal(ok.stdout, '{"text":"I love this"}');
  fs.writeFileSync(path.join(dir, 'own.json'), JSON.stringify({ Own: { ApiUrl: 'https://y/' } }));
  const none = run(path.join(dir, 'own.json'));
  assert.equal(none.status, 2);
  assert.match(none.stderr, /^smoke: stack Own publishes no SmokeInput/);
  assert.equal(run(path.join(dir, 'missing.json')).stdout, '', 'no outputs file: smoke.sh keeps its default');
});

test('every container of the task runs under an init process, on fargate and on gpu instances', () => {
  const server = { image: WorkerImage.fromUri('ghcr.io/example/model-server:1') };
  for (const props of [
    {},
    { spot: true },
    { workerHandler: { mode: 'http' as const, modelServer: server } },
    { gpu: { instanceTypes: [new ec2.InstanceType('g5.xlarge')] }, workerHandler: { mode: 'http' as const, modelServer: server } },
  ]) {
    const { t } = template(props);
    const defs = Object.values(t.findResources('AWS::ECS::TaskDefinition'));
    assert.equal(defs.length, 1);
    for (const c of defs[0].Properties.ContainerDefinitions) {
      // The init reaps what a handler's process group leaves behind and forwards SIGTERM.
      assert.equal(c.LinuxParameters?.InitProcessEnabled, true, `${c.Name} in ${JSON.stringify(Object.keys(props))}`);
    }
  }
});
