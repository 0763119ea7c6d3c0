//! The guarded fetcher against a loopback server. Non-loopback addresses are only ever
//! refused before a socket is opened: literals by the URL check, names by a fixed test
//! resolver — no packet leaves the machine.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::Path;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Redirect};
use axum::routing::get;
use bytes::Bytes;
use pixpress::fetch::{FetchConfig, FetchErrorKind, Fetcher, NetworkPolicy, StaticResolver};

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
        .route("/gone", get(|| async { StatusCode::GONE.into_response() }));
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0))
        .await
        .unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    addr
}

fn local_config() -> FetchConfig {
    FetchConfig {
        policy: NetworkPolicy {
            allow_loopback: true,
        },
        ..FetchConfig::default()
    }
}

fn resolver() -> Arc<StaticResolver> {
    let lo: IpAddr = "127.0.0.1".parse().unwrap();
    Arc::new(
        StaticResolver::default()
            .with("images.test", &[lo])
            .with("localhost", &[lo])
            .with("internal.test", &["10.0.0.1".parse().unwrap()])
            .with("metadata.test", &["169.254.169.254".parse().unwrap()])
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
    let strict = fetcher(FetchConfig::default());
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
