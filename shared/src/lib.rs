//! # pixpress — the shared core
//!
//! pixpress takes a CSV of products and their image URLs, downloads every image, compresses it
//! (JPEG quality 50 by default), stores it, and produces an output CSV with the new URLs in
//! input order, asynchronously, with a status API and a signed completion webhook.
//!
//! This crate holds the domain and everything two or more functions share. The flow:
//!
//! 1. `api` (`POST /uploads`) → [`ingest::ingest`], or `s3-ingest` (object under `uploads/`)
//!    → [`ingest::ingest_object`], streaming and fanned out in chunks: validate the CSV
//!    ([`domain::input_csv`]), record the request and its rows ([`ports::RequestRepository`]),
//!    enqueue one [`domain::model::RowJob`] per row ([`ports::RowQueue`]).
//! 2. `row-worker` per job: download each URL with the guarded `fetch::Fetcher`, compress it
//!    with the `image` engine, store it ([`ports::ObjectStore`]), record the row outcome; the
//!    last row flips the request to a terminal status with one conditional write.
//! 3. `completion-notifier`, on the stream record of that flip: write the output CSV
//!    ([`domain::output_csv`]) and POST the signed [`webhook`].
//!
//! Failure semantics: bad input is rejected whole with every issue listed; a bad image is a
//! recorded per-image failure with a stable code; transient trouble is retried by the queue and
//! the last permitted attempt records the failure, so no request stays `PROCESSING`.
//!
//! ## Module map
//! - [`domain`] — pure: CSV contract, model, status rules, keys, item schema.
//! - `image` — the compression engine (pure, CPU-bound; `image::Engine` runs it off the
//!   runtime); feature `engine`, so only the row-worker links libjpeg-turbo and the image stack.
//! - [`fetch`] — the egress policy, per-host download limits and, with feature `fetch`, the
//!   guarded HTTP client (timeouts, byte caps).
//! - [`webhook`] — Standard Webhooks signing and payload.
//! - [`ports`] — repository, queue and object-store traits.
//! - [`ingest`] — the ingest use case.
//! - [`retry`] — in-process retries of throttling and transaction conflicts (jittered backoff).
//! - [`adapters`] — port implementations (`local`: embedded backends; `aws`; `limits`: AWS's
//!   documented limits, enforced by the embedded backends).
//! - [`config`] — typed configuration from environment variables ([`config::vars`]).
//! - [`telemetry`] — logging set-up of the Lambda entry points.

pub mod adapters;
pub mod auth;
pub mod config;
pub mod deadline;
pub mod domain;
pub mod fetch;
#[cfg(feature = "engine")]
pub mod image;
pub mod ingest;
pub mod ports;
pub mod retry;
pub mod telemetry;
pub mod tls;
pub mod webhook;
