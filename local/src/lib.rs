//! # pixpress-local — the whole pipeline in one process
//!
//! Builds the function apps over one backend — embedded (a repository with a change log, a
//! queue and dead-letter queue with SQS semantics, their rows and messages in files under the
//! data directory, which is the bucket)
//! or the AWS adapters against an emulator — and pumps them with synthesised
//! `aws_lambda_events` / `lambda_http` values, calling the very `handle` functions that run in
//! Lambda:
//!
//! 1. [`pipeline::Pipeline::upload_csv`] → `api` handler (`POST /uploads`), which stores the
//!    CSV under `uploads/`;
//! 2. [`pipeline::Pipeline::start_pump`]: the uploads written through [`bucket_events`] →
//!    `s3-ingest` as S3 events, rows queue → `row-worker` invocations (several in
//!    flight; failed messages stay invisible for the visibility timeout, then return, then go to
//!    the dead-letter queue), dead-letter queue → `row-dead-letter`, and the change log →
//!    `completion-notifier` as DynamoDB stream events;
//! 3. [`faults`]: AWS's failure modes injected on request (`pixpress run --faults`);
//! 4. against an emulator: [`emulator`] provisions the table, queues and bucket as the template
//!    declares them, [`sqs`] receives like the event source mapping, [`stream`] reads the
//!    table's stream.
//!
//! Linked by the `pixpress` CLI and the tests, never by a Lambda function.

pub mod any_key_store;
pub mod bucket_events;
pub mod compose;
pub mod emulator;
pub mod events;
pub mod faults;
pub mod pipeline;
pub mod sqs;
pub mod stream;

pub use any_key_store::AnyKeyStore;
