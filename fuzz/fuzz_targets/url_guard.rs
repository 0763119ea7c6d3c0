//! Any text as an image URL under the deployment policy: the guard never panics, and whatever
//! it lets through is http(s), has no credentials, uses port 80 or 443, and — for an address
//! literal — is a public address.
#![no_main]

use std::net::IpAddr;

use libfuzzer_sys::fuzz_target;
use pixpress_domain::egress::{AddressClass, classify};
use pixpress_domain::egress::{NetworkPolicy, check_redirect, check_url};
use url::{Host, Url};

fn assert_allowed(url: &Url) {
    assert!(matches!(url.scheme(), "http" | "https"), "{url}");
    assert!(url.username().is_empty() && url.password().is_none(), "{url}");
    assert!(matches!(url.port_or_known_default(), Some(80 | 443)), "{url}");
    let literal = match url.host() {
        Some(Host::Ipv4(v4)) => Some(IpAddr::V4(v4)),
        Some(Host::Ipv6(v6)) => Some(IpAddr::V6(v6)),
        _ => None,
    };
    if let Some(ip) = literal {
        assert_eq!(classify(ip), AddressClass::Public, "{url}");
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let policy = NetworkPolicy::default();
    // One input, two URLs: the second half is a redirect target from the first.
    let mut middle = text.len() / 2;
    while !text.is_char_boundary(middle) {
        middle -= 1;
    }
    let (first, second) = text.split_at(middle);
    for raw in [text, first, second] {
        if let Ok(url) = Url::parse(raw)
            && check_url(&url, policy).is_ok()
        {
            assert_allowed(&url);
        }
    }
    if let (Ok(from), Ok(to)) = (Url::parse(first), Url::parse(second))
        && check_redirect(&from, &to, policy).is_ok()
    {
        assert_allowed(&to);
        assert!(!(from.scheme() == "https" && to.scheme() == "http"));
    }
    // Every 16-byte or 4-byte window is also an address to classify.
    if data.len() >= 16 {
        let mut octets = [0u8; 16];
        octets.copy_from_slice(&data[..16]);
        let _ = classify(IpAddr::from(octets));
    } else if data.len() >= 4 {
        let _ = classify(IpAddr::from([data[0], data[1], data[2], data[3]]));
    }
});
