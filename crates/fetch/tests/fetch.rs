//! The guarded fetcher against a loopback server. Non-loopback addresses are only ever
//! refused before a socket is opened: literals by the URL check, names by a fixed test
//! resolver — no packet leaves the machine.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, Query};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Redirect};
use axum::routing::get;
use bytes::Bytes;
use pixpress_domain::egress::{AddressClass, classify, special_range};
use pixpress_fetch::{
    FetchConfig, FetchErrorKind, Fetcher, NetworkPolicy, StaticResolver, check_redirect, check_url,
};
use url::Url;

async fn server() -> SocketAddr {
    let router = Router::new()
        .route(
            "/ok",
            get(|| async { ([(header::CONTENT_TYPE, "image/jpeg")], vec![0xFFu8; 1000]) }),
        )
        .route(
            "/chunked",
            get(|| async {
                let chunks = (0..64).map(|_| Ok::<_, std::io::Error>(Bytes::from(vec![1u8; 1024])));
                Body::from_stream(futures::stream::iter(chunks))
            }),
        )
        .route(
            "/hop/{n}",
            get(
                |Path(n): Path<u32>| async move { Redirect::temporary(&format!("/hop/{}", n + 1)) },
            ),
        )
        .route(
            "/metadata",
            get(|| async { Redirect::temporary("http://169.254.169.254/latest/meta-data/") }),
        )
        .route(
            "/mapped",
            get(|| async { Redirect::temporary("http://[::ffff:a9fe:a9fe]/") }),
        )
        .route(
            "/slow",
            get(|| async {
                tokio::time::sleep(Duration::from_secs(5)).await;
                "late"
            }),
        )
        .route("/gone", get(|| async { StatusCode::GONE.into_response() }))
        .route(
            "/busy",
            get(|| async {
                (
                    StatusCode::TOO_MANY_REQUESTS,
                    [(axum::http::header::RETRY_AFTER, "7")],
                )
                    .into_response()
            }),
        )
        .route(
            "/drip",
            get(|| async {
                // A byte every 100 ms: 10 bytes per second.
                let bytes = futures::stream::unfold(0u32, |n| async move {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    (n < 100).then(|| (Ok::<_, std::io::Error>(Bytes::from_static(b"x")), n + 1))
                });
                Body::from_stream(bytes)
            }),
        )
        .route(
            "/to",
            get(|Query(q): Query<HashMap<String, String>>| async move {
                Redirect::temporary(&q["url"])
            }),
        );
    pixpress_test_support::serve(router).await
}

fn local_config() -> FetchConfig {
    FetchConfig {
        policy: NetworkPolicy::local(),
        ..FetchConfig::default()
    }
}

/// Every vector the egress guard must refuse, with its class: one or more addresses from each
/// entry of the IANA IPv4 and IPv6 special-purpose registries, the IPv6 forms that carry an
/// IPv4 address, and IPv6 outside global unicast.
const VECTORS: &[(&str, AddressClass)] = &[
    ("169.254.169.254", AddressClass::LinkLocal),
    ("10.0.0.1", AddressClass::Private),
    ("172.20.1.1", AddressClass::Private),
    ("192.168.1.1", AddressClass::Private),
    ("100.100.100.200", AddressClass::Private),
    ("0.0.0.0", AddressClass::Unspecified),
    ("0.1.2.3", AddressClass::Unspecified),
    ("127.0.0.53", AddressClass::Loopback),
    ("192.0.0.8", AddressClass::Reserved),
    ("192.0.0.170", AddressClass::Reserved),
    ("192.0.2.1", AddressClass::Reserved),
    ("192.31.196.1", AddressClass::Reserved),
    ("192.52.193.1", AddressClass::Reserved),
    ("192.88.99.1", AddressClass::Reserved),
    ("192.175.48.1", AddressClass::Reserved),
    ("198.18.0.1", AddressClass::Reserved),
    ("198.19.255.254", AddressClass::Reserved),
    ("198.51.100.7", AddressClass::Reserved),
    ("203.0.113.9", AddressClass::Reserved),
    ("224.0.0.1", AddressClass::Reserved),
    ("239.255.255.250", AddressClass::Reserved),
    ("240.0.0.1", AddressClass::Reserved),
    ("255.255.255.255", AddressClass::Reserved),
    ("::", AddressClass::Unspecified),
    ("::1", AddressClass::Loopback),
    ("::ffff:169.254.169.254", AddressClass::LinkLocal),
    ("::ffff:127.0.0.1", AddressClass::Loopback),
    ("::ffff:10.0.0.1", AddressClass::Private),
    ("::10.0.0.1", AddressClass::Private),
    ("64:ff9b::a9fe:a9fe", AddressClass::LinkLocal),
    ("64:ff9b:1::1", AddressClass::Private),
    ("100::1", AddressClass::Reserved),
    ("2001::1", AddressClass::Reserved),
    (
        "2001:0:4136:e378:8000:63bf:3fff:fdd2",
        AddressClass::Reserved,
    ),
    ("2001:2::1", AddressClass::Reserved),
    ("2001:db8::1", AddressClass::Reserved),
    ("2002:a9fe:a9fe::1", AddressClass::LinkLocal),
    ("2002:0a00:0001::1", AddressClass::Private),
    ("2002:7f00:0001::1", AddressClass::Loopback),
    ("2620:4f:8000::1", AddressClass::Reserved),
    ("3fff::1", AddressClass::Reserved),
    ("5f00::1", AddressClass::Reserved),
    ("fd00::1", AddressClass::Private),
    ("fc00::1", AddressClass::Private),
    ("fe80::1", AddressClass::LinkLocal),
    ("fec0::1", AddressClass::Reserved),
    ("ff02::1", AddressClass::Reserved),
    ("4000::1", AddressClass::Reserved),
    ("::2", AddressClass::Unspecified),
];

/// `http://<ip>/x.jpg`, bracketed for IPv6.
fn literal_url(ip: &str) -> String {
    if ip.contains(':') {
        format!("http://[{ip}]/x.jpg")
    } else {
        format!("http://{ip}/x.jpg")
    }
}

/// The test name `vector-<n>.test` resolves to `VECTORS[n]`.
fn vector_name(n: usize) -> String {
    format!("vector-{n}.test")
}

fn resolver() -> Arc<StaticResolver> {
    let lo: IpAddr = "127.0.0.1".parse().unwrap();
    let mut resolver = StaticResolver::default();
    for (n, (ip, _)) in VECTORS.iter().enumerate() {
        resolver = resolver.with(&vector_name(n), &[ip.parse().unwrap()]);
    }
    Arc::new(
        resolver
            .with("images.test", &[lo])
            .with("localhost", &[lo])
            .with("internal.test", &["10.0.0.1".parse().unwrap()])
            .with("metadata.test", &["169.254.169.254".parse().unwrap()])
            .with("public.test", &["93.184.216.34".parse().unwrap()])
            .with(
                "rebind.test",
                &[
                    "93.184.216.34".parse().unwrap(),
                    "10.0.0.1".parse().unwrap(),
                ],
            ),
    )
}

fn fetcher(config: FetchConfig) -> Fetcher {
    Fetcher::with_resolver(config, resolver()).unwrap()
}

#[tokio::test]
async fn loopback_download_succeeds_when_allowed_and_is_blocked_otherwise() {
    let addr = server().await;
    let ok = fetcher(local_config())
        .get(&format!("http://images.test:{}/ok", addr.port()))
        .await
        .unwrap();
    assert_eq!(ok.bytes.len(), 1000);
    assert_eq!(ok.content_type.as_deref(), Some("image/jpeg"));
    let strict = fetcher(FetchConfig {
        policy: NetworkPolicy {
            allow_loopback: false,
            allow_any_port: true,
            allow_loopback_any_port: false,
        },
        ..FetchConfig::default()
    });
    for url in [
        format!("http://{addr}/ok"),
        format!("http://localhost:{}/ok", addr.port()),
    ] {
        let err = strict.get(&url).await.unwrap_err();
        assert_eq!(err.kind, FetchErrorKind::BlockedAddress, "{url}");
        assert!(!err.is_retryable());
    }
}

#[tokio::test]
async fn private_link_local_and_rebinding_names_are_refused_before_connecting() {
    let f = fetcher(local_config());
    for url in [
        "http://internal.test/a.jpg",
        "http://metadata.test/latest/meta-data/",
        "http://rebind.test/a.jpg",
        "http://169.254.169.254/latest/meta-data/",
        "http://[::ffff:169.254.169.254]/",
        "http://10.0.0.1/a.jpg",
        "http://0.0.0.0/a.jpg",
    ] {
        let err = f.get(url).await.unwrap_err();
        assert_eq!(err.code(), "blocked_address", "{url}: {err}");
    }
}

#[test]
fn every_special_purpose_vector_is_classed_and_named_after_its_registry_entry() {
    for (ip, expected) in VECTORS {
        let ip: IpAddr = ip.parse().unwrap();
        assert_eq!(classify(ip), *expected, "{ip}");
        assert!(special_range(ip).is_some(), "{ip} names no registry entry");
        assert!(NetworkPolicy::default().check(ip).is_err(), "{ip}");
    }
    let benchmarking = special_range("198.18.3.4".parse().unwrap()).unwrap();
    assert_eq!(benchmarking.prefix, "198.18.0.0/15");
    for public in [
        "93.184.216.34",
        "1.1.1.1",
        "2606:4700::1111",
        "2002:5db8:d822::1",
    ] {
        assert_eq!(
            classify(public.parse().unwrap()),
            AddressClass::Public,
            "{public}"
        );
    }
}

/// Every vector is refused as a literal, as a name resolving to it, and behind a redirect to
/// either — loopback included, since the strict policy is what deployments run.
#[tokio::test]
async fn every_vector_is_refused_directly_by_name_and_behind_a_redirect() {
    let addr = server().await;
    // Loopback is allowed here so the redirecting server can be reached; the vectors that are
    // loopback themselves are checked under the strict policy below.
    let local = fetcher(local_config());
    let strict = fetcher(FetchConfig::default());
    for (n, (ip, class)) in VECTORS.iter().enumerate() {
        let f = if *class == AddressClass::Loopback {
            &strict
        } else {
            &local
        };
        let direct = literal_url(ip);
        let named = format!("http://{}/x.jpg", vector_name(n));
        for url in [&direct, &named] {
            let err = f.get(url).await.unwrap_err();
            assert_eq!(err.code(), "blocked_address", "{url}: {err}");
            assert!(
                !err.message.contains("error sending request"),
                "{url}: {err}"
            );
        }
        // What a name resolved to stays in the logs: the client sees the name only.
        let err = f.get(&named).await.unwrap_err();
        assert!(!err.message.contains(ip), "{named}: {err}");
        if *class == AddressClass::Loopback {
            continue;
        }
        for target in [&direct, &named] {
            let via =
                Url::parse_with_params(&format!("http://{addr}/to"), [("url", target)]).unwrap();
            let err = f.get(via.as_str()).await.unwrap_err();
            assert_eq!(err.code(), "blocked_address", "redirect to {target}: {err}");
        }
    }
}

#[tokio::test]
async fn ports_other_than_80_and_443_and_credentials_are_refused() {
    let addr = server().await;
    let loopback_only = NetworkPolicy {
        allow_loopback: true,
        allow_any_port: false,
        allow_loopback_any_port: false,
    };
    let f = fetcher(FetchConfig {
        policy: loopback_only,
        ..FetchConfig::default()
    });
    let err = f.get(&format!("http://{addr}/ok")).await.unwrap_err();
    assert_eq!(err.code(), "blocked_port", "{err}");
    for url in [
        "http://images.test:22/",
        "https://images.test:8443/",
        "http://10.0.0.1:6379/",
    ] {
        let err = f.get(url).await.unwrap_err();
        assert!(err.code().starts_with("blocked_"), "{url}: {err}");
    }
    let local = fetcher(local_config());
    let with_credentials = format!("http://user:secret@images.test:{}/ok", addr.port());
    let err = local.get(&with_credentials).await.unwrap_err();
    assert_eq!(err.code(), "blocked_credentials");
    assert!(!err.message.contains("secret"), "{err}");
    let via =
        Url::parse_with_params(&format!("http://{addr}/to"), [("url", &with_credentials)]).unwrap();
    let err = local.get(via.as_str()).await.unwrap_err();
    assert_eq!(
        err.code(),
        "blocked_credentials",
        "behind a redirect: {err}"
    );
    for url in [
        "http://images.test/",
        "https://images.test/",
        "https://images.test:443/",
    ] {
        assert!(
            check_url(&Url::parse(url).unwrap(), NetworkPolicy::default()).is_ok(),
            "{url}"
        );
    }
}

#[test]
fn a_redirect_from_https_to_http_is_refused() {
    let policy = NetworkPolicy::default();
    let https = Url::parse("https://shop.example/a.jpg").unwrap();
    let http = Url::parse("http://cdn.example/a.jpg").unwrap();
    let err = check_redirect(&https, &http, policy).unwrap_err();
    assert_eq!(err.code(), "blocked_downgrade");
    assert!(check_redirect(&http, &https, policy).is_ok());
    assert!(check_redirect(&https, &https, policy).is_ok());
    let metadata = Url::parse("https://169.254.169.254/").unwrap();
    assert_eq!(
        check_redirect(&https, &metadata, policy)
            .unwrap_err()
            .code(),
        "blocked_address"
    );
}

#[tokio::test]
async fn redirects_to_metadata_are_blocked_and_chains_are_capped_at_three() {
    let addr = server().await;
    let f = fetcher(local_config());
    for path in ["metadata", "mapped"] {
        let err = f.get(&format!("http://{addr}/{path}")).await.unwrap_err();
        assert_eq!(err.code(), "blocked_address", "{path}: {err}");
    }
    let err = f.get(&format!("http://{addr}/hop/0")).await.unwrap_err();
    assert_eq!(err.code(), "too_many_redirects");
}

#[tokio::test]
async fn byte_cap_applies_to_declared_and_streamed_bodies() {
    let addr = server().await;
    let f = fetcher(FetchConfig {
        max_bytes: 500,
        ..local_config()
    });
    let err = f.get(&format!("http://{addr}/ok")).await.unwrap_err();
    assert_eq!(err.code(), "too_large");
    let f = fetcher(FetchConfig {
        max_bytes: 10 * 1024,
        ..local_config()
    });
    let err = f.get(&format!("http://{addr}/chunked")).await.unwrap_err();
    assert_eq!(err.code(), "too_large");
    let f = fetcher(FetchConfig {
        max_bytes: 64 * 1024,
        ..local_config()
    });
    assert_eq!(
        f.get(&format!("http://{addr}/chunked"))
            .await
            .unwrap()
            .bytes
            .len(),
        64 * 1024
    );
}

#[tokio::test]
async fn slow_servers_time_out_and_http_errors_keep_their_status() {
    let addr = server().await;
    let f = fetcher(FetchConfig {
        timeout: Duration::from_millis(300),
        ..local_config()
    });
    let err = f.get(&format!("http://{addr}/slow")).await.unwrap_err();
    assert_eq!(err.code(), "timeout");
    assert!(err.is_retryable());
    let err = f.get(&format!("http://{addr}/gone")).await.unwrap_err();
    assert_eq!(err.code(), "http_410");
    assert!(!err.is_retryable());
    let err = f.get("ftp://images.test/a.jpg").await.unwrap_err();
    assert_eq!(err.code(), "unsupported_scheme");
    let err = f.get("http://unknown.test/a.jpg").await.unwrap_err();
    assert_eq!(err.code(), "dns_error");
}

#[tokio::test]
async fn a_body_that_drips_is_given_up_as_too_slow_and_not_retried() {
    let addr = server().await;
    let f = fetcher(FetchConfig {
        stall_window: Duration::from_millis(500),
        stall_bytes: 64,
        ..local_config()
    });
    let started = std::time::Instant::now();
    let err = f.get(&format!("http://{addr}/drip")).await.unwrap_err();
    assert_eq!(err.code(), "too_slow");
    assert!(!err.is_retryable());
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    // A body at the same pace is fine when the limit is below it.
    let f = fetcher(FetchConfig {
        stall_window: Duration::from_millis(500),
        stall_bytes: 2,
        ..local_config()
    });
    let fetched = f.get(&format!("http://{addr}/drip")).await.unwrap();
    assert_eq!(fetched.bytes.len(), 100);
}

#[tokio::test]
async fn waiting_between_the_head_and_the_body_does_not_count_against_the_timeout() {
    let addr = server().await;
    let f = fetcher(FetchConfig {
        timeout: Duration::from_millis(500),
        ..local_config()
    });
    let download = f.open(&format!("http://{addr}/chunked")).await.unwrap();
    // As a body waits for memory to hold it.
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(download.body().await.unwrap().bytes.len(), 64 * 1024);
}

#[tokio::test]
async fn a_429_carries_the_origins_retry_after() {
    let addr = server().await;
    let err = fetcher(local_config())
        .get(&format!("http://{addr}/busy"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), "http_429");
    assert_eq!(err.retry_after, Some(Duration::from_secs(7)));
    assert_eq!(err.outcome(), pixpress_fetch::Outcome::Overloaded);
}

#[tokio::test]
async fn local_runs_reach_loopback_on_any_port_but_public_hosts_on_80_and_443_only() {
    // `--allow-loopback` widens ports for local servers, not for the internet: a public name
    // on another port is refused after resolving it, before anything connects (the test
    // resolver maps it to a public address; no packet is sent).
    let addr = server().await;
    let local = fetcher(local_config());
    let ok = local
        .get(&format!("http://images.test:{}/ok", addr.port()))
        .await
        .unwrap();
    assert_eq!(ok.bytes.len(), 1000);
    for url in [
        format!("http://public.test:{}/ok", addr.port()),
        "http://93.184.216.34:8080/ok".to_owned(),
        format!("http://rebind.test:{}/ok", addr.port()),
    ] {
        let err = local.get(&url).await.unwrap_err();
        assert_eq!(err.kind, FetchErrorKind::BlockedPort, "{url}: {err}");
    }
}
