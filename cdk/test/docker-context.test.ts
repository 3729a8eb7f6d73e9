import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { IgnoreStrategy, Stack } from 'aws-cdk-lib';
import { DockerImageAsset } from 'aws-cdk-lib/aws-ecr-assets';
import * as ecs from 'aws-cdk-lib/aws-ecs';
import { WorkerImage, assetExcludes, contextPatterns, dockerignoreFor, ignorePatterns } from '../lib/worker-image';
import { copyArgs, instructions, stageDockerContext } from '../scripts/stage-docker-context';
import { REPO, testApp } from './helpers';

const DOCKERFILE = path.join(REPO, 'worker', 'Dockerfile');

/** The workspace members of the root Cargo.toml. */
function workspaceMembers(): string[] {
  const toml = fs.readFileSync(path.join(REPO, 'Cargo.toml'), 'utf8');
  const m = /members\s*=\s*\[([^\]]*)\]/.exec(toml);
  assert.ok(m, 'no [workspace] members in Cargo.toml');
  return [...m[1].matchAll(/"([^"]+)"/g)].map((x) => x[1]);
}

test('the staged context holds every workspace manifest, the lock file and the embedded policy', () => {
  const out = fs.mkdtempSync(path.join(os.tmpdir(), 'sluice-context-'));
  try {
    const staged = stageDockerContext(REPO, DOCKERFILE, out);
    const files = new Set(staged.files.map((f) => path.posix.relative(staged.buildDir, f)));
    assert.ok(files.has('Cargo.lock'));
    for (const member of workspaceMembers()) {
      assert.ok(files.has(path.posix.join(member, 'Cargo.toml')), `manifest of workspace member ${member}`);
    }
    assert.ok(files.has('worker/src/main.rs'));
    assert.ok(files.has('scaling/policy.json'));
    assert.ok(![...files].some((f) => f.split('/').includes('target')), 'nothing from target/');
    assert.ok(![...files].some((f) => f.startsWith('cdk/')), 'nothing from cdk/');
  } finally {
    fs.rmSync(out, { recursive: true, force: true });
  }
});

test('the dockerfile copies only from the context or the build stage, and runs as non-root', () => {
  const ins = instructions(fs.readFileSync(DOCKERFILE, 'utf8'));
  const froms = ins.filter((i) => i.keyword === 'FROM').map((i) => i.args);
  assert.equal(froms.length, 2);
  // The build stage runs on the build machine's platform and cross-compiles for the target's.
  assert.match(froms[0], /^--platform=\$BUILDPLATFORM rust:1\.95(\.\d+)?-bookworm AS build$/);
  assert.ok(ins.some((i) => i.keyword === 'ARG' && i.args === 'TARGETARCH'));
  const copies = ins.filter((i) => i.keyword === 'COPY');
  assert.deepEqual(
    copies.filter((c) => copyArgs(c.args) === undefined).map((c) => c.args),
    ['--from=build /out/sluice-worker /usr/local/bin/sluice-worker'],
  );
  assert.ok(ins.some((i) => i.keyword === 'RUN' && i.args.includes('cargo build --release --locked -p sluice-worker')));
  const users = ins.filter((i) => i.keyword === 'USER').map((i) => i.args);
  assert.ok(users.length > 0 && !/^(root|0)(:|$)/.test(users.at(-1)!));
  assert.deepEqual(JSON.parse(ins.find((i) => i.keyword === 'ENTRYPOINT')!.args), ['/usr/local/bin/sluice-worker']);
});

test('copy arguments parse in shell and json form, with flags', () => {
  assert.deepEqual(copyArgs('Cargo.toml Cargo.lock ./'), { sources: ['Cargo.toml', 'Cargo.lock'], dest: './' });
  assert.deepEqual(copyArgs('--chown=1:1 ["a b", "c/"]'), { sources: ['a b'], dest: 'c/' });
  assert.equal(copyArgs('--from=build /x /y'), undefined);
  assert.throws(() => copyArgs('src/*.rs src/'), /wildcards in copy sources are not supported/);
});

/** The examples' Dockerfiles (`examples/<name>/Dockerfile`), which build from the repository root too. */
function exampleDockerfiles(): string[] {
  const dir = path.join(REPO, 'examples');
  if (!fs.existsSync(dir)) return [];
  return fs
    .readdirSync(dir, { withFileTypes: true })
    .filter((e) => e.isDirectory() && fs.existsSync(path.join(dir, e.name, 'Dockerfile')))
    .map((e) => path.join(dir, e.name, 'Dockerfile'))
    .sort();
}

/** The context-relative sources of a Dockerfile's COPY/ADD instructions (not `--from` ones). */
function copySources(dockerfile: string): string[] {
  return instructions(fs.readFileSync(dockerfile, 'utf8'))
    .filter((i) => i.keyword === 'COPY' || i.keyword === 'ADD')
    .flatMap((i) => copyArgs(i.args)?.sources ?? []);
}

/** Every file under `dir`, relative to it (POSIX separators). */
function filesUnder(dir: string): string[] {
  const out: string[] = [];
  const visit = (d: string) => {
    for (const e of fs.readdirSync(d, { withFileTypes: true })) {
      const p = path.join(d, e.name);
      if (e.isDirectory()) visit(p);
      else out.push(path.relative(dir, p).split(path.sep).join('/'));
    }
  };
  visit(dir);
  return out.sort();
}

/** The files of `context` that survive `patterns`, walked as CDK walks (ignored folders pruned). */
function unignored(context: string, patterns: string[]): string[] {
  const ignore = IgnoreStrategy.docker(context, patterns);
  const out: string[] = [];
  const visit = (d: string) => {
    for (const e of fs.readdirSync(d, { withFileTypes: true })) {
      const p = path.join(d, e.name);
      if (e.isDirectory()) {
        if (!ignore.completelyIgnores(p)) visit(p);
      } else if (!ignore.ignores(p)) {
        out.push(path.relative(context, p).split(path.sep).join('/'));
      }
    }
  };
  visit(context);
  return out.sort();
}

/** Synthesizes a task with `image` and returns CDK's staged build context and the asset's hash. */
function cdkStaged(image: WorkerImage): { dir: string; dockerFile: string; hash: string } {
  const app = testApp();
  const stack = new Stack(app, 'Image');
  new ecs.FargateTaskDefinition(stack, 'Task').addContainer('Worker', { image: image.bind(stack, 'Image') });
  const assembly = app.synth();
  const manifest = JSON.parse(fs.readFileSync(path.join(assembly.directory, `${stack.artifactId}.assets.json`), 'utf8'));
  const images = Object.values(manifest.dockerImages) as any[];
  assert.equal(images.length, 1);
  const asset = stack.node.findAll().find((c): c is DockerImageAsset => c instanceof DockerImageAsset)!;
  return { dir: path.join(assembly.directory, images[0].source.directory), dockerFile: images[0].source.dockerFile, hash: asset.assetHash };
}

const NEVER = [/(^|\/)target\//, /(^|\/)\.venv\//, /(^|\/)node_modules\//, /(^|\/)__pycache__\//, /(^|\/)\.git\//, /\.egg-info\//];

test('the examples build from the repository root, each with its own dockerignore', () => {
  const dockerfiles = exampleDockerfiles();
  assert.ok(dockerfiles.length > 0, 'no examples/<name>/Dockerfile');
  for (const dockerfile of dockerfiles) {
    const name = path.basename(path.dirname(dockerfile));
    const ignoreFile = `${dockerfile}.dockerignore`;
    assert.ok(fs.existsSync(ignoreFile), `${name}: Dockerfile.dockerignore beside the Dockerfile`);
    assert.equal(dockerignoreFor(REPO, dockerfile), ignoreFile);
    // Docker's view (BuildKit): every COPY source is in the filtered context, at its destination.
    const out = fs.mkdtempSync(path.join(os.tmpdir(), 'sluice-context-'));
    try {
      const staged = stageDockerContext(REPO, dockerfile, out);
      const files = staged.files.map((f) => f.split(path.sep).join('/'));
      assert.ok(files.includes('build/Cargo.toml') && files.includes('build/worker/src/main.rs'), `${name}: the worker's sources`);
      assert.ok(files.some((f) => f.startsWith('tmp/sluice-handler/')), `${name}: the python helper`);
      assert.ok(files.includes('app/handler.py'), `${name}: its handler`);
      for (const re of NEVER) assert.ok(!files.some((f) => re.test(f)), `${name}: nothing matching ${re}`);
    } finally {
      fs.rmSync(out, { recursive: true, force: true });
    }
  }
});

test("cdk stages each image's context as buildkit filters it, with every copy source inside", () => {
  const defaultImage = cdkStaged(WorkerImage.fromDirectory('worker'));
  assert.equal(defaultImage.dockerFile, 'worker/Dockerfile');
  const defaultFiles = filesUnder(defaultImage.dir);
  assert.ok(!defaultFiles.some((f) => f.startsWith('examples/') || f.startsWith('python/')), 'the worker image sees no example');
  for (const source of copySources(DOCKERFILE)) {
    assert.ok(fs.existsSync(path.join(defaultImage.dir, source)), `worker/Dockerfile: ${source}`);
  }
  for (const dockerfile of exampleDockerfiles()) {
    const name = path.basename(path.dirname(dockerfile));
    const staged = cdkStaged(WorkerImage.fromDirectory(path.dirname(dockerfile)));
    assert.equal(staged.dockerFile, `examples/${name}/Dockerfile`);
    const files = filesUnder(staged.dir);
    for (const source of copySources(dockerfile)) {
      const p = path.join(staged.dir, source);
      assert.ok(fs.existsSync(p), `${name}: COPY ${source} is in the staged context`);
      if (fs.statSync(p).isDirectory()) assert.ok(fs.readdirSync(p).length > 0, `${name}: ${source} is not empty`);
    }
    // Exactly what BuildKit sends from the repository (plus the root .dockerignore, which CDK
    // always stages and BuildKit ignores in favour of the Dockerfile's own, also staged).
    const expected = unignored(REPO, contextPatterns(REPO, dockerfile));
    assert.deepEqual(files.filter((f) => f !== '.dockerignore'), expected, name);
    assert.ok(files.includes(`examples/${name}/Dockerfile.dockerignore`));
    assert.ok(!files.some((f) => f.startsWith('examples/') && !f.startsWith(`examples/${name}/`)), `${name}: no other example`);
    for (const re of NEVER) assert.ok(!files.some((f) => re.test(f)), `${name}: nothing matching ${re}`);
  }
});

test("an example's change leaves the default worker image's hash alone", () => {
  // A copy of the repository's build inputs, to change an example without touching the real one.
  const repo = fs.mkdtempSync(path.join(os.tmpdir(), 'sluice-repo-'));
  try {
    const skip = /(^|[/\\])(target|\.venv|node_modules|__pycache__|\.git)([/\\]|$)/;
    for (const entry of ['Cargo.toml', 'Cargo.lock', '.dockerignore', 'src', 'scaling', 'worker', 'functions', 'python', 'examples']) {
      fs.cpSync(path.join(REPO, entry), path.join(repo, entry), { recursive: true, filter: (src) => !skip.test(path.relative(REPO, src)) });
    }
    const hashes = () => ({
      worker: cdkStaged(WorkerImage.fromDirectory(path.join(repo, 'worker'), { buildContext: repo })).hash,
      sentiment: cdkStaged(WorkerImage.fromDirectory(path.join(repo, 'examples', 'sentiment'), { buildContext: repo })).hash,
    });
    const before = hashes();
    fs.appendFileSync(path.join(repo, 'examples', 'resize', 'handler.py'), '\n# changed\n');
    assert.deepEqual(hashes(), before, 'another example changed: neither image changes');
    fs.appendFileSync(path.join(repo, 'python', 'sluice_handler.py'), '\n# changed\n');
    const helper = hashes();
    assert.equal(helper.worker, before.worker, 'the python helper is not in the worker image');
    assert.notEqual(helper.sentiment, before.sentiment, 'the python helper is in the example image');
    fs.appendFileSync(path.join(repo, 'examples', 'sentiment', 'handler.py'), '\n# changed\n');
    const own = hashes();
    assert.equal(own.worker, before.worker);
    assert.notEqual(own.sentiment, helper.sentiment, 'its own handler changes the example image');
    fs.appendFileSync(path.join(repo, 'worker', 'src', 'main.rs'), '\n// changed\n');
    const rust = hashes();
    assert.notEqual(rust.worker, before.worker, 'the worker sources are in both');
    assert.notEqual(rust.sentiment, own.sentiment);
  } finally {
    fs.rmSync(repo, { recursive: true, force: true });
  }
});

test('a dockerfile with its own dockerignore replaces the root one in the asset excludes', () => {
  assert.deepEqual(assetExcludes(REPO, 'worker/Dockerfile'), [], 'the root .dockerignore, which CDK reads itself');
  for (const dockerfile of exampleDockerfiles()) {
    const rel = path.relative(REPO, dockerfile).split(path.sep).join('/');
    const excludes = assetExcludes(REPO, rel);
    assert.equal(excludes[0], '!**', 'undoes the root patterns first');
    assert.deepEqual(excludes.slice(1, -2), ignorePatterns(`${dockerfile}.dockerignore`));
    assert.deepEqual(excludes.slice(-2), [`!${rel}`, `!${rel}.dockerignore`]);
  }
});

test("every example's build stage cross-compiles sluice-worker as worker/Dockerfile does", () => {
  const stage = (file: string) => {
    const ins = instructions(fs.readFileSync(file, 'utf8'));
    const from = ins.findIndex((i) => i.keyword === 'FROM');
    const next = ins.findIndex((i, n) => n > from && i.keyword === 'FROM');
    return ins.slice(from, next).map((i) => `${i.keyword} ${i.args}`);
  };
  const worker = stage(DOCKERFILE);
  assert.ok(worker[0].startsWith('FROM --platform=$BUILDPLATFORM '));
  assert.ok(worker.some((l) => l.includes('--target "$target"')), 'cargo builds for the target platform');
  for (const dockerfile of exampleDockerfiles()) {
    assert.deepEqual(stage(dockerfile), worker, path.relative(REPO, dockerfile));
  }
});
