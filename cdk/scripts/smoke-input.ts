/**
 * Prints the job input `make smoke` submits: the `SmokeInput` output of the deployed stack in
 * cdk/outputs.json (the stack named by SLUICE_SMOKE_STACK when the file holds several). Prints
 * nothing when there is no outputs file (a local stack: smoke.sh's default applies); exits 2 with
 * the fix when the deployed stack publishes no smoke input (a handler of your own).
 *
 *   npx tsx scripts/smoke-input.ts [outputs.json]
 */
import * as fs from 'node:fs';
import * as path from 'node:path';

/** The smoke input of the outputs file, or why there is none. */
export function smokeInput(outputs: Record<string, Record<string, string>>, stack?: string): string {
  const stacks = Object.entries(outputs).filter(([name, o]) => (stack ? name === stack : o.ApiUrl !== undefined));
  if (stacks.length === 0) {
    throw new Error(stack ? `no stack ${stack} in the outputs file` : 'no stack with an ApiUrl in the outputs file');
  }
  if (stacks.length > 1) {
    throw new Error(`several stacks in the outputs file (${stacks.map(([n]) => n).join(', ')}): set SLUICE_SMOKE_STACK`);
  }
  const [name, o] = stacks[0];
  if (o.SmokeInput === undefined) {
    throw new Error(
      `stack ${name} publishes no SmokeInput (its handler is your own, and so is its input): run ` +
        `make smoke SLUICE_SMOKE_INPUT='<a json input your handler accepts>', or deploy with -c 'smokeInput=<json>' ` +
        '(or put a smoke-input.json beside your Dockerfile)',
    );
  }
  return o.SmokeInput;
}

if (require.main === module) {
  const file = process.argv[2] ?? path.join(__dirname, '..', 'outputs.json');
  if (fs.existsSync(file)) {
    try {
      process.stdout.write(smokeInput(JSON.parse(fs.readFileSync(file, 'utf8')), process.env.SLUICE_SMOKE_STACK || undefined));
    } catch (e) {
      process.stderr.write(`smoke: ${(e as Error).message}\n`);
      process.exit(2);
    }
  }
}
