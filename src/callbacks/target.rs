//! Where callbacks may go: the URL rules checked when an app's callback URL is set
//! and again before each request, and which addresses are public — with
//! `callback_refuse_private` on, `http` connects to nothing else (SSRF:
//! whoever sets a callback URL could otherwise make the gateway POST into the
//! network it runs in).

use std::net::IpAddr;

use reqwest::Url;

/// Why a callback URL is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UrlError {
    #[error("callback URL is longer than {0} bytes")]
    TooLong(usize),
    #[error("callback URL is not a valid absolute URL: {0}")]
    Invalid(String),
    #[error("callback URL must be http:// or https://, not {0}://")]
    Scheme(String),
    #[error("callback URL must not carry a user name or password")]
    Credentials,
    #[error("callback URL has no host")]
    NoHost,
    #[error("callback URL points at a non-public address ({0}) and callback_refuse_private is on")]
    Private(IpAddr),
}

/// Checks a callback URL: at most `max_bytes`, absolute http(s) with a host and no
/// credentials, and, if `refuse_private`, not a literal non-public address (names
/// are checked when they resolve).
pub fn check(url: &str, max_bytes: usize, refuse_private: bool) -> Result<Url, UrlError> {
    if url.len() > max_bytes {
        return Err(UrlError::TooLong(max_bytes));
    }
    let parsed = Url::parse(url).map_err(|e| UrlError::Invalid(e.to_string()))?;
    match parsed.scheme() {
        "http" | "https" => {}
        other => return Err(UrlError::Scheme(crate::names::truncate(other, 16))),
    }
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Err(UrlError::Credentials);
    }
    let ip = literal_ip(&parsed).map_err(|_| UrlError::NoHost)?;
    if let Some(ip) = ip.filter(|ip| refuse_private && !is_public(*ip)) {
        return Err(UrlError::Private(ip));
    }
    Ok(parsed)
}

/// The host of `url` if it is an IP address literal (`Err` without a host).
fn literal_ip(url: &Url) -> Result<Option<IpAddr>, ()> {
    let host = url.host_str().filter(|h| !h.is_empty()).ok_or(())?;
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    Ok(bare.parse().ok())
}

/// Whether `ip` is a public unicast address (not loopback, private, link-local,
/// shared, documentation, multicast, unspecified or an IPv4-mapped one of those).
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            !(v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || v4.is_multicast()
                || v4.is_documentation()
                || o[0] == 0
                || (o[0] == 100 && (o[1] & 0xc0) == 64) // 100.64/10 shared
                || (o[0] == 192 && o[1] == 0 && o[2] == 0) // 192.0.0/24
                || (o[0] == 198 && (o[1] & 0xfe) == 18) // 198.18/15 benchmarking
                || o[0] >= 240)
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_public(IpAddr::V4(v4));
            }
            let s = v6.segments();
            let embedded = |hi: u16, lo: u16| {
                let [a, b] = hi.to_be_bytes();
                let [c, d] = lo.to_be_bytes();
                IpAddr::V4(std::net::Ipv4Addr::new(a, b, c, d))
            };
            // NAT64 (64:ff9b::/96) and 6to4 (2002::/16) reach an IPv4 address.
            if s[0] == 0x64 && s[1] == 0xff9b && s[2..6] == [0, 0, 0, 0] {
                return is_public(embedded(s[6], s[7]));
            }
            if s[0] == 0x2002 {
                return is_public(embedded(s[1], s[2]));
            }
            !(v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || s[..6] == [0, 0, 0, 0, 0, 0] // IPv4-compatible ::/96
                || (s[0] & 0xfe00) == 0xfc00 // unique local
                || (s[0] & 0xffc0) == 0xfe80 // link-local
                || (s[0] & 0xffc0) == 0xfec0 // site-local
                || (s[0] == 0x2001 && s[1] == 0x0db8)) // documentation
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_http_urls_with_a_host_are_accepted() {
        assert!(check("https://example.com/cb?x=1", 100, true).is_ok());
        assert!(check("http://127.0.0.1:9000/cb", 100, false).is_ok());
        assert!(matches!(
            check("ftp://example.com/", 100, false),
            Err(UrlError::Scheme(_))
        ));
        assert!(matches!(
            check("file:///etc/passwd", 100, false),
            Err(UrlError::Scheme(_))
        ));
        assert!(matches!(
            check("/cb", 100, false),
            Err(UrlError::Invalid(_))
        ));
        assert!(matches!(
            check("http://u:p@example.com/", 100, false),
            Err(UrlError::Credentials)
        ));
        assert_eq!(
            check("http://example.com/very-long", 10, false),
            Err(UrlError::TooLong(10))
        );
    }

    #[test]
    fn private_addresses_are_refused_when_asked() {
        for url in [
            "http://127.0.0.1/",
            "http://10.1.2.3/",
            "http://169.254.169.254/latest/meta-data",
            "http://[::1]/",
            "http://[fd00::1]/",
            "http://[::ffff:192.168.1.1]/",
            "http://0.0.0.0/",
            "http://[64:ff9b::a9fe:a9fe]/",
            "http://[2002:a00:1::]/",
            "http://[::a00:1]/",
            "http://[fec0::1]/",
        ] {
            assert!(
                matches!(check(url, 100, true), Err(UrlError::Private(_))),
                "{url}"
            );
            assert!(check(url, 100, false).is_ok(), "{url}");
        }
        assert!(is_public("8.8.8.8".parse().unwrap()));
        assert!(is_public("2606:4700::1111".parse().unwrap()));
        assert!(is_public("64:ff9b::808:808".parse().unwrap()));
    }
}
