//! The pipeline: objects created in a bucket under an input prefix become jobs, and each job's
//! outcome is written back under an output prefix (the AWS sample's flow, where files dropped
//! into a bucket are processed and their results land beside them).
//!
//! S3 sends an event for each object created to a queue; the ingest function reads the events
//! and makes one job per object version: the object is the job's file (the worker downloads it
//! for the handler, as an upload), and the job's sink says where its outcome goes
//! ([`crate::job::Sink`]): its view as `<output prefix><name>.success` or `.failed`, its output
//! files under `<output prefix><name>/`, written by the outbox when the job ends (so a worker
//! that dies loses nothing). S3 delivers events at least once: a job's id is keyed on the
//! bucket, the key and the version (or, unversioned, the event's sequencer), so an event that
//! comes twice makes one job. Pipeline jobs belong to one owner (`SLUICE_PIPELINE_OWNER`) and are
//! seen through the same API, CLI and metrics as any other job.

use std::time::Duration;

use serde::Deserialize;
use serde_json::value::RawValue;

use crate::config::{number_or, required, ConfigError, ProcessEnv, Source};
use crate::env;
use crate::job::{JobId, JobRecord, Owner, Sink};
use crate::payload::Payloads;
use crate::queue::{Envelope, JobQueue};
use crate::store::{Created as Recorded, JobStore, StoreError};
use crate::time::Millis;
use crate::upload::InputObject;

/// Where the pipeline reads and writes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PipelineConfig {
    pub bucket: String,
    /// Objects created under it become jobs.
    pub input_prefix: String,
    /// Outcomes are written under it; objects created here never become jobs.
    pub output_prefix: String,
    /// Whose jobs these are.
    pub owner: Owner,
    pub max_attempts: u32,
    pub retention: Duration,
}

impl PipelineConfig {
    /// The pipeline's settings from the process environment, or `None` when
    /// `SLUICE_PIPELINE_BUCKET` is unset.
    pub fn from_env() -> Result<Option<Self>, ConfigError> {
        Self::from_source(&ProcessEnv)
    }

    /// The pipeline's settings, or `None` when `SLUICE_PIPELINE_BUCKET` is unset.
    pub fn from_source(src: &(impl Source + ?Sized)) -> Result<Option<Self>, ConfigError> {
        let Some(bucket) = src.get(env::PIPELINE_BUCKET) else {
            return Ok(None);
        };
        let input_prefix = src
            .get(env::PIPELINE_INPUT_PREFIX)
            .unwrap_or_else(|| "in/".into());
        let output_prefix = src
            .get(env::PIPELINE_OUTPUT_PREFIX)
            .unwrap_or_else(|| "out/".into());
        if input_prefix.starts_with(&output_prefix) || output_prefix.starts_with(&input_prefix) {
            return Err(ConfigError::Invalid {
                name: env::PIPELINE_OUTPUT_PREFIX,
                value: output_prefix,
                reason: format!(
                    "the output prefix must not overlap the input prefix ({input_prefix:?}): \
                     outcomes written there would become jobs"
                ),
            });
        }
        let owner = required(
            src,
            env::PIPELINE_OWNER,
            "set it to the owner whose jobs the pipeline makes, as the API names callers \
             (e.g. iam:arn:aws:sts::123456789012:assumed-role/ops for every session of the role ops)",
        )?;
        Ok(Some(PipelineConfig {
            bucket,
            input_prefix,
            output_prefix,
            owner: Owner::new(owner),
            max_attempts: number_or(src, env::MAX_ATTEMPTS, 3u32, 1..=10)?,
            retention: Duration::from_secs(86_400)
                * number_or(src, env::RETENTION_DAYS, 7u32, 1..=3650)?,
        }))
    }
}

/// What the ingest function reads: where jobs go, and the pipeline it makes them for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IngestConfig {
    pub table_name: String,
    pub queue_url: String,
    pub pipeline: PipelineConfig,
    /// Whether the deployment publishes the ends of jobs: the jobs made are marked so.
    pub publishes: bool,
}

impl IngestConfig {
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_source(&ProcessEnv)
    }

    /// Unlike the local stack, the ingest function has nothing to do without a pipeline: its
    /// bucket is required.
    pub fn from_source(src: &(impl Source + ?Sized)) -> Result<Self, ConfigError> {
        let table_name = required(src, env::TABLE_NAME, "set it to the jobs table's name")?;
        let queue_url = required(src, env::QUEUE_URL, "set it to the jobs queue's URL")?;
        let pipeline = PipelineConfig::from_source(src)?.ok_or(ConfigError::Missing {
            name: env::PIPELINE_BUCKET,
            hint: "set it to the bucket whose new objects become jobs",
        })?;
        Ok(IngestConfig {
            table_name,
            queue_url,
            pipeline,
            publishes: crate::config::event_targets(src)?.any(),
        })
    }
}

/// An object S3 told of.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectCreated {
    pub bucket: String,
    pub key: String,
    pub size: u64,
    pub version_id: Option<String>,
    pub sequencer: Option<String>,
    pub etag: Option<String>,
}

/// Reads an S3 event notification (the body of a message S3 sent to the queue): the objects
/// created. S3's test event and other kinds of events carry none. The error says what is
/// wrong. Pure.
pub fn parse_event(body: &str) -> Result<Vec<ObjectCreated>, String> {
    #[derive(Deserialize)]
    struct Event {
        #[serde(rename = "Records", default)]
        records: Option<Vec<Record>>,
        #[serde(rename = "Event", default)]
        event: Option<String>,
    }
    #[derive(Deserialize)]
    struct Record {
        #[serde(rename = "eventName", default)]
        event_name: String,
        s3: S3,
    }
    #[derive(Deserialize)]
    struct S3 {
        bucket: Bucket,
        object: Object,
    }
    #[derive(Deserialize)]
    struct Bucket {
        name: String,
    }
    #[derive(Deserialize)]
    struct Object {
        key: String,
        #[serde(default)]
        size: u64,
        #[serde(rename = "versionId", default)]
        version_id: Option<String>,
        #[serde(default)]
        sequencer: Option<String>,
        #[serde(rename = "eTag", default)]
        etag: Option<String>,
    }
    let event: Event = serde_json::from_str(body)
        .map_err(|e| format!("the message is not an S3 event notification: {e}"))?;
    let Some(records) = event.records else {
        return match event.event.as_deref() {
            Some("s3:TestEvent") => Ok(Vec::new()),
            _ => Err("the message is not an S3 event notification: it has no Records".into()),
        };
    };
    let mut created = Vec::new();
    for r in records {
        if !r.event_name.starts_with("ObjectCreated:") {
            continue;
        }
        created.push(ObjectCreated {
            bucket: r.s3.bucket.name,
            key: decode_key(&r.s3.object.key)?,
            size: r.s3.object.size,
            version_id: r
                .s3
                .object
                .version_id
                .filter(|v| !v.is_empty() && v != "null"),
            sequencer: r.s3.object.sequencer.filter(|s| !s.is_empty()),
            etag: r.s3.object.etag.filter(|e| !e.is_empty()),
        });
    }
    Ok(created)
}

/// An object key as S3 events carry it: URL-form-encoded (`+` for a space). Pure.
pub fn decode_key(key: &str) -> Result<String, String> {
    percent_encoding::percent_decode_str(&key.replace('+', " "))
        .decode_utf8()
        .map(|k| k.into_owned())
        .map_err(|_| format!("the event's object key {key:?} is not UTF-8"))
}

/// The job an object becomes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Planned {
    /// What keys the job: the same object version always makes the same key.
    pub identity: String,
    pub sink: Sink,
}

/// The job `object` becomes under `config`, or why none does. Pure.
pub fn plan(config: &PipelineConfig, object: &ObjectCreated) -> Result<Planned, &'static str> {
    if object.bucket != config.bucket {
        return Err("another bucket");
    }
    if object.key.starts_with(&config.output_prefix) {
        return Err("under the output prefix");
    }
    let Some(rest) = object.key.strip_prefix(&config.input_prefix) else {
        return Err("not under the input prefix");
    };
    if rest.is_empty() || rest.ends_with('/') {
        return Err("a folder");
    }
    // The version when the bucket keeps them; else the sequencer, which orders the writes of
    // one key; else (an emulator that sends neither) the ETag.
    let version = match (&object.version_id, &object.sequencer, &object.etag) {
        (Some(v), _, _) => format!("version:{v}"),
        (None, Some(s), _) => format!("sequencer:{s}"),
        (None, None, Some(e)) => format!("etag:{e}"),
        (None, None, None) => format!("size:{}", object.size),
    };
    Ok(Planned {
        identity: crate::api::sha256_hex(&[
            b"s3-object",
            object.bucket.as_bytes(),
            b"\0",
            object.key.as_bytes(),
            b"\0",
            version.as_bytes(),
        ]),
        sink: Sink {
            bucket: config.bucket.clone(),
            base: format!("{}{rest}", config.output_prefix),
        },
    })
}

/// What an object came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ingested {
    Created(JobId),
    /// The object already made this job (its event came again).
    Existing(JobId),
    /// No job: why.
    Skipped(&'static str),
}

#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Queue(#[from] crate::queue::QueueError),
    #[error(transparent)]
    Payload(#[from] crate::payload::PayloadError),
    #[error("{0}")]
    Event(String),
}

/// What becomes of a message of the events queue once its objects were handled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Disposition {
    /// Every object it tells of became a job (or needs none): the message is done.
    Done,
    /// It is not an S3 event notification: logged and dropped, since no try can make it one.
    Discard,
    /// Some object could not become a job (S3, SQS or DynamoDB failed): the message is read
    /// again, and after the queue's receive limit it goes to the dead-letter queue. The objects
    /// that did become jobs are found again on the next try, not made twice.
    Retry,
}

impl Disposition {
    /// What to do with a message given what handling it gave. Pure.
    pub fn of(result: &Result<Vec<Ingested>, IngestError>) -> Self {
        match result {
            Ok(_) => Disposition::Done,
            Err(IngestError::Event(_)) => Disposition::Discard,
            Err(_) => Disposition::Retry,
        }
    }
}

/// The partial batch response of a batch of messages (their ids, in the batch's order, with
/// their dispositions): the ids of the messages to read again. SQS deletes the others. A message
/// without an id (never sent by SQS) is reported as `""`, which makes Lambda retry the whole
/// batch rather than lose it. Pure.
pub fn batch_item_failures<'a>(
    handled: impl IntoIterator<Item = (Option<&'a str>, Disposition)>,
) -> Vec<String> {
    handled
        .into_iter()
        .filter(|(_, d)| *d == Disposition::Retry)
        .map(|(id, _)| id.unwrap_or_default().to_owned())
        .collect()
}

/// Makes jobs of objects.
#[derive(Debug, Clone)]
pub struct Ingest {
    pub store: JobStore,
    pub queue: JobQueue,
    /// The pipeline's bucket.
    pub objects: Payloads,
    pub config: PipelineConfig,
}

impl Ingest {
    /// The jobs of the objects one event notification tells of.
    pub async fn handle_message(&self, body: &str) -> Result<Vec<Ingested>, IngestError> {
        let objects = parse_event(body).map_err(IngestError::Event)?;
        let mut done = Vec::with_capacity(objects.len());
        for object in &objects {
            done.push(self.ingest(object).await?);
        }
        Ok(done)
    }

    /// Handles a batch of messages of the events queue (id and body each, as the function's
    /// SQS trigger gives them), one after the other, and logs what became of each: the ids of
    /// the messages to read again ([`batch_item_failures`]).
    pub async fn handle_batch<'a>(
        &self,
        messages: impl IntoIterator<Item = (Option<&'a str>, &'a str)>,
    ) -> Vec<String> {
        let mut handled = Vec::new();
        for (id, body) in messages {
            let result = self.handle_message(body).await;
            let disposition = Disposition::of(&result);
            let message_id = id.unwrap_or_default();
            match &result {
                Ok(done) => {
                    tracing::debug!(
                        message_id,
                        objects = done.len(),
                        "a pipeline event was handled"
                    );
                }
                Err(IngestError::Event(why)) => {
                    tracing::warn!(message_id, %why, "a message in the pipeline's event queue is not an S3 event; dropped");
                }
                Err(e) => {
                    tracing::warn!(message_id, error = %crate::aws::DisplayErrorContext(e), "an object could not become a job; its event is read again");
                }
            }
            handled.push((id, disposition));
        }
        batch_item_failures(handled)
    }

    /// The job of one object: made once, however often its event comes.
    pub async fn ingest(&self, object: &ObjectCreated) -> Result<Ingested, IngestError> {
        let planned = match plan(&self.config, object) {
            Ok(p) => p,
            Err(why) => return Ok(Ingested::Skipped(why)),
        };
        // Its content type, and whether it is still there (deleted since: no job).
        let Some(info) = self.objects.head(&object.key).await? else {
            return Ok(Ingested::Skipped("deleted before its job was made"));
        };
        let input = serde_json::json!({
            "bucket": object.bucket,
            "key": object.key,
            "size": info.size,
            "version_id": object.version_id,
        });
        let input = RawValue::from_string(input.to_string()).expect("JSON text");
        let now = Millis::now();
        let id = JobId::generate();
        let mut record = JobRecord::queued(
            id.clone(),
            self.config.owner.clone(),
            now,
            None,
            self.config.max_attempts,
            input.get().len() as u64,
        );
        record.input_object = Some(InputObject {
            upload_id: String::new(),
            bucket: Some(object.bucket.clone()),
            key: object.key.clone(),
            // In a versioned bucket, the job reads the version whose creation made it, even
            // when the key is written again before the job runs.
            size: match object.version_id {
                Some(_) => object.size,
                None => info.size,
            },
            content_type: info
                .content_type
                .clone()
                .unwrap_or_else(|| crate::upload::DEFAULT_CONTENT_TYPE.into()),
            version_id: object.version_id.clone(),
        });
        record.sink = Some(planned.sink);
        // As a submit does: the message first, then the record; a record that cannot be made
        // leaves an orphan message, which workers delete.
        self.queue
            .send(Envelope::new(id.clone(), &input).encode()?)
            .await?;
        let key = (planned.identity.as_str(), planned.identity.as_str());
        match self
            .store
            .create(&record, self.config.retention, Some(key))
            .await?
        {
            Recorded::Created => {
                tracing::info!(job_id = %id, bucket = %object.bucket, key = %object.key, "an object became a job");
                Ok(Ingested::Created(id))
            }
            Recorded::Existing(found) => Ok(Ingested::Existing(found.job_id)),
        }
    }

    /// Reads the event queue at `url` until `stop`, making jobs as events come (the local
    /// stack's stand-in for the ingest function's trigger). A message whose jobs could not be
    /// made stays for another try; one that is not an event is logged and deleted.
    pub async fn poll(&self, events: &JobQueue, stop: tokio_util::sync::CancellationToken) {
        while !stop.is_cancelled() {
            let received = tokio::select! {
                r = events.receive(10, Duration::from_secs(1)) => r,
                () = stop.cancelled() => return,
            };
            let messages = match received {
                Ok(m) => m,
                Err(e) => {
                    tracing::warn!(error = %crate::aws::DisplayErrorContext(&e), "could not read the pipeline's events");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
            };
            for msg in messages {
                match self.handle_message(&msg.body).await {
                    Ok(_) => {}
                    Err(IngestError::Event(why)) => {
                        tracing::warn!(%why, "a message in the pipeline's event queue is not an S3 event; deleted");
                    }
                    Err(e) => {
                        tracing::warn!(error = %crate::aws::DisplayErrorContext(&e), "an object could not become a job; its event is read again");
                        continue;
                    }
                }
                if let Err(e) = events.delete(&msg.receipt).await {
                    tracing::warn!(error = %crate::aws::DisplayErrorContext(&e), "could not delete a pipeline event");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> PipelineConfig {
        PipelineConfig {
            bucket: "photos".into(),
            input_prefix: "in/".into(),
            output_prefix: "out/".into(),
            owner: Owner::new("iam:ops"),
            max_attempts: 3,
            retention: Duration::from_secs(86_400),
        }
    }

    fn object(key: &str) -> ObjectCreated {
        ObjectCreated {
            bucket: "photos".into(),
            key: key.into(),
            size: 10,
            version_id: Some("v1".into()),
            sequencer: None,
            etag: None,
        }
    }

    #[test]
    fn events_are_read_as_s3_sends_them() {
        let body = r#"{"Records":[
            {"eventName":"ObjectCreated:Put","s3":{"bucket":{"name":"photos"},"object":{"key":"in/my+cat%2B1.jpg","size":7,"versionId":"abc","sequencer":"0055","eTag":"e1"}}},
            {"eventName":"ObjectRemoved:Delete","s3":{"bucket":{"name":"photos"},"object":{"key":"in/gone.jpg"}}},
            {"eventName":"ObjectCreated:CompleteMultipartUpload","s3":{"bucket":{"name":"photos"},"object":{"key":"in/r%C3%A9sum%C3%A9.pdf","size":9,"versionId":"null"}}}
        ]}"#;
        let got = parse_event(body).unwrap();
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].key, "in/my cat+1.jpg");
        assert_eq!(
            (
                got[0].size,
                got[0].version_id.as_deref(),
                got[0].sequencer.as_deref()
            ),
            (7, Some("abc"), Some("0055"))
        );
        assert_eq!(got[1].key, "in/résumé.pdf");
        assert_eq!(
            got[1].version_id, None,
            "an unversioned bucket says \"null\""
        );
        assert_eq!(
            parse_event(r#"{"Event":"s3:TestEvent","Bucket":"photos"}"#).unwrap(),
            vec![]
        );
        for bad in [
            "",
            "[]",
            r#"{"hello":1}"#,
            r#"{"Records":[{"eventName":"ObjectCreated:Put"}]}"#,
        ] {
            assert!(parse_event(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn each_object_version_is_one_job_and_outputs_never_become_jobs() {
        let c = config();
        let p = plan(&c, &object("in/a/cat.jpg")).unwrap();
        assert_eq!(
            p.sink,
            Sink {
                bucket: "photos".into(),
                base: "out/a/cat.jpg".into()
            }
        );
        assert_eq!(
            p,
            plan(&c, &object("in/a/cat.jpg")).unwrap(),
            "the same version, the same key"
        );
        let mut v2 = object("in/a/cat.jpg");
        v2.version_id = Some("v2".into());
        assert_ne!(plan(&c, &v2).unwrap().identity, p.identity);
        let mut seq = object("in/a/cat.jpg");
        seq.version_id = None;
        seq.sequencer = Some("0A".into());
        assert_ne!(plan(&c, &seq).unwrap().identity, p.identity);
        for (key, why) in [
            ("out/a/cat.jpg.success", "under the output prefix"),
            ("elsewhere/cat.jpg", "not under the input prefix"),
            ("in/", "a folder"),
            ("in/a/", "a folder"),
        ] {
            assert_eq!(plan(&c, &object(key)), Err(why), "{key}");
        }
        let mut other = object("in/cat.jpg");
        other.bucket = "else".into();
        assert_eq!(plan(&c, &other), Err("another bucket"));
    }

    #[test]
    fn a_batch_reports_failed_only_the_events_whose_objects_could_not_all_become_jobs() {
        let unavailable = || {
            Err(IngestError::Store(StoreError::Unavailable(
                "dynamodb is down".into(),
            )))
        };
        let corrupt = || {
            Err(IngestError::Store(StoreError::Corrupt {
                id: "j".into(),
                reason: "r".into(),
            }))
        };
        let id = || JobId::generate();
        type Handled = Result<Vec<Ingested>, IngestError>;
        let cases: Vec<(&str, Handled, Disposition)> = vec![
            (
                "made jobs",
                Ok(vec![Ingested::Created(id()), Ingested::Existing(id())]),
                Disposition::Done,
            ),
            ("test event or no object", Ok(vec![]), Disposition::Done),
            (
                "skipped objects",
                Ok(vec![Ingested::Skipped("a folder")]),
                Disposition::Done,
            ),
            (
                "not an s3 event",
                Err(IngestError::Event("no Records".into())),
                Disposition::Discard,
            ),
            ("dynamodb failed", unavailable(), Disposition::Retry),
            ("a record it cannot read", corrupt(), Disposition::Retry),
            (
                "sqs failed",
                Err(IngestError::Queue(crate::queue::QueueError::Throttled(
                    "slow down".into(),
                ))),
                Disposition::Retry,
            ),
        ];
        for (what, result, expected) in &cases {
            assert_eq!(Disposition::of(result), *expected, "{what}");
        }

        type Batch<'a> = &'a [(Option<&'a str>, Disposition)];
        let table: &[(Batch, &[&str])] = &[
            (&[], &[]),
            (
                &[
                    (Some("m1"), Disposition::Done),
                    (Some("m2"), Disposition::Discard),
                ],
                &[],
            ),
            (
                &[
                    (Some("m1"), Disposition::Retry),
                    (Some("m2"), Disposition::Done),
                    (Some("m3"), Disposition::Discard),
                    (Some("m4"), Disposition::Retry),
                ],
                &["m1", "m4"],
            ),
            // No id to name: the whole batch is read again rather than the event lost.
            (
                &[(None, Disposition::Retry), (Some("m2"), Disposition::Done)],
                &[""],
            ),
            (&[(None, Disposition::Discard)], &[]),
        ];
        for (handled, failed) in table {
            assert_eq!(
                batch_item_failures(handled.iter().copied()),
                failed.to_vec(),
                "{handled:?}"
            );
        }
    }

    #[test]
    fn the_ingest_function_needs_the_table_the_queue_and_the_pipeline() {
        let all: &[(&str, &str)] = &[
            ("SLUICE_TABLE_NAME", "jobs"),
            ("SLUICE_QUEUE_URL", "https://sqs/jobs"),
            ("SLUICE_PIPELINE_BUCKET", "photos"),
            ("SLUICE_PIPELINE_OWNER", "iam:ops"),
            ("SLUICE_PIPELINE_OUTPUT_PREFIX", "results/"),
            ("SLUICE_MAX_ATTEMPTS", "5"),
        ];
        let c = IngestConfig::from_source(all).unwrap();
        assert_eq!(
            (c.table_name.as_str(), c.queue_url.as_str()),
            ("jobs", "https://sqs/jobs")
        );
        assert_eq!(
            (
                c.pipeline.bucket.as_str(),
                c.pipeline.output_prefix.as_str(),
                c.pipeline.max_attempts
            ),
            ("photos", "results/", 5)
        );
        for missing in [
            "SLUICE_TABLE_NAME",
            "SLUICE_QUEUE_URL",
            "SLUICE_PIPELINE_BUCKET",
            "SLUICE_PIPELINE_OWNER",
        ] {
            let rest: Vec<(&str, &str)> =
                all.iter().copied().filter(|(k, _)| *k != missing).collect();
            let e = IngestConfig::from_source(rest.as_slice())
                .unwrap_err()
                .to_string();
            assert!(e.starts_with(missing), "{missing}: {e}");
        }
    }

    #[test]
    fn the_pipeline_is_configured_or_refused_with_a_reason() {
        let src = |pairs: &'static [(&'static str, &'static str)]| pairs;
        assert_eq!(PipelineConfig::from_source(src(&[])).unwrap(), None);
        let c = PipelineConfig::from_source(src(&[
            ("SLUICE_PIPELINE_BUCKET", "photos"),
            ("SLUICE_PIPELINE_OWNER", "iam:ops"),
        ]))
        .unwrap()
        .unwrap();
        assert_eq!(
            (c.input_prefix.as_str(), c.output_prefix.as_str()),
            ("in/", "out/")
        );
        let e = PipelineConfig::from_source(src(&[("SLUICE_PIPELINE_BUCKET", "photos")]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("SLUICE_PIPELINE_OWNER"), "{e}");
        let e = PipelineConfig::from_source(src(&[
            ("SLUICE_PIPELINE_BUCKET", "photos"),
            ("SLUICE_PIPELINE_OWNER", "iam:ops"),
            ("SLUICE_PIPELINE_INPUT_PREFIX", "data/"),
            ("SLUICE_PIPELINE_OUTPUT_PREFIX", "data/out/"),
        ]))
        .unwrap_err()
        .to_string();
        assert!(e.contains("must not overlap"), "{e}");
    }
}
