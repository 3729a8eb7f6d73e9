import * as fs from 'node:fs';
import * as path from 'node:path';
import { Duration, RemovalPolicy } from 'aws-cdk-lib';
import * as iam from 'aws-cdk-lib/aws-iam';
import * as lambda from 'aws-cdk-lib/aws-lambda';
import * as logs from 'aws-cdk-lib/aws-logs';
import { Construct } from 'constructs';

/** Properties of {@link RustFunction}. */
export interface RustFunctionProps {
  /** The folder holding cargo-lambda's output for this binary (`<asset root>/<name>/bootstrap`). */
  readonly assetDir: string;
  readonly environment: Record<string, string>;
  readonly timeout: Duration;
  /**
   * @default 256
   */
  readonly memorySize?: number;
  /**
   * @default logs.RetentionDays.ONE_MONTH
   */
  readonly logRetention?: logs.RetentionDays;
  /**
   * What happens to the function's log group when it leaves the stack.
   *
   * @default RemovalPolicy.DESTROY
   */
  readonly logRemovalPolicy?: RemovalPolicy;
  readonly description: string;
  /**
   * Retries of a failed asynchronous invocation.
   *
   * @default 2
   */
  readonly retryAttempts?: number;
  /**
   * How long an asynchronous invocation may wait in Lambda's queue (throttled, or between
   * retries) before it is dropped (60 s to 6 hours).
   *
   * @default - Lambda's, 6 hours
   */
  readonly maxEventAge?: Duration;
  /**
   * Concurrency kept for this function alone (it can neither be starved by others nor exceed it).
   *
   * @default - none: the account's unreserved pool
   */
  readonly reservedConcurrentExecutions?: number;
}

/**
 * A Rust Lambda on `provided.al2023`/ARM64 from a prebuilt `bootstrap`, with its own log group and a
 * role that may only write to that log group until the caller grants more.
 */
export class RustFunction extends Construct {
  public readonly function: lambda.Function;
  public readonly role: iam.Role;
  public readonly logGroup: logs.LogGroup;

  constructor(scope: Construct, id: string, props: RustFunctionProps) {
    super(scope, id);
    const bootstrap = path.join(props.assetDir, 'bootstrap');
    if (!fs.existsSync(bootstrap)) {
      throw new Error(
        `lambda asset not found: ${bootstrap} (build it with \`make lambdas\`, or point the context key lambdaAssetDir at stubs)`,
      );
    }
    this.logGroup = new logs.LogGroup(this, 'LogGroup', {
      retention: props.logRetention ?? logs.RetentionDays.ONE_MONTH,
      removalPolicy: props.logRemovalPolicy ?? RemovalPolicy.DESTROY,
    });
    // An explicit role instead of the AWSLambdaBasicExecutionRole managed policy: log writes are
    // granted on this function's log group only.
    this.role = new iam.Role(this, 'Role', {
      assumedBy: new iam.ServicePrincipal('lambda.amazonaws.com'),
      description: props.description,
    });
    this.logGroup.grantWrite(this.role);
    this.function = new lambda.Function(this, 'Function', {
      runtime: lambda.Runtime.PROVIDED_AL2023,
      architecture: lambda.Architecture.ARM_64,
      handler: 'bootstrap',
      code: lambda.Code.fromAsset(props.assetDir),
      environment: props.environment,
      timeout: props.timeout,
      memorySize: props.memorySize ?? 256,
      role: this.role,
      logGroup: this.logGroup,
      description: props.description,
      retryAttempts: props.retryAttempts,
      maxEventAge: props.maxEventAge,
      reservedConcurrentExecutions: props.reservedConcurrentExecutions,
    });
  }
}
