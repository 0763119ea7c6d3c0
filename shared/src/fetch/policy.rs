//! Network policy for outbound requests (SSRF guard). Pure: classifies addresses only.
//!
//! Every host a fetch touches — the URL's literal address, every DNS answer, every redirect
//! target and the peer actually connected to — must be a public unicast address. Ranges follow
//! the IANA special-purpose registries (RFC 6890, RFC 4291, RFC 6598, RFC 6052).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// What outbound requests may reach.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct NetworkPolicy {
    /// Allow 127.0.0.0/8 and ::1 (local runs and tests only). Every other non-public range
    /// stays blocked.
    pub allow_loopback: bool,
}

/// Why an address is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AddressClass {
    /// A public unicast address.
    Public,
    /// 127.0.0.0/8, ::1.
    Loopback,
    /// 10/8, 172.16/12, 192.168/16, 100.64/10 (CGNAT), fc00::/7.
    Private,
    /// 169.254/16 (cloud metadata lives here), fe80::/10.
    LinkLocal,
    /// 0.0.0.0/8, ::.
    Unspecified,
    /// Multicast, broadcast, documentation, benchmarking and reserved ranges.
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

/// Classifies `ip`. IPv4-mapped (`::ffff:a.b.c.d`), IPv4-compatible (`::a.b.c.d`) and NAT64
/// (`64:ff9b::/96`) IPv6 forms are classified by the IPv4 address they carry.
#[must_use]
pub fn classify(ip: IpAddr) -> AddressClass {
    match ip {
        IpAddr::V4(v4) => classify_v4(v4),
        IpAddr::V6(v6) => classify_v6(v6),
    }
}

fn classify_v4(ip: Ipv4Addr) -> AddressClass {
    let [a, b, c, _] = ip.octets();
    if a == 0 {
        AddressClass::Unspecified
    } else if ip.is_loopback() {
        AddressClass::Loopback
    } else if ip.is_private() || (a == 100 && (64..128).contains(&b)) {
        AddressClass::Private
    } else if ip.is_link_local() {
        AddressClass::LinkLocal
    } else if ip.is_multicast()
        || ip.is_broadcast()
        || ip.is_documentation()
        || a >= 240
        || (a == 192 && b == 0 && c == 0)
        || (a == 198 && (b == 18 || b == 19))
    {
        AddressClass::Reserved
    } else {
        AddressClass::Public
    }
}

fn classify_v6(ip: Ipv6Addr) -> AddressClass {
    if ip.is_unspecified() {
        return AddressClass::Unspecified;
    }
    if ip.is_loopback() {
        return AddressClass::Loopback;
    }
    if let Some(v4) = ip.to_ipv4_mapped() {
        return classify_v4(v4);
    }
    let segments = ip.segments();
    // IPv4-compatible ::a.b.c.d (deprecated, RFC 4291 §2.5.5.1) and NAT64 64:ff9b::/96 (RFC 6052).
    if segments[..6] == [0; 6] || segments[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
        let [a, b] = segments[6].to_be_bytes();
        let [c, d] = segments[7].to_be_bytes();
        return classify_v4(Ipv4Addr::new(a, b, c, d));
    }
    if ip.is_unique_local() {
        AddressClass::Private
    } else if ip.is_unicast_link_local() {
        AddressClass::LinkLocal
    } else if ip.is_multicast()
        || (segments[0] & 0xffc0) == 0xfec0
        || (segments[0] == 0x2001 && segments[1] == 0x0db8)
    {
        AddressClass::Reserved
    } else {
        AddressClass::Public
    }
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
}

#[cfg(test)]
mod tests {
    use super::*;

    fn class(s: &str) -> AddressClass {
        classify(s.parse().unwrap())
    }

    #[test]
    fn metadata_private_and_special_addresses_are_refused() {
        assert_eq!(class("169.254.169.254"), AddressClass::LinkLocal);
        assert_eq!(class("10.0.0.1"), AddressClass::Private);
        assert_eq!(class("172.20.1.1"), AddressClass::Private);
        assert_eq!(class("192.168.1.1"), AddressClass::Private);
        assert_eq!(class("100.100.100.200"), AddressClass::Private);
        assert_eq!(class("0.0.0.0"), AddressClass::Unspecified);
        assert_eq!(class("127.0.0.53"), AddressClass::Loopback);
        assert_eq!(class("::"), AddressClass::Unspecified);
        assert_eq!(class("fd00::1"), AddressClass::Private);
        assert_eq!(class("fe80::1"), AddressClass::LinkLocal);
        assert_eq!(class("224.0.0.1"), AddressClass::Reserved);
        assert_eq!(class("255.255.255.255"), AddressClass::Reserved);
    }

    #[test]
    fn ipv4_mapped_and_embedded_forms_are_classified_by_their_ipv4_address() {
        assert_eq!(class("::ffff:169.254.169.254"), AddressClass::LinkLocal);
        assert_eq!(class("::ffff:127.0.0.1"), AddressClass::Loopback);
        assert_eq!(class("::ffff:10.0.0.1"), AddressClass::Private);
        assert_eq!(class("64:ff9b::a9fe:a9fe"), AddressClass::LinkLocal);
        assert_eq!(class("::10.0.0.1"), AddressClass::Private);
    }

    #[test]
    fn public_addresses_pass_and_loopback_only_when_allowed() {
        assert_eq!(class("93.184.216.34"), AddressClass::Public);
        assert_eq!(class("2606:4700::1111"), AddressClass::Public);
        let strict = NetworkPolicy::default();
        let local = NetworkPolicy {
            allow_loopback: true,
        };
        let lo: IpAddr = "127.0.0.1".parse().unwrap();
        let v6lo: IpAddr = "::1".parse().unwrap();
        let meta: IpAddr = "169.254.169.254".parse().unwrap();
        assert_eq!(strict.check(lo), Err(AddressClass::Loopback));
        assert_eq!(local.check(lo), Ok(()));
        assert_eq!(local.check(v6lo), Ok(()));
        assert_eq!(local.check(meta), Err(AddressClass::LinkLocal));
    }
}
