//! An emulator (moto server, ministack) as the deployment: an SDK configuration that never reads
//! the environment, and the table, queues and bucket `template.yaml` declares, created with the
//! same settings (keys, stream view, redrive policy).

use anyhow::anyhow;
use aws_sdk_dynamodb::types::{
    AttributeDefinition, BillingMode, GlobalSecondaryIndex, KeySchemaElement, KeyType, Projection,
    ProjectionType, ScalarAttributeType, StreamSpecification, StreamViewType,
};
use aws_sdk_sqs::types::QueueAttributeName;

use pixpress_app::ports::PortError;
use pixpress_aws::{
    DynamoOriginSlots, DynamoRequestRepository, DynamoTable, S3ObjectStore, SqsQueue, SqsRowQueue,
    sdk_error,
};
use pixpress_domain::item::{OPEN_ATTRIBUTE, OPEN_INDEX};

use crate::sqs::SqsConsumer;
use crate::stream::DynamoStreamReader;

/// An SDK configuration for an emulator at `endpoint` (`http://127.0.0.1:<port>`): region
/// `us-east-1` and static credentials, so nothing reads the environment or probes the instance
/// metadata service.
pub async fn emulator_sdk_config(endpoint: &str) -> aws_config::SdkConfig {
    aws_config::defaults(aws_config::BehaviorVersion::latest())
        .http_client(pixpress_aws::https_client())
        .region(aws_config::Region::new("us-east-1"))
        .credentials_provider(aws_sdk_dynamodb::config::Credentials::new(
            "test", "test", None, None, "emulator",
        ))
        .endpoint_url(endpoint)
        .load()
        .await
}

/// Names of the provisioned resources: `<prefix>-requests`, `<prefix>-rows`,
/// `<prefix>-rows-dlq`, `<prefix>-data`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EmulatorNames {
    /// DynamoDB table.
    pub table: String,
    /// Rows queue.
    pub queue: String,
    /// Its dead-letter queue.
    pub dead_letter_queue: String,
    /// S3 bucket.
    pub bucket: String,
}

impl EmulatorNames {
    /// Names under `prefix` (lower-case letters, digits and `-`, as bucket names require).
    #[must_use]
    pub fn with_prefix(prefix: &str) -> Self {
        Self {
            table: format!("{prefix}-requests"),
            queue: format!("{prefix}-rows"),
            dead_letter_queue: format!("{prefix}-rows-dlq"),
            bucket: format!("{prefix}-data"),
        }
    }
}

/// The provisioned backends.
#[derive(Debug, Clone)]
pub struct EmulatorBackends {
    /// The request table.
    pub repo: DynamoRequestRepository,
    /// Its stream.
    pub stream: DynamoStreamReader,
    /// The rows queue, as the API and s3-ingest send to it.
    pub queue: SqsRowQueue,
    /// The rows queue, as the event source mapping receives from it.
    pub rows: SqsConsumer,
    /// The rows dead-letter queue.
    pub dead_letter_queue: SqsConsumer,
    /// The bucket (path-style addressing).
    pub store: S3ObjectStore,
    /// The origins' download slots, in the request table.
    pub slots: DynamoOriginSlots,
}

/// Creates (or finds) the table with a `NEW_AND_OLD_IMAGES` stream, the rows queue whose
/// redrive policy moves a message to the dead-letter queue after `max_receive_count`
/// deliveries, and the bucket — as `template.yaml` declares them.
///
/// # Errors
/// [`PortError`] when the emulator refuses a call other than "already exists".
pub async fn provision(
    sdk: &aws_config::SdkConfig,
    names: &EmulatorNames,
    max_receive_count: u32,
    public_base_url: Option<String>,
) -> Result<EmulatorBackends, PortError> {
    let repo = DynamoRequestRepository::from(DynamoTable::new(sdk, &names.table));
    let string_key = |name: &str| {
        AttributeDefinition::builder()
            .attribute_name(name)
            .attribute_type(ScalarAttributeType::S)
            .build()
    };
    let key = |name: &str, kind| {
        KeySchemaElement::builder()
            .attribute_name(name)
            .key_type(kind)
            .build()
    };
    let built = |e: aws_sdk_dynamodb::error::BuildError| PortError::Unexpected(anyhow!("{e}"));
    let created = repo
        .table()
        .client()
        .create_table()
        .table_name(&names.table)
        .attribute_definitions(string_key("pk").map_err(built)?)
        .attribute_definitions(string_key("sk").map_err(built)?)
        .key_schema(key("pk", KeyType::Hash).map_err(built)?)
        .key_schema(key("sk", KeyType::Range).map_err(built)?)
        .attribute_definitions(string_key(OPEN_ATTRIBUTE).map_err(built)?)
        .attribute_definitions(string_key("created_at").map_err(built)?)
        .global_secondary_indexes(
            GlobalSecondaryIndex::builder()
                .index_name(OPEN_INDEX)
                .key_schema(key(OPEN_ATTRIBUTE, KeyType::Hash).map_err(built)?)
                .key_schema(key("created_at", KeyType::Range).map_err(built)?)
                .projection(
                    Projection::builder()
                        .projection_type(ProjectionType::KeysOnly)
                        .build(),
                )
                .build()
                .map_err(built)?,
        )
        .billing_mode(BillingMode::PayPerRequest)
        .stream_specification(
            StreamSpecification::builder()
                .stream_enabled(true)
                .stream_view_type(StreamViewType::NewAndOldImages)
                .build()
                .map_err(built)?,
        )
        .send()
        .await;
    if let Err(e) = created
        && !e
            .as_service_error()
            .is_some_and(aws_sdk_dynamodb::operation::create_table::CreateTableError::is_resource_in_use_exception)
    {
        return Err(sdk_error("creating the table", &e));
    }

    let sqs = aws_sdk_sqs::Client::new(sdk);
    let dlq_url = sqs
        .create_queue()
        .queue_name(&names.dead_letter_queue)
        .send()
        .await
        .map_err(|e| sdk_error("creating the dead-letter queue", &e))?
        .queue_url
        .unwrap_or_default();
    let dlq_arn = sqs
        .get_queue_attributes()
        .queue_url(&dlq_url)
        .attribute_names(QueueAttributeName::QueueArn)
        .send()
        .await
        .map_err(|e| sdk_error("reading the dead-letter queue", &e))?
        .attributes
        .and_then(|a| a.get(&QueueAttributeName::QueueArn).cloned())
        .unwrap_or_default();
    let redrive = serde_json::json!({
        "deadLetterTargetArn": dlq_arn,
        "maxReceiveCount": max_receive_count,
    });
    let queue_url = sqs
        .create_queue()
        .queue_name(&names.queue)
        .attributes(QueueAttributeName::RedrivePolicy, redrive.to_string())
        .send()
        .await
        .map_err(|e| sdk_error("creating the rows queue", &e))?
        .queue_url
        .unwrap_or_default();

    let store = S3ObjectStore::new(sdk, &names.bucket, public_base_url, true);
    let created = store
        .client()
        .create_bucket()
        .bucket(&names.bucket)
        .send()
        .await;
    if let Err(e) = created
        && !e
            .as_service_error()
            .is_some_and(|e| e.is_bucket_already_owned_by_you() || e.is_bucket_already_exists())
    {
        return Err(sdk_error("creating the bucket", &e));
    }
    Ok(EmulatorBackends {
        repo,
        stream: DynamoStreamReader::new(sdk, &names.table),
        queue: SqsRowQueue::from(SqsQueue::new(sdk, queue_url.clone())),
        rows: SqsConsumer::from(SqsQueue::new(sdk, queue_url)),
        dead_letter_queue: SqsConsumer::from(SqsQueue::new(sdk, dlq_url)),
        store,
        slots: DynamoOriginSlots::from(DynamoTable::new(sdk, &names.table)),
    })
}
