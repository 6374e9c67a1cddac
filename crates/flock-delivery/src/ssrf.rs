//! The delivery client's side of the SSRF guard: a DNS resolver that keeps only the addresses
//! the guard allows. The guard's address policy lives in `flock-context`.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};

use flock_context::SsrfGuard;
use hyper_util::client::legacy::connect::dns::Name;
use tower_service::Service;

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

/// What the resolver answers: the allowed addresses, or why there are none.
type Resolving =
    Pin<Box<dyn Future<Output = Result<std::vec::IntoIter<SocketAddr>, BoxError>> + Send>>;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// hyper's connector asks this for every name it connects to (it sets the URL's port on each
/// address); an IP address in a URL is not resolved, so the sender checks those itself.
impl Service<Name> for GuardedResolver {
    type Response = std::vec::IntoIter<SocketAddr>;
    type Error = BoxError;
    type Future = Resolving;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, name: Name) -> Resolving {
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
                Ok(kept) => Ok(kept.into_iter()),
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

    use super::*;

    #[tokio::test]
    async fn the_resolver_refuses_a_name_with_only_refused_addresses() {
        let mut resolver = GuardedResolver::new(SsrfGuard::default());
        let Err(error) = resolver.call(Name::from_str("localhost").unwrap()).await else {
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
        let mut resolver = GuardedResolver::new(SsrfGuard::new([allowed]));
        let Ok(addresses) = resolver.call(Name::from_str("localhost").unwrap()).await else {
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
