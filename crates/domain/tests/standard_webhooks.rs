//! Interoperability with the official Standard Webhooks library (`standardwebhooks`, from the
//! specification's own repository): what pixpress signs, the reference verifies — with either
//! secret of a rotation — and what the reference signs, pixpress verifies.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use chrono::Utc;
use pixpress_domain::webhook::{WebhookSecret, headers};
use standardwebhooks::Webhook;

fn header_map(pairs: &[(&'static str, String)]) -> http::HeaderMap {
    let mut map = http::HeaderMap::new();
    for (name, value) in pairs {
        map.insert(*name, value.parse().unwrap());
    }
    map
}

const BODY: &[u8] =
    br#"{"type":"request.completed","data":{"request_id":"r-1","status":"COMPLETED"}}"#;

#[test]
fn the_reference_library_verifies_what_pixpress_signs_with_either_secret_of_a_rotation() {
    let old = WebhookSecret::from_bytes(b"the previous secret, 32 bytes ok");
    let new = WebhookSecret::random().unwrap();
    let now = Utc::now().timestamp();
    let signed = header_map(&headers(
        &[new.clone(), old.clone()],
        "msg_r-1_completed",
        now,
        BODY,
    ));
    for secret in [&new, &old] {
        let reference = Webhook::new(&secret.to_whsec()).unwrap();
        reference.verify(BODY, &signed).unwrap();
    }
    let stranger = Webhook::new(&WebhookSecret::random().unwrap().to_whsec()).unwrap();
    assert!(stranger.verify(BODY, &signed).is_err());
    let mut tampered = BODY.to_vec();
    tampered[10] ^= 1;
    assert!(
        Webhook::new(&new.to_whsec())
            .unwrap()
            .verify(&tampered, &signed)
            .is_err()
    );
}

#[test]
fn pixpress_verifies_what_the_reference_library_signs() {
    let secret = WebhookSecret::random().unwrap();
    let now = Utc::now();
    let reference = Webhook::new(&secret.to_whsec()).unwrap();
    let signature = reference.sign("msg_1", now.timestamp(), BODY).unwrap();
    assert_eq!(signature, secret.sign("msg_1", now.timestamp(), BODY));
    secret
        .verify("msg_1", &now.timestamp().to_string(), &signature, BODY, now)
        .unwrap();
}
