//! The delivery client's side of the SSRF guard: a DNS resolver that keeps only the addresses
//! the guard allows. The guard's address policy lives in `flock-context`.

use flock_context::SsrfGuard;

/// The delivery client's DNS resolver: resolves with the system resolver, then keeps only the
/// addresses the guard allows.
#[derive(Debug, Clone)]
pub(crate) struct GuardedResolver {
    guard: SsrfGuard,
}

impl GuardedResolver {
    pub(crate) fn new(guard: SsrfGuard) -> Self {
        GuardedResolver { guard }
    }
}

/// A name that did not resolve: the system resolver failed (`source`), or found no address.
#[derive(Debug, thiserror::Error)]
#[error("{host} did not resolve")]
pub(crate) struct Unresolved {
    host: String,
    #[source]
    source: Option<std::io::Error>,
}

impl reqwest::dns::Resolve for GuardedResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let guard = self.guard.clone();
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let looked_up = tokio::net::lookup_host((host.clone(), 0)).await;
            let resolved = match looked_up {
                Ok(resolved) => resolved,
                Err(source) => {
                    let source = Some(source);
                    return Err(Box::new(Unresolved { host, source }) as _);
                }
            };
            match guard.filter_resolved(&host, resolved) {
                Ok(kept) => Ok(Box::new(kept.into_iter()) as reqwest::dns::Addrs),
                Err(Some(refused)) => Err(Box::new(refused) as _),
                Err(None) => Err(Box::new(Unresolved { host, source: None }) as _),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use std::net::{IpAddr, Ipv4Addr, SocketAddr};
    use std::str::FromStr;

    use flock_context::Refused;
    use reqwest::dns::{Name, Resolve};

    use super::*;

    #[tokio::test]
    async fn the_resolver_refuses_a_name_with_only_refused_addresses() {
        let resolver = GuardedResolver::new(SsrfGuard::default());
        let Err(error) = resolver.resolve(Name::from_str("localhost").unwrap()).await else {
            panic!("localhost must be refused");
        };
        let refused = error.downcast_ref::<Refused>().expect("a Refused error");
        assert_eq!(refused.host(), Some("localhost"));
        assert_eq!(refused.range().name, "loopback");
        assert!(
            refused
                .to_string()
                .contains("localhost resolves only to refused")
        );
    }

    #[tokio::test]
    async fn the_resolver_keeps_only_allowed_addresses() {
        let allowed = "127.0.0.1/32".parse().unwrap();
        let resolver = GuardedResolver::new(SsrfGuard::new([allowed]));
        let Ok(addresses) = resolver.resolve(Name::from_str("localhost").unwrap()).await else {
            panic!("127.0.0.1 is allowed");
        };
        let addresses: Vec<SocketAddr> = addresses.collect();
        assert!(!addresses.is_empty());
        assert!(
            addresses
                .iter()
                .all(|a| a.ip() == IpAddr::V4(Ipv4Addr::LOCALHOST))
        );
    }
}
