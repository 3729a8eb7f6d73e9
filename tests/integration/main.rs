//! Integration tests against a real AWS emulator process (moto in server mode) that the harness
//! starts on a free loopback port. Every test makes its own table and queues.

mod api;
mod compute;
mod examples;
mod http;
mod scaling;
mod store;
mod support;
mod worker;
