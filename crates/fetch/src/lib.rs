//! The guarded HTTP client used to download images and deliver webhooks.
//!
//! Every request is checked against a [`NetworkPolicy`] at each step: the URL's literal
//! address, every DNS answer (through a resolver that drops refused addresses before a socket
//! is opened), every redirect target, and the peer the response actually came from. Limits:
//! connect timeout, total timeout, redirect count, and a byte cap enforced while streaming.
//! Proxies from the environment are ignored so nothing bypasses the checks.
//!
//! The policy, the limits and the failure vocabulary are pure and live in
//! [`pixpress_domain::egress`] (the api validates URLs with them without linking an HTTP
//! client); they are re-exported here.

pub mod concurrency;
pub mod tls;

use std::collections::HashMap;
use std::net::IpAddr;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use bytes::BytesMut;
use futures::future::BoxFuture;
use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use url::Url;

pub use concurrency::{Controller, ControllerConfig, HostConcurrency, HostPermit};
pub use pixpress_domain::egress::{
    self as policy, AddressClass, FetchConfig, FetchError, FetchErrorKind, NetworkPolicy, Outcome,
    blocked_port, check_redirect, check_url, retry_after,
};

/// A downloaded body.
#[derive(Debug, Clone)]
pub struct Fetched {
    /// The body, at most `max_bytes`.
    pub bytes: Bytes,
    /// URL after redirects.
    pub final_url: Url,
    /// `Content-Type` as sent (informational: formats are sniffed from the bytes).
    pub content_type: Option<String>,
}

/// Resolves host names to addresses. The default is the system resolver; tests and local runs
/// may map names to fixed addresses so no query or packet leaves the machine.
pub trait HostResolver: Send + Sync + std::fmt::Debug + 'static {
    /// Every address of `host`.
    ///
    /// # Errors
    /// An I/O error when the name does not resolve.
    fn lookup(&self, host: String) -> BoxFuture<'static, std::io::Result<Vec<IpAddr>>>;
}

/// The operating system's resolver (`getaddrinfo` via tokio).
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemResolver;

impl HostResolver for SystemResolver {
    fn lookup(&self, host: String) -> BoxFuture<'static, std::io::Result<Vec<IpAddr>>> {
        Box::pin(async move {
            let addrs = tokio::net::lookup_host((host.as_str(), 0)).await?;
            Ok(addrs.map(|a| a.ip()).collect())
        })
    }
}

/// A fixed name → addresses table; unknown names fail to resolve.
#[derive(Debug, Clone, Default)]
pub struct StaticResolver {
    hosts: HashMap<String, Vec<IpAddr>>,
}

impl StaticResolver {
    /// Adds `host` → `ips`.
    #[must_use]
    pub fn with(mut self, host: &str, ips: &[IpAddr]) -> Self {
        self.hosts.insert(host.to_ascii_lowercase(), ips.to_vec());
        self
    }
}

impl HostResolver for StaticResolver {
    fn lookup(&self, host: String) -> BoxFuture<'static, std::io::Result<Vec<IpAddr>>> {
        let found = self.hosts.get(&host.to_ascii_lowercase()).cloned();
        Box::pin(async move {
            found.ok_or_else(|| {
                std::io::Error::new(std::io::ErrorKind::NotFound, format!("unknown host {host}"))
            })
        })
    }
}

/// Raised inside the HTTP stack when the policy refuses an address.
#[derive(Debug, thiserror::Error)]
#[error("{host} resolves to a {} address", class.describe())]
struct Blocked {
    host: String,
    ip: IpAddr,
    class: AddressClass,
}

#[derive(Debug, thiserror::Error)]
#[error("{host} does not resolve")]
struct DnsFailure {
    host: String,
    source: std::io::Error,
}

#[derive(Debug, thiserror::Error)]
#[error("more than {0} redirects")]
struct TooManyRedirects(usize);

#[derive(Debug)]
struct GuardedResolver {
    inner: Arc<dyn HostResolver>,
    policy: NetworkPolicy,
}

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let host = name.as_str().to_owned();
        let lookup = self.inner.lookup(host.clone());
        let policy = self.policy;
        Box::pin(async move {
            let ips = lookup.await.map_err(|source| DnsFailure {
                host: host.clone(),
                source,
            })?;
            // Refuse the whole name if any answer is refused: a name mixing public and
            // internal answers is a DNS-rebinding setup, not a misconfiguration to route around.
            for &ip in &ips {
                if let Err(class) = policy.check(ip) {
                    tracing::warn!(%host, %ip, range = ?policy::special_range(ip).map(|r| r.prefix), "refused a DNS answer");
                    return Err(Box::new(Blocked { host, ip, class }) as _);
                }
            }
            if ips.is_empty() {
                return Err(Box::new(DnsFailure {
                    host,
                    source: std::io::Error::new(std::io::ErrorKind::NotFound, "no addresses"),
                }) as _);
            }
            let addrs: Addrs = Box::new(ips.into_iter().map(|ip| SocketAddr::new(ip, 0)));
            Ok(addrs)
        })
    }
}

/// The guarded client. Cheap to clone; build one per process.
#[derive(Debug, Clone)]
pub struct Fetcher {
    download: reqwest::Client,
    post: reqwest::Client,
    config: FetchConfig,
    resolver: Arc<dyn HostResolver>,
}

impl Fetcher {
    /// A fetcher using the system resolver.
    ///
    /// # Errors
    /// When the TLS backend cannot be initialised.
    pub fn new(config: FetchConfig) -> anyhow::Result<Self> {
        Self::with_resolver(config, Arc::new(SystemResolver))
    }

    /// A fetcher resolving names with `resolver`.
    ///
    /// # Errors
    /// When the TLS backend cannot be initialised.
    pub fn with_resolver(
        config: FetchConfig,
        resolver: Arc<dyn HostResolver>,
    ) -> anyhow::Result<Self> {
        let guarded = Arc::new(GuardedResolver {
            inner: resolver.clone(),
            policy: config.policy,
        });
        let policy = config.policy;
        let max_redirects = config.max_redirects;
        let redirects = reqwest::redirect::Policy::custom(move |attempt| {
            if attempt.previous().len() > max_redirects {
                return attempt.error(TooManyRedirects(max_redirects));
            }
            let checked = match attempt.previous().last() {
                Some(from) => check_redirect(from, attempt.url(), policy),
                None => check_url(attempt.url(), policy),
            };
            match checked {
                Ok(()) => attempt.follow(),
                Err(e) => attempt.error(e),
            }
        });
        crate::tls::install_crypto_provider();
        let base = || {
            reqwest::Client::builder()
                .no_proxy()
                .connect_timeout(config.connect_timeout)
                .pool_max_idle_per_host(config.max_idle_per_host)
                .user_agent(config.user_agent.clone())
                .dns_resolver(guarded.clone())
        };
        Ok(Self {
            // Downloads time their head and their body separately (see `open` and
            // `Download::body`), so a body waiting for memory is not timed out.
            download: base().redirect(redirects).build()?,
            post: base()
                .timeout(config.timeout)
                .redirect(reqwest::redirect::Policy::none())
                .build()?,
            config,
            resolver,
        })
    }

    /// The limits in force.
    #[must_use]
    pub fn config(&self) -> &FetchConfig {
        &self.config
    }

    /// `raw` checked against the policy before any socket opens. A name on a port widened
    /// for loopback only ([`NetworkPolicy::port_needs_loopback_name`]) is resolved here, and
    /// refused unless every address is loopback.
    async fn parse(&self, raw: &str) -> Result<Url, FetchError> {
        let url = Url::parse(raw).map_err(|e| {
            FetchError::new(FetchErrorKind::InvalidUrl, format!("not a valid URL: {e}"))
        })?;
        check_url(&url, self.config.policy)?;
        if self.config.policy.port_needs_loopback_name(&url) {
            let host = url.host_str().unwrap_or_default().to_owned();
            let addresses = self.resolver.lookup(host).await.unwrap_or_default();
            let loopback = !addresses.is_empty()
                && addresses
                    .iter()
                    .all(|ip| policy::classify(*ip) == AddressClass::Loopback);
            if !loopback {
                let port = url.port_or_known_default().unwrap_or_default();
                return Err(blocked_port(port, self.config.policy));
            }
        }
        Ok(url)
    }

    fn check_peer(&self, peer: Option<SocketAddr>) -> Result<(), FetchError> {
        // A name that was loopback when checked and public when connected (rebinding) is
        // still refused on a port widened for loopback only.
        if let Some(peer) = peer
            && self.config.policy.check_port(peer.port()).is_err()
            && policy::classify(peer.ip()) != AddressClass::Loopback
        {
            return Err(blocked_port(peer.port(), self.config.policy));
        }
        match peer.map(|p| (p.ip(), self.config.policy.check(p.ip()))) {
            Some((ip, Err(class))) => {
                tracing::warn!(%ip, "refused a connection to a non-public peer");
                Err(FetchError::new(
                    FetchErrorKind::BlockedAddress,
                    format!("the connection reached a {} address", class.describe()),
                ))
            }
            _ => Ok(()),
        }
    }

    /// Downloads `url` (GET), following at most `max_redirects` redirects.
    ///
    /// # Errors
    /// A classified [`FetchError`]: non-2xx statuses are `http_<status>`, a body over
    /// `max_bytes` is `too_large` (checked against `Content-Length` first, then while
    /// streaming, so no more than `max_bytes` + one chunk is ever held).
    pub async fn get(&self, url: &str) -> Result<Fetched, FetchError> {
        self.open(url).await?.body().await
    }

    /// Starts downloading `url`: follows redirects, checks the peer and the status, and stops
    /// once the response head is in, so the caller can reserve memory for the body
    /// ([`Download::content_length`]) before reading it ([`Download::body`]). The head must
    /// come within the timeout; the body gets what the head left of it.
    ///
    /// # Errors
    /// As [`Fetcher::get`], for everything decided by the response head. A 429 or 5xx carries
    /// the origin's `Retry-After` ([`FetchError::retry_after`]).
    pub async fn open(&self, url: &str) -> Result<Download, FetchError> {
        let url = self.parse(url).await?;
        let started = std::time::Instant::now();
        let response = tokio::time::timeout(self.config.timeout, self.download.get(url).send())
            .await
            .map_err(|_| timed_out())?
            .map_err(|e| classify(&e))?;
        self.check_peer(response.remote_addr())?;
        let status = response.status();
        if !status.is_success() {
            return Err(http_error(&response, "the origin"));
        }
        let max = self.config.max_bytes;
        if let Some(length) = response.content_length()
            && length > max
        {
            return Err(too_large(length, max));
        }
        let left = self.config.timeout.saturating_sub(started.elapsed());
        Ok(Download {
            response,
            max,
            left,
            stall: (self.config.stall_window, self.config.stall_bytes),
        })
    }

    /// POSTs `body` to `url` with `headers`, following no redirects; the answer's body is read
    /// up to 64 KiB and dropped.
    ///
    /// # Errors
    /// A classified [`FetchError`]; a non-2xx answer is `http_<status>`.
    pub async fn post(
        &self,
        url: &str,
        headers: &[(&str, String)],
        body: Vec<u8>,
    ) -> Result<u16, FetchError> {
        let url = self.parse(url).await?;
        let mut request = self.post.post(url).body(body);
        for (name, value) in headers {
            request = request.header(*name, value);
        }
        let mut response = request.send().await.map_err(|e| classify(&e))?;
        self.check_peer(response.remote_addr())?;
        let status = response.status();
        let mut drained = 0usize;
        while drained < 64 * 1024 {
            match response.chunk().await {
                Ok(Some(chunk)) => drained += chunk.len(),
                _ => break,
            }
        }
        if status.is_success() {
            Ok(status.as_u16())
        } else {
            Err(http_error(&response, "webhook receiver"))
        }
    }
}

/// The `http_<status>` error of a non-2xx `response` from `who` ("the origin"), with the
/// `Retry-After` it asked for (RFC 9110 §10.2.3: seconds or an HTTP date).
fn http_error(response: &reqwest::Response, who: &str) -> FetchError {
    let status = response.status();
    let mut error = FetchError::new(
        FetchErrorKind::Http(status.as_u16()),
        format!("{who} answered HTTP {status}"),
    );
    error.retry_after = response
        .headers()
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| retry_after(v, chrono::Utc::now()));
    error
}

/// A download whose response head is in and whose body is not read yet.
#[derive(Debug)]
pub struct Download {
    response: reqwest::Response,
    max: u64,
    /// What the head left of the timeout, for the body.
    left: Duration,
    /// The stall limit: at least `.1` bytes in every `.0`.
    stall: (Duration, u64),
}

impl Download {
    /// The body size the server announced (`Content-Length`), in bytes; at most the byte cap.
    #[must_use]
    pub fn content_length(&self) -> Option<u64> {
        self.response.content_length()
    }

    /// Reads the body, enforcing the byte cap while streaming, within what the head left of
    /// the timeout and above the stall limit.
    ///
    /// # Errors
    /// `too_large` past the cap; `too_slow` below the stall limit; `timeout` or `body_error`
    /// when the body breaks off.
    pub async fn body(self) -> Result<Fetched, FetchError> {
        let left = self.left;
        tokio::time::timeout(left, self.read())
            .await
            .map_err(|_| timed_out())?
    }

    async fn read(mut self) -> Result<Fetched, FetchError> {
        let final_url = self.response.url().clone();
        let content_type = self
            .response
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let capacity = self
            .response
            .content_length()
            .map_or(0, |l| usize::try_from(l.min(self.max)).unwrap_or(0));
        let mut body = BytesMut::with_capacity(capacity);
        let (window, least) = self.stall;
        let (mut window_start, mut window_bytes) = (tokio::time::Instant::now(), 0u64);
        loop {
            // `chunk` is cancel-safe: a chunk is taken only when it is ready.
            let chunk =
                match tokio::time::timeout_at(window_start + window, self.response.chunk()).await {
                    Ok(chunk) => chunk.map_err(|e| classify(&e))?,
                    Err(_) if window_bytes < least => return Err(too_slow(window, least)),
                    Err(_) => {
                        (window_start, window_bytes) = (tokio::time::Instant::now(), 0);
                        continue;
                    }
                };
            let Some(chunk) = chunk else { break };
            if (body.len() + chunk.len()) as u64 > self.max {
                return Err(too_large((body.len() + chunk.len()) as u64, self.max));
            }
            body.extend_from_slice(&chunk);
            window_bytes += chunk.len() as u64;
            if window_start.elapsed() >= window {
                if window_bytes < least {
                    return Err(too_slow(window, least));
                }
                (window_start, window_bytes) = (tokio::time::Instant::now(), 0);
            }
        }
        Ok(Fetched {
            bytes: body.freeze(),
            final_url,
            content_type,
        })
    }
}

fn too_slow(window: Duration, least: u64) -> FetchError {
    FetchError::new(
        FetchErrorKind::TooSlow,
        format!(
            "the origin sent fewer than {least} bytes in {} s: it is stuck; retry the request to try again",
            window.as_secs()
        ),
    )
}

fn timed_out() -> FetchError {
    FetchError::new(FetchErrorKind::Timeout, "the download timed out")
}

fn too_large(length: u64, max: u64) -> FetchError {
    FetchError::new(
        FetchErrorKind::TooLarge,
        format!("body is at least {length} bytes; the limit is {max} bytes"),
    )
}

/// Maps a reqwest error to a [`FetchError`] by walking its cause chain.
fn classify(error: &reqwest::Error) -> FetchError {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(e) = source {
        if let Some(blocked) = e.downcast_ref::<Blocked>() {
            return FetchError::new(FetchErrorKind::BlockedAddress, blocked.to_string());
        }
        if let Some(blocked) = e.downcast_ref::<FetchError>() {
            return blocked.clone();
        }
        if let Some(too_many) = e.downcast_ref::<TooManyRedirects>() {
            return FetchError::new(FetchErrorKind::TooManyRedirects, too_many.to_string());
        }
        if let Some(dns) = e.downcast_ref::<DnsFailure>() {
            return FetchError::new(FetchErrorKind::Dns, dns.to_string());
        }
        source = e.source();
    }
    let detail = pixpress_domain::text::error_chain(error);
    tracing::debug!(%detail, "fetch failed");
    if error.is_timeout() {
        timed_out()
    } else if error.is_connect() {
        FetchError::new(
            FetchErrorKind::Connect,
            "the connection to the origin failed",
        )
    } else {
        FetchError::new(
            FetchErrorKind::Body,
            "the response broke off before it was complete",
        )
    }
}
