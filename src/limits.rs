//! The time limits every part of sluice shares, as one consistent set. `src/limits.json` holds
//! the same numbers for the CDK app; a test here and one in the CDK suite prove they agree.
//!
//! - A job's message stays in the queue (and its dead-letter queue) for [`MESSAGE_RETENTION`],
//!   the longest SQS allows.
//! - A job may wait at most [`MAX_DEADLINE`] to start, no longer than its message lives.
//! - One attempt runs at most [`MAX_JOB_TIMEOUT`], below SQS's cap on how long a received
//!   message can stay hidden ([`SQS_VISIBILITY_CAP`]).
//! - A record is kept while its message may still be delivered or its job run, and for the
//!   deployment's retention after the job ends.

use std::time::Duration;

/// How long SQS keeps a job's message: 14 days, the most it allows.
pub const MESSAGE_RETENTION: Duration = Duration::from_secs(14 * 86_400);

/// The longest deadline a job may carry: as long as its message lives.
pub const MAX_DEADLINE: Duration = MESSAGE_RETENTION;

/// How long one received message can stay hidden at most, however often it is extended.
pub const SQS_VISIBILITY_CAP: Duration = Duration::from_secs(12 * 3_600);

/// The longest time limit an attempt may have: 11 h 45 min. SQS hides a received message for at
/// most 12 hours from its receipt, however often the heartbeat extends it; an attempt must end,
/// and its retry delay (or its release) be set, before that, or the message would reappear and a
/// second worker start the same job while the first still runs it. The 15 minutes left cover the
/// last heartbeat, the result's write and a retry delay of up to 5 minutes.
pub const MAX_JOB_TIMEOUT: Duration = Duration::from_secs(42_300);

/// The submit function's deployed timeout: well below the 60 s after which workers delete a
/// message whose record never came (`job::ORPHAN_GRACE`), so a submit still running then cannot
/// be told from one that failed. Its AWS calls run within it (`api::Budget`), and the local stack
/// stops a request at it as Lambda does.
pub const SUBMIT_FUNCTION_TIMEOUT: Duration = Duration::from_secs(10);

/// The status function's deployed timeout, within API Gateway's 30 s for an integration.
pub const STATUS_FUNCTION_TIMEOUT: Duration = Duration::from_secs(29);

/// How long a record must outlive `now` while its job has not ended: its message may be
/// delivered (and the job run) until the message's retention runs out.
pub fn while_unfinished(retention: Duration) -> Duration {
    MESSAGE_RETENTION + MAX_JOB_TIMEOUT + retention
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_limits_agree_with_the_shared_file_and_with_each_other() {
        let file: serde_json::Value =
            serde_json::from_str(include_str!("limits.json")).expect("limits.json is JSON");
        let secs = |k: &str| Duration::from_secs(file[k].as_u64().unwrap_or_else(|| panic!("{k}")));
        assert_eq!(secs("message_retention_seconds"), MESSAGE_RETENTION);
        assert_eq!(secs("max_deadline_seconds"), MAX_DEADLINE);
        assert_eq!(secs("max_job_timeout_seconds"), MAX_JOB_TIMEOUT);
        assert_eq!(secs("sqs_visibility_cap_seconds"), SQS_VISIBILITY_CAP);
        assert_eq!(
            secs("submit_function_timeout_seconds"),
            SUBMIT_FUNCTION_TIMEOUT
        );
        assert_eq!(
            secs("status_function_timeout_seconds"),
            STATUS_FUNCTION_TIMEOUT
        );
        assert!(
            SUBMIT_FUNCTION_TIMEOUT < crate::job::ORPHAN_GRACE,
            "a submit ends before its message could be taken for an orphan"
        );
        assert!(
            STATUS_FUNCTION_TIMEOUT > crate::api::MAX_WAIT
                && STATUS_FUNCTION_TIMEOUT < Duration::from_secs(30),
            "a long-poll answers within the function, and the function within API Gateway's 30 s"
        );
        assert!(
            MESSAGE_RETENTION <= Duration::from_secs(14 * 86_400),
            "SQS keeps 14 days at most"
        );
        assert!(
            MAX_DEADLINE <= MESSAGE_RETENTION,
            "a job cannot wait longer than its message lives"
        );
        assert!(
            MAX_JOB_TIMEOUT + Duration::from_secs(900) <= SQS_VISIBILITY_CAP,
            "an attempt ends, with time to spare, before its message could reappear"
        );
    }
}
