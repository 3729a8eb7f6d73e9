/**
 * The images of the worker task: the worker's (by default `worker/Dockerfile`, or the user's own,
 * e.g. an example's) and the optional model server's. Built for linux/arm64 (the task runs on
 * ARM64) or taken from a registry.
 *
 * Build contexts and .dockerignore: CDK stages (and hashes) an image's build context filtered by
 * the context's `.dockerignore` plus the asset's `exclude` patterns; it does not read BuildKit's
 * `<Dockerfile>.dockerignore`. BuildKit, which `cdk deploy` builds with, reads that file instead of
 * the context's `.dockerignore` when it exists. So for a Dockerfile with its own ignore file (the
 * examples' `examples/<name>/Dockerfile.dockerignore`), the asset's `exclude` first re-includes
 * everything (`!**`, which undoes the root file's patterns) and then applies that file's patterns:
 * CDK stages, hashes and Docker builds exactly the same files, and the default worker image's
 * context (and hash) never holds `examples/` or `python/`.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { IgnoreMode, Token } from 'aws-cdk-lib';
import * as ecr from 'aws-cdk-lib/aws-ecr';
import { Platform } from 'aws-cdk-lib/aws-ecr-assets';
import * as ecs from 'aws-cdk-lib/aws-ecs';
import { Construct } from 'constructs';
import { REPO_ROOT } from './policy';

/** The platform images are built for by default: the Fargate task's (ARM64 Linux, Graviton). */
export const IMAGE_PLATFORM = Platform.LINUX_ARM64;

/** The platform of GPU workers: the G instances (g4dn, g5, g6, ...) are x86_64. */
export const GPU_IMAGE_PLATFORM = Platform.LINUX_AMD64;

/** The default worker image's Dockerfile, relative to the repository root (its build context). */
export const DEFAULT_WORKER_DOCKERFILE = path.join('worker', 'Dockerfile');

/** Options of {@link WorkerImage.fromDirectory}. */
export interface WorkerImageDirectoryOptions {
  /**
   * The Dockerfile, relative to the directory.
   *
   * @default 'Dockerfile'
   */
  readonly file?: string;
  /**
   * Build arguments (`--build-arg`); they are part of the asset's hash.
   *
   * @default - none
   */
  readonly buildArgs?: Record<string, string>;
  /**
   * The build context. Relative paths are relative to the repository root.
   *
   * @default - the repository root when the directory is inside the repository (as
   * `worker/Dockerfile` and the examples' Dockerfiles expect: they compile sluice-worker from the
   * workspace), else the directory itself
   */
  readonly buildContext?: string;
}

/** Where an image comes from, for inspection (tests, synth output). */
export type WorkerImageSource =
  | {
      readonly kind: 'directory';
      /** The build context, absolute. */
      readonly buildContext: string;
      /** The Dockerfile, relative to the build context (POSIX separators). */
      readonly file: string;
      readonly buildArgs: Readonly<Record<string, string>>;
      /** The `<Dockerfile>.dockerignore` in effect instead of the context's `.dockerignore`, absolute. */
      readonly dockerignore?: string;
    }
  | { readonly kind: 'uri'; readonly uri: string }
  | { readonly kind: 'container-image' };

/** `<account>.dkr.ecr.<region>.amazonaws.com[.cn]/<repository>[:tag][@digest]`. */
const ECR_URI =
  /^(\d{12})\.dkr\.ecr\.([a-z]{2}(?:-[a-z]+)+-\d)\.amazonaws\.com(\.cn)?\/([a-z0-9]+(?:[._/-]+[a-z0-9]+)*)(?::([\w][\w.-]{0,127}))?(?:@(sha256:[a-f0-9]{64}))?$/;

/** A Docker image reference: `[registry[:port]/]name[/name…][:tag][@digest]`. */
const IMAGE_REFERENCE =
  /^(?:[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?(?:\.[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?)*(?::\d+)?\/)?[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*(?:\/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*(?::[\w][\w.-]{0,127})?(?:@sha256:[a-f0-9]{64})?$/;

function isInside(parent: string, child: string): boolean {
  const rel = path.relative(parent, child);
  return rel === '' || (!rel.startsWith('..') && !path.isAbsolute(rel));
}

/** The non-comment, non-blank lines of an ignore file. */
export function ignorePatterns(file: string): string[] {
  return fs
    .readFileSync(file, 'utf8')
    .split('\n')
    .map((l) => l.trim())
    .filter((l) => l !== '' && !l.startsWith('#'));
}

/**
 * The ignore file BuildKit uses for a Dockerfile: `<Dockerfile>.dockerignore` beside it if there
 * is one, else the context's `.dockerignore` (or none).
 */
export function dockerignoreFor(buildContext: string, dockerfile: string): string | undefined {
  const own = `${path.resolve(buildContext, dockerfile)}.dockerignore`;
  if (fs.existsSync(own)) return own;
  const shared = path.join(path.resolve(buildContext), '.dockerignore');
  return fs.existsSync(shared) ? shared : undefined;
}

/**
 * The patterns that filter a Dockerfile's build context, as BuildKit applies them (see the module
 * comment); `stage-docker-context.ts` stages with these.
 */
export function contextPatterns(buildContext: string, dockerfile: string): string[] {
  const file = dockerignoreFor(buildContext, dockerfile);
  return file === undefined ? [] : ignorePatterns(file);
}

/**
 * The `exclude` patterns to give CDK's image asset, which itself reads the context's
 * `.dockerignore` first: none when that is the file BuildKit uses, else a reset and the
 * Dockerfile's own patterns (and the Dockerfile and its ignore file, which Docker always reads).
 */
export function assetExcludes(buildContext: string, dockerfile: string): string[] {
  const context = path.resolve(buildContext);
  const file = dockerignoreFor(context, dockerfile);
  if (file === undefined || file === path.join(context, '.dockerignore')) return [];
  const rel = (p: string) => path.relative(context, p).split(path.sep).join('/');
  return ['!**', ...ignorePatterns(file), `!${rel(path.resolve(context, dockerfile))}`, `!${rel(file)}`];
}

/**
 * An image of the worker task: built from a Dockerfile (as a CDK asset, pushed to the bootstrap
 * repository on deploy) or taken from a registry.
 */
export abstract class WorkerImage {
  /**
   * Built from a Dockerfile for linux/arm64. A directory inside the repository is built with the
   * repository root as the context (the Dockerfile at `<directory>/<file>`), as `worker/Dockerfile`
   * and the examples' `examples/<name>/Dockerfile` expect; any other directory is its own context.
   * A `<Dockerfile>.dockerignore` beside the Dockerfile replaces the context's `.dockerignore`, as
   * with BuildKit. Relative paths are relative to the repository root.
   *
   * @param directory The directory holding the Dockerfile, e.g. `examples/sentiment`.
   */
  public static fromDirectory(directory: string, options: WorkerImageDirectoryOptions = {}): WorkerImage {
    const dir = path.resolve(REPO_ROOT, directory);
    if (!fs.existsSync(dir) || !fs.statSync(dir).isDirectory()) {
      throw new Error(`worker image directory ${directory} does not exist (relative paths start at the repository root)`);
    }
    const dockerfile = path.resolve(dir, options.file ?? 'Dockerfile');
    if (!fs.existsSync(dockerfile) || !fs.statSync(dockerfile).isFile()) {
      throw new Error(`worker image dockerfile ${path.relative(REPO_ROOT, dockerfile) || dockerfile} does not exist`);
    }
    const buildContext =
      options.buildContext !== undefined
        ? path.resolve(REPO_ROOT, options.buildContext)
        : isInside(REPO_ROOT, dir)
          ? REPO_ROOT
          : dir;
    if (!fs.existsSync(buildContext) || !fs.statSync(buildContext).isDirectory()) {
      throw new Error(`worker image build context ${options.buildContext} does not exist`);
    }
    if (!isInside(buildContext, dockerfile)) {
      throw new Error(`worker image dockerfile ${dockerfile} must be inside its build context ${buildContext}`);
    }
    const buildArgs = options.buildArgs ?? {};
    for (const [k, v] of Object.entries(buildArgs)) {
      if (!/^[A-Za-z_][A-Za-z0-9_]*$/.test(k) || typeof v !== 'string') {
        throw new Error(`worker image build args must map names to strings, got ${JSON.stringify(k)}: ${JSON.stringify(v)}`);
      }
    }
    return new DirectoryImage(buildContext, path.relative(buildContext, dockerfile), buildArgs);
  }

  /**
   * An image already in a registry, e.g. `123456789012.dkr.ecr.us-east-1.amazonaws.com/my-worker:1.2`
   * (prefer an immutable tag or a digest: with a moving tag, a deploy does not roll the tasks). It
   * must have a linux/arm64 variant. A private ECR image is pulled with the task's execution role
   * (granted here; a repository of another account must allow this account in its policy); other
   * registries must be public (or use `fromContainerImage` with credentials).
   */
  public static fromUri(uri: string): WorkerImage {
    if (!Token.isUnresolved(uri)) {
      if (typeof uri !== 'string' || !IMAGE_REFERENCE.test(uri)) {
        throw new Error(
          `worker image uri must be an image reference like 123456789012.dkr.ecr.us-east-1.amazonaws.com/repo:tag, got ${JSON.stringify(uri)}`,
        );
      }
      if (uri.includes('.dkr.ecr.') && !ECR_URI.test(uri)) {
        throw new Error(
          `worker image uri looks like ecr but is not <account>.dkr.ecr.<region>.amazonaws.com/<repository>[:tag|@digest]: ${uri}`,
        );
      }
    }
    return new UriImage(uri);
  }

  /** Any ECS container image (e.g. `ecs.ContainerImage.fromRegistry(name, { credentials })`), as it is. */
  public static fromContainerImage(image: ecs.ContainerImage): WorkerImage {
    return new ContainerImageWrapper(image);
  }

  /** Where the image comes from. */
  public abstract readonly source: WorkerImageSource;

  /**
   * The ECS container image, made in `scope` (`id` names any construct it needs there). An image
   * built from a Dockerfile is built for `platform`; an image from a registry must have a variant
   * for it.
   */
  public abstract bind(scope: Construct, id: string, platform?: Platform): ecs.ContainerImage;
}

class DirectoryImage extends WorkerImage {
  public readonly source: WorkerImageSource;

  constructor(
    private readonly buildContext: string,
    private readonly file: string,
    private readonly buildArgs: Record<string, string>,
  ) {
    super();
    const ignore = dockerignoreFor(buildContext, file);
    this.source = {
      kind: 'directory',
      buildContext,
      file: file.split(path.sep).join('/'),
      buildArgs,
      dockerignore: ignore === path.join(buildContext, '.dockerignore') ? undefined : ignore,
    };
  }

  public bind(_scope: Construct, _id: string, platform: Platform = IMAGE_PLATFORM): ecs.ContainerImage {
    return ecs.ContainerImage.fromAsset(this.buildContext, {
      file: this.file,
      platform,
      buildArgs: Object.keys(this.buildArgs).length === 0 ? undefined : this.buildArgs,
      ignoreMode: IgnoreMode.DOCKER,
      exclude: assetExcludes(this.buildContext, this.file),
    });
  }
}

class UriImage extends WorkerImage {
  public readonly source: WorkerImageSource;

  constructor(private readonly uri: string) {
    super();
    this.source = { kind: 'uri', uri };
  }

  public bind(scope: Construct, id: string): ecs.ContainerImage {
    const m = Token.isUnresolved(this.uri) ? null : ECR_URI.exec(this.uri);
    if (m === null) return ecs.ContainerImage.fromRegistry(this.uri);
    const [, account, region, cn, name, tag, digest] = m;
    const partition = cn !== undefined ? 'aws-cn' : region.startsWith('us-gov-') ? 'aws-us-gov' : 'aws';
    // An imported repository, so the execution role is granted the pull (and only from it).
    const repository = ecr.Repository.fromRepositoryAttributes(scope, `${id}Repository`, {
      repositoryArn: `arn:${partition}:ecr:${region}:${account}:repository/${name}`,
      repositoryName: name,
    });
    return ecs.ContainerImage.fromEcrRepository(repository, digest ?? tag ?? 'latest');
  }
}

class ContainerImageWrapper extends WorkerImage {
  public readonly source: WorkerImageSource = { kind: 'container-image' };

  constructor(private readonly image: ecs.ContainerImage) {
    super();
  }

  public bind(): ecs.ContainerImage {
    return this.image;
  }
}

/** The default worker image: `worker/Dockerfile`, the repository root as the context. */
export function defaultWorkerImage(): WorkerImage {
  return WorkerImage.fromDirectory(path.dirname(DEFAULT_WORKER_DOCKERFILE));
}
