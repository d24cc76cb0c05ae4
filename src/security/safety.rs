//! Where Herald may send (contract §6): `https://` only unless `dev`/`allow_http`, and never to
//! an address that the IANA special-purpose registries mark as not globally reachable
//! (loopback, private, link-local, CGNAT, benchmarking, documentation, …: [`SPECIAL`], one
//! table for both families) or to multicast, unless it is in `allowed_cidrs` or `dev` is
//! on. Checked when a webhook is created or edited (literal IPs, names that mean loopback by
//! definition, and hostnames resolved with a 2-second limit), and again at connect time by
//! the sender, so a name that later resolves elsewhere is still refused.
//!
//! Invariants:
//! - An IPv6 address that carries an IPv4 one (IPv4-mapped, IPv4-compatible, 6to4, NAT64's
//!   well-known prefix) is judged as that IPv4 address, by the table and by
//!   `allowed_cidrs` alike ([`canonical`]): `[::127.0.0.1]` and `[2002:7f00:1::]` are
//!   loopback.
//! - The most specific table entry decides, so the registry's reachable exceptions inside a
//!   forbidden block stay reachable.

use futures_util::future::LocalBoxFuture;
use ipnet::IpNet;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
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

/// One entry of the special-purpose address table: a prefix, what IANA calls it, and
/// whether its registry marks it globally reachable. The most specific entry that contains
/// an address decides, so the registry's reachable exceptions inside a forbidden block
/// (`192.0.0.9/32` in `192.0.0.0/24`, `2001:3::/32` in `2001::/23`) stay reachable.
#[derive(Debug, Clone, Copy)]
struct Special {
    net: &'static str,
    name: &'static str,
    global: bool,
}

const fn special(net: &'static str, name: &'static str, global: bool) -> Special {
    Special { net, name, global }
}

/// The IANA IPv4 and IPv6 Special-Purpose Address Registries (as of 2025, RFC 6890 and its
/// updates), plus the multicast blocks (their own registries; never a webhook target).
/// Blocks that embed an IPv4 address (IPv4-mapped, IPv4-compatible, 6to4, the NAT64
/// well-known prefix) are not here: [`canonical`] replaces such an address by the IPv4
/// address it carries before the table is asked.
const SPECIAL: &[Special] = &[
    special("0.0.0.0/8", "\"this network\"", false),
    special("10.0.0.0/8", "private-use", false),
    special("100.64.0.0/10", "shared address space (CGNAT)", false),
    special("127.0.0.0/8", "loopback", false),
    special("169.254.0.0/16", "link-local", false),
    special("172.16.0.0/12", "private-use", false),
    special("192.0.0.0/24", "IETF protocol assignments", false),
    special("192.0.0.9/32", "port control protocol anycast", true),
    special("192.0.0.10/32", "traversal using relays around NAT anycast", true),
    special("192.0.2.0/24", "documentation (TEST-NET-1)", false),
    special("192.31.196.0/24", "AS112-v4", true),
    special("192.52.193.0/24", "automatic multicast tunneling", true),
    special("192.88.99.0/24", "deprecated 6to4 relay anycast", false),
    special("192.168.0.0/16", "private-use", false),
    special("192.175.48.0/24", "direct delegation AS112 service", true),
    special("198.18.0.0/15", "benchmarking", false),
    special("198.51.100.0/24", "documentation (TEST-NET-2)", false),
    special("203.0.113.0/24", "documentation (TEST-NET-3)", false),
    special("224.0.0.0/4", "multicast", false),
    special("240.0.0.0/4", "reserved", false),
    special("255.255.255.255/32", "limited broadcast", false),
    special("::/128", "unspecified", false),
    special("::1/128", "loopback", false),
    special("::/8", "reserved by IETF", false),
    special("64:ff9b:1::/48", "local-use IPv4/IPv6 translation", false),
    special("100::/64", "discard-only", false),
    special("100:0:0:1::/64", "dummy IPv6 prefix", false),
    special("2001::/23", "IETF protocol assignments", false),
    special("2001::/32", "Teredo", false),
    special("2001:1::1/128", "port control protocol anycast", true),
    special("2001:1::2/128", "traversal using relays around NAT anycast", true),
    special("2001:1::3/128", "DNS-SD service registration protocol anycast", true),
    special("2001:2::/48", "benchmarking", false),
    special("2001:3::/32", "automatic multicast tunneling", true),
    special("2001:4:112::/48", "AS112-v6", true),
    special("2001:10::/28", "deprecated ORCHID", false),
    special("2001:20::/28", "ORCHIDv2", true),
    special("2001:30::/28", "drone remote ID protocol entity tags", true),
    special("2001:db8::/32", "documentation", false),
    special("2620:4f:8000::/48", "direct delegation AS112 service", true),
    special("3fff::/20", "documentation", false),
    special("5f00::/16", "segment routing SIDs", false),
    special("fc00::/7", "unique-local", false),
    special("fe80::/10", "link-local", false),
    special("fec0::/10", "deprecated site-local", false),
    special("ff00::/8", "multicast", false),
];

/// Why an address may not be a target by default: the special-purpose block it is in, and
/// the IPv4 address an embedding form carried.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Forbidden {
    /// The block's name in the registry, e.g. `loopback`.
    pub block: &'static str,
    /// The address judged, when it is not the one given (`::ffff:127.0.0.1` → `127.0.0.1`).
    pub embedded: Option<IpAddr>,
}

impl std::fmt::Display for Forbidden {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.embedded {
            Some(inner) => write!(f, "carries {inner}, a {} address", self.block),
            None => write!(f, "is a {} address", self.block),
        }
    }
}

/// The address a packet to `ip` is really for: the IPv4 address inside an IPv4-mapped
/// (`::ffff:a.b.c.d`), IPv4-compatible (`::a.b.c.d`), 6to4 (`2002:aabb:ccdd::/48`) or
/// NAT64 well-known-prefix (`64:ff9b::a.b.c.d`) IPv6 address; `ip` itself otherwise.
pub fn canonical(ip: IpAddr) -> IpAddr {
    let IpAddr::V6(v6) = ip else { return ip };
    let s = v6.segments();
    let low = |hi: u16, lo: u16| IpAddr::V4(Ipv4Addr::from((u32::from(hi) << 16) | u32::from(lo)));
    if let Some(v4) = v6.to_ipv4_mapped() {
        return IpAddr::V4(v4);
    }
    if s[..6] == [0; 6] && !(s[6] == 0 && s[7] <= 1) {
        return low(s[6], s[7]);
    }
    if s[0] == 0x2002 {
        return low(s[1], s[2]);
    }
    if s[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
        return low(s[6], s[7]);
    }
    ip
}

/// [`SPECIAL`] parsed once. An entry that does not parse is left out — and fails the unit
/// test that parses the table, so it never ships.
static TABLE: std::sync::LazyLock<Vec<(IpNet, &'static Special)>> =
    std::sync::LazyLock::new(|| SPECIAL.iter().filter_map(|e| Some((e.net.parse().ok()?, e))).collect());

/// The special-purpose verdict on an address (after [`canonical`]): `Some` if no webhook
/// may reach it by default.
pub fn forbidden(ip: IpAddr) -> Option<Forbidden> {
    let judged = canonical(ip);
    let (_, entry) = TABLE.iter().filter(|(n, _)| n.contains(&judged)).max_by_key(|(n, _)| n.prefix_len())?;
    (!entry.global).then_some(Forbidden { block: entry.name, embedded: (judged != ip).then_some(judged) })
}

/// Whether an address is in a range no webhook may reach by default.
pub fn is_forbidden(ip: IpAddr) -> bool {
    forbidden(ip).is_some()
}

/// Host names that mean this machine by definition (RFC 6761 `localhost` and its
/// subdomains, and the names every Linux hosts file gives loopback), with or without the
/// root's trailing dot. They are refused whatever DNS says.
pub fn is_loopback_name(host: &str) -> bool {
    let host = host.strip_suffix('.').unwrap_or(host).to_ascii_lowercase();
    host == "localhost"
        || host.ends_with(".localhost")
        || matches!(host.as_str(), "localhost.localdomain" | "ip6-localhost" | "ip6-loopback")
}

impl TargetPolicy {
    /// Why `ip` may not be a target under this policy, if it may not. An embedding form is
    /// judged as the address it carries, by `allowed_cidrs` too.
    pub fn refuses_ip(&self, ip: IpAddr) -> Option<Forbidden> {
        if self.dev {
            return None;
        }
        let why = forbidden(ip)?;
        let judged = canonical(ip);
        let allowed = self.allowed_cidrs.iter().any(|net| net.contains(&judged) || net.contains(&ip));
        (!allowed).then_some(why)
    }

    /// Whether `ip` may be a target under this policy.
    pub fn allows_ip(&self, ip: IpAddr) -> bool {
        self.refuses_ip(ip).is_none()
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
        let ip = match url.host() {
            None => return Err(Refused("has no host".into())),
            Some(url::Host::Ipv4(ip)) => IpAddr::V4(ip),
            Some(url::Host::Ipv6(ip)) => IpAddr::V6(ip),
            Some(url::Host::Domain(name)) => {
                if !self.dev && is_loopback_name(name) {
                    return Err(Refused(format!("{name} names this machine (loopback)")));
                }
                return Ok(url);
            }
        };
        match self.refuses_ip(ip) {
            Some(why) => Err(Refused(format!("{ip} {why}"))),
            None => Ok(url),
        }
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
                    if let Some(why) = self.refuses_ip(addr.ip()) {
                        return Err(Refused(format!("{name} resolves to {}, which {why}", addr.ip())));
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
    fn the_table_parses_and_every_block_is_judged_by_its_own_entry() {
        assert_eq!(TABLE.len(), SPECIAL.len(), "every entry parses");
        for e in SPECIAL {
            let n: IpNet = e.net.parse().unwrap_or_else(|_| panic!("{} parses", e.net));
            assert_eq!(n.trunc(), n, "{} is a network address", e.net);
            // The block's first address is judged by this entry or a more specific one.
            let first = n.network();
            if canonical(first) == first {
                let judged = SPECIAL
                    .iter()
                    .filter(|o| o.net.parse::<IpNet>().unwrap().contains(&first))
                    .max_by_key(|o| o.net.parse::<IpNet>().unwrap().prefix_len())
                    .unwrap();
                assert!(judged.net.parse::<IpNet>().unwrap().prefix_len() >= n.prefix_len(), "{}", e.net);
            }
        }
    }

    #[test]
    fn private_and_reserved_ranges_are_forbidden() {
        for bad in [
            "127.0.0.1",
            "127.255.255.254",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "224.0.0.1",
            "0.0.0.0",
            "0.1.2.3",
            "255.255.255.255",
            "198.18.0.1",
            "198.19.255.255",
            "192.0.0.8",
            "192.0.2.1",
            "198.51.100.7",
            "203.0.113.9",
            "192.88.99.1",
            "240.0.0.1",
            "::1",
            "::",
            "fc00::1",
            "fd12:3456::1",
            "fe80::1",
            "fec0::1",
            "ff02::1",
            "100::1",
            "2001:db8::1",
            "3fff::1",
            "2001::1",
            "2001:2::1",
            "64:ff9b:1::1",
            // Embedded forms of forbidden IPv4 addresses.
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
            "::127.0.0.1",
            "::10.0.0.1",
            "2002:7f00:1::",
            "2002:a00:1::5",
            "2002:c0a8:101::1",
            "2002:a9fe:a9fe::",
            "64:ff9b::7f00:1",
            "64:ff9b::a00:1",
            "64:ff9b::c612:1",
            "::ffff:0:7f00:1",
        ] {
            assert!(is_forbidden(bad.parse().unwrap()), "{bad}");
        }
        for good in [
            "93.184.216.34",
            "1.1.1.1",
            "100.128.0.1",
            "198.20.0.1",
            "192.0.0.9",
            "192.31.196.1",
            "2606:4700:4700::1111",
            "2001:3::1",
            "2001:20::1",
            // Embedded forms of public IPv4 addresses are judged as those.
            "::ffff:93.184.216.34",
            "2002:5db8:d822::1",
            "64:ff9b::5db8:d822",
        ] {
            assert!(!is_forbidden(good.parse().unwrap()), "{good}");
        }
    }

    #[test]
    fn embedded_forms_are_judged_as_the_address_they_carry() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert_eq!(canonical(ip("::ffff:10.1.2.3")), ip("10.1.2.3"));
        assert_eq!(canonical(ip("::127.0.0.1")), ip("127.0.0.1"));
        assert_eq!(canonical(ip("2002:7f00:1::")), ip("127.0.0.1"));
        assert_eq!(canonical(ip("64:ff9b::a00:1")), ip("10.0.0.1"));
        assert_eq!(canonical(ip("::1")), ip("::1"));
        assert_eq!(canonical(ip("2606:4700::1")), ip("2606:4700::1"));
        let why = forbidden(ip("2002:7f00:1::")).unwrap();
        assert_eq!(why.to_string(), "carries 127.0.0.1, a loopback address");
        // allowed_cidrs sees the carried address too.
        let policy = TargetPolicy { allowed_cidrs: vec!["10.0.0.0/8".parse().unwrap()], ..Default::default() };
        for ok in ["10.1.2.3", "::ffff:10.1.2.3", "2002:a01:203::", "64:ff9b::a01:203"] {
            assert!(policy.allows_ip(ip(ok)), "{ok}");
        }
        assert!(!policy.allows_ip(ip("::ffff:127.0.0.1")));
    }

    #[test]
    fn loopback_names_are_refused_unless_dev() {
        let strict = TargetPolicy::default();
        for name in [
            "localhost",
            "localhost.",
            "LocalHost",
            "api.localhost",
            "a.b.localhost.",
            "localhost.localdomain",
            "ip6-localhost",
            "ip6-loopback",
        ] {
            assert!(is_loopback_name(name), "{name}");
            let e = strict.check_url(&format!("https://{name}/in")).unwrap_err();
            assert!(e.0.contains("loopback"), "{name}: {e}");
        }
        for name in ["localhost.example.com", "mylocalhost", "example.com"] {
            assert!(!is_loopback_name(name), "{name}");
        }
        let dev = TargetPolicy { dev: true, ..Default::default() };
        assert!(dev.check_url("http://localhost:9000/in").is_ok());
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
            "https://[::127.0.0.1]/in",
            "https://[2002:7f00:1::]/in",
            "https://[::ffff:169.254.169.254]/in",
            "https://[64:ff9b::a9fe:a9fe]/in",
            "https://198.18.0.1/in",
            "https://127.0.0.1./in",
            "https://0x7f.1/in",
            "https://2130706433/in",
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
