import { Duration, Token } from 'aws-cdk-lib';

/** A duration's whole seconds; throws a lowercase message naming the prop otherwise. */
export function wholeSeconds(d: Duration, name: string): number {
  const s = d.toSeconds({ integral: false });
  if (!Number.isInteger(s)) {
    throw new Error(`${name} must be whole seconds, got ${s}`);
  }
  return s;
}

/**
 * Rejects a name that is not an S3 bucket name (3 to 63 lowercase letters, digits, dots and
 * hyphens, starting and ending with a letter or digit; a token passes), as `SLUICE_INPUT_BUCKETS`
 * takes them.
 */
export function checkInputBucket(name: string): string {
  if (!Token.isUnresolved(name) && !/^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$/.test(name)) {
    throw new Error(
      `inputBuckets must be s3 bucket names (3 to 63 lowercase letters, digits, dots and hyphens), got ${JSON.stringify(name)}`,
    );
  }
  return name;
}
