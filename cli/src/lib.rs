//! # pixpress CLI — the whole pipeline in one process
//!
//! Builds the four function apps over embedded backends (in-memory repository with a change
//! log, in-memory queue with SQS semantics, a directory as the bucket) and pumps them with
//! synthesised `aws_lambda_events` / `lambda_http` values, calling the very `handle`
//! functions that run in Lambda:
//!
//! 1. [`pipeline::LocalPipeline::upload_csv`] → `api` handler (`POST /uploads`);
//! 2. [`pipeline::LocalPipeline::pump_once`]: queue → `row-worker` batches (failed messages
//!    stay invisible for the visibility timeout, then return, then go to the DLQ), and the
//!    repository's change log → `completion-notifier` as DynamoDB stream events;
//! 3. [`run::run_csv`] ties them together with progress and a summary.
//!
//! Commands: `run`, `demo` ([`demo`]), `serve` ([`serve`]) and `invoke` ([`invoke`]).

pub mod demo;
pub mod events;
pub mod invoke;
pub mod pipeline;
pub mod run;
pub mod serve;
