//! API keys and tenants.
//!
//! A key reads `pk_<key id>_<secret>` (Stripe-style): `pk_` says what the string is, the key
//! id — 16 lower-case hex characters, 64 random bits — names the key in lists and revocations
//! and is safe to log, and the secret is 32 random bytes from the operating system's CSPRNG,
//! base64url without padding (43 characters). Only the SHA-256 of the whole key is stored; a
//! key is shown once, when it is made. Each key maps to one tenant; every request carries the
//! tenant of the key that made it, and other tenants cannot see it.
//!
//! A tenant is made with its first key, with its own webhook signing secret (`whsec_`, 32
//! random bytes; Standard Webhooks asks for 24 to 64).

use std::future::Future;

use base64::Engine as _;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::ports::PortError;
pub use pixpress_domain::storage_keys::{MAX_TENANT_BYTES, is_valid_tenant};
use pixpress_domain::webhook::WebhookSecret;

/// What every API key starts with.
pub const KEY_PREFIX: &str = "pk_";
/// Random bytes in a key's secret part.
pub const KEY_SECRET_BYTES: usize = 32;
/// Random bytes in a tenant's webhook signing secret (Standard Webhooks: 24–64).
pub const WEBHOOK_SECRET_BYTES: usize = 32;

/// A stored API key: never the key itself, only its hash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiKeyRecord {
    /// The key's public id (16 hex characters).
    pub key_id: String,
    /// The tenant the key acts for.
    pub tenant: String,
    /// SHA-256 of the whole key, lower-case hex.
    pub key_sha256: String,
    /// When the key was made.
    pub created_at: DateTime<Utc>,
    /// When the key was revoked; a revoked key authenticates nothing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revoked_at: Option<DateTime<Utc>>,
}

/// How long a rotated-out webhook secret keeps signing beside the new one, in hours.
pub const WEBHOOK_ROTATION_GRACE_HOURS: i64 = 24;

/// A tenant and its webhook signing secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TenantRecord {
    /// The tenant's name.
    pub tenant: String,
    /// Its webhook signing secret, `whsec_<base64>`.
    pub webhook_secret: String,
    /// When the tenant was made.
    pub created_at: DateTime<Utc>,
    /// The secret before the last rotation; it signs too until `previous_valid_until`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_webhook_secret: Option<String>,
    /// End of the rotation's grace period.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_valid_until: Option<DateTime<Utc>>,
    /// Webhook URLs that answered `410 Gone`: nothing more is sent to them (Standard Webhooks:
    /// a 410 means the receiver is gone for good).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub disabled_webhook_urls: Vec<String>,
}

impl TenantRecord {
    /// The secrets that sign a delivery at `now`: the current one, and the previous one during
    /// the grace period after a rotation.
    #[must_use]
    pub fn signing_secrets(&self, now: DateTime<Utc>) -> Vec<WebhookSecret> {
        let mut secrets: Vec<WebhookSecret> = WebhookSecret::parse(&self.webhook_secret)
            .into_iter()
            .collect();
        if let (Some(previous), Some(until)) =
            (&self.previous_webhook_secret, self.previous_valid_until)
            && now < until
            && let Ok(previous) = WebhookSecret::parse(previous)
        {
            secrets.push(previous);
        }
        secrets
    }

    /// This tenant with a new secret; the current one keeps signing for
    /// [`WEBHOOK_ROTATION_GRACE_HOURS`].
    ///
    /// # Errors
    /// When the system has no randomness.
    pub fn rotated(&self, now: DateTime<Utc>) -> Result<Self, PortError> {
        let fresh = new_tenant(&self.tenant, now)?;
        Ok(Self {
            webhook_secret: fresh.webhook_secret,
            previous_webhook_secret: Some(self.webhook_secret.clone()),
            previous_valid_until: Some(now + chrono::Duration::hours(WEBHOOK_ROTATION_GRACE_HOURS)),
            ..self.clone()
        })
    }
}

/// A key just made: the only time the key itself exists outside the client.
#[derive(Debug, Clone)]
pub struct IssuedKey {
    /// The whole key, `pk_<key id>_<secret>`.
    pub api_key: String,
    /// What is stored.
    pub record: ApiKeyRecord,
}

/// Why a request is not authenticated. Both answer the same 401, so a caller cannot tell a
/// wrong key from a missing one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unauthenticated {
    /// No `Authorization: Bearer` header.
    Missing,
    /// A key that is malformed, unknown, wrong or revoked.
    Invalid,
}

fn random_bytes<const N: usize>() -> Result<[u8; N], PortError> {
    let mut bytes = [0u8; N];
    getrandom::fill(&mut bytes)
        .map_err(|e| PortError::Unexpected(anyhow::anyhow!("no random bytes: {e}")))?;
    Ok(bytes)
}

/// SHA-256 of `api_key`, lower-case hex.
#[must_use]
pub fn key_sha256(api_key: &str) -> String {
    Sha256::digest(api_key.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The key id inside `pk_<key id>_<secret>`, or `None` when `api_key` does not have that shape.
#[must_use]
pub fn key_id_of(api_key: &str) -> Option<&str> {
    let rest = api_key.strip_prefix(KEY_PREFIX)?;
    let (id, secret) = rest.split_once('_')?;
    let id_ok = id.len() == 16 && id.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
    (id_ok && !secret.is_empty()).then_some(id)
}

/// Makes a key for `tenant`.
///
/// # Errors
/// [`PortError::Unexpected`] when the tenant name is invalid or the system has no randomness.
pub fn issue_key(tenant: &str, now: DateTime<Utc>) -> Result<IssuedKey, PortError> {
    if !is_valid_tenant(tenant) {
        return Err(PortError::Unexpected(anyhow::anyhow!(
            "tenant `{tenant}` is not 1–{MAX_TENANT_BYTES} lower-case letters, digits, `-` or `_`"
        )));
    }
    let id: String = random_bytes::<8>()?
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let secret = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .encode(random_bytes::<KEY_SECRET_BYTES>()?);
    let api_key = format!("{KEY_PREFIX}{id}_{secret}");
    Ok(IssuedKey {
        record: ApiKeyRecord {
            key_id: id,
            tenant: tenant.to_owned(),
            key_sha256: key_sha256(&api_key),
            created_at: now,
            revoked_at: None,
        },
        api_key,
    })
}

/// A new tenant record with a fresh webhook secret.
///
/// # Errors
/// [`PortError::Unexpected`] when the system has no randomness.
pub fn new_tenant(tenant: &str, now: DateTime<Utc>) -> Result<TenantRecord, PortError> {
    let secret = WebhookSecret::from_bytes(&random_bytes::<WEBHOOK_SECRET_BYTES>()?);
    Ok(TenantRecord {
        tenant: tenant.to_owned(),
        webhook_secret: secret.to_whsec(),
        created_at: now,
        previous_webhook_secret: None,
        previous_valid_until: None,
        disabled_webhook_urls: Vec::new(),
    })
}

/// Compares two byte strings in time that depends only on their lengths.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Where keys and tenants are kept.
pub trait KeyStore: Send + Sync {
    /// Stores a new key (its id is random; an existing id is an error).
    fn put_key(&self, record: &ApiKeyRecord) -> impl Future<Output = Result<(), PortError>> + Send;

    /// The key with `key_id`, revoked or not.
    fn get_key(
        &self,
        key_id: &str,
    ) -> impl Future<Output = Result<Option<ApiKeyRecord>, PortError>> + Send;

    /// Every key, oldest first.
    fn list_keys(&self) -> impl Future<Output = Result<Vec<ApiKeyRecord>, PortError>> + Send;

    /// Marks a key revoked at `at`; `false` when there is no such key. Revoking twice keeps
    /// the first time.
    fn revoke_key(
        &self,
        key_id: &str,
        at: DateTime<Utc>,
    ) -> impl Future<Output = Result<bool, PortError>> + Send;

    /// The tenant named `tenant`.
    fn get_tenant(
        &self,
        tenant: &str,
    ) -> impl Future<Output = Result<Option<TenantRecord>, PortError>> + Send;

    /// Replaces the stored tenant with `record` (a secret rotation).
    fn put_tenant(
        &self,
        record: &TenantRecord,
    ) -> impl Future<Output = Result<(), PortError>> + Send;

    /// Stores `record` unless the tenant exists; returns the stored tenant either way.
    fn create_tenant(
        &self,
        record: &TenantRecord,
    ) -> impl Future<Output = Result<TenantRecord, PortError>> + Send;
}

/// Makes a key for `tenant`, making the tenant (and its webhook secret) with its first key.
/// Returns the key, shown once, and the tenant.
///
/// # Errors
/// An invalid tenant name, or the store's failure.
pub async fn create_key<K: KeyStore>(
    store: &K,
    tenant: &str,
    now: DateTime<Utc>,
) -> Result<(IssuedKey, TenantRecord), PortError> {
    let issued = issue_key(tenant, now)?;
    let tenant = store.create_tenant(&new_tenant(tenant, now)?).await?;
    store.put_key(&issued.record).await?;
    Ok((issued, tenant))
}

/// Rotates `tenant`'s webhook secret: the new one signs from now on, the old one signs beside
/// it for [`WEBHOOK_ROTATION_GRACE_HOURS`] so receivers can switch without missing a delivery.
///
/// # Errors
/// [`PortError::Unexpected`] for an unknown tenant, or the store's failure.
pub async fn rotate_webhook_secret<K: KeyStore>(
    store: &K,
    tenant: &str,
    now: DateTime<Utc>,
) -> Result<TenantRecord, PortError> {
    let current = store
        .get_tenant(tenant)
        .await?
        .ok_or_else(|| PortError::Unexpected(anyhow::anyhow!("no tenant `{tenant}`")))?;
    let rotated = current.rotated(now)?;
    store.put_tenant(&rotated).await?;
    Ok(rotated)
}

/// The tenant an `Authorization` header value authenticates (`Bearer <key>`, scheme
/// case-insensitive per RFC 9110 §11.1).
///
/// # Errors
/// `Ok(Err(_))` when the request is not authenticated; `Err` when the store failed.
pub async fn authenticate<K: KeyStore>(
    store: &K,
    authorization: Option<&str>,
) -> Result<Result<String, Unauthenticated>, PortError> {
    let Some(value) = authorization else {
        return Ok(Err(Unauthenticated::Missing));
    };
    let Some((scheme, key)) = value.trim().split_once(' ') else {
        return Ok(Err(Unauthenticated::Invalid));
    };
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Ok(Err(Unauthenticated::Invalid));
    }
    let key = key.trim();
    let Some(key_id) = key_id_of(key) else {
        return Ok(Err(Unauthenticated::Invalid));
    };
    let Some(record) = store.get_key(key_id).await? else {
        return Ok(Err(Unauthenticated::Invalid));
    };
    let matches = constant_time_eq(key_sha256(key).as_bytes(), record.key_sha256.as_bytes());
    if !matches || record.revoked_at.is_some() {
        return Ok(Err(Unauthenticated::Invalid));
    }
    Ok(Ok(record.tenant))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_have_a_readable_prefix_a_public_id_and_32_random_bytes_and_are_stored_as_a_hash() {
        let now = Utc::now();
        let a = issue_key("acme", now).unwrap();
        let b = issue_key("acme", now).unwrap();
        assert_ne!(a.api_key, b.api_key);
        assert!(a.api_key.starts_with("pk_"));
        assert_eq!(key_id_of(&a.api_key), Some(a.record.key_id.as_str()));
        // The secret is base64url, which may itself hold `_`: it is everything after the id.
        let secret = &a.api_key[KEY_PREFIX.len() + 16 + 1..];
        let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(secret)
            .unwrap();
        assert_eq!(raw.len(), KEY_SECRET_BYTES);
        assert_eq!(a.record.key_sha256, key_sha256(&a.api_key));
        assert!(!a.record.key_sha256.contains(secret));
        let tenant = new_tenant("acme", now).unwrap();
        let whsec = WebhookSecret::parse(&tenant.webhook_secret).unwrap();
        assert_eq!(whsec.to_whsec(), tenant.webhook_secret);
        assert!(tenant.webhook_secret.starts_with("whsec_"));
    }

    #[test]
    fn a_rotated_secret_signs_beside_the_new_one_until_the_grace_period_ends() {
        let now = Utc::now();
        let tenant = new_tenant("acme", now).unwrap();
        assert_eq!(tenant.signing_secrets(now).len(), 1);
        let rotated = tenant.rotated(now).unwrap();
        assert_ne!(rotated.webhook_secret, tenant.webhook_secret);
        let during = rotated.signing_secrets(now + chrono::Duration::hours(23));
        assert_eq!(during.len(), 2);
        assert_eq!(during[1].to_whsec(), tenant.webhook_secret);
        let after = rotated.signing_secrets(now + chrono::Duration::hours(25));
        assert_eq!(after.len(), 1);
        assert_eq!(after[0].to_whsec(), rotated.webhook_secret);
        // A receiver holding either secret verifies a delivery signed during the grace period.
        let headers = pixpress_domain::webhook::headers(&during, "msg_1", now.timestamp(), b"{}");
        let signature = &headers
            .iter()
            .find(|(k, _)| *k == "webhook-signature")
            .unwrap()
            .1;
        for secret in [&tenant.webhook_secret, &rotated.webhook_secret] {
            let secret = WebhookSecret::parse(secret).unwrap();
            let ts = now.timestamp().to_string();
            assert_eq!(secret.verify("msg_1", &ts, signature, b"{}", now), Ok(()));
        }
    }

    #[test]
    fn tenant_names_are_safe_in_object_keys() {
        for ok in ["acme", "shop-42", "a_b", "7eleven"] {
            assert!(is_valid_tenant(ok), "{ok}");
        }
        for bad in ["", "Acme", "-acme", "a/b", "a b", "ä", &"x".repeat(65)] {
            assert!(!is_valid_tenant(bad), "{bad}");
        }
        assert!(issue_key("../x", Utc::now()).is_err());
    }

    #[test]
    fn malformed_keys_have_no_id() {
        for bad in [
            "",
            "pk_",
            "pk_0123456789abcdef_",
            "sk_0123456789abcdef_x",
            "pk_XYZ_abc",
        ] {
            assert_eq!(key_id_of(bad), None, "{bad}");
        }
    }
}
