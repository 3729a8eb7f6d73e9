import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { copyArgs, instructions, stageDockerContext } from '../scripts/stage-docker-context';
import { REPO } from './helpers';

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
  assert.match(froms[0], /^rust:1\.95(\.\d+)?-bookworm AS build$/);
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
