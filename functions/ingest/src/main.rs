//! The ingest function: the pipeline's trigger. S3 sends an event for each object created under
//! the pipeline's input prefix to the events queue, and Lambda's SQS event source hands them
//! over in small batches; each object becomes one job (`sluice::ingest`). The answer is a
//! partial batch response: an event whose objects could not all become jobs is read again (and
//! goes to the events' dead-letter queue after a few tries), an event that is not an S3 event is
//! logged and dropped, and the rest are deleted.

use aws_lambda_events::event::sqs::{SqsBatchResponse, SqsEvent};
use lambda_runtime::{run, service_fn, Error, LambdaEvent};
use sluice::ingest::{Ingest, IngestConfig};
use sluice::payload::Payloads;
use sluice::queue::JobQueue;
use sluice::store::JobStore;

#[tokio::main]
async fn main() -> Result<(), Error> {
    sluice::telemetry::init();
    let config = IngestConfig::from_env()?;
    let aws = sluice::aws::load().await;
    let ingest = Ingest {
        store: JobStore::from_sdk(&aws, &config.table_name).publishing(config.publishes),
        queue: JobQueue::from_sdk(&aws, &config.queue_url),
        objects: Payloads::from_sdk(&aws, &config.pipeline.bucket),
        config: config.pipeline,
    };
    let ingest = &ingest;
    run(service_fn(move |event: LambdaEvent<SqsEvent>| async move {
        let messages = event.payload.records.iter().map(|r| {
            (
                r.message_id.as_deref(),
                r.body.as_deref().unwrap_or_default(),
            )
        });
        let mut response = SqsBatchResponse::default();
        response.set_failures(ingest.handle_batch(messages).await);
        Ok::<_, Error>(response)
    }))
    .await
}
