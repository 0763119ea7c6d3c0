//! The partial-batch loop of every SQS-triggered function: each message is processed in its
//! own span (so every log line names its request and row), and the messages that must come
//! back are reported as batch item failures, so Lambda deletes the rest (the event source
//! mapping's `FunctionResponseTypes: [ReportBatchItemFailures]`; "Handling errors for an SQS
//! event source in Lambda", AWS Lambda Developer Guide).

use std::future::Future;

use aws_lambda_events::event::sqs::{SqsBatchResponse, SqsMessage};
use futures::future::join_all;
use tracing::Instrument as _;

use crate::telemetry::message_span;

/// How the messages of one batch run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BatchMode {
    /// All at once: the work is bounded inside (downloads, compression, writes).
    Concurrent,
    /// One after another: each message may take most of the invocation's time.
    Sequential,
}

/// Runs `process` on every message of `records` and answers the batch: the messages for which
/// it returned `Ok(true)` ("comes back") or an error are batch item failures, redelivered after
/// their visibility timeout (or sooner, when `process` changed it); the others are deleted. An
/// error is logged once here, at WARN, as `what` failing (for example "expanding a chunk");
/// outcomes that deserve another level or message are `Ok(true)` logged by `process`.
///
/// `process` reports per message and never fails the batch: a failed invocation would return
/// every message, including those already done.
pub async fn batch_item_failures<'a, F, Fut, E>(
    records: &'a [SqsMessage],
    mode: BatchMode,
    what: &str,
    process: F,
) -> SqsBatchResponse
where
    F: Fn(&'a SqsMessage) -> Fut,
    Fut: Future<Output = Result<bool, E>>,
    E: std::fmt::Display,
{
    // Boxed: a message's future is deep (download, compress, store, record), and a handler's
    // future nesting it unboxed overflows the compiler's layout depth.
    let one = |message: &'a SqsMessage| {
        let message_id = message.message_id.clone().unwrap_or_default();
        let span = message_span(&message_id, message.body.as_deref().unwrap_or_default());
        let outcome = process(message);
        Box::pin(
            async move {
                let comes_back = outcome.await.unwrap_or_else(|e| {
                    tracing::warn!(error = %e, "{what} failed; the message comes back");
                    true
                });
                (message_id, comes_back)
            }
            .instrument(span),
        )
    };
    let results = match mode {
        BatchMode::Concurrent => join_all(records.iter().map(one)).await,
        BatchMode::Sequential => {
            let mut results = Vec::with_capacity(records.len());
            for message in records {
                results.push(one(message).await);
            }
            results
        }
    };
    let mut response = SqsBatchResponse::default();
    for (message_id, comes_back) in results {
        if comes_back {
            response.add_failure(message_id);
        }
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(id: &str, body: &str) -> SqsMessage {
        let mut message = SqsMessage::default();
        message.message_id = Some(id.to_owned());
        message.body = Some(body.to_owned());
        message
    }

    #[tokio::test]
    async fn only_the_messages_that_come_back_are_batch_item_failures() {
        let records = vec![
            message("a", "ok"),
            message("b", "again"),
            message("c", "ok"),
            message("d", "fails"),
        ];
        for mode in [BatchMode::Concurrent, BatchMode::Sequential] {
            let response = batch_item_failures(&records, mode, "testing", |m| {
                let body = m.body.as_deref().unwrap_or_default();
                let outcome = match body {
                    "fails" => Err("storage unavailable"),
                    again => Ok(again == "again"),
                };
                async move { outcome }
            })
            .await;
            let failed: Vec<_> = response
                .batch_item_failures
                .iter()
                .map(|f| f.item_identifier.as_str())
                .collect();
            assert_eq!(failed, ["b", "d"], "{mode:?}");
        }
    }
}
