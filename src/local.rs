//! The local stack: creates the table, the queue and its dead-letter queue, and the payload
//! bucket (on the emulator, or on any account the SDK is pointed at), and serves the HTTP API on
//! a loopback port with the same handlers Lambda runs.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context;
use aws_config::SdkConfig;
use aws_sdk_dynamodb::types::{
    AttributeDefinition, BillingMode, GlobalSecondaryIndex, KeySchemaElement, KeyType, Projection,
    ProjectionType, ScalarAttributeType, TimeToLiveSpecification,
};
use aws_sdk_sqs::types::QueueAttributeName;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::{Bytes, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use lambda_http::{Body, RequestExt};
use tokio::net::TcpListener;

use crate::api::{self, Api, ApiError};

/// The resources a sluice stack needs.
#[derive(Debug, Clone)]
pub struct Resources {
    pub table_name: String,
    pub queue_url: String,
    pub dlq_url: String,
    /// The bucket of uploaded job inputs.
    pub payload_bucket: String,
}

/// How the queue is set up.
#[derive(Debug, Clone, Copy)]
pub struct QueueSettings {
    pub visibility_timeout: Duration,
    /// Deliveries before a message moves to the dead-letter queue.
    pub max_receive_count: u32,
}

impl Default for QueueSettings {
    /// As deployed: 12 deliveries, above the 10 attempts a job may ask for, so that jobs end
    /// by their own attempt count and only undecodable messages reach the dead-letter queue.
    fn default() -> Self {
        QueueSettings {
            visibility_timeout: Duration::from_secs(60),
            max_receive_count: 12,
        }
    }
}

/// Creates (or finds) the table `<prefix>-jobs`, the queue `<prefix>-jobs` and the dead-letter
/// queue `<prefix>-jobs-dlq`.
pub async fn ensure_resources(
    aws: &SdkConfig,
    prefix: &str,
    settings: QueueSettings,
) -> anyhow::Result<Resources> {
    let ddb = aws_sdk_dynamodb::Client::new(aws);
    let sqs = aws_sdk_sqs::Client::new(aws);
    let table_name = format!("{prefix}-jobs");

    let exists = ddb
        .describe_table()
        .table_name(&table_name)
        .send()
        .await
        .is_ok();
    if !exists {
        let attribute = |name: &str, kind: ScalarAttributeType| {
            AttributeDefinition::builder()
                .attribute_name(name)
                .attribute_type(kind)
                .build()
        };
        let key = |name: &str, kind: KeyType| {
            KeySchemaElement::builder()
                .attribute_name(name)
                .key_type(kind)
                .build()
        };
        // The sparse indexes the CDK app's table has: the open jobs (for the sweeper), the
        // announcements due (for the webhook deliverers) and the open jobs' deadlines (for the
        // deadline pass), each keyed by a shard and a time.
        let indexes = [
            (crate::store::OPEN_INDEX, crate::store::OPEN_INDEX_KEYS),
            (crate::store::NOTIFY_INDEX, crate::store::NOTIFY_INDEX_KEYS),
            (
                crate::store::DEADLINE_INDEX,
                crate::store::DEADLINE_INDEX_KEYS,
            ),
        ];
        let mut defined = std::collections::HashSet::new();
        let mut create = ddb
            .create_table()
            .table_name(&table_name)
            .billing_mode(BillingMode::PayPerRequest)
            .attribute_definitions(attribute("id", ScalarAttributeType::S)?)
            .key_schema(key("id", KeyType::Hash)?);
        for (index, (shard, at)) in indexes {
            if defined.insert(shard) {
                create = create.attribute_definitions(attribute(shard, ScalarAttributeType::S)?);
            }
            if defined.insert(at) {
                create = create.attribute_definitions(attribute(at, ScalarAttributeType::N)?);
            }
            create = create.global_secondary_indexes(
                GlobalSecondaryIndex::builder()
                    .index_name(index)
                    .key_schema(key(shard, KeyType::Hash)?)
                    .key_schema(key(at, KeyType::Range)?)
                    .projection(
                        Projection::builder()
                            .projection_type(ProjectionType::KeysOnly)
                            .build(),
                    )
                    .build()?,
            );
        }
        create.send().await?;
        ddb.update_time_to_live()
            .table_name(&table_name)
            .time_to_live_specification(
                TimeToLiveSpecification::builder()
                    .enabled(true)
                    .attribute_name("expires_at")
                    .build()?,
            )
            .send()
            .await?;
    }

    let dlq_url = sqs
        .create_queue()
        .queue_name(format!("{prefix}-jobs-dlq"))
        .attributes(QueueAttributeName::MessageRetentionPeriod, "1209600")
        .send()
        .await?
        .queue_url
        .unwrap_or_default();
    let dlq_arn = queue_arn(&sqs, &dlq_url).await?;
    let redrive = serde_json::json!({
        "deadLetterTargetArn": dlq_arn,
        "maxReceiveCount": settings.max_receive_count,
    });
    let queue_url = sqs
        .create_queue()
        .queue_name(format!("{prefix}-jobs"))
        .attributes(
            QueueAttributeName::VisibilityTimeout,
            settings.visibility_timeout.as_secs().to_string(),
        )
        .attributes(QueueAttributeName::RedrivePolicy, redrive.to_string())
        .attributes(QueueAttributeName::MessageRetentionPeriod, "1209600")
        .send()
        .await?
        .queue_url
        .unwrap_or_default();
    let payload_bucket = ensure_bucket(aws, prefix).await?;
    Ok(Resources {
        table_name,
        queue_url,
        dlq_url,
        payload_bucket,
    })
}

/// The ARN of the queue at `url`.
pub async fn queue_arn(sqs: &aws_sdk_sqs::Client, url: &str) -> anyhow::Result<String> {
    Ok(sqs
        .get_queue_attributes()
        .queue_url(url)
        .attribute_names(QueueAttributeName::QueueArn)
        .send()
        .await?
        .attributes
        .and_then(|a| a.get(&QueueAttributeName::QueueArn).cloned())
        .unwrap_or_default())
}

/// The bucket name for `prefix`: `<prefix>-payloads`, lowercased, with what S3 refuses in a name
/// replaced, and the prefix's head cut when the name would be over S3's 63 characters. Pure.
pub fn bucket_name(prefix: &str) -> String {
    bucket_name_with(prefix, "-payloads")
}

/// `<prefix><suffix>` as [`bucket_name`] makes it. Pure.
fn bucket_name_with(prefix: &str, suffix: &str) -> String {
    let clean: String = prefix
        .to_ascii_lowercase()
        .chars()
        .map(|c| match c {
            'a'..='z' | '0'..='9' | '-' => c,
            _ => '-',
        })
        .collect();
    let room = 63 - suffix.len();
    let tail = &clean[clean.len().saturating_sub(room)..];
    let tail = tail.trim_start_matches('-');
    format!("{}{suffix}", if tail.is_empty() { "sluice" } else { tail })
}

/// The local pipeline: its bucket and the queue S3 tells of new objects in it.
#[derive(Debug, Clone)]
pub struct PipelineResources {
    pub bucket: String,
    pub events_url: String,
}

/// Creates (or finds) the pipeline bucket `<prefix>-pipeline`, its event queue
/// `<prefix>-pipeline-events`, and the bucket's notification of every object created under
/// `input_prefix` to the queue, as the CDK app sets them up.
pub async fn ensure_pipeline(
    aws: &SdkConfig,
    prefix: &str,
    input_prefix: &str,
) -> anyhow::Result<PipelineResources> {
    use aws_sdk_s3::types::{
        Event, FilterRule, FilterRuleName, NotificationConfiguration,
        NotificationConfigurationFilter, QueueConfiguration, S3KeyFilter,
    };
    let bucket = ensure_named_bucket(aws, &bucket_name_with(prefix, "-pipeline")).await?;
    let sqs = aws_sdk_sqs::Client::new(aws);
    let events_url = sqs
        .create_queue()
        .queue_name(format!("{prefix}-pipeline-events"))
        .send()
        .await?
        .queue_url
        .unwrap_or_default();
    let events_arn = queue_arn(&sqs, &events_url).await?;
    let filter = NotificationConfigurationFilter::builder()
        .key(
            S3KeyFilter::builder()
                .filter_rules(
                    FilterRule::builder()
                        .name(FilterRuleName::Prefix)
                        .value(input_prefix)
                        .build(),
                )
                .build(),
        )
        .build();
    aws_sdk_s3::Client::new(aws)
        .put_bucket_notification_configuration()
        .bucket(&bucket)
        .notification_configuration(
            NotificationConfiguration::builder()
                .queue_configurations(
                    QueueConfiguration::builder()
                        .queue_arn(events_arn)
                        .events(Event::from("s3:ObjectCreated:*"))
                        .filter(filter)
                        .build()?,
                )
                .build(),
        )
        .send()
        .await
        .map_err(|e| {
            anyhow::Error::new(e).context(format!(
                "cannot tell the bucket {bucket} to send its events"
            ))
        })?;
    Ok(PipelineResources { bucket, events_url })
}

/// The local stack's event targets, and the queue that gets everything published to them.
#[derive(Debug, Clone)]
pub struct EventResources {
    pub targets: crate::events::EventTargets,
    /// Subscribed to both topics and the target of a rule that matches every sluice event on
    /// the bus: what a subscriber would get, to read back.
    pub inbox_url: String,
}

/// Creates (or finds) the topics `<prefix>-job-succeeded` and `<prefix>-job-ended-otherwise`,
/// the EventBridge bus `<prefix>-events`, and the queue `<prefix>-events-inbox` that gets
/// every message and event published to them.
pub async fn ensure_events(aws: &SdkConfig, prefix: &str) -> anyhow::Result<EventResources> {
    let sns = aws_sdk_sns::Client::new(aws);
    let bridge = aws_sdk_eventbridge::Client::new(aws);
    let sqs = aws_sdk_sqs::Client::new(aws);
    let inbox_url = sqs
        .create_queue()
        .queue_name(format!("{prefix}-events-inbox"))
        .send()
        .await
        .context("cannot create the events inbox queue")?
        .queue_url
        .unwrap_or_default();
    let inbox_arn = queue_arn(&sqs, &inbox_url).await?;
    let mut topics = Vec::new();
    for name in ["job-succeeded", "job-ended-otherwise"] {
        let arn = sns
            .create_topic()
            .name(format!("{prefix}-{name}"))
            .send()
            .await
            .with_context(|| format!("cannot create the topic {prefix}-{name}"))?
            .topic_arn
            .unwrap_or_default();
        sns.subscribe()
            .topic_arn(&arn)
            .protocol("sqs")
            .endpoint(&inbox_arn)
            .send()
            .await
            .with_context(|| format!("cannot subscribe the inbox to {arn}"))?;
        topics.push(arn);
    }
    let bus = format!("{prefix}-events");
    match bridge.create_event_bus().name(&bus).send().await {
        Ok(_) => {}
        Err(e)
            if e.as_service_error()
                .is_some_and(|e| e.is_resource_already_exists_exception()) => {}
        Err(e) => return Err(anyhow::Error::new(e).context(format!("cannot create the bus {bus}"))),
    }
    let rule = format!("{prefix}-every-job-end");
    bridge
        .put_rule()
        .name(&rule)
        .event_bus_name(&bus)
        .event_pattern(serde_json::json!({"source": [crate::events::SOURCE]}).to_string())
        .send()
        .await
        .with_context(|| format!("cannot create the rule {rule}"))?;
    bridge
        .put_targets()
        .rule(&rule)
        .event_bus_name(&bus)
        .targets(
            aws_sdk_eventbridge::types::Target::builder()
                .id("inbox")
                .arn(&inbox_arn)
                .build()?,
        )
        .send()
        .await
        .with_context(|| format!("cannot point the rule {rule} at the inbox"))?;
    let error_topic = topics.pop();
    let success_topic = topics.pop();
    Ok(EventResources {
        targets: crate::events::EventTargets {
            success_topic,
            error_topic,
            bus: Some(bus),
        },
        inbox_url,
    })
}

/// Creates (or finds) the payload bucket of `prefix` ([`bucket_name`]).
async fn ensure_bucket(aws: &SdkConfig, prefix: &str) -> anyhow::Result<String> {
    ensure_named_bucket(aws, &bucket_name(prefix)).await
}

/// Creates (or finds) the bucket `bucket`.
async fn ensure_named_bucket(aws: &SdkConfig, bucket: &str) -> anyhow::Result<String> {
    use aws_sdk_s3::types::{BucketLocationConstraint, CreateBucketConfiguration};
    let bucket = bucket.to_owned();
    let s3 = crate::payload::Payloads::from_sdk(aws, &bucket);
    if s3
        .client()
        .head_bucket()
        .bucket(&bucket)
        .send()
        .await
        .is_ok()
    {
        return Ok(bucket);
    }
    let mut create = s3.client().create_bucket().bucket(&bucket);
    // us-east-1 takes no location constraint; every other region needs its own.
    if let Some(region) = aws
        .region()
        .map(|r| r.as_ref())
        .filter(|r| *r != "us-east-1")
    {
        create = create.create_bucket_configuration(
            CreateBucketConfiguration::builder()
                .location_constraint(BucketLocationConstraint::from(region))
                .build(),
        );
    }
    match create.send().await {
        Ok(_) => Ok(bucket),
        Err(e)
            if e.as_service_error()
                .is_some_and(|e| e.is_bucket_already_owned_by_you()) =>
        {
            Ok(bucket)
        }
        Err(e) => Err(anyhow::Error::new(e).context(format!("cannot create the bucket {bucket}"))),
    }
}

/// The identity every local request carries.
pub const LOCAL_IDENTITY: &str = "arn:aws:iam::000000000000:user/local";

/// Serves the API on `listener` until `shutdown` completes. Every request is handled by
/// [`Api::handle`] as if API Gateway's IAM authorizer had vouched for [`LOCAL_IDENTITY`].
pub async fn serve(
    api: Api,
    listener: TcpListener,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    tokio::pin!(shutdown);
    let connections = tokio_util::task::TaskTracker::new();
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => accepted?,
            () = &mut shutdown => break,
        };
        let api = api.clone();
        connections.spawn(async move {
            let service = service_fn(move |req| {
                let api = api.clone();
                async move { Ok::<_, Infallible>(handle(&api, req, peer).await) }
            });
            if let Err(e) = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await
            {
                tracing::debug!(error = %e, "connection closed");
            }
        });
    }
    connections.close();
    // In-flight requests (a long-poll may take 25 s) get a moment to finish.
    let _ = tokio::time::timeout(Duration::from_secs(2), connections.wait()).await;
    Ok(())
}

/// Whether `Host` names this machine's loopback: `localhost`, an address in 127.0.0.0/8 or
/// `[::1]`, with or without a port. Anything else is a page elsewhere reaching the local server
/// through DNS rebinding. Pure.
pub fn is_loopback_host(host: Option<&str>) -> bool {
    let Some(host) = host.map(str::trim) else {
        return false;
    };
    let name = match host.strip_prefix('[') {
        Some(rest) => match rest.split_once(']') {
            Some((inside, after)) if after.is_empty() || after.starts_with(':') => inside,
            _ => return false,
        },
        None => host.rsplit_once(':').map_or(host, |(name, _)| name),
    };
    name.eq_ignore_ascii_case("localhost")
        || name
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

async fn handle(
    api: &Api,
    req: hyper::Request<Incoming>,
    peer: SocketAddr,
) -> hyper::Response<Full<Bytes>> {
    let host = req
        .headers()
        .get(hyper::header::HOST)
        .and_then(|h| h.to_str().ok())
        .or_else(|| req.uri().authority().map(|a| a.as_str()));
    if !is_loopback_host(host) {
        tracing::warn!(?host, %peer, "refused a request for a host that is not loopback");
        return to_hyper(crate::api::respond_error(ApiError::ForbiddenHost(
            host.unwrap_or("").chars().take(100).collect(),
        )));
    }
    let (parts, body) = req.into_parts();
    let bytes = match Limited::new(body, api::MAX_BODY_BYTES).collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => {
            return to_hyper(crate::api::respond_error(ApiError::PayloadTooLarge(
                format!(
                "the request body is over {} bytes; a job's input must fit in one queue message",
                api::MAX_BODY_BYTES
            ),
            )))
        }
    };
    let query: std::collections::HashMap<String, Vec<String>> =
        parse_query(parts.uri.query().unwrap_or(""));
    // As in AWS, the request runs with its function's deadline, and is stopped at it.
    let timeout = function_timeout(&parts.method, parts.uri.path());
    let mut context = lambda_http::Context::default();
    context.deadline = (std::time::SystemTime::now() + timeout)
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    let req = lambda_http::Request::from_parts(parts, Body::from(bytes.to_vec()))
        .with_query_string_parameters(query)
        .with_request_context(api::local_context(LOCAL_IDENTITY))
        .with_lambda_context(context);
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let resp = match tokio::time::timeout(timeout, api.handle(req)).await {
        Ok(resp) => resp,
        Err(_) => {
            tracing::error!(%method, path, ?timeout, "the request ran past its function's timeout and was stopped, as Lambda stops it");
            return function_timed_out();
        }
    };
    tracing::debug!(%method, path, %peer, status = resp.status().as_u16(), "request");
    to_hyper(resp)
}

/// The deployed timeout of the function that serves a route in AWS: submit's for `POST /jobs`,
/// status's for the rest. Pure.
pub fn function_timeout(method: &hyper::Method, path: &str) -> Duration {
    let path = path.trim_end_matches('/');
    if method == hyper::Method::POST && (path == "/jobs" || path.starts_with("/uploads")) {
        crate::limits::SUBMIT_FUNCTION_TIMEOUT
    } else {
        crate::limits::STATUS_FUNCTION_TIMEOUT
    }
}

/// What API Gateway answers when the function behind a route is stopped at its timeout.
fn function_timed_out() -> hyper::Response<Full<Bytes>> {
    hyper::Response::builder()
        .status(500)
        .header(hyper::header::CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from_static(
            br#"{"message":"Internal Server Error"}"#,
        )))
        .expect("a fixed response builds")
}

fn to_hyper(resp: lambda_http::Response<Body>) -> hyper::Response<Full<Bytes>> {
    let (parts, body) = resp.into_parts();
    let bytes = match body {
        Body::Empty => Bytes::new(),
        Body::Text(t) => Bytes::from(t),
        Body::Binary(b) => Bytes::from(b),
        _ => Bytes::new(),
    };
    hyper::Response::from_parts(parts, Full::new(bytes))
}

/// `a=1&b=x%20y` → `{a: [1], b: ["x y"]}`.
fn parse_query(q: &str) -> std::collections::HashMap<String, Vec<String>> {
    let mut out: std::collections::HashMap<String, Vec<String>> = Default::default();
    for pair in q.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        out.entry(percent_decode(k))
            .or_default()
            .push(percent_decode(v));
    }
    out
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).ok();
                match hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                    Some(b) => {
                        out.push(b);
                        i += 2;
                    }
                    None => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_loopback_hosts_are_served() {
        let cases = [
            (Some("127.0.0.1:8080"), true),
            (Some("127.0.0.1"), true),
            (Some("127.1.2.3:80"), true),
            (Some("localhost:8080"), true),
            (Some("LOCALHOST"), true),
            (Some("[::1]:8080"), true),
            (Some("[::1]"), true),
            (None, false),
            (Some(""), false),
            (Some("attacker.example"), false),
            (Some("localhost.attacker.example"), false),
            (Some("127.0.0.1.nip.io:8080"), false),
            (Some("10.0.0.1:8080"), false),
            (Some("[::1]evil"), false),
            (Some("[2001:db8::1]:80"), false),
        ];
        for (host, want) in cases {
            assert_eq!(is_loopback_host(host), want, "{host:?}");
        }
    }

    #[test]
    fn queries_are_decoded() {
        let q = parse_query("wait=10&x=a%20b&x=c+d&flag&bad=%zz&end=%4");
        assert_eq!(q["wait"], ["10"]);
        assert_eq!(q["x"], ["a b", "c d"]);
        assert_eq!(q["flag"], [""]);
        assert_eq!(q["bad"], ["%zz"]);
        assert_eq!(q["end"], ["%4"]);
    }
}
