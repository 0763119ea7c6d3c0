//! `pixpress run`: one CSV through the local pipeline, with progress and a summary.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use indicatif::{ProgressBar, ProgressStyle};
use pixpress::domain::keys::{IMAGES_PREFIX, derived_request_id};
use pixpress::domain::model::{ImageStatus, RequestMeta};
use pixpress::ingest::load_all_rows;
use pixpress::ports::{ObjectStore, RequestRepository};

use crate::pipeline::{Pipeline, PumpBackend, Upload};

/// Options of one run.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// Completion webhook target.
    pub webhook_url: Option<String>,
    /// JPEG quality for this request (1–100).
    pub quality: Option<u8>,
    /// Longest output side in pixels.
    pub max_dimension: Option<u32>,
    /// Show a progress bar on stderr.
    pub progress: bool,
}

/// What a finished run produced.
#[derive(Debug, Clone)]
pub struct RunReport {
    /// The request at the end.
    pub meta: RequestMeta,
    /// `<out>/output.csv`.
    pub output_csv: Option<PathBuf>,
    /// Where the compressed images are: the bucket's URL of `images/<request_id>`.
    pub images: String,
    /// Wall time from upload to completion handled.
    pub elapsed: Duration,
    /// Failed images per error code.
    pub failures_by_code: BTreeMap<String, u64>,
    /// The final `GET /requests/{id}` document.
    pub status_document: serde_json::Value,
}

/// How a run ended.
#[derive(Debug, Clone)]
pub enum RunOutcome {
    /// The request reached a terminal status.
    Finished(Box<RunReport>),
    /// The API rejected the upload.
    Rejected {
        /// HTTP status.
        status: u16,
        /// The problem details document.
        problem: serde_json::Value,
    },
}

/// Attempts at uploading when the API answers `503` (storage throttled after its own retries).
const UPLOAD_ATTEMPTS: u32 = 5;

/// The `Idempotency-Key` of a run: derived from the CSV and the options, so a retried upload
/// finds the request the first attempt created, and the same input always gets the same
/// request id (and so the same output URLs).
fn idempotency_key(csv: &[u8], options: &RunOptions) -> String {
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(csv);
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    derived_request_id(&[
        "pixpress-run",
        &hex,
        options.webhook_url.as_deref().unwrap_or_default(),
        &options.quality.map(|q| q.to_string()).unwrap_or_default(),
        &options
            .max_dimension
            .map(|m| m.to_string())
            .unwrap_or_default(),
    ])
}

/// Uploads `csv` through the API handler (retrying a `503` with the same `Idempotency-Key`, as
/// a client should) and pumps the pipeline until the request is done; copies the output CSV to
/// `<data_dir>/output.csv` (`data_dir` of the pipeline's options).
///
/// # Errors
/// When a handler fails or the output cannot be written.
pub async fn run_csv<B: PumpBackend>(
    pipeline: &Pipeline<B>,
    csv: Vec<u8>,
    options: &RunOptions,
) -> anyhow::Result<RunOutcome> {
    let started = Instant::now();
    let key = idempotency_key(&csv, options);
    let mut attempt = 1;
    let upload = loop {
        let upload = pipeline
            .upload_csv_with_key(
                csv.clone(),
                options.webhook_url.as_deref(),
                options.quality,
                options.max_dimension,
                Some(&key),
            )
            .await?;
        match upload {
            Upload::Rejected { status: 503, .. } if attempt < UPLOAD_ATTEMPTS => {
                tokio::time::sleep(Duration::from_millis(100 << attempt)).await;
                attempt += 1;
            }
            other => break other,
        }
    };
    let request_id = match upload {
        Upload::Accepted { request_id, .. } => request_id,
        Upload::Rejected { status, problem } => {
            return Ok(RunOutcome::Rejected { status, problem });
        }
    };
    let bar = if options.progress {
        ProgressBar::new(0)
    } else {
        ProgressBar::hidden()
    };
    bar.set_style(
        ProgressStyle::with_template(
            "{spinner} [{elapsed_precise}] {bar:40} {pos}/{len} images {msg}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let meta = pipeline
        .run_until_done(&request_id, |meta| {
            let c = meta.counters;
            bar.set_length(c.images_total);
            bar.set_position(c.images_ok + c.images_failed);
            bar.set_message(format!(
                "({} failed) {}",
                c.images_failed,
                meta.status.as_str()
            ));
        })
        .await?;
    bar.finish_and_clear();
    let elapsed = started.elapsed();
    let data_dir = pipeline.options().data_dir.clone();
    let output_csv = match &meta.output_csv_key {
        Some(key) => {
            tokio::fs::create_dir_all(&data_dir)
                .await
                .with_context(|| format!("creating {}", data_dir.display()))?;
            let object = pipeline
                .store()
                .get(key, u64::MAX)
                .await?
                .context("the output CSV is recorded but missing")?;
            let path = data_dir.join("output.csv");
            tokio::fs::write(&path, &object.bytes)
                .await
                .with_context(|| format!("writing {}", path.display()))?;
            Some(path)
        }
        None => None,
    };
    let mut failures_by_code = BTreeMap::new();
    for row in load_all_rows(pipeline.repo(), &request_id).await? {
        for image in row
            .images
            .iter()
            .filter(|i| i.status == ImageStatus::Failed)
        {
            *failures_by_code
                .entry(image.error_code.clone().unwrap_or_default())
                .or_insert(0) += 1;
        }
    }
    let status_document = pipeline.status_document(&request_id).await?;
    let meta = pipeline
        .repo()
        .get_request(&request_id)
        .await?
        .unwrap_or(meta);
    Ok(RunOutcome::Finished(Box::new(RunReport {
        meta,
        output_csv,
        images: pipeline
            .store()
            .public_url(&format!("{IMAGES_PREFIX}{request_id}")),
        elapsed,
        failures_by_code,
        status_document,
    })))
}

fn megabytes(bytes: u64) -> f64 {
    bytes as f64 / 1_000_000.0
}

/// A human summary of a finished run.
#[must_use]
pub fn summary(report: &RunReport) -> String {
    let c = report.meta.counters;
    let secs = report.elapsed.as_secs_f64().max(1e-9);
    let mut text = format!(
        "request {}: {}\n  rows: {} of {}\n  images: {} ok, {} failed of {} ({:.1} images/s)\n",
        report.meta.request_id,
        report.meta.status.as_str(),
        c.rows_done,
        c.rows_total,
        c.images_ok,
        c.images_failed,
        c.images_total,
        (c.images_ok + c.images_failed) as f64 / secs,
    );
    for (code, count) in &report.failures_by_code {
        text.push_str(&format!("    {code}: {count}\n"));
    }
    if c.bytes_in > 0 {
        text.push_str(&format!(
            "  bytes: {:.2} MB in → {:.2} MB out ({:.1}% of input)\n",
            megabytes(c.bytes_in),
            megabytes(c.bytes_out),
            c.bytes_out as f64 * 100.0 / c.bytes_in as f64
        ));
    }
    text.push_str(&format!(
        "  elapsed: {:.2} s\n",
        report.elapsed.as_secs_f64()
    ));
    if let Some(path) = &report.output_csv {
        text.push_str(&format!("  output CSV: {}\n", path.display()));
    }
    text.push_str(&format!("  images: {}\n", report.images));
    if let Some(webhook) = &report.meta.webhook {
        text.push_str(&format!(
            "  webhook: {:?} after {} attempt(s) to {}\n",
            webhook.state,
            webhook.attempts.len(),
            webhook.url
        ));
    }
    text
}

/// Every CSV error of a rejected upload, one per line: `row N, column C: [code] message`.
#[must_use]
pub fn rejection_text(status: u16, problem: &serde_json::Value) -> String {
    let mut text = format!(
        "upload rejected ({status}): {}\n",
        problem["detail"].as_str().unwrap_or("no detail")
    );
    for error in problem["errors"].as_array().into_iter().flatten() {
        let row = error["row"]
            .as_u64()
            .map_or_else(|| "file".to_owned(), |r| format!("row {r}"));
        let column = error["column"]
            .as_str()
            .map(|c| format!(", column {c}"))
            .unwrap_or_default();
        text.push_str(&format!(
            "  {row}{column}: [{}] {}\n",
            error["code"].as_str().unwrap_or_default(),
            error["message"].as_str().unwrap_or_default()
        ));
    }
    if let Some(omitted) = problem["errors_omitted"].as_u64() {
        text.push_str(&format!("  … and {omitted} more\n"));
    }
    text
}
