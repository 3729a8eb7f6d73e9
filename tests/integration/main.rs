//! Integration tests against a real AWS emulator process (moto in server mode) that the harness
//! starts on a free loopback port. Every test makes its own table and queues.

mod api;
mod compute;
mod deadletter;
mod examples;
#[allow(dead_code)] // shared with the worker's tests, which use other parts
mod faults;
mod http;
mod ingest;
mod model;
mod payload;
mod pipeline;
mod references;
mod scaling;
mod store;
mod support;
mod uploads;
mod webhook;
mod worker;
