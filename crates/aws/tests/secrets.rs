//! Secrets at rest, against mocked AWS answers: tenants' webhook secrets are stored sealed
//! (KMS envelope encryption) and open only for their own tenant; the deployment's signing
//! secret comes from Secrets Manager.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use aws_sdk_dynamodb::config::retry::RetryConfig;
use aws_sdk_dynamodb::operation::get_item::GetItemOutput;
use aws_sdk_dynamodb::operation::put_item::PutItemOutput;
use aws_sdk_dynamodb::types::AttributeValue;
use aws_sdk_kms::operation::decrypt::{DecryptError, DecryptOutput};
use aws_sdk_kms::operation::generate_data_key::GenerateDataKeyOutput;
use aws_sdk_kms::primitives::Blob;
use aws_sdk_kms::types::error::InvalidCiphertextException;
use aws_sdk_secretsmanager::operation::get_secret_value::GetSecretValueOutput;
use aws_smithy_mocks::{RuleMode, mock, mock_client};
use chrono::Utc;
use pixpress_app::auth::{KeyStore as _, new_tenant};
use pixpress_aws::{DynamoKeyStore, DynamoTable, SecretSealer};

/// The data key KMS "generates" and "decrypts" here, and its encrypted form.
const DATA_KEY: [u8; 32] = [7; 32];
const ENCRYPTED_DATA_KEY: &[u8] = b"data key under the CMK";

/// A sealer whose KMS answers `GenerateDataKey` with [`DATA_KEY`] for any tenant, and `Decrypt`
/// of the encrypted data key under tenant `acme`'s context; under another context it refuses
/// (`InvalidCiphertextException`, as KMS does) unless `lenient`.
fn sealer_with(lenient: bool) -> SecretSealer {
    let generate = mock!(aws_sdk_kms::Client::generate_data_key).then_output(|| {
        GenerateDataKeyOutput::builder()
            .plaintext(Blob::new(DATA_KEY.to_vec()))
            .ciphertext_blob(Blob::new(ENCRYPTED_DATA_KEY.to_vec()))
            .build()
    });
    let decrypt = mock!(aws_sdk_kms::Client::decrypt)
        .match_requests(move |req| {
            req.ciphertext_blob().map(Blob::as_ref) == Some(ENCRYPTED_DATA_KEY)
                && (lenient
                    || req
                        .encryption_context()
                        .and_then(|c| c.get("tenant"))
                        .map(String::as_str)
                        == Some("acme"))
        })
        .then_output(|| {
            DecryptOutput::builder()
                .plaintext(Blob::new(DATA_KEY.to_vec()))
                .build()
        });
    let refuse = mock!(aws_sdk_kms::Client::decrypt).then_error(|| {
        DecryptError::InvalidCiphertextException(
            InvalidCiphertextException::builder()
                .message("the encryption context does not match")
                .build(),
        )
    });
    let client = mock_client!(
        aws_sdk_kms,
        RuleMode::MatchAny,
        [&generate, &decrypt, &refuse]
    );
    SecretSealer::new(client, "alias/pixpress-webhook-secrets")
}

fn sealer() -> SecretSealer {
    sealer_with(false)
}

#[tokio::test]
async fn a_tenants_webhook_secrets_are_stored_sealed_and_open_as_they_were() {
    let stored: Arc<Mutex<HashMap<String, AttributeValue>>> = Arc::default();
    let capture = stored.clone();
    let put = mock!(aws_sdk_dynamodb::Client::put_item)
        .match_requests(move |req| {
            *capture.lock().unwrap() = req.item().cloned().unwrap_or_default();
            true
        })
        .then_output(|| PutItemOutput::builder().build());
    let read = stored.clone();
    let get = mock!(aws_sdk_dynamodb::Client::get_item).then_output(move || {
        GetItemOutput::builder()
            .set_item(Some(read.lock().unwrap().clone()))
            .build()
    });
    let client = mock_client!(aws_sdk_dynamodb, RuleMode::MatchAny, [&put, &get], |c| c
        .retry_config(RetryConfig::disabled()));
    let keys = DynamoKeyStore::from(DynamoTable::from_client(client, "requests"))
        .with_sealer(Some(sealer()));

    let mut tenant = new_tenant("acme", Utc::now()).unwrap();
    tenant.previous_webhook_secret = Some(new_tenant("acme", Utc::now()).unwrap().webhook_secret);
    keys.put_tenant(&tenant).await.unwrap();

    let item = format!("{:?}", stored.lock().unwrap());
    assert!(!item.contains("whsec_"), "a secret in the clear: {item}");
    let secret_body = tenant.webhook_secret.trim_start_matches("whsec_");
    assert!(!item.contains(secret_body), "a secret in the clear: {item}");
    assert!(item.contains("sealed"), "{item}");

    let opened = keys.get_tenant("acme").await.unwrap().unwrap();
    assert_eq!(opened.webhook_secret, tenant.webhook_secret);
    assert_eq!(
        opened.previous_webhook_secret,
        tenant.previous_webhook_secret
    );
}

#[tokio::test]
async fn a_sealed_secret_opens_for_its_own_tenant_only() {
    let sealer = sealer();
    let sealed = sealer.seal("whsec_c2VjcmV0", "acme").await.unwrap();
    assert_eq!(
        sealer.open(&sealed, "acme").await.unwrap(),
        "whsec_c2VjcmV0"
    );
    // KMS refuses the data key under another tenant's context...
    assert!(sealer.open(&sealed, "globex").await.is_err());
    // ...and even with the key, the seal's authenticated data names the tenant.
    let lenient = sealer_with(true);
    assert_eq!(
        lenient.open(&sealed, "acme").await.unwrap(),
        "whsec_c2VjcmV0"
    );
    let err = lenient.open(&sealed, "globex").await.unwrap_err();
    assert!(err.to_string().contains("does not open"), "{err}");
    let mut tampered = sealed.clone();
    tampered.ciphertext.replace_range(20..24, "AAAA");
    assert!(sealer.open(&tampered, "acme").await.is_err());
}

#[tokio::test]
async fn the_deployment_signing_secret_comes_from_secrets_manager() {
    let whsec = mock!(aws_sdk_secretsmanager::Client::get_secret_value)
        .match_requests(|req| req.secret_id() == Some("arn:whsec"))
        .then_output(|| {
            GetSecretValueOutput::builder()
                .secret_string("whsec_c2VjcmV0LWtleS1ieXRlcw==")
                .build()
        });
    let generated = mock!(aws_sdk_secretsmanager::Client::get_secret_value)
        .match_requests(|req| req.secret_id() == Some("arn:generated"))
        .then_output(|| {
            GetSecretValueOutput::builder()
                .secret_string("Xq9TzW3bK7mN2pR8vL4sD6fH1jG5cY0a")
                .build()
        });
    let text = mock!(aws_sdk_secretsmanager::Client::get_secret_value)
        .match_requests(|req| req.secret_id() == Some("arn:text"))
        .then_output(|| {
            GetSecretValueOutput::builder()
                .secret_string("not base64!")
                .build()
        });
    let client = mock_client!(
        aws_sdk_secretsmanager,
        RuleMode::MatchAny,
        [&whsec, &generated, &text]
    );
    let secret = pixpress_aws::lambda::deployment_secret(&client, "arn:whsec")
        .await
        .unwrap();
    assert_eq!(secret.to_whsec(), "whsec_c2VjcmV0LWtleS1ieXRlcw==");
    // What `GenerateSecretString` makes: its bytes are the key, as `WEBHOOK_SECRET` reads
    // text without `whsec_` (so a value moved from the old parameter signs as before).
    let secret = pixpress_aws::lambda::deployment_secret(&client, "arn:generated")
        .await
        .unwrap();
    assert_eq!(
        secret.to_whsec(),
        pixpress_domain::webhook::WebhookSecret::from_bytes(b"Xq9TzW3bK7mN2pR8vL4sD6fH1jG5cY0a")
            .to_whsec()
    );
    let secret = pixpress_aws::lambda::deployment_secret(&client, "arn:text")
        .await
        .unwrap();
    assert_eq!(
        secret.to_whsec(),
        pixpress_domain::webhook::WebhookSecret::from_bytes(b"not base64!").to_whsec()
    );
}
