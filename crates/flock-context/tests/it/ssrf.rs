//! The SSRF guard's policy: its classification table, the allow-list and literal URLs.

use std::net::IpAddr;

use flock_context::SsrfGuard;
use flock_models::WebhookUrl;
use ipnet::IpNet;

/// Refused by default, with the block's name.
const REFUSED: &[(&str, &str)] = &[
    ("0.0.0.0", "this network"),
    ("0.1.2.3", "this network"),
    ("10.0.0.1", "private"),
    ("10.255.255.255", "private"),
    ("100.64.0.1", "shared address space"),
    ("100.127.255.255", "shared address space"),
    ("127.0.0.1", "loopback"),
    ("127.255.255.254", "loopback"),
    ("169.254.169.254", "link-local"),
    ("172.16.0.1", "private"),
    ("172.31.255.255", "private"),
    ("192.0.0.8", "IETF protocol assignments"),
    ("192.0.2.1", "documentation"),
    ("192.88.99.1", "6to4 relay anycast"),
    ("192.168.1.1", "private"),
    ("198.18.0.1", "benchmarking"),
    ("198.19.255.255", "benchmarking"),
    ("198.51.100.7", "documentation"),
    ("203.0.113.9", "documentation"),
    ("224.0.0.1", "multicast"),
    ("239.255.255.250", "multicast"),
    ("240.0.0.1", "reserved"),
    ("255.255.255.255", "broadcast"),
    ("::", "unspecified"),
    ("::1", "loopback"),
    ("::ffff:127.0.0.1", "loopback"),
    ("::ffff:10.1.2.3", "private"),
    ("::ffff:169.254.169.254", "link-local"),
    ("::127.0.0.1", "IPv4-compatible (deprecated)"),
    ("64:ff9b::10.0.0.1", "private"),
    ("64:ff9b::127.0.0.1", "loopback"),
    ("64:ff9b:1::1", "local-use NAT64"),
    ("100::1", "discard-only"),
    ("2001::1", "IETF protocol assignments"),
    ("2001:2::1", "IETF protocol assignments"),
    ("2001:db8::1", "documentation"),
    ("2002:7f00:1::", "loopback"),
    ("2002:a9fe:a9fe::1", "link-local"),
    ("3fff::1", "documentation"),
    ("5f00::1", "segment routing (SRv6) SIDs"),
    ("fc00::1", "unique local"),
    ("fd12:3456::1", "unique local"),
    ("fe80::1", "link-local"),
    ("febf::1", "link-local"),
    ("fec0::1", "site-local (deprecated)"),
    ("ff02::1", "multicast"),
    ("4000::1", "reserved"),
    ("::ffff:0:7f00:1", "reserved"),
];

/// Globally routable: allowed by default.
const ALLOWED: &[&str] = &[
    "1.1.1.1",
    "8.8.8.8",
    "11.0.0.1",
    "93.184.216.34",
    "100.63.255.255",
    "100.128.0.0",
    "169.255.0.1",
    "172.15.255.255",
    "172.32.0.0",
    "192.0.1.1",
    "192.169.0.1",
    "198.17.255.255",
    "198.20.0.0",
    "223.255.255.255",
    "2606:4700:4700::1111",
    "2001:4860:4860::8888",
    "2400:cb00::1",
    "::ffff:8.8.8.8",
    "64:ff9b::808:808",
    "2002:808:808::1",
];

fn ip(text: &str) -> IpAddr {
    text.parse().unwrap()
}

#[test]
fn classification_table_without_an_allow_list() {
    let guard = SsrfGuard::default();
    for (address, name) in REFUSED {
        let refused = guard
            .check_ip(ip(address))
            .expect_err(&format!("{address} must be refused"));
        assert_eq!(refused.range().name, *name, "{address}");
        assert_eq!(refused.address(), ip(address));
        assert_eq!(
            SsrfGuard::refused_range(ip(address)).map(|r| r.name),
            Some(*name)
        );
        assert!(
            refused.to_string().contains(&ip(address).to_string()),
            "{refused}"
        );
    }
    for address in ALLOWED {
        assert_eq!(guard.check_ip(ip(address)), Ok(()), "{address}");
        assert_eq!(SsrfGuard::refused_range(ip(address)), None, "{address}");
    }
}

#[test]
fn an_allow_list_opens_only_its_ranges() {
    let allowed: Vec<IpNet> = ["127.0.0.1/32", "10.0.0.0/8", "fd00::/8"]
        .iter()
        .map(|n| n.parse().unwrap())
        .collect();
    let guard = SsrfGuard::new(allowed.clone());
    assert_eq!(guard.allowed(), allowed.as_slice());
    for address in [
        "127.0.0.1",
        "::ffff:127.0.0.1",
        "10.0.0.1",
        "10.200.3.4",
        "fd00::1",
        "8.8.8.8",
    ] {
        assert_eq!(guard.check_ip(ip(address)), Ok(()), "{address}");
    }
    for address in [
        "127.0.0.2",
        "::1",
        "169.254.169.254",
        "192.168.0.1",
        "fc00::1",
    ] {
        assert!(guard.check_ip(ip(address)).is_err(), "{address}");
    }
}

#[test]
fn literal_urls_are_checked_without_dns() {
    let url = |text: &str| WebhookUrl::parse(text).unwrap();
    let guard = SsrfGuard::default();
    // Loopback spelled in the short, whole-number and hexadecimal forms never becomes a
    // webhook URL at all: only dotted-decimal addresses are accepted, so the guard never has
    // to recognise them.
    for obfuscated in ["http://127.1/", "http://2130706433/", "http://0x7f.0.0.1/"] {
        let err = WebhookUrl::parse(obfuscated).unwrap_err();
        assert!(
            err.message().contains("dotted-decimal"),
            "{obfuscated}: {err}"
        );
    }
    for refused in [
        "http://127.0.0.1/hook",
        "http://[::ffff:127.0.0.1]:8080/",
        "http://[::1]/",
        "http://169.254.169.254/latest/meta-data",
        "http://[fe80::1]/",
        "http://localhost:8080/",
        "http://LOCALHOST./",
        "http://api.localhost/",
    ] {
        assert!(guard.check_literal(&url(refused)).is_err(), "{refused}");
    }
    for allowed in [
        "https://example.com/hook",
        "http://8.8.8.8/",
        "http://[2606:4700:4700::1111]/",
        "http://localhost.example.com/",
    ] {
        assert_eq!(guard.check_literal(&url(allowed)), Ok(()), "{allowed}");
    }
    let local = SsrfGuard::new(["127.0.0.1/32".parse().unwrap()]);
    assert_eq!(local.check_literal(&url("http://localhost:3000/")), Ok(()));
    assert_eq!(local.check_literal(&url("http://127.0.0.1:3000/")), Ok(()));
    assert!(local.check_literal(&url("http://[::1]:3000/")).is_err());
}
