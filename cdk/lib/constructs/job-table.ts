import { RemovalPolicy } from 'aws-cdk-lib';
import * as dynamodb from 'aws-cdk-lib/aws-dynamodb';
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

  public readonly table: dynamodb.ITable;

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
  }
}
