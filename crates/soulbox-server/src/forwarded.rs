//! Who the client is when the server sits behind a reverse proxy (`[http] trusted_proxies`).
//!
//! `X-Forwarded-For`, `-Proto` and `-Host` are believed only from a peer whose address is in the trusted list;
//! from any other peer they (and RFC 7239 `Forwarded`) are removed before the app sees the request, so no code
//! downstream — nor a sandbox's own service — can mistake a client's claim for the proxy's.
//!
//! The client's address is the rightmost `X-Forwarded-For` entry that is not itself a trusted proxy (each proxy
//! appends the address it saw; entries left of an untrusted one were written by the client and prove nothing).
//!
//! `X-Forwarded-Host` never routes. Routing (`<port>-<id>.<domain>`) reads `Host` only, which a client sets
//! freely anyway; letting the forwarded header route too would let a client reach, through a proxy that passes
//! that header on untouched, a route the proxy itself does not forward (a proxy that exposes only
//! `api.<domain>` would then expose every sandbox port). It only names the host in URLs the server hands back.

use std::net::IpAddr;

use http::HeaderMap;

const FORWARDED_HEADERS: [&str; 4] = ["x-forwarded-for", "x-forwarded-proto", "x-forwarded-host", "forwarded"];

#[derive(Debug, thiserror::Error)]
#[error("trusted_proxies: {0:?} is not an address or address/prefix-length")]
pub struct BadProxyEntry(pub String);

/// The `[http] trusted_proxies` list: addresses and CIDR ranges, IPv4 or IPv6.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrustedProxies(Vec<(IpAddr, u8)>);

impl TrustedProxies {
    pub fn parse<S: AsRef<str>>(entries: &[S]) -> Result<TrustedProxies, BadProxyEntry> {
        let mut ranges = Vec::with_capacity(entries.len());
        for entry in entries {
            let raw = entry.as_ref().trim();
            let bad = || BadProxyEntry(raw.to_owned());
            let (addr, len) = match raw.split_once('/') {
                Some((a, l)) => (a, Some(l)),
                None => (raw, None),
            };
            let addr: IpAddr = addr.parse().map_err(|_| bad())?;
            let addr = canonical(addr);
            let max = if addr.is_ipv4() { 32 } else { 128 };
            let len = match len {
                Some(l) => l.parse::<u8>().ok().filter(|l| *l <= max).ok_or_else(bad)?,
                None => max,
            };
            ranges.push((addr, len));
        }
        Ok(TrustedProxies(ranges))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        self.0.iter().any(|&(net, len)| in_range(ip, net, len))
    }
}

/// An IPv4-mapped IPv6 address (a dual-stack listener's view of an IPv4 peer) as the IPv4 address it is.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

fn in_range(ip: IpAddr, net: IpAddr, len: u8) -> bool {
    match (ip, net) {
        (IpAddr::V4(ip), IpAddr::V4(net)) => {
            let mask = u32::MAX.checked_shl(32 - u32::from(len)).unwrap_or(0);
            u32::from(ip) & mask == u32::from(net) & mask
        }
        (IpAddr::V6(ip), IpAddr::V6(net)) => {
            let mask = u128::MAX.checked_shl(128 - u32::from(len)).unwrap_or(0);
            u128::from(ip) & mask == u128::from(net) & mask
        }
        _ => false,
    }
}

/// The client as the server believes it to be: put in every request's extensions by the HTTP front.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientOrigin {
    /// The client's address: the peer's, or the one a trusted proxy forwarded.
    pub addr: IpAddr,
    /// The client spoke HTTPS: to this server's TLS, or to a trusted proxy that said so.
    pub https: bool,
    /// The host the client asked for (`X-Forwarded-Host` from a trusted proxy, else `Host`): for URLs only.
    pub host: Option<String>,
    /// The peer is a trusted proxy.
    pub via_proxy: bool,
}

impl ClientOrigin {
    /// The client is a process on this machine talking to the server directly (not through a proxy).
    pub fn is_local(&self) -> bool {
        !self.via_proxy && self.addr.is_loopback()
    }

    /// `https` or `http`, for URLs handed back to this client.
    pub fn scheme(&self) -> &'static str {
        if self.https { "https" } else { "http" }
    }
}

/// Decides who the client is, and removes forwarding headers a peer had no standing to send. `authority`: the
/// request target's (HTTP/2 sends the host there instead of in `Host`).
pub fn resolve(
    peer: IpAddr,
    tls: bool,
    authority: Option<&str>,
    headers: &mut HeaderMap,
    trusted: &TrustedProxies,
) -> ClientOrigin {
    let peer = canonical(peer);
    if !trusted.contains(peer) {
        for name in FORWARDED_HEADERS {
            headers.remove(name);
        }
        let host = header_str(headers, http::header::HOST.as_str()).or(authority).map(str::to_owned);
        return ClientOrigin { addr: peer, https: tls, host, via_proxy: false };
    }
    let addr = forwarded_client(peer, headers, trusted);
    // The nearest proxy's word: the last value of each header (a proxy that appends rather than replaces puts
    // its own at the end).
    let https = match last_value(headers, "x-forwarded-proto") {
        Some(p) if p.eq_ignore_ascii_case("https") => true,
        Some(p) if p.eq_ignore_ascii_case("http") => false,
        _ => tls,
    };
    let host = last_value(headers, "x-forwarded-host")
        .filter(|h| !h.is_empty())
        .or_else(|| header_str(headers, http::header::HOST.as_str()))
        .or(authority)
        .map(str::to_owned);
    ClientOrigin { addr, https, host, via_proxy: true }
}

fn header_str<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

fn last_value<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    let last = headers.get_all(name).iter().filter_map(|v| v.to_str().ok()).next_back()?;
    last.rsplit(',').next().map(str::trim)
}

/// The rightmost `X-Forwarded-For` address that is not a trusted proxy; the peer when the header is absent or
/// an entry does not parse (nothing beyond a garbled hop can be vouched for).
fn forwarded_client(peer: IpAddr, headers: &HeaderMap, trusted: &TrustedProxies) -> IpAddr {
    let entries: Vec<&str> = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .collect();
    let mut client = peer;
    for entry in entries.iter().rev() {
        let Some(ip) = parse_forwarded_addr(entry) else { return client };
        client = canonical(ip);
        if !trusted.contains(client) {
            break;
        }
    }
    client
}

/// An address as proxies write it: `1.2.3.4`, `2001:db8::1`, `[2001:db8::1]`, `1.2.3.4:5678`, `[::1]:5678`.
fn parse_forwarded_addr(entry: &str) -> Option<IpAddr> {
    if let Ok(ip) = entry.parse() {
        return Some(ip);
    }
    if let Some(rest) = entry.strip_prefix('[') {
        return rest.split(']').next()?.parse().ok();
    }
    entry.parse::<std::net::SocketAddr>().ok().map(|s| s.ip())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hdrs(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(http::HeaderName::from_bytes(k.as_bytes()).unwrap(), v.parse().unwrap());
        }
        h
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn parses_ranges_and_refuses_garbage() {
        let t = TrustedProxies::parse(&["127.0.0.1/32", "10.0.0.0/8", "::1", "fd00::/8"]).unwrap();
        assert!(t.contains(ip("127.0.0.1")));
        assert!(!t.contains(ip("127.0.0.2")));
        assert!(t.contains(ip("10.200.3.4")));
        assert!(!t.contains(ip("11.0.0.1")));
        assert!(t.contains(ip("::1")));
        assert!(t.contains(ip("fd12::1")));
        assert!(t.contains(ip("::ffff:10.1.2.3")), "an IPv4-mapped peer is its IPv4 address");
        assert!(TrustedProxies::parse(&["0.0.0.0/0"]).unwrap().contains(ip("8.8.8.8")));
        for bad in ["10.0.0.0/33", "10.0.0/8", "example.com", "::1/129", "10.0.0.0/-1", ""] {
            assert!(TrustedProxies::parse(&[bad]).is_err(), "{bad:?}");
        }
        assert!(TrustedProxies::default().is_empty());
    }

    #[test]
    fn an_untrusted_peer_gets_no_say_and_its_headers_are_removed() {
        let trusted = TrustedProxies::parse(&["127.0.0.1"]).unwrap();
        let mut h = hdrs(&[
            ("host", "api.sb.test"),
            ("x-forwarded-for", "127.0.0.1"),
            ("x-forwarded-proto", "https"),
            ("x-forwarded-host", "8080-iabc.sb.test"),
            ("forwarded", "for=127.0.0.1;proto=https"),
        ]);
        let o = resolve(ip("198.51.100.9"), false, None, &mut h, &trusted);
        assert_eq!(
            o,
            ClientOrigin { addr: ip("198.51.100.9"), https: false, host: Some("api.sb.test".into()), via_proxy: false }
        );
        assert!(!o.is_local());
        for name in FORWARDED_HEADERS {
            assert!(!h.contains_key(name), "{name} must be removed");
        }
        // Nothing trusted at all (the default): the same for every peer, loopback included.
        let mut h = hdrs(&[("x-forwarded-for", "203.0.113.7")]);
        let o = resolve(ip("127.0.0.1"), true, None, &mut h, &TrustedProxies::default());
        assert_eq!((o.addr, o.https, o.is_local()), (ip("127.0.0.1"), true, true));
        assert!(h.is_empty());
        // HTTP/2: the host comes in the request target.
        let o = resolve(ip("127.0.0.1"), true, Some("api.sb.test"), &mut HeaderMap::new(), &TrustedProxies::default());
        assert_eq!(o.host.as_deref(), Some("api.sb.test"));
    }

    #[test]
    fn a_trusted_proxy_names_the_client() {
        let trusted = TrustedProxies::parse(&["127.0.0.1/32", "10.1.0.0/16"]).unwrap();
        // The client forged the leftmost entry; the proxies appended what they saw.
        let mut h = hdrs(&[
            ("host", "api.sb.test"),
            ("x-forwarded-for", "1.1.1.1, 198.51.100.4"),
            ("x-forwarded-for", "10.1.2.3"),
            ("x-forwarded-proto", "https"),
        ]);
        let o = resolve(ip("127.0.0.1"), false, None, &mut h, &trusted);
        assert_eq!(o.addr, ip("198.51.100.4"), "the rightmost untrusted entry");
        assert!(o.https && o.via_proxy && !o.is_local());
        assert_eq!(o.scheme(), "https");
        assert_eq!(o.host.as_deref(), Some("api.sb.test"));
        assert!(h.contains_key("x-forwarded-for"), "a trusted proxy's headers stay for the app");

        let mut h = hdrs(&[("x-forwarded-for", "[2001:db8::5]:4711"), ("x-forwarded-host", "a.sb.test, api.sb.test")]);
        let o = resolve(ip("::ffff:127.0.0.1"), true, None, &mut h, &trusted);
        assert_eq!(o.addr, ip("2001:db8::5"));
        assert_eq!(o.host.as_deref(), Some("api.sb.test"), "the nearest proxy's host");

        // A garbled entry: nothing left of it is believed; the last good hop is the client.
        let mut h = hdrs(&[("x-forwarded-for", "1.1.1.1, garbage, 10.1.0.9")]);
        assert_eq!(resolve(ip("127.0.0.1"), false, None, &mut h, &trusted).addr, ip("10.1.0.9"));
        // Only proxies in the chain: the leftmost is as far as it goes. No header: the peer.
        let mut h = hdrs(&[("x-forwarded-for", "10.1.0.8, 10.1.0.9")]);
        assert_eq!(resolve(ip("127.0.0.1"), false, None, &mut h, &trusted).addr, ip("10.1.0.8"));
        let mut h = hdrs(&[("x-forwarded-proto", "gopher")]);
        let o = resolve(ip("127.0.0.1"), true, None, &mut h, &trusted);
        assert_eq!((o.addr, o.https), (ip("127.0.0.1"), true), "an unknown proto keeps the connection's");
        assert!(!o.is_local(), "a request through a proxy is never local, whatever the proxy's address");
    }
}
