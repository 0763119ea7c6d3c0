//! Egress: the network policy for outbound requests (SSRF guard), the fetcher's limits and its
//! failure vocabulary. Pure: classifies addresses, URLs and failures only; the HTTP client that
//! applies it is the `pixpress-fetch` crate.
//!
//! Every host a fetch touches — the URL's literal address, every DNS answer, every redirect
//! target and the peer actually connected to — must be a public unicast address: anything in
//! the IANA IPv4 and IPv6 Special-Purpose Address Registries (RFC 6890 and the registries'
//! current entries) is refused, as is IPv6 outside global unicast `2000::/3`. IPv6 forms that
//! carry an IPv4 address — IPv4-mapped, IPv4-compatible, NAT64 `64:ff9b::/96` (RFC 6052) and
//! 6to4 `2002::/16` (RFC 3056) — are judged by the IPv4 address they carry. Ports are 80 and
//! 443 only unless widened, and URLs with credentials are refused (Smokescreen, go-camo).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::OnceLock;
use std::time::Duration;

use ipnet::{Ipv4Net, Ipv6Net};
use url::{Host, Url};

/// What outbound requests may reach.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct NetworkPolicy {
    /// Allow 127.0.0.0/8 and ::1 (local runs and tests only). Every other non-public range
    /// stays blocked.
    pub allow_loopback: bool,
    /// Allow any port on every host; by default only 80 and 443.
    pub allow_any_port: bool,
    /// Allow any port on loopback destinations only — an address literal in 127.0.0.0/8 or
    /// ::1, `localhost` (RFC 6761), or a name every address of which is loopback — so local
    /// servers can be reached on their ports without widening public hosts.
    pub allow_loopback_any_port: bool,
}

impl NetworkPolicy {
    /// The policy of local runs and tests: loopback allowed on any port, everything else as
    /// strict as in a deployment (public hosts on 80 and 443 only).
    #[must_use]
    pub fn local() -> Self {
        Self {
            allow_loopback: true,
            allow_any_port: false,
            allow_loopback_any_port: true,
        }
    }

    /// `true` when `url`'s port is allowed only if its host turns out to be loopback: a name
    /// other than `localhost` on a port other than 80 and 443 under
    /// [`Self::allow_loopback_any_port`]. Such a name must be resolved, and every address found
    /// loopback, before anything connects; a redirect to one is refused (it cannot be resolved
    /// on the way).
    #[must_use]
    pub fn port_needs_loopback_name(&self, url: &Url) -> bool {
        let odd_port = url
            .port_or_known_default()
            .is_some_and(|port| self.check_port(port).is_err());
        odd_port
            && self.allow_loopback_any_port
            && matches!(url.host(), Some(Host::Domain(name)) if !is_localhost(name))
    }
}

/// `localhost`, which resolves to loopback (RFC 6761 §6.3). Names under `.localhost` are not
/// taken on trust: not every resolver maps them there, so they are resolved like any name.
fn is_localhost(name: &str) -> bool {
    name.trim_end_matches('.').eq_ignore_ascii_case("localhost")
}

/// Why an address is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AddressClass {
    /// A public unicast address.
    Public,
    /// 127.0.0.0/8, ::1.
    Loopback,
    /// 10/8, 172.16/12, 192.168/16, 100.64/10 (CGNAT), fc00::/7, 64:ff9b:1::/48.
    Private,
    /// 169.254/16 (cloud metadata lives here), fe80::/10.
    LinkLocal,
    /// 0.0.0.0/8, ::.
    Unspecified,
    /// Multicast, broadcast, documentation, benchmarking, protocol assignments and reserved
    /// ranges.
    Reserved,
}

impl AddressClass {
    /// Short name used in error messages.
    #[must_use]
    pub fn describe(self) -> &'static str {
        match self {
            Self::Public => "public",
            Self::Loopback => "loopback",
            Self::Private => "private",
            Self::LinkLocal => "link-local",
            Self::Unspecified => "unspecified",
            Self::Reserved => "reserved",
        }
    }
}

/// An entry of a special-purpose registry: the range, its registry name and its class.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SpecialRange {
    /// The prefix, as the registry writes it.
    pub prefix: &'static str,
    /// The registry's name for it, with its RFC.
    pub name: &'static str,
    /// How the guard classes it.
    pub class: AddressClass,
}

const fn range(prefix: &'static str, name: &'static str, class: AddressClass) -> SpecialRange {
    SpecialRange {
        prefix,
        name,
        class,
    }
}

use AddressClass::{LinkLocal, Loopback, Private, Reserved, Unspecified};

/// The IANA IPv4 Special-Purpose Address Registry, plus multicast (RFC 5771), every entry
/// refused whatever its "globally reachable" flag: no image origin lives in them.
pub const IPV4_SPECIAL: &[SpecialRange] = &[
    range("0.0.0.0/8", "\"this network\" (RFC 791)", Unspecified),
    range("10.0.0.0/8", "private-use (RFC 1918)", Private),
    range("100.64.0.0/10", "shared address space (RFC 6598)", Private),
    range("127.0.0.0/8", "loopback (RFC 1122)", Loopback),
    range("169.254.0.0/16", "link local (RFC 3927)", LinkLocal),
    range("172.16.0.0/12", "private-use (RFC 1918)", Private),
    range(
        "192.0.0.0/24",
        "IETF protocol assignments (RFC 6890)",
        Reserved,
    ),
    range(
        "192.0.2.0/24",
        "documentation TEST-NET-1 (RFC 5737)",
        Reserved,
    ),
    range("192.31.196.0/24", "AS112-v4 (RFC 7535)", Reserved),
    range("192.52.193.0/24", "AMT (RFC 7450)", Reserved),
    range(
        "192.88.99.0/24",
        "deprecated 6to4 relay anycast (RFC 7526)",
        Reserved,
    ),
    range("192.168.0.0/16", "private-use (RFC 1918)", Private),
    range(
        "192.175.48.0/24",
        "direct delegation AS112 (RFC 7534)",
        Reserved,
    ),
    range("198.18.0.0/15", "benchmarking (RFC 2544)", Reserved),
    range(
        "198.51.100.0/24",
        "documentation TEST-NET-2 (RFC 5737)",
        Reserved,
    ),
    range(
        "203.0.113.0/24",
        "documentation TEST-NET-3 (RFC 5737)",
        Reserved,
    ),
    range("224.0.0.0/4", "multicast (RFC 5771)", Reserved),
    range("240.0.0.0/4", "reserved (RFC 1112)", Reserved),
    range(
        "255.255.255.255/32",
        "limited broadcast (RFC 919)",
        Reserved,
    ),
];

/// The IANA IPv6 Special-Purpose Address Registry (the forms carrying an IPv4 address are
/// judged by that address first), plus site-local and multicast.
pub const IPV6_SPECIAL: &[SpecialRange] = &[
    range("::1/128", "loopback (RFC 4291)", Loopback),
    range("::/128", "unspecified (RFC 4291)", Unspecified),
    range(
        "64:ff9b:1::/48",
        "local-use IPv4/IPv6 translation (RFC 8215)",
        Private,
    ),
    range("100::/64", "discard-only (RFC 6666)", Reserved),
    range("100:0:0:1::/64", "dummy IPv6 prefix (RFC 9780)", Reserved),
    range(
        "2001::/23",
        "IETF protocol assignments, Teredo 2001::/32 among them (RFC 2928, RFC 4380)",
        Reserved,
    ),
    range("2001:db8::/32", "documentation (RFC 3849)", Reserved),
    range(
        "2620:4f:8000::/48",
        "direct delegation AS112 (RFC 7534)",
        Reserved,
    ),
    range("3fff::/20", "documentation (RFC 9637)", Reserved),
    range("5f00::/16", "segment routing SIDs (RFC 9602)", Reserved),
    range("fc00::/7", "unique-local (RFC 4193)", Private),
    range("fe80::/10", "link-local unicast (RFC 4291)", LinkLocal),
    range("fec0::/10", "site-local, deprecated (RFC 3879)", Reserved),
    range("ff00::/8", "multicast (RFC 4291)", Reserved),
];

/// Global unicast IPv6 (RFC 4291 §2.4): every public IPv6 address today is inside it.
const GLOBAL_UNICAST_V6: &str = "2000::/3";

type Parsed<N> = Vec<(N, SpecialRange)>;

fn v4_table() -> &'static Parsed<Ipv4Net> {
    static TABLE: OnceLock<Parsed<Ipv4Net>> = OnceLock::new();
    TABLE.get_or_init(|| {
        IPV4_SPECIAL
            .iter()
            .filter_map(|r| r.prefix.parse().ok().map(|net| (net, *r)))
            .collect()
    })
}

fn v6_table() -> &'static Parsed<Ipv6Net> {
    static TABLE: OnceLock<Parsed<Ipv6Net>> = OnceLock::new();
    TABLE.get_or_init(|| {
        IPV6_SPECIAL
            .iter()
            .filter_map(|r| r.prefix.parse().ok().map(|net| (net, *r)))
            .collect()
    })
}

/// The special-purpose range `ip` falls in (the most specific entry), or `None` for a
/// public unicast address. IPv6 forms carrying an IPv4 address answer for that address.
#[must_use]
pub fn special_range(ip: IpAddr) -> Option<SpecialRange> {
    match ip {
        IpAddr::V4(v4) => special_v4(v4),
        IpAddr::V6(v6) => special_v6(v6),
    }
}

fn special_v4(ip: Ipv4Addr) -> Option<SpecialRange> {
    v4_table()
        .iter()
        .filter(|(net, _)| net.contains(&ip))
        .max_by_key(|(net, _)| net.prefix_len())
        .map(|(_, r)| *r)
}

/// The IPv4 address an IPv6 address carries: IPv4-mapped `::ffff:a.b.c.d`, IPv4-compatible
/// `::a.b.c.d` (RFC 4291 §2.5.5), NAT64 `64:ff9b::a.b.c.d` (RFC 6052), 6to4
/// `2002:aabb:ccdd::/48` (RFC 3056).
fn embedded_v4(ip: Ipv6Addr) -> Option<Ipv4Addr> {
    if let Some(v4) = ip.to_ipv4_mapped() {
        return Some(v4);
    }
    let s = ip.segments();
    let from = |hi: u16, lo: u16| {
        let [a, b] = hi.to_be_bytes();
        let [c, d] = lo.to_be_bytes();
        Ipv4Addr::new(a, b, c, d)
    };
    if s[..6] == [0; 6] && !ip.is_unspecified() && !ip.is_loopback() {
        return Some(from(s[6], s[7]));
    }
    if s[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
        return Some(from(s[6], s[7]));
    }
    if s[0] == 0x2002 {
        return Some(from(s[1], s[2]));
    }
    None
}

fn special_v6(ip: Ipv6Addr) -> Option<SpecialRange> {
    if let Some(v4) = embedded_v4(ip) {
        return special_v4(v4);
    }
    if let Some(found) = v6_table()
        .iter()
        .filter(|(net, _)| net.contains(&ip))
        .max_by_key(|(net, _)| net.prefix_len())
        .map(|(_, r)| *r)
    {
        return Some(found);
    }
    let global: Ipv6Net = GLOBAL_UNICAST_V6.parse().ok()?;
    (!global.contains(&ip)).then_some(range(
        "::/0",
        "outside global unicast 2000::/3 (RFC 4291)",
        Reserved,
    ))
}

/// Classifies `ip` (see [`special_range`]).
#[must_use]
pub fn classify(ip: IpAddr) -> AddressClass {
    special_range(ip).map_or(AddressClass::Public, |r| r.class)
}

impl NetworkPolicy {
    /// Checks one address.
    ///
    /// # Errors
    /// The address's class when the policy refuses it.
    pub fn check(&self, ip: IpAddr) -> Result<(), AddressClass> {
        match classify(ip) {
            AddressClass::Public => Ok(()),
            AddressClass::Loopback if self.allow_loopback => Ok(()),
            class => Err(class),
        }
    }

    /// Checks a URL's port (the scheme's default when it names none).
    ///
    /// # Errors
    /// The port when the policy refuses it.
    pub fn check_port(&self, port: u16) -> Result<(), u16> {
        if self.allow_any_port || matches!(port, 80 | 443) {
            Ok(())
        } else {
            Err(port)
        }
    }
}

/// Limits and policy of the fetcher.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchConfig {
    /// TCP + TLS connect timeout (default 5 s).
    pub connect_timeout: Duration,
    /// Time a download may take, response head and body (default 20 s). Time the caller
    /// spends between the head and reading the body (waiting for memory to hold it) does not
    /// count.
    pub timeout: Duration,
    /// Most redirects followed for a download (default 3). Webhooks follow none.
    pub max_redirects: usize,
    /// A body that brings fewer than [`FetchConfig::stall_bytes`] in this long is given up as
    /// `too_slow` (default 5 s), like curl's `--speed-time`.
    pub stall_window: Duration,
    /// Fewest bytes a body must bring in every [`FetchConfig::stall_window`] (default 1 KiB),
    /// like curl's `--speed-limit`.
    pub stall_bytes: u64,
    /// Largest accepted body in bytes (default 20 MiB).
    pub max_bytes: u64,
    /// Most idle keep-alive connections kept per host (default 32, the per-host download cap):
    /// a connection opened while another was being given back is closed rather than kept.
    pub max_idle_per_host: usize,
    /// Which addresses may be reached.
    pub policy: NetworkPolicy,
    /// `User-Agent` header.
    pub user_agent: String,
}

impl Default for FetchConfig {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(5),
            timeout: Duration::from_secs(20),
            max_redirects: 3,
            stall_window: Duration::from_secs(5),
            stall_bytes: 1024,
            max_bytes: 20 * 1024 * 1024,
            max_idle_per_host: 32,
            policy: NetworkPolicy::default(),
            user_agent: concat!("pixpress/", env!("CARGO_PKG_VERSION")).to_owned(),
        }
    }
}

/// What kind of failure a fetch met.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FetchErrorKind {
    /// Not an absolute URL.
    InvalidUrl,
    /// Not http or https.
    UnsupportedScheme,
    /// The host is or resolves to an address the policy refuses.
    BlockedAddress,
    /// The URL names a port the policy refuses (only 80 and 443 unless widened).
    BlockedPort,
    /// The URL carries credentials (`user:password@`).
    BlockedCredentials,
    /// A redirect leads from https to http.
    BlockedDowngrade,
    /// The name did not resolve.
    Dns,
    /// The connection failed.
    Connect,
    /// A timeout elapsed.
    Timeout,
    /// More redirects than allowed.
    TooManyRedirects,
    /// The body exceeds the byte cap.
    TooLarge,
    /// The body came slower than the stall limit (a stuck origin).
    TooSlow,
    /// A non-success HTTP status.
    Http(u16),
    /// The body could not be read.
    Body,
}

/// A failed fetch, with a stable code and whether a later attempt may succeed. The message is
/// short and safe to show a client: it never holds a resolved address or a library's error
/// chain (those go to the logs).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct FetchError {
    /// Classification.
    pub kind: FetchErrorKind,
    /// What happened, for a person.
    pub message: String,
    /// How long the server asked to wait before trying again (`Retry-After` on a 429 or 5xx,
    /// in seconds or as an HTTP date, RFC 9110 §10.2.3); `None` when it did not say.
    pub retry_after: Option<Duration>,
}

impl FetchError {
    /// A failure of `kind`, explained by `message`.
    pub fn new(kind: FetchErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
            retry_after: None,
        }
    }

    /// Stable code: `invalid_url`, `unsupported_scheme`, `blocked_address`, `blocked_port`,
    /// `blocked_credentials`, `blocked_downgrade`, `dns_error`, `connect_error`, `timeout`,
    /// `too_many_redirects`, `too_large`, `too_slow`, `http_<status>`, `body_error`. Every
    /// refusal by the
    /// egress policy starts with `blocked_`.
    #[must_use]
    pub fn code(&self) -> String {
        match self.kind {
            FetchErrorKind::InvalidUrl => "invalid_url".into(),
            FetchErrorKind::UnsupportedScheme => "unsupported_scheme".into(),
            FetchErrorKind::BlockedAddress => "blocked_address".into(),
            FetchErrorKind::BlockedPort => "blocked_port".into(),
            FetchErrorKind::BlockedCredentials => "blocked_credentials".into(),
            FetchErrorKind::BlockedDowngrade => "blocked_downgrade".into(),
            FetchErrorKind::Dns => "dns_error".into(),
            FetchErrorKind::Connect => "connect_error".into(),
            FetchErrorKind::Timeout => "timeout".into(),
            FetchErrorKind::TooManyRedirects => "too_many_redirects".into(),
            FetchErrorKind::TooLarge => "too_large".into(),
            FetchErrorKind::TooSlow => "too_slow".into(),
            FetchErrorKind::Http(status) => format!("http_{status}"),
            FetchErrorKind::Body => "body_error".into(),
        }
    }

    /// What the failure tells the host's download controller: a 429 or 503 is the origin
    /// saying it is overloaded; a timeout, a failed or broken connection or another 5xx is a
    /// failed attempt (overload only when many fail, see `pixpress_fetch::concurrency`); any other status is
    /// an answer; a refusal by the policy or a name that does not resolve teaches nothing.
    #[must_use]
    pub fn outcome(&self) -> Outcome {
        match self.kind {
            FetchErrorKind::Http(429 | 503) => Outcome::Overloaded,
            FetchErrorKind::Connect
            | FetchErrorKind::Timeout
            | FetchErrorKind::Body
            | FetchErrorKind::TooSlow => Outcome::Failed,
            FetchErrorKind::Http(500..=599) => Outcome::Failed,
            FetchErrorKind::Http(_) | FetchErrorKind::TooLarge => Outcome::Answered,
            _ => Outcome::Neutral,
        }
    }

    /// `true` for trouble that may pass: timeouts, connection and DNS failures, broken bodies,
    /// and HTTP 408, 425, 429 and 5xx. Everything else fails the same way again.
    #[must_use]
    pub fn is_retryable(&self) -> bool {
        match self.kind {
            FetchErrorKind::Dns
            | FetchErrorKind::Connect
            | FetchErrorKind::Timeout
            | FetchErrorKind::Body => true,
            FetchErrorKind::Http(status) => matches!(status, 408 | 425 | 429 | 500..=599),
            _ => false,
        }
    }
}

/// How a download ended, for its host's controller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The origin answered (any status but 429 and 503: a 404 is an answer too).
    Answered,
    /// The origin said it is overloaded (429, 503).
    Overloaded,
    /// No answer: a timeout, a refused or reset connection, a body that broke off, a 5xx.
    Failed,
    /// Nothing to learn (a refused address, a download given up before it started).
    Neutral,
}

/// Checks a URL against the policy before any socket opens: scheme, credentials, port, and
/// — for an address literal, which never reaches the resolver — the address itself.
///
/// # Errors
/// The refusal, with a `blocked_*` kind, or `invalid_url` / `unsupported_scheme`.
pub fn check_url(url: &Url, policy: NetworkPolicy) -> Result<(), FetchError> {
    if !matches!(url.scheme(), "http" | "https") {
        return Err(FetchError::new(
            FetchErrorKind::UnsupportedScheme,
            format!("only http and https can be fetched, not {}", url.scheme()),
        ));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(FetchError::new(
            FetchErrorKind::BlockedCredentials,
            "URLs with credentials (user:password@) are refused",
        ));
    }
    let ip = match url.host() {
        Some(Host::Ipv4(v4)) => Some(IpAddr::V4(v4)),
        Some(Host::Ipv6(v6)) => Some(IpAddr::V6(v6)),
        Some(Host::Domain(_)) => None,
        None => {
            return Err(FetchError::new(
                FetchErrorKind::InvalidUrl,
                "the URL has no host",
            ));
        }
    };
    if let Some(port) = url.port_or_known_default()
        && let Err(port) = policy.check_port(port)
    {
        // Widened for loopback only: a loopback literal or `localhost` passes here; another
        // name passes on to the fetcher, which resolves it before connecting.
        let loopback = match url.host() {
            Some(Host::Domain(name)) => is_localhost(name) || policy.port_needs_loopback_name(url),
            _ => ip.is_some_and(|ip| classify(ip) == AddressClass::Loopback),
        };
        if !(policy.allow_loopback_any_port && loopback) {
            return Err(blocked_port(port, policy));
        }
    }
    if let Some(ip) = ip {
        policy.check(ip).map_err(|_| blocked_literal(ip))?;
    }
    Ok(())
}

/// The refusal of a port other than 80 and 443.
#[must_use]
pub fn blocked_port(port: u16, policy: NetworkPolicy) -> FetchError {
    let message = if policy.allow_loopback_any_port {
        format!(
            "port {port} is refused; public hosts are reached on ports 80 and 443 only (other ports only on loopback)"
        )
    } else {
        format!("port {port} is refused; images are fetched from ports 80 and 443 only")
    };
    FetchError::new(FetchErrorKind::BlockedPort, message)
}

/// The refusal of an address literal the user wrote: it names the special-purpose range.
fn blocked_literal(ip: IpAddr) -> FetchError {
    let described = special_range(ip).map_or_else(
        || "a refused range".to_owned(),
        |r| format!("{} ({})", r.prefix, r.name),
    );
    FetchError::new(
        FetchErrorKind::BlockedAddress,
        format!("{ip} is in {described}; only public addresses are fetched"),
    )
}

/// Checks one redirect hop: the target like any URL, and no downgrade from https to http.
///
/// # Errors
/// As [`check_url`], or `blocked_downgrade`.
pub fn check_redirect(from: &Url, to: &Url, policy: NetworkPolicy) -> Result<(), FetchError> {
    if from.scheme() == "https" && to.scheme() == "http" {
        return Err(FetchError::new(
            FetchErrorKind::BlockedDowngrade,
            "a redirect from https to http is refused",
        ));
    }
    check_url(to, policy)?;
    if policy.port_needs_loopback_name(to) {
        // It cannot be resolved on the way: only a literal or `localhost` may use that port.
        let port = to.port_or_known_default().unwrap_or_default();
        return Err(blocked_port(port, policy));
    }
    Ok(())
}

/// A `Retry-After` value (RFC 9110 §10.2.3): delay-seconds, or an HTTP date (IMF-fixdate)
/// after `now`; `None` for anything else.
#[must_use]
pub fn retry_after(value: &str, now: chrono::DateTime<chrono::Utc>) -> Option<Duration> {
    let value = value.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let at = chrono::DateTime::parse_from_rfc2822(value).ok()?;
    (at.with_timezone(&chrono::Utc) - now).to_std().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn class(s: &str) -> AddressClass {
        classify(s.parse().unwrap())
    }

    #[test]
    fn embedded_ipv4_forms_answer_for_the_address_they_carry() {
        assert_eq!(class("::ffff:169.254.169.254"), LinkLocal);
        assert_eq!(class("64:ff9b::a9fe:a9fe"), LinkLocal);
        assert_eq!(class("2002:0a00:0001::1"), Private);
        assert_eq!(class("::10.0.0.1"), Private);
        assert_eq!(class("2002:5db8:d822::1"), AddressClass::Public);
        assert!(
            NetworkPolicy::default()
                .check("2002:7f00:1::1".parse().unwrap())
                .is_err()
        );
    }

    #[test]
    fn public_addresses_pass_and_loopback_only_when_allowed() {
        for ip in [
            "93.184.216.34",
            "2606:4700::1111",
            "2002:5db8:d822::1",
            "1.1.1.1",
        ] {
            assert_eq!(class(ip), AddressClass::Public, "{ip}");
        }
        let strict = NetworkPolicy::default();
        let local = NetworkPolicy::local();
        let lo: IpAddr = "127.0.0.1".parse().unwrap();
        let v6lo: IpAddr = "::1".parse().unwrap();
        let meta: IpAddr = "169.254.169.254".parse().unwrap();
        assert_eq!(strict.check(lo), Err(AddressClass::Loopback));
        assert_eq!(local.check(lo), Ok(()));
        assert_eq!(local.check(v6lo), Ok(()));
        assert_eq!(local.check(meta), Err(AddressClass::LinkLocal));
    }

    #[test]
    fn only_web_ports_unless_widened() {
        let strict = NetworkPolicy::default();
        assert!(strict.check_port(80).is_ok() && strict.check_port(443).is_ok());
        assert_eq!(strict.check_port(8080), Err(8080));
        assert_eq!(strict.check_port(22), Err(22));
        let any = NetworkPolicy {
            allow_any_port: true,
            ..NetworkPolicy::default()
        };
        assert!(any.check_port(8080).is_ok());
    }

    #[test]
    fn local_runs_widen_ports_for_loopback_only() {
        let local = NetworkPolicy::local();
        let checked = |url: &str| check_url(&Url::parse(url).unwrap(), local).map_err(|e| e.kind);
        for url in [
            "http://127.0.0.1:8080/a.jpg",
            "http://[::1]:8080/a.jpg",
            "http://localhost:8080/a.jpg",
            "https://img.example.com/a.jpg",
        ] {
            assert_eq!(checked(url), Ok(()), "{url}");
        }
        // A public literal on another port is refused at once.
        assert_eq!(
            checked("http://93.184.216.34:8080/a.jpg"),
            Err(FetchErrorKind::BlockedPort)
        );
        // A name on another port is left to the fetcher, which resolves it first...
        let named = Url::parse("http://img.example.com:8080/a.jpg").unwrap();
        assert!(local.port_needs_loopback_name(&named));
        assert!(!local.port_needs_loopback_name(&Url::parse("http://localhost:8080/").unwrap()));
        // ...and a redirect to it, which cannot be resolved on the way, is refused.
        let from = Url::parse("http://127.0.0.1:8080/a.jpg").unwrap();
        assert_eq!(
            check_redirect(&from, &named, local).map_err(|e| e.kind),
            Err(FetchErrorKind::BlockedPort)
        );
    }

    #[test]
    fn ranges_are_named_after_their_registry_entry() {
        let found = special_range("198.18.3.4".parse().unwrap()).unwrap();
        assert_eq!(found.prefix, "198.18.0.0/15");
        assert!(found.name.contains("benchmarking"));
    }
}

#[cfg(test)]
mod retry_after_tests {
    use super::*;

    #[test]
    fn retry_after_reads_seconds_and_http_dates() {
        let now = chrono::DateTime::parse_from_rfc3339("2026-12-01T10:00:00Z")
            .unwrap()
            .with_timezone(&chrono::Utc);
        assert_eq!(retry_after("120", now), Some(Duration::from_secs(120)));
        assert_eq!(
            retry_after("Tue, 01 Dec 2026 10:00:30 GMT", now),
            Some(Duration::from_secs(30))
        );
        assert_eq!(retry_after("Tue, 01 Dec 2026 09:00:00 GMT", now), None);
        assert_eq!(retry_after("soon", now), None);
    }
}
