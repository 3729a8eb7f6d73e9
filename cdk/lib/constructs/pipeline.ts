import * as path from 'node:path';
import { Duration, RemovalPolicy, Stack, Token } from 'aws-cdk-lib';
import * as dynamodb from 'aws-cdk-lib/aws-dynamodb';
import * as iam from 'aws-cdk-lib/aws-iam';
import * as lambda from 'aws-cdk-lib/aws-lambda';
import { SqsEventSource } from 'aws-cdk-lib/aws-lambda-event-sources';
import * as logs from 'aws-cdk-lib/aws-logs';
import * as s3 from 'aws-cdk-lib/aws-s3';
import * as s3n from 'aws-cdk-lib/aws-s3-notifications';
import * as sqs from 'aws-cdk-lib/aws-sqs';
import { Construct } from 'constructs';
import { ingestEnv } from '../env';
import { acknowledge, nagRef } from '../nag';
import { JobEvents } from './job-events';
import { JobTable } from './job-table';
import { RustFunction } from './rust-function';

/**
 * The pipeline as the stack's `pipeline` option takes it: objects created in a bucket under an
 * input prefix become jobs of one owner, and each job's outcome is written back under an output
 * prefix of the same bucket (src/ingest.rs).
 */
export interface PipelineOptions {
  /**
   * The owner of the pipeline's jobs, as the API names callers: the caller who then sees them
   * with `GET /jobs/{id}` and the CLI. `iam:` and an IAM user's ARN
   * (`iam:arn:aws:iam::123456789012:user/ops`) or the root user's; `iam:` and an assumed role,
   * `iam:arn:aws:sts::123456789012:assumed-role/Ops` (every session of the role Ops: the owner
   * its callers have by default), or one session of it where sessions are owners of their own;
   * `iam:cognito:<pool>|<identity>`; `jwt:<issuer>|<subject>`; `lambda:<principalId>`.
   */
  readonly owner: string;
  /**
   * An existing bucket, by name: the stack adds the event notification to it (through CDK's
   * notifications custom resource, which keeps the bucket's other notifications) and grants on
   * it, and changes nothing else. Its objects must be readable with IAM alone (SSE-S3, not
   * SSE-KMS with a key of your own, which would need key grants this stack does not make).
   *
   * @default - a new bucket: private, SSE-S3, TLS only, retained when the stack is deleted
   */
  readonly bucketName?: string;
  /**
   * Objects created under it become jobs.
   *
   * @default 'in/'
   */
  readonly inputPrefix?: string;
  /**
   * Outcomes are written under it: `<prefix><name>.success` or `.failed` (the job's view) and
   * `<prefix><name>/…` (its output files and a stored result). Must not overlap `inputPrefix`.
   *
   * @default 'out/'
   */
  readonly outputPrefix?: string;
}

/** Properties of {@link Pipeline}. */
export interface PipelineProps extends PipelineOptions {
  readonly table: dynamodb.ITable;
  /** The jobs queue the ingest function sends each job's message to. */
  readonly queue: sqs.IQueue;
  /** The bucket workers store results and output files in, which the outbox copies from. */
  readonly payloadBucket: s3.IBucket;
  /** The workers' task role: they download the input objects and run the outbox. */
  readonly workers: iam.IRole;
  /** The backlog function's role: its outbox writes the outcomes that are due. */
  readonly outbox: iam.IRole;
  /** The folder with cargo-lambda's output: `<lambdaAssetDir>/ingest/bootstrap`. */
  readonly lambdaAssetDir: string;
  /**
   * Attempts each pipeline job gets.
   *
   * @default 3
   */
  readonly maxAttempts?: number;
  /**
   * Days a finished pipeline job's record is kept.
   *
   * @default 7
   */
  readonly retentionDays?: number;
  /**
   * Deliveries of an event before it goes to the events' dead-letter queue.
   *
   * @default 5
   */
  readonly maxReceiveCount?: number;
  /**
   * Events per invocation of the ingest function.
   *
   * @default 5
   */
  readonly batchSize?: number;
  /**
   * @default logs.RetentionDays.ONE_MONTH
   */
  readonly logRetention?: logs.RetentionDays;
  /**
   * @default RemovalPolicy.DESTROY
   */
  readonly logRemovalPolicy?: RemovalPolicy;
  /**
   * The topics and bus every job's end is published to: ingest marks each job it makes as one to
   * publish (it publishes nothing itself, and gets no grant).
   *
   * @default - none
   */
  readonly events?: JobEvents;
}

/** The ingest function's time limit: a few events, each a HEAD, a SendMessage and a PutItem. */
export const INGEST_FUNCTION_TIMEOUT = Duration.seconds(30);

/**
 * An owner as the API names callers (src/api/identity.rs), or an error saying what is expected.
 * A role is an owner as its sessions' ARN (`arn:aws:sts::…:assumed-role/Role`), never as the
 * role's own ARN, which no caller has: that mistake gets the right spelling in the message.
 */
export function checkOwner(owner: string): string {
  if (Token.isUnresolved(owner)) return owner;
  const arn = 'arn:[a-z-]+';
  const account = '\\d{12}';
  const name = '[\\w+=,.@-]+';
  const forms = [
    new RegExp(`^iam:${arn}:iam::${account}:(?:root|user/(?:[^/\\s]+/)*${name})$`),
    new RegExp(`^iam:${arn}:sts::${account}:(?:assumed-role/${name}(?:/${name})?|federated-user)$`),
    /^iam:cognito:[\w-]+:[\w-]+\|[\w-]+:[\w-]+$/,
    /^jwt:[^|\s]*\|\S+$/,
    /^lambda:\S+$/,
  ];
  if (forms.some((f) => f.test(owner))) return owner;
  const role = new RegExp(`^(?:iam:)?(arn:[a-z-]+):iam::(${account}):role/(?:[^/\\s]+/)*(${name})$`).exec(owner);
  if (role !== null) {
    throw new Error(
      `pipeline owner ${owner} names a role, which is no caller: the callers of a role are ` +
        `iam:${role[1]}:sts::${role[2]}:assumed-role/${role[3]} (every session of it)`,
    );
  }
  throw new Error(
    'pipeline owner must name a caller as the API does: iam:<IAM user ARN>, ' +
      'iam:arn:aws:sts::<account>:assumed-role/<Role>, iam:cognito:<pool>|<identity>, jwt:<issuer>|<subject> ' +
      `or lambda:<principalId>, got ${JSON.stringify(owner)}`,
  );
}

/** The prefixes, refused when they overlap as the Rust side refuses them, or cannot be IAM patterns. */
export function checkPrefixes(inputPrefix: string, outputPrefix: string): void {
  for (const [key, p] of [
    ['inputPrefix', inputPrefix],
    ['outputPrefix', outputPrefix],
  ] as const) {
    if (p === '' || p.startsWith('/') || /[*?\s]/.test(p) || p.length > 512) {
      throw new Error(
        `pipeline ${key} must be a key prefix such as 'in/' (not empty, no leading slash, no wildcards or spaces), ` +
          `got ${JSON.stringify(p)}`,
      );
    }
  }
  if (inputPrefix.startsWith(outputPrefix) || outputPrefix.startsWith(inputPrefix)) {
    throw new Error(
      `pipeline outputPrefix ${JSON.stringify(outputPrefix)} must not overlap inputPrefix ${JSON.stringify(inputPrefix)}: ` +
        'outcomes written there would become jobs',
    );
  }
}

/** S3's rules for general purpose bucket names (3 to 63 lowercase letters, digits, dots and hyphens). */
const BUCKET_NAME = /^(?!.*(?:\.\.|\.-|-\.))[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$/;

/**
 * The pipeline: S3 → events queue → ingest function → jobs, and the grants that let the workers
 * download its inputs and the outbox write its outcomes.
 */
export class Pipeline extends Construct {
  public readonly bucket: s3.IBucket;
  /** Whether the stack made the bucket (else it was given by name). */
  public readonly ownsBucket: boolean;
  public readonly inputPrefix: string;
  public readonly outputPrefix: string;
  public readonly owner: string;
  /** Where S3 sends an event for each object created under the input prefix. */
  public readonly eventsQueue: sqs.IQueue;
  /** Events whose objects could not become jobs in `maxReceiveCount` tries. */
  public readonly eventsDeadLetterQueue: sqs.IQueue;
  public readonly function: lambda.IFunction;

  constructor(scope: Construct, id: string, props: PipelineProps) {
    super(scope, id);
    this.owner = checkOwner(props.owner);
    this.inputPrefix = props.inputPrefix ?? 'in/';
    this.outputPrefix = props.outputPrefix ?? 'out/';
    checkPrefixes(this.inputPrefix, this.outputPrefix);
    const maxReceiveCount = props.maxReceiveCount ?? 5;
    if (!Number.isInteger(maxReceiveCount) || maxReceiveCount < 1 || maxReceiveCount > 1000) {
      throw new Error(`pipeline maxReceiveCount must be an integer from 1 to 1000, got ${maxReceiveCount}`);
    }
    const batchSize = props.batchSize ?? 5;
    if (!Number.isInteger(batchSize) || batchSize < 1 || batchSize > 10) {
      throw new Error(`pipeline batchSize must be an integer from 1 to 10, got ${batchSize}`);
    }

    if (props.bucketName !== undefined) {
      if (!Token.isUnresolved(props.bucketName) && !BUCKET_NAME.test(props.bucketName)) {
        throw new Error(`pipeline bucketName must be an S3 bucket name, got ${JSON.stringify(props.bucketName)}`);
      }
      this.bucket = s3.Bucket.fromBucketName(this, 'Bucket', props.bucketName);
      this.ownsBucket = false;
    } else {
      const bucket = new s3.Bucket(this, 'Bucket', {
        blockPublicAccess: s3.BlockPublicAccess.BLOCK_ALL,
        encryption: s3.BucketEncryption.S3_MANAGED,
        enforceSSL: true,
        minimumTLSVersion: 1.2,
        objectOwnership: s3.ObjectOwnership.BUCKET_OWNER_ENFORCED,
        // The pipeline's inputs and outcomes are the user's data: kept when the stack goes.
        removalPolicy: RemovalPolicy.RETAIN,
        lifecycleRules: [{ id: 'AbortIncompleteUploads', abortIncompleteMultipartUploadAfter: Duration.days(1) }],
      });
      acknowledge(
        bucket,
        'AwsSolutions-S1',
        'the pipeline\'s inputs and outcomes, reached by this stack\'s IAM-scoped roles and whoever the account lets ' +
          'drop files in; server access logs would need a second, itself unlogged bucket, and CloudTrail S3 data ' +
          'events can audit object access where required',
      );
      this.bucket = bucket;
      this.ownsBucket = true;
    }

    // Events wait here for the function; one that fails maxReceiveCount times is kept aside.
    this.eventsDeadLetterQueue = new sqs.Queue(this, 'EventsDeadLetterQueue', {
      encryption: sqs.QueueEncryption.SQS_MANAGED,
      enforceSSL: true,
      retentionPeriod: Duration.days(14),
    });
    this.eventsQueue = new sqs.Queue(this, 'EventsQueue', {
      encryption: sqs.QueueEncryption.SQS_MANAGED,
      enforceSSL: true,
      retentionPeriod: Duration.days(14),
      // Lambda's guidance for an SQS trigger: six times the function's timeout, so that a batch
      // is not delivered again while an invocation (with its retries on throttling) still runs.
      visibilityTimeout: Duration.seconds(INGEST_FUNCTION_TIMEOUT.toSeconds() * 6),
      deadLetterQueue: { queue: this.eventsDeadLetterQueue, maxReceiveCount },
    });
    // S3 can send to a queue under SSE-SQS (no key grant needed); the destination adds the queue
    // policy that lets this bucket, and no other, send.
    this.bucket.addEventNotification(s3.EventType.OBJECT_CREATED, new s3n.SqsDestination(this.eventsQueue), {
      prefix: this.inputPrefix,
    });
    // CDK writes the notification with a custom resource (for a bucket of the stack too): its
    // handler, one per stack, runs only at deploy time.
    for (const c of Stack.of(this).node.children) {
      if (!c.node.id.startsWith('BucketNotificationsHandler')) continue;
      const role = c.node.tryFindChild('Role');
      if (role === undefined) continue;
      acknowledge(
        role,
        'AwsSolutions-IAM4[Policy::arn:<AWS::Partition>:iam::aws:policy/service-role/AWSLambdaBasicExecutionRole]',
        'CDK\'s own bucket notifications handler, which runs only when a deploy writes the pipeline bucket\'s ' +
          'notification configuration; the stack points its logs at a log group of its own',
      );
    }

    const ingest = new RustFunction(this, 'Ingest', {
      assetDir: path.join(props.lambdaAssetDir, 'ingest'),
      description: 'sluice ingest: makes one job of each object created under the pipeline\'s input prefix',
      timeout: INGEST_FUNCTION_TIMEOUT,
      logRetention: props.logRetention,
      logRemovalPolicy: props.logRemovalPolicy,
      environment: ingestEnv({
        tableName: props.table.tableName,
        queueUrl: props.queue.queueUrl,
        pipelineBucket: this.bucket.bucketName,
        inputPrefix: this.inputPrefix,
        outputPrefix: this.outputPrefix,
        owner: this.owner,
        maxAttempts: props.maxAttempts ?? 3,
        retentionDays: props.retentionDays ?? 7,
        events: props.events?.env,
      }),
    });
    this.function = ingest.function;
    ingest.function.addEventSource(
      new SqsEventSource(this.eventsQueue, {
        batchSize,
        // An event whose objects could not all become jobs is retried alone (the function's
        // partial batch response); the others are deleted.
        reportBatchItemFailures: true,
      }),
    );

    const input = this.bucket.arnForObjects(`${this.inputPrefix}*`);
    const output = this.bucket.arnForObjects(`${this.outputPrefix}*`);
    // The ingest function reads each object's size and content type (a HEAD needs GetObject).
    // ListBucket makes the HEAD of an object deleted since its event answer 404 (skipped: no
    // job) rather than 403 (an error, retried into the dead-letter queue); it reveals key names,
    // no content.
    iam.Grant.addToPrincipal({ grantee: ingest.function, actions: ['s3:GetObject'], resourceArns: [input] });
    iam.Grant.addToPrincipal({ grantee: ingest.function, actions: ['s3:ListBucket'], resourceArns: [this.bucket.bucketArn] });
    props.queue.grant(ingest.function, 'sqs:SendMessage');
    // JobStore::create with the object's identity as its key: one TransactWriteItems of two
    // puts (the job and its key), which IAM authorizes as PutItem on each item.
    JobTable.grantItems(props.table, ingest.function, 'dynamodb:PutItem');

    // The workers download a pipeline job's object, as they do an upload.
    iam.Grant.addToPrincipal({ grantee: props.workers, actions: ['s3:GetObject'], resourceArns: [input] });
    // The outbox (in the workers right after a job ends, and in the backlog function for what is
    // due) copies a job's stored result and output files from the payload bucket (GetObject on
    // the copy source), and writes the copies and the job's view under the output prefix.
    for (const grantee of [props.workers, props.outbox]) {
      iam.Grant.addToPrincipal({
        grantee,
        actions: ['s3:GetObject'],
        resourceArns: [props.payloadBucket.arnForObjects('results/*'), props.payloadBucket.arnForObjects('outputs/*')],
      });
      iam.Grant.addToPrincipal({ grantee, actions: ['s3:PutObject'], resourceArns: [output] });
    }

    const bucketRef = this.ownsBucket ? `${nagRef(this.bucket)}.Arn>` : `arn:<AWS::Partition>:s3:::${this.bucket.bucketName}`;
    const finding = (resource: string) => `AwsSolutions-IAM5[Resource::${resource}]`.replace('>.Arn>', '.Arn>');
    acknowledge(
      ingest.role,
      finding(`${bucketRef}/${this.inputPrefix}*`),
      'the wildcard is any object created under the input prefix: each one becomes a job, and the function reads ' +
        'the size and content type of the object its event names',
    );
    acknowledge(
      props.workers,
      finding(`${bucketRef}/${this.inputPrefix}*`),
      'the wildcard is the input object of any pipeline job: the worker downloads the object its job names',
    );
    for (const grantee of [props.workers, props.outbox]) {
      acknowledge(
        grantee,
        finding(`${bucketRef}/${this.outputPrefix}*`),
        'the wildcard is the outcome of any pipeline job: the outbox writes <output prefix><input name>.success or ' +
          '.failed and the job\'s files under <output prefix><input name>/',
      );
    }
    // The workers' role has these two acknowledged already (it writes there).
    for (const prefix of ['results', 'outputs']) {
      acknowledge(
        props.outbox,
        finding(`${nagRef(props.payloadBucket)}.Arn>/${prefix}/*`),
        `the wildcard is what any job produced (${prefix}/<owner hash>/<job>/<attempt>/…): the outbox copies a ` +
          'pipeline job\'s files to its sink',
      );
    }
  }
}
