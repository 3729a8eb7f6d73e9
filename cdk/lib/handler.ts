/**
 * What the worker computes: the handler mode of `sluice-worker` (worker/PROTOCOL.md) and its
 * settings, the jobs' time limits, and the optional model-server container of the `http` mode.
 * Everything is validated here, eagerly, and turned into the worker's environment (`lib/env.ts`).
 */
import { Duration, Token } from 'aws-cdk-lib';
import * as ecs from 'aws-cdk-lib/aws-ecs';
import { HandlerMode, WorkerHandlerEnv } from './env';
import { MAX_JOB_TIMEOUT } from './limits';
import { wholeSeconds } from './validate';
import { WorkerImage } from './worker-image';

/**
 * The longest time limit a job may have (`max_job_timeout_seconds` of src/limits.json): a job's
 * message must become visible again within SQS's 12-hour visibility cap (43,200 s) counted from
 * its receipt, and this leaves 15 minutes for the receive, the claim and a final release.
 */
export const MAX_JOB_TIMEOUT_LIMIT = MAX_JOB_TIMEOUT;

/** Time limit of a job that sets no `timeout_seconds` (the worker's default, capped at the longest). */
export const DEFAULT_JOB_TIMEOUT = Duration.hours(1);

/** How long the handler's process or model server may take to become ready (the worker's default). */
export const DEFAULT_STARTUP_TIMEOUT = Duration.seconds(600);

/** The longest startup the worker accepts (`SLUICE_STARTUP_SECONDS`, 1 to 86,400). */
const MAX_STARTUP_SECONDS = 86_400;

/** The model server's port, SageMaker's. */
export const DEFAULT_MODEL_SERVER_PORT = 8080;

/** The built-in Rust handler. */
export interface DemoHandler {
  readonly mode: 'demo';
}

/** The user's program, one process per slot, over JSON lines on stdin/stdout. */
export interface ProcessHandler {
  readonly mode: 'process';
  /**
   * The program and its arguments, e.g. `['python3', '/app/handler.py']` (no shell: no variables,
   * globs or pipes). Written to `SLUICE_COMMAND` as a JSON array.
   */
  readonly command: string[];
  /**
   * How long each process may take to load its model and write its `ready` line
   * (`SLUICE_STARTUP_SECONDS`); after it, the process is killed and started again.
   *
   * @default DEFAULT_STARTUP_TIMEOUT (600 s)
   */
  readonly startupTimeout?: Duration;
}

/** A SageMaker-style model server (`GET /ping`, `POST /invocations`), usually in the same task. */
export interface HttpHandler {
  readonly mode: 'http';
  /**
   * The server's base URL (`SLUICE_MODEL_URL`), http or https, without a query.
   *
   * @default - `http://127.0.0.1:<modelServer.port>` with a model server, else `http://127.0.0.1:8080`
   */
  readonly modelUrl?: string;
  /**
   * How long the server may take to answer `GET /ping` with 200 (`SLUICE_STARTUP_SECONDS`); after
   * it the worker's health check fails and ECS replaces the task.
   *
   * @default DEFAULT_STARTUP_TIMEOUT (600 s)
   */
  readonly startupTimeout?: Duration;
  /**
   * The model server as a second container of the worker task. Without it, the server must be
   * reachable at `modelUrl` some other way (in the worker's own image, or elsewhere).
   *
   * @default - no second container
   */
  readonly modelServer?: ModelServer;
}

/** The worker's handler: one of the three modes of worker/PROTOCOL.md. */
export type WorkerHandler = DemoHandler | ProcessHandler | HttpHandler;

/**
 * The model server of the `http` mode, a second container in the worker task. It is essential (if
 * it exits, ECS replaces the task), shares the task's network (the worker reaches it on
 * 127.0.0.1), CPU and memory, and starts first: the worker container waits until it is STARTED, or
 * HEALTHY when it has a health check. On stop, ECS stops the worker first (it drains its jobs),
 * then the server.
 */
export interface ModelServer {
  /**
   * The server's image, e.g. `WorkerImage.fromUri('<account>.dkr.ecr.<region>.amazonaws.com/my-model:1')`;
   * it must have a linux/arm64 variant (the task runs on ARM64).
   */
  readonly image: WorkerImage;
  /**
   * The port the server listens on inside the task (no port is opened outside it).
   *
   * @default 8080 (SageMaker's)
   */
  readonly port?: number;
  /**
   * The container's command (arguments to the image's entrypoint). SageMaker inference containers
   * are started with `['serve']`.
   *
   * @default - the image's CMD
   */
  readonly command?: string[];
  /**
   * Environment variables of the server (no secrets: the task definition shows them).
   *
   * @default - none
   */
  readonly environment?: Record<string, string>;
  /**
   * The server's container health check, e.g. `{ command: ['CMD-SHELL', 'curl -fs http://127.0.0.1:8080/ping || exit 1'] }`
   * (the tool must exist in the image). With one, the worker waits until the server is HEALTHY.
   * A missing `startPeriod` gets the worker's (which covers the startup timeout, up to 300 s).
   *
   * @default - none: the worker waits for the container to start, then polls `GET /ping` itself
   */
  readonly healthCheck?: ecs.HealthCheck;
}

/** The handler as validated, with its defaults filled in. */
export interface ResolvedHandler {
  readonly mode: HandlerMode;
  /** The worker's environment for it. */
  readonly env: WorkerHandlerEnv;
  /** The startup timeout in seconds, for the process and http modes. */
  readonly startupSeconds?: number;
  /** The model server, with its port resolved. */
  readonly modelServer?: ModelServer & { readonly port: number };
}

const MODES: readonly HandlerMode[] = ['demo', 'process', 'http'];

function startupSeconds(d: Duration | undefined): number {
  const s = wholeSeconds(d ?? DEFAULT_STARTUP_TIMEOUT, 'startupTimeout');
  if (s < 1 || s > MAX_STARTUP_SECONDS) {
    throw new Error(`startupTimeout must be from 1 to ${MAX_STARTUP_SECONDS} seconds, got ${s}`);
  }
  return s;
}

/** Throws unless `url` is an http(s) base URL. */
export function validateModelUrl(url: string): void {
  if (Token.isUnresolved(url)) return;
  let u: URL;
  try {
    u = new URL(url);
  } catch {
    throw new Error(`modelUrl must be an http or https url, got ${JSON.stringify(url)}`);
  }
  if (u.protocol !== 'http:' && u.protocol !== 'https:') {
    throw new Error(`modelUrl must be an http or https url, got ${JSON.stringify(url)}`);
  }
  if (u.search !== '' || u.hash !== '' || u.username !== '' || u.password !== '') {
    throw new Error(`modelUrl must be a base url without credentials, query or fragment, got ${JSON.stringify(url)}`);
  }
}

/** Throws unless `command` is a non-empty list of non-empty strings; `name` names the prop. */
export function validateCommand(command: readonly string[] | undefined, name: string): void {
  if (!Array.isArray(command) || command.length === 0) {
    throw new Error(`${name} must list the program and its arguments, e.g. ["python3", "/app/handler.py"]`);
  }
  if (command.some((w) => typeof w !== 'string' || (!Token.isUnresolved(w) && w.length === 0))) {
    throw new Error(`${name} must be a list of strings, the first one the program, got ${JSON.stringify(command)}`);
  }
  if (command[0].trim() === '') {
    throw new Error(`${name}'s program (its first word) must not be blank`);
  }
}

function validateModelServer(server: ModelServer): ModelServer & { readonly port: number } {
  if (!(server.image instanceof WorkerImage)) {
    throw new Error('modelServer.image must be a WorkerImage (WorkerImage.fromUri, fromDirectory or fromContainerImage)');
  }
  const port = server.port ?? DEFAULT_MODEL_SERVER_PORT;
  if (!Number.isInteger(port) || port < 1 || port > 65_535) {
    throw new Error(`modelServer.port must be an integer from 1 to 65535, got ${port}`);
  }
  if (server.command !== undefined) validateCommand(server.command, 'modelServer.command');
  for (const [k, v] of Object.entries(server.environment ?? {})) {
    if (!/^[A-Za-z_][A-Za-z0-9_]*$/.test(k)) {
      throw new Error(`modelServer.environment names must be letters, digits and underscores, got ${JSON.stringify(k)}`);
    }
    if (typeof v !== 'string') {
      throw new Error(`modelServer.environment.${k} must be a string, got ${JSON.stringify(v)}`);
    }
  }
  const hc = server.healthCheck;
  if (hc !== undefined && (hc.command.length < 2 || !['CMD', 'CMD-SHELL'].includes(hc.command[0]))) {
    throw new Error(
      `modelServer.healthCheck.command must start with CMD or CMD-SHELL and have a command, got ${JSON.stringify(hc.command)}`,
    );
  }
  return { ...server, port };
}

/**
 * Validates a handler and fills in its defaults; throws a lowercase message naming the prop.
 * `modelServerHost` is where the worker reaches a model server of its task: `127.0.0.1` when the
 * task's containers share a network namespace (awsvpc), the server's link alias in bridge mode.
 */
export function resolveHandler(handler: WorkerHandler, modelServerHost = '127.0.0.1'): ResolvedHandler {
  // Props may come from JavaScript or JSON: check the discriminant, too.
  const mode = (handler as { mode?: unknown } | undefined)?.mode;
  if (!MODES.includes(mode as HandlerMode)) {
    throw new Error(`handler mode must be one of ${MODES.join(', ')}, got ${JSON.stringify(mode)}`);
  }
  switch (handler.mode) {
    case 'demo':
      return { mode: 'demo', env: { mode: 'demo' } };
    case 'process': {
      validateCommand(handler.command, 'handler command');
      const startup = startupSeconds(handler.startupTimeout);
      return {
        mode: 'process',
        env: { mode: 'process', command: [...handler.command], startupSeconds: startup },
        startupSeconds: startup,
      };
    }
    case 'http': {
      const modelServer = handler.modelServer === undefined ? undefined : validateModelServer(handler.modelServer);
      const host = modelServer === undefined ? '127.0.0.1' : modelServerHost;
      const modelUrl = handler.modelUrl ?? `http://${host}:${modelServer?.port ?? DEFAULT_MODEL_SERVER_PORT}`;
      validateModelUrl(modelUrl);
      const startup = startupSeconds(handler.startupTimeout);
      return {
        mode: 'http',
        env: { mode: 'http', modelUrl, startupSeconds: startup },
        startupSeconds: startup,
        modelServer,
      };
    }
  }
}

/** The longest time limit a job may ask for, in seconds; throws unless whole seconds within the limit. */
export function maxJobTimeoutSeconds(maxJobTimeout: Duration | undefined): number {
  const limit = MAX_JOB_TIMEOUT_LIMIT.toSeconds();
  const s = wholeSeconds(maxJobTimeout ?? MAX_JOB_TIMEOUT_LIMIT, 'maxJobTimeout');
  if (s < 1 || s > limit) {
    throw new Error(`maxJobTimeout must be from 1 to ${limit} seconds (below sqs's 12-hour visibility cap), got ${s}`);
  }
  return s;
}

/**
 * The default and the longest time limit of a job, in seconds; throws unless both are whole
 * seconds and the default is at most the longest. Without a default, it is 1 hour or the longest,
 * whichever is shorter (as the worker's own).
 */
export function jobTimeouts(
  jobTimeout: Duration | undefined,
  maxJobTimeout: Duration | undefined,
): { jobTimeoutSeconds: number; maxJobTimeoutSeconds: number } {
  const max = maxJobTimeoutSeconds(maxJobTimeout);
  const job =
    jobTimeout === undefined ? Math.min(DEFAULT_JOB_TIMEOUT.toSeconds(), max) : wholeSeconds(jobTimeout, 'jobTimeout');
  if (job < 1) {
    throw new Error(`jobTimeout must be at least 1 second, got ${job}`);
  }
  if (job > max) {
    throw new Error(`jobTimeout (${job} s) must be at most maxJobTimeout (${max} s)`);
  }
  return { jobTimeoutSeconds: job, maxJobTimeoutSeconds: max };
}
