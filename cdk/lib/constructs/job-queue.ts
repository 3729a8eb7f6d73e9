import { Duration, RemovalPolicy } from 'aws-cdk-lib';
import * as s3 from 'aws-cdk-lib/aws-s3';
import * as sqs from 'aws-cdk-lib/aws-sqs';
import { Construct } from 'constructs';
import { MAX_DEADLINE, MESSAGE_RETENTION } from '../limits';
import { acknowledge } from '../nag';

/** Properties of {@link JobQueue}. */
export interface JobQueueProps {
  /**
   * Deliveries of one message before SQS moves it to the dead-letter queue. Keep it above the
   * submit Lambda's max attempts, so a drained or duplicated delivery does not cost a job its
   * last attempt.
   *
   * @default 12, the stack's: the most attempts a job may ask for (10), plus 2
   */
  readonly maxReceiveCount?: number;
  /**
   * The lease: how long a worker holds a job before another worker may take it over, unless the
   * worker's heartbeat renews it (a job's time limit is the worker's `jobTimeout`, not this). The
   * queue's visibility timeout is derived from it ({@link JobQueue.visibilityMargin} longer), so a
   * message reappears only once its lease has expired and the next worker can claim the job.
   *
   * @default Duration.seconds(60)
   */
  readonly leaseDuration?: Duration;
  /**
   * How long an undelivered message stays in the jobs queue and its dead-letter queue. It must
   * cover the longest deadline a job may carry (`src/limits.json`), or a job could lose its
   * message while it may still start.
   *
   * @default - `message_retention_seconds` of src/limits.json: 14 days, the most SQS keeps
   */
  readonly retentionPeriod?: Duration;
  /**
   * How long large job inputs and results stay in the payload bucket.
   *
   * @default Duration.days(8)
   */
  readonly payloadRetention?: Duration;
  /**
   * What happens to the payload bucket when it leaves the stack.
   *
   * @default RemovalPolicy.RETAIN
   */
  readonly removalPolicy?: RemovalPolicy;
}

/** The jobs queue with its dead-letter queue, and the bucket for payloads too large for a record. */
export class JobQueue extends Construct {
  /** Deliveries before the dead-letter queue when none is given: the stack's default too. */
  public static readonly defaultMaxReceiveCount = 12;
  /** Added to the lease to get the visibility timeout. */
  public static readonly visibilityMargin = Duration.seconds(30);

  public readonly queue: sqs.IQueue;
  public readonly deadLetterQueue: sqs.IQueue;
  public readonly payloadBucket: s3.IBucket;
  /** The worker's lease on a claimed job. */
  public readonly leaseDuration: Duration;
  /** The queue's visibility timeout, also the worker's per-receive visibility. */
  public readonly visibilityTimeout: Duration;
  public readonly maxReceiveCount: number;

  constructor(scope: Construct, id: string, props: JobQueueProps = {}) {
    super(scope, id);
    this.maxReceiveCount = props.maxReceiveCount ?? JobQueue.defaultMaxReceiveCount;
    if (!Number.isInteger(this.maxReceiveCount) || this.maxReceiveCount < 1 || this.maxReceiveCount > 1000) {
      throw new Error(`maxReceiveCount must be an integer from 1 to 1000, got ${this.maxReceiveCount}`);
    }
    this.leaseDuration = props.leaseDuration ?? Duration.seconds(60);
    const leaseSeconds = this.leaseDuration.toSeconds({ integral: false });
    const maxLeaseSeconds = 43_200 - JobQueue.visibilityMargin.toSeconds();
    if (!Number.isInteger(leaseSeconds) || leaseSeconds < 10 || leaseSeconds > maxLeaseSeconds) {
      throw new Error(`leaseDuration must be whole seconds from 10 to ${maxLeaseSeconds}, got ${leaseSeconds}`);
    }
    this.visibilityTimeout = Duration.seconds(leaseSeconds + JobQueue.visibilityMargin.toSeconds());

    const retentionPeriod = props.retentionPeriod ?? MESSAGE_RETENTION;
    const retentionSeconds = retentionPeriod.toSeconds({ integral: false });
    if (!Number.isInteger(retentionSeconds) || retentionSeconds < MAX_DEADLINE.toSeconds() || retentionSeconds > 1_209_600) {
      throw new Error(
        `retentionPeriod must be whole seconds from ${MAX_DEADLINE.toSeconds()} (the longest deadline a job may carry) ` +
          `to 1209600 (14 days, the most SQS keeps), got ${retentionSeconds}`,
      );
    }
    this.deadLetterQueue = new sqs.Queue(this, 'DeadLetterQueue', {
      encryption: sqs.QueueEncryption.SQS_MANAGED,
      enforceSSL: true,
      retentionPeriod,
    });
    this.queue = new sqs.Queue(this, 'Queue', {
      encryption: sqs.QueueEncryption.SQS_MANAGED,
      enforceSSL: true,
      visibilityTimeout: this.visibilityTimeout,
      retentionPeriod,
      deadLetterQueue: { queue: this.deadLetterQueue, maxReceiveCount: this.maxReceiveCount },
    });

    const payloadDays = (props.payloadRetention ?? Duration.days(8)).toDays({ integral: false });
    if (!Number.isInteger(payloadDays) || payloadDays < 1) {
      throw new Error(`payloadRetention must be whole days, at least 1, got ${payloadDays}`);
    }
    this.payloadBucket = new s3.Bucket(this, 'PayloadBucket', {
      blockPublicAccess: s3.BlockPublicAccess.BLOCK_ALL,
      encryption: s3.BucketEncryption.S3_MANAGED,
      enforceSSL: true,
      minimumTLSVersion: 1.2,
      objectOwnership: s3.ObjectOwnership.BUCKET_OWNER_ENFORCED,
      removalPolicy: props.removalPolicy ?? RemovalPolicy.RETAIN,
      lifecycleRules: [
        { id: 'ExpirePayloads', expiration: Duration.days(payloadDays) },
        { id: 'AbortIncompleteUploads', abortIncompleteMultipartUploadAfter: Duration.days(1) },
      ],
    });
    acknowledge(
      this.payloadBucket,
      'AwsSolutions-S1',
      'transient job payloads reached only by this stack\'s IAM-scoped roles; server access logs would need a second, ' +
        'itself unlogged bucket, and CloudTrail S3 data events can audit object access where required',
    );
  }
}
