import { after, before, test } from 'node:test';
import * as assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as http from 'node:http';
import * as os from 'node:os';
import * as path from 'node:path';
import { CloudFormationClient, CreateStackCommand } from '@aws-sdk/client-cloudformation';
import { DescribeInstanceTypesCommand, EC2Client } from '@aws-sdk/client-ec2';
import { IAMClient, ListRolesCommand } from '@aws-sdk/client-iam';
import { Finding, Plan, builderPlatforms, checkAccount, checkDocker, checkTools, contextArgs, instanceFit, planFromContext, report } from '../scripts/preflight';
import { Emulator, startEmulator } from './emulator';

const FIXTURES = path.join(__dirname, 'fixtures', 'aws');
const fixture = (name: string) => fs.readFileSync(path.join(FIXTURES, name), 'utf8');

/**
 * The recorded responses (fixtures/aws) on loopback, for the calls moto cannot answer: a request
 * is answered with the recording the scenario names for it, or fails the test.
 */
type Scenario = Record<string, { status?: number; file: string }>;
let scenario: Scenario = {};
let replay: http.Server;
let emulator: Emulator;

before(async () => {
  emulator = await startEmulator();
  replay = http.createServer((req, res) => {
    let body = '';
    req.on('data', (d) => (body += d));
    req.on('end', () => {
      let key: string;
      const target = req.headers['x-amz-target'];
      if (typeof target === 'string') {
        const { ServiceCode, QuotaCode } = JSON.parse(body);
        key = `${target.split('.')[1]} ${ServiceCode}/${QuotaCode}`;
      } else {
        key = `${req.method} ${req.url?.split('?')[0]}`;
      }
      const answer = scenario[key];
      if (answer === undefined) {
        res.writeHead(500, { 'content-type': 'application/json' }).end(JSON.stringify({ message: `no recording for ${key}` }));
        return;
      }
      const status = answer.status ?? 200;
      const headers: Record<string, string> = { 'content-type': 'application/x-amz-json-1.1' };
      if (status >= 400) headers['x-amzn-errortype'] = JSON.parse(fixture(answer.file)).__type;
      res.writeHead(status, headers).end(fixture(answer.file));
    });
  });
  await new Promise<void>((r) => replay.listen(0, '127.0.0.1', () => r()));
  const url = `http://127.0.0.1:${(replay.address() as { port: number }).port}`;
  process.env.AWS_ENDPOINT_URL_LAMBDA = url;
  process.env.AWS_ENDPOINT_URL_SERVICE_QUOTAS = url;
});
after(() => {
  emulator?.stop();
  replay?.close();
});

const LAMBDA = 'GET /2016-08-19/account-settings';
const NOT_APPLIED = { status: 400, file: 'quota-no-such-resource.json' };

const levelOf = (findings: Finding[], check: string) => findings.filter((f) => f.check === check).map((f) => f.level);

const FARGATE: Plan = planFromContext({});
const GPU_TASK = { gpusPerTask: 1, taskCpuUnits: 2048, taskMemoryMiB: 8192 };

test('the plan is read from the stack the same context makes', () => {
  assert.equal(FARGATE.launchType, 'FARGATE');
  assert.equal(FARGATE.platform, 'linux/arm64');
  assert.equal(FARGATE.taskVcpus, 1);
  assert.equal(FARGATE.buildsImage, true);
  assert.equal(FARGATE.buildRunsOnTarget, false, 'worker/Dockerfile cross-compiles');
  assert.equal(FARGATE.reservedConcurrency, undefined);
  const spot = planFromContext(contextArgs(['-c', 'spot=true', '--context', 'maxTasks=4', '-c', 'taskCpu=2048', '-c', 'taskMemory=4096', '--require-approval', 'never']));
  assert.deepEqual([spot.platform, spot.spot, spot.onDemandBase, spot.maxTasks, spot.taskVcpus], ['linux/amd64', true, 1, 4, 2]);
  const gpu = planFromContext(contextArgs(['-c', 'gpuInstanceTypes=g5.xlarge,g5.2xlarge', '-c', 'gpuMaxInstances=3', '-c', 'workerImageDirectory=examples/gpu-onnx', '-c', 'handlerMode=process', '-c', 'handlerCommand=python3 /app/handler.py']));
  assert.deepEqual(gpu.gpu, { instanceTypes: ['g5.xlarge', 'g5.2xlarge'], maxInstances: 3, gpusPerTask: 1, taskCpuUnits: 2048, taskMemoryMiB: 8192 });
  assert.equal(gpu.buildRunsOnTarget, true);
  assert.equal(planFromContext({ workerImageUri: '123456789012.dkr.ecr.us-east-1.amazonaws.com/w:1', handlerMode: 'demo' }).buildsImage, false);
  assert.throws(() => contextArgs(['-c', 'spot']), /context must be key=value/);
});

test('a machine without rust or docker stops the deploy before cloudformation, with the fix', () => {
  const empty = fs.mkdtempSync(path.join(os.tmpdir(), 'no-docker-'));
  const withPath = (PATH: string) => (cmd: string, args: string[]) => {
    const r = spawnSync(cmd, args, { encoding: 'utf8', env: { ...process.env, PATH, DOCKER_HOST: 'unix:///nonexistent/docker.sock' } });
    return { status: r.status, stdout: r.stdout ?? '', stderr: r.stderr ?? '', error: r.error };
  };
  const [rust] = checkTools(withPath(empty));
  assert.equal(rust.level, 'blocker');
  assert.match(rust.fix!, /rustup\.rs/);
  const [missing] = checkDocker(FARGATE, withPath(empty));
  assert.equal(missing.level, 'blocker');
  assert.match(missing.message, /docker is not installed/);
  assert.match(missing.fix!, /install Docker/);
  // A docker command whose daemon does not answer (the CLI on this machine, if there is one).
  if (spawnSync('docker', ['--version']).status === 0) {
    const [down] = checkDocker(FARGATE, withPath(process.env.PATH!));
    assert.equal(down.level, 'blocker');
    assert.match(down.message, /daemon does not answer/);
  }
  // An image from a registry needs no docker at all.
  assert.equal(checkDocker({ ...FARGATE, buildsImage: false }, withPath(empty))[0].level, 'ok');
});

test('the builder platform is read from docker buildx inspect, and an example for another platform needs qemu', () => {
  const inspect = fixture('docker-buildx-inspect-amd64.txt');
  assert.deepEqual(builderPlatforms(inspect), ['linux/amd64', 'linux/amd64/v2', 'linux/amd64/v3', 'linux/386']);
  // A recorded docker (its outputs on an x86 machine without QEMU).
  const recorded = (_cmd: string, args: string[]) => {
    const out: Record<string, string> = { version: '28.2.2', 'buildx version': 'github.com/docker/buildx v0.25.0 faaea65', 'buildx inspect': inspect };
    return { status: 0, stdout: out[args.slice(0, args[0] === 'buildx' ? 2 : 1).join(' ')] ?? '', stderr: '' };
  };
  const platform = (plan: Plan) => checkDocker(plan, recorded).find((f) => f.check === 'platform')!;
  assert.equal(platform(FARGATE).level, 'ok', 'worker/Dockerfile cross-compiles for arm64');
  const example = platform({ ...FARGATE, buildRunsOnTarget: true });
  assert.equal(example.level, 'blocker');
  assert.match(example.fix!, /tonistiigi\/binfmt --install arm64/);
  assert.equal(platform({ ...FARGATE, platform: 'linux/amd64', buildRunsOnTarget: true }).level, 'ok');
});

test('a new account: no bootstrap, no service-linked roles, lambda concurrency 10, fargate quota by default', async () => {
  scenario = {
    [LAMBDA]: { file: 'lambda-account-settings-new-account.json' },
    'GetServiceQuota fargate/L-3032A538': NOT_APPLIED,
    'GetAWSDefaultServiceQuota fargate/L-3032A538': { file: 'quota-fargate-on-demand-default.json' },
  };
  const checked = await checkAccount(FARGATE, false);
  assert.deepEqual(levelOf(checked, 'credentials'), ['ok']);
  assert.deepEqual(levelOf(checked, 'bootstrap'), ['blocker']);
  assert.match(checked.find((f) => f.check === 'bootstrap')!.fix!, /make bootstrap/);
  // --check-only: the missing roles are blockers, with the command that creates them.
  const roles = checked.filter((f) => f.check === 'service-linked role');
  assert.deepEqual(roles.map((f) => f.level), ['blocker', 'blocker']);
  assert.match(roles[1].fix!, /aws iam create-service-linked-role --aws-service-name ecs\.application-autoscaling\.amazonaws\.com/);
  // No reservation: the account of 10 can deploy, with a warning and the quota to raise.
  const lambda = checked.find((f) => f.check === 'lambda concurrency')!;
  assert.equal(lambda.level, 'warn');
  assert.match(lambda.fix!, /--service-code lambda --quota-code L-B99A9384/);
  // 6 vCPUs by default, against the policy's max_tasks of 1-vCPU tasks.
  const fargate = checked.find((f) => f.check === 'fargate vcpus')!;
  assert.equal(fargate.level, FARGATE.maxTasks > 6 ? 'warn' : 'ok');
  assert.match(fargate.message, /Fargate On-Demand vCPU resource count is 6/);

  // The default run creates the roles, and CDKToolkit once bootstrapped is found.
  await new CloudFormationClient({}).send(
    new CreateStackCommand({ StackName: 'CDKToolkit', TemplateBody: JSON.stringify({ Resources: { Q: { Type: 'AWS::SQS::Queue' } } }) }),
  );
  const fixed = await checkAccount(FARGATE, true);
  assert.deepEqual(levelOf(fixed, 'bootstrap'), ['ok']);
  assert.deepEqual(levelOf(fixed, 'service-linked role'), ['ok', 'ok']);
  assert.match(fixed.find((f) => f.check === 'service-linked role')!.message, /created/);
  const iam = new IAMClient({});
  for (const service of ['ecs.amazonaws.com', 'ecs.application-autoscaling.amazonaws.com']) {
    const { Roles } = await iam.send(new ListRolesCommand({ PathPrefix: `/aws-service-role/${service}/` }));
    assert.equal(Roles!.length, 1, service);
  }
  // The next run finds them.
  assert.ok(
    (await checkAccount(FARGATE, false)).filter((f) => f.check === 'service-linked role').every((f) => f.level === 'ok' && /exists/.test(f.message)),
  );
});

test('a reservation the account cannot grant is a blocker; one it can is fine', async () => {
  scenario = {
    [LAMBDA]: { file: 'lambda-account-settings-new-account.json' },
    'GetServiceQuota fargate/L-3032A538': NOT_APPLIED,
    'GetAWSDefaultServiceQuota fargate/L-3032A538': { file: 'quota-fargate-on-demand-default.json' },
  };
  const reserved = { ...FARGATE, reservedConcurrency: 2 };
  const refused = (await checkAccount(reserved, true)).find((f) => f.check === 'lambda concurrency')!;
  assert.equal(refused.level, 'blocker');
  assert.match(refused.message, /would leave 8 of the account's 10 unreserved; Lambda refuses a reservation that leaves fewer than 100/);
  assert.match(refused.fix!, /leave backlogReservedConcurrency unset/);
  scenario[LAMBDA] = { file: 'lambda-account-settings-default.json' };
  const granted = (await checkAccount(reserved, true)).find((f) => f.check === 'lambda concurrency')!;
  assert.equal(granted.level, 'ok');
  assert.match(granted.message, /leaves 998 unreserved/);
});

test('spot checks the fargate spot quota too; gpu workers check the g and vt quotas against the instances they may start', async () => {
  scenario = {
    [LAMBDA]: { file: 'lambda-account-settings-default.json' },
    'GetServiceQuota fargate/L-3032A538': NOT_APPLIED,
    'GetAWSDefaultServiceQuota fargate/L-3032A538': { file: 'quota-fargate-on-demand-default.json' },
    'GetServiceQuota fargate/L-36FBB829': { file: 'quota-fargate-spot-applied.json' },
    'GetServiceQuota ec2/L-DB2E81BA': NOT_APPLIED,
    'GetAWSDefaultServiceQuota ec2/L-DB2E81BA': { file: 'quota-gpu-on-demand-default.json' },
    'GetServiceQuota ec2/L-3819A6DF': NOT_APPLIED,
    'GetAWSDefaultServiceQuota ec2/L-3819A6DF': { file: 'quota-gpu-spot-default.json' },
  };
  const spot = await checkAccount({ ...FARGATE, spot: true, onDemandBase: 1, maxTasks: 10, taskVcpus: 2 }, true);
  const onDemand = spot.find((f) => f.check === 'fargate vcpus')!;
  assert.equal(onDemand.level, 'warn', '6 vCPUs fit the on-demand base, not 10 tasks of 2');
  assert.match(onDemand.fix!, /--quota-code L-3032A538 --desired-value 20/);
  assert.equal(spot.find((f) => f.check === 'fargate spot vcpus')!.level, 'ok');

  // A G quota of 0: no instance can start, so no job would ever run. Instance sizes from EC2.
  const gpu = await checkAccount({ ...FARGATE, launchType: 'EC2', platform: 'linux/amd64', spot: true, gpu: { ...GPU_TASK, instanceTypes: ['g5.xlarge', 'g5.2xlarge'], maxInstances: 3 } }, true);
  assert.deepEqual(levelOf(gpu, 'gpu instance types'), ['ok']);
  const g = gpu.find((f) => f.check === 'gpu vcpus')!;
  assert.equal(g.level, 'blocker');
  assert.match(g.message, /Running On-Demand G and VT instances is 0: gpuMaxInstances \(3\) instances of up to 8 vCPUs need 24, and one needs 4/);
  assert.match(g.fix!, /--service-code ec2 --quota-code L-DB2E81BA --desired-value 24/);
  assert.equal(gpu.find((f) => f.check === 'gpu spot vcpus')!.level, 'warn');
  assert.deepEqual(levelOf(gpu, 'service-linked role').length, 4, 'ecs, application auto scaling, auto scaling and ec2 spot');
  assert.equal(gpu.some((f) => f.check.startsWith('fargate')), false);

  const text = report(gpu);
  assert.match(text, /^BLOCKER gpu vcpus: /m);
  assert.match(text, /^ {8}fix: ask for 24 or more: aws service-quotas request-service-quota-increase/m);
  assert.match(text, /preflight: 1 blocker\(s\)/);
});

test('no credentials or no region stop the preflight at once, with the fix', async () => {
  const saved = { ...process.env };
  try {
    delete process.env.AWS_REGION;
    process.env.AWS_CONFIG_FILE = '/nonexistent';
    process.env.AWS_SHARED_CREDENTIALS_FILE = '/nonexistent';
    const [region] = await checkAccount(FARGATE, true);
    assert.equal(region.level, 'blocker');
    assert.match(region.fix!, /AWS_REGION/);
    process.env.AWS_REGION = 'us-east-1';
    delete process.env.AWS_ACCESS_KEY_ID;
    delete process.env.AWS_SECRET_ACCESS_KEY;
    process.env.AWS_EC2_METADATA_DISABLED = 'true';
    const [creds] = await checkAccount(FARGATE, true);
    assert.equal(creds.check, 'credentials');
    assert.equal(creds.level, 'blocker');
    assert.match(creds.fix!, /AWS_PROFILE/);
  } finally {
    for (const k of Object.keys(process.env)) if (!(k in saved)) delete process.env[k];
    Object.assign(process.env, saved);
  }
});

test('a quota the identity may not read is a warning with the permissions, not a failure', async () => {
  scenario = {
    [LAMBDA]: { file: 'lambda-account-settings-default.json' },
    'GetServiceQuota fargate/L-3032A538': { status: 400, file: 'quota-access-denied.json' },
  };
  const findings = await checkAccount(FARGATE, true);
  const quota = findings.find((f) => f.check === 'fargate vcpus')!;
  assert.equal(quota.level, 'warn');
  assert.match(quota.message, /could not be read: User: .* is not authorized to perform: servicequotas:GetServiceQuota/);
  assert.match(quota.fix!, /servicequotas:GetServiceQuota/);
  assert.equal(findings.some((f) => f.level === 'blocker'), false);
});

test('make preflight: the command prints each finding with its fix and exits 1 on a blocker', async () => {
  scenario = {
    [LAMBDA]: { file: 'lambda-account-settings-new-account.json' },
    'GetServiceQuota fargate/L-3032A538': NOT_APPLIED,
    'GetAWSDefaultServiceQuota fargate/L-3032A538': { file: 'quota-fargate-on-demand-default.json' },
    'GetServiceQuota fargate/L-36FBB829': { file: 'quota-fargate-spot-applied.json' },
  };
  // A machine without rustup or docker (PATH holds node alone), against the emulator and the
  // recordings; the replay server answers while the command runs, so it is not waited on synchronously.
  const bin = fs.mkdtempSync(path.join(os.tmpdir(), 'node-only-'));
  fs.symlinkSync(process.execPath, path.join(bin, 'node'));
  const child = spawn(process.execPath, ['--import', 'tsx', 'scripts/preflight.ts', '-c', 'spot=true', '--check-only'], {
    cwd: path.join(__dirname, '..'),
    env: { ...process.env, PATH: bin, AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED: 'true' },
  });
  let out = '';
  child.stdout.on('data', (d) => (out += d));
  child.stderr.on('data', (d) => (out += d));
  const code = await new Promise<number | null>((resolve) => child.on('close', resolve));
  assert.equal(code, 1, out);
  assert.match(out, /^BLOCKER rust: rustup is not installed/m);
  assert.match(out, /^BLOCKER docker: docker is not installed/m);
  assert.match(out, /^ok {6}credentials: account 123456789012/m);
  assert.match(out, /^WARN {4}lambda concurrency: the account runs at most 10 Lambda functions at once/m);
  assert.match(out, /^ok {6}fargate spot vcpus: Fargate Spot vCPU resource count: 60/m);
  assert.match(out, /^preflight: \d+ blocker\(s\): fix them before make deploy$/m);
});

test('gpu instance types that cannot take a task are found from ec2\'s description of them', async () => {
  const { InstanceTypes } = await new EC2Client({}).send(new DescribeInstanceTypesCommand({ InstanceTypes: ['g5.xlarge', 'g5.12xlarge'] }));
  const fit = (task: Partial<typeof GPU_TASK>, types = InstanceTypes!) =>
    instanceFit({ ...GPU_TASK, ...task, instanceTypes: [], maxInstances: 1 }, types);
  assert.equal(fit({})[0].level, 'ok');
  // Two GPUs per task: a g5.xlarge (one A10G) never takes one, a g5.12xlarge (four) does.
  const two = fit({ gpusPerTask: 2 })[0];
  assert.equal(two.level, 'warn');
  assert.match(two.message, /g5\.xlarge has 1 GPU\(s\) for gpusPerTask 2/);
  const g5 = InstanceTypes!.filter((t) => t.InstanceType === 'g5.xlarge');
  const none = fit({ gpusPerTask: 2, taskMemoryMiB: 16384, taskCpuUnits: 8192 }, g5)[0];
  assert.equal(none.level, 'blocker');
  assert.match(none.message, /no listed type can take a task: g5\.xlarge has 1 GPU\(s\) for gpusPerTask 2, 4096 CPU units for the task's 8192, about 14745 MiB for tasks, for the task's 16384/);
});
