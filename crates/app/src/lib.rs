//! # pixpress-app — ports and use cases
//!
//! pixpress takes a CSV of products and their image URLs, downloads every image, compresses it
//! (JPEG quality 50 by default), stores it, and produces an output CSV with the new URLs in
//! input order, asynchronously, with a status API and a signed completion webhook.
//!
//! This crate holds the ports (traits the adapters implement) and the use cases two or more
//! functions share; the pure model is in `pixpress_domain`. The flow:
//!
//! 1. `api` (`POST /uploads`) → [`ingest::accept_upload`], then `s3-ingest` (object under
//!    `uploads/`) → [`ingest::ingest_object`], streaming and fanned out in chunks: validate the CSV
//!    (`pixpress_domain::input_csv`), record the request and its rows ([`ports::RequestRepository`]),
//!    enqueue one `pixpress_domain::model::RowJob` per row ([`ports::RowQueue`]).
//! 2. `row-worker` per job: download each URL with the guarded `pixpress_fetch::Fetcher`, compress it
//!    with `pixpress_engine`, store it ([`ports::ObjectStore`]), record the row outcome; the
//!    last row flips the request to a terminal status with one conditional write.
//! 3. `completion-notifier`, on the stream record of that flip: write the output CSV
//!    (`pixpress_domain::output_csv`) and POST the signed webhook (`pixpress_domain::webhook`).
//!
//! Failure semantics: bad input is rejected whole with every issue listed; a bad image is a
//! recorded per-image failure with a stable code; transient trouble is retried by the queue and
//! the last permitted attempt records the failure, so no request stays `PROCESSING`.
//!
//! ## Module map
//! - [`ports`] — repository, queue, object-store and origin-slot traits.
//! - [`auth`] — API keys and tenants, and the key-store port.
//! - [`ingest`] — the ingest use cases (direct upload, uploaded object, chunk expansion, retry).
//! - [`retry`] — in-process retries of throttling and transaction conflicts (jittered backoff).
//! - [`limits`] — AWS's documented limits, honoured by the AWS adapters and enforced by the
//!   embedded ones.
//! - [`config`] — typed configuration from environment variables ([`config::vars`]).
//! - [`deadline`] — an invocation's remaining time.
//! - [`sqs_batch`] — the partial-batch loop of the SQS-triggered functions.
//! - [`telemetry`] — logging set-up of the Lambda entry points.

pub mod auth;
pub mod config;
pub mod deadline;
pub mod ingest;
pub mod limits;
pub mod ports;
pub mod retry;
pub mod sqs_batch;
pub mod sweep;
pub mod telemetry;
