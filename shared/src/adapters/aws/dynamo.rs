//! [`RequestRepository`] on one DynamoDB table (`pk`/`sk`, DESIGN §3), items mapped with
//! `serde_dynamo` through the shared item schema ([`MetaItem`], [`RowItem`]).
//!
//! Every write is conditional: a request is created only if its id is new; a row outcome and
//! the counter increment are one `TransactWriteItems` conditional on the row being `PENDING`;
//! the terminal flip is one conditional `UpdateItem`. Attribute names go through `#name`
//! placeholders (`status`, `state` and others are reserved words).

use std::collections::HashMap;

use anyhow::anyhow;
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::types::{AttributeValue, Put, TransactWriteItem, Update};
use chrono::{DateTime, Utc};

use super::sdk_error;
use crate::domain::item::{MetaItem, RowItem};
use crate::domain::keys::{META_SK, ROW_SK_PREFIX, request_pk, row_sk};
use crate::domain::model::{
    Counters, DeliveryState, Failure, ImageOutcome, RequestMeta, RequestStatus, RowRecord,
    WebhookAttempt,
};
use crate::ports::{Created, PortError, RequestRepository, RowPage, RowRecorded, Transition};

/// `TransactWriteItems` takes at most 100 actions (DynamoDB limit).
const MAX_TRANSACTION_ITEMS: usize = 100;

/// The DynamoDB repository. Cheap to clone.
#[derive(Debug, Clone)]
pub struct DynamoRequestRepository {
    client: Client,
    table: String,
}

fn s(v: impl Into<String>) -> AttributeValue {
    AttributeValue::S(v.into())
}

fn n(v: u64) -> AttributeValue {
    AttributeValue::N(v.to_string())
}

fn status(v: RequestStatus) -> AttributeValue {
    s(v.as_str())
}

fn encode<T: serde::Serialize>(value: &T) -> Result<AttributeValue, PortError> {
    serde_dynamo::to_attribute_value(value)
        .map_err(|e| PortError::Unexpected(anyhow!("item encoding: {e}")))
}

fn item<T: serde::Serialize>(value: &T) -> Result<HashMap<String, AttributeValue>, PortError> {
    serde_dynamo::to_item(value).map_err(|e| PortError::Unexpected(anyhow!("item encoding: {e}")))
}

fn key(pk: String, sk: String) -> HashMap<String, AttributeValue> {
    HashMap::from([("pk".to_owned(), s(pk)), ("sk".to_owned(), s(sk))])
}

impl DynamoRequestRepository {
    /// A repository on `table`.
    #[must_use]
    pub fn new(sdk: &aws_config::SdkConfig, table: impl Into<String>) -> Self {
        Self {
            client: Client::new(sdk),
            table: table.into(),
        }
    }

    /// The underlying client (tests create tables with it).
    #[must_use]
    pub fn client(&self) -> &Client {
        &self.client
    }

    fn meta_key(request_id: &str) -> HashMap<String, AttributeValue> {
        key(request_pk(request_id), META_SK.to_owned())
    }

    /// A conditional update of the request item; `NotApplied` when the condition fails.
    async fn conditional_update(
        &self,
        request_id: &str,
        update: &str,
        condition: &str,
        names: &[(&str, &str)],
        values: Vec<(&str, AttributeValue)>,
        context: &str,
    ) -> Result<bool, PortError> {
        let mut request = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(Self::meta_key(request_id)))
            .update_expression(update)
            .condition_expression(condition);
        for (placeholder, name) in names {
            request = request.expression_attribute_names(*placeholder, *name);
        }
        for (placeholder, value) in values {
            request = request.expression_attribute_values(placeholder, value);
        }
        match request.send().await {
            Ok(_) => Ok(true),
            Err(e)
                if e.as_service_error()
                    .is_some_and(|e| e.is_conditional_check_failed_exception()) =>
            {
                Ok(false)
            }
            Err(e) => Err(sdk_error(context, &e)),
        }
    }
}

impl RequestRepository for DynamoRequestRepository {
    async fn create_request(
        &self,
        meta: &RequestMeta,
        rows: &[RowRecord],
    ) -> Result<Created, PortError> {
        if let Some(existing) = self.get_request(&meta.request_id).await? {
            return Ok(Created::AlreadyExists(Box::new(existing)));
        }
        // Rows first, each conditional on being new, in transactions of ≤ 100; the request item
        // last. A request is only visible once all its rows exist; a replay finds rows already
        // written (its transaction is cancelled by the conditions) and goes on to the request.
        for chunk in rows.chunks(MAX_TRANSACTION_ITEMS) {
            let mut items = Vec::with_capacity(chunk.len());
            for row in chunk {
                let put = Put::builder()
                    .table_name(&self.table)
                    .set_item(Some(item(&RowItem::new(
                        &meta.request_id,
                        row.clone(),
                        None,
                    ))?))
                    .condition_expression("attribute_not_exists(sk)")
                    .build()
                    .map_err(|e| PortError::Unexpected(anyhow!("row put: {e}")))?;
                items.push(TransactWriteItem::builder().put(put).build());
            }
            match self
                .client
                .transact_write_items()
                .set_transact_items(Some(items))
                .send()
                .await
            {
                Ok(_) => {}
                Err(e)
                    if e.as_service_error()
                        .is_some_and(|e| e.is_transaction_canceled_exception()) => {}
                Err(e) => return Err(sdk_error("writing rows", &e)),
            }
        }
        let put = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item(&MetaItem::new(meta.clone(), None))?))
            .condition_expression("attribute_not_exists(pk)")
            .send()
            .await;
        match put {
            Ok(_) => Ok(Created::Inserted),
            Err(e)
                if e.as_service_error()
                    .is_some_and(|e| e.is_conditional_check_failed_exception()) =>
            {
                let existing = self.get_request(&meta.request_id).await?.ok_or_else(|| {
                    PortError::Unexpected(anyhow!("request {} vanished", meta.request_id))
                })?;
                Ok(Created::AlreadyExists(Box::new(existing)))
            }
            Err(e) => Err(sdk_error("writing the request", &e)),
        }
    }

    async fn get_request(&self, request_id: &str) -> Result<Option<RequestMeta>, PortError> {
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .set_key(Some(Self::meta_key(request_id)))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| sdk_error("reading the request", &e))?;
        match out.item {
            None => Ok(None),
            Some(found) => serde_dynamo::from_item::<_, MetaItem>(found)
                .map(|m| Some(m.meta))
                .map_err(|e| PortError::Unexpected(anyhow!("malformed request item: {e}"))),
        }
    }

    async fn list_rows(
        &self,
        request_id: &str,
        after: Option<u32>,
        limit: u32,
    ) -> Result<RowPage, PortError> {
        let start = after.map_or(0, |a| a.saturating_add(1));
        let limit = limit.max(1);
        let mut rows = Vec::new();
        let mut exclusive_start = None;
        // A Query page holds at most 1 MB; keep reading until `limit` rows or the end.
        loop {
            let out = self
                .client
                .query()
                .table_name(&self.table)
                .key_condition_expression("pk = :pk AND sk BETWEEN :from AND :to")
                .expression_attribute_values(":pk", s(request_pk(request_id)))
                .expression_attribute_values(":from", s(row_sk(start)))
                .expression_attribute_values(":to", s(format!("{ROW_SK_PREFIX}999999")))
                .consistent_read(true)
                .limit(i32::try_from(limit + 1 - rows.len() as u32).unwrap_or(i32::MAX))
                .set_exclusive_start_key(exclusive_start.take())
                .send()
                .await
                .map_err(|e| sdk_error("reading rows", &e))?;
            for found in out.items.unwrap_or_default() {
                let row: RowItem = serde_dynamo::from_item(found)
                    .map_err(|e| PortError::Unexpected(anyhow!("malformed row item: {e}")))?;
                rows.push(row.row);
            }
            match out.last_evaluated_key {
                Some(last) if rows.len() <= limit as usize => exclusive_start = Some(last),
                _ => break,
            }
        }
        let next = if rows.len() > limit as usize {
            rows.truncate(limit as usize);
            rows.last().map(|r| r.index)
        } else {
            None
        };
        Ok(RowPage { rows, next })
    }

    async fn mark_processing(
        &self,
        request_id: &str,
        now: DateTime<Utc>,
    ) -> Result<Transition, PortError> {
        let applied = self
            .conditional_update(
                request_id,
                "SET #status = :to, updated_at = :now",
                "#status = :from",
                &[("#status", "status")],
                vec![
                    (":to", status(RequestStatus::Processing)),
                    (":from", status(RequestStatus::Pending)),
                    (":now", s(now.to_rfc3339())),
                ],
                "marking the request processing",
            )
            .await?;
        Ok(if applied {
            Transition::Applied(RequestStatus::Processing)
        } else {
            Transition::NotApplied
        })
    }

    async fn mark_failed(
        &self,
        request_id: &str,
        failure: &Failure,
        now: DateTime<Utc>,
    ) -> Result<Transition, PortError> {
        let applied = self
            .conditional_update(
                request_id,
                "SET #status = :to, failure = :failure, updated_at = :now, completed_at = :now",
                "#status IN (:pending, :processing)",
                &[("#status", "status")],
                vec![
                    (":to", status(RequestStatus::Failed)),
                    (":pending", status(RequestStatus::Pending)),
                    (":processing", status(RequestStatus::Processing)),
                    (":failure", encode(failure)?),
                    (":now", s(now.to_rfc3339())),
                ],
                "marking the request failed",
            )
            .await?;
        Ok(if applied {
            Transition::Applied(RequestStatus::Failed)
        } else {
            Transition::NotApplied
        })
    }

    async fn record_row_outcome(
        &self,
        request_id: &str,
        row_index: u32,
        images: &[ImageOutcome],
        now: DateTime<Utc>,
    ) -> Result<RowRecorded, PortError> {
        // The same tally the embedded repository applies, added atomically with `ADD`.
        let mut delta = Counters::default();
        delta.add_row(images);
        let row_update = Update::builder()
            .table_name(&self.table)
            .set_key(Some(key(request_pk(request_id), row_sk(row_index))))
            .update_expression("SET #state = :done, images = :images")
            .condition_expression("#state = :pending")
            .expression_attribute_names("#state", "state")
            .expression_attribute_values(":done", s("DONE"))
            .expression_attribute_values(":pending", s("PENDING"))
            .expression_attribute_values(":images", encode(&images)?)
            .build()
            .map_err(|e| PortError::Unexpected(anyhow!("row update: {e}")))?;
        let counters_update = Update::builder()
            .table_name(&self.table)
            .set_key(Some(Self::meta_key(request_id)))
            .update_expression(
                "ADD #c.rows_done :one, #c.images_ok :ok, #c.images_failed :failed, #c.bytes_in :bin, #c.bytes_out :bout SET updated_at = :now",
            )
            .condition_expression("attribute_exists(pk)")
            .expression_attribute_names("#c", "counters")
            .expression_attribute_values(":one", n(delta.rows_done))
            .expression_attribute_values(":ok", n(delta.images_ok))
            .expression_attribute_values(":failed", n(delta.images_failed))
            .expression_attribute_values(":bin", n(delta.bytes_in))
            .expression_attribute_values(":bout", n(delta.bytes_out))
            .expression_attribute_values(":now", s(now.to_rfc3339()))
            .build()
            .map_err(|e| PortError::Unexpected(anyhow!("counter update: {e}")))?;
        let result = self
            .client
            .transact_write_items()
            .transact_items(TransactWriteItem::builder().update(row_update).build())
            .transact_items(TransactWriteItem::builder().update(counters_update).build())
            .send()
            .await;
        match result {
            Ok(_) => {
                let meta = self.get_request(request_id).await?.ok_or_else(|| {
                    PortError::Unexpected(anyhow!("request {request_id} vanished"))
                })?;
                Ok(RowRecorded::Recorded(meta.counters))
            }
            // The row condition failed: a redelivery of a row already recorded.
            Err(e)
                if e.as_service_error()
                    .is_some_and(|e| e.is_transaction_canceled_exception()) =>
            {
                Ok(RowRecorded::AlreadyRecorded)
            }
            Err(e) => Err(sdk_error("recording the row outcome", &e)),
        }
    }

    async fn complete(
        &self,
        request_id: &str,
        now: DateTime<Utc>,
    ) -> Result<Transition, PortError> {
        let Some(meta) = self.get_request(request_id).await? else {
            return Ok(Transition::NotApplied);
        };
        let Some(terminal) = meta.counters.terminal_status() else {
            return Ok(Transition::NotApplied);
        };
        // Applies only while non-terminal and with every row done: exactly one caller wins, and
        // with all rows done the failure count read above is final.
        let applied = self
            .conditional_update(
                request_id,
                "SET #status = :terminal, updated_at = :now, completed_at = :now",
                "#status IN (:pending, :processing) AND #c.rows_done = #c.rows_total",
                &[("#status", "status"), ("#c", "counters")],
                vec![
                    (":terminal", status(terminal)),
                    (":pending", status(RequestStatus::Pending)),
                    (":processing", status(RequestStatus::Processing)),
                    (":now", s(now.to_rfc3339())),
                ],
                "completing the request",
            )
            .await?;
        Ok(if applied {
            Transition::Applied(terminal)
        } else {
            Transition::NotApplied
        })
    }

    async fn record_output_csv(
        &self,
        request_id: &str,
        key: &str,
        now: DateTime<Utc>,
    ) -> Result<(), PortError> {
        self.conditional_update(
            request_id,
            "SET output_csv_key = :key, updated_at = :now",
            "attribute_exists(pk)",
            &[],
            vec![(":key", s(key)), (":now", s(now.to_rfc3339()))],
            "recording the output CSV",
        )
        .await
        .map(|_| ())
    }

    async fn record_webhook_attempt(
        &self,
        request_id: &str,
        attempt: &WebhookAttempt,
        state: DeliveryState,
    ) -> Result<(), PortError> {
        self.conditional_update(
            request_id,
            "SET webhook.attempts = list_append(webhook.attempts, :attempt), webhook.#state = :state",
            "attribute_exists(webhook)",
            &[("#state", "state")],
            vec![(":attempt", encode(&[attempt])?), (":state", encode(&state)?)],
            "recording the webhook attempt",
        )
        .await
        .map(|_| ())
    }
}
