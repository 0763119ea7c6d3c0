//! # s3-ingest — ingests CSVs uploaded to the bucket
//!
//! Trigger: S3 `ObjectCreated` events for `uploads/*.csv` (large CSVs go straight to S3 with a
//! presigned PUT); locally, `pixpress invoke`-style tests feed `events/s3-ingest/*.json`.
//!
//! Per record:
//! 1. decode the object key (S3 event keys are form-encoded: `+` is a space, `%XX` a byte);
//! 2. ignore keys outside `uploads/` or not ending in `.csv` (outputs live under other
//!    prefixes, so a write of ours can never re-trigger this function);
//! 3. take the request id from the key of a presigned upload (`uploads/<request_id>.csv`, as
//!    `POST /upload-urls` issued it), else derive it from bucket, key and object version (or
//!    ETag); either way a duplicate event finds the same request and ingests once;
//! 4. read the object (size-capped) and run [`pixpress::ingest::ingest`], the same use case as
//!    `POST /uploads`.
//!
//! Failure semantics: an invalid or oversized CSV is recorded as a `FAILED` request whose
//! failure lists every CSV error, so the status API can explain it; storage failures return
//! `Err` so Lambda's asynchronous retries run the event again (idempotent by step 3).
//!
//! Env vars: `MAX_CSV_BYTES`, `MAX_ROWS`, `MAX_URLS_PER_ROW`, `MAX_URL_LENGTH`, `JPEG_QUALITY`,
//! `MAX_OUTPUT_DIMENSION`.

use aws_lambda_events::event::s3::{S3Event, S3EventRecord};
use chrono::{DateTime, Utc};
use lambda_runtime::LambdaEvent;
use percent_encoding::percent_decode_str;
use pixpress::config::Config;
use pixpress::domain::input_csv::{CsvIssue, CsvLimits, CsvRejection};
use pixpress::domain::keys::{
    UPLOADS_PREFIX, derived_request_id, pending_upload_key, presigned_upload_of, tenant_of_upload,
};
use pixpress::domain::model::{
    Counters, DEFAULT_TENANT, Failure, OutputSpec, RequestMeta, RequestStatus, Source,
    UploadOptions,
};
use pixpress::fetch::NetworkPolicy;
use pixpress::ingest::{IngestError, IngestRequest, Ingested, ingest};
use pixpress::ports::{ObjectStore, PortError, RequestRepository, RowQueue};

/// Settings of the S3 ingest.
#[derive(Debug, Clone, Copy)]
pub struct IngestConfig {
    /// Upload limits.
    pub csv: CsvLimits,
    /// Output spec of S3 uploads.
    pub output: OutputSpec,
    /// What image URLs may reach; a URL it refuses outright is rejected with its row.
    pub egress: NetworkPolicy,
}

impl From<&Config> for IngestConfig {
    fn from(config: &Config) -> Self {
        Self {
            csv: config.csv,
            output: config.output,
            egress: config.fetch.policy,
        }
    }
}

/// The function's dependencies.
#[derive(Debug, Clone)]
pub struct App<R, Q, S> {
    /// Requests and rows.
    pub repo: R,
    /// Row jobs.
    pub queue: Q,
    /// The bucket the CSVs are read from.
    pub store: S,
    /// Settings.
    pub config: IngestConfig,
}

/// Decodes an S3 event object key: keys arrive URL-encoded in form style, `+` for a space.
///
/// # Errors
/// When the decoded bytes are not UTF-8.
pub fn decode_event_key(raw: &str) -> Result<String, std::str::Utf8Error> {
    let spaced = raw.replace('+', " ");
    percent_decode_str(&spaced)
        .decode_utf8()
        .map(|k| k.into_owned())
}

/// What happened to one record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RecordOutcome {
    /// Not an upload we ingest (other event, prefix or extension).
    Ignored,
    /// Ingested (or found already ingested).
    Ingested(Box<Ingested>),
    /// Rejected and recorded as a `FAILED` request.
    Rejected {
        /// The request id the rejection is recorded under.
        request_id: String,
        /// The CSV issues.
        issues: Vec<CsvIssue>,
    },
}

/// Why a record must be retried.
#[derive(Debug, thiserror::Error)]
pub enum S3IngestError {
    /// The key is not valid UTF-8 after decoding.
    #[error("object key is not UTF-8: {0}")]
    BadKey(#[from] std::str::Utf8Error),
    /// The object vanished between the event and the read.
    #[error("object {0} does not exist")]
    Missing(String),
    /// Repository, queue or store failure.
    #[error(transparent)]
    Storage(#[from] PortError),
}

async fn record_rejection<R: RequestRepository>(
    repo: &R,
    tenant: &str,
    request_id: &str,
    key: &str,
    output: OutputSpec,
    failure: Failure,
    now: DateTime<Utc>,
) -> Result<(), PortError> {
    let meta = RequestMeta {
        request_id: request_id.to_owned(),
        tenant: tenant.to_owned(),
        status: RequestStatus::Failed,
        source: Source::S3,
        source_key: Some(key.to_owned()),
        output_spec: output,
        counters: Counters::default(),
        webhook: None,
        output_csv_key: None,
        failure: Some(failure),
        fingerprint: None,
        created_at: now,
        updated_at: now,
        completed_at: Some(now),
    };
    repo.create_request(&meta, &[]).await.map(|_| ())
}

/// The options stored for presigned upload `request_id` of `tenant`, if any (a few hundred
/// bytes; a malformed object counts as none).
async fn pending_options<S: ObjectStore>(
    store: &S,
    tenant: &str,
    request_id: &str,
) -> Result<Option<UploadOptions>, PortError> {
    let key = pending_upload_key(tenant, request_id);
    Ok(store
        .get(&key, 64 * 1024)
        .await?
        .and_then(|object| serde_json::from_slice(&object.bytes).ok()))
}

/// Ingests one S3 event record.
///
/// # Errors
/// [`S3IngestError`] when the record should be retried.
pub async fn ingest_record<R, Q, S>(
    app: &App<R, Q, S>,
    record: &S3EventRecord,
) -> Result<RecordOutcome, S3IngestError>
where
    R: RequestRepository,
    Q: RowQueue,
    S: ObjectStore,
{
    let created = record
        .event_name
        .as_deref()
        .is_some_and(|name| name.starts_with("ObjectCreated"));
    let raw_key = record.s3.object.key.as_deref().unwrap_or_default();
    let key = decode_event_key(raw_key)?;
    if !created || !key.starts_with(UPLOADS_PREFIX) || !key.to_ascii_lowercase().ends_with(".csv") {
        return Ok(RecordOutcome::Ignored);
    }
    let bucket = record.s3.bucket.name.as_deref().unwrap_or_default();
    let version = record
        .s3
        .object
        .version_id
        .as_deref()
        .or(record.s3.object.e_tag.as_deref())
        .or(record.s3.object.sequencer.as_deref())
        .unwrap_or_default();
    // `uploads/<tenant>/…` belongs to that tenant (a presigned upload names its request id
    // too); a key directly under `uploads/` is the deployment's own drop.
    let tenant = tenant_of_upload(&key).unwrap_or(DEFAULT_TENANT).to_owned();
    let request_id = presigned_upload_of(&key).map_or_else(
        || derived_request_id(&["s3", &tenant, bucket, &key, version]),
        |(_, id)| id.to_owned(),
    );
    let now = Utc::now();
    let limit = app.config.csv.max_bytes as u64;
    // A presigned upload's options, stored when its URL was issued.
    let options = match presigned_upload_of(&key) {
        Some((tenant, id)) => pending_options(&app.store, tenant, id).await?,
        None => None,
    };
    let rejection = match app.store.get(&key, limit).await {
        Ok(Some(object)) => {
            let input = IngestRequest {
                request_id: request_id.clone(),
                tenant: tenant.clone(),
                source: Source::S3,
                source_key: Some(key.clone()),
                csv: &object.bytes,
                webhook_url: options.as_ref().and_then(|o| o.webhook_url.clone()),
                output_spec: options
                    .as_ref()
                    .map_or(app.config.output, |o| o.output_spec),
                now,
            };
            match ingest(
                &app.repo,
                &app.queue,
                &app.config.csv,
                app.config.egress,
                input,
            )
            .await
            {
                Ok(ingested) => return Ok(RecordOutcome::Ingested(Box::new(ingested))),
                Err(IngestError::InvalidCsv(rejection)) => rejection,
                // S3 uploads carry no webhook URL, and an enqueue failure is already recorded
                // as FAILED on the request.
                Err(IngestError::InvalidWebhookUrl(_) | IngestError::EnqueueFailed(_)) => {
                    return Ok(RecordOutcome::Ignored);
                }
                // A second PUT to a presigned URL with other bytes: the request made from the
                // first stands, and nothing is added.
                Err(IngestError::IdempotencyKeyReused(existing)) => {
                    return Ok(RecordOutcome::Ingested(Box::new(Ingested {
                        meta: *existing,
                        replayed: true,
                    })));
                }
                Err(IngestError::Storage(e)) => return Err(e.into()),
            }
        }
        Ok(None) => return Err(S3IngestError::Missing(key)),
        Err(PortError::TooLarge { size, limit, .. }) => CsvRejection {
            issues: vec![CsvIssue {
                row: None,
                column: None,
                code: "too_large".to_owned(),
                message: format!(
                    "the CSV is {size} bytes; the limit is {limit} bytes — split it into smaller files"
                ),
            }],
            omitted: 0,
        },
        Err(e) => return Err(e.into()),
    };
    let failure = Failure {
        code: "invalid_csv".to_owned(),
        message: rejection.to_string(),
        issues: rejection.issues.iter().take(100).cloned().collect(),
    };
    record_rejection(
        &app.repo,
        &tenant,
        &request_id,
        &key,
        app.config.output,
        failure,
        now,
    )
    .await?;
    Ok(RecordOutcome::Rejected {
        request_id,
        issues: rejection.issues,
    })
}

/// Handles one S3 event.
///
/// # Errors
/// The first retryable failure, so Lambda retries the event (every record is idempotent).
pub async fn handle<R, Q, S>(
    app: &App<R, Q, S>,
    event: LambdaEvent<S3Event>,
) -> Result<(), lambda_runtime::Error>
where
    R: RequestRepository,
    Q: RowQueue,
    S: ObjectStore,
{
    for record in &event.payload.records {
        match ingest_record(app, record).await? {
            RecordOutcome::Ignored => tracing::info!(key = ?record.s3.object.key, "object ignored"),
            RecordOutcome::Ingested(ingested) => tracing::info!(
                request_id = %ingested.meta.request_id,
                replayed = ingested.replayed,
                rows = ingested.meta.counters.rows_total,
                "upload ingested"
            ),
            RecordOutcome::Rejected { request_id, issues } => {
                tracing::warn!(%request_id, errors = issues.len(), "upload rejected");
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_keys_are_form_decoded() {
        assert_eq!(
            decode_event_key("uploads/spring+sale%282026%29.csv").unwrap(),
            "uploads/spring sale(2026).csv"
        );
        assert_eq!(
            decode_event_key("uploads/a%2Bb.csv").unwrap(),
            "uploads/a+b.csv"
        );
        assert!(decode_event_key("uploads/%FF.csv").is_err());
    }
}
