import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import { stackConfigFromContext } from '../lib/config';
import { logicalId, template, testApp } from './helpers';

/** The backlog function's resource. */
function backlogFunction(t: ReturnType<typeof template>['t'], stack: ReturnType<typeof template>['stack']): any {
  return t.toJSON().Resources[logicalId(stack.scaling.function)].Properties;
}

test('by default the backlog function reserves no concurrency, so a new account with a quota of 10 can deploy', () => {
  const { stack, t } = template();
  // Lambda refuses any reservation that leaves fewer than 100 (10 on a new account's quota of
  // 10) unreserved: a default reservation fails the deploy on such an account.
  assert.equal(backlogFunction(t, stack).ReservedConcurrentExecutions, undefined);
  for (const fn of Object.values(t.findResources('AWS::Lambda::Function'))) {
    assert.equal(fn.Properties.ReservedConcurrentExecutions, undefined);
  }
});

test('a reservation for the backlog function is asked for, and zero (which stops it) is refused', () => {
  const { stack, t } = template({ backlogReservedConcurrency: 2 });
  assert.equal(backlogFunction(t, stack).ReservedConcurrentExecutions, 2);
  assert.throws(() => template({ backlogReservedConcurrency: 0 }), /backlogReservedConcurrency must be a whole number from 1 to 10.*0 would throttle every run/);
  assert.throws(() => template({ backlogReservedConcurrency: 1.5 }), /backlogReservedConcurrency must be a whole number from 1 to 10/);
  const app = testApp({ backlogReservedConcurrency: '2' });
  assert.equal(stackConfigFromContext(app.node).props.backlogReservedConcurrency, 2);
});

test('throttled scheduled runs are retried by lambda for at most a minute, never delivered late', () => {
  const { stack, t } = template();
  const configs = Object.values(t.findResources('AWS::Lambda::EventInvokeConfig')).filter(
    (c) => c.Properties.FunctionName.Ref === logicalId(stack.scaling.function),
  );
  assert.equal(configs.length, 1);
  assert.equal(configs[0].Properties.MaximumEventAgeInSeconds, 60);
  assert.equal(configs[0].Properties.MaximumRetryAttempts, 0);
});
