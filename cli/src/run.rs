//! `pixpress run`: one CSV through the local pipeline, with progress and a summary.

use pixpress_app::ports::RequestReader as _;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use aws_lambda_events::event::s3::S3EventRecord;
use futures::StreamExt as _;
use indicatif::{ProgressBar, ProgressStyle};
use pixpress_app::ingest::check_webhook_url;
use pixpress_app::ports::{MultipartWriter, ObjectStore};
use pixpress_domain::model::{
    DEFAULT_TENANT, ImageStatus, OutputFormat, OutputSpec, RequestMeta, UploadOptions,
};
use pixpress_domain::storage_keys::{
    derived_request_id, images_prefix, pending_upload_key, presigned_upload_key,
};
use pixpress_s3_ingest::RecordOutcome;
use tokio::io::AsyncReadExt as _;

use crate::pipeline::{Pipeline, PumpBackend, Upload, UploadQuery};

/// Options of one run.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// The request's options, as `POST /uploads` takes them (webhook, format, quality, size,
    /// scoring).
    pub upload: UploadQuery,
    /// Show a progress bar on stderr.
    pub progress: bool,
    /// Skip the final status document with every product (`--json` needs it; a summary of a
    /// million-row run does not).
    pub summary_only: bool,
}

/// What a finished run produced.
#[derive(Debug, Clone)]
pub struct RunReport {
    /// The request at the end.
    pub meta: RequestMeta,
    /// `<out>/output.csv`.
    pub output_csv: Option<PathBuf>,
    /// Where the compressed images are: the bucket's URL of `images/<tenant>/<request_id>/`.
    pub images: String,
    /// Wall time from upload to completion handled.
    pub elapsed: Duration,
    /// Failed images per error code.
    pub failures_by_code: BTreeMap<String, u64>,
    /// The final `GET /requests/{id}` document (`null` with [`RunOptions::summary_only`]).
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

/// Attempts at uploading when the API answers a server error (`503`: storage throttled after
/// its own retries; `500`: the invocation failed or timed out).
const UPLOAD_ATTEMPTS: u32 = 5;

/// The `Idempotency-Key` of a run: derived from the CSV and the options, so a retried upload
/// finds the request the first attempt created, and the same input always gets the same
/// request id (and so the same output URLs).
fn idempotency_key(csv: &[u8], options: &RunOptions) -> String {
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(csv);
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    run_request_id(&hex, options)
}

/// The id a run of a CSV with SHA-256 `hex` and `options` gets.
fn run_request_id(hex: &str, options: &RunOptions) -> String {
    derived_request_id(&[
        "pixpress-run",
        hex,
        options.upload.webhook_url.as_deref().unwrap_or_default(),
        &options
            .upload
            .quality
            .map(|q| q.to_string())
            .unwrap_or_default(),
        options
            .upload
            .format
            .map(OutputFormat::name)
            .unwrap_or_default(),
        match options.upload.score {
            Some(false) => "unscored",
            _ => "",
        },
        &options
            .upload
            .max_dimension
            .map(|m| m.to_string())
            .unwrap_or_default(),
    ])
}

/// Uploads `csv` through the API handler (retrying a server error with the same
/// `Idempotency-Key`, as a client should) and pumps the pipeline until the request is done; copies the output CSV to
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
            .upload_csv_with_key(csv.clone(), &options.upload, Some(&key))
            .await?;
        match upload {
            Upload::Rejected { status, .. } if status >= 500 && attempt < UPLOAD_ATTEMPTS => {
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
    finish_run(pipeline, &request_id, started, options).await
}

/// Bytes per part when a catalogue is copied into the bucket (S3 parts: 5 MiB to 5 GiB).
const UPLOAD_PART_BYTES: usize = 8 * 1024 * 1024;

/// Runs the CSV file at `path`. A file within the API's limits (bytes and rows) goes through
/// `POST /uploads` ([`run_csv`]); a larger one — a catalogue of up to `MAX_UPLOAD_BYTES` (1 GiB) and
/// `MAX_UPLOAD_ROWS` (1,000,000) — takes the S3 path as a presigned upload would: copied
/// into the bucket in parts, validated in one streaming pass and expanded in chunks by
/// `s3-ingest`. Memory stays bounded either way: the file is never read whole.
///
/// # Errors
/// When the file cannot be read or a handler fails.
pub async fn run_file<B: PumpBackend>(
    pipeline: &Pipeline<B>,
    path: &Path,
    options: &RunOptions,
) -> anyhow::Result<RunOutcome> {
    let size = tokio::fs::metadata(path)
        .await
        .with_context(|| format!("reading {}", path.display()))?
        .len();
    if size <= pipeline.api.config.csv.max_bytes as u64 {
        let bytes = tokio::fs::read(path)
            .await
            .with_context(|| format!("reading {}", path.display()))?;
        match run_csv(pipeline, bytes, options).await? {
            // Small in bytes but over the API's row limit: the S3 path takes it.
            RunOutcome::Rejected { problem, .. } if has_too_many_rows(&problem) => {}
            outcome => return Ok(outcome),
        }
    }
    run_catalogue(pipeline, path, options).await
}

/// `true` when a rejection of `POST /uploads` lists `too_many_rows` (more rows than the API
/// takes; the S3 path takes up to `MAX_UPLOAD_ROWS`).
#[must_use]
pub fn has_too_many_rows(problem: &serde_json::Value) -> bool {
    problem["errors"]
        .as_array()
        .is_some_and(|errors| errors.iter().any(|e| e["code"] == "too_many_rows"))
}

/// A `400 invalid-csv`-style problem, as `POST /uploads` answers, for a rejected catalogue.
fn rejection_problem(
    slug: &str,
    title: &str,
    detail: String,
    errors: serde_json::Value,
) -> RunOutcome {
    RunOutcome::Rejected {
        status: 400,
        problem: serde_json::json!({
            "type": format!("urn:pixpress:problem:{slug}"),
            "title": title,
            "status": 400,
            "detail": detail,
            "errors": errors,
        }),
    }
}

/// The S3 path of [`run_file`].
async fn run_catalogue<B: PumpBackend>(
    pipeline: &Pipeline<B>,
    path: &Path,
    options: &RunOptions,
) -> anyhow::Result<RunOutcome> {
    use sha2::{Digest, Sha256};
    let started = Instant::now();
    let open = || async {
        tokio::fs::File::open(path)
            .await
            .with_context(|| format!("reading {}", path.display()))
    };
    // The request id: from the file's digest and the options, as for a small file.
    let mut digest = Sha256::new();
    let mut file = open().await?;
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        digest.update(&buf[..n]);
    }
    let hex: String = digest
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    // The id `POST /uploads` gives this run's idempotency key, so a file names the same
    // request (and the same output URLs) on either path.
    let request_id = derived_request_id(&[
        "idempotency-key",
        DEFAULT_TENANT,
        &run_request_id(&hex, options),
    ]);
    let ingest = &pipeline.s3_ingest;
    let default = ingest.config.output;
    let output_spec = {
        match OutputSpec::from_options(
            default,
            options.upload.format,
            options.upload.quality,
            options.upload.max_dimension,
        ) {
            Ok(spec) => OutputSpec {
                score: options.upload.score.unwrap_or(spec.score),
                ..spec
            },
            Err(e) => {
                return Ok(rejection_problem(
                    "invalid-options",
                    "Invalid options",
                    e,
                    serde_json::json!([]),
                ));
            }
        }
    };
    let webhook_url = match &options.upload.webhook_url {
        Some(url) => match check_webhook_url(url, ingest.config.egress) {
            Ok(url) => Some(url),
            Err(e) => {
                return Ok(rejection_problem(
                    "invalid-webhook-url",
                    "Invalid webhook URL",
                    e,
                    serde_json::json!([]),
                ));
            }
        },
        None => None,
    };
    let store = pipeline.store();
    let upload_options = UploadOptions {
        webhook_url,
        output_spec,
    };
    store
        .put(
            &pending_upload_key(DEFAULT_TENANT, &request_id),
            serde_json::to_vec(&upload_options)?.into(),
            "application/json",
        )
        .await?;
    // The file into the bucket, a part at a time.
    let key = presigned_upload_key(DEFAULT_TENANT, &request_id);
    let mut writer = MultipartWriter::start(store, &key, "text/csv", UPLOAD_PART_BYTES).await?;
    let mut file = open().await?;
    loop {
        let n = file.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        writer.write(&buf[..n]).await?;
    }
    if let Err(e) = writer.finish().await {
        // Nothing names this upload: drop its parts.
        let _ = writer.abort().await;
        return Err(e.into());
    }
    let mut record = S3EventRecord::default();
    record.event_name = Some("ObjectCreated:CompleteMultipartUpload".to_owned());
    record.s3.bucket.name = Some("local".to_owned());
    record.s3.object.key = Some(key.clone());
    let outcome = pipeline
        .ingest_upload(&record)
        .await
        .with_context(|| format!("ingesting {key}"))?;
    match outcome {
        RecordOutcome::Ingested(ingested) => {
            finish_run(pipeline, &ingested.meta.request_id, started, options).await
        }
        RecordOutcome::Rejected { issues, .. } => Ok(rejection_problem(
            "invalid-csv",
            "Invalid CSV",
            format!(
                "the CSV has {} error(s); nothing was processed — fix them and upload again",
                issues.len()
            ),
            serde_json::to_value(&issues)?,
        )),
        RecordOutcome::Ignored => anyhow::bail!("{key} was not ingested"),
    }
}

/// Pumps the pipeline until request `request_id` is done and gathers the report.
async fn finish_run<B: PumpBackend>(
    pipeline: &Pipeline<B>,
    request_id: &str,
    started: Instant,
    options: &RunOptions,
) -> anyhow::Result<RunOutcome> {
    let request_id = request_id.to_owned();
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
            let mut object = pipeline
                .store()
                .open(key, None)
                .await?
                .context("the output CSV is recorded but missing")?;
            let path = data_dir.join("output.csv");
            let mut file = tokio::fs::File::create(&path)
                .await
                .with_context(|| format!("writing {}", path.display()))?;
            while let Some(piece) = object.body.next().await {
                tokio::io::AsyncWriteExt::write_all(&mut file, &piece?)
                    .await
                    .with_context(|| format!("writing {}", path.display()))?;
            }
            tokio::io::AsyncWriteExt::flush(&mut file).await?;
            Some(path)
        }
        None => None,
    };
    let mut failures_by_code = BTreeMap::new();
    // Page by page: a catalogue's rows never sit in memory at once.
    let mut after = None;
    loop {
        let page = pipeline.repo().list_rows(&request_id, after, 1000).await?;
        for image in page
            .rows
            .iter()
            .flat_map(|row| &row.images)
            .filter(|i| i.status == ImageStatus::Failed)
        {
            *failures_by_code
                .entry(image.error_code.clone().unwrap_or_default())
                .or_insert(0) += 1;
        }
        match page.next {
            Some(next) => after = Some(next),
            None => break,
        }
    }
    let status_document = if options.summary_only {
        serde_json::Value::Null
    } else {
        pipeline.status_document(&request_id).await?
    };
    let meta = pipeline
        .repo()
        .get_request(&request_id)
        .await?
        .unwrap_or(meta);
    let images = pipeline
        .store()
        .public_url(&images_prefix(&meta.tenant, &request_id));
    Ok(RunOutcome::Finished(Box::new(RunReport {
        meta,
        output_csv,
        images,
        elapsed,
        failures_by_code,
        status_document,
    })))
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
    text.push_str(&crate::client::bytes_line(c.bytes_in, c.bytes_out));
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
