import { RemovalPolicy } from 'aws-cdk-lib';
import * as dynamodb from 'aws-cdk-lib/aws-dynamodb';
import * as iam from 'aws-cdk-lib/aws-iam';
import { Construct } from 'constructs';

/** Properties of {@link JobTable}. */
export interface JobTableProps {
  /**
   * What happens to the table (and its job records) when it leaves the stack.
   *
   * @default RemovalPolicy.RETAIN
   */
  readonly removalPolicy?: RemovalPolicy;
}

/** The jobs table: one item per job, keyed by `id`, expired by DynamoDB's TTL on `expires_at`. */
export class JobTable extends Construct {
  /** The partition key. */
  public static readonly PARTITION_KEY = 'id';
  /** The TTL attribute (epoch seconds) the Rust side writes. */
  public static readonly TTL_ATTRIBUTE = 'expires_at';
  /**
   * The sparse index of the jobs that have not ended, by shard (`open`) and by when their
   * message was last sent (`sent_at`, epoch ms): the sweeper ends those whose message must have
   * left the queue, without scanning the table (`src/store.rs`, `OPEN_INDEX`).
   */
  public static readonly OPEN_INDEX = 'open-jobs';
  public static readonly OPEN_INDEX_KEYS = { partition: 'open', sort: 'sent_at' } as const;
  /**
   * The sparse index of the webhook announcements still to deliver, by shard (`notify`, set on a
   * job with a webhook) and by when the next attempt is due (`notify_at`, epoch ms, set by the
   * write that ends the job and removed once delivered or given up): the deliverers find what is
   * due without scanning the table (`src/store.rs`, `NOTIFY_INDEX`; `src/outbox.rs`).
   */
  public static readonly NOTIFY_INDEX = 'notify-due';
  public static readonly NOTIFY_INDEX_KEYS = { partition: 'notify', sort: 'notify_at' } as const;
  /**
   * The sparse index of the jobs that have not ended and carry a deadline, by shard (`open`) and
   * by deadline (`deadline`, epoch ms): the backlog Lambda ends `EXPIRED` the queued jobs whose
   * deadline passed without scanning the table, so deadlines hold while the pipeline is paused
   * (`src/store.rs`, `DEADLINE_INDEX`; `src/pipeline.rs`, `expire_overdue`).
   */
  public static readonly DEADLINE_INDEX = 'open-deadlines';
  public static readonly DEADLINE_INDEX_KEYS = { partition: 'open', sort: 'deadline' } as const;
  /** The key of the pipeline's state item (`src/pipeline.rs`, `ITEM_ID`): running or paused. */
  public static readonly PIPELINE_ITEM_ID = 'control:pipeline';

  public readonly table: dynamodb.ITable;

  /**
   * Grants `actions` on the table's items only (not on its indexes: `ITable.grant` would add
   * `index/*`, a wildcard no caller but the sweeper needs).
   */
  public static grantItems(table: dynamodb.ITable, grantee: iam.IGrantable, ...actions: string[]): iam.Grant {
    return iam.Grant.addToPrincipal({ grantee, actions, resourceArns: [table.tableArn] });
  }

  /** Grants `dynamodb:Query` on the open-jobs index alone: the sweeper's one read of it. */
  public static grantOpenIndexQuery(table: dynamodb.ITable, grantee: iam.IGrantable): iam.Grant {
    return iam.Grant.addToPrincipal({
      grantee,
      actions: ['dynamodb:Query'],
      resourceArns: [`${table.tableArn}/index/${JobTable.OPEN_INDEX}`],
    });
  }

  /** Grants `dynamodb:Query` on the notify-due index alone: the webhook deliverer's one read of it. */
  public static grantNotifyIndexQuery(table: dynamodb.ITable, grantee: iam.IGrantable): iam.Grant {
    return iam.Grant.addToPrincipal({
      grantee,
      actions: ['dynamodb:Query'],
      resourceArns: [`${table.tableArn}/index/${JobTable.NOTIFY_INDEX}`],
    });
  }

  /** Grants `dynamodb:Query` on the open-deadlines index alone: the deadline pass's one read of it. */
  public static grantDeadlineIndexQuery(table: dynamodb.ITable, grantee: iam.IGrantable): iam.Grant {
    return iam.Grant.addToPrincipal({
      grantee,
      actions: ['dynamodb:Query'],
      resourceArns: [`${table.tableArn}/index/${JobTable.DEADLINE_INDEX}`],
    });
  }

  constructor(scope: Construct, id: string, props: JobTableProps = {}) {
    super(scope, id);
    this.table = new dynamodb.Table(this, 'Table', {
      partitionKey: { name: JobTable.PARTITION_KEY, type: dynamodb.AttributeType.STRING },
      billingMode: dynamodb.BillingMode.PAY_PER_REQUEST,
      timeToLiveAttribute: JobTable.TTL_ATTRIBUTE,
      pointInTimeRecoverySpecification: { pointInTimeRecoveryEnabled: true },
      encryption: dynamodb.TableEncryption.AWS_MANAGED,
      removalPolicy: props.removalPolicy ?? RemovalPolicy.RETAIN,
    });
    (this.table as dynamodb.Table).addGlobalSecondaryIndex({
      indexName: JobTable.OPEN_INDEX,
      partitionKey: { name: JobTable.OPEN_INDEX_KEYS.partition, type: dynamodb.AttributeType.STRING },
      sortKey: { name: JobTable.OPEN_INDEX_KEYS.sort, type: dynamodb.AttributeType.NUMBER },
      projectionType: dynamodb.ProjectionType.KEYS_ONLY,
    });
    (this.table as dynamodb.Table).addGlobalSecondaryIndex({
      indexName: JobTable.NOTIFY_INDEX,
      partitionKey: { name: JobTable.NOTIFY_INDEX_KEYS.partition, type: dynamodb.AttributeType.STRING },
      sortKey: { name: JobTable.NOTIFY_INDEX_KEYS.sort, type: dynamodb.AttributeType.NUMBER },
      projectionType: dynamodb.ProjectionType.KEYS_ONLY,
    });
    (this.table as dynamodb.Table).addGlobalSecondaryIndex({
      indexName: JobTable.DEADLINE_INDEX,
      partitionKey: { name: JobTable.DEADLINE_INDEX_KEYS.partition, type: dynamodb.AttributeType.STRING },
      sortKey: { name: JobTable.DEADLINE_INDEX_KEYS.sort, type: dynamodb.AttributeType.NUMBER },
      projectionType: dynamodb.ProjectionType.KEYS_ONLY,
    });
  }
}
