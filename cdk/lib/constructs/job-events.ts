import { Token } from 'aws-cdk-lib';
import * as events from 'aws-cdk-lib/aws-events';
import * as iam from 'aws-cdk-lib/aws-iam';
import * as kms from 'aws-cdk-lib/aws-kms';
import * as sns from 'aws-cdk-lib/aws-sns';
import { Construct } from 'constructs';
import { EventsEnv } from '../env';
import { acknowledge } from '../nag';

/**
 * Where every job's end is published, as the stack's `events` option takes it (src/events.rs):
 * SageMaker-style success and error topics, an EventBridge bus, or both.
 */
export interface EventsOptions {
  /**
   * Make two SNS topics: every job that `SUCCEEDED` is published to the success topic, every job
   * that ended otherwise (`FAILED`, `CANCELLED`, `EXPIRED`) to the error topic, with the message
   * attributes `type`, `status`, `job_id` and `event_id` (subscribers can filter on `status`).
   * Both are encrypted with the AWS managed key `alias/aws/sns` and refuse publishing without TLS.
   *
   * @default false
   */
  readonly topics?: boolean;
  /**
   * Put every job's end on an EventBridge bus, as source `sluice` and detail-type `Job Succeeded`,
   * `Job Failed`, `Job Cancelled` or `Job Expired`: `'default'` (the account's default bus in the
   * stack's region), the name of a bus of the stack's account and region, or a bus's ARN (in the
   * stack's region; a bus of another account must let this account put events on it). The bus is
   * not created: it must exist. A token (another construct's attribute) is taken as a name.
   *
   * @default - no bus
   */
  readonly eventBus?: string;
}

/** Properties of {@link JobEvents}. */
export interface JobEventsProps extends EventsOptions {}

/** An EventBridge bus name as the Rust side accepts it (1 to 256 of A-Z a-z 0-9 . _ -). */
const BUS_NAME = /^[A-Za-z0-9._-]{1,256}$/;
/** An EventBridge bus ARN: `arn:<partition>:events:<region>:<account>:event-bus/<name>`. */
const BUS_ARN = /^arn:aws[a-z-]*:events:[a-z0-9-]+:\d{12}:event-bus\/([A-Za-z0-9._-]{1,256})$/;

/**
 * A bus name or ARN, or an error saying what is expected. Names are checked as src/events.rs
 * checks them, so that a bus the workers would refuse at start-up fails synth instead.
 */
export function checkEventBus(bus: string): string {
  if (Token.isUnresolved(bus) || BUS_NAME.test(bus) || BUS_ARN.test(bus)) return bus;
  throw new Error(
    "events eventBus must be 'default', a bus name (1 to 256 of A-Z a-z 0-9 . _ -) or a bus ARN " +
      `(arn:aws:events:<region>:<account>:event-bus/<name>), got ${JSON.stringify(bus)}`,
  );
}

/**
 * The targets every job's end is published to: the success and error topics (made here), the
 * bus (the account's, by name or ARN), the variables that name them, and the grant that lets a
 * publisher (the workers, the backlog function's outbox) publish to exactly these.
 */
export class JobEvents extends Construct {
  /** Jobs that `SUCCEEDED`, with `topics`. */
  public readonly successTopic?: sns.Topic;
  /** Jobs that ended `FAILED`, `CANCELLED` or `EXPIRED`, with `topics`. */
  public readonly errorTopic?: sns.Topic;
  /** The bus every end is put on, with `eventBus`. */
  public readonly eventBus?: events.IEventBus;
  /** The variables of the binaries that mark jobs (submit, ingest) and publish them (worker, backlog). */
  public readonly env: EventsEnv;

  constructor(scope: Construct, id: string, props: JobEventsProps) {
    super(scope, id);
    const topics = props.topics ?? false;
    if (!topics && props.eventBus === undefined) {
      throw new Error(
        'events publishes nowhere: give topics: true, an eventBus, or both (or leave the events option out)',
      );
    }

    if (topics) {
      // The AWS managed key: the publishers are this stack's roles, which may use it through SNS
      // (see grantPublish), and SNS delivers to SQS, Lambda, e-mail and HTTPS subscribers
      // decrypted. It costs nothing at rest, where a key of the stack costs a dollar a month.
      // Only AWS services publishing (CloudWatch alarms, EventBridge rules) would need a key of
      // the stack, as the alarm topic has.
      const key = kms.Alias.fromAliasName(this, 'TopicKey', 'alias/aws/sns');
      this.successTopic = new sns.Topic(this, 'SuccessTopic', { masterKey: key, enforceSSL: true });
      this.errorTopic = new sns.Topic(this, 'ErrorTopic', { masterKey: key, enforceSSL: true });
    }

    if (props.eventBus !== undefined) {
      const bus = checkEventBus(props.eventBus);
      this.eventBus = BUS_ARN.test(bus)
        ? events.EventBus.fromEventBusArn(this, 'Bus', bus)
        : events.EventBus.fromEventBusName(this, 'Bus', bus);
    }

    this.env = {
      successTopicArn: this.successTopic?.topicArn,
      errorTopicArn: this.errorTopic?.topicArn,
      // Always the ARN: the variable names exactly the bus the grant is for.
      eventBus: this.eventBus?.eventBusArn,
    };
  }

  /**
   * Lets a publisher's role publish to the topics (`sns:Publish`) and put events on the bus
   * (`events:PutEvents`), on exactly these.
   */
  public grantPublish(role: iam.IRole): void {
    for (const topic of [this.successTopic, this.errorTopic]) topic?.grantPublish(role);
    this.eventBus?.grantPutEventsTo(role);
    if (this.successTopic === undefined) return;
    // With the topics, grantPublish also lets the role use the key SNS encrypts each message with
    // on the publisher's behalf: the AWS managed key, which a policy can only name by its alias
    // (kms:ResourceAliases on key/*), so the grant reaches that key and no other.
    const reason =
      'SNS encrypts each message to the job-event topics with the AWS managed key alias/aws/sns on the ' +
      'publisher\'s behalf; a policy names that key by its alias (kms:ResourceAliases), its id being unknown at ' +
      'synth, and GenerateDataKey* is what SNS asks for the message\'s data key';
    acknowledge(role, 'AwsSolutions-IAM5[Resource::arn:<AWS::Partition>:kms:<AWS::Region>:<AWS::AccountId>:key/*]', reason);
    acknowledge(role, 'AwsSolutions-IAM5[Action::kms:GenerateDataKey*]', reason);
  }
}
