//! The request table's DynamoDB stream read with `aws-sdk-dynamodbstreams`, as the
//! [`ChangeRecord`]s the completion notifier's event is built from: what the Lambda event
//! source mapping does in a deployment, for the local pump against an emulator.

use std::collections::HashMap;
use std::sync::Arc;

use anyhow::anyhow;
use aws_sdk_dynamodbstreams::types::{OperationType, ShardIteratorType};
use tokio::sync::Mutex;

use pixpress_app::ports::PortError;
use pixpress_aws::sdk_error;
use pixpress_embedded::{ChangeKind, ChangeRecord};

/// Records per `GetRecords` call (the API's maximum is 1,000).
const RECORDS_PER_CALL: i32 = 1000;

#[derive(Debug, Default)]
struct ReaderState {
    stream_arn: Option<String>,
    /// Shard id → the iterator to read next; `None` once a closed shard is read to its end.
    shards: HashMap<String, Option<String>>,
}

/// Reads new records from one table's stream. Clones share their position.
#[derive(Debug, Clone)]
pub struct DynamoStreamReader {
    dynamodb: aws_sdk_dynamodb::Client,
    streams: aws_sdk_dynamodbstreams::Client,
    table: String,
    state: Arc<Mutex<ReaderState>>,
}

impl DynamoStreamReader {
    /// A reader of `table`'s stream, positioned at the oldest record (`TRIM_HORIZON`).
    #[must_use]
    pub fn new(sdk: &aws_config::SdkConfig, table: impl Into<String>) -> Self {
        Self {
            dynamodb: aws_sdk_dynamodb::Client::new(sdk),
            streams: aws_sdk_dynamodbstreams::Client::new(sdk),
            table: table.into(),
            state: Arc::default(),
        }
    }

    async fn stream_arn(&self, state: &mut ReaderState) -> Result<String, PortError> {
        if let Some(arn) = &state.stream_arn {
            return Ok(arn.clone());
        }
        let table = self
            .dynamodb
            .describe_table()
            .table_name(&self.table)
            .send()
            .await
            .map_err(|e| sdk_error("describing the table", &e))?;
        let arn = table
            .table
            .and_then(|t| t.latest_stream_arn)
            .ok_or_else(|| PortError::Unexpected(anyhow!("table {} has no stream", self.table)))?;
        state.stream_arn = Some(arn.clone());
        Ok(arn)
    }

    async fn shard_ids(&self, arn: &str) -> Result<Vec<String>, PortError> {
        let mut ids = Vec::new();
        let mut start: Option<String> = None;
        loop {
            let out = self
                .streams
                .describe_stream()
                .stream_arn(arn)
                .set_exclusive_start_shard_id(start.take())
                .send()
                .await
                .map_err(|e| sdk_error("describing the stream", &e))?;
            let Some(description) = out.stream_description else {
                return Ok(ids);
            };
            ids.extend(
                description
                    .shards
                    .unwrap_or_default()
                    .into_iter()
                    .filter_map(|s| s.shard_id),
            );
            match description.last_evaluated_shard_id {
                Some(last) => start = Some(last),
                None => return Ok(ids),
            }
        }
    }

    async fn iterator(
        &self,
        arn: &str,
        shard: &str,
        kind: ShardIteratorType,
    ) -> Result<Option<String>, PortError> {
        Ok(self
            .streams
            .get_shard_iterator()
            .stream_arn(arn)
            .shard_id(shard)
            .shard_iterator_type(kind)
            .send()
            .await
            .map_err(|e| sdk_error("getting a shard iterator", &e))?
            .shard_iterator)
    }

    /// Moves past every record already in the stream: later reads return only changes made
    /// after this call (`LATEST` on every open shard).
    ///
    /// # Errors
    /// [`PortError`] when the table has no stream or a call fails.
    pub async fn skip_existing(&self) -> Result<(), PortError> {
        let mut state = self.state.lock().await;
        let arn = self.stream_arn(&mut state).await?;
        for shard in self.shard_ids(&arn).await? {
            let iterator = self
                .iterator(&arn, &shard, ShardIteratorType::Latest)
                .await?;
            state.shards.insert(shard, iterator);
        }
        Ok(())
    }

    /// The records written since the last read, in order within each shard. `INSERT` and
    /// `MODIFY` only: the notifier ignores `REMOVE` (TTL expiry).
    ///
    /// # Errors
    /// [`PortError`] when a call fails or a record lacks its keys or new image.
    pub async fn read(&self) -> Result<Vec<ChangeRecord>, PortError> {
        let mut state = self.state.lock().await;
        let arn = self.stream_arn(&mut state).await?;
        for shard in self.shard_ids(&arn).await? {
            if let std::collections::hash_map::Entry::Vacant(entry) = state.shards.entry(shard) {
                let iterator = self
                    .iterator(&arn, entry.key(), ShardIteratorType::TrimHorizon)
                    .await?;
                entry.insert(iterator);
            }
        }
        let mut changes = Vec::new();
        for next in state.shards.values_mut() {
            while let Some(iterator) = next.take() {
                let out = self
                    .streams
                    .get_records()
                    .shard_iterator(&iterator)
                    .limit(RECORDS_PER_CALL)
                    .send()
                    .await
                    .map_err(|e| sdk_error("reading stream records", &e))?;
                let records = out.records.unwrap_or_default();
                let drained = records.is_empty();
                for record in records {
                    if let Some(change) = change_record(record)? {
                        changes.push(change);
                    }
                }
                *next = out.next_shard_iterator;
                if drained {
                    // An open shard returns an empty page at its tip; keep the iterator.
                    break;
                }
            }
        }
        Ok(changes)
    }
}

fn change_record(
    record: aws_sdk_dynamodbstreams::types::Record,
) -> Result<Option<ChangeRecord>, PortError> {
    let kind = match record.event_name {
        Some(OperationType::Insert) => ChangeKind::Insert,
        Some(OperationType::Modify) => ChangeKind::Modify,
        _ => return Ok(None),
    };
    let malformed = |what: &str| PortError::Unexpected(anyhow!("stream record without {what}"));
    let change = record.dynamodb.ok_or_else(|| malformed("a change"))?;
    let keys = change.keys.unwrap_or_default();
    let key = |name: &str| {
        keys.get(name)
            .and_then(|v| v.as_s().ok())
            .cloned()
            .ok_or_else(|| malformed(name))
    };
    Ok(Some(ChangeRecord {
        sequence: change
            .sequence_number
            .ok_or_else(|| malformed("a sequence number"))?,
        kind,
        pk: key("pk")?,
        sk: key("sk")?,
        old_image: change.old_image.map(serde_dynamo::Item::from),
        new_image: serde_dynamo::Item::from(
            change.new_image.ok_or_else(|| malformed("a new image"))?,
        ),
    }))
}
