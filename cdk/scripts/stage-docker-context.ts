/**
 * Stages what a Dockerfile's build stages COPY from the build context, as Docker would see it:
 * the context is filtered by the Dockerfile's `<Dockerfile>.dockerignore` if it has one, else by
 * the context's .dockerignore (BuildKit's rule, which the CDK asset follows: lib/worker-image.ts),
 * with the same matcher CDK uses when it stages the image asset; then each `COPY`/`ADD` source is
 * copied to its destination under `<out>/root`.
 * `COPY --from=…` (between stages) is skipped. Prints the WORKDIR in effect at the first
 * `RUN … cargo build` (where a build would run), relative to `<out>/root`.
 *
 *   node --import tsx scripts/stage-docker-context.ts <context dir> <Dockerfile> <out dir>
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { IgnoreStrategy } from 'aws-cdk-lib';
import { contextPatterns } from '../lib/worker-image';

export interface StagedContext {
  /** Files staged, relative to the image root (`build/Cargo.toml`, …). */
  readonly files: string[];
  /** WORKDIR of the `cargo build` step, relative to the image root. */
  readonly buildDir: string;
}

interface Instruction {
  readonly keyword: string;
  readonly args: string;
}

/** Dockerfile instructions, with continuation lines joined and comments dropped. */
export function instructions(dockerfile: string): Instruction[] {
  const out: Instruction[] = [];
  let current = '';
  for (const raw of dockerfile.split('\n')) {
    const line = raw.trim();
    if (current === '' && (line === '' || line.startsWith('#'))) continue;
    if (current !== '' && line.startsWith('#')) continue;
    if (line.endsWith('\\')) {
      current += line.slice(0, -1) + ' ';
      continue;
    }
    current += line;
    const m = /^(\S+)\s*(.*)$/.exec(current.trim());
    if (m) out.push({ keyword: m[1].toUpperCase(), args: m[2] });
    current = '';
  }
  return out;
}

/** The sources and destination of a COPY/ADD, or undefined for `--from=` copies. */
export function copyArgs(args: string): { sources: string[]; dest: string } | undefined {
  let rest = args.trim();
  const flags: string[] = [];
  while (rest.startsWith('--')) {
    const m = /^(--\S+)\s*(.*)$/.exec(rest)!;
    flags.push(m[1]);
    rest = m[2];
  }
  if (flags.some((f) => f.startsWith('--from'))) return undefined;
  const words: string[] = rest.startsWith('[') ? JSON.parse(rest) : rest.split(/\s+/);
  if (words.length < 2) throw new Error(`copy needs a source and a destination: ${args}`);
  const sources = words.slice(0, -1);
  for (const s of sources) {
    if (/[*?[]/.test(s)) throw new Error(`wildcards in copy sources are not supported here: ${s}`);
    if (/^[a-z]+:\/\//.test(s)) throw new Error(`remote sources are not part of the context: ${s}`);
  }
  return { sources, dest: words[words.length - 1] };
}

function walk(dir: string): string[] {
  return fs.readdirSync(dir, { withFileTypes: true }).flatMap((e) => {
    const p = path.join(dir, e.name);
    return e.isDirectory() ? walk(p) : [p];
  });
}

/** Stages the context files a Dockerfile copies; see the module comment. */
export function stageDockerContext(contextDir: string, dockerfilePath: string, outDir: string): StagedContext {
  const context = path.resolve(contextDir);
  const ignore = IgnoreStrategy.docker(context, contextPatterns(context, path.resolve(dockerfilePath)));
  const root = path.join(path.resolve(outDir), 'root');
  fs.mkdirSync(root, { recursive: true });

  const files: string[] = [];
  let workdir = '/';
  let buildDir: string | undefined;
  const place = (from: string, to: string) => {
    fs.mkdirSync(path.dirname(to), { recursive: true });
    fs.copyFileSync(from, to);
    fs.chmodSync(to, fs.statSync(from).mode);
    files.push(path.relative(root, to));
  };

  for (const ins of instructions(fs.readFileSync(dockerfilePath, 'utf8'))) {
    if (ins.keyword === 'FROM') workdir = '/';
    if (ins.keyword === 'WORKDIR') workdir = path.posix.resolve(workdir, ins.args.trim());
    if (ins.keyword === 'RUN' && buildDir === undefined && /\bcargo\s+build\b/.test(ins.args)) {
      buildDir = workdir;
    }
    if (ins.keyword !== 'COPY' && ins.keyword !== 'ADD') continue;
    const copy = copyArgs(ins.args);
    if (copy === undefined) continue;
    const destAbs = path.posix.resolve(workdir, copy.dest);
    const destIsDir = copy.dest.endsWith('/') || copy.sources.length > 1;
    for (const source of copy.sources) {
      const src = path.resolve(context, source);
      if (!src.startsWith(context)) throw new Error(`copy source outside the context: ${source}`);
      if (!fs.existsSync(src)) throw new Error(`copy source missing from the context: ${source}`);
      if (fs.statSync(src).isDirectory()) {
        // A directory's contents go into the destination directory.
        for (const file of walk(src)) {
          if (ignore.ignores(file)) continue;
          place(file, path.join(root, destAbs, path.relative(src, file)));
        }
      } else {
        if (ignore.ignores(src)) throw new Error(`copy source excluded by .dockerignore: ${source}`);
        place(src, path.join(root, destAbs, destIsDir ? path.basename(src) : ''));
      }
    }
  }
  if (buildDir === undefined) throw new Error('no RUN … cargo build step found');
  return { files: files.sort(), buildDir: path.posix.relative('/', buildDir) };
}

if (require.main === module) {
  const [contextDir, dockerfile, outDir] = process.argv.slice(2);
  if (outDir === undefined) {
    console.error('usage: stage-docker-context.ts <context dir> <Dockerfile> <out dir>');
    process.exit(2);
  }
  try {
    const staged = stageDockerContext(contextDir, dockerfile, outDir);
    console.error(`staged ${staged.files.length} files`);
    process.stdout.write(`${staged.buildDir}\n`);
  } catch (e) {
    console.error(`error: ${(e as Error).message}`);
    process.exit(1);
  }
}
