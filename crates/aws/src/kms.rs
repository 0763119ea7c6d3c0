//! Envelope encryption of tenants' webhook signing secrets with AWS KMS ("AWS KMS concepts" →
//! "Envelope encryption", AWS Key Management Service Developer Guide): each secret is sealed
//! with AES-256-GCM under a fresh 256-bit data key from `GenerateDataKey` on the template's
//! key; the item keeps the sealed secret and the data key as KMS encrypted it, never either in
//! the clear, so the table, its stream and its backups hold no usable secret. Opening asks KMS
//! to `Decrypt` the data key. The tenant's name is the encryption context of the data key and
//! the additional authenticated data of the seal, so a sealed secret copied onto another
//! tenant's item does not open.

use aws_sdk_kms::primitives::Blob;
use aws_sdk_kms::types::DataKeySpec;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use ring::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use ring::rand::{SecureRandom, SystemRandom};
use serde::{Deserialize, Serialize};

use super::sdk_error;
use pixpress_app::ports::PortError;

/// The encryption-context key naming the tenant a data key belongs to.
const CONTEXT_KEY: &str = "tenant";

/// A secret sealed under a data key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sealed {
    /// The data key as KMS encrypted it (`CiphertextBlob`, base64).
    pub data_key: String,
    /// The 12-byte nonce, then the AES-256-GCM ciphertext and its 16-byte tag (base64).
    pub ciphertext: String,
}

/// Seals and opens secrets with data keys of one KMS key. Cheap to clone.
#[derive(Debug, Clone)]
pub struct SecretSealer {
    client: aws_sdk_kms::Client,
    key_id: String,
}

fn broken(what: &str) -> PortError {
    PortError::Unexpected(anyhow::anyhow!("{what}"))
}

impl SecretSealer {
    /// A sealer using data keys of KMS key `key_id` (an id, ARN or alias).
    #[must_use]
    pub fn new(client: aws_sdk_kms::Client, key_id: impl Into<String>) -> Self {
        Self {
            client,
            key_id: key_id.into(),
        }
    }

    /// Seals `secret` of `tenant` under a new data key (one `GenerateDataKey`).
    ///
    /// # Errors
    /// [`PortError`] when KMS refuses (access, throttling: retried by the SDK first) or
    /// answers without a key.
    pub async fn seal(&self, secret: &str, tenant: &str) -> Result<Sealed, PortError> {
        let out = self
            .client
            .generate_data_key()
            .key_id(&self.key_id)
            .key_spec(DataKeySpec::Aes256)
            .encryption_context(CONTEXT_KEY, tenant)
            .send()
            .await
            .map_err(|e| sdk_error("generating a data key", &e))?;
        let (Some(plain_key), Some(encrypted_key)) = (out.plaintext(), out.ciphertext_blob())
        else {
            return Err(broken("KMS answered GenerateDataKey without a key"));
        };
        let key = aead_key(plain_key.as_ref())?;
        let mut nonce = [0u8; NONCE_LEN];
        SystemRandom::new()
            .fill(&mut nonce)
            .map_err(|_| broken("no randomness for a nonce"))?;
        let mut sealed = secret.as_bytes().to_vec();
        key.seal_in_place_append_tag(
            Nonce::assume_unique_for_key(nonce),
            Aad::from(tenant.as_bytes()),
            &mut sealed,
        )
        .map_err(|_| broken("sealing a secret failed"))?;
        let mut ciphertext = nonce.to_vec();
        ciphertext.extend_from_slice(&sealed);
        Ok(Sealed {
            data_key: STANDARD.encode(encrypted_key.as_ref()),
            ciphertext: STANDARD.encode(ciphertext),
        })
    }

    /// Opens `sealed`, a secret of `tenant` (one `Decrypt` of its data key).
    ///
    /// # Errors
    /// [`PortError`] when KMS refuses the data key (another tenant's context, access,
    /// throttling) or the seal does not open (tampered, another tenant's).
    pub async fn open(&self, sealed: &Sealed, tenant: &str) -> Result<String, PortError> {
        let encrypted_key = STANDARD
            .decode(&sealed.data_key)
            .map_err(|_| broken("a sealed secret's data key is not base64"))?;
        let out = self
            .client
            .decrypt()
            .key_id(&self.key_id)
            .ciphertext_blob(Blob::new(encrypted_key))
            .encryption_context(CONTEXT_KEY, tenant)
            .send()
            .await
            .map_err(|e| sdk_error("decrypting a data key", &e))?;
        let plain_key = out
            .plaintext()
            .ok_or_else(|| broken("KMS answered Decrypt without a key"))?;
        let key = aead_key(plain_key.as_ref())?;
        let mut ciphertext = STANDARD
            .decode(&sealed.ciphertext)
            .map_err(|_| broken("a sealed secret is not base64"))?;
        if ciphertext.len() < NONCE_LEN {
            return Err(broken("a sealed secret is too short"));
        }
        let mut body = ciphertext.split_off(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(&ciphertext)
            .map_err(|_| broken("a sealed secret's nonce is malformed"))?;
        let opened = key
            .open_in_place(nonce, Aad::from(tenant.as_bytes()), &mut body)
            .map_err(|_| {
                broken(&format!(
                    "the webhook secret of tenant {tenant} does not open"
                ))
            })?;
        String::from_utf8(opened.to_vec()).map_err(|_| broken("an opened secret is not text"))
    }
}

fn aead_key(bytes: &[u8]) -> Result<LessSafeKey, PortError> {
    UnboundKey::new(&AES_256_GCM, bytes)
        .map(LessSafeKey::new)
        .map_err(|_| broken("KMS answered a data key that is not 256 bits"))
}
