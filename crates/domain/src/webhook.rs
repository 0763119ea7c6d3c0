//! Completion webhooks, signed per Standard Webhooks v1 (<https://www.standardwebhooks.com/>):
//! headers `webhook-id`, `webhook-timestamp` (Unix seconds) and
//! `webhook-signature: v1,<base64 HMAC-SHA256 of "{id}.{timestamp}.{body}">`, with the secret
//! given as `whsec_<base64 key>`.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac};
use serde::Serialize;
use sha2::Sha256;

use crate::model::{Counters, RequestMeta, RequestStatus};

type HmacSha256 = Hmac<Sha256>;

/// Event type sent when a request reaches a terminal status.
pub const EVENT_REQUEST_COMPLETED: &str = "request.completed";

/// Waits before each retry of a failed delivery, Svix's schedule: 5 s, 5 min, 30 min, 2 h,
/// 5 h, 10 h, 10 h — eight attempts over about 27.5 hours (the first is immediate).
pub const RETRY_SCHEDULE: [std::time::Duration; 7] = [
    std::time::Duration::from_secs(5),
    std::time::Duration::from_secs(5 * 60),
    std::time::Duration::from_secs(30 * 60),
    std::time::Duration::from_secs(2 * 3600),
    std::time::Duration::from_secs(5 * 3600),
    std::time::Duration::from_secs(10 * 3600),
    std::time::Duration::from_secs(10 * 3600),
];

/// Attempts of one delivery: the first and one per [`RETRY_SCHEDULE`] entry.
pub const MAX_DELIVERY_ATTEMPTS: u32 = 1 + RETRY_SCHEDULE.len() as u32;

/// The wait after failed attempt `attempt` (1-based), or `None` after the last one.
#[must_use]
pub fn retry_delay(attempt: u32) -> Option<std::time::Duration> {
    RETRY_SCHEDULE
        .get(usize::try_from(attempt).ok()?.checked_sub(1)?)
        .copied()
}

/// How far a receiver's clock may be from the timestamp (Standard Webhooks suggests 5 minutes).
pub const TIMESTAMP_TOLERANCE_SECS: i64 = 300;

/// A webhook signing secret.
#[derive(Clone, PartialEq, Eq)]
pub struct WebhookSecret(Vec<u8>);

impl std::fmt::Debug for WebhookSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("WebhookSecret(..)")
    }
}

impl WebhookSecret {
    /// Parses `whsec_<base64>`; any other text is used as raw key bytes.
    ///
    /// # Errors
    /// When the `whsec_` payload is not base64 or the key is empty.
    pub fn parse(text: &str) -> Result<Self, String> {
        let key = match text.strip_prefix("whsec_") {
            Some(b64) => BASE64
                .decode(b64)
                .map_err(|e| format!("webhook secret is not valid base64 after whsec_: {e}"))?,
            None => text.as_bytes().to_vec(),
        };
        if key.is_empty() {
            return Err("webhook secret is empty".to_owned());
        }
        Ok(Self(key))
    }

    /// A new secret of 32 random bytes from the operating system (Standard Webhooks: 24–64).
    ///
    /// # Errors
    /// When the system has no randomness.
    pub fn random() -> Result<Self, String> {
        let mut key = [0u8; 32];
        getrandom::fill(&mut key).map_err(|e| format!("no random bytes: {e}"))?;
        Ok(Self(key.to_vec()))
    }

    /// A secret from raw key bytes.
    #[must_use]
    pub fn from_bytes(key: &[u8]) -> Self {
        Self(key.to_vec())
    }

    /// The `whsec_<base64>` form to hand to receivers.
    #[must_use]
    pub fn to_whsec(&self) -> String {
        format!("whsec_{}", BASE64.encode(&self.0))
    }

    fn mac(&self, msg_id: &str, timestamp: i64, body: &[u8]) -> HmacSha256 {
        // HMAC takes keys of any length; new_from_slice cannot fail for HMAC.
        let mut mac = HmacSha256::new_from_slice(&self.0).unwrap_or_else(|_| unreachable!());
        mac.update(msg_id.as_bytes());
        mac.update(b".");
        mac.update(timestamp.to_string().as_bytes());
        mac.update(b".");
        mac.update(body);
        mac
    }

    /// The `webhook-signature` header value: `v1,<base64 signature>`.
    #[must_use]
    pub fn sign(&self, msg_id: &str, timestamp: i64, body: &[u8]) -> String {
        let tag = self.mac(msg_id, timestamp, body).finalize().into_bytes();
        format!("v1,{}", BASE64.encode(tag))
    }

    /// Verifies a delivery as a receiver would (Standard Webhooks v1): the timestamp must be
    /// within [`TIMESTAMP_TOLERANCE_SECS`] of `now`, either way, and one of the space-separated
    /// `v1,<base64>` signatures must match, compared in constant time (HMAC `verify_slice`).
    ///
    /// # Errors
    /// The reason, for a person: a timestamp that is not Unix seconds, too old or in the
    /// future; a `v1,` with nothing after it; no `v1` signature; or no signature that matches.
    pub fn verify(
        &self,
        msg_id: &str,
        timestamp: &str,
        signatures: &str,
        body: &[u8],
        now: DateTime<Utc>,
    ) -> Result<(), String> {
        let ts: i64 = timestamp
            .trim()
            .parse()
            .map_err(|_| format!("webhook-timestamp `{timestamp}` is not Unix seconds"))?;
        let age = now.timestamp() - ts;
        if age > TIMESTAMP_TOLERANCE_SECS {
            return Err(format!(
                "webhook-timestamp is {age} s old; at most {TIMESTAMP_TOLERANCE_SECS} s is accepted"
            ));
        }
        if -age > TIMESTAMP_TOLERANCE_SECS {
            return Err(format!(
                "webhook-timestamp is {} s in the future; at most {TIMESTAMP_TOLERANCE_SECS} s is accepted",
                -age
            ));
        }
        let mut v1_seen = false;
        for candidate in signatures.split_ascii_whitespace() {
            let Some(b64) = candidate.strip_prefix("v1,") else {
                continue;
            };
            if b64.is_empty() {
                return Err("a signature is `v1,` with nothing after it".to_owned());
            }
            v1_seen = true;
            let Ok(tag) = BASE64.decode(b64) else {
                continue;
            };
            if self.mac(msg_id, ts, body).verify_slice(&tag).is_ok() {
                return Ok(());
            }
        }
        if v1_seen {
            Err("bad signature: no v1 signature matches this id, timestamp and body".to_owned())
        } else {
            Err("no `v1,` signature in webhook-signature".to_owned())
        }
    }
}

/// The JSON body of a completion event.
#[derive(Debug, Clone, Serialize)]
pub struct WebhookPayload {
    /// Always [`EVENT_REQUEST_COMPLETED`].
    #[serde(rename = "type")]
    pub event_type: &'static str,
    /// When the event was produced (RFC 3339).
    pub timestamp: DateTime<Utc>,
    /// The event data.
    pub data: WebhookData,
}

/// `data` of a completion event.
#[derive(Debug, Clone, Serialize)]
pub struct WebhookData {
    /// The request.
    pub request_id: String,
    /// Terminal status.
    pub status: RequestStatus,
    /// Counters at completion.
    pub counters: Counters,
    /// Where to fetch the status document, when known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status_url: Option<String>,
    /// Where to fetch the output CSV, when known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub output_csv_url: Option<String>,
}

impl WebhookPayload {
    /// The completion event of `meta`.
    #[must_use]
    pub fn completed(
        meta: &RequestMeta,
        status_url: Option<String>,
        output_csv_url: Option<String>,
        now: DateTime<Utc>,
    ) -> Self {
        Self {
            event_type: EVENT_REQUEST_COMPLETED,
            timestamp: now,
            data: WebhookData {
                request_id: meta.request_id.clone(),
                status: meta.status,
                counters: meta.counters,
                status_url,
                output_csv_url,
            },
        }
    }
}

/// The stable message id of a request's completion event: the same on every retry, so
/// receivers can deduplicate (Standard Webhooks "webhook-id").
#[must_use]
pub fn message_id(request_id: &str) -> String {
    format!("msg_{request_id}_completed")
}

/// Headers for one delivery: `content-type`, `webhook-id`, `webhook-timestamp` and
/// `webhook-signature` with one space-separated `v1,` signature per secret (Standard Webhooks:
/// during a secret rotation both the new and the old secret sign, so a receiver holding either
/// verifies).
#[must_use]
pub fn headers(
    secrets: &[WebhookSecret],
    msg_id: &str,
    timestamp: i64,
    body: &[u8],
) -> Vec<(&'static str, String)> {
    let mut headers = vec![
        ("content-type", "application/json".to_owned()),
        ("webhook-id", msg_id.to_owned()),
        ("webhook-timestamp", timestamp.to_string()),
    ];
    if !secrets.is_empty() {
        let signatures: Vec<String> = secrets
            .iter()
            .map(|s| s.sign(msg_id, timestamp, body))
            .collect();
        headers.push(("webhook-signature", signatures.join(" ")));
    }
    headers
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_matches_the_standard_webhooks_reference_vector() {
        // From the Standard Webhooks specification's reference libraries.
        let secret = WebhookSecret::parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        let body = br#"{"test": 2432232314}"#;
        let sig = secret.sign("msg_p5jXN8AQM9LWM0D4loKWxJek", 1_614_265_330, body);
        assert_eq!(sig, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
    }

    #[test]
    fn verify_rejects_tampered_bodies_and_stale_timestamps() {
        let secret = WebhookSecret::from_bytes(b"0123456789abcdef");
        let now = Utc::now();
        let ts = now.timestamp();
        let sig = secret.sign("msg_1", ts, b"{}");
        assert!(
            secret
                .verify("msg_1", &ts.to_string(), &sig, b"{}", now)
                .is_ok()
        );
        assert!(
            secret
                .verify("msg_1", &ts.to_string(), &sig, b"{ }", now)
                .is_err()
        );
        let stale = (ts - 3600).to_string();
        let old_sig = secret.sign("msg_1", ts - 3600, b"{}");
        assert!(
            secret
                .verify("msg_1", &stale, &old_sig, b"{}", now)
                .is_err()
        );
        assert_eq!(WebhookSecret::parse(&secret.to_whsec()), Ok(secret));
    }

    #[test]
    fn verify_says_why_a_delivery_is_refused() {
        let secret = WebhookSecret::from_bytes(b"0123456789abcdef0123456789");
        let now = Utc::now();
        let ts = now.timestamp();
        let sig = secret.sign("msg_1", ts, b"{}");
        let reason = |ts: i64, signatures: &str| {
            secret
                .verify("msg_1", &ts.to_string(), signatures, b"{}", now)
                .unwrap_err()
        };
        assert!(reason(ts, "v1,").contains("`v1,` with nothing after it"));
        assert!(reason(ts, "v1,AAAA").starts_with("bad signature"));
        assert!(reason(ts, "v2,abc").contains("no `v1,` signature"));
        assert!(reason(ts - 301, &secret.sign("msg_1", ts - 301, b"{}")).contains("301 s old"));
        assert!(reason(ts + 301, &secret.sign("msg_1", ts + 301, b"{}")).contains("in the future"));
        let rotated = format!("v1,{} {sig}", BASE64.encode([0u8; 32]));
        assert!(
            secret
                .verify("msg_1", &ts.to_string(), &rotated, b"{}", now)
                .is_ok()
        );
        assert!(
            secret
                .verify(
                    "msg_1",
                    &(ts - 300).to_string(),
                    &secret.sign("msg_1", ts - 300, b"{}"),
                    b"{}",
                    now
                )
                .is_ok()
        );
    }
}
