import * as dynamodb from 'aws-cdk-lib/aws-dynamodb';
import * as iam from 'aws-cdk-lib/aws-iam';

/**
 * The key prefix of the scaling lease item in the jobs table (`src/nudge.rs`, `lease_key`): the
 * backlog function and the submit-time nudge take it around each read and write of the service's
 * desired count.
 */
export const LEASE_KEY_PREFIX = 'scale:';

/**
 * Grants `actions` on the jobs table's scaling lease items only (`dynamodb:LeadingKeys` starting
 * with {@link LEASE_KEY_PREFIX}), so a function that takes or gives back the lease may not
 * rewrite job records.
 */
export function grantScalingLease(table: dynamodb.ITable, grantee: iam.IGrantable, ...actions: string[]): void {
  iam.Grant.addToPrincipal({
    grantee,
    actions,
    resourceArns: [table.tableArn],
    conditions: {
      'ForAllValues:StringLike': { 'dynamodb:LeadingKeys': [`${LEASE_KEY_PREFIX}*`] },
    },
  });
}
