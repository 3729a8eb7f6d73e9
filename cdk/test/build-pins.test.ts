import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { REPO } from './helpers';

const mk = fs.readFileSync(path.join(REPO, 'mk', 'cdk.mk'), 'utf8');
const variable = (name: string) => {
  const m = new RegExp(`^${name} := (\\S+)$`, 'm').exec(mk);
  assert.ok(m !== null, `mk/cdk.mk sets ${name}`);
  return m[1];
};
const DOCKERFILES = ['worker/Dockerfile', ...fs.readdirSync(path.join(REPO, 'examples')).map((e) => `examples/${e}/Dockerfile`)].filter((f) =>
  fs.existsSync(path.join(REPO, f)),
);

test('what the lambda build installs is pinned: cargo-lambda, the zig it links with, the rust that compiles', () => {
  const recipe = mk.slice(mk.indexOf('$(VENV)/.cargo-lambda:'), mk.indexOf('\n\n', mk.indexOf('$(VENV)/.cargo-lambda:')));
  assert.match(recipe, /'cargo-lambda==\$\(CARGO_LAMBDA_VERSION\)'/);
  // cargo-lambda asks for ziglang>=0.10: without a pin, the newest zig builds the lambdas.
  assert.match(recipe, /'ziglang==\$\(ZIGLANG_VERSION\)'/);
  assert.match(variable('ZIGLANG_VERSION'), /^\d+\.\d+\.\d+(\.post\d+)?$/);
  for (const line of mk.split('\n').filter((l) => /pip install/.test(l))) {
    for (const pkg of line.matchAll(/'([A-Za-z0-9_.[\]-]+)([^']*)'/g)) {
      assert.match(pkg[2], /^==/, `${pkg[1]} is pinned in: ${line.trim()}`);
    }
  }
  const lambdas = mk.slice(mk.indexOf('\nlambdas:'), mk.indexOf('\n\n', mk.indexOf('\nlambdas:')));
  assert.match(lambdas, /cargo \+\$\(LAMBDA_RUST_VERSION\) lambda build/);
  assert.match(lambdas, /rustup toolchain install \$\(LAMBDA_RUST_VERSION\) --profile minimal --target aarch64-unknown-linux-gnu/);
});

test('the lambdas and every image are built by the same rust', () => {
  const rust = variable('LAMBDA_RUST_VERSION');
  assert.match(rust, /^\d+\.\d+\.\d+$/, 'an exact release');
  for (const file of DOCKERFILES) {
    const text = fs.readFileSync(path.join(REPO, file), 'utf8');
    const froms = [...text.matchAll(/^FROM .*\brust:(\S+)/gm)].map((m) => m[1]);
    assert.ok(froms.length > 0, `${file} has a rust build stage`);
    for (const tag of froms) assert.equal(tag.replace(/-bookworm.*$/, ''), rust, file);
  }
});

test('debian packages are pinned to an upstream version that survives point releases', () => {
  for (const file of DOCKERFILES) {
    const text = fs.readFileSync(path.join(REPO, file), 'utf8');
    for (const m of text.matchAll(/apt-get install ([^;\n]*)/g)) {
      const pkgs = m[1].split(/\s+/).filter((w) => w !== '' && !w.startsWith('-'));
      assert.ok(pkgs.length > 0, file);
      for (const p of pkgs) {
        // 'name=<epoch:>upstream.*' or 'name=upstream-*', quoted against the shell's globbing: a
        // Debian revision (2.36-8cross1) disappears from the archive at the next point release.
        assert.match(p, /^'[a-z0-9.+-]+=(\d+:)?\d+(\.\d+)*(\.\*|-\*)'$/, `${file}: ${p}`);
      }
    }
  }
});
