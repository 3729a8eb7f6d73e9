import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import { App } from 'aws-cdk-lib';
import { Match, Template } from 'aws-cdk-lib/assertions';
import { stackConfigFromContext } from '../lib/config';
import { EventsOptions, checkEventBus } from '../lib/constructs/job-events';
import { SluiceStack } from '../lib/sluice-stack';
import { Binary } from '../lib/env';
import { Statement, assertAwsSolutionsClean, binaryEnvs, j, logicalId, sluiceStack, statementsOf, template } from './helpers';

const OWNER = 'iam:arn:aws:sts::123456789012:assumed-role/Ops';
const VARS = ['SLUICE_SUCCESS_TOPIC_ARN', 'SLUICE_ERROR_TOPIC_ARN', 'SLUICE_EVENT_BUS'];
const PUBLISH_ACTIONS = ['sns:Publish', 'events:PutEvents'];

/** A stack with the events option, and the pipeline so that the ingest function is deployed. */
/** The binaries that mark jobs (submit, ingest) or publish their ends (worker, backlog). */
const MARK_OR_PUBLISH: Binary[] = ['submit', 'ingest', 'worker', 'backlog'];

function withEvents(events?: EventsOptions): { stack: SluiceStack; t: Template } {
  return template({ events, pipeline: { owner: OWNER } });
}


/** The resources of the statements granting `action`, as JSON, sorted. */
function resourcesOf(statements: Statement[], action: string): string[] {
  return statements
    .filter((s) => (Array.isArray(s.Action) ? s.Action : [s.Action]).includes(action))
    .flatMap((s) => (Array.isArray(s.Resource) ? s.Resource : [s.Resource]))
    .map((r) => j(r))
    .sort();
}

/** Every IAM policy of the template granting one of `actions`, by the logical ids of its roles. */
function rolesGranting(t: Template, actions: string[]): string[] {
  const roles = new Set<string>();
  for (const policy of Object.values(t.findResources('AWS::IAM::Policy'))) {
    const statements = policy.Properties.PolicyDocument.Statement as Statement[];
    const grants = statements.some((s) => (Array.isArray(s.Action) ? s.Action : [s.Action]).some((a) => actions.includes(a)));
    if (grants) for (const r of policy.Properties.Roles as { Ref: string }[]) roles.add(r.Ref);
  }
  return [...roles].sort();
}

/** `arn:<partition>:events:<region>:<account>:event-bus/<name>` as CloudFormation spells it. */
const busArnOf = (name: string) =>
  j({
    'Fn::Join': [
      '',
      ['arn:', { Ref: 'AWS::Partition' }, ':events:', { Ref: 'AWS::Region' }, ':', { Ref: 'AWS::AccountId' }, `:event-bus/${name}`],
    ],
  });

test('without the option nothing is made, no variable is set and nobody may publish', () => {
  const { stack, t } = withEvents();
  assert.equal(stack.events, undefined);
  // The alarm topic is the only one.
  t.resourceCountIs('AWS::SNS::Topic', 1);
  for (const [binary, env] of Object.entries(binaryEnvs(stack, t))) {
    for (const name of VARS) assert.equal(name in env, false, `${binary}: ${name}`);
  }
  assert.deepEqual(rolesGranting(t, PUBLISH_ACTIONS), []);
  const outputs = Object.keys(t.toJSON().Outputs);
  for (const o of ['SuccessTopicArn', 'ErrorTopicArn', 'EventBusArn']) assert.equal(outputs.includes(o), false, o);
});

test('topics: two topics encrypted with the aws/sns key, publishing over tls only, and their arns as outputs', () => {
  const { stack, t } = withEvents({ topics: true });
  const e = stack.events!;
  t.resourceCountIs('AWS::SNS::Topic', 3);
  const resources = t.toJSON().Resources;
  for (const topic of [e.successTopic!, e.errorTopic!]) {
    const key = j(resources[logicalId(topic)].Properties.KmsMasterKeyId);
    assert.ok(key.endsWith(':alias/aws/sns"]]}'), key);
    t.hasResourceProperties('AWS::SNS::TopicPolicy', {
      Topics: [{ Ref: logicalId(topic) }],
      PolicyDocument: {
        Statement: Match.arrayWith([
          Match.objectLike({
            Effect: 'Deny',
            Principal: '*',
            Action: 'sns:Publish',
            Condition: { Bool: { 'aws:SecureTransport': 'false' } },
          }),
        ]),
      },
    });
  }
  const outputs = t.toJSON().Outputs;
  assert.deepEqual(outputs.SuccessTopicArn.Value, { Ref: logicalId(e.successTopic!) });
  assert.deepEqual(outputs.ErrorTopicArn.Value, { Ref: logicalId(e.errorTopic!) });
  assert.equal(outputs.EventBusArn, undefined);
  assert.equal(e.eventBus, undefined);
});

test('topics: the four binaries that mark or publish jobs name both topics, and status does not', () => {
  const { stack, t } = withEvents({ topics: true });
  const e = stack.events!;
  const all = binaryEnvs(stack, t);
  for (const binary of MARK_OR_PUBLISH) {
    const env = all[binary];
    assert.deepEqual(env.SLUICE_SUCCESS_TOPIC_ARN, { Ref: logicalId(e.successTopic!) }, binary);
    assert.deepEqual(env.SLUICE_ERROR_TOPIC_ARN, { Ref: logicalId(e.errorTopic!) }, binary);
    assert.equal('SLUICE_EVENT_BUS' in env, false, `${binary}: no bus, no variable`);
  }
  for (const name of VARS) assert.equal(name in all.status, false, `status: ${name}`);
});

test('topics: the workers and the backlog function may publish to exactly the two topics, and no other role may', () => {
  const { stack, t } = withEvents({ topics: true });
  const e = stack.events!;
  const topics = [j({ Ref: logicalId(e.errorTopic!) }), j({ Ref: logicalId(e.successTopic!) })].sort();
  const publishers = [stack.workers.taskDefinition.taskRole, stack.scaling.function.role!];
  for (const role of publishers) {
    const statements = statementsOf(t, role);
    assert.deepEqual(resourcesOf(statements, 'sns:Publish'), topics, logicalId(role));
    assert.deepEqual(resourcesOf(statements, 'events:PutEvents'), [], logicalId(role));
    // SNS encrypts with the aws/sns key on the publisher's behalf: that key, by its alias, only.
    const kms = statements.filter((s) => j(s.Action).includes('kms:GenerateDataKey'));
    assert.ok(kms.length > 0, 'a key grant for the encrypted topics');
    for (const s of kms) assert.deepEqual(s.Condition, { 'ForAnyValue:StringEquals': { 'kms:ResourceAliases': 'alias/aws/sns' } });
  }
  assert.deepEqual(rolesGranting(t, PUBLISH_ACTIONS), publishers.map((r) => logicalId(r)).sort());
  // Submit and ingest mark jobs: variables, no grant.
  for (const fn of [stack.jobApi.submitFunction, stack.pipeline!.function]) {
    assert.deepEqual(resourcesOf(statementsOf(t, fn.role!), 'sns:Publish'), []);
  }
});

test('topics: the dashboard shows each topic\'s failed deliveries, and no graph without topics', () => {
  const { stack, t } = withEvents({ topics: true });
  const e = stack.events!;
  const body = j(t.toJSON().Resources[logicalId(stack.observability.dashboard)].Properties.DashboardBody);
  assert.ok(body.includes('NumberOfNotificationsFailed'), body);
  assert.ok(body.includes('NumberOfMessagesPublished'), body);
  for (const topic of [e.successTopic!, e.errorTopic!]) {
    assert.ok(body.includes(j({ 'Fn::GetAtt': [logicalId(topic), 'TopicName'] })), logicalId(topic));
  }
  for (const none of [withEvents(), withEvents({ eventBus: 'default' })]) {
    const text = j(none.t.toJSON().Resources[logicalId(none.stack.observability.dashboard)].Properties.DashboardBody);
    assert.equal(text.includes('NumberOfNotificationsFailed'), false);
  }
});

test('eventBus default: the default bus of the stack\'s account and region, by arn, in the grant and the variable', () => {
  const { stack, t } = withEvents({ eventBus: 'default' });
  // No topic but the alarm topic.
  t.resourceCountIs('AWS::SNS::Topic', 1);
  assert.equal(stack.events!.successTopic, undefined);
  const arn = busArnOf('default');
  for (const role of [stack.workers.taskDefinition.taskRole, stack.scaling.function.role!]) {
    const statements = statementsOf(t, role);
    assert.deepEqual(resourcesOf(statements, 'events:PutEvents'), [arn], logicalId(role));
    assert.deepEqual(resourcesOf(statements, 'sns:Publish'), [], logicalId(role));
  }
  assert.deepEqual(rolesGranting(t, PUBLISH_ACTIONS), [stack.workers.taskDefinition.taskRole, stack.scaling.function.role!].map((r) => logicalId(r)).sort());
  const all = binaryEnvs(stack, t);
  for (const binary of MARK_OR_PUBLISH) {
    assert.equal(j(all[binary].SLUICE_EVENT_BUS), arn, binary);
    assert.equal('SLUICE_SUCCESS_TOPIC_ARN' in all[binary], false, binary);
    assert.equal('SLUICE_ERROR_TOPIC_ARN' in all[binary], false, binary);
  }
  assert.equal('SLUICE_EVENT_BUS' in all.status, false);
  assert.equal(j(t.toJSON().Outputs.EventBusArn.Value), arn);
  // No bus is made: it is the account's.
  t.resourceCountIs('AWS::Events::EventBus', 0);
});

test('eventBus by name and by arn: the grant and the variable name that bus', () => {
  const named = withEvents({ topics: true, eventBus: 'orders.prod' });
  const arn = busArnOf('orders.prod');
  assert.deepEqual(resourcesOf(statementsOf(named.t, named.stack.workers.taskDefinition.taskRole), 'events:PutEvents'), [arn]);
  assert.equal(j(binaryEnvs(named.stack, named.t).worker.SLUICE_EVENT_BUS), arn);
  assert.ok(binaryEnvs(named.stack, named.t).worker.SLUICE_SUCCESS_TOPIC_ARN !== undefined, 'topics and a bus together');

  const given = 'arn:aws:events:eu-west-1:210987654321:event-bus/central';
  const byArn = withEvents({ eventBus: given });
  for (const role of [byArn.stack.workers.taskDefinition.taskRole, byArn.stack.scaling.function.role!]) {
    assert.deepEqual(resourcesOf(statementsOf(byArn.t, role), 'events:PutEvents'), [j(given)]);
  }
  const all = binaryEnvs(byArn.stack, byArn.t);
  for (const binary of MARK_OR_PUBLISH) assert.equal(all[binary].SLUICE_EVENT_BUS, given, binary);
});

test('bad event options are rejected with the reason', () => {
  const cases: [EventsOptions, RegExp][] = [
    [{}, /^events publishes nowhere: give topics: true, an eventBus, or both/],
    [{ topics: false }, /^events publishes nowhere/],
    [{ eventBus: '' }, /^events eventBus must be 'default', a bus name .* or a bus ARN .*, got ""/],
    [{ eventBus: 'my bus' }, /^events eventBus must be/],
    [{ eventBus: 'aws.partner/saas/x' }, /^events eventBus must be/],
    [{ eventBus: 'arn:aws:events:us-east-1:1234:event-bus/x' }, /^events eventBus must be/],
    [{ eventBus: 'arn:aws:events:us-east-1:123456789012:rule/x' }, /^events eventBus must be/],
    [{ eventBus: 'arn:aws:sns:us-east-1:123456789012:event-bus/x' }, /^events eventBus must be/],
  ];
  for (const [events, message] of cases) {
    assert.throws(() => sluiceStack({ events }), { message }, JSON.stringify(events));
  }
  for (const ok of ['default', 'a', 'orders_2.prod-eu', 'arn:aws-cn:events:cn-north-1:123456789012:event-bus/default']) {
    assert.equal(checkEventBus(ok), ok);
  }
});

test('the events context key takes a json object and names what is wrong', () => {
  const config = (context: Record<string, unknown>) => stackConfigFromContext(new App({ context }).node).props;
  assert.equal(config({}).events, undefined);
  assert.deepEqual(config({ events: '{"topics": true, "eventBus": "default"}' }).events, { topics: true, eventBus: 'default' });
  assert.deepEqual(config({ events: { topics: true } }).events, { topics: true });
  assert.deepEqual(config({ events: { eventBus: true } }).events, { eventBus: 'default' });
  assert.deepEqual(config({ events: '{"topics": true, "eventBus": false}' }).events, { topics: true });
  assert.deepEqual(config({ events: { eventBus: 'arn:aws:events:us-east-1:123456789012:event-bus/x' } }).events, {
    eventBus: 'arn:aws:events:us-east-1:123456789012:event-bus/x',
  });
  const cases: [unknown, RegExp][] = [
    ['topics=true', /^context events is not valid json/],
    ['true', /^context events must be a json object such as \{"topics": true, "eventBus": "default"\}, got true/],
    [['topics'], /^context events must be a json object/],
    [{ topic: true }, /^context events has an unknown key topic: it takes topics, eventBus/],
    [{ topics: 'yes' }, /^context events.topics must be true or false, got "yes"/],
    [{ eventBus: 3 }, /^context events.eventBus must be "default", a bus name or ARN, or true \(the default bus\), got 3/],
    [{ eventBus: '' }, /^context events.eventBus must be/],
  ];
  for (const [events, message] of cases) {
    assert.throws(() => config({ events }), { message }, JSON.stringify(events));
  }
});

test('the events pass the AwsSolutions checks, with topics and a bus, and with a bus alone', async () => {
  await assertAwsSolutionsClean({
    Both: { pipeline: { owner: OWNER }, events: { topics: true, eventBus: 'default' } },
    Bus: { events: { eventBus: 'arn:aws:events:us-east-1:123456789012:event-bus/central' } },
  });
});
