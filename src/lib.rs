//! sluice: asynchronous compute on AWS. Callers submit jobs over HTTP; the jobs are recorded in
//! DynamoDB and queued in SQS; workers on ECS Fargate run them and store their results.
//!
//! This library holds what every sluice binary shares: the job model and its state machine,
//! the HTTP API's handlers, the DynamoDB, SQS and S3 adapters, configuration, and the HTTP client
//! behind the `sluice` command.

pub mod api;
pub mod aws;
pub mod backlog;
pub mod client;
pub mod clock;
pub mod cloudwatch;
pub mod config;
pub mod deadletter;
pub mod ecs;
pub mod env;
pub mod events;
pub mod ingest;
pub mod job;
pub mod limits;
pub mod local;
pub mod nudge;
pub mod outbox;
pub mod output;
pub mod payload;
pub mod pipeline;
pub mod queue;
pub mod reference;
pub mod scaling;
pub mod store;
pub mod sweep;
pub mod telemetry;
pub mod time;
pub mod upload;
pub mod webhook;
