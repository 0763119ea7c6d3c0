//! API keys and tenants in one JSON file (`keys.json` in `pixpress serve`'s data directory), so
//! keys made with `pixpress keys create` survive restarts. Every change rewrites the file
//! through a temporary file and a rename, so a reader never sees half a file.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::anyhow;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tokio::sync::Mutex;

use pixpress_app::auth::{ApiKeyRecord, KeyStore, TenantRecord};
use pixpress_app::ports::PortError;

/// Name of the file in a data directory.
pub const KEYS_FILE: &str = "keys.json";

#[derive(Debug, Default, Serialize, Deserialize)]
struct KeysFile {
    #[serde(default)]
    keys: Vec<ApiKeyRecord>,
    #[serde(default)]
    tenants: Vec<TenantRecord>,
}

/// Keys and tenants in `<dir>/keys.json`. Cheap to clone; clones share one lock.
#[derive(Debug, Clone)]
pub struct FileKeyStore {
    path: PathBuf,
    lock: Arc<Mutex<()>>,
}

fn io_error(what: &str, path: &Path, e: impl std::fmt::Display) -> PortError {
    PortError::Unexpected(anyhow!("{what} {}: {e}", path.display()))
}

impl FileKeyStore {
    /// The store in directory `dir` (created on the first write).
    #[must_use]
    pub fn in_dir(dir: &Path) -> Self {
        Self {
            path: dir.join(KEYS_FILE),
            lock: Arc::default(),
        }
    }

    /// The file's path.
    #[must_use]
    pub fn path(&self) -> &Path {
        &self.path
    }

    async fn load(&self) -> Result<KeysFile, PortError> {
        match tokio::fs::read(&self.path).await {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map_err(|e| io_error("malformed key file", &self.path, e)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(KeysFile::default()),
            Err(e) => Err(io_error("cannot read", &self.path, e)),
        }
    }

    async fn save(&self, file: &KeysFile) -> Result<(), PortError> {
        if let Some(dir) = self.path.parent() {
            tokio::fs::create_dir_all(dir)
                .await
                .map_err(|e| io_error("cannot create", dir, e))?;
        }
        let bytes = serde_json::to_vec_pretty(file)
            .map_err(|e| io_error("cannot encode", &self.path, e))?;
        let tmp = self.path.with_extension("json.tmp");
        tokio::fs::write(&tmp, bytes)
            .await
            .map_err(|e| io_error("cannot write", &tmp, e))?;
        tokio::fs::rename(&tmp, &self.path)
            .await
            .map_err(|e| io_error("cannot replace", &self.path, e))
    }
}

impl KeyStore for FileKeyStore {
    async fn put_key(&self, record: &ApiKeyRecord) -> Result<(), PortError> {
        let _guard = self.lock.lock().await;
        let mut file = self.load().await?;
        if file.keys.iter().any(|k| k.key_id == record.key_id) {
            return Err(PortError::Unexpected(anyhow!(
                "key id {} exists",
                record.key_id
            )));
        }
        file.keys.push(record.clone());
        self.save(&file).await
    }

    async fn get_key(&self, key_id: &str) -> Result<Option<ApiKeyRecord>, PortError> {
        Ok(self
            .load()
            .await?
            .keys
            .into_iter()
            .find(|k| k.key_id == key_id))
    }

    async fn list_keys(&self) -> Result<Vec<ApiKeyRecord>, PortError> {
        Ok(self.load().await?.keys)
    }

    async fn revoke_key(&self, key_id: &str, at: DateTime<Utc>) -> Result<bool, PortError> {
        let _guard = self.lock.lock().await;
        let mut file = self.load().await?;
        let Some(key) = file.keys.iter_mut().find(|k| k.key_id == key_id) else {
            return Ok(false);
        };
        key.revoked_at.get_or_insert(at);
        self.save(&file).await?;
        Ok(true)
    }

    async fn get_tenant(&self, tenant: &str) -> Result<Option<TenantRecord>, PortError> {
        Ok(self
            .load()
            .await?
            .tenants
            .into_iter()
            .find(|t| t.tenant == tenant))
    }

    async fn put_tenant(&self, record: &TenantRecord) -> Result<(), PortError> {
        let _guard = self.lock.lock().await;
        let mut file = self.load().await?;
        file.tenants.retain(|t| t.tenant != record.tenant);
        file.tenants.push(record.clone());
        self.save(&file).await
    }

    async fn create_tenant(&self, record: &TenantRecord) -> Result<TenantRecord, PortError> {
        let _guard = self.lock.lock().await;
        let mut file = self.load().await?;
        if let Some(existing) = file.tenants.iter().find(|t| t.tenant == record.tenant) {
            return Ok(existing.clone());
        }
        file.tenants.push(record.clone());
        self.save(&file).await?;
        Ok(record.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pixpress_app::auth::{Unauthenticated, authenticate, create_key};

    #[tokio::test]
    async fn a_key_authenticates_its_tenant_until_revoked_and_survives_a_reopen() {
        let dir = std::env::temp_dir().join(format!("pixpress-keys-{}", uuid::Uuid::new_v4()));
        let store = FileKeyStore::in_dir(&dir);
        let now = Utc::now();
        let (acme, tenant) = create_key(&store, "acme", now).await.unwrap();
        let (second, same_tenant) = create_key(&store, "acme", now).await.unwrap();
        assert_eq!(tenant, same_tenant, "one webhook secret per tenant");
        let bearer = |key: &str| format!("Bearer {key}");
        let reopened = FileKeyStore::in_dir(&dir);
        assert_eq!(
            authenticate(&reopened, Some(&bearer(&acme.api_key)))
                .await
                .unwrap(),
            Ok("acme".to_owned())
        );
        assert_eq!(
            authenticate(&reopened, Some(&format!("bearer  {}", second.api_key)))
                .await
                .unwrap(),
            Ok("acme".to_owned())
        );
        let text = std::fs::read_to_string(store.path()).unwrap();
        assert!(
            !text.contains(&acme.api_key),
            "the key itself is never stored"
        );
        // A wrong secret with a real key id, a missing header, another scheme: all refused.
        let forged = format!("pk_{}_{}", acme.record.key_id, "A".repeat(43));
        for header in [
            Some(bearer(&forged)),
            Some(format!("Basic {}", acme.api_key)),
            None,
        ] {
            let answer = authenticate(&reopened, header.as_deref()).await.unwrap();
            assert!(answer.is_err(), "{header:?}");
        }
        assert_eq!(
            authenticate(&reopened, None).await.unwrap(),
            Err(Unauthenticated::Missing)
        );
        assert!(reopened.revoke_key(&acme.record.key_id, now).await.unwrap());
        assert!(!reopened.revoke_key("0000000000000000", now).await.unwrap());
        assert_eq!(
            authenticate(&store, Some(&bearer(&acme.api_key)))
                .await
                .unwrap(),
            Err(Unauthenticated::Invalid)
        );
        assert_eq!(
            authenticate(&store, Some(&bearer(&second.api_key)))
                .await
                .unwrap(),
            Ok("acme".to_owned())
        );
        assert_eq!(store.list_keys().await.unwrap().len(), 2);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
