/**
 * The time limits every part of sluice shares, read from `src/limits.json`: the Rust library
 * checks its constants (`src/limits.rs`) against the same file, and `test/limits.test.ts` checks
 * this app against it, so the queue's retention, the longest deadline and the longest job time
 * limit are one consistent set.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { Duration } from 'aws-cdk-lib';
import { REPO_ROOT } from './policy';

/** `src/limits.json`. */
export const LIMITS_FILE = path.join(REPO_ROOT, 'src', 'limits.json');

interface LimitsFile {
  readonly message_retention_seconds: number;
  readonly max_deadline_seconds: number;
  readonly max_job_timeout_seconds: number;
  readonly sqs_visibility_cap_seconds: number;
  readonly submit_function_timeout_seconds: number;
  readonly status_function_timeout_seconds: number;
}

function load(): LimitsFile {
  const raw = JSON.parse(fs.readFileSync(LIMITS_FILE, 'utf8')) as Record<string, unknown>;
  const keys = [
    'message_retention_seconds',
    'max_deadline_seconds',
    'max_job_timeout_seconds',
    'sqs_visibility_cap_seconds',
    'submit_function_timeout_seconds',
    'status_function_timeout_seconds',
  ];
  for (const k of keys) {
    const v = raw[k];
    if (typeof v !== 'number' || !Number.isInteger(v) || v <= 0) {
      throw new Error(`${LIMITS_FILE}: ${k} must be a positive whole number of seconds, got ${JSON.stringify(v)}`);
    }
  }
  return raw as unknown as LimitsFile;
}

const limits = load();

/** How long SQS keeps a job's message, in the jobs queue and its dead-letter queue. */
export const MESSAGE_RETENTION = Duration.seconds(limits.message_retention_seconds);
/** The longest deadline a job may carry: no longer than its message lives. */
export const MAX_DEADLINE = Duration.seconds(limits.max_deadline_seconds);
/** The longest time limit of one attempt, below SQS's visibility cap. */
export const MAX_JOB_TIMEOUT = Duration.seconds(limits.max_job_timeout_seconds);
/** How long one received message can stay hidden at most. */
export const SQS_VISIBILITY_CAP = Duration.seconds(limits.sqs_visibility_cap_seconds);
/** The submit function's timeout: its AWS calls run within it, and the local stack enforces it. */
export const SUBMIT_FUNCTION_TIMEOUT = Duration.seconds(limits.submit_function_timeout_seconds);
/** The status function's timeout, within API Gateway's 30 s for an integration. */
export const STATUS_FUNCTION_TIMEOUT = Duration.seconds(limits.status_function_timeout_seconds);
