import * as path from 'node:path';
import { Duration, RemovalPolicy, Token } from 'aws-cdk-lib';
import { AccessLogFormat } from 'aws-cdk-lib/aws-apigateway';
import * as apigwv2 from 'aws-cdk-lib/aws-apigatewayv2';
import { HttpIamAuthorizer, HttpJwtAuthorizer } from 'aws-cdk-lib/aws-apigatewayv2-authorizers';
import { HttpLambdaIntegration } from 'aws-cdk-lib/aws-apigatewayv2-integrations';
import * as dynamodb from 'aws-cdk-lib/aws-dynamodb';
import * as ecs from 'aws-cdk-lib/aws-ecs';
import * as iam from 'aws-cdk-lib/aws-iam';
import * as lambda from 'aws-cdk-lib/aws-lambda';
import * as logs from 'aws-cdk-lib/aws-logs';
import * as s3 from 'aws-cdk-lib/aws-s3';
import * as sqs from 'aws-cdk-lib/aws-sqs';
import { JobTable } from './job-table';
import { JobEvents } from './job-events';
import { Construct } from 'constructs';
import { OwnerScope, statusEnv, submitEnv } from '../env';
import { maxJobTimeoutSeconds } from '../handler';
import { grantScalingLease } from '../lease';
import { acknowledge, nagRef } from '../nag';
import { RustFunction } from './rust-function';
import { checkInputBucket } from '../validate';
export { checkInputBucket } from '../validate';
import { STATUS_FUNCTION_TIMEOUT, SUBMIT_FUNCTION_TIMEOUT } from '../limits';

/** The key prefix of upload records in the jobs table (`src/store.rs`, `upload_item_id`). */
export const UPLOAD_KEY_PREFIX = 'upload:';

/** S3's largest object, and the largest upload: 5 TiB. */
export const MAX_OBJECT_BYTES = 5 * 2 ** 40;

/** A JWT authorizer in place of IAM. */
export interface JwtAuthorization {
  /** The token issuer (`iss`), an https URL, e.g. a Cognito user pool's. */
  readonly issuer: string;
  /** Accepted audiences (`aud`, or `client_id` for Cognito access tokens). */
  readonly audience: string[];
}

/** Rejects an ARN of a pinned-session role that is not a role's ARN (a token passes: a role's own). */
export function checkPinnedSessionRole(arn: string): string {
  if (!Token.isUnresolved(arn) && !/^arn:[a-z-]+:iam::\d{12}:role\/(?:[^/]+\/)*[\w+=,.@-]+$/.test(arn)) {
    throw new Error(`pinnedSessionRoles must be roles, got ${arn}`);
  }
  return arn;
}

/** Rejects an operator's ARN that is not an IAM user's, the root user's or a role's (a token passes). */
export function checkOperator(arn: string): string {
  if (
    !Token.isUnresolved(arn) &&
    !/^arn:[a-z-]+:iam::\d{12}:(?:root|(?:user|role)\/(?:[^/]+\/)*[\w+=,.@-]+)$/.test(arn)
  ) {
    throw new Error(`operators must be IAM user or role ARNs, got ${arn}`);
  }
  return arn;
}

/** Properties of {@link JobApi}. */
export interface JobApiProps {
  readonly table: dynamodb.ITable;
  readonly queue: sqs.IQueue;
  /** The bucket uploads go to, under `uploads/`: submit presigns PUTs into it and checks objects. */
  readonly payloadBucket: s3.IBucket;
  /**
   * The largest upload `POST /uploads` accepts.
   *
   * @default 5 TiB (S3's largest object)
   */
  readonly maxUploadBytes?: number;
  /**
   * How long an upload's presigned URLs last, and within which a job must name the upload.
   *
   * @default Duration.hours(1)
   */
  readonly uploadExpiry?: Duration;
  /** The worker service, which submit nudges from zero (its names go into submit's environment). */
  readonly workerService: ecs.IBaseService;
  /** The folder with cargo-lambda's output: `<lambdaAssetDir>/submit/bootstrap`, `.../status/bootstrap`. */
  readonly lambdaAssetDir: string;
  /**
   * Attempts a job gets before it ends `FAILED`.
   *
   * @default 3
   */
  readonly maxAttempts?: number;
  /**
   * Days a finished job's record is kept.
   *
   * @default 7
   */
  readonly retentionDays?: number;
  /**
   * The longest `timeout_seconds` a job may ask for (submit rejects longer ones); the workers'.
   *
   * @default MAX_JOB_TIMEOUT_LIMIT (42,300 s)
   */
  readonly maxJobTimeout?: Duration;
  /**
   * What makes two IAM callers the same owner. `session` gives each caller its own jobs as far as
   * AWS vouches for who it is: an IAM user, an IAM Identity Center user, a Cognito identity-pool
   * identity, a session of one of `pinnedSessionRoles`; every session of any other assumed role
   * is one owner, the role, since whoever may assume it names the session. `role` makes every
   * session of a role one owner, IAM Identity Center's and Cognito's too.
   *
   * @default 'session'
   */
  readonly ownerScope?: OwnerScope;
  /**
   * Roles whose trust policies pin their session names (a condition on `sts:RoleSessionName`,
   * e.g. `${aws:username}`), or that only a SAML identity provider naming sessions after its users
   * may assume: each of their sessions is its own owner. Only with `ownerScope` `session`.
   *
   * @default - none: the sessions of every role but IAM Identity Center's share the role's jobs
   */
  readonly pinnedSessionRoles?: iam.IRole[];
  /**
   * The operators: IAM user or role ARNs (a role: every session of it) who alone may pause and
   * resume the pipeline (`GET /pipeline`, `POST /pipeline/pause`, `POST /pipeline/resume`).
   * Those routes are IAM-authorized routes of their own, whatever authorizes the callers; grant
   * {@link JobApi.operatorPolicy} to the operators as well (the callers' policy never covers them).
   *
   * @default - none: nobody may pause or resume
   */
  readonly operators?: string[];
  /**
   * Names of the S3 buckets whose objects jobs may name (`"input_file": {"s3": "s3://bucket/key",
   * "presigned_url": …}`), for data that already sits there: submit gets them as
   * `SLUICE_INPUT_BUCKETS` and accepts an object only through a GET the caller presigned with its
   * own credentials. Grant the workers read access too (WorkersProps.inputBuckets).
   *
   * @default - none: jobs may name no object in S3
   */
  readonly inputBuckets?: string[];
  /**
   * Authorize callers with JWTs instead of IAM (SigV4).
   *
   * @default - IAM authorization on every route
   */
  readonly jwt?: JwtAuthorization;
  /**
   * Steady-state requests per second of each route. The `$default` stage's default route
   * settings apply to every route separately (API Gateway's route-level throttling): each of
   * `POST /jobs`, `GET /jobs/{id}` and `DELETE /jobs/{id}` gets this rate, so the API as a whole
   * may take up to three times it (and the account's regional quota caps all APIs together).
   *
   * @default 50
   */
  readonly throttleRateLimit?: number;
  /**
   * Burst of requests of each route (per route, as `throttleRateLimit`).
   *
   * @default 100
   */
  readonly throttleBurstLimit?: number;
  /**
   * Retention of the access logs and the functions' logs.
   *
   * @default logs.RetentionDays.ONE_MONTH
   */
  readonly logRetention?: logs.RetentionDays;
  /**
   * What happens to the access logs' and the functions' log groups when they leave the stack.
   *
   * @default RemovalPolicy.DESTROY
   */
  readonly logRemovalPolicy?: RemovalPolicy;
  /**
   * The topics and bus every job's end is published to: submit marks each job it accepts as one
   * to publish (it publishes nothing itself, and gets no grant).
   *
   * @default - none
   */
  readonly events?: JobEvents;
}

/**
 * The HTTP API: `POST /jobs` → submit; `GET|DELETE /jobs/{id}`, `GET /webhook-secret` and
 * `POST /webhook-secret/rotate` → status; the operators' `GET /pipeline`, `POST /pipeline/pause`
 * and `POST /pipeline/resume` → status, IAM-authorized routes of their own.
 */
export class JobApi extends Construct {
  public readonly api: apigwv2.HttpApi;
  public readonly stage: apigwv2.HttpStage;
  public readonly submitFunction: lambda.IFunction;
  public readonly statusFunction: lambda.IFunction;
  public readonly accessLogGroup: logs.LogGroup;
  /** The routes' authorizer. */
  public readonly authorizer: apigwv2.IHttpRouteAuthorizer;
  /** The base URL, ending in `/`. */
  public readonly url: string;
  /**
   * `execute-api:Invoke` ARNs of the routes: `POST /jobs`, `GET` and `DELETE /jobs/{id}`,
   * `GET /webhook-secret` and `POST /webhook-secret/rotate`.
   */
  public readonly routeArns: string[];
  /** A managed policy to give callers: `execute-api:Invoke` on the API's routes, nothing more. */
  public readonly callerPolicy: iam.ManagedPolicy;
  /** `execute-api:Invoke` ARNs of the operators' routes: `GET /pipeline`, `POST /pipeline/pause|resume`. */
  public readonly operatorRouteArns: string[];
  /** A managed policy to give operators: `execute-api:Invoke` on the pipeline's routes, nothing more. */
  public readonly operatorPolicy: iam.ManagedPolicy;

  constructor(scope: Construct, id: string, props: JobApiProps) {
    super(scope, id);
    const maxAttempts = props.maxAttempts ?? 3;
    if (!Number.isInteger(maxAttempts) || maxAttempts < 1) {
      throw new Error(`maxAttempts must be a positive integer, got ${maxAttempts}`);
    }
    const retentionDays = props.retentionDays ?? 7;
    if (!Number.isInteger(retentionDays) || retentionDays < 1) {
      throw new Error(`retentionDays must be a positive integer, got ${retentionDays}`);
    }
    const rateLimit = props.throttleRateLimit ?? 50;
    const burstLimit = props.throttleBurstLimit ?? 100;
    if (!(rateLimit > 0) || !Number.isInteger(burstLimit) || burstLimit < 1) {
      throw new Error(`throttle limits must be positive, got rate ${rateLimit} and burst ${burstLimit}`);
    }
    if (props.jwt !== undefined) {
      if (!/^https:\/\/[^\s/]+/.test(props.jwt.issuer)) {
        throw new Error(`jwt issuer must be an https url, got ${props.jwt.issuer}`);
      }
      if (props.jwt.audience.length === 0 || props.jwt.audience.some((a) => a.trim() === '')) {
        throw new Error('jwt audience must list at least one non-empty audience');
      }
    }
    const maxJobTimeout = maxJobTimeoutSeconds(props.maxJobTimeout);
    const ownerScope = props.ownerScope ?? 'session';
    if (ownerScope !== 'session' && ownerScope !== 'role') {
      throw new Error(`ownerScope must be session or role, got ${String(ownerScope)}`);
    }
    const pinnedSessionRoleArns = (props.pinnedSessionRoles ?? []).map((r) => r.roleArn);
    if (ownerScope === 'role' && pinnedSessionRoleArns.length > 0) {
      throw new Error('pinnedSessionRoles needs ownerScope session: role makes every session of a role one owner');
    }
    pinnedSessionRoleArns.forEach(checkPinnedSessionRole);
    const operatorArns = (props.operators ?? []).map(checkOperator);
    const inputBuckets = (props.inputBuckets ?? []).map(checkInputBucket);
    const maxUploadBytes = props.maxUploadBytes ?? MAX_OBJECT_BYTES;
    if (!Number.isSafeInteger(maxUploadBytes) || maxUploadBytes < 1 || maxUploadBytes > MAX_OBJECT_BYTES) {
      throw new Error(`maxUploadBytes must be a whole number from 1 to ${MAX_OBJECT_BYTES} (5 TiB), got ${maxUploadBytes}`);
    }
    const uploadExpirySeconds = (props.uploadExpiry ?? Duration.hours(1)).toSeconds({ integral: false });
    if (!Number.isInteger(uploadExpirySeconds) || uploadExpirySeconds < 60 || uploadExpirySeconds > 7 * 86_400) {
      throw new Error(`uploadExpiry must be whole seconds from 60 to 7 days, got ${uploadExpirySeconds}`);
    }
    const logRetention = props.logRetention ?? logs.RetentionDays.ONE_MONTH;
    const logRemovalPolicy = props.logRemovalPolicy ?? RemovalPolicy.DESTROY;

    const submit = new RustFunction(this, 'Submit', {
      assetDir: path.join(props.lambdaAssetDir, 'submit'),
      description: 'sluice submit: validates, records and enqueues a job',
      // Well below the 60 s after which workers delete a message whose record never came
      // (ORPHAN_GRACE in src/job.rs): a submit still running then could not be told from one
      // that failed. The function's AWS calls run within it (src/limits.json).
      timeout: SUBMIT_FUNCTION_TIMEOUT,
      logRetention,
      logRemovalPolicy,
      environment: submitEnv({
        tableName: props.table.tableName,
        queueUrl: props.queue.queueUrl,
        payloadBucket: props.payloadBucket.bucketName,
        maxUploadBytes,
        uploadExpirySeconds,
        inputBuckets,
        maxAttempts,
        retentionDays,
        clusterName: props.workerService.cluster.clusterName,
        serviceName: props.workerService.serviceName,
        maxJobTimeoutSeconds: maxJobTimeout,
        ownerScope,
        pinnedSessionRoleArns,
        events: props.events?.env,
      }),
    });
    // TransactWriteItems is authorized per item as PutItem / ConditionCheckItem. On the scaling
    // lease items only, UpdateItem gives back the lease the nudge takes around its read and write
    // of the desired count.
    JobTable.grantItems(props.table, submit.function, 'dynamodb:PutItem', 'dynamodb:GetItem', 'dynamodb:ConditionCheckItem');
    grantScalingLease(props.table, submit.function, 'dynamodb:UpdateItem');
    props.queue.grant(submit.function, 'sqs:SendMessage');
    // Completing a multipart upload marks its record (the item `upload:<id>`): UpdateItem on
    // upload records only, never on job records.
    iam.Grant.addToPrincipal({
      grantee: submit.function,
      actions: ['dynamodb:UpdateItem'],
      resourceArns: [props.table.tableArn],
      conditions: { 'ForAllValues:StringLike': { 'dynamodb:LeadingKeys': [`${UPLOAD_KEY_PREFIX}*`] } },
    });
    // Uploads: the URLs submit presigns act with its role (PutObject covers the one PUT and a
    // multipart upload's create, parts and completion), and it checks an upload's object
    // (GetObject covers HEAD) before a job may name it. Only under uploads/, where every caller's
    // prefix lies.
    submit.function.addToRolePolicy(
      new iam.PolicyStatement({
        actions: ['s3:PutObject', 's3:GetObject', 's3:AbortMultipartUpload', 's3:ListMultipartUploadParts'],
        resources: [props.payloadBucket.arnForObjects('uploads/*')],
      }),
    );
    if (submit.function.role !== undefined) {
      acknowledge(
        submit.function.role,
        `AwsSolutions-IAM5[Resource::${nagRef(props.payloadBucket)}.Arn>/uploads/*]`.replace('>.Arn>', '.Arn>'),
        'the wildcard is the object of each upload: keys are uploads/<owner hash>/<id>, made per request, and the ' +
          'API lets a caller name only its own',
      );
    }
    this.submitFunction = submit.function;

    const status = new RustFunction(this, 'Status', {
      assetDir: path.join(props.lambdaAssetDir, 'status'),
      description: 'sluice status: reads (and long-polls) or cancels a job',
      // HTTP APIs cut integrations at 30 s; a long-poll must answer before that.
      timeout: STATUS_FUNCTION_TIMEOUT,
      logRetention,
      logRemovalPolicy,
      environment: statusEnv({
        tableName: props.table.tableName,
        payloadBucket: props.payloadBucket.bucketName,
        ownerScope,
        pinnedSessionRoleArns,
        operatorArns,
      }),
    });
    // UpdateItem: cancels, the caller's webhook signing secret (made on first use, rotated), and
    // the pipeline's state item (an operator's pause or resume).
    JobTable.grantItems(props.table, status.function, 'dynamodb:GetItem', 'dynamodb:UpdateItem');
    // The download URLs of a job's result file and output files act with this role: read only,
    // and only what workers store (results/, outputs/), never another caller's uploads.
    status.function.addToRolePolicy(
      new iam.PolicyStatement({
        actions: ['s3:GetObject'],
        resources: [props.payloadBucket.arnForObjects('results/*'), props.payloadBucket.arnForObjects('outputs/*')],
      }),
    );
    if (status.function.role !== undefined) {
      for (const prefix of ['results', 'outputs']) {
        acknowledge(
          status.function.role,
          `AwsSolutions-IAM5[Resource::${nagRef(props.payloadBucket)}.Arn>/${prefix}/*]`.replace('>.Arn>', '.Arn>'),
          `the wildcard is what any job produced: keys are ${prefix}/<owner hash>/<job>/<attempt>/…, and the API ` +
            'presigns a download only of a job the caller owns',
        );
      }
    }
    this.statusFunction = status.function;

    this.authorizer =
      props.jwt === undefined
        ? new HttpIamAuthorizer()
        : new HttpJwtAuthorizer('JwtAuthorizer', props.jwt.issuer, { jwtAudience: props.jwt.audience });

    this.api = new apigwv2.HttpApi(this, 'Api', {
      description: 'sluice jobs API',
      createDefaultStage: false,
      defaultAuthorizer: this.authorizer,
    });

    this.accessLogGroup = new logs.LogGroup(this, 'AccessLogs', { retention: logRetention, removalPolicy: logRemovalPolicy });
    this.stage = new apigwv2.HttpStage(this, 'DefaultStage', {
      httpApi: this.api,
      stageName: '$default',
      autoDeploy: true,
      // The stage's default route settings: applied to each route on its own, not to the API.
      throttle: { rateLimit, burstLimit },
      accessLogSettings: {
        destination: new apigwv2.LogGroupLogDestination(this.accessLogGroup),
        format: AccessLogFormat.custom(
          JSON.stringify({
            requestId: '$context.requestId',
            requestTime: '$context.requestTime',
            sourceIp: '$context.identity.sourceIp',
            caller: '$context.identity.userArn',
            routeKey: '$context.routeKey',
            status: '$context.status',
            responseLength: '$context.responseLength',
            responseLatency: '$context.responseLatency',
            integrationLatency: '$context.integrationLatency',
            integrationError: '$context.integrationErrorMessage',
            authorizerError: '$context.authorizer.error',
          }),
        ),
      },
    });
    this.url = this.stage.url;

    const payloadFormatVersion = apigwv2.PayloadFormatVersion.VERSION_2_0;
    this.api.addRoutes({
      path: '/jobs',
      methods: [apigwv2.HttpMethod.POST],
      integration: new HttpLambdaIntegration('SubmitIntegration', this.submitFunction, { payloadFormatVersion }),
    });
    const uploadIntegration = new HttpLambdaIntegration('UploadIntegration', this.submitFunction, {
      payloadFormatVersion,
    });
    this.api.addRoutes({ path: '/uploads', methods: [apigwv2.HttpMethod.POST], integration: uploadIntegration });
    this.api.addRoutes({
      path: '/uploads/{id}/complete',
      methods: [apigwv2.HttpMethod.POST],
      integration: uploadIntegration,
    });
    this.api.addRoutes({
      path: '/jobs/{id}',
      methods: [apigwv2.HttpMethod.GET, apigwv2.HttpMethod.DELETE],
      integration: new HttpLambdaIntegration('StatusIntegration', this.statusFunction, { payloadFormatVersion }),
    });
    const secretIntegration = new HttpLambdaIntegration('WebhookSecretIntegration', this.statusFunction, {
      payloadFormatVersion,
    });
    this.api.addRoutes({ path: '/webhook-secret', methods: [apigwv2.HttpMethod.GET], integration: secretIntegration });
    this.api.addRoutes({
      path: '/webhook-secret/rotate',
      methods: [apigwv2.HttpMethod.POST],
      integration: secretIntegration,
    });

    // The operators' routes: IAM-authorized whatever authorizes the callers, so that only the
    // principals given the operator policy reach the function, which lets only the listed
    // operators (SLUICE_OPERATORS) through.
    const pipelineIntegration = new HttpLambdaIntegration('PipelineIntegration', this.statusFunction, {
      payloadFormatVersion,
    });
    const operatorAuthorizer = new HttpIamAuthorizer();
    this.api.addRoutes({
      path: '/pipeline',
      methods: [apigwv2.HttpMethod.GET],
      integration: pipelineIntegration,
      authorizer: operatorAuthorizer,
    });
    for (const action of ['pause', 'resume']) {
      this.api.addRoutes({
        path: `/pipeline/${action}`,
        methods: [apigwv2.HttpMethod.POST],
        integration: pipelineIntegration,
        authorizer: operatorAuthorizer,
      });
    }

    const stageName = '$default';
    this.routeArns = [
      this.api.arnForExecuteApi('POST', '/jobs', stageName),
      this.api.arnForExecuteApi('GET', '/jobs/*', stageName),
      this.api.arnForExecuteApi('DELETE', '/jobs/*', stageName),
      this.api.arnForExecuteApi('GET', '/webhook-secret', stageName),
      this.api.arnForExecuteApi('POST', '/webhook-secret/rotate', stageName),
      this.api.arnForExecuteApi('POST', '/uploads', stageName),
      this.api.arnForExecuteApi('POST', '/uploads/*/complete', stageName),
    ];
    this.callerPolicy = new iam.ManagedPolicy(this, 'CallerPolicy', {
      description: 'Call the sluice jobs API: uploads, submit, status, cancel and the webhook secret (SigV4)',
      statements: [new iam.PolicyStatement({ actions: ['execute-api:Invoke'], resources: this.routeArns })],
    });
    this.operatorRouteArns = [
      this.api.arnForExecuteApi('GET', '/pipeline', stageName),
      this.api.arnForExecuteApi('POST', '/pipeline/pause', stageName),
      this.api.arnForExecuteApi('POST', '/pipeline/resume', stageName),
    ];
    this.operatorPolicy = new iam.ManagedPolicy(this, 'OperatorPolicy', {
      description: 'Operate the sluice pipeline: read its state, pause and resume it (SigV4)',
      statements: [new iam.PolicyStatement({ actions: ['execute-api:Invoke'], resources: this.operatorRouteArns })],
    });
    acknowledge(
      this.callerPolicy,
      `AwsSolutions-IAM5[Resource::arn:<AWS::Partition>:execute-api:<AWS::Region>:<AWS::AccountId>:${nagRef(this.api)}/${stageName}/POST/uploads/*/complete]`,
      'the wildcard is the {id} of /uploads/{id}/complete: a caller completes only its own uploads',
    );
    for (const method of ['GET', 'DELETE']) {
      acknowledge(
        this.callerPolicy,
        `AwsSolutions-IAM5[Resource::arn:<AWS::Partition>:execute-api:<AWS::Region>:<AWS::AccountId>:${nagRef(this.api)}/${stageName}/${method}/jobs/*]`,
        'the wildcard is the {id} of /jobs/{id}: a caller may read and cancel its jobs, and the API shows each ' +
          'caller only its own',
      );
    }
  }
}
