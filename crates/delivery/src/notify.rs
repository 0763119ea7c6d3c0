//! The completion use case: the output CSV of a terminal request, streamed to the bucket in
//! bounded memory (paused and resumed across invocations for a catalogue), then its webhook
//! handed to the webhooks queue or delivered inline. The completion notifier runs it per stream
//! record; the sweeper runs it for a request whose stream record was lost.

use std::time::Duration;

use chrono::Utc;

use crate::{App, deliver_inline};
use pixpress_app::auth::KeyStore;
use pixpress_app::deadline::Deadline;
use pixpress_app::ports::{
    MultipartWriter, ObjectStore, OutputLedger, PortError, RequestReader, WebhookQueue,
};
use pixpress_domain::model::{
    DeliveryState, OutputPart, OutputProgress, RequestStatus, WebhookJob,
};
use pixpress_domain::output_csv::{output_csv_header, output_csv_rows};
use pixpress_domain::storage_keys::output_csv_key;

/// What a notification did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notified {
    /// Key of the output CSV, if one was written.
    pub output_csv_key: Option<String>,
    /// Final webhook state, if the request has a webhook.
    pub webhook: Option<DeliveryState>,
    /// The last row written when the output CSV was paused for the next invocation.
    pub paused_after_row: Option<u32>,
}

/// Why a notification must be retried.
#[derive(Debug, thiserror::Error)]
pub enum NotifyError {
    /// The output CSV could not be built.
    #[error("output CSV: {0}")]
    Csv(#[from] csv::Error),
    /// Repository or store failure.
    #[error(transparent)]
    Storage(#[from] PortError),
}

/// Rows read per page while writing the output CSV.
pub const OUTPUT_ROWS_PER_PAGE: u32 = 1000;

/// Size of the output CSV's multipart parts, in bytes (S3's minimum is 5 MiB).
pub const OUTPUT_PART_BYTES: usize = 8 * 1024 * 1024;

/// Time kept back from the invocation's deadline when the output CSV pauses: enough to read
/// up to one more part's worth of rows (5 MiB, a few seconds), store it and save progress.
pub const OUTPUT_DEADLINE_MARGIN: Duration = Duration::from_secs(20);

/// How writing the output CSV ended.
enum Written {
    /// The object is complete.
    Done,
    /// Stopped on a part boundary before the deadline; continue from this progress.
    Paused(OutputProgress),
}

/// Streams the output CSV of `request_id` to `key`: rows are read a page at a time and sent as
/// multipart parts, so memory holds one page and one part (about 8 MiB) however many rows the
/// request has. Nothing is visible under `key` until the last part is in; a replay writes the
/// same bytes again. With `progress` it continues that upload after its last row; when
/// `deadline` no longer allows [`OUTPUT_DEADLINE_MARGIN`], it stops at the next part boundary
/// (at least 5 MiB buffered) and returns the progress.
async fn write_output_csv_in_parts<R: RequestReader + OutputLedger, S: ObjectStore, W, K>(
    app: &App<R, S, W, K>,
    request_id: &str,
    key: &str,
    progress: Option<OutputProgress>,
    deadline: Deadline,
) -> Result<Written, NotifyError> {
    let resumed = progress.as_ref().is_some_and(|p| p.key == key);
    let (mut writer, mut cursor) = match progress.filter(|p| p.key == key) {
        Some(p) => (
            MultipartWriter::resume(
                &app.store,
                key,
                &p.upload_id,
                p.parts.iter().map(Into::into).collect(),
                OUTPUT_PART_BYTES,
            ),
            Some(p.after_row),
        ),
        None => (
            MultipartWriter::start(
                &app.store,
                key,
                "text/csv; charset=utf-8",
                OUTPUT_PART_BYTES,
            )
            .await?,
            None,
        ),
    };
    let written = async {
        if cursor.is_none() {
            writer.write(&output_csv_header()?).await?;
        }
        loop {
            let page = app
                .repo
                .list_rows(request_id, cursor, OUTPUT_ROWS_PER_PAGE)
                .await?;
            writer.write(&output_csv_rows(&page.rows)?).await?;
            let Some(next) = page.next else {
                return Ok::<_, NotifyError>(None);
            };
            cursor = Some(next);
            if !deadline.allows(OUTPUT_DEADLINE_MARGIN) && writer.flush_part().await? {
                return Ok(Some(OutputProgress {
                    key: key.to_owned(),
                    upload_id: writer.upload_id().to_owned(),
                    parts: writer.parts().iter().map(OutputPart::from).collect(),
                    after_row: next,
                }));
            }
        }
    }
    .await;
    match written {
        Ok(None) => match writer.finish().await {
            Ok(_) => Ok(Written::Done),
            Err(e) => {
                // Saved progress names a resumed upload: the retry continues it. A fresh one
                // is named by nothing and would only linger.
                if !resumed {
                    let _ = writer.abort().await;
                }
                Err(e.into())
            }
        },
        Ok(Some(progress)) => Ok(Written::Paused(progress)),
        Err(e) => {
            // A resumed upload is named by saved progress; the retry continues it.
            if !resumed {
                let _ = writer.abort().await;
            }
            Err(e)
        }
    }
}

/// Writes the output CSV and delivers the webhook of one terminal request, within
/// `deadline` ([`Deadline::NONE`]: no limit): a catalogue's output CSV that cannot be finished
/// in time is paused with its progress saved on the request item (the next invocation
/// continues it), and the webhook waits for the CSV.
///
/// # Errors
/// [`NotifyError`] when the CSV cannot be written or recorded; webhook failures are recorded,
/// not returned.
pub async fn notify<
    R: RequestReader + OutputLedger,
    S: ObjectStore,
    W: WebhookQueue,
    K: KeyStore,
>(
    app: &App<R, S, W, K>,
    request_id: &str,
    deadline: Deadline,
) -> Result<Notified, NotifyError> {
    let Some(mut meta) = app.repo.get_request(request_id).await? else {
        tracing::warn!(%request_id, "terminal record for an unknown request");
        return Ok(Notified {
            output_csv_key: None,
            webhook: None,
            paused_after_row: None,
        });
    };
    if meta.status != RequestStatus::Failed && meta.output_csv_key.is_none() {
        let key = output_csv_key(&meta.tenant, request_id);
        let progress = app.repo.output_progress(request_id).await?;
        // Saved progress and a finished object: an earlier invocation completed the upload
        // and died before recording it. The upload is gone (resuming it would fail with
        // `NoSuchUpload` on every retry); the object is the whole CSV, so it is recorded.
        let finished =
            progress.as_ref().is_some_and(|p| p.key == key) && app.store.exists(&key).await?;
        let written = if finished {
            tracing::info!(%request_id, "output CSV found complete; recording it");
            Written::Done
        } else {
            write_output_csv_in_parts(app, request_id, &key, progress, deadline).await?
        };
        match written {
            Written::Done => {
                app.repo
                    .record_output_csv(request_id, &key, Utc::now())
                    .await?;
                meta.output_csv_key = Some(key);
            }
            Written::Paused(progress) => {
                app.repo
                    .record_output_progress(request_id, &progress)
                    .await?;
                tracing::info!(%request_id, after_row = progress.after_row, parts = progress.parts.len(), "output CSV paused for the next invocation");
                return Ok(Notified {
                    output_csv_key: None,
                    webhook: None,
                    paused_after_row: Some(progress.after_row),
                });
            }
        }
    }
    let webhook_state = match &meta.webhook {
        Some(hook) if hook.state == DeliveryState::Pending => match &app.webhooks {
            // The sender delivers, off this stream shard, on Svix's schedule.
            Some(queue) => {
                queue
                    .send_webhook(&WebhookJob {
                        request_id: meta.request_id.clone(),
                        tenant: meta.tenant.clone(),
                        attempts_before: u32::try_from(hook.attempts.len()).unwrap_or(u32::MAX),
                    })
                    .await?;
                Some(DeliveryState::Pending)
            }
            None => Some(deliver_inline(app, &meta, &hook.url).await?),
        },
        Some(hook) => Some(hook.state),
        None => None,
    };
    Ok(Notified {
        output_csv_key: meta.output_csv_key,
        webhook: webhook_state,
        paused_after_row: None,
    })
}
