#!/usr/bin/env node
import { App, Validations } from 'aws-cdk-lib';
import { AwsSolutionsChecks } from 'cdk-nag';
import { stackConfigFromContext } from '../lib/config';
import { SluiceStack } from '../lib/sluice-stack';

const app = new App();
const { name, props } = stackConfigFromContext(app.node);
// Environment-agnostic on purpose: no lookups, synth works offline and without credentials.
new SluiceStack(app, name, {
  ...props,
  description: 'sluice: asynchronous jobs on API Gateway, Lambda, SQS, DynamoDB and ECS Fargate',
});
// Every AwsSolutions finding fails synth unless acknowledged next to its resource.
Validations.of(app).addPlugins(new AwsSolutionsChecks(app));
