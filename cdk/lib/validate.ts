import { Duration } from 'aws-cdk-lib';

/** A duration's whole seconds; throws a lowercase message naming the prop otherwise. */
export function wholeSeconds(d: Duration, name: string): number {
  const s = d.toSeconds({ integral: false });
  if (!Number.isInteger(s)) {
    throw new Error(`${name} must be whole seconds, got ${s}`);
  }
  return s;
}
