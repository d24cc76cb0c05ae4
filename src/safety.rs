//! Where Herald may send (SPEC §6): `https://` only unless `dev`/`allow_http`, and never to
//! loopback, private, link-local, CGNAT, multicast or unspecified addresses unless they are
//! in `allowed_cidrs` or `dev` is on. Checked when a webhook is created or edited (literal
//! IPs, and hostnames resolved with a 2-second limit), and again at connect time by the
//! sender, so a name that later resolves elsewhere is still refused.

use futures_util::future::LocalBoxFuture;
use ipnet::IpNet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

/// Longest accepted target URL.
pub const MAX_URL_BYTES: usize = 2048;
/// How long a create/edit waits for DNS.
pub const RESOLVE_TIMEOUT: Duration = Duration::from_secs(2);

/// What targets are allowed, and how names are resolved to check them.
#[derive(Debug, Clone, Default)]
pub struct TargetPolicy {
    pub dev: bool,
    pub allow_http: bool,
    pub allowed_cidrs: Vec<IpNet>,
    /// Resolves names, at create time and at connect time alike.
    pub lookup: Lookup,
}

/// Name resolution, swappable (the system's DNS by default).
pub trait HostLookup: Send + Sync + 'static {
    fn lookup(&self, host: &str, port: u16) -> LocalBoxFuture<'_, std::io::Result<Vec<SocketAddr>>>;
}

/// The system's resolver, through tokio.
pub struct SystemLookup;

impl HostLookup for SystemLookup {
    fn lookup(&self, host: &str, port: u16) -> LocalBoxFuture<'_, std::io::Result<Vec<SocketAddr>>> {
        let target = format!("{host}:{port}");
        Box::pin(async move { Ok(tokio::net::lookup_host(target).await?.collect()) })
    }
}

/// A hosts file (`<address> <name>…` per line, `#` comments) read again at every lookup,
/// in front of the system's resolver: what `HERALD_HOSTS_FILE` names. Operators pin names
/// with it; the tests use it to make a name resolve elsewhere between a webhook's creation
/// and its delivery (DNS rebinding).
pub struct HostsFile(pub std::path::PathBuf);

impl HostsFile {
    fn find(&self, host: &str) -> Vec<IpAddr> {
        let text = std::fs::read_to_string(&self.0).unwrap_or_default();
        let mut found = Vec::new();
        for line in text.lines() {
            let mut words = line.split('#').next().unwrap_or("").split_whitespace();
            let Some(ip) = words.next().and_then(|w| w.parse::<IpAddr>().ok()) else { continue };
            if words.any(|name| name.eq_ignore_ascii_case(host)) {
                found.push(ip);
            }
        }
        found
    }
}

impl HostLookup for HostsFile {
    fn lookup(&self, host: &str, port: u16) -> LocalBoxFuture<'_, std::io::Result<Vec<SocketAddr>>> {
        let pinned = self.find(host);
        if !pinned.is_empty() {
            return Box::pin(std::future::ready(Ok(pinned.into_iter().map(|ip| SocketAddr::new(ip, port)).collect())));
        }
        SystemLookup.lookup(host, port)
    }
}

/// A shared [`HostLookup`].
#[derive(Clone)]
pub struct Lookup(pub Arc<dyn HostLookup>);

impl Lookup {
    pub fn new(lookup: impl HostLookup) -> Self {
        Self(Arc::new(lookup))
    }
}

impl Default for Lookup {
    fn default() -> Self {
        Self::new(SystemLookup)
    }
}

impl std::fmt::Debug for Lookup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Lookup")
    }
}

/// Why a target is refused; the message is safe to show the caller.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Refused(pub String);

/// Whether an address is in a range no webhook may reach by default.
pub fn is_forbidden(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => forbidden_v4(v4),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => forbidden_v4(v4),
            None => forbidden_v6(v6),
        },
    }
}

fn forbidden_v4(ip: Ipv4Addr) -> bool {
    let o = ip.octets();
    ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local()
        || ip.is_multicast()
        || ip.is_unspecified()
        || ip.is_broadcast()
        || ip.is_documentation()
        || o[0] == 0
        || (o[0] == 100 && (o[1] & 0xc0) == 64) // CGNAT 100.64.0.0/10
        || (o[0] == 192 && o[1] == 0 && o[2] == 0) // IETF protocol assignments
        || o[0] >= 240 // reserved
}

fn forbidden_v6(ip: Ipv6Addr) -> bool {
    let s = ip.segments();
    ip.is_loopback()
        || ip.is_unspecified()
        || ip.is_multicast()
        || (s[0] & 0xfe00) == 0xfc00 // unique local fc00::/7
        || (s[0] & 0xffc0) == 0xfe80 // link-local fe80::/10
        || (s[0] == 0x64 && s[1] == 0xff9b) // NAT64 64:ff9b::/96 can reach IPv4 private space
        || (s[0] == 0x2001 && s[1] == 0xdb8) // documentation
}

impl TargetPolicy {
    /// Whether `ip` may be a target under this policy.
    pub fn allows_ip(&self, ip: IpAddr) -> bool {
        self.dev || !is_forbidden(ip) || self.allowed_cidrs.iter().any(|net| net.contains(&ip))
    }

    /// Checks a URL's form and scheme, and a literal IP host. Returns the parsed URL.
    pub fn check_url(&self, raw: &str) -> Result<url::Url, Refused> {
        if raw.len() > MAX_URL_BYTES {
            return Err(Refused(format!("must be at most {MAX_URL_BYTES} bytes")));
        }
        let url = url::Url::parse(raw).map_err(|e| Refused(format!("not a URL: {e}")))?;
        match url.scheme() {
            "https" => {}
            "http" if self.dev || self.allow_http => {}
            "http" => return Err(Refused("must be https:// (http:// needs --dev or allow_http)".into())),
            other => return Err(Refused(format!("scheme {other}: is not http(s)"))),
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(Refused("must not carry credentials; use a custom header".into()));
        }
        match url.host() {
            None => return Err(Refused("has no host".into())),
            Some(url::Host::Ipv4(ip)) if !self.allows_ip(IpAddr::V4(ip)) => {
                return Err(Refused(format!("{ip} is a private or reserved address")))
            }
            Some(url::Host::Ipv6(ip)) if !self.allows_ip(IpAddr::V6(ip)) => {
                return Err(Refused(format!("{ip} is a private or reserved address")))
            }
            _ => {}
        }
        Ok(url)
    }

    /// The full create-time check: [`TargetPolicy::check_url`], then, for a hostname, its
    /// addresses (resolved within [`RESOLVE_TIMEOUT`]): any forbidden answer refuses; a name
    /// that does not resolve (yet) is accepted — the connect-time check still applies.
    pub async fn check_target(&self, raw: &str) -> Result<url::Url, Refused> {
        let url = self.check_url(raw)?;
        if self.dev {
            return Ok(url);
        }
        if let Some(url::Host::Domain(name)) = url.host() {
            let port = url.port_or_known_default().unwrap_or(443);
            let lookup = self.lookup.0.lookup(name, port);
            if let Ok(Ok(addrs)) = tokio::time::timeout(RESOLVE_TIMEOUT, lookup).await {
                for addr in addrs {
                    if !self.allows_ip(addr.ip()) {
                        return Err(Refused(format!(
                            "{name} resolves to {}, a private or reserved address",
                            addr.ip()
                        )));
                    }
                }
            }
        }
        Ok(url)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn private_and_reserved_ranges_are_forbidden() {
        for bad in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "224.0.0.1",
            "0.0.0.0",
            "255.255.255.255",
            "::1",
            "::",
            "fc00::1",
            "fe80::1",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
            "64:ff9b::a00:1",
        ] {
            assert!(is_forbidden(bad.parse().unwrap()), "{bad}");
        }
        for good in ["93.184.216.34", "1.1.1.1", "2606:4700:4700::1111", "100.128.0.1"] {
            assert!(!is_forbidden(good.parse().unwrap()), "{good}");
        }
    }

    #[test]
    fn urls_are_checked_by_scheme_host_and_length() {
        let strict = TargetPolicy::default();
        assert!(strict.check_url("https://hooks.example.com/in").is_ok());
        for bad in [
            "http://hooks.example.com/in",
            "ftp://hooks.example.com",
            "https://10.0.0.5/in",
            "https://[::1]/in",
            "https://user:pw@hooks.example.com/",
            "not a url",
            "https://",
            "https://exa mple.com/",
        ] {
            assert!(strict.check_url(bad).is_err(), "{bad}");
        }
        assert!(strict.check_url(&format!("https://a.example.com/{}", "x".repeat(MAX_URL_BYTES))).is_err());
        let allowed = TargetPolicy { allowed_cidrs: vec!["10.0.0.0/8".parse().unwrap()], ..Default::default() };
        assert!(allowed.check_url("https://10.0.0.5/in").is_ok());
        let dev = TargetPolicy { dev: true, ..Default::default() };
        assert!(dev.check_url("http://127.0.0.1:9000/in").is_ok());
    }
}
