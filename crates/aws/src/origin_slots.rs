//! Download slots of origin hosts in the requests table: one item per host,
//! `pk = ORIGIN#<host>, sk = SLOTS`, holding [`OriginSlotsRecord`] (leases by holder, the
//! host's back-off, a version) and `expires_at` for the table's TTL.
//!
//! Every change is a read-modify-write: a strongly consistent `GetItem`, the change computed
//! by [`OriginSlotsRecord::lease`], and a `PutItem` conditional on the version read (or on the
//! item not existing). A lost race (`ConditionalCheckFailed`) is a conflict: it is retried with
//! jittered backoff from a fresh read, as throttling is. A call that changes nothing is one
//! read and no write.
//!
//! Cost (DynamoDB pricing: a strongly consistent read of ≤ 4 KB is one read unit, a write of
//! ≤ 1 KB one write unit; the item holds at most `ORIGIN_MAX_CONCURRENCY` leases of about
//! 40 bytes, so 32 leases stay under 1.5 KB): one read unit per call, one or two write units
//! per change. A worker invocation changes its lease when it starts a host, when its
//! controller wants more slots (a few times while it learns the host), once per half lease
//! when it holds slots longer, and when it gives them back.

use anyhow::anyhow;
use aws_sdk_dynamodb::types::AttributeValue;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::handles::{condition_failed, key};
use super::{DynamoTable, sdk_error};
use pixpress_app::ports::{OriginSlots, PortError};
use pixpress_app::retry::retry;
use pixpress_domain::origin_slots::{LeaseRequest, OriginLease, OriginSlotsRecord};

const PK_PREFIX: &str = "ORIGIN#";
const SK: &str = "SLOTS";

/// Host records in DynamoDB. Cheap to clone.
#[derive(Debug, Clone)]
pub struct DynamoOriginSlots {
    table: DynamoTable,
}

impl From<DynamoTable> for DynamoOriginSlots {
    fn from(table: DynamoTable) -> Self {
        Self { table }
    }
}

#[derive(Serialize, Deserialize)]
struct SlotsItem {
    pk: String,
    sk: String,
    #[serde(flatten)]
    record: OriginSlotsRecord,
    expires_at: i64,
}

impl DynamoOriginSlots {
    /// One read-modify-write of `host`'s record.
    async fn update<T>(
        &self,
        host: &str,
        change: impl Fn(&mut OriginSlotsRecord) -> (T, bool),
    ) -> Result<T, PortError> {
        let pk = format!("{PK_PREFIX}{host}");
        let key = key(pk.clone(), SK);
        retry(&self.table.retry, "leasing download slots", || async {
            let read = self
                .table
                .get_item()
                .set_key(Some(key.clone()))
                .consistent_read(true)
                .send()
                .await
                .map_err(|e| sdk_error("reading an origin's slots", &e))?;
            let mut record = match read.item {
                Some(item) => {
                    serde_dynamo::from_item::<_, SlotsItem>(item)
                        .map_err(|e| PortError::Unexpected(anyhow!("malformed origin slots: {e}")))?
                        .record
                }
                None => OriginSlotsRecord::default(),
            };
            let exists = record.version > 0;
            let version = record.version;
            let (value, changed) = change(&mut record);
            if !changed {
                return Ok(value);
            }
            let item = serde_dynamo::to_item(SlotsItem {
                pk: pk.clone(),
                sk: SK.to_owned(),
                expires_at: record.expires_at_secs(),
                record,
            })
            .map_err(|e| PortError::Unexpected(anyhow!("origin slots encoding: {e}")))?;
            let put = self.table.put_item().set_item(Some(item));
            let put = if exists {
                put.condition_expression("version = :v")
                    .expression_attribute_values(":v", AttributeValue::N(version.to_string()))
            } else {
                put.condition_expression("attribute_not_exists(pk)")
            };
            match put.send().await {
                Ok(_) => Ok(value),
                Err(e) if condition_failed(&e) => Err(PortError::Conflict(format!(
                    "another holder changed the slots of {host}"
                ))),
                Err(e) => Err(sdk_error("writing an origin's slots", &e)),
            }
        })
        .await
    }
}

impl OriginSlots for DynamoOriginSlots {
    async fn lease(
        &self,
        host: &str,
        request: LeaseRequest<'_>,
        now: DateTime<Utc>,
    ) -> Result<OriginLease, PortError> {
        let now_ms = now.timestamp_millis();
        self.update(host, |record| record.lease(request, now_ms))
            .await
    }

    async fn back_off(&self, host: &str, until: DateTime<Utc>) -> Result<(), PortError> {
        let until_ms = until.timestamp_millis();
        self.update(host, |record| ((), record.back_off(until_ms)))
            .await
    }
}
