//! The job store: job records in DynamoDB, every transition a conditional write.
//!
//! The conditions here are the state machine of [`crate::job`] written for DynamoDB: a claim
//! succeeds only on a `QUEUED` job whose deadline has not passed or a `RUNNING` job whose lease
//! expired; every later write of an attempt names that attempt (the fencing token), so a stalled
//! worker can never overwrite a newer attempt.

use std::collections::HashMap;
use std::time::Duration;

use aws_sdk_dynamodb::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_dynamodb::operation::put_item::PutItemError;
use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
use aws_sdk_dynamodb::operation::update_item::UpdateItemError;
use aws_sdk_dynamodb::types::{
    AttributeValue, KeysAndAttributes, Put, ReturnValue, ReturnValuesOnConditionCheckFailure,
    TransactWriteItem,
};
use aws_sdk_dynamodb::Client;

use crate::job::{Delivery, JobId, JobRecord, OnTimeout, Owner, Progress, Sink, Status};
use crate::output::{OutputFile, StoredObject};
use crate::time::Millis;
use crate::upload::{InputObject, UploadId, UploadRecord};

type BoxError = Box<dyn std::error::Error + Send + Sync>;
type Item = HashMap<String, AttributeValue>;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The write's condition did not hold; `current` is the record as it was, if any.
    #[error("the job is not in a state that allows this change")]
    Conflict { current: Option<Box<JobRecord>> },
    #[error("dynamodb throttled the request")]
    Throttled(#[source] BoxError),
    #[error("dynamodb request failed")]
    Unavailable(#[source] BoxError),
    #[error("job record {id} is malformed: {reason}")]
    Corrupt { id: String, reason: String },
}

impl StoreError {
    /// Throttling, time-outs and 5xx: worth trying again later.
    pub fn is_retryable(&self) -> bool {
        matches!(self, StoreError::Throttled(_) | StoreError::Unavailable(_))
    }
}

pub(crate) fn classify<E, R>(err: SdkError<E, R>) -> StoreError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    R: std::fmt::Debug + Send + Sync + 'static,
{
    let throttled = matches!(
        err.code(),
        Some(
            "ProvisionedThroughputExceededException"
                | "RequestLimitExceeded"
                | "ThrottlingException"
                | "TransactionInProgressException"
        )
    );
    if throttled {
        StoreError::Throttled(Box::new(err))
    } else {
        StoreError::Unavailable(Box::new(err))
    }
}

/// The outcome of recording a new job.
#[derive(Debug, Clone, PartialEq)]
pub enum Created {
    Created,
    /// The caller's idempotency key already names a job.
    Existing(IdempotencyRecord),
}

/// What an idempotency key points at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdempotencyRecord {
    pub job_id: JobId,
    /// Hash of the request that first used the key.
    pub request_hash: String,
}

/// The DynamoDB job store. Cheap to clone.
#[derive(Debug, Clone)]
pub struct JobStore {
    client: Client,
    table: String,
    /// How long a finished job's record is kept; also counted into the TTL of an unfinished one.
    retention: Duration,
    /// Whether the jobs this store creates are published when they end (the deployment names
    /// SNS topics or an EventBridge bus, [`crate::events`]).
    publishes: bool,
}

/// The retention of a store that is not told otherwise: 7 days, `SLUICE_RETENTION_DAYS`'s default.
pub const DEFAULT_RETENTION: Duration = Duration::from_secs(7 * 86_400);

mod attr {
    pub const ID: &str = "id";
    pub const OWNER: &str = "owner";
    pub const STATUS: &str = "status";
    pub const ATTEMPT: &str = "attempt";
    pub const MAX_ATTEMPTS: &str = "max_attempts";
    pub const RELEASES: &str = "releases";
    pub const SUBMITTED_AT: &str = "submitted_at";
    pub const STARTED_AT: &str = "started_at";
    pub const FINISHED_AT: &str = "finished_at";
    pub const DEADLINE: &str = "deadline";
    pub const LEASE_EXPIRES_AT: &str = "lease_expires_at";
    pub const WORKER_ID: &str = "worker_id";
    pub const CLAIM_TOKEN: &str = "claim_token";
    pub const CANCEL_REQUESTED: &str = "cancel_requested";
    pub const RESULT: &str = "result";
    pub const ERROR: &str = "error";
    pub const INPUT_BYTES: &str = "input_bytes";
    pub const TIMEOUT_SECONDS: &str = "timeout_seconds";
    pub const ON_TIMEOUT: &str = "on_timeout";
    pub const PROGRESS_FRACTION: &str = "progress_fraction";
    pub const PROGRESS_MESSAGE: &str = "progress_message";
    /// Set on a job the dead-letter reconciler ended `FAILED`, which a redrive may reopen.
    pub const DEAD_LETTERED: &str = "dead_lettered";
    /// How many times an operator redrove the job out of `FAILED`, and when last.
    pub const REDRIVES: &str = "redrives";
    pub const REDRIVEN_AT: &str = "redriven_at";
    /// How many times the reconciler sent a job with attempts left back to the jobs queue.
    pub const DLQ_RETURNS: &str = "dlq_returns";
    /// Present while the job has not ended: the shard of the open-jobs index
    /// ([`super::OPEN_INDEX`]), which holds only the jobs that have not ended.
    pub const OPEN: &str = "open";
    /// When a message for the job was last sent (epoch ms): the sort key of the open-jobs
    /// index, by which the sweeper finds jobs whose message must have left the queue.
    pub const SENT_AT: &str = "sent_at";
    /// Marks an id whose message was deleted before any record came: no record may take it.
    pub const BURIED: &str = "buried";
    /// DynamoDB's TTL attribute, in epoch seconds.
    pub const EXPIRES_AT: &str = "expires_at";
    /// The job's webhook URL.
    pub const WEBHOOK: &str = "webhook";
    /// Present on a job with a webhook, from its submit on: the shard of the notify-due index
    /// ([`super::NOTIFY_INDEX`]).
    pub const NOTIFY: &str = "notify";
    /// When the announcement of the job's terminal state is next due (epoch ms): set by the
    /// write that ends the job, moved by each attempt, removed once delivered or given up. The
    /// sort key of the notify-due index, which therefore holds only the jobs with a webhook and
    /// an announcement still to deliver.
    pub const NOTIFY_AT: &str = "notify_at";
    /// On a job the deployment publishes the end of ([`crate::events`]): `true`.
    pub const PUBLISH: &str = "publish";
    /// The targets of the current announcement already done (a string set: `sink`, `webhook`,
    /// `sns`, `eventbridge`), so an attempt made again skips them.
    pub const ANNOUNCED: &str = "announced";
    pub const WEBHOOK_ATTEMPTS: &str = "webhook_attempts";
    pub const WEBHOOK_LAST_AT: &str = "webhook_last_at";
    pub const WEBHOOK_LAST_STATUS: &str = "webhook_last_status";
    pub const WEBHOOK_LAST_ERROR: &str = "webhook_last_error";
    pub const WEBHOOK_DELIVERED_AT: &str = "webhook_delivered_at";
    pub const WEBHOOK_GAVE_UP_AT: &str = "webhook_gave_up_at";
    /// An owner's webhook signing secret (`whsec_…`), and the one before it during a rotation.
    pub const SECRET: &str = "secret";
    pub const PREVIOUS_SECRET: &str = "previous_secret";
    pub const PREVIOUS_UNTIL: &str = "previous_until";
    pub const CREATED_AT: &str = "created_at";
    pub const ROTATED_AT: &str = "rotated_at";
    pub const JOB_ID: &str = "job_id";
    /// An upload's object key, announced size, content type, expiry (epoch ms), S3 multipart id
    /// and completion time; on a job, the object it reads its file from.
    pub const OBJECT_KEY: &str = "object_key";
    pub const SIZE: &str = "size";
    pub const CONTENT_TYPE: &str = "content_type";
    pub const UPLOAD_EXPIRES_AT: &str = "upload_expires_at";
    pub const MULTIPART: &str = "multipart";
    pub const COMPLETED_AT: &str = "completed_at";
    /// An upload's SHA-256 as its caller declared it.
    pub const SHA256: &str = "sha256";
    pub const INPUT_UPLOAD: &str = "input_upload";
    pub const INPUT_KEY: &str = "input_key";
    /// The bucket of the job's file, when not the payload bucket.
    pub const INPUT_BUCKET: &str = "input_bucket";
    /// The S3 version of the job's file, when one was recorded.
    pub const INPUT_VERSION: &str = "input_version";
    /// A pipeline job's sink: the bucket and the key its outcome is written under.
    pub const SINK_BUCKET: &str = "sink_bucket";
    pub const SINK_BASE: &str = "sink_base";
    /// A result stored in the payload bucket: its key, size and content type.
    pub const RESULT_KEY: &str = "result_key";
    pub const RESULT_SIZE: &str = "result_size";
    pub const RESULT_CONTENT_TYPE: &str = "result_content_type";
    /// The files the handler wrote: a list of maps (`name`, `key`, `size`, `content_type`).
    pub const OUTPUTS: &str = "outputs";
    pub const INPUT_SIZE: &str = "input_size";
    pub const INPUT_CONTENT_TYPE: &str = "input_content_type";
    pub const REQUEST_HASH: &str = "request_hash";
}

/// The sparse index over the jobs that have not ended, by shard and by when their message was
/// last sent. A job leaves it when it ends (its `open` attribute is removed).
pub const OPEN_INDEX: &str = "open-jobs";
/// The index's partition key and sort key.
pub const OPEN_INDEX_KEYS: (&str, &str) = (attr::OPEN, attr::SENT_AT);
/// The open-jobs index spreads its writes over this many partitions.
pub const OPEN_SHARDS: u32 = 16;

/// The sparse index over the jobs that have not ended and carry a deadline, by shard (the same
/// `open` attribute) and by deadline: the jobs whose deadline passed are found without a scan
/// ([`crate::pipeline::expire_overdue`]), so a deadline holds while no worker takes jobs.
pub const DEADLINE_INDEX: &str = "open-deadlines";
/// The index's partition key and sort key.
pub const DEADLINE_INDEX_KEYS: (&str, &str) = (attr::OPEN, attr::DEADLINE);

/// The open-jobs index partition of a job: from the random bits of its id. Pure.
pub fn open_shard(id: &JobId) -> String {
    id.shard(OPEN_SHARDS).to_string()
}

/// The sparse index over the jobs with a webhook whose announcement is still to deliver, by
/// shard and by when it is next due. A job enters it when it ends, and leaves it when its
/// announcement is delivered or given up (its `notify_at` attribute is removed).
pub const NOTIFY_INDEX: &str = "notify-due";
/// The index's partition key and sort key.
pub const NOTIFY_INDEX_KEYS: (&str, &str) = (attr::NOTIFY, attr::NOTIFY_AT);
/// The notify-due index spreads its writes over this many partitions (by [`open_shard`]).
pub const NOTIFY_SHARDS: u32 = OPEN_SHARDS;

/// The key of the item that holds an owner's webhook signing secret: `owner_hash` is a hash of
/// the owner, so the key names no one.
pub fn secret_item_id(owner_hash: &str) -> String {
    format!("whsec:{owner_hash}")
}

/// An owner's webhook signing secret as stored, in its `whsec_…` text.
#[derive(Clone, PartialEq, Eq)]
pub struct StoredSecret {
    pub current: String,
    /// The secret before the last rotation, and until when webhooks are signed with it too.
    pub previous: Option<(String, Millis)>,
    pub created_at: Millis,
    pub rotated_at: Option<Millis>,
}

impl std::fmt::Debug for StoredSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoredSecret")
            .field("previous_until", &self.previous.as_ref().map(|p| p.1))
            .field("created_at", &self.created_at)
            .field("rotated_at", &self.rotated_at)
            .finish_non_exhaustive()
    }
}

/// How a delivery attempt ends, as recorded on the job's item.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeliveryEnd {
    /// The receiver answered 2xx.
    Delivered { status: u16 },
    /// Try again at `next_at`.
    Retry {
        status: Option<u16>,
        error: String,
        next_at: Millis,
    },
    /// No more attempts: the schedule is spent, or the receiver answered 410 Gone.
    GiveUp { status: Option<u16>, error: String },
}

/// How long an id buried by [`JobStore::bury`] stays taken: far beyond the longest a submit can
/// still be writing its record (its function's timeout).
pub const BURIAL: Duration = Duration::from_secs(86_400);

/// The key of the item that records an upload.
pub fn upload_item_id(id: &UploadId) -> String {
    format!("upload:{id}")
}

/// The key of the item that maps a caller's idempotency key to its job.
pub fn idempotency_item_id(key_hash: &str) -> String {
    format!("idem:{key_hash}")
}

fn s(v: impl Into<String>) -> AttributeValue {
    AttributeValue::S(v.into())
}

fn n(v: impl ToString) -> AttributeValue {
    AttributeValue::N(v.to_string())
}

/// An update expression with its names and values, built one clause at a time; every
/// attribute is referred to as `#name` so none collides with DynamoDB's reserved words.
#[derive(Default)]
struct Update {
    set: Vec<String>,
    remove: Vec<String>,
    add: Vec<String>,
    condition: String,
    names: HashMap<String, String>,
    values: HashMap<String, AttributeValue>,
}

impl Update {
    fn name(&mut self, a: &str) -> String {
        self.names.insert(format!("#{a}"), a.to_owned());
        format!("#{a}")
    }
    fn value(&mut self, key: &str, v: AttributeValue) -> String {
        self.values.insert(format!(":{key}"), v);
        format!(":{key}")
    }
    /// Panics, in debug builds, when a clause already names `a`: DynamoDB refuses an update
    /// whose paths overlap, so every test that writes through it would fail obscurely instead.
    fn first_mention(&self, a: &str) {
        let n = format!("#{a}");
        let named = |c: &String| c.split(' ').next() == Some(n.as_str());
        debug_assert!(
            !(self.set.iter().any(named) || self.remove.contains(&n) || self.add.iter().any(named)),
            "the update names {a} twice"
        );
    }
    fn set(mut self, a: &str, v: AttributeValue) -> Self {
        self.first_mention(a);
        let (n, val) = (self.name(a), self.value(a, v));
        self.set.push(format!("{n} = {val}"));
        self
    }
    fn set_if_absent(mut self, a: &str, v: AttributeValue) -> Self {
        self.first_mention(a);
        let (n, val) = (self.name(a), self.value(a, v));
        self.set.push(format!("{n} = if_not_exists({n}, {val})"));
        self
    }
    fn increment(mut self, a: &str) -> Self {
        self.first_mention(a);
        let n = self.name(a);
        let one = self.value("one", n_one());
        self.add.push(format!("{n} {one}"));
        self
    }
    fn add_to_set(mut self, a: &str, member: &str) -> Self {
        self.first_mention(a);
        let n = self.name(a);
        let v = self.value(a, AttributeValue::Ss(vec![member.to_owned()]));
        self.add.push(format!("{n} {v}"));
        self
    }
    fn remove(mut self, a: &str) -> Self {
        self.first_mention(a);
        let n = self.name(a);
        self.remove.push(n);
        self
    }
    /// `condition` uses `#attr` names and `:value` placeholders registered with `bind`.
    fn when(mut self, condition: &str) -> Self {
        for a in attribute_refs(condition) {
            self.name(a);
        }
        self.condition = condition.to_owned();
        self
    }
    fn bind(mut self, key: &str, v: AttributeValue) -> Self {
        self.value(key, v);
        self
    }
    fn expression(&self) -> String {
        let mut parts = Vec::new();
        if !self.set.is_empty() {
            parts.push(format!("SET {}", self.set.join(", ")));
        }
        if !self.remove.is_empty() {
            parts.push(format!("REMOVE {}", self.remove.join(", ")));
        }
        if !self.add.is_empty() {
            parts.push(format!("ADD {}", self.add.join(", ")));
        }
        parts.join(" ")
    }
}

/// The `#name` references in an expression.
fn attribute_refs(expr: &str) -> impl Iterator<Item = &str> {
    expr.split('#').skip(1).map(|rest| {
        let end = rest
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(rest.len());
        &rest[..end]
    })
}

/// A fraction as a number DynamoDB accepts: its numbers range over 1e-130 to 1e126 in
/// magnitude with 38 significant digits, and it refuses the whole write for one that does not
/// (a progress fraction of 1e-200 would fail every heartbeat). A magnitude below the range is
/// stored as 0; the rest in Rust's shortest round-trip digits, with an exponent when small. Pure.
pub fn fraction_number(f: f64) -> String {
    if !f.is_finite() || f.abs() < 1e-130 {
        return "0".into();
    }
    if f.abs() < 1e-6 {
        format!("{f:e}")
    } else {
        format!("{f}")
    }
}

fn n_one() -> AttributeValue {
    n(1)
}

/// The condition under which a worker may claim a job at `:now`.
/// A queued job must not have been cancelled (a cancel asked while an earlier attempt ran) and,
/// if it never started, must not be past its deadline.
const CLAIMABLE: &str = "(#status = :queued \
         AND (attribute_not_exists(#cancel_requested) OR #cancel_requested = :false) \
         AND (attribute_not_exists(#deadline) OR #deadline > :now OR #attempt > :zero)) \
     OR (#status = :running AND #lease_expires_at <= :now \
         AND (attribute_not_exists(#cancel_requested) OR #cancel_requested = :false))";

/// The condition under which attempt `:attempt` still owns the job.
const HOLDS_ATTEMPT: &str = "#status = :running AND #attempt = :attempt";

impl Update {
    /// The start of every write that ends a job: its status, when it ended, the retention that
    /// counts from then, and no lease.
    fn ended(status: Status, now: Millis, retention: Duration) -> Self {
        Update::default()
            .set(attr::STATUS, s(status.as_str()))
            .set(attr::FINISHED_AT, n(now.0))
            .set(attr::EXPIRES_AT, n(expires_at(now, retention)))
            .remove(attr::LEASE_EXPIRES_AT)
            .remove(attr::OPEN)
            // The announcement of this end is due now, in the same write: it is durable exactly
            // when the outcome is. Only a job with a webhook (and so a `notify` shard) enters the
            // notify-due index; on any other job the attribute is inert. A job ended again
            // after a redrive starts a new delivery record.
            .set(attr::NOTIFY_AT, n(now.0))
            .remove(attr::WEBHOOK_ATTEMPTS)
            .remove(attr::WEBHOOK_LAST_AT)
            .remove(attr::WEBHOOK_LAST_STATUS)
            .remove(attr::WEBHOOK_LAST_ERROR)
            .remove(attr::WEBHOOK_DELIVERED_AT)
            .remove(attr::WEBHOOK_GAVE_UP_AT)
            .remove(attr::ANNOUNCED)
    }
}

/// The error of a job its caller cancelled.
const CANCELLED_BY_CALLER: &str = "cancelled by the caller";

impl JobStore {
    pub fn new(client: Client, table: impl Into<String>) -> Self {
        JobStore {
            client,
            table: table.into(),
            retention: DEFAULT_RETENTION,
            publishes: false,
        }
    }

    /// Marks the jobs this store creates as published when they end: every job, once a
    /// deployment names a topic or a bus.
    pub fn publishing(mut self, publishes: bool) -> Self {
        self.publishes = publishes;
        self
    }

    /// The deployment's retention of finished records (`SLUICE_RETENTION_DAYS`).
    pub fn with_retention(mut self, retention: Duration) -> Self {
        self.retention = retention;
        self
    }

    pub fn from_sdk(aws: &aws_config::SdkConfig, table: impl Into<String>) -> Self {
        JobStore::new(Client::new(aws), table)
    }

    /// The store, with a client that measures this machine's clock against AWS's on every
    /// answer (see [`crate::clock`]).
    pub fn measuring(
        aws: &aws_config::SdkConfig,
        table: impl Into<String>,
        clock: &crate::clock::ServerClock,
    ) -> Self {
        let conf = aws_sdk_dynamodb::config::Builder::from(aws)
            .interceptor(clock.clone())
            .build();
        JobStore::new(Client::from_conf(conf), table)
    }

    /// Records a new job, and with it the caller's idempotency key if there is one, in one
    /// transaction: either both exist or neither does.
    pub async fn create(
        &self,
        job: &JobRecord,
        retention: Duration,
        idempotency: Option<(&str, &str)>,
    ) -> Result<Created, StoreError> {
        self.create_with_key(job, retention, idempotency, None)
            .await
    }

    /// [`JobStore::create`], where the key may already name `stale`, a job whose record is gone
    /// (its retention passed): a key lives as long as its job, and is then free for a new one.
    pub async fn create_with_key(
        &self,
        job: &JobRecord,
        retention: Duration,
        idempotency: Option<(&str, &str)>,
        stale: Option<&JobId>,
    ) -> Result<Created, StoreError> {
        // Until the job ends, its record outlives every delivery of its message.
        let expires = expires_at(job.submitted_at, crate::limits::while_unfinished(retention));
        let mut item = to_item(job);
        item.insert(attr::EXPIRES_AT.into(), n(expires));
        // The submit sent its message just before: the job is open, its message as old as it.
        item.insert(attr::OPEN.into(), s(open_shard(&job.id)));
        item.insert(attr::SENT_AT.into(), n(job.submitted_at.0));
        if self.publishes {
            item.insert(attr::PUBLISH.into(), AttributeValue::Bool(true));
            item.insert(attr::NOTIFY.into(), s(open_shard(&job.id)));
        }
        let Some((key_hash, request_hash)) = idempotency else {
            return match self
                .client
                .put_item()
                .table_name(&self.table)
                .set_item(Some(item))
                .condition_expression("attribute_not_exists(#id)")
                .expression_attribute_names("#id", attr::ID)
                .return_values_on_condition_check_failure(
                    ReturnValuesOnConditionCheckFailure::AllOld,
                )
                .send()
                .await
            {
                Ok(_) => Ok(Created::Created),
                // The id is new, so the record found is this call's own: an earlier try that was
                // applied but whose answer was lost, then retried by the SDK. The refusal
                // carries the record, so no read (which could fail in turn) is needed to know.
                Err(e) if is_conditional_failure(&e) => {
                    let found = e.as_service_error().and_then(|e| match e {
                        PutItemError::ConditionalCheckFailedException(c) => c.item(),
                        _ => None,
                    });
                    if found.is_some_and(is_buried) {
                        return Err(buried_error(&job.id));
                    }
                    let found = found.map(from_item).transpose()?;
                    match found {
                        Some(found)
                            if found.owner == job.owner
                                && found.submitted_at == job.submitted_at =>
                        {
                            Ok(Created::Created)
                        }
                        found => Err(StoreError::Conflict {
                            current: found.map(Box::new),
                        }),
                    }
                }
                // Every try failed, but one may have been applied with its answer lost: a record
                // found is this call's own, and its job will run, so it is accepted.
                Err(e) => match self.get(&job.id).await {
                    Ok(Some(found))
                        if found.owner == job.owner && found.submitted_at == job.submitted_at =>
                    {
                        Ok(Created::Created)
                    }
                    _ => Err(classify(e)),
                },
            };
        };
        let put_job = Put::builder()
            .table_name(&self.table)
            .set_item(Some(item))
            .condition_expression("attribute_not_exists(#id)")
            .expression_attribute_names("#id", attr::ID)
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .build()
            .map_err(|e| StoreError::Unavailable(Box::new(e)))?;
        let mut idem = HashMap::new();
        idem.insert(attr::ID.into(), s(idempotency_item_id(key_hash)));
        idem.insert(attr::JOB_ID.into(), s(job.id.to_string()));
        idem.insert(attr::OWNER.into(), s(job.owner.as_str()));
        idem.insert(attr::REQUEST_HASH.into(), s(request_hash));
        idem.insert(attr::EXPIRES_AT.into(), n(expires));
        let put_idem = Put::builder()
            .table_name(&self.table)
            .set_item(Some(idem))
            .expression_attribute_names("#id", attr::ID);
        let put_idem = match stale {
            None => put_idem.condition_expression("attribute_not_exists(#id)"),
            Some(stale) => put_idem
                .condition_expression("attribute_not_exists(#id) OR #job_id = :stale")
                .expression_attribute_names("#job_id", attr::JOB_ID)
                .expression_attribute_values(":stale", s(stale.to_string())),
        };
        let put_idem = put_idem
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .build()
            .map_err(|e| StoreError::Unavailable(Box::new(e)))?;
        let result = self
            .client
            .transact_write_items()
            .transact_items(TransactWriteItem::builder().put(put_job).build())
            .transact_items(TransactWriteItem::builder().put(put_idem).build())
            .send()
            .await;
        match result {
            Ok(_) => Ok(Created::Created),
            Err(err) => {
                let reasons = err
                    .as_service_error()
                    .and_then(|e| match e {
                        TransactWriteItemsError::TransactionCanceledException(c) => Some(c),
                        _ => None,
                    })
                    .map(|c| c.cancellation_reasons())
                    .unwrap_or_default();
                let refused = |i: usize| {
                    reasons
                        .get(i)
                        .filter(|r| r.code() == Some("ConditionalCheckFailed"))
                        .and_then(|r| r.item())
                };
                if let Some(found) = refused(1).and_then(idempotency_from_item) {
                    return Ok(Created::Existing(found));
                }
                if refused(0).is_some_and(is_buried) {
                    return Err(buried_error(&job.id));
                }
                Err(classify(err))
            }
        }
    }

    /// Records a new upload (the item `upload:<id>`), removed by TTL a day after it expires.
    pub async fn create_upload(&self, up: &UploadRecord) -> Result<(), StoreError> {
        let mut item = HashMap::new();
        item.insert(attr::ID.into(), s(upload_item_id(&up.id)));
        item.insert(attr::OWNER.into(), s(up.owner.as_str()));
        item.insert(attr::OBJECT_KEY.into(), s(up.key.as_str()));
        item.insert(attr::SIZE.into(), n(up.size));
        item.insert(attr::CONTENT_TYPE.into(), s(up.content_type.as_str()));
        item.insert(attr::CREATED_AT.into(), n(up.created_at.0));
        item.insert(attr::UPLOAD_EXPIRES_AT.into(), n(up.expires_at.0));
        item.insert(
            attr::EXPIRES_AT.into(),
            n(expires_at(up.expires_at, crate::upload::RECORD_GRACE)),
        );
        if let Some(m) = &up.multipart {
            item.insert(attr::MULTIPART.into(), s(m.as_str()));
        }
        if let Some(sum) = &up.sha256 {
            item.insert(attr::SHA256.into(), s(sum.as_str()));
        }
        self.client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item))
            .condition_expression("attribute_not_exists(#id)")
            .expression_attribute_names("#id", attr::ID)
            .send()
            .await
            .map_err(classify)?;
        Ok(())
    }

    /// The upload `id`, if recorded.
    pub async fn upload(&self, id: &UploadId) -> Result<Option<UploadRecord>, StoreError> {
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .key(attr::ID, s(upload_item_id(id)))
            .consistent_read(true)
            .send()
            .await
            .map_err(classify)?;
        out.item().map(|i| upload_from_item(id, i)).transpose()
    }

    /// Records that the upload's multipart upload was completed (at most once: a second
    /// completion keeps the first's time).
    pub async fn complete_upload(&self, id: &UploadId, now: Millis) -> Result<(), StoreError> {
        self.client
            .update_item()
            .table_name(&self.table)
            .key(attr::ID, s(upload_item_id(id)))
            .update_expression("SET #completed_at = if_not_exists(#completed_at, :now)")
            .condition_expression("attribute_exists(#id)")
            .expression_attribute_names("#completed_at", attr::COMPLETED_AT)
            .expression_attribute_names("#id", attr::ID)
            .expression_attribute_values(":now", n(now.0))
            .send()
            .await
            .map_err(classify)?;
        Ok(())
    }

    /// The job an idempotency key points at, if any.
    pub async fn find_idempotent(
        &self,
        key_hash: &str,
    ) -> Result<Option<IdempotencyRecord>, StoreError> {
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .key(attr::ID, s(idempotency_item_id(key_hash)))
            .consistent_read(true)
            .send()
            .await
            .map_err(classify)?;
        Ok(out.item().and_then(idempotency_from_item))
    }

    /// Takes a turn that lasts `interval`: `true` for the one caller whose conditional write
    /// wins, `false` while another caller's turn lasts. The marker item expires by TTL.
    pub async fn take_turn(
        &self,
        key: &str,
        now: Millis,
        interval: Duration,
    ) -> Result<bool, StoreError> {
        let until = now.plus(interval);
        let result = self
            .client
            .put_item()
            .table_name(&self.table)
            .item(attr::ID, s(key))
            .item("until", n(until.0))
            .item(
                attr::EXPIRES_AT,
                n(expires_at(until, Duration::from_secs(3600))),
            )
            .condition_expression("attribute_not_exists(#id) OR #until <= :now")
            .expression_attribute_names("#id", attr::ID)
            .expression_attribute_names("#until", "until")
            .expression_attribute_values(":now", n(now.0))
            .send()
            .await;
        match result {
            Ok(_) => Ok(true),
            Err(e) if is_conditional_failure(&e) => Ok(false),
            Err(e) => Err(classify(e)),
        }
    }

    /// Gives back a turn taken with [`JobStore::take_turn`] before it runs out, if it is still
    /// the one taken (`until` as it was written): it ends now. A turn that ran out and was taken
    /// by another is left alone. The item stays until its TTL.
    pub async fn release_turn(&self, key: &str, until: Millis) -> Result<(), StoreError> {
        self.shorten_turn(key, until, Millis::now()).await
    }

    /// Makes a turn taken with [`JobStore::take_turn`] end at `new_until` instead, if it is
    /// still the one taken (`until` as it was written).
    pub async fn shorten_turn(
        &self,
        key: &str,
        until: Millis,
        new_until: Millis,
    ) -> Result<(), StoreError> {
        let result = self
            .client
            .update_item()
            .table_name(&self.table)
            .key(attr::ID, s(key))
            .update_expression("SET #until = :new")
            .condition_expression("#until = :until")
            .expression_attribute_names("#until", "until")
            .expression_attribute_values(":until", n(until.0))
            .expression_attribute_values(":new", n(new_until.0))
            .send()
            .await;
        match result {
            Ok(_) => Ok(()),
            Err(e)
                if e.as_service_error()
                    .is_some_and(|e| e.is_conditional_check_failed_exception()) =>
            {
                Ok(())
            }
            Err(e) => Err(classify(e)),
        }
    }

    /// Reads a job with a strongly consistent read.
    pub async fn get(&self, id: &JobId) -> Result<Option<JobRecord>, StoreError> {
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .key(attr::ID, s(id.to_string()))
            .consistent_read(true)
            .send()
            .await
            .map_err(classify)?;
        out.item().and_then(record_item).map(from_item).transpose()
    }

    /// Reads many jobs at once (strongly consistent), in requests of up to 100. A job without a
    /// record is absent from the answer; one whose record cannot be read maps to the reason.
    pub async fn get_many(
        &self,
        ids: &[JobId],
    ) -> Result<HashMap<JobId, Result<JobRecord, String>>, StoreError> {
        let mut found = HashMap::new();
        let mut unique: Vec<&JobId> = ids.iter().collect();
        unique.sort();
        unique.dedup();
        for chunk in unique.chunks(100) {
            let keys: Vec<Item> = chunk
                .iter()
                .map(|id| HashMap::from([(attr::ID.to_owned(), s(id.to_string()))]))
                .collect();
            let mut request = Some(
                KeysAndAttributes::builder()
                    .set_keys(Some(keys))
                    .consistent_read(true)
                    .build()
                    .map_err(|e| StoreError::Unavailable(Box::new(e)))?,
            );
            // DynamoDB may leave some keys unprocessed under load: ask again for those, with a
            // pause that grows, as its documentation asks.
            let mut pause = Duration::from_millis(50);
            while let Some(req) = request.take() {
                let out = self
                    .client
                    .batch_get_item()
                    .request_items(&self.table, req)
                    .send()
                    .await
                    .map_err(classify)?;
                for item in out
                    .responses()
                    .and_then(|r| r.get(&self.table))
                    .into_iter()
                    .flatten()
                {
                    let Some(item) = record_item(item) else {
                        continue;
                    };
                    let id = item.get(attr::ID).and_then(|v| v.as_s().ok());
                    let Some(id) = id.and_then(|i| i.parse::<JobId>().ok()) else {
                        continue;
                    };
                    let record = from_item(item).map_err(|e| match e {
                        StoreError::Corrupt { reason, .. } => reason,
                        other => other.to_string(),
                    });
                    found.insert(id, record);
                }
                request = out
                    .unprocessed_keys()
                    .and_then(|u| u.get(&self.table))
                    .filter(|k| !k.keys().is_empty())
                    .cloned();
                if request.is_some() {
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_secs(2));
                }
            }
        }
        Ok(found)
    }

    /// Takes `id` for good when its message is deleted before any record came (an orphan):
    /// a submit still writing that record then fails, and answers its caller an error, instead
    /// of leaving a job no message will ever run. `Conflict` carries the record that came first.
    pub async fn bury(&self, id: &JobId, now: Millis) -> Result<(), StoreError> {
        let result = self
            .client
            .put_item()
            .table_name(&self.table)
            .item(attr::ID, s(id.to_string()))
            .item(attr::BURIED, n(now.0))
            .item(attr::EXPIRES_AT, n(expires_at(now, BURIAL)))
            .condition_expression("attribute_not_exists(#id)")
            .expression_attribute_names("#id", attr::ID)
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .send()
            .await;
        match result {
            Ok(_) => Ok(()),
            Err(e) if is_conditional_failure(&e) => {
                let found = e.as_service_error().and_then(|e| match e {
                    PutItemError::ConditionalCheckFailedException(c) => c.item(),
                    _ => None,
                });
                match found {
                    // Buried already (by another worker, or this call's own try whose answer
                    // was lost).
                    None => Ok(()),
                    Some(item) if is_buried(item) => Ok(()),
                    Some(item) => Err(StoreError::Conflict {
                        current: Some(Box::new(from_item(item)?)),
                    }),
                }
            }
            Err(e) => Err(classify(e)),
        }
    }

    /// Records that a message for the job was sent again now (a worker's `send_again`, a
    /// redrive): the sweeper counts the message's retention from here. A job that has ended is
    /// left alone.
    pub async fn mark_sent(&self, id: &JobId, now: Millis) -> Result<(), StoreError> {
        let update = Update::default()
            .set(attr::SENT_AT, n(now.0))
            .when("attribute_exists(#open)");
        self.update_unless_moved(id, update).await
    }

    /// One page of the open jobs in `shard` whose message was last sent before `cutoff`, oldest
    /// first, with where the next page starts.
    pub async fn open_sent_before(
        &self,
        shard: &str,
        cutoff: Millis,
        limit: i32,
        start: Option<Item>,
    ) -> Result<(Vec<(JobId, Millis)>, Option<Item>), StoreError> {
        let keys = (attr::OPEN, attr::SENT_AT);
        self.index_page(OPEN_INDEX, keys, shard, "<", cutoff, limit, start)
            .await
    }

    /// One page of the open jobs in `shard` whose deadline is at or before `now`, earliest
    /// first, with where the next page starts.
    pub async fn open_deadline_before(
        &self,
        shard: &str,
        now: Millis,
        limit: i32,
        start: Option<Item>,
    ) -> Result<(Vec<(JobId, Millis)>, Option<Item>), StoreError> {
        self.index_page(
            DEADLINE_INDEX,
            DEADLINE_INDEX_KEYS,
            shard,
            "<=",
            now,
            limit,
            start,
        )
        .await
    }

    /// The DynamoDB client and the table, for the items beside the job records that live in the
    /// same table ([`crate::pipeline`]).
    pub fn client_and_table(&self) -> (&Client, &str) {
        (&self.client, &self.table)
    }

    /// How long a finished job's record is kept.
    pub fn retention(&self) -> Duration {
        self.retention
    }

    /// One page of a sparse index keyed by (`keys.0` = `shard`, `keys.1` a time in ms), the
    /// items whose time is `op` (`<` or `<=`) `bound`, earliest first: each item's job and time,
    /// and where the next page starts.
    #[allow(clippy::too_many_arguments)]
    async fn index_page(
        &self,
        index: &str,
        keys: (&str, &str),
        shard: &str,
        op: &str,
        bound: Millis,
        limit: i32,
        start: Option<Item>,
    ) -> Result<(Vec<(JobId, Millis)>, Option<Item>), StoreError> {
        let out = self
            .client
            .query()
            .table_name(&self.table)
            .index_name(index)
            .key_condition_expression(format!("#shard = :shard AND #at {op} :bound"))
            .expression_attribute_names("#shard", keys.0)
            .expression_attribute_names("#at", keys.1)
            .expression_attribute_values(":shard", s(shard))
            .expression_attribute_values(":bound", n(bound.0))
            .limit(limit)
            .set_exclusive_start_key(start)
            .send()
            .await
            .map_err(classify)?;
        let rows = out
            .items()
            .iter()
            .filter_map(|item| {
                let id = item.get(attr::ID)?.as_s().ok()?.parse::<JobId>().ok()?;
                let at = item.get(keys.1)?.as_n().ok()?.parse::<i64>().ok()?;
                Some((id, Millis(at)))
            })
            .collect();
        Ok((rows, out.last_evaluated_key().cloned()))
    }

    /// Ends a job whose message must have left the queue: its last send (`sent_at`, as the
    /// sweeper saw it) is older than the queue keeps a message, and it runs nowhere (queued, or
    /// running on a lapsed lease). A job that moved meanwhile is left alone (`Conflict`).
    pub async fn end_unsent(
        &self,
        id: &JobId,
        end: Status,
        error: &str,
        sent_at: Millis,
        now: Millis,
    ) -> Result<JobRecord, StoreError> {
        let update = Update::ended(end, now, self.retention)
            .set(attr::ERROR, s(error))
            .when(
                "#sent_at = :sent AND (#status = :queued \
                 OR (#status = :running AND #lease_expires_at <= :now))",
            )
            .bind("sent", n(sent_at.0))
            .bind("queued", s(Status::Queued.as_str()))
            .bind("running", s(Status::Running.as_str()))
            .bind("now", n(now.0));
        self.update(id, update).await
    }

    /// Claims the job for a new attempt by `worker` until `now + lease`. Returns the record as
    /// claimed (its `attempt` is this attempt's fencing token), or `Conflict` with the record
    /// as it was.
    pub async fn claim(
        &self,
        id: &JobId,
        worker: &str,
        now: Millis,
        lease: Duration,
    ) -> Result<JobRecord, StoreError> {
        let token = ulid::Ulid::new().to_string();
        let update = Update::default()
            .set(attr::STATUS, s(Status::Running.as_str()))
            .set(attr::LEASE_EXPIRES_AT, n(now.plus(lease).0))
            .set(attr::WORKER_ID, s(worker))
            .set(attr::CLAIM_TOKEN, s(token.as_str()))
            .set(
                attr::EXPIRES_AT,
                n(expires_at(
                    now,
                    crate::limits::while_unfinished(self.retention),
                )),
            )
            .set_if_absent(attr::STARTED_AT, n(now.0))
            // A new attempt starts with no progress: an earlier one's would mislead.
            .remove(attr::PROGRESS_FRACTION)
            .remove(attr::PROGRESS_MESSAGE)
            .increment(attr::ATTEMPT)
            .when(CLAIMABLE)
            .bind("queued", s(Status::Queued.as_str()))
            .bind("running", s(Status::Running.as_str()))
            .bind("now", n(now.0))
            .bind("zero", n(0))
            .bind("false", AttributeValue::Bool(false));
        match self.update(id, update).await {
            // A try that was applied but whose answer was lost, met by the SDK's retry of the
            // same request: the record holds this very claim (its token). It is this call's
            // own, not a rival's running attempt.
            Err(StoreError::Conflict { current: Some(cur) })
                if cur.status == Status::Running
                    && cur.claim_token.as_deref() == Some(token.as_str()) =>
            {
                Ok(*cur)
            }
            // Every try failed, but one may have been applied with its answer lost: the record
            // then holds this claim, and the attempt it counted is this call's to run (or to
            // hand back), not one lost to a worker that vanished. A few reads find out.
            Err(e) if e.is_retryable() => {
                for pause in [50, 200, 500] {
                    tokio::time::sleep(Duration::from_millis(pause)).await;
                    match self.get(id).await {
                        Ok(Some(cur))
                            if cur.status == Status::Running
                                && cur.claim_token.as_deref() == Some(token.as_str()) =>
                        {
                            return Ok(cur);
                        }
                        Ok(_) => return Err(e),
                        Err(_) => continue,
                    }
                }
                Err(e)
            }
            other => other,
        }
    }

    /// Extends attempt `attempt`'s lease to `now + lease`, and stores the handler's latest
    /// progress report in the same write when there is a new one. Returns the record, whose
    /// `cancel_requested` tells the worker whether to stop; `Conflict` means the attempt no
    /// longer owns the job.
    pub async fn heartbeat(
        &self,
        id: &JobId,
        attempt: u32,
        now: Millis,
        lease: Duration,
        progress: Option<&Progress>,
    ) -> Result<JobRecord, StoreError> {
        let until = now.plus(lease);
        let mut update = Update::default().set(attr::LEASE_EXPIRES_AT, n(until.0));
        if let Some(p) = progress {
            update = match p.fraction {
                Some(f) => update.set(attr::PROGRESS_FRACTION, n(fraction_number(f))),
                None => update.remove(attr::PROGRESS_FRACTION),
            };
            update = match &p.message {
                Some(m) => update.set(attr::PROGRESS_MESSAGE, s(m.as_str())),
                None => update.remove(attr::PROGRESS_MESSAGE),
            };
        }
        // A beat that reaches the table after a later one (held on the way) never shortens the
        // lease that one set: a rival would take the job over while its holder runs it.
        let update = update
            .when(
                "#status = :running AND #attempt = :attempt \
                 AND (attribute_not_exists(#lease_expires_at) OR #lease_expires_at <= :until)",
            )
            .bind("running", s(Status::Running.as_str()))
            .bind("attempt", n(attempt))
            .bind("until", n(until.0));
        match self.update(id, update).await {
            // A later beat of this very attempt already renewed the lease further: the attempt
            // holds the job, and its lease stands.
            Err(StoreError::Conflict { current: Some(cur) })
                if cur.status == Status::Running
                    && cur.attempt == attempt
                    && cur.lease_expires_at.is_some_and(|l| l > until) =>
            {
                Ok(*cur)
            }
            other => other,
        }
    }

    /// Ends attempt `attempt` with a terminal status, a result or an error.
    pub async fn finish(
        &self,
        id: &JobId,
        attempt: u32,
        end: Finish,
        now: Millis,
        retention: Duration,
    ) -> Result<JobRecord, StoreError> {
        let status = end.status();
        let mut update = Update::ended(status, now, retention)
            .when(HOLDS_ATTEMPT)
            .bind("running", s(Status::Running.as_str()))
            .bind("attempt", n(attempt));
        update = match end {
            Finish::Succeeded { result } => update.set(attr::RESULT, s(result)).remove(attr::ERROR),
            Finish::Produced(p) => {
                update = match p.result {
                    ProducedResult::Inline(r) => update.set(attr::RESULT, s(r)),
                    ProducedResult::Stored(o) => update
                        .set(attr::RESULT_KEY, s(o.key))
                        .set(attr::RESULT_SIZE, n(o.size))
                        .set(attr::RESULT_CONTENT_TYPE, s(o.content_type)),
                };
                if !p.outputs.is_empty() {
                    update = update.set(attr::OUTPUTS, outputs_value(&p.outputs));
                }
                update.remove(attr::ERROR)
            }
            Finish::Failed { error } => {
                update.set(attr::ERROR, s(crate::job::truncate_error(error)))
            }
            Finish::Cancelled => update.set(attr::ERROR, s(CANCELLED_BY_CALLER)),
        };
        self.update(id, update).await
    }

    /// Hands attempt `attempt` back: the job is `QUEUED` again. `error` says why (a retryable
    /// failure); a release on shutdown has none and does not count against the attempts.
    pub async fn requeue(
        &self,
        id: &JobId,
        attempt: u32,
        error: Option<String>,
    ) -> Result<JobRecord, StoreError> {
        let until = expires_at(
            Millis::now(),
            crate::limits::while_unfinished(self.retention),
        );
        let mut update = Update::default()
            .set(attr::STATUS, s(Status::Queued.as_str()))
            .set(attr::EXPIRES_AT, n(until))
            .remove(attr::LEASE_EXPIRES_AT)
            .remove(attr::WORKER_ID)
            .when(HOLDS_ATTEMPT)
            .bind("running", s(Status::Running.as_str()))
            .bind("attempt", n(attempt));
        update = match error {
            Some(e) => update.set(attr::ERROR, s(crate::job::truncate_error(e))),
            None => update.increment(attr::RELEASES),
        };
        self.update(id, update).await
    }

    /// Records that a queued job's deadline passed before it started.
    pub async fn expire(
        &self,
        id: &JobId,
        now: Millis,
        retention: Duration,
    ) -> Result<JobRecord, StoreError> {
        let update = Update::ended(Status::Expired, now, retention)
            .set(attr::ERROR, s("the deadline passed before the job started"))
            .when("#status = :queued AND #deadline <= :now AND #attempt = :zero")
            .bind("queued", s(Status::Queued.as_str()))
            .bind("now", n(now.0))
            .bind("zero", n(0));
        self.update(id, update).await
    }

    /// The caller's cancel: a queued job is `CANCELLED` at once; a running one is asked to
    /// stop (its worker cancels it at its next heartbeat). `Conflict` carries the record when
    /// the job is neither (or another caller's, or missing: `current` is then `None` or
    /// another owner's record).
    pub async fn cancel(
        &self,
        id: &JobId,
        owner: &Owner,
        now: Millis,
        retention: Duration,
    ) -> Result<JobRecord, StoreError> {
        let queued = Update::ended(Status::Cancelled, now, retention)
            .set(attr::ERROR, s(CANCELLED_BY_CALLER))
            .when(
                "#owner = :owner AND #status = :queued \
                   AND (attribute_not_exists(#deadline) OR #deadline > :now OR #attempt > :zero)",
            )
            .bind("owner", s(owner.as_str()))
            .bind("queued", s(Status::Queued.as_str()))
            .bind("now", n(now.0))
            .bind("zero", n(0));
        match self.update(id, queued).await {
            Err(StoreError::Conflict { current: Some(job) })
                if job.owner == *owner && job.status == Status::Running =>
            {
                let running = Update::default()
                    .set(attr::CANCEL_REQUESTED, AttributeValue::Bool(true))
                    .when("#owner = :owner AND #status = :running")
                    .bind("owner", s(owner.as_str()))
                    .bind("running", s(Status::Running.as_str()));
                self.update(id, running).await
            }
            other => other,
        }
    }

    /// Records `CANCELLED` for a job whose cancel was asked while an attempt ran, when that
    /// attempt ended without honouring it: its worker was lost (the lease expired), or it went
    /// back to the queue (a retry or a release).
    pub async fn cancel_abandoned(
        &self,
        id: &JobId,
        now: Millis,
        retention: Duration,
    ) -> Result<JobRecord, StoreError> {
        let update = Update::ended(Status::Cancelled, now, retention)
            .set(attr::ERROR, s(CANCELLED_BY_CALLER))
            .when(
                "#cancel_requested = :true AND (#status = :queued \
                 OR (#status = :running AND #lease_expires_at <= :now))",
            )
            .bind("queued", s(Status::Queued.as_str()))
            .bind("running", s(Status::Running.as_str()))
            .bind("true", AttributeValue::Bool(true))
            .bind("now", n(now.0));
        self.update(id, update).await
    }

    /// Ends `FAILED` a job whose message reached the dead-letter queue after `deliveries`, when
    /// it has not ended and runs nowhere (queued, or running on a lapsed lease).
    pub async fn fail_dead_lettered(
        &self,
        id: &JobId,
        deliveries: u32,
        now: Millis,
        retention: Duration,
    ) -> Result<JobRecord, StoreError> {
        let update = Update::ended(Status::Failed, now, retention)
            .set(
                attr::ERROR,
                s(crate::deadletter::dead_letter_error(deliveries)),
            )
            .set(attr::DEAD_LETTERED, AttributeValue::Bool(true))
            .when("#status = :queued OR (#status = :running AND #lease_expires_at <= :now)")
            .bind("queued", s(Status::Queued.as_str()))
            .bind("running", s(Status::Running.as_str()))
            .bind("now", n(now.0));
        self.update(id, update).await
    }

    /// Records that the reconciler sends a job with attempts left that runs nowhere (queued, or
    /// running on a lapsed lease) back to the jobs queue (its message ran out of deliveries to
    /// faults of the machinery), at most [`crate::deadletter::MAX_RETURNS`] times;
    /// `seen_attempt` and `seen_returns` are the record as judged, and a record that moved since
    /// is left alone (`Conflict`).
    pub async fn return_from_dlq(
        &self,
        id: &JobId,
        seen_attempt: u32,
        seen_returns: u32,
        now: Millis,
    ) -> Result<JobRecord, StoreError> {
        let update = Update::default()
            .set(attr::SENT_AT, n(now.0))
            .increment(attr::DLQ_RETURNS);
        let nowhere = "(#status = :queued OR (#status = :running AND #lease_expires_at <= :now)) \
                       AND #attempt = :seen";
        let update = if seen_returns == 0 {
            update.when(&format!("{nowhere} AND attribute_not_exists(#dlq_returns)"))
        } else {
            update
                .when(&format!("{nowhere} AND #dlq_returns = :returns"))
                .bind("returns", n(seen_returns))
        };
        let update = update
            .bind("queued", s(Status::Queued.as_str()))
            .bind("running", s(Status::Running.as_str()))
            .bind("now", n(now.0))
            .bind("seen", n(seen_attempt));
        self.update(id, update).await
    }

    /// An operator's redrive: a job the dead-letter reconciler ended `FAILED` is queued again
    /// (the one way out of a terminal status, for that case only), its attempts kept.
    ///
    /// Its attempts start afresh (`releases` catches up with `attempt`), or a job that reached
    /// the dead-letter queue by using up its attempts would fail again at its next claim.
    /// `seen_attempt` is the attempt the operator saw: a record that moved since is left alone.
    pub async fn revive_dead_lettered(
        &self,
        id: &JobId,
        seen_attempt: u32,
        now: Millis,
    ) -> Result<JobRecord, StoreError> {
        let update = Update::default()
            .set(attr::STATUS, s(Status::Queued.as_str()))
            .set(attr::RELEASES, n(seen_attempt))
            .set(
                attr::EXPIRES_AT,
                n(expires_at(
                    now,
                    crate::limits::while_unfinished(self.retention),
                )),
            )
            .set(attr::OPEN, s(open_shard(id)))
            .set(attr::SENT_AT, n(now.0))
            .set(attr::REDRIVEN_AT, n(now.0))
            .increment(attr::REDRIVES)
            .remove(attr::FINISHED_AT)
            .remove(attr::DEAD_LETTERED)
            .remove(attr::ERROR)
            // The FAILED it announced no longer stands: the job's next end is announced instead.
            .remove(attr::NOTIFY_AT)
            .when("#status = :failed AND #dead_lettered = :true AND #attempt = :seen")
            .bind("failed", s(Status::Failed.as_str()))
            .bind("true", AttributeValue::Bool(true))
            .bind("seen", n(seen_attempt));
        self.update(id, update).await
    }

    /// One page of the jobs in `shard` whose webhook announcement is due at `now`, earliest
    /// first, each with the `notify_at` it is due at, and where the next page starts.
    pub async fn notify_due(
        &self,
        shard: &str,
        now: Millis,
        limit: i32,
        start: Option<Item>,
    ) -> Result<(Vec<(JobId, Millis)>, Option<Item>), StoreError> {
        let keys = (attr::NOTIFY, attr::NOTIFY_AT);
        self.index_page(NOTIFY_INDEX, keys, shard, "<=", now, limit, start)
            .await
    }

    /// Takes the delivery attempt due at `due_at` (the `notify_at` the deliverer read): the
    /// announcement is next due at `lease_until`, when another deliverer may try should this one
    /// die mid-attempt, and the attempt is counted. One deliverer wins; the others get
    /// `Conflict`. Only a terminal job with a webhook or a sink is taken.
    pub async fn take_delivery(
        &self,
        id: &JobId,
        due_at: Millis,
        lease_until: Millis,
        now: Millis,
    ) -> Result<JobRecord, StoreError> {
        let update = Update::default()
            .set(attr::NOTIFY_AT, n(lease_until.0))
            .set(attr::WEBHOOK_LAST_AT, n(now.0))
            .increment(attr::WEBHOOK_ATTEMPTS)
            .when(
                "#notify_at = :due \
                 AND (attribute_exists(#webhook) OR attribute_exists(#sink_base) OR attribute_exists(#publish)) \
                 AND #status IN (:succeeded, :failed, :cancelled, :expired)",
            )
            .bind("due", n(due_at.0))
            .bind("succeeded", s(Status::Succeeded.as_str()))
            .bind("failed", s(Status::Failed.as_str()))
            .bind("cancelled", s(Status::Cancelled.as_str()))
            .bind("expired", s(Status::Expired.as_str()));
        self.update(id, update).await
    }

    /// Records how the attempt taken until `lease_until` ended, if the announcement is still
    /// the one taken (`Conflict` otherwise: the job was redriven, or the lease ran out and
    /// another deliverer took over).
    pub async fn record_delivery(
        &self,
        id: &JobId,
        lease_until: Millis,
        end: &DeliveryEnd,
        now: Millis,
    ) -> Result<JobRecord, StoreError> {
        let with_answer = |u: Update, status: Option<u16>| match status {
            Some(code) => u.set(attr::WEBHOOK_LAST_STATUS, n(code)),
            None => u.remove(attr::WEBHOOK_LAST_STATUS),
        };
        let update = match end {
            DeliveryEnd::Delivered { status } => Update::default()
                .remove(attr::NOTIFY_AT)
                .set(attr::WEBHOOK_DELIVERED_AT, n(now.0))
                .set(attr::WEBHOOK_LAST_STATUS, n(*status))
                .remove(attr::WEBHOOK_LAST_ERROR),
            DeliveryEnd::Retry {
                status,
                error,
                next_at,
            } => with_answer(
                Update::default()
                    .set(attr::NOTIFY_AT, n(next_at.0))
                    .set(attr::WEBHOOK_LAST_ERROR, s(error.as_str()))
                    // The record is the outbox: it outlives the next attempt by the retention
                    // (a retention shorter than the schedule would delete it under a retry).
                    .set(attr::EXPIRES_AT, n(expires_at(*next_at, self.retention))),
                *status,
            ),
            DeliveryEnd::GiveUp { status, error } => with_answer(
                Update::default()
                    .remove(attr::NOTIFY_AT)
                    .set(attr::WEBHOOK_GAVE_UP_AT, n(now.0))
                    .set(attr::WEBHOOK_LAST_ERROR, s(error.as_str())),
                *status,
            ),
        };
        let update = update
            .when("#notify_at = :lease")
            .bind("lease", n(lease_until.0));
        self.update(id, update).await
    }

    /// Records `target` of the announcement taken until `lease_until` done, so an attempt made
    /// again skips it; a webhook done is also recorded delivered (its `status`), or given up.
    pub async fn announced(
        &self,
        id: &JobId,
        lease_until: Millis,
        target: &str,
        webhook: Option<&DeliveryEnd>,
        now: Millis,
    ) -> Result<(), StoreError> {
        let mut update = Update::default().add_to_set(attr::ANNOUNCED, target);
        match webhook {
            Some(DeliveryEnd::Delivered { status }) => {
                update = update
                    .set(attr::WEBHOOK_DELIVERED_AT, n(now.0))
                    .set(attr::WEBHOOK_LAST_STATUS, n(*status))
            }
            Some(DeliveryEnd::GiveUp { status, .. }) => {
                update = update.set(attr::WEBHOOK_GAVE_UP_AT, n(now.0));
                if let Some(code) = status {
                    update = update.set(attr::WEBHOOK_LAST_STATUS, n(*code));
                }
            }
            Some(DeliveryEnd::Retry { .. }) | None => {}
        }
        let update = update
            .when("#notify_at = :lease")
            .bind("lease", n(lease_until.0));
        self.update(id, update).await.map(|_| ())
    }

    /// Takes a job out of the notify-due index without an attempt: it has no announcement to
    /// make (it is not in a terminal state). Left alone when `notify_at` moved meanwhile.
    pub async fn drop_delivery(&self, id: &JobId, due_at: Millis) -> Result<(), StoreError> {
        let update = Update::default()
            .remove(attr::NOTIFY_AT)
            .when("#notify_at = :due")
            .bind("due", n(due_at.0));
        self.update_unless_moved(id, update).await
    }

    /// The owner's webhook signing secret (the item `secret_item_id(owner_hash)`), made from
    /// `fresh` if the owner has none yet: one write, so concurrent first uses agree on one.
    pub async fn webhook_secret(
        &self,
        owner_hash: &str,
        owner: &Owner,
        fresh: &str,
        now: Millis,
    ) -> Result<StoredSecret, StoreError> {
        let out = self
            .client
            .update_item()
            .table_name(&self.table)
            .key(attr::ID, s(secret_item_id(owner_hash)))
            .update_expression(
                "SET #secret = if_not_exists(#secret, :fresh), \
                 #created_at = if_not_exists(#created_at, :now), #owner = :owner",
            )
            .expression_attribute_names("#secret", attr::SECRET)
            .expression_attribute_names("#created_at", attr::CREATED_AT)
            .expression_attribute_names("#owner", attr::OWNER)
            .expression_attribute_values(":fresh", s(fresh))
            .expression_attribute_values(":now", n(now.0))
            .expression_attribute_values(":owner", s(owner.as_str()))
            .return_values(ReturnValue::AllNew)
            .send()
            .await
            .map_err(classify)?;
        secret_from_item(owner_hash, out.attributes())
    }

    /// Replaces the owner's secret `seen` (as read) with `fresh`; the one replaced still signs
    /// webhooks until `overlap_until`. `Conflict` when the secret is no longer `seen` (a
    /// concurrent rotation won).
    pub async fn rotate_webhook_secret(
        &self,
        owner_hash: &str,
        seen: &str,
        fresh: &str,
        now: Millis,
        overlap_until: Millis,
    ) -> Result<StoredSecret, StoreError> {
        let out = self
            .client
            .update_item()
            .table_name(&self.table)
            .key(attr::ID, s(secret_item_id(owner_hash)))
            .update_expression(
                "SET #secret = :fresh, #previous_secret = :seen, \
                 #previous_until = :until, #rotated_at = :now",
            )
            .condition_expression("#secret = :seen")
            .expression_attribute_names("#secret", attr::SECRET)
            .expression_attribute_names("#previous_secret", attr::PREVIOUS_SECRET)
            .expression_attribute_names("#previous_until", attr::PREVIOUS_UNTIL)
            .expression_attribute_names("#rotated_at", attr::ROTATED_AT)
            .expression_attribute_values(":fresh", s(fresh))
            .expression_attribute_values(":seen", s(seen))
            .expression_attribute_values(":until", n(overlap_until.0))
            .expression_attribute_values(":now", n(now.0))
            .return_values(ReturnValue::AllNew)
            .send()
            .await;
        match out {
            Ok(out) => secret_from_item(owner_hash, out.attributes()),
            Err(e)
                if e.as_service_error()
                    .is_some_and(|e| e.is_conditional_check_failed_exception()) =>
            {
                Err(StoreError::Conflict { current: None })
            }
            Err(e) => Err(classify(e)),
        }
    }

    /// [`Self::update`] for a write that has nothing to do once the record moved on (its
    /// condition refused): that is no error.
    async fn update_unless_moved(&self, id: &JobId, u: Update) -> Result<(), StoreError> {
        match self.update(id, u).await {
            Ok(_) | Err(StoreError::Conflict { .. }) => Ok(()),
            Err(e) => Err(e),
        }
    }

    async fn update(&self, id: &JobId, u: Update) -> Result<JobRecord, StoreError> {
        let mut names = u.names.clone();
        names.insert("#id".into(), attr::ID.into());
        let result = self
            .client
            .update_item()
            .table_name(&self.table)
            .key(attr::ID, s(id.to_string()))
            .update_expression(u.expression())
            .condition_expression(format!("attribute_exists(#id) AND ({})", u.condition))
            .set_expression_attribute_names(Some(names))
            .set_expression_attribute_values(Some(u.values))
            .return_values(ReturnValue::AllNew)
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .send()
            .await;
        match result {
            Ok(out) => match out.attributes() {
                Some(item) => from_item(item),
                None => Err(StoreError::Corrupt {
                    id: id.to_string(),
                    reason: "update returned no attributes".into(),
                }),
            },
            Err(err) => {
                if let Some(UpdateItemError::ConditionalCheckFailedException(e)) =
                    err.as_service_error()
                {
                    let current = e
                        .item()
                        .and_then(record_item)
                        .map(from_item)
                        .transpose()?
                        .map(Box::new);
                    return Err(StoreError::Conflict { current });
                }
                Err(classify(err))
            }
        }
    }
}

/// How an attempt ends the job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Finish {
    /// `result` is the handler's output as JSON text.
    Succeeded {
        result: String,
    },
    /// The handler's output, with what of it the payload bucket holds: a result too large for
    /// the record, and the files the handler wrote.
    Produced(Produced),
    Failed {
        error: String,
    },
    Cancelled,
}

impl Finish {
    /// The status it ends the job with.
    pub fn status(&self) -> Status {
        match self {
            Finish::Succeeded { .. } | Finish::Produced(_) => Status::Succeeded,
            Finish::Failed { .. } => Status::Failed,
            Finish::Cancelled => Status::Cancelled,
        }
    }
}

/// A successful attempt's output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Produced {
    pub result: ProducedResult,
    pub outputs: Vec<OutputFile>,
}

/// Where a successful attempt's result is kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProducedResult {
    /// In the record, as JSON text.
    Inline(String),
    /// In the payload bucket.
    Stored(StoredObject),
}

fn outputs_value(outputs: &[OutputFile]) -> AttributeValue {
    AttributeValue::L(
        outputs
            .iter()
            .map(|f| {
                AttributeValue::M(
                    [
                        ("name", s(f.name.as_str())),
                        ("key", s(f.object.key.as_str())),
                        ("size", n(f.object.size)),
                        ("content_type", s(f.object.content_type.as_str())),
                    ]
                    .into_iter()
                    .map(|(k, v)| (k.to_owned(), v))
                    .collect(),
                )
            })
            .collect(),
    )
}

fn outputs_of(v: &AttributeValue) -> Option<Vec<OutputFile>> {
    v.as_l()
        .ok()?
        .iter()
        .map(|f| {
            let m = f.as_m().ok()?;
            let text = |k: &str| m.get(k).and_then(|v| v.as_s().ok()).cloned();
            Some(OutputFile {
                name: text("name")?,
                object: StoredObject {
                    key: text("key")?,
                    size: m.get("size")?.as_n().ok()?.parse().ok()?,
                    content_type: text("content_type")?,
                },
            })
        })
        .collect()
}

fn is_conditional_failure<R>(
    e: &SdkError<aws_sdk_dynamodb::operation::put_item::PutItemError, R>,
) -> bool {
    e.as_service_error()
        .is_some_and(|e| e.is_conditional_check_failed_exception())
}

fn expires_at(from: Millis, retention: Duration) -> i64 {
    from.plus(retention).as_epoch_seconds()
}

/// Whether an item is a buried id's ([`JobStore::bury`]) rather than a job's.
fn is_buried(item: &Item) -> bool {
    item.contains_key(attr::BURIED)
}

/// The item as a job's record: `None` for a buried id, which no job has.
fn record_item(item: &Item) -> Option<&Item> {
    (!is_buried(item)).then_some(item)
}

fn buried_error(id: &JobId) -> StoreError {
    StoreError::Unavailable(
        format!(
            "job {id}'s message was deleted as an orphan before its record was written; \
             nothing of it runs, and a retry makes a new job"
        )
        .into(),
    )
}

fn secret_from_item(owner_hash: &str, item: Option<&Item>) -> Result<StoredSecret, StoreError> {
    let corrupt = |reason: &str| StoreError::Corrupt {
        id: secret_item_id(owner_hash),
        reason: reason.into(),
    };
    let item = item.ok_or_else(|| corrupt("the write returned no attributes"))?;
    let text = |k: &str| item.get(k).and_then(|v| v.as_s().ok()).cloned();
    let num = |k: &str| {
        item.get(k)
            .and_then(|v| v.as_n().ok())
            .and_then(|v| v.parse::<i64>().ok())
            .map(Millis)
    };
    Ok(StoredSecret {
        current: text(attr::SECRET).ok_or_else(|| corrupt("no secret"))?,
        previous: text(attr::PREVIOUS_SECRET).zip(num(attr::PREVIOUS_UNTIL)),
        created_at: num(attr::CREATED_AT).ok_or_else(|| corrupt("no created_at"))?,
        rotated_at: num(attr::ROTATED_AT),
    })
}

fn upload_from_item(id: &UploadId, item: &Item) -> Result<UploadRecord, StoreError> {
    let corrupt = |reason: &str| StoreError::Corrupt {
        id: upload_item_id(id),
        reason: reason.into(),
    };
    let text = |k: &str| item.get(k).and_then(|v| v.as_s().ok()).cloned();
    let num = |k: &str| {
        item.get(k)
            .and_then(|v| v.as_n().ok())
            .and_then(|v| v.parse::<i64>().ok())
    };
    Ok(UploadRecord {
        id: id.clone(),
        owner: Owner::new(text(attr::OWNER).ok_or_else(|| corrupt("no owner"))?),
        key: text(attr::OBJECT_KEY).ok_or_else(|| corrupt("no object key"))?,
        size: num(attr::SIZE)
            .and_then(|v| u64::try_from(v).ok())
            .ok_or_else(|| corrupt("no size"))?,
        content_type: text(attr::CONTENT_TYPE).unwrap_or_default(),
        created_at: Millis(num(attr::CREATED_AT).unwrap_or(0)),
        expires_at: Millis(num(attr::UPLOAD_EXPIRES_AT).ok_or_else(|| corrupt("no expiry"))?),
        multipart: text(attr::MULTIPART),
        completed_at: num(attr::COMPLETED_AT).map(Millis),
        sha256: text(attr::SHA256),
    })
}

fn idempotency_from_item(item: &Item) -> Option<IdempotencyRecord> {
    let job_id = item.get(attr::JOB_ID)?.as_s().ok()?.parse().ok()?;
    let request_hash = item.get(attr::REQUEST_HASH)?.as_s().ok()?.clone();
    Some(IdempotencyRecord {
        job_id,
        request_hash,
    })
}

/// The DynamoDB item of a job record (without its TTL attribute).
pub fn to_item(job: &JobRecord) -> Item {
    let mut item = HashMap::new();
    item.insert(attr::ID.into(), s(job.id.to_string()));
    item.insert(attr::OWNER.into(), s(job.owner.as_str()));
    item.insert(attr::STATUS.into(), s(job.status.as_str()));
    item.insert(attr::ATTEMPT.into(), n(job.attempt));
    item.insert(attr::MAX_ATTEMPTS.into(), n(job.max_attempts));
    item.insert(attr::RELEASES.into(), n(job.releases));
    item.insert(attr::SUBMITTED_AT.into(), n(job.submitted_at.0));
    item.insert(attr::INPUT_BYTES.into(), n(job.input_bytes));
    item.insert(
        attr::CANCEL_REQUESTED.into(),
        AttributeValue::Bool(job.cancel_requested),
    );
    if job.on_timeout != OnTimeout::Fail {
        item.insert(attr::ON_TIMEOUT.into(), s(job.on_timeout.as_str()));
    }
    if let Some(url) = &job.webhook {
        item.insert(attr::WEBHOOK.into(), s(url.as_str()));
    }
    if let Some(sink) = &job.sink {
        item.insert(attr::SINK_BUCKET.into(), s(sink.bucket.as_str()));
        item.insert(attr::SINK_BASE.into(), s(sink.base.as_str()));
    }
    if job.publish {
        item.insert(attr::PUBLISH.into(), AttributeValue::Bool(true));
    }
    if !job.delivery.done.is_empty() {
        item.insert(
            attr::ANNOUNCED.into(),
            AttributeValue::Ss(job.delivery.done.clone()),
        );
    }
    // A job whose end is announced (a webhook, a sink, the deployment's events) is in the
    // notify-due index.
    if job.is_announced() {
        item.insert(attr::NOTIFY.into(), s(open_shard(&job.id)));
    }
    let d = &job.delivery;
    if d.attempts > 0 {
        item.insert(attr::WEBHOOK_ATTEMPTS.into(), n(d.attempts));
    }
    let optional = [
        (attr::STARTED_AT, job.started_at.map(|t| n(t.0))),
        (attr::FINISHED_AT, job.finished_at.map(|t| n(t.0))),
        (attr::DEADLINE, job.deadline.map(|t| n(t.0))),
        (attr::LEASE_EXPIRES_AT, job.lease_expires_at.map(|t| n(t.0))),
        (attr::WORKER_ID, job.worker_id.clone().map(s)),
        (attr::CLAIM_TOKEN, job.claim_token.clone().map(s)),
        (attr::RESULT, job.result.clone().map(s)),
        (
            attr::RESULT_KEY,
            job.result_object.as_ref().map(|o| s(o.key.as_str())),
        ),
        (
            attr::RESULT_SIZE,
            job.result_object.as_ref().map(|o| n(o.size)),
        ),
        (
            attr::RESULT_CONTENT_TYPE,
            job.result_object
                .as_ref()
                .map(|o| s(o.content_type.as_str())),
        ),
        (
            attr::OUTPUTS,
            (!job.outputs.is_empty()).then(|| outputs_value(&job.outputs)),
        ),
        (attr::ERROR, job.error.clone().map(s)),
        (attr::TIMEOUT_SECONDS, job.timeout_seconds.map(n)),
        (
            attr::INPUT_UPLOAD,
            job.input_object.as_ref().map(|o| s(o.upload_id.as_str())),
        ),
        (
            attr::INPUT_KEY,
            job.input_object.as_ref().map(|o| s(o.key.as_str())),
        ),
        (
            attr::INPUT_BUCKET,
            job.input_object
                .as_ref()
                .and_then(|o| o.bucket.clone())
                .map(s),
        ),
        (
            attr::INPUT_VERSION,
            job.input_object
                .as_ref()
                .and_then(|o| o.version_id.clone())
                .map(s),
        ),
        (
            attr::INPUT_SIZE,
            job.input_object.as_ref().map(|o| n(o.size)),
        ),
        (
            attr::INPUT_CONTENT_TYPE,
            job.input_object
                .as_ref()
                .map(|o| s(o.content_type.as_str())),
        ),
        (attr::REDRIVES, (job.redrives > 0).then(|| n(job.redrives))),
        (
            attr::DLQ_RETURNS,
            (job.dlq_returns > 0).then(|| n(job.dlq_returns)),
        ),
        (attr::NOTIFY_AT, d.due_at.map(|t| n(t.0))),
        (attr::WEBHOOK_LAST_AT, d.last_attempt_at.map(|t| n(t.0))),
        (attr::WEBHOOK_LAST_STATUS, d.last_status.map(n)),
        (attr::WEBHOOK_LAST_ERROR, d.last_error.clone().map(s)),
        (attr::WEBHOOK_DELIVERED_AT, d.delivered_at.map(|t| n(t.0))),
        (attr::WEBHOOK_GAVE_UP_AT, d.gave_up_at.map(|t| n(t.0))),
        (
            attr::PROGRESS_FRACTION,
            job.progress
                .as_ref()
                .and_then(|p| p.fraction)
                .map(|f| n(fraction_number(f))),
        ),
        (
            attr::PROGRESS_MESSAGE,
            job.progress.as_ref().and_then(|p| p.message.clone()).map(s),
        ),
    ];
    for (k, v) in optional {
        if let Some(v) = v {
            item.insert(k.into(), v);
        }
    }
    item
}

/// Reads a job record from its DynamoDB item.
pub fn from_item(item: &Item) -> Result<JobRecord, StoreError> {
    let id_text = item
        .get(attr::ID)
        .and_then(|v| v.as_s().ok())
        .cloned()
        .unwrap_or_default();
    let corrupt = |reason: String| StoreError::Corrupt {
        id: id_text.clone(),
        reason,
    };
    let text = |k: &str| -> Option<String> { item.get(k).and_then(|v| v.as_s().ok()).cloned() };
    let num = |k: &str| -> Result<Option<i64>, StoreError> {
        match item.get(k) {
            None => Ok(None),
            Some(v) => v
                .as_n()
                .ok()
                .and_then(|n| n.parse::<i64>().ok())
                .map(Some)
                .ok_or_else(|| corrupt(format!("{k} is not a whole number"))),
        }
    };
    let count = |k: &str| -> Result<u32, StoreError> {
        num(k)?.map_or(Ok(0), |v| {
            u32::try_from(v).map_err(|_| corrupt(format!("{k} is out of range")))
        })
    };
    let id = id_text
        .parse::<JobId>()
        .map_err(|e| corrupt(e.to_string()))?;
    let status = text(attr::STATUS)
        .ok_or_else(|| corrupt("no status".into()))?
        .parse::<Status>()
        .map_err(|e| corrupt(e.to_string()))?;
    let publish = item
        .get(attr::PUBLISH)
        .and_then(|v| v.as_bool().ok())
        .copied()
        .unwrap_or(false);
    Ok(JobRecord {
        id,
        owner: Owner::new(text(attr::OWNER).ok_or_else(|| corrupt("no owner".into()))?),
        status,
        attempt: count(attr::ATTEMPT)?,
        max_attempts: count(attr::MAX_ATTEMPTS)?,
        releases: count(attr::RELEASES)?,
        submitted_at: Millis(
            num(attr::SUBMITTED_AT)?.ok_or_else(|| corrupt("no submitted_at".into()))?,
        ),
        started_at: num(attr::STARTED_AT)?.map(Millis),
        finished_at: num(attr::FINISHED_AT)?.map(Millis),
        deadline: num(attr::DEADLINE)?.map(Millis),
        lease_expires_at: num(attr::LEASE_EXPIRES_AT)?.map(Millis),
        worker_id: text(attr::WORKER_ID),
        claim_token: text(attr::CLAIM_TOKEN),
        cancel_requested: item
            .get(attr::CANCEL_REQUESTED)
            .and_then(|v| v.as_bool().ok())
            .copied()
            .unwrap_or(false),
        result: text(attr::RESULT),
        error: text(attr::ERROR),
        input_bytes: u64::try_from(num(attr::INPUT_BYTES)?.unwrap_or(0)).unwrap_or(0),
        timeout_seconds: num(attr::TIMEOUT_SECONDS)?
            .map(|v| {
                u64::try_from(v).map_err(|_| corrupt("timeout_seconds is out of range".into()))
            })
            .transpose()?,
        on_timeout: match text(attr::ON_TIMEOUT).as_deref() {
            None | Some("fail") => OnTimeout::Fail,
            Some("retry") => OnTimeout::Retry,
            Some(other) => return Err(corrupt(format!("unknown on_timeout {other:?}"))),
        },
        progress: {
            let fraction = match item.get(attr::PROGRESS_FRACTION) {
                None => None,
                Some(v) => Some(
                    v.as_n()
                        .ok()
                        .and_then(|n| n.parse::<f64>().ok())
                        .ok_or_else(|| corrupt("progress_fraction is not a number".into()))?,
                ),
            };
            let p = Progress::new(fraction, text(attr::PROGRESS_MESSAGE).as_deref());
            (!p.is_empty()).then_some(p)
        },
        redrives: count(attr::REDRIVES)?,
        dlq_returns: count(attr::DLQ_RETURNS)?,
        webhook: text(attr::WEBHOOK),
        input_object: match text(attr::INPUT_KEY) {
            None => None,
            Some(key) => Some(InputObject {
                upload_id: text(attr::INPUT_UPLOAD).unwrap_or_default(),
                bucket: text(attr::INPUT_BUCKET),
                key,
                size: u64::try_from(num(attr::INPUT_SIZE)?.unwrap_or(0))
                    .map_err(|_| corrupt("input_size is out of range".into()))?,
                content_type: text(attr::INPUT_CONTENT_TYPE)
                    .unwrap_or_else(|| crate::upload::DEFAULT_CONTENT_TYPE.into()),
                version_id: text(attr::INPUT_VERSION),
            }),
        },
        result_object: match text(attr::RESULT_KEY) {
            None => None,
            Some(key) => Some(StoredObject {
                key,
                size: u64::try_from(num(attr::RESULT_SIZE)?.unwrap_or(0))
                    .map_err(|_| corrupt("result_size is out of range".into()))?,
                content_type: text(attr::RESULT_CONTENT_TYPE)
                    .unwrap_or_else(|| crate::output::JSON.into()),
            }),
        },
        sink: match (text(attr::SINK_BUCKET), text(attr::SINK_BASE)) {
            (Some(bucket), Some(base)) => Some(Sink { bucket, base }),
            _ => None,
        },
        outputs: match item.get(attr::OUTPUTS) {
            None => Vec::new(),
            Some(v) => {
                outputs_of(v).ok_or_else(|| corrupt("outputs is not a list of files".into()))?
            }
        },
        publish,
        delivery: Delivery {
            // Only a job with a webhook, a sink or published events has an announcement to
            // deliver.
            due_at: num(attr::NOTIFY_AT)?
                .filter(|_| {
                    item.contains_key(attr::WEBHOOK)
                        || item.contains_key(attr::SINK_BASE)
                        || publish
                })
                .map(Millis),
            done: match item.get(attr::ANNOUNCED) {
                None => Vec::new(),
                Some(v) => {
                    let mut done = v
                        .as_ss()
                        .map_err(|_| corrupt("announced is not a string set".into()))?
                        .clone();
                    done.sort();
                    done
                }
            },
            attempts: count(attr::WEBHOOK_ATTEMPTS)?,
            last_attempt_at: num(attr::WEBHOOK_LAST_AT)?.map(Millis),
            last_status: num(attr::WEBHOOK_LAST_STATUS)?.and_then(|v| u16::try_from(v).ok()),
            last_error: text(attr::WEBHOOK_LAST_ERROR),
            delivered_at: num(attr::WEBHOOK_DELIVERED_AT)?.map(Millis),
            gave_up_at: num(attr::WEBHOOK_GAVE_UP_AT)?.map(Millis),
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_through_items() {
        let mut job = JobRecord::queued(
            JobId::generate(),
            Owner::new("arn:aws:iam::123456789012:user/alice"),
            Millis(1_700_000_000_000),
            Some(Millis(1_700_000_060_000)),
            3,
            42,
        );
        assert_eq!(from_item(&to_item(&job)).unwrap(), job);
        job.status = Status::Succeeded;
        job.attempt = 2;
        job.releases = 1;
        job.started_at = Some(Millis(1_700_000_001_000));
        job.finished_at = Some(Millis(1_700_000_002_000));
        job.lease_expires_at = Some(Millis(1_700_000_031_000));
        job.worker_id = Some("w-1".into());
        job.claim_token = Some("01JDQ3ZV1T8Y3G7Q0M9K2D4XWE".into());
        job.cancel_requested = true;
        job.result = Some("{\"ok\":true}".into());
        job.error = Some("boom".into());
        job.timeout_seconds = Some(600);
        job.on_timeout = OnTimeout::Retry;
        job.progress = Some(Progress::new(Some(0.25), Some("loading")));
        assert_eq!(from_item(&to_item(&job)).unwrap(), job);
    }

    #[test]
    fn fractions_are_written_as_numbers_dynamodb_accepts() {
        let cases = [
            (0.0, "0"),
            (1.0, "1"),
            (0.5, "0.5"),
            (0.123456789, "0.123456789"),
            (1e-6, "0.000001"),
            (2.5e-7, "2.5e-7"),
            (1e-130, "1e-130"),
            (9.99e-131, "0"),
            (1e-200, "0"),
            (5e-324, "0"),
            (-0.0, "0"),
            (f64::NAN, "0"),
        ];
        for (f, want) in cases {
            let got = fraction_number(f);
            assert_eq!(got, want, "{f:e}");
            // Within DynamoDB's range, at most 38 significant digits, and read back the same.
            let back: f64 = got.parse().unwrap();
            assert!(
                back == 0.0 || (1e-130..1e126).contains(&back.abs()),
                "{got}"
            );
            let digits = got
                .split(['e', 'E'])
                .next()
                .unwrap()
                .chars()
                .filter(char::is_ascii_digit)
                .collect::<String>();
            assert!(digits.trim_matches('0').len() <= 38, "{got}");
            if f.is_finite() && f.abs() >= 1e-130 {
                assert_eq!(back, f, "{got} reads back as written");
            }
        }
    }

    #[test]
    fn malformed_items_are_reported_not_guessed() {
        let job = JobRecord::queued(JobId::generate(), Owner::new("a"), Millis(1), None, 3, 0);
        let cases: &[(&str, Option<AttributeValue>, &str)] = &[
            ("status", Some(s("DONE")), "unknown job status"),
            ("status", None, "no status"),
            ("attempt", Some(n(-1)), "attempt is out of range"),
            ("attempt", Some(s("one")), "attempt is not a whole number"),
            ("owner", None, "no owner"),
            ("id", Some(s("x")), "not a job id"),
            ("on_timeout", Some(s("later")), "unknown on_timeout"),
            (
                "timeout_seconds",
                Some(n(-5)),
                "timeout_seconds is out of range",
            ),
        ];
        for (key, value, want) in cases {
            let mut item = to_item(&job);
            match value {
                Some(v) => item.insert((*key).into(), v.clone()),
                None => item.remove(*key),
            };
            let err = from_item(&item).unwrap_err().to_string();
            assert!(err.contains(want), "{key}: {err}");
        }
    }

    #[test]
    #[should_panic(expected = "the update names lease_expires_at twice")]
    fn an_update_that_names_an_attribute_twice_is_caught_before_dynamodb_refuses_it() {
        let _ = Update::ended(Status::Failed, Millis(1), Duration::from_secs(60))
            .remove(attr::LEASE_EXPIRES_AT);
    }

    #[test]
    fn ids_spread_over_every_shard_of_the_sparse_indexes() {
        let mut hits = [0u32; OPEN_SHARDS as usize];
        for _ in 0..3_200 {
            let shard: usize = open_shard(&JobId::generate()).parse().unwrap();
            hits[shard] += 1;
        }
        // 200 each on average; every shard gets its share, give or take.
        assert!(hits.iter().all(|h| (100..=300).contains(h)), "{hits:?}");
    }

    #[test]
    fn update_expressions_alias_every_attribute() {
        let u = Update::default()
            .set(attr::STATUS, s("RUNNING"))
            .set_if_absent(attr::STARTED_AT, n(5))
            .increment(attr::ATTEMPT)
            .remove(attr::ERROR);
        assert_eq!(
            u.expression(),
            "SET #status = :status, #started_at = if_not_exists(#started_at, :started_at) REMOVE #error ADD #attempt :one"
        );
        assert_eq!(u.names.len(), 4);
        let refs: Vec<_> = attribute_refs(CLAIMABLE).collect();
        assert_eq!(
            refs,
            [
                "status",
                "cancel_requested",
                "cancel_requested",
                "deadline",
                "deadline",
                "attempt",
                "status",
                "lease_expires_at",
                "cancel_requested",
                "cancel_requested"
            ]
        );
    }
}
