//! The addresses a name has, asked of the same DNS servers the sandbox uses (the runtime's `dns`, else the host's
//! resolv.conf): a connection whose name does not resolve to where it goes is refused.
use hickory_resolver::config::{NameServerConfig, ResolverConfig};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::{Resolver, TokioResolver};
use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

pub(crate) struct Names {
    resolver: Option<TokioResolver>,
}

/// How long one name may take to resolve.
const LOOKUP_TIMEOUT: Duration = Duration::from_secs(5);

impl Names {
    pub(crate) fn new(servers: &[Ipv4Addr]) -> Names {
        let built = if servers.is_empty() {
            TokioResolver::builder_tokio().and_then(|b| b.build())
        } else {
            let servers = servers.iter().map(|ip| NameServerConfig::udp_and_tcp(IpAddr::V4(*ip))).collect();
            Resolver::builder_with_config(
                ResolverConfig::from_parts(None, vec![], servers),
                TokioRuntimeProvider::default(),
            )
            .build()
        };
        let resolver = built
            .map_err(|e| tracing::warn!(error = %e, "egress gateway: no DNS resolver; named connections are refused"))
            .ok();
        Names { resolver }
    }

    /// Whether `name` resolves (A records) to `ip`. Failures and timeouts are "no".
    pub(crate) async fn resolves_to(&self, name: &str, ip: Ipv4Addr) -> bool {
        let Some(resolver) = &self.resolver else { return false };
        // A fully qualified name: no search domains are tried.
        let fqdn = format!("{}.", name.trim_end_matches('.'));
        match tokio::time::timeout(LOOKUP_TIMEOUT, resolver.lookup_ip(fqdn.as_str())).await {
            Ok(Ok(found)) => found.iter().any(|a| a == IpAddr::V4(ip)),
            Ok(Err(e)) => {
                tracing::debug!(name, error = %e, "egress gateway: lookup failed");
                false
            }
            Err(_) => false,
        }
    }
}
