//! The handles every DynamoDB and SQS adapter is built on — a client, what it addresses (a
//! table name, a queue URL) and the in-process retry policy of its calls — and the item
//! helpers the DynamoDB adapters share. Each adapter is `From` its handle, so building one is
//! the same everywhere: `DynamoKeyStore::from(DynamoTable::new(&sdk, "requests"))`.

use std::collections::HashMap;

use anyhow::anyhow;
use aws_sdk_dynamodb::Client as DynamoClient;
use aws_sdk_dynamodb::error::ProvideErrorMetadata;
use aws_sdk_dynamodb::operation::{
    get_item::builders::GetItemFluentBuilder, put_item::builders::PutItemFluentBuilder,
    query::builders::QueryFluentBuilder, scan::builders::ScanFluentBuilder,
    update_item::builders::UpdateItemFluentBuilder,
};
use aws_sdk_dynamodb::types::AttributeValue;
use aws_sdk_sqs::Client as SqsClient;
use pixpress_app::ports::PortError;
use pixpress_app::retry::{RetryPolicy, retry};
use serde::{Deserialize, Serialize};

use super::sdk_error;

/// An SDK client made from the shared SDK configuration.
pub trait SdkClient: Clone + std::fmt::Debug {
    /// The client for `sdk`.
    fn from_sdk(sdk: &aws_config::SdkConfig) -> Self;
}

impl SdkClient for DynamoClient {
    fn from_sdk(sdk: &aws_config::SdkConfig) -> Self {
        Self::new(sdk)
    }
}

impl SdkClient for SqsClient {
    fn from_sdk(sdk: &aws_config::SdkConfig) -> Self {
        Self::new(sdk)
    }
}

/// One AWS resource through one client: `C` the client, `target` what it addresses (a table
/// name, a queue URL). Cheap to clone.
#[derive(Debug, Clone)]
pub struct Handle<C> {
    pub(crate) client: C,
    pub(crate) target: String,
    pub(crate) retry: RetryPolicy,
}

/// One DynamoDB table (`target` = its name).
pub type DynamoTable = Handle<DynamoClient>;

/// One SQS queue (`target` = its URL).
pub type SqsQueue = Handle<SqsClient>;

impl<C: SdkClient> Handle<C> {
    /// `target` with the SDK configuration `sdk`, calls retried by [`RetryPolicy::STORAGE`].
    #[must_use]
    pub fn new(sdk: &aws_config::SdkConfig, target: impl Into<String>) -> Self {
        Self::from_client(C::from_sdk(sdk), target)
    }

    /// `target` through `client` (tests pass a mocked client).
    #[must_use]
    pub fn from_client(client: C, target: impl Into<String>) -> Self {
        Self {
            client,
            target: target.into(),
            retry: RetryPolicy::STORAGE,
        }
    }

    /// The same handle with another in-process retry policy (tests use a fast one).
    #[must_use]
    pub fn with_retry(mut self, policy: RetryPolicy) -> Self {
        self.retry = policy;
        self
    }

    /// The underlying client (the emulator runner creates tables and queues with it).
    #[must_use]
    pub fn client(&self) -> &C {
        &self.client
    }

    /// What the handle addresses: a table name, a queue URL.
    #[must_use]
    pub fn target(&self) -> &str {
        &self.target
    }
}

impl DynamoTable {
    /// A `GetItem` on this table.
    pub(crate) fn get_item(&self) -> GetItemFluentBuilder {
        self.client.get_item().table_name(&self.target)
    }

    /// A `PutItem` on this table.
    pub(crate) fn put_item(&self) -> PutItemFluentBuilder {
        self.client.put_item().table_name(&self.target)
    }

    /// An `UpdateItem` on this table.
    pub(crate) fn update_item(&self) -> UpdateItemFluentBuilder {
        self.client.update_item().table_name(&self.target)
    }

    /// A `Query` on this table.
    pub(crate) fn query(&self) -> QueryFluentBuilder {
        self.client.query().table_name(&self.target)
    }

    /// The item at `key` (only the `projection` attributes, when given), read strongly
    /// consistently with one `GetItem` retried by the table's policy; `what` names it in
    /// errors. `None` when there is no such item.
    ///
    /// # Errors
    /// [`PortError`] when DynamoDB fails after the retries.
    pub(crate) async fn read_item(
        &self,
        key: HashMap<String, AttributeValue>,
        projection: Option<&str>,
        what: &str,
    ) -> Result<Option<HashMap<String, AttributeValue>>, PortError> {
        let context = format!("reading {what}");
        let out = retry(&self.retry, &context, || async {
            self.get_item()
                .set_key(Some(key.clone()))
                .set_projection_expression(projection.map(str::to_owned))
                .consistent_read(true)
                .send()
                .await
                .map_err(|e| sdk_error(&context, &e))
        })
        .await?;
        Ok(out.item)
    }

    /// [`Self::read_item`] decoded as a `T`.
    ///
    /// # Errors
    /// [`PortError`] when DynamoDB fails after the retries or the item is malformed.
    pub(crate) async fn read_as<T: for<'de> Deserialize<'de>>(
        &self,
        key: HashMap<String, AttributeValue>,
        what: &str,
    ) -> Result<Option<T>, PortError> {
        self.read_item(key, None, what)
            .await?
            .map(|item| decode(item, what))
            .transpose()
    }

    /// Writes `item` unless an item with its key exists (`attribute_not_exists(pk)`), with
    /// one `PutItem` retried by the table's policy; `what` names it in errors.
    /// `Ok(false)` when the item existed: nothing was written.
    ///
    /// # Errors
    /// [`PortError`] when DynamoDB fails after the retries.
    pub(crate) async fn put_if_absent(
        &self,
        item: HashMap<String, AttributeValue>,
        what: &str,
    ) -> Result<bool, PortError> {
        let context = format!("writing {what}");
        retry(&self.retry, &context, || async {
            match self
                .put_item()
                .set_item(Some(item.clone()))
                .condition_expression("attribute_not_exists(pk)")
                .send()
                .await
            {
                Ok(_) => Ok(true),
                Err(e) if condition_failed(&e) => Ok(false),
                Err(e) => Err(sdk_error(&context, &e)),
            }
        })
        .await
    }

    /// Writes `item`, replacing any item with its key, with one `PutItem` retried by the
    /// table's policy; `what` names it in errors.
    ///
    /// # Errors
    /// [`PortError`] when DynamoDB fails after the retries.
    pub(crate) async fn put(
        &self,
        item: HashMap<String, AttributeValue>,
        what: &str,
    ) -> Result<(), PortError> {
        let context = format!("writing {what}");
        retry(&self.retry, &context, || async {
            self.put_item()
                .set_item(Some(item.clone()))
                .send()
                .await
                .map_err(|e| sdk_error(&context, &e))
        })
        .await?;
        Ok(())
    }

    /// A `Scan` of this table.
    pub(crate) fn scan(&self) -> ScanFluentBuilder {
        self.client.scan().table_name(&self.target)
    }
}

/// A string attribute.
pub(crate) fn s(v: impl Into<String>) -> AttributeValue {
    AttributeValue::S(v.into())
}

/// The primary key `pk`, `sk` of an item.
pub(crate) fn key(pk: impl Into<String>, sk: impl Into<String>) -> HashMap<String, AttributeValue> {
    HashMap::from([("pk".to_owned(), s(pk)), ("sk".to_owned(), s(sk))])
}

/// `value` as a DynamoDB item.
pub(crate) fn item<T: Serialize>(value: &T) -> Result<HashMap<String, AttributeValue>, PortError> {
    serde_dynamo::to_item(value).map_err(|e| PortError::Unexpected(anyhow!("item encoding: {e}")))
}

/// A DynamoDB item as a `T`; a malformed item (named `what`) is an unexpected error.
pub(crate) fn decode<T: for<'de> Deserialize<'de>>(
    item: HashMap<String, AttributeValue>,
    what: &str,
) -> Result<T, PortError> {
    serde_dynamo::from_item(item)
        .map_err(|e| PortError::Unexpected(anyhow!("{what} is malformed: {e}")))
}

/// `true` when a write failed because its condition expression did not hold
/// (`ConditionalCheckFailedException`): a lost race or an item already written, which callers
/// answer themselves rather than retry.
pub(crate) fn condition_failed(error: &impl ProvideErrorMetadata) -> bool {
    error.code() == Some("ConditionalCheckFailedException")
}
