import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { App, Duration } from 'aws-cdk-lib';
import { CONTEXT_KEYS, stackConfigFromContext } from '../lib/config';
import { SluiceStack } from '../lib/sluice-stack';
import { REPO, STUB_LAMBDAS } from './helpers';

const config = (context: Record<string, unknown>) => stackConfigFromContext(new App({ context }).node).props;

test('the worker image comes from a directory, a dockerfile or a uri', () => {
  const dir = config({ workerImageDirectory: 'examples/sentiment', handlerMode: 'demo' }).workerImage!;
  assert.deepEqual(dir.source, {
    kind: 'directory',
    buildContext: REPO,
    file: 'examples/sentiment/Dockerfile',
    buildArgs: {},
    dockerignore: path.join(REPO, 'examples', 'sentiment', 'Dockerfile.dockerignore'),
  });
  const file = config({ workerImageFile: 'examples/resize/Dockerfile', workerImageBuildArgs: 'A=1, B=x=y', handlerMode: 'demo' })
    .workerImage!;
  assert.equal(file.source.kind === 'directory' && file.source.file, 'examples/resize/Dockerfile');
  assert.deepEqual(file.source.kind === 'directory' && file.source.buildArgs, { A: '1', B: 'x=y' });
  const json = config({ workerImageFile: 'worker/Dockerfile', workerImageBuildArgs: '{"A": "1"}', handlerMode: 'demo' }).workerImage!;
  assert.deepEqual(json.source.kind === 'directory' && json.source.buildArgs, { A: '1' });
  const uri = config({ workerImageUri: '123456789012.dkr.ecr.us-east-1.amazonaws.com/sentiment:1', handlerMode: 'demo' }).workerImage!;
  assert.deepEqual(uri.source, { kind: 'uri', uri: '123456789012.dkr.ecr.us-east-1.amazonaws.com/sentiment:1' });
  assert.equal(config({}).workerImage, undefined);
});

test('the handler and the time limits come from context, strings from the command line parsed', () => {
  const process = config({
    handlerMode: 'process',
    handlerCommand: '["python3", "/app/handler.py"]',
    startupTimeoutSeconds: '120',
    jobTimeoutSeconds: '900',
    maxJobTimeoutSeconds: 7200,
    leaseSeconds: '90',
  });
  assert.deepEqual(process.workerHandler, {
    mode: 'process',
    command: ['python3', '/app/handler.py'],
    startupTimeout: Duration.seconds(120),
  });
  assert.equal(process.jobTimeout?.toSeconds(), 900);
  assert.equal(process.maxJobTimeout?.toSeconds(), 7200);
  assert.equal(process.leaseDuration?.toSeconds(), 90);
  // Words split on whitespace, and arrays as cdk.json gives them.
  assert.deepEqual((config({ handlerMode: 'process', handlerCommand: 'python3  /app/handler.py' }).workerHandler as any).command, [
    'python3',
    '/app/handler.py',
  ]);
  assert.deepEqual((config({ handlerMode: 'process', handlerCommand: ['/app/run', '--fast'] }).workerHandler as any).command, [
    '/app/run',
    '--fast',
  ]);
  assert.deepEqual(config({ handlerMode: 'demo' }).workerHandler, { mode: 'demo' });
  assert.equal(config({}).workerHandler, undefined);

  const http = config({
    handlerMode: 'http',
    modelServerImageUri: '763104351884.dkr.ecr.us-east-1.amazonaws.com/pytorch-inference-graviton:2.1.0-cpu-py310-ubuntu20.04-sagemaker',
    modelServerPort: '8080',
    modelServerCommand: 'serve',
    modelServerEnvironment: '{"SAGEMAKER_PROGRAM": "inference.py"}',
    modelServerHealthCheck: 'curl -fs http://127.0.0.1:8080/ping || exit 1',
  }).workerHandler as any;
  assert.equal(http.mode, 'http');
  assert.equal(http.modelUrl, undefined);
  assert.equal(http.modelServer.image.source.kind, 'uri');
  assert.equal(http.modelServer.port, 8080);
  assert.deepEqual(http.modelServer.command, ['serve']);
  assert.deepEqual(http.modelServer.environment, { SAGEMAKER_PROGRAM: 'inference.py' });
  assert.deepEqual(http.modelServer.healthCheck, { command: ['CMD-SHELL', 'curl -fs http://127.0.0.1:8080/ping || exit 1'] });
  const remote = config({ handlerMode: 'http', modelUrl: 'http://10.0.0.5:8080' }).workerHandler as any;
  assert.deepEqual(remote, { mode: 'http', modelUrl: 'http://10.0.0.5:8080', startupTimeout: undefined, modelServer: undefined });
  const array = config({ handlerMode: 'http', modelServerImageUri: 'ghcr.io/x/y:1', modelServerHealthCheck: '["CMD", "/bin/ping"]' })
    .workerHandler as any;
  assert.deepEqual(array.modelServer.healthCheck, { command: ['CMD', '/bin/ping'] });
});

test('a stack builds from the example context', () => {
  const app = new App({
    context: {
      lambdaAssetDir: path.relative(REPO, STUB_LAMBDAS),
      workerImageUri: 'ghcr.io/example/sentiment:1',
      handlerMode: 'process',
      handlerCommand: 'python3 /app/handler.py',
      maxJobTimeoutSeconds: '3600',
    },
  });
  const { name, props } = stackConfigFromContext(app.node);
  const stack = new SluiceStack(app, name, props);
  assert.equal(stack.workers.handler.mode, 'process');
});

test('owners come from context: the scope, and the roles whose session names are pinned', () => {
  assert.equal(config({}).ownerScope, undefined);
  assert.equal(config({ ownerScope: 'role' }).ownerScope, 'role');
  assert.throws(() => config({ ownerScope: 'user' }), /context ownerScope must be session or role, got user/);
  const arns = ['arn:aws:iam::123456789012:role/Analysts', 'arn:aws:iam::123456789012:role/teams/OktaDevelopers'];
  assert.deepEqual(config({ pinnedSessionRoles: arns.join(', ') }).pinnedSessionRoleArns, arns);
  assert.deepEqual(config({ pinnedSessionRoles: arns }).pinnedSessionRoleArns, arns);
  const operators = ['arn:aws:iam::123456789012:user/ops', 'arn:aws:iam::123456789012:role/Operators'];
  assert.deepEqual(config({ operators: operators.join(',') }).operatorArns, operators);
  assert.equal(config({}).operatorArns, undefined);
  assert.deepEqual(config({ inputBuckets: 'data-lake, raw.images' }).inputBuckets, ['data-lake', 'raw.images']);
  assert.deepEqual(config({ inputBuckets: ['data-lake'] }).inputBuckets, ['data-lake']);
  assert.equal(config({}).inputBuckets, undefined);
  assert.equal(config({}).pinnedSessionRoleArns, undefined);
});

test('bad handler and image context is rejected with the key named', () => {
  assert.throws(
    () => config({ workerImageDirectory: 'examples/sentiment', workerImageUri: 'ghcr.io/x:1' }),
    /context workerImageDirectory, workerImageFile and workerImageUri are alternatives: give one, got workerImageDirectory and workerImageUri/,
  );
  assert.throws(() => config({ workerImageUri: 'ghcr.io/x:1', workerImageBuildArgs: 'A=1' }), /context workerImageBuildArgs needs workerImageDirectory or workerImageFile/);
  assert.throws(() => config({ workerImageBuildContext: '.' }), /context workerImageBuildContext needs workerImageDirectory or workerImageFile/);
  assert.throws(() => config({ workerImageFile: 'worker/Dockerfile', workerImageBuildArgs: 'novalue' }), /context workerImageBuildArgs must be a json object or NAME=value pairs/);
  assert.throws(() => config({ workerImageFile: 'worker/Dockerfile', workerImageBuildArgs: '{"A": 1}' }), /context workerImageBuildArgs must be a json object of strings/);
  assert.throws(() => config({ workerImageDirectory: 'nowhere' }), /worker image directory nowhere does not exist/);
  assert.throws(() => config({ workerImageUri: 'not an image' }), /worker image uri must be an image reference/);
  assert.throws(() => config({ handlerMode: 'batch' }), /context handlerMode must be demo, process or http, got batch/);
  assert.throws(() => config({ handlerMode: 'process' }), /context handlerMode=process needs handlerCommand/);
  assert.throws(() => config({ handlerCommand: 'python3 x.py' }), /context handlerCommand needs handlerMode=process/);
  assert.throws(() => config({ handlerMode: 'http', handlerCommand: 'python3 x.py' }), /context handlerCommand needs handlerMode=process/);
  assert.throws(() => config({ handlerMode: 'process', handlerCommand: 'x', modelUrl: 'http://a' }), /context modelUrl needs handlerMode=http/);
  assert.throws(() => config({ handlerMode: 'demo', startupTimeoutSeconds: 60 }), /context startupTimeoutSeconds needs handlerMode=process or http/);
  assert.throws(() => config({ modelServerImageUri: 'ghcr.io/x:1' }), /context modelServerImageUri needs handlerMode=http/);
  assert.throws(() => config({ handlerMode: 'http', modelServerPort: 9000 }), /context modelServerPort needs modelServerImageUri/);
  assert.throws(() => config({ handlerMode: 'process', handlerCommand: '["python3", ' }), /context handlerCommand is not valid json/);
  assert.throws(() => config({ handlerMode: 'process', handlerCommand: '[]' }), /context handlerCommand must be a json array of non-empty strings/);
  assert.throws(() => config({ handlerMode: 'process', handlerCommand: '[1, 2]' }), /context handlerCommand must be a json array of non-empty strings/);
  assert.throws(
    () => config({ handlerMode: 'process', handlerCommand: 'python3 "my handler.py"' }),
    /context handlerCommand has quotes or backslashes: give it as a json array/,
  );
  assert.throws(
    () => config({ handlerMode: 'http', modelServerImageUri: 'ghcr.io/x:1', modelServerHealthCheck: '["curl", "x"]' }),
    /context modelServerHealthCheck must be a shell command or a json array starting with CMD or CMD-SHELL/,
  );
  assert.throws(
    () => config({ handlerMode: 'http', modelServerImageUri: 'ghcr.io/x:1', modelServerPort: '80.5' }),
    /context modelServerPort must be an integer, got 80.5/,
  );
  assert.throws(() => config({ jobTimeoutSeconds: 'an hour' }), /context jobTimeoutSeconds must be a number/);
  assert.throws(() => config({ maxJobTimeoutSeconds: '1.5' }), /context maxJobTimeoutSeconds must be a whole number of seconds, got "1.5"/);
  assert.throws(() => config({ startupTimeoutSeconds: -1, handlerMode: 'http' }), /context startupTimeoutSeconds must be a whole number of seconds/);
  assert.throws(() => config({ workerHandler: 'demo' }), /context workerHandler is no longer read: use handlerMode/);
  assert.throws(
    () => config({ workerImageDirectory: 'examples/sentiment' }),
    /context handlerMode is required with a worker image of your own \(demo, process or http\)/,
  );
});

test('every context key is documented in the readme', () => {
  const readme = fs.readFileSync(path.join(REPO, 'cdk', 'README.md'), 'utf8');
  const table = readme.slice(readme.indexOf('## Configuration'));
  const documented = new Set([...table.matchAll(/^\| ([^|]+) \|/gm)].flatMap((m) => [...m[1].matchAll(/`([A-Za-z]+)`/g)].map((x) => x[1])));
  for (const key of CONTEXT_KEYS) {
    assert.ok(documented.has(key), `context key ${key} is documented in cdk/README.md`);
  }
});
