//! The addresses a name has, asked of the same DNS servers the sandbox's queries go to (its policy's
//! `dns_servers`, else the runtime's `dns`, else the host's resolv.conf): a connection whose name does not resolve
//! to where it goes is refused.
use hickory_resolver::config::{NameServerConfig, ResolverConfig};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::{Resolver, TokioResolver};
use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

pub(crate) struct Names {
    resolver: Option<TokioResolver>,
    /// Resolvers for sandboxes' own DNS servers, by server list (few distinct lists in practice; cleared when
    /// there are many).
    custom: std::sync::Mutex<std::collections::HashMap<Vec<Ipv4Addr>, TokioResolver>>,
}

/// Most distinct server lists kept.
const MAX_CUSTOM: usize = 256;

/// How long one name may take to resolve.
const LOOKUP_TIMEOUT: Duration = Duration::from_secs(5);

impl Names {
    pub(crate) fn new(servers: &[Ipv4Addr]) -> Names {
        Names { resolver: build(servers), custom: Default::default() }
    }

    /// Whether `name` resolves (A records) to `ip`, asked of `servers` (empty: the runtime's). Failures and
    /// timeouts are "no".
    pub(crate) async fn resolves_to(&self, name: &str, ip: Ipv4Addr, servers: &[Ipv4Addr]) -> bool {
        let custom;
        let resolver = if servers.is_empty() {
            self.resolver.clone()
        } else {
            let mut cache = self.custom.lock().unwrap_or_else(|e| e.into_inner());
            if cache.len() >= MAX_CUSTOM {
                cache.clear();
            }
            custom = match cache.get(servers) {
                Some(r) => Some(r.clone()),
                None => build(servers).inspect(|r| {
                    cache.insert(servers.to_vec(), r.clone());
                }),
            };
            custom
        };
        let Some(resolver) = resolver else { return false };
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

fn build(servers: &[Ipv4Addr]) -> Option<TokioResolver> {
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
    built.map_err(|e| tracing::warn!(error = %e, "egress gateway: no DNS resolver; named connections are refused")).ok()
}
