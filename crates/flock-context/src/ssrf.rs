//! The SSRF guard's address policy: which destination addresses webhooks may reach, by block,
//! with an allow-list of CIDRs. The HTTP client that delivers enforces it where it connects; the
//! API refuses literal addresses with it when a webhook is submitted.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;

use flock_models::WebhookUrl;
use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use url::Host;

/// A block of addresses the guard refuses by default: what it is and its CIDR.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RefusedRange {
    /// What the block is for (`loopback`, `private`, `link-local`, ...).
    pub name: &'static str,
    /// The block as CIDR text (`127.0.0.0/8`), or a description for blocks that are not one CIDR.
    pub block: &'static str,
}

impl fmt::Display for RefusedRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.name, self.block)
    }
}

/// A destination the guard refused: the address, the block it falls in and, when the address
/// came from resolving a name, that name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", self.describe())]
pub struct Refused {
    host: Option<String>,
    address: IpAddr,
    range: RefusedRange,
}

impl Refused {
    /// The refused address (the first one, when a name resolved to several).
    pub fn address(&self) -> IpAddr {
        self.address
    }

    /// The block it falls in.
    pub fn range(&self) -> RefusedRange {
        self.range
    }

    /// The host name whose addresses were all refused; `None` for a literal IP.
    pub fn host(&self) -> Option<&str> {
        self.host.as_deref()
    }

    /// What the guard refused, by class only, without the address: what an attempt record
    /// (which API callers read) says, so that refusals do not map the internal network for
    /// whoever chose the URL. `refused by the SSRF guard: private address`, or for a name,
    /// `refused by the SSRF guard: inside.test resolves only to private addresses`. The
    /// `Display` text, with the address, is for the operator's logs.
    pub fn class(&self) -> String {
        match &self.host {
            Some(host) => format!(
                "refused by the SSRF guard: {host} resolves only to {} addresses",
                self.range.name
            ),
            None => format!("refused by the SSRF guard: {} address", self.range.name),
        }
    }

    fn with_host(mut self, host: &str) -> Self {
        self.host = Some(host.to_owned());
        self
    }

    fn describe(&self) -> String {
        match &self.host {
            Some(host) => format!(
                "refused by the SSRF guard: {host} resolves only to refused addresses; {} is {}",
                self.address, self.range
            ),
            None => format!(
                "refused by the SSRF guard: {} is {}",
                self.address, self.range
            ),
        }
    }
}

const fn v4(a: u8, b: u8, c: u8, d: u8, prefix: u8) -> Ipv4Net {
    Ipv4Net::new_assert(Ipv4Addr::new(a, b, c, d), prefix)
}

#[allow(
    clippy::too_many_arguments,
    reason = "the eight segments of an IPv6 address"
)]
const fn v6(segments: [u16; 8], prefix: u8) -> Ipv6Net {
    let [a, b, c, d, e, f, g, h] = segments;
    Ipv6Net::new_assert(Ipv6Addr::new(a, b, c, d, e, f, g, h), prefix)
}

const fn range(name: &'static str, block: &'static str) -> RefusedRange {
    RefusedRange { name, block }
}

/// IPv4 blocks refused by default; the first match names the reason.
const V4_REFUSED: &[(Ipv4Net, RefusedRange)] = &[
    (v4(0, 0, 0, 0, 8), range("this network", "0.0.0.0/8")),
    (v4(10, 0, 0, 0, 8), range("private", "10.0.0.0/8")),
    (
        v4(100, 64, 0, 0, 10),
        range("shared address space", "100.64.0.0/10"),
    ),
    (v4(127, 0, 0, 0, 8), range("loopback", "127.0.0.0/8")),
    (
        v4(169, 254, 0, 0, 16),
        range("link-local", "169.254.0.0/16"),
    ),
    (v4(172, 16, 0, 0, 12), range("private", "172.16.0.0/12")),
    (
        v4(192, 0, 0, 0, 24),
        range("IETF protocol assignments", "192.0.0.0/24"),
    ),
    (v4(192, 0, 2, 0, 24), range("documentation", "192.0.2.0/24")),
    (
        v4(192, 88, 99, 0, 24),
        range("6to4 relay anycast", "192.88.99.0/24"),
    ),
    (v4(192, 168, 0, 0, 16), range("private", "192.168.0.0/16")),
    (
        v4(198, 18, 0, 0, 15),
        range("benchmarking", "198.18.0.0/15"),
    ),
    (
        v4(198, 51, 100, 0, 24),
        range("documentation", "198.51.100.0/24"),
    ),
    (
        v4(203, 0, 113, 0, 24),
        range("documentation", "203.0.113.0/24"),
    ),
    (v4(224, 0, 0, 0, 4), range("multicast", "224.0.0.0/4")),
    (
        v4(255, 255, 255, 255, 32),
        range("broadcast", "255.255.255.255/32"),
    ),
    (v4(240, 0, 0, 0, 4), range("reserved", "240.0.0.0/4")),
];

/// IPv6 blocks refused by default; the first match names the reason. IPv4-mapped addresses,
/// NAT64 (`64:ff9b::/96`) and 6to4 (`2002::/16`) are judged by the IPv4 address they carry.
const V6_REFUSED: &[(Ipv6Net, RefusedRange)] = &[
    (v6([0; 8], 128), range("unspecified", "::/128")),
    (
        v6([0, 0, 0, 0, 0, 0, 0, 1], 128),
        range("loopback", "::1/128"),
    ),
    (
        v6([0; 8], 96),
        range("IPv4-compatible (deprecated)", "::/96"),
    ),
    (
        v6([0x64, 0xff9b, 1, 0, 0, 0, 0, 0], 48),
        range("local-use NAT64", "64:ff9b:1::/48"),
    ),
    (
        v6([0x100, 0, 0, 0, 0, 0, 0, 0], 64),
        range("discard-only", "100::/64"),
    ),
    (
        v6([0x2001, 0xdb8, 0, 0, 0, 0, 0, 0], 32),
        range("documentation", "2001:db8::/32"),
    ),
    (
        v6([0x2001, 0, 0, 0, 0, 0, 0, 0], 23),
        range("IETF protocol assignments", "2001::/23"),
    ),
    (
        v6([0x3fff, 0, 0, 0, 0, 0, 0, 0], 20),
        range("documentation", "3fff::/20"),
    ),
    (
        v6([0x5f00, 0, 0, 0, 0, 0, 0, 0], 16),
        range("segment routing (SRv6) SIDs", "5f00::/16"),
    ),
    (
        v6([0xfc00, 0, 0, 0, 0, 0, 0, 0], 7),
        range("unique local", "fc00::/7"),
    ),
    (
        v6([0xfe80, 0, 0, 0, 0, 0, 0, 0], 10),
        range("link-local", "fe80::/10"),
    ),
    (
        v6([0xfec0, 0, 0, 0, 0, 0, 0, 0], 10),
        range("site-local (deprecated)", "fec0::/10"),
    ),
    (
        v6([0xff00, 0, 0, 0, 0, 0, 0, 0], 8),
        range("multicast", "ff00::/8"),
    ),
];

const NAT64: Ipv6Net = v6([0x64, 0xff9b, 0, 0, 0, 0, 0, 0], 96);
const SIX_TO_FOUR: Ipv6Net = v6([0x2002, 0, 0, 0, 0, 0, 0, 0], 16);
const GLOBAL_UNICAST: Ipv6Net = v6([0x2000, 0, 0, 0, 0, 0, 0, 0], 3);
const NOT_GLOBAL: RefusedRange = range("reserved", "outside global unicast 2000::/3");

/// Decides which addresses webhooks may reach.
///
/// By default it refuses every address that is not globally routable: loopback, private,
/// link-local, shared (100.64/10), multicast, broadcast, documentation, benchmarking, reserved,
/// unspecified and IETF blocks, IPv4 and IPv6, with IPv4-mapped IPv6 addresses judged as the IPv4
/// address they are (and NAT64 / 6to4 addresses by the IPv4 address they carry). Every CIDR of
/// the allow-list is let through whatever block it lies in, for example `127.0.0.1/32` for local
/// development.
///
/// This is the policy alone. `flock-delivery` enforces it where its client connects: its DNS
/// resolver keeps only allowed addresses ([`SsrfGuard::filter_resolved`]; a name that resolves
/// only to refused ones fails with [`Refused`]), and literal-IP URLs are checked before sending
/// ([`SsrfGuard::check_ip_host`]), so a name that later resolves elsewhere cannot slip through.
/// [`Webhooks`](crate::Webhooks) refuses what can be refused without DNS when a webhook is
/// submitted ([`SsrfGuard::check_literal`]).
#[derive(Debug, Clone, Default)]
pub struct SsrfGuard {
    allowed: Arc<[IpNet]>,
}

impl SsrfGuard {
    /// A guard that also lets the `allowed` blocks through.
    pub fn new(allowed: impl IntoIterator<Item = IpNet>) -> Self {
        SsrfGuard {
            allowed: allowed.into_iter().map(|net| net.trunc()).collect(),
        }
    }

    /// The allow-list.
    pub fn allowed(&self) -> &[IpNet] {
        &self.allowed
    }

    /// The refused block `ip` falls in, ignoring the allow-list; `None` for a globally routable
    /// address.
    pub fn refused_range(ip: IpAddr) -> Option<RefusedRange> {
        match ip {
            IpAddr::V4(ip) => refused_v4(ip),
            IpAddr::V6(ip) => refused_v6(ip),
        }
    }

    /// Whether a connection to `ip` is allowed.
    ///
    /// # Errors
    /// [`Refused`] when `ip` lies in a refused block and no allowed CIDR contains it (an
    /// IPv4-mapped address is also matched against the allow-list as its IPv4 address).
    pub fn check_ip(&self, ip: IpAddr) -> Result<(), Refused> {
        let canonical = ip.to_canonical();
        if self
            .allowed
            .iter()
            .any(|net| net.contains(&ip) || net.contains(&canonical))
        {
            return Ok(());
        }
        match Self::refused_range(ip) {
            None => Ok(()),
            Some(range) => Err(Refused {
                host: None,
                address: ip,
                range,
            }),
        }
    }

    /// Checks what can be checked of `url` without DNS: a literal IP host, and the `localhost`
    /// names (which always mean loopback; refused unless `127.0.0.1` or `::1` is allowed). Other
    /// names pass here and are checked when the delivery client resolves them.
    ///
    /// # Errors
    /// [`Refused`] for a refused literal address or a refused `localhost` name.
    pub fn check_literal(&self, url: &WebhookUrl) -> Result<(), Refused> {
        match url.url().host() {
            Some(Host::Domain(name)) if is_localhost(name) => {
                let v4 = self.check_ip(IpAddr::V4(Ipv4Addr::LOCALHOST));
                let v6 = self.check_ip(IpAddr::V6(Ipv6Addr::LOCALHOST));
                match (v4, v6) {
                    (Err(refused), Err(_)) => Err(refused.with_host(name)),
                    _ => Ok(()),
                }
            }
            _ => self.check_ip_host(url),
        }
    }

    /// Checks a literal-IP host of `url` (an HTTP client does not resolve those, so a guarded
    /// resolver never sees them); names pass.
    ///
    /// # Errors
    /// [`Refused`] for a refused literal address.
    pub fn check_ip_host(&self, url: &WebhookUrl) -> Result<(), Refused> {
        match url.url().host() {
            Some(Host::Ipv4(ip)) => self.check_ip(IpAddr::V4(ip)),
            Some(Host::Ipv6(ip)) => self.check_ip(IpAddr::V6(ip)),
            Some(Host::Domain(_)) | None => Ok(()),
        }
    }

    /// Keeps the allowed addresses of `host`'s resolution, for a resolver that enforces the guard.
    ///
    /// # Errors
    /// `Some(`[`Refused`]`)` (naming `host` and the first refused address) when every address is
    /// refused; `None` when there was no address at all.
    pub fn filter_resolved(
        &self,
        host: &str,
        addresses: impl IntoIterator<Item = SocketAddr>,
    ) -> Result<Vec<SocketAddr>, Option<Refused>> {
        let mut kept = Vec::new();
        let mut first_refused = None;
        for address in addresses {
            match self.check_ip(address.ip()) {
                Ok(()) => kept.push(address),
                Err(refused) => {
                    first_refused.get_or_insert(refused);
                }
            }
        }
        if kept.is_empty() {
            return Err(first_refused.map(|r| r.with_host(host)));
        }
        Ok(kept)
    }
}

/// `localhost`, `localhost.` and names under `.localhost` (RFC 6761: always loopback).
fn is_localhost(name: &str) -> bool {
    let name = name.strip_suffix('.').unwrap_or(name);
    let len = name.len();
    name.eq_ignore_ascii_case("localhost")
        || (len > ".localhost".len()
            && name
                .get(len - ".localhost".len()..)
                .is_some_and(|tail| tail.eq_ignore_ascii_case(".localhost")))
}

fn refused_v4(ip: Ipv4Addr) -> Option<RefusedRange> {
    V4_REFUSED
        .iter()
        .find(|(net, _)| net.contains(&ip))
        .map(|(_, range)| *range)
}

fn refused_v6(ip: Ipv6Addr) -> Option<RefusedRange> {
    if let Some(mapped) = ip.to_ipv4_mapped() {
        return refused_v4(mapped);
    }
    if let Some((_, range)) = V6_REFUSED.iter().find(|(net, _)| net.contains(&ip)) {
        return Some(*range);
    }
    let octets = ip.octets();
    if NAT64.contains(&ip) {
        return refused_v4(Ipv4Addr::new(
            octets[12], octets[13], octets[14], octets[15],
        ));
    }
    if SIX_TO_FOUR.contains(&ip) {
        return refused_v4(Ipv4Addr::new(octets[2], octets[3], octets[4], octets[5]));
    }
    if !GLOBAL_UNICAST.contains(&ip) {
        return Some(NOT_GLOBAL);
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn block_texts_match_their_networks() {
        for (net, range) in V4_REFUSED {
            assert_eq!(net.to_string(), range.block);
        }
        for (net, range) in V6_REFUSED {
            assert_eq!(net.to_string(), range.block);
        }
    }

    #[test]
    fn localhost_names() {
        for name in [
            "localhost",
            "LOCALHOST",
            "localhost.",
            "a.localhost",
            "x.y.Localhost.",
        ] {
            assert!(is_localhost(name), "{name}");
        }
        for name in [
            "localhost.example",
            "notlocalhost",
            "localhos",
            "example.com",
        ] {
            assert!(!is_localhost(name), "{name}");
        }
    }

    #[test]
    fn a_resolution_keeps_only_allowed_addresses() {
        let address = |text: &str| -> SocketAddr { text.parse().unwrap() };
        let guard = SsrfGuard::new(["127.0.0.1/32".parse().unwrap()]);
        let kept = guard
            .filter_resolved(
                "mixed.test",
                [
                    address("[::1]:80"),
                    address("127.0.0.1:80"),
                    address("10.0.0.1:80"),
                ],
            )
            .unwrap();
        assert_eq!(kept, [address("127.0.0.1:80")]);

        let refused = guard
            .filter_resolved("inside.test", [address("10.0.0.1:80"), address("[::1]:80")])
            .unwrap_err()
            .expect("a refusal");
        assert_eq!(refused.host(), Some("inside.test"));
        assert_eq!(refused.address(), address("10.0.0.1:80").ip());
        assert!(
            refused
                .to_string()
                .contains("inside.test resolves only to refused addresses"),
            "{refused}"
        );
        // What attempt records say names the class, never the address.
        assert_eq!(
            refused.class(),
            "refused by the SSRF guard: inside.test resolves only to private addresses"
        );
        let literal = guard
            .check_ip_host(&WebhookUrl::parse("http://192.168.7.9/").unwrap())
            .unwrap_err();
        assert!(literal.to_string().contains("192.168.7.9"), "{literal}");
        assert_eq!(
            literal.class(),
            "refused by the SSRF guard: private address"
        );
        assert_eq!(guard.filter_resolved("empty.test", []), Err(None));
    }
}
