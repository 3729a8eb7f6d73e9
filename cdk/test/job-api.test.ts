import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { Match, Template } from 'aws-cdk-lib/assertions';
import { actionsOf, grantsOf, j, logicalId, sluiceStack, template, testApp } from './helpers';

const ROUTES = [
  'POST /jobs',
  'GET /jobs/{id}',
  'DELETE /jobs/{id}',
  'GET /webhook-secret',
  'POST /webhook-secret/rotate',
  'POST /uploads',
  'POST /uploads/{id}/complete',
];
/** The operators' routes: IAM-authorized whatever authorizes the callers, to the status function. */
const OPERATOR_ROUTES = ['GET /pipeline', 'POST /pipeline/pause', 'POST /pipeline/resume'];
const LOG_WRITE = ['logs:CreateLogStream', 'logs:PutLogEvents'];

test('the routes go to submit and status with payload format 2.0', () => {
  const { stack, t } = template();
  const routes = Object.values(t.findResources('AWS::ApiGatewayV2::Route'));
  assert.deepEqual(routes.map((r) => r.Properties.RouteKey).sort(), [...ROUTES, ...OPERATOR_ROUTES].sort());
  const integrations = t.findResources('AWS::ApiGatewayV2::Integration');
  for (const route of routes) {
    const target = route.Properties.Target['Fn::Join'][1][1].Ref as string;
    const integration = integrations[target].Properties;
    assert.equal(integration.IntegrationType, 'AWS_PROXY');
    assert.equal(integration.PayloadFormatVersion, '2.0');
    const toSubmit = route.Properties.RouteKey === 'POST /jobs' || route.Properties.RouteKey.startsWith('POST /uploads');
    const fn = toSubmit ? stack.jobApi.submitFunction : stack.jobApi.statusFunction;
    assert.equal(j(integration.IntegrationUri), j({ 'Fn::GetAtt': [logicalId(fn), 'Arn'] }));
  }
});

test('every route requires iam authorization by default', () => {
  const { t } = template();
  const routes = Object.values(t.findResources('AWS::ApiGatewayV2::Route'));
  assert.equal(routes.length, ROUTES.length + OPERATOR_ROUTES.length);
  for (const route of routes) {
    assert.equal(route.Properties.AuthorizationType, 'AWS_IAM', route.Properties.RouteKey);
  }
  t.resourceCountIs('AWS::ApiGatewayV2::Authorizer', 0);
});

test('every route requires a jwt when a jwt authorizer is configured', () => {
  const { t } = template({ jwt: { issuer: 'https://issuer.example.com/pool', audience: ['sluice-cli', 'sluice-web'] } });
  const authorizers = t.findResources('AWS::ApiGatewayV2::Authorizer');
  assert.equal(Object.keys(authorizers).length, 1);
  const [authorizerId, authorizer] = Object.entries(authorizers)[0];
  assert.equal(authorizer.Properties.AuthorizerType, 'JWT');
  assert.deepEqual(authorizer.Properties.JwtConfiguration, {
    Issuer: 'https://issuer.example.com/pool',
    Audience: ['sluice-cli', 'sluice-web'],
  });
  assert.deepEqual(authorizer.Properties.IdentitySource, ['$request.header.Authorization']);
  const routes = Object.values(t.findResources('AWS::ApiGatewayV2::Route'));
  assert.equal(routes.length, ROUTES.length + OPERATOR_ROUTES.length);
  for (const route of routes) {
    if (OPERATOR_ROUTES.includes(route.Properties.RouteKey)) {
      // The operators are IAM principals, whatever authorizes the callers.
      assert.equal(route.Properties.AuthorizationType, 'AWS_IAM', route.Properties.RouteKey);
      assert.equal(route.Properties.AuthorizerId, undefined);
      continue;
    }
    assert.equal(route.Properties.AuthorizationType, 'JWT', route.Properties.RouteKey);
    assert.deepEqual(route.Properties.AuthorizerId, { Ref: authorizerId });
  }
});

test('operators get a policy of their own for the pipeline routes, which the callers policy never grants', () => {
  const { stack, t } = template();
  const resources = t.toJSON().Resources;
  const operator = resources[logicalId(stack.jobApi.operatorPolicy)].Properties.PolicyDocument.Statement;
  assert.equal(operator.length, 1);
  assert.equal(operator[0].Action, 'execute-api:Invoke');
  const granted = operator[0].Resource.map(j);
  assert.equal(granted.length, 3, 'nothing but the pipeline routes');
  for (const route of ['/GET/pipeline"', '/POST/pipeline/pause"', '/POST/pipeline/resume"']) {
    assert.ok(granted.some((r: string) => r.includes(route)), `${route} in ${granted}`);
  }
  const callers = j(resources[logicalId(stack.jobApi.callerPolicy)].Properties.PolicyDocument);
  assert.ok(!callers.includes('pipeline'), `the callers policy grants no pipeline route: ${callers}`);
  // The pipeline routes go to the status function, which reads the operators.
  const routes = Object.values(t.findResources('AWS::ApiGatewayV2::Route')).filter((r) =>
    OPERATOR_ROUTES.includes(r.Properties.RouteKey),
  );
  assert.equal(routes.length, 3);
  const integrations = t.findResources('AWS::ApiGatewayV2::Integration');
  for (const route of routes) {
    const target = route.Properties.Target['Fn::Join'][1][1].Ref as string;
    assert.equal(
      j(integrations[target].Properties.IntegrationUri),
      j({ 'Fn::GetAtt': [logicalId(stack.jobApi.statusFunction), 'Arn'] }),
    );
  }
  const outputs = t.toJSON().Outputs;
  assert.deepEqual(outputs.OperatorPolicyArn.Value, { Ref: logicalId(stack.jobApi.operatorPolicy) });
});

test('the operators reach the status function, and nothing but iam user or role arns is taken', () => {
  const statusEnv = ({ stack, t }: ReturnType<typeof template>) =>
    t.toJSON().Resources[logicalId(stack.jobApi.statusFunction)].Properties.Environment.Variables;
  assert.equal(statusEnv(template()).SLUICE_OPERATORS, '', 'nobody by default');
  const arns = ['arn:aws:iam::123456789012:user/ops', 'arn:aws:iam::123456789012:role/team/Operators'];
  assert.equal(statusEnv(template({ operatorArns: arns })).SLUICE_OPERATORS, arns.join(','));
  const submit = ({ stack, t }: ReturnType<typeof template>) =>
    t.toJSON().Resources[logicalId(stack.jobApi.submitFunction)].Properties.Environment.Variables;
  assert.equal(submit(template({ operatorArns: arns })).SLUICE_OPERATORS, undefined, 'submit serves no operator');
  for (const bad of ['ops', 'arn:aws:sts::123456789012:assumed-role/Operators/alice', 'arn:aws:iam::123456789012:group/ops']) {
    assert.throws(() => template({ operatorArns: [bad] }), new RegExp(`operators must be IAM user or role ARNs, got ${bad}`));
  }
});

test('the default stage is throttled and writes access logs', () => {
  const { stack, t } = template({ apiRateLimit: 20, apiBurstLimit: 40 });
  t.resourceCountIs('AWS::ApiGatewayV2::Stage', 1);
  t.hasResourceProperties('AWS::ApiGatewayV2::Stage', {
    StageName: '$default',
    AutoDeploy: true,
    DefaultRouteSettings: { ThrottlingRateLimit: 20, ThrottlingBurstLimit: 40 },
    AccessLogSettings: {
      DestinationArn: { 'Fn::GetAtt': [logicalId(stack.jobApi.accessLogGroup), 'Arn'] },
      Format: Match.stringLikeRegexp('\\$context\\.requestId'),
    },
  });
});

test('the functions are rust on provided.al2023 for arm64, from the asset folders', () => {
  const app = testApp();
  const stack = sluiceStack({}, app);
  const t = Template.fromStack(stack);
  for (const fn of [stack.jobApi.submitFunction, stack.jobApi.statusFunction]) {
    t.hasResourceProperties('AWS::Lambda::Function', {
      Runtime: 'provided.al2023',
      Architectures: ['arm64'],
      Handler: 'bootstrap',
      FunctionName: Match.absent(),
      Role: { 'Fn::GetAtt': [Match.stringLikeRegexp(`^${logicalId(fn.role!)}$`), 'Arn'] },
    });
  }
  const assembly = app.synth();
  const manifest = JSON.parse(fs.readFileSync(path.join(assembly.directory, `${stack.artifactId}.assets.json`), 'utf8'));
  const staged = (Object.values(manifest.files) as any[])
    .map((f) => path.join(assembly.directory, f.source.path, 'bootstrap'))
    .filter((p) => fs.existsSync(p))
    .map((p) => fs.readFileSync(p, 'utf8'));
  // One staged asset per function, each the stub of its own binary.
  for (const name of ['submit', 'status', 'backlog']) {
    assert.equal(staged.filter((s) => s.includes(`target/lambda/${name}/bootstrap`)).length, 1, name);
  }
});

test('submit may only put, get and condition-check jobs, send to the queue and nudge the service under the lease', () => {
  const { stack, t } = template();
  const role = stack.jobApi.submitFunction.role!;
  assert.deepEqual(
    actionsOf(t, role),
    [
      'dynamodb:ConditionCheckItem',
      'dynamodb:GetItem',
      'dynamodb:PutItem',
      'dynamodb:UpdateItem',
      'ecs:DescribeServices',
      'ecs:UpdateService',
      ...LOG_WRITE,
      's3:AbortMultipartUpload',
      's3:GetObject',
      's3:ListMultipartUploadParts',
      's3:PutObject',
      'sqs:SendMessage',
    ].sort(),
  );
  // Uploads: objects under uploads/ only.
  for (const action of ['s3:PutObject', 's3:GetObject']) {
    const grants = grantsOf(t, role, action);
    assert.equal(grants.length, 1, action);
    assert.equal(
      j(grants[0].Resource),
      j({ 'Fn::Join': ['', [{ 'Fn::GetAtt': [logicalId(stack.jobQueue.payloadBucket), 'Arn'] }, '/uploads/*']] }),
    );
  }
  assert.equal(
    j(grantsOf(t, role, 'sqs:SendMessage')[0].Resource),
    j({ 'Fn::GetAtt': [logicalId(stack.jobQueue.queue), 'Arn'] }),
  );
  assert.equal(j(grantsOf(t, role, 'ecs:UpdateService')[0].Resource), j({ Ref: logicalId(stack.workers.service) }));
  assert.ok(j(grantsOf(t, role, 'dynamodb:PutItem')[0].Resource).includes(logicalId(stack.jobTable.table)));
  // Giving back the scaling lease and completing an upload: on the lease and upload items only,
  // never on job records.
  const updates = grantsOf(t, role, 'dynamodb:UpdateItem');
  assert.deepEqual(
    updates.map((g) => (g.Condition as any)['ForAllValues:StringLike']['dynamodb:LeadingKeys']).sort(),
    [['scale:*'], ['upload:*']],
  );
});

test('status may only get and update jobs, read what jobs produced, and cannot send messages', () => {
  const { stack, t } = template();
  const role = stack.jobApi.statusFunction.role!;
  assert.deepEqual(actionsOf(t, role), ['dynamodb:GetItem', 'dynamodb:UpdateItem', ...LOG_WRITE, 's3:GetObject'].sort());
  assert.equal(grantsOf(t, role, 'sqs:SendMessage').length, 0);
  // Downloads it presigns: results/ and outputs/ only, never the callers' uploads.
  const bucket = logicalId(stack.jobQueue.payloadBucket);
  const under = (prefix: string) => ({ 'Fn::Join': ['', [{ 'Fn::GetAtt': [bucket, 'Arn'] }, `/${prefix}/*`]] });
  assert.equal(j(grantsOf(t, role, 's3:GetObject')[0].Resource), j([under('outputs'), under('results')]));
});

test('log writes are limited to each function its own log group', () => {
  const { stack, t } = template();
  for (const fn of [stack.jobApi.submitFunction, stack.jobApi.statusFunction, stack.scaling.function]) {
    const fnProps = t.toJSON().Resources[logicalId(fn)].Properties;
    const logGroup = fnProps.LoggingConfig.LogGroup;
    const grant = grantsOf(t, fn.role!, 'logs:PutLogEvents');
    assert.equal(grant.length, 1);
    assert.equal(j(grant[0].Resource), j({ 'Fn::GetAtt': [logGroup.Ref, 'Arn'] }));
  }
});

test('bad api props are rejected', () => {
  assert.throws(() => template({ jwt: { issuer: 'http://issuer.example.com', audience: ['a'] } }), /jwt issuer must be an https url/);
  assert.throws(() => template({ jwt: { issuer: 'https://issuer.example.com', audience: [] } }), /jwt audience must list at least one/);
  assert.throws(() => template({ maxAttempts: 0 }), /maxAttempts must be a positive integer/);
  assert.throws(() => template({ apiRateLimit: -1 }), /throttle limits must be positive/);
  assert.throws(() => template({ lambdaAssetDir: '/nonexistent' }), /lambda asset not found: \/nonexistent\/submit\/bootstrap/);
});

test('each caller is its own owner as far as aws vouches for it, unless the deployment says one owner per role', () => {
  const envOf = ({ stack, t }: ReturnType<typeof template>) =>
    [stack.jobApi.submitFunction, stack.jobApi.statusFunction].map(
      (fn) => t.toJSON().Resources[logicalId(fn)].Properties.Environment.Variables,
    );
  for (const v of envOf(template())) {
    assert.equal(v.SLUICE_OWNER_SCOPE, 'session');
    assert.equal(v.SLUICE_PINNED_SESSION_ROLES, '', 'no role has its session names trusted by default');
  }
  for (const v of envOf(template({ ownerScope: 'role' }))) assert.equal(v.SLUICE_OWNER_SCOPE, 'role');
  assert.throws(() => template({ ownerScope: 'user' as never }), /ownerScope must be session or role, got user/);
});

test('the roles whose trust policies pin session names reach submit and status', () => {
  const arns = ['arn:aws:iam::123456789012:role/Analysts', 'arn:aws:iam::123456789012:role/teams/OktaDevelopers'];
  const { stack, t } = template({ pinnedSessionRoleArns: arns });
  for (const fn of [stack.jobApi.submitFunction, stack.jobApi.statusFunction]) {
    const v = t.toJSON().Resources[logicalId(fn)].Properties.Environment.Variables;
    assert.equal(v.SLUICE_PINNED_SESSION_ROLES, arns.join(','));
    assert.equal(v.SLUICE_OWNER_SCOPE, 'session');
  }
  // The stack creates no caller role: the trust policies are the deployment's own.
  for (const role of Object.values(t.findResources('AWS::IAM::Role'))) {
    const principals = role.Properties.AssumeRolePolicyDocument.Statement.map((s: any) => j(s.Principal));
    assert.ok(principals.every((p: string) => p.includes('Service')), `only service roles, got ${principals}`);
  }
  assert.throws(
    () => template({ ownerScope: 'role', pinnedSessionRoleArns: arns }),
    /pinnedSessionRoles needs ownerScope session/,
  );
  for (const bad of ['arn:aws:iam::123456789012:user/alice', 'Analysts']) {
    assert.throws(() => template({ pinnedSessionRoleArns: [bad] }), new RegExp(`pinnedSessionRoles must be roles, got ${bad}`));
  }
});

test('callers get a managed policy for the routes, and the stack says what to grant', () => {
  const { stack, t } = template();
  const policy = t.toJSON().Resources[logicalId(stack.jobApi.callerPolicy)].Properties;
  const statements = policy.PolicyDocument.Statement;
  assert.equal(statements.length, 1);
  assert.equal(statements[0].Action, 'execute-api:Invoke');
  const resources = j(statements[0].Resource);
  const routes = ['/POST/jobs', '/GET/jobs/*', '/DELETE/jobs/*', '/GET/webhook-secret', '/POST/webhook-secret/rotate'];
  for (const route of [...routes, '/POST/uploads', '/POST/uploads/*/complete']) {
    assert.ok(resources.includes(route), `${route} in ${resources}`);
  }
  assert.equal(statements[0].Resource.length, ROUTES.length, 'nothing but the routes');
  const outputs = t.toJSON().Outputs;
  for (const name of ['ApiId', 'ExecuteApiArn', 'CallerPolicyArn']) {
    assert.ok(outputs[name], `output ${name}`);
  }
  assert.deepEqual(outputs.CallerPolicyArn.Value, { Ref: logicalId(stack.jobApi.callerPolicy) });
});
