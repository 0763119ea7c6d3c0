//! # pixpress-test-support — what the test binaries share
//!
//! - [`serve`]: an axum router on a free loopback port (image origins, webhook receivers);
//! - [`LogCapture`]: one test's log lines as JSON, as deployed functions write them;
//! - [`manifest_dir`]: the package directory of the checkout under test.
//!
//! Request records to seed are `RequestMeta { …, ..RequestMeta::new(id, tenant, now) }`
//! (`pixpress_domain::model`).
//!
//! Linked by tests only (a dev-dependency), never by a function: a failure here is a broken
//! test environment, so it panics with what was missing.
#![allow(clippy::expect_used)]

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

/// The package directory of the checkout under test (`CARGO_MANIFEST_DIR`, which `cargo test`
/// sets when it runs a test binary), read at run time. `env!("CARGO_MANIFEST_DIR")` would bake
/// in the checkout the binary was built in, and a target directory shared between checkouts
/// (CI's clone and a working copy) reuses binaries across them.
///
/// # Panics
/// When the test does not run under cargo.
#[must_use]
pub fn manifest_dir() -> String {
    std::env::var("CARGO_MANIFEST_DIR").expect("cargo test sets CARGO_MANIFEST_DIR")
}

/// Serves `router` on `127.0.0.1` at a free port, in the background, for the rest of the test.
///
/// # Panics
/// When no loopback port can be bound.
pub async fn serve(router: axum::Router) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0))
        .await
        .expect("a free loopback port");
    let addr = listener.local_addr().expect("the bound address");
    tokio::spawn(async move { axum::serve(listener, router).await });
    addr
}

/// A log sink for one test: JSON lines with the current span, as deployed functions write
/// them ([`LogCapture::install`] makes it the thread's subscriber).
#[derive(Debug, Clone, Default)]
pub struct LogCapture(Arc<Mutex<Vec<u8>>>);

impl LogCapture {
    /// Captures every event at `level` or above on this thread until the guard drops.
    #[must_use]
    pub fn install(&self, level: tracing::Level) -> tracing::subscriber::DefaultGuard {
        let subscriber = tracing_subscriber::fmt()
            .json()
            .with_current_span(true)
            .with_max_level(level)
            .with_writer(self.clone())
            .finish();
        // tracing-core computes the interest of a callsite first hit on another thread from
        // that thread's subscriber alone while at most one dispatcher is registered, so a
        // test running beside this one (its own threads have none) would turn the capture's
        // callsites off for good. A second, idle dispatcher kept for the process makes every
        // registration consult all of them.
        static SECOND: std::sync::OnceLock<tracing::Dispatch> = std::sync::OnceLock::new();
        SECOND.get_or_init(|| tracing::Dispatch::new(tracing::subscriber::NoSubscriber::default()));
        tracing::subscriber::set_default(subscriber)
    }

    /// Everything written so far, as text.
    ///
    /// # Panics
    /// When a line is not UTF-8.
    #[must_use]
    pub fn text(&self) -> String {
        let bytes = self.0.lock().map(|b| b.clone()).unwrap_or_default();
        String::from_utf8(bytes).expect("log lines are UTF-8")
    }

    /// Every line written so far, parsed.
    ///
    /// # Panics
    /// When a line is not JSON.
    #[must_use]
    pub fn lines(&self) -> Vec<serde_json::Value> {
        self.text()
            .lines()
            .map(|line| serde_json::from_str(line).expect("a JSON log line"))
            .collect()
    }
}

impl std::io::Write for LogCapture {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        if let Ok(mut sink) = self.0.lock() {
            sink.extend_from_slice(bytes);
        }
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for LogCapture {
    type Writer = LogCapture;

    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}
