//! API keys and tenants in the requests table: `pk = KEY#<key id>, sk = KEY` and
//! `pk = TENANT#<name>, sk = TENANT`. The stream filter of the completion notifier passes only
//! `META` items, so these never reach it. With a [`SecretSealer`] (deployments:
//! `WEBHOOK_SECRETS_KEY_ID`), a tenant's webhook secrets are stored sealed (KMS envelope
//! encryption), never in the clear; a tenant written before sealing is read as stored and
//! sealed when next written.

use anyhow::anyhow;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::handles::{condition_failed, decode, item as encode, key, s};
use super::kms::{Sealed, SecretSealer};
use super::{DynamoTable, sdk_error};
use pixpress_app::auth::{ApiKeyRecord, KeyStore, TenantRecord};
use pixpress_app::ports::PortError;

const KEY_PK_PREFIX: &str = "KEY#";
const KEY_SK: &str = "KEY";
const TENANT_PK_PREFIX: &str = "TENANT#";
const TENANT_SK: &str = "TENANT";

/// Keys and tenants in DynamoDB. Cheap to clone.
#[derive(Debug, Clone)]
pub struct DynamoKeyStore {
    table: DynamoTable,
    sealer: Option<SecretSealer>,
}

impl From<DynamoTable> for DynamoKeyStore {
    /// A store on `table` that keeps webhook secrets as given (local runs, emulators).
    fn from(table: DynamoTable) -> Self {
        Self {
            table,
            sealer: None,
        }
    }
}

impl DynamoKeyStore {
    /// The same store sealing tenants' webhook secrets with `sealer`.
    #[must_use]
    pub fn with_sealer(mut self, sealer: Option<SecretSealer>) -> Self {
        self.sealer = sealer;
        self
    }
}

#[derive(Serialize, Deserialize)]
struct KeyItem {
    pk: String,
    sk: String,
    #[serde(flatten)]
    record: ApiKeyRecord,
}

#[derive(Serialize, Deserialize)]
struct TenantItem {
    pk: String,
    sk: String,
    #[serde(flatten)]
    record: TenantRecord,
    /// The webhook secrets, sealed; then the record's own secret fields are empty.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    sealed: Option<SealedSecrets>,
}

/// A tenant's webhook secrets as stored when sealed.
#[derive(Serialize, Deserialize)]
struct SealedSecrets {
    current: Sealed,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    previous: Option<Sealed>,
}

impl DynamoKeyStore {
    /// The item of `record`, its secrets sealed when this store seals.
    async fn tenant_item(
        &self,
        record: &TenantRecord,
    ) -> Result<std::collections::HashMap<String, aws_sdk_dynamodb::types::AttributeValue>, PortError>
    {
        let mut stored = record.clone();
        let sealed = match &self.sealer {
            Some(sealer) => {
                let current = sealer.seal(&record.webhook_secret, &record.tenant).await?;
                let previous = match &record.previous_webhook_secret {
                    Some(secret) => Some(sealer.seal(secret, &record.tenant).await?),
                    None => None,
                };
                stored.webhook_secret = String::new();
                stored.previous_webhook_secret = None;
                Some(SealedSecrets { current, previous })
            }
            None => None,
        };
        encode(&TenantItem {
            pk: format!("{TENANT_PK_PREFIX}{}", record.tenant),
            sk: TENANT_SK.to_owned(),
            record: stored,
            sealed,
        })
    }

    /// The record of a stored tenant item, its secrets opened.
    async fn open_tenant(&self, item: TenantItem) -> Result<TenantRecord, PortError> {
        let mut record = item.record;
        if let Some(sealed) = item.sealed {
            let sealer = self.sealer.as_ref().ok_or_else(|| {
                PortError::Unexpected(anyhow!(
                    "tenant {}'s webhook secrets are sealed and no KMS key is configured (WEBHOOK_SECRETS_KEY_ID)",
                    record.tenant
                ))
            })?;
            record.webhook_secret = sealer.open(&sealed.current, &record.tenant).await?;
            record.previous_webhook_secret = match &sealed.previous {
                Some(previous) => Some(sealer.open(previous, &record.tenant).await?),
                None => None,
            };
        }
        Ok(record)
    }
}

impl KeyStore for DynamoKeyStore {
    async fn put_key(&self, record: &ApiKeyRecord) -> Result<(), PortError> {
        let item = encode(&KeyItem {
            pk: format!("{KEY_PK_PREFIX}{}", record.key_id),
            sk: KEY_SK.to_owned(),
            record: record.clone(),
        })?;
        if self.table.put_if_absent(item, "an API key").await? {
            Ok(())
        } else {
            Err(PortError::Unexpected(anyhow!(
                "API key {} exists already",
                record.key_id
            )))
        }
    }

    async fn get_key(&self, key_id: &str) -> Result<Option<ApiKeyRecord>, PortError> {
        let key = key(format!("{KEY_PK_PREFIX}{key_id}"), KEY_SK);
        let found: Option<KeyItem> = self.table.read_as(key, "an API key").await?;
        Ok(found.map(|i| i.record))
    }

    async fn list_keys(&self) -> Result<Vec<ApiKeyRecord>, PortError> {
        // An administrator's listing: the SDK's paginator follows `LastEvaluatedKey`, each
        // page retried by the SDK's standard retry mode.
        let items: Vec<_> = self
            .table
            .scan()
            .filter_expression("begins_with(pk, :p) AND sk = :sk")
            .expression_attribute_values(":p", s(KEY_PK_PREFIX))
            .expression_attribute_values(":sk", s(KEY_SK))
            .into_paginator()
            .items()
            .send()
            .collect()
            .await;
        let mut keys = Vec::with_capacity(items.len());
        for item in items {
            let item = item.map_err(|e| sdk_error("listing API keys", &e))?;
            keys.push(decode::<KeyItem>(item, "an API key")?.record);
        }
        keys.sort_by(|a, b| {
            a.created_at
                .cmp(&b.created_at)
                .then(a.key_id.cmp(&b.key_id))
        });
        Ok(keys)
    }

    async fn revoke_key(&self, key_id: &str, at: DateTime<Utc>) -> Result<bool, PortError> {
        let result = self
            .table
            .update_item()
            .set_key(Some(key(format!("{KEY_PK_PREFIX}{key_id}"), KEY_SK)))
            .update_expression("SET revoked_at = if_not_exists(revoked_at, :at)")
            .condition_expression("attribute_exists(pk)")
            .expression_attribute_values(":at", s(at.to_rfc3339()))
            .send()
            .await;
        match result {
            Ok(_) => Ok(true),
            Err(e) if condition_failed(&e) => Ok(false),
            Err(e) => Err(sdk_error("revoking an API key", &e)),
        }
    }

    async fn get_tenant(&self, tenant: &str) -> Result<Option<TenantRecord>, PortError> {
        let key = key(format!("{TENANT_PK_PREFIX}{tenant}"), TENANT_SK);
        let found: Option<TenantItem> = self.table.read_as(key, "a tenant").await?;
        match found {
            Some(item) => Ok(Some(self.open_tenant(item).await?)),
            None => Ok(None),
        }
    }

    async fn put_tenant(&self, record: &TenantRecord) -> Result<(), PortError> {
        self.table
            .put(self.tenant_item(record).await?, "a tenant")
            .await
    }

    async fn create_tenant(&self, record: &TenantRecord) -> Result<TenantRecord, PortError> {
        if self
            .table
            .put_if_absent(self.tenant_item(record).await?, "a tenant")
            .await?
        {
            return Ok(record.clone());
        }
        self.get_tenant(&record.tenant)
            .await?
            .ok_or_else(|| PortError::Unexpected(anyhow!("tenant {} vanished", record.tenant)))
    }
}
