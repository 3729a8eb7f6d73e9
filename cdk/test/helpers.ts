import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { App, CfnResource, Stack } from 'aws-cdk-lib';
import { Template } from 'aws-cdk-lib/assertions';
import * as ecs from 'aws-cdk-lib/aws-ecs';
import * as iam from 'aws-cdk-lib/aws-iam';
import { IConstruct } from 'constructs';
import { Binary } from '../lib/env';
import { SluiceStack, SluiceStackProps } from '../lib/sluice-stack';
import { WorkerImage } from '../lib/worker-image';

export const CDK_DIR = path.resolve(__dirname, '..');
export const REPO = path.resolve(CDK_DIR, '..');
/** Stub `bootstrap` files standing in for cargo-lambda's output. */
export const STUB_LAMBDAS = path.join(__dirname, 'fixtures', 'lambda');
export const POLICY_FILE = path.join(REPO, 'scaling', 'policy.json');

/** The environment each deployed binary gets in `stack` (which must have a pipeline). */
export function binaryEnvs(stack: SluiceStack, t: Template): Record<Binary, Record<string, unknown>> {
  const resources = t.toJSON().Resources;
  const lambdaEnv = (fn: { node: any }) => resources[logicalId(fn as any)].Properties.Environment.Variables;
  const containers = Object.values(t.findResources('AWS::ECS::TaskDefinition'))[0].Properties.ContainerDefinitions;
  const worker = containers.find((c: { Name: string }) => c.Name === 'Worker');
  return {
    submit: lambdaEnv(stack.jobApi.submitFunction),
    status: lambdaEnv(stack.jobApi.statusFunction),
    backlog: lambdaEnv(stack.scaling.function),
    ingest: lambdaEnv(stack.pipeline!.function),
    worker: Object.fromEntries(worker.Environment.map((e: { Name: string; Value: unknown }) => [e.Name, e.Value])),
  };
}

/**
 * Synthesizes one app of `stacks` (by id, on stub Lambdas) with CloudFormation validation and
 * cdk-nag's AwsSolutions checks, which fail the synth on any finding not acknowledged.
 */
export async function assertAwsSolutionsClean(stacks: Record<string, SluiceStackProps>): Promise<void> {
  const { Validations } = await import('aws-cdk-lib');
  const { AwsSolutionsChecks } = await import('cdk-nag');
  const app = testApp({}, true);
  for (const [id, props] of Object.entries(stacks)) {
    new SluiceStack(app, id, { lambdaAssetDir: STUB_LAMBDAS, ...props });
  }
  Validations.of(app).addPlugins(new AwsSolutionsChecks(app));
  assert.doesNotThrow(() => app.synth());
}

/** The context of cdk.json (feature flags included), so tests synthesize what `cdk synth` does. */
export function cdkJsonContext(): Record<string, unknown> {
  return JSON.parse(fs.readFileSync(path.join(CDK_DIR, 'cdk.json'), 'utf8')).context;
}

/**
 * An app with cdk.json's context. CDK's built-in CloudFormation schema validation costs seconds per
 * synth, so construct tests skip it; sluice-stack.test.ts and `cdk synth` run it (with cdk-nag).
 */
export function testApp(context: Record<string, unknown> = {}, validate = false): App {
  return new App({ context: { ...cdkJsonContext(), ...context }, builtinCloudFormationValidation: validate });
}

/** A registry image, so construct tests need not stage the Docker context. */
export const STUB_IMAGE = WorkerImage.fromContainerImage(
  ecs.ContainerImage.fromRegistry('public.ecr.aws/docker/library/busybox:stable'),
);

/**
 * The whole stack on stub assets: a stub worker image (with the demo handler, which an image of
 * one's own needs stated) unless the props give one.
 */
export function sluiceStack(props: SluiceStackProps = {}, app: App = testApp()): SluiceStack {
  return new SluiceStack(app, 'Test', {
    lambdaAssetDir: STUB_LAMBDAS,
    workerImage: STUB_IMAGE,
    workerHandler: { mode: 'demo' },
    ...props,
  });
}

let defaultTemplate: { stack: SluiceStack; t: Template } | undefined;

/**
 * The stack and its template; the default one (no props) is built once per test file and shared,
 * so tests must not add constructs to it.
 */
export function template(props: SluiceStackProps = {}): { stack: SluiceStack; t: Template } {
  if (Object.keys(props).length === 0) {
    if (defaultTemplate === undefined) {
      const stack = sluiceStack();
      defaultTemplate = { stack, t: Template.fromStack(stack) };
    }
    return defaultTemplate;
  }
  const stack = sluiceStack(props);
  return { stack, t: Template.fromStack(stack) };
}

export function logicalId(c: IConstruct): string {
  const el = (c.node.defaultChild ?? c) as CfnResource;
  return Stack.of(c).getLogicalId(el);
}

export interface Statement {
  Effect: string;
  Action: string | string[];
  Resource: unknown;
  Condition?: Record<string, unknown>;
}

/** Every statement of the policies attached to a role (CDK attaches through AWS::IAM::Policy). */
export function statementsOf(t: Template, role: iam.IRole): Statement[] {
  const id = logicalId(role);
  const roleResource = t.toJSON().Resources[id];
  if (roleResource === undefined) throw new Error(`no role ${id}`);
  if (roleResource.Properties.ManagedPolicyArns !== undefined || roleResource.Properties.Policies !== undefined) {
    throw new Error(`role ${id} has managed or inline policies`);
  }
  const policies = Object.values(t.findResources('AWS::IAM::Policy')).filter((p) =>
    (p.Properties.Roles as unknown[]).some((r) => JSON.stringify(r) === JSON.stringify({ Ref: id })),
  );
  return policies.flatMap((p) => p.Properties.PolicyDocument.Statement as Statement[]);
}

/** The sorted, de-duplicated actions a role may perform. */
export function actionsOf(t: Template, role: iam.IRole): string[] {
  const actions = statementsOf(t, role).flatMap((s) => (Array.isArray(s.Action) ? s.Action : [s.Action]));
  return [...new Set(actions)].sort();
}

/** The statements granting one action. */
export function grantsOf(t: Template, role: iam.IRole, action: string): Statement[] {
  return statementsOf(t, role).filter((s) => (Array.isArray(s.Action) ? s.Action : [s.Action]).includes(action));
}

/** JSON of a value, for comparing CloudFormation references. */
export const j = (v: unknown): string => JSON.stringify(v);

/** The policy file as a plain object, read independently of lib/policy.ts. */
export function policyFile(): any {
  return JSON.parse(fs.readFileSync(POLICY_FILE, 'utf8'));
}

/** A copy of the policy file with some fields changed, in a temporary file; returns its path. */
export function policyWith(patch: Record<string, unknown>): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'sluice-policy-'));
  const file = path.join(dir, 'policy.json');
  fs.writeFileSync(file, JSON.stringify({ ...policyFile(), ...patch }));
  return file;
}
