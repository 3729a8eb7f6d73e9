import { ChildProcess, spawn } from 'node:child_process';
import * as net from 'node:net';
import * as path from 'node:path';
import { REPO } from './helpers';

/** The emulator's Python: the repository's virtualenv (`make setup`), or SLUICE_EMULATOR_PYTHON. */
const PYTHON = process.env.SLUICE_EMULATOR_PYTHON ?? path.join(REPO, '.venv', 'bin', 'python');

async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.listen(0, '127.0.0.1', () => {
      const port = (server.address() as net.AddressInfo).port;
      server.close(() => resolve(port));
    });
    server.on('error', reject);
  });
}

/** A moto server (scripts/emulator.py) on a free loopback port; `stop()` ends it. */
export interface Emulator {
  readonly endpoint: string;
  stop(): void;
}

/**
 * Starts the emulator and points the AWS SDK at it through the standard variables (endpoint,
 * region, dummy keys), as the Rust tests do.
 */
export async function startEmulator(): Promise<Emulator> {
  const port = await freePort();
  const child: ChildProcess = spawn(PYTHON, [path.join(REPO, 'scripts', 'emulator.py'), '-H', '127.0.0.1', '-p', String(port)], {
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  let stderr = '';
  child.stderr?.on('data', (d) => (stderr += d));
  const endpoint = `http://127.0.0.1:${port}`;
  const deadline = Date.now() + 20_000;
  for (;;) {
    if (child.exitCode !== null) throw new Error(`the emulator exited (${child.exitCode}): ${stderr} (run make setup)`);
    try {
      if ((await fetch(`${endpoint}/moto-api/`)).ok) break;
    } catch {
      // not listening yet
    }
    if (Date.now() > deadline) {
      child.kill();
      throw new Error(`the emulator did not answer within 20 s: ${stderr}`);
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  Object.assign(process.env, {
    AWS_ENDPOINT_URL: endpoint,
    AWS_REGION: 'us-east-1',
    AWS_ACCESS_KEY_ID: 'testing',
    AWS_SECRET_ACCESS_KEY: 'testing',
  });
  delete process.env.AWS_PROFILE;
  delete process.env.AWS_SESSION_TOKEN;
  return { endpoint, stop: () => child.kill() };
}
