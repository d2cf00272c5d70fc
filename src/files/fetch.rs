//! Fetching an input from a URL: http and https only, under a size cap and a time limit, and
//! never into the site's own network. Every host is resolved first and refused if any of its
//! addresses is loopback, private, link-local or otherwise internal, unless an allow-list entry
//! covers it; the connection then goes to exactly the addresses that were checked, so a
//! second DNS answer cannot point it elsewhere. Redirects are followed by hand, each hop
//! checked the same way.

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use reqwest::Url;

/// How many redirects a fetch follows.
const MAX_REDIRECTS: usize = 5;

/// What a fetch may do.
#[derive(Debug, Clone)]
pub struct FetchPolicy {
    pub max_bytes: u64,
    pub timeout: Duration,
    /// Internal addresses that may be fetched anyway.
    pub allow: Vec<Cidr>,
}

/// An address block: an IP and how many leading bits must match.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    ip: IpAddr,
    bits: u8,
}

impl Cidr {
    /// Reads `10.0.0.0/8`, `::1` or `127.0.0.1` (a single address).
    pub fn parse(text: &str) -> anyhow::Result<Self> {
        let text = text.trim();
        let (ip, bits) = match text.split_once('/') {
            Some((ip, bits)) => (ip, Some(bits)),
            None => (text, None),
        };
        let ip: IpAddr = ip.parse().context("not an IP address")?;
        let max = if ip.is_ipv4() { 32 } else { 128 };
        let bits = match bits {
            Some(bits) => bits.parse::<u8>().context("not a prefix length")?,
            None => max,
        };
        if bits > max {
            bail!("the prefix length is more than {max}");
        }
        Ok(Cidr { ip, bits })
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        let bits = u32::from(self.bits);
        match (self.ip, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX.checked_shl(32 - bits).unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX.checked_shl(128 - bits).unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

/// Whether an address belongs to a private network rather than the internet: loopback,
/// private, link-local (cloud metadata lives there), shared, unspecified, multicast; for IPv6
/// also unique-local and site-local, and every form that carries an IPv4 address a router or
/// the host turns back into IPv4 (mapped, compatible, NAT64, 6to4, Teredo) when that address is
/// internal.
pub fn is_internal(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, ..] = v4.octets();
            v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || v4.is_multicast()
                || a == 0
                || (a == 100 && (b & 0xc0) == 64)
        }
        IpAddr::V6(v6) => {
            let first = v6.segments()[0];
            v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (first & 0xfe00) == 0xfc00
                || (first & 0xffc0) == 0xfe80
                || (first & 0xffc0) == 0xfec0
                || embedded_ipv4(v6)
                    .into_iter()
                    .any(|v4| is_internal(IpAddr::V4(v4)))
        }
    }
}

/// The IPv4 addresses an IPv6 address carries, by the standard ways of embedding one.
fn embedded_ipv4(v6: std::net::Ipv6Addr) -> Vec<std::net::Ipv4Addr> {
    use std::net::Ipv4Addr;
    let bits = u128::from(v6);
    let low = Ipv4Addr::from(bits as u32);
    let s = v6.segments();
    let mut found = Vec::new();
    // Mapped (::ffff:a.b.c.d) and the deprecated compatible form (::a.b.c.d).
    if bits >> 32 == 0xffff || bits >> 32 == 0 {
        found.push(low);
    }
    // NAT64: the well-known prefix 64:ff9b::/96 and the local-use 64:ff9b:1::/48.
    if bits >> 32 == 0x0064_ff9b_0000_0000_0000_0000 || bits >> 80 == 0x0064_ff9b_0001 {
        found.push(low);
    }
    // 6to4 (2002:AABB:CCDD::/48).
    if s[0] == 0x2002 {
        found.push(Ipv4Addr::from((u32::from(s[1]) << 16) | u32::from(s[2])));
    }
    // Teredo (2001:0::/32): the server's address, then the client's, stored inverted.
    if s[0] == 0x2001 && s[1] == 0 {
        found.push(Ipv4Addr::from((u32::from(s[2]) << 16) | u32::from(s[3])));
        found.push(Ipv4Addr::from(!(bits as u32)));
    }
    found
}

/// Checks that a submitted URL can be fetched at all; the message says why not.
pub fn check_url(url: &str) -> Result<Url, String> {
    let parsed = Url::parse(url.trim()).map_err(|err| format!("is not a URL: {err}"))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(format!(
            "must be an http or https URL, not `{}`",
            parsed.scheme()
        ));
    }
    if parsed.host_str().is_none_or(str::is_empty) {
        return Err("has no host".to_owned());
    }
    Ok(parsed)
}

/// Resolves the host of `url` and checks every address it has: one that is loopback, private
/// or link-local, and not covered by `allow`, refuses the URL (`what` says what the server
/// would have done, in the message). Returns the host as a connection names it and the
/// addresses, which the caller connects to and to nothing else.
pub async fn resolve_checked(
    allow: &[Cidr],
    url: &Url,
    what: &str,
) -> Result<(String, Vec<SocketAddr>), String> {
    let host = url.host_str().unwrap_or_default().to_owned();
    let port = url.port_or_known_default().unwrap_or(80);
    let bare_host = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_owned();
    let addresses: Vec<SocketAddr> = tokio::net::lookup_host((bare_host.as_str(), port))
        .await
        .map_err(|err| format!("the host `{host}` could not be resolved: {err}"))?
        .collect();
    if addresses.is_empty() {
        return Err(format!("the host `{host}` could not be resolved"));
    }
    for address in &addresses {
        let ip = address.ip();
        if is_internal(ip) && !allow.iter().any(|cidr| cidr.contains(ip)) {
            return Err(format!(
                "the host `{host}` resolves to {ip}, a loopback, private or link-local \
                 address, which this server does not {what}"
            ));
        }
    }
    Ok((bare_host, addresses))
}

/// Starts fetching `url`: resolves and checks each hop, follows redirects, and returns the
/// successful response, whose body the caller reads within `deadline`. The error says what
/// went wrong in words a user can act on.
pub async fn open(policy: &FetchPolicy, url: &str) -> Result<reqwest::Response, String> {
    let started = Instant::now();
    let mut url = check_url(url)?;
    for _ in 0..=MAX_REDIRECTS {
        let remaining = policy
            .timeout
            .checked_sub(started.elapsed())
            .ok_or_else(|| timed_out(policy))?;
        let (bare_host, addresses) = tokio::time::timeout(
            remaining,
            resolve_checked(&policy.allow, &url, "fetch from"),
        )
        .await
        .map_err(|_| timed_out(policy))??;
        let bare_host = bare_host.as_str();
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(remaining)
            .resolve_to_addrs(bare_host, &addresses)
            .user_agent(concat!("jobgraph/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|err| format!("the download could not start: {err}"))?;
        let response = client
            .get(url.clone())
            .send()
            .await
            .map_err(|err| describe(policy, &err))?;
        let status = response.status();
        if status.is_redirection() {
            let location = response
                .headers()
                .get(reqwest::header::LOCATION)
                .and_then(|v| v.to_str().ok())
                .ok_or_else(|| format!("the server answered {status} without a Location"))?;
            let next = url
                .join(location)
                .map_err(|err| format!("the server redirected to a bad URL: {err}"))?;
            url = check_url(next.as_str()).map_err(|err| format!("the redirect {err}"))?;
            continue;
        }
        if !status.is_success() {
            return Err(format!("the server answered {status}"));
        }
        if let Some(length) = response.content_length()
            && length > policy.max_bytes
        {
            return Err(too_large(policy.max_bytes));
        }
        return Ok(response);
    }
    Err(format!("more than {MAX_REDIRECTS} redirects"))
}

fn timed_out(policy: &FetchPolicy) -> String {
    format!(
        "the download did not finish within {} s",
        policy.timeout.as_secs()
    )
}

/// The message for a file over the cap.
pub fn too_large(max_bytes: u64) -> String {
    format!("the file is larger than the limit of {max_bytes} bytes")
}

/// Puts a transport error in words.
pub fn describe(policy: &FetchPolicy, err: &reqwest::Error) -> String {
    if err.is_timeout() {
        timed_out(policy)
    } else if err.is_connect() {
        format!("could not connect: {}", root_cause(err))
    } else {
        format!("the download failed: {}", root_cause(err))
    }
}

fn root_cause(err: &(dyn std::error::Error + 'static)) -> String {
    let mut cause = err;
    while let Some(source) = cause.source() {
        cause = source;
    }
    cause.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn internal_addresses_are_recognised() {
        for ip in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "0.0.0.0",
            "100.64.0.1",
            "::1",
            "fe80::1",
            "fd00::1",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
            "::7f00:1",
            "::127.0.0.1",
            "::a9fe:a9fe",
            "64:ff9b::7f00:1",
            "64:ff9b::10.0.0.1",
            "64:ff9b:1::a9fe:a9fe",
            "2002:7f00:1::1",
            "2002:a9fe:a9fe::",
            "2002:c0a8:101::1",
            // Teredo with the client 127.0.0.1 (stored inverted), then with the server 10.0.0.1.
            "2001:0:5db9:1:0:0:80ff:fffe",
            "2001:0:a00:1::",
            "fec0::1",
        ] {
            assert!(is_internal(ip.parse().unwrap()), "{ip}");
        }
        for ip in [
            "93.184.216.34",
            "2606:2800:220:1::1",
            "8.8.8.8",
            "::ffff:8.8.8.8",
            "64:ff9b::808:808",
            "2002:808:808::1",
            "2001:0:5db9:1::f7f7:f7f7",
        ] {
            assert!(!is_internal(ip.parse().unwrap()), "{ip}");
        }
    }

    #[test]
    fn allow_list_entries_match_blocks_and_single_addresses() {
        let block = Cidr::parse("10.0.0.0/8").unwrap();
        assert!(block.contains("10.9.9.9".parse().unwrap()));
        assert!(!block.contains("11.0.0.1".parse().unwrap()));
        let one = Cidr::parse("127.0.0.1").unwrap();
        assert!(one.contains("127.0.0.1".parse().unwrap()));
        assert!(!one.contains("127.0.0.2".parse().unwrap()));
        assert!(
            Cidr::parse("::1/128")
                .unwrap()
                .contains("::1".parse().unwrap())
        );
        assert!(
            Cidr::parse("0.0.0.0/0")
                .unwrap()
                .contains("1.2.3.4".parse().unwrap())
        );
        assert!(Cidr::parse("10.0.0.0/33").is_err());
        assert!(Cidr::parse("localhost").is_err());
    }

    #[test]
    fn only_http_and_https_urls_are_fetched() {
        assert!(check_url("https://example.org/a.fa").is_ok());
        assert!(check_url("file:///etc/passwd").is_err());
        assert!(check_url("ftp://example.org/a").is_err());
        assert!(check_url("not a url").is_err());
    }
}
