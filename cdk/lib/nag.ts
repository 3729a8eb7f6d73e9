import { CfnElement, Stack, Validations } from 'aws-cdk-lib';
import { IConstruct } from 'constructs';

/**
 * Acknowledges one finding on a construct, with the reason it is acceptable. Keep the reason
 * specific: it is the audit trail (recorded in the construct's metadata). A bare cdk-nag rule id
 * (`AwsSolutions-S1`, `AwsSolutions-IAM5[Resource::*]`) is qualified with the AwsSolutions plugin's
 * namespace; ids of other sources pass as given (`Annotation::…`).
 */
export function acknowledge(scope: IConstruct, id: string, reason: string): void {
  Validations.of(scope).acknowledge({ id: id.startsWith('AwsSolutions-') ? `AwsSolutions::${id}` : id, reason });
}

/** How cdk-nag spells a reference to a resource in IAM5 finding ids: `<LogicalId>`. */
export function nagRef(resource: IConstruct): string {
  const element = resource.node.defaultChild as CfnElement | undefined;
  if (element === undefined) {
    throw new Error(`${resource.node.path} has no cloudformation resource`);
  }
  return `<${Stack.of(resource).getLogicalId(element)}>`;
}
