//! The key store of a deployment: DynamoDB in Lambda, a file for `pixpress serve`.

use chrono::{DateTime, Utc};

use pixpress_app::auth::{ApiKeyRecord, KeyStore, TenantRecord};
use pixpress_app::ports::PortError;

/// The key store of a deployment: DynamoDB (Lambda, `--backend aws`) or a file in the data
/// directory (`pixpress serve`).
#[derive(Debug, Clone)]
pub enum AnyKeyStore {
    /// Keys and tenants in the requests table.
    Dynamo(pixpress_aws::DynamoKeyStore),
    /// Keys and tenants in `keys.json`.
    File(pixpress_embedded::FileKeyStore),
}

impl KeyStore for AnyKeyStore {
    async fn put_key(&self, record: &ApiKeyRecord) -> Result<(), PortError> {
        match self {
            Self::Dynamo(s) => s.put_key(record).await,
            Self::File(s) => s.put_key(record).await,
        }
    }

    async fn get_key(&self, key_id: &str) -> Result<Option<ApiKeyRecord>, PortError> {
        match self {
            Self::Dynamo(s) => s.get_key(key_id).await,
            Self::File(s) => s.get_key(key_id).await,
        }
    }

    async fn list_keys(&self) -> Result<Vec<ApiKeyRecord>, PortError> {
        match self {
            Self::Dynamo(s) => s.list_keys().await,
            Self::File(s) => s.list_keys().await,
        }
    }

    async fn revoke_key(&self, key_id: &str, at: DateTime<Utc>) -> Result<bool, PortError> {
        match self {
            Self::Dynamo(s) => s.revoke_key(key_id, at).await,
            Self::File(s) => s.revoke_key(key_id, at).await,
        }
    }

    async fn get_tenant(&self, tenant: &str) -> Result<Option<TenantRecord>, PortError> {
        match self {
            Self::Dynamo(s) => s.get_tenant(tenant).await,
            Self::File(s) => s.get_tenant(tenant).await,
        }
    }

    async fn put_tenant(&self, record: &TenantRecord) -> Result<(), PortError> {
        match self {
            Self::Dynamo(s) => s.put_tenant(record).await,
            Self::File(s) => s.put_tenant(record).await,
        }
    }

    async fn create_tenant(&self, record: &TenantRecord) -> Result<TenantRecord, PortError> {
        match self {
            Self::Dynamo(s) => s.create_tenant(record).await,
            Self::File(s) => s.create_tenant(record).await,
        }
    }
}
