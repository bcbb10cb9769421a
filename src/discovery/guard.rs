//! The SSRF guard: which discovery URLs may be fetched (RFC 9728 §7.7; MCP security best
//! practices, "Server-Side Request Forgery").
//!
//! A URL check cannot see where a host name resolves. A name that resolves to an internal
//! address, or that resolves differently at connection time than when it was checked (DNS
//! rebinding), passes here; the HTTP client's resolver or connector has to refuse those
//! addresses for full protection.

use std::net::{Ipv4Addr, Ipv6Addr};

use url::{Host, Url};

use super::{AddressClass, DiscoveryError, DiscoveryOptions};
use crate::resource::shorten;

/// Decides whether a discovery URL (metadata, issuer, endpoint) may be fetched.
///
/// Refused, in this order: a scheme other than http(s); userinfo; a fragment; no host; a host
/// that is a literal internal address ([`AddressClass`]: private, link-local such as
/// `169.254.169.254`, unique-local, unspecified, multicast, IPv4-embedding IPv6, and loopback,
/// including `localhost`, unless the development option is on); plain http, except to loopback
/// with the development option.
///
/// The `url` crate has already parsed the host, so `0x7f.1` or `2130706433` are seen as the
/// `127.0.0.1` they would connect to. **DNS rebinding is not covered**: a host name is accepted
/// whatever it resolves to.
///
/// ```
/// use audience_cache::{DiscoveryError, DiscoveryOptions};
/// use audience_cache::discovery::check_fetch_url;
/// use url::Url;
///
/// let options = DiscoveryOptions::strict();
/// let ok = Url::parse("https://mcp.example.com/.well-known/oauth-protected-resource")?;
/// assert!(check_fetch_url(&ok, &options).is_ok());
///
/// let metadata_service = Url::parse("http://169.254.169.254/latest/meta-data/")?;
/// assert!(matches!(
///     check_fetch_url(&metadata_service, &options),
///     Err(DiscoveryError::PrivateAddress { .. })
/// ));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn check_fetch_url(url: &Url, options: &DiscoveryOptions) -> Result<(), DiscoveryError> {
    let https = match url.scheme() {
        "https" => true,
        "http" => false,
        _ => return Err(DiscoveryError::UnsupportedScheme { url: shown(url) }),
    };
    if !url.username().is_empty() || url.password().is_some() {
        return Err(DiscoveryError::Userinfo { url: shown(url) });
    }
    if url.fragment().is_some() {
        return Err(DiscoveryError::Fragment { url: shown(url) });
    }
    let Some(host) = url.host() else {
        return Err(DiscoveryError::NoHost { url: shown(url) });
    };
    let class = address_class(&host);
    let loopback_allowed = class == Some(AddressClass::Loopback) && options.loopback;
    if let Some(class) = class.filter(|_| !loopback_allowed) {
        return Err(DiscoveryError::PrivateAddress {
            url: shown(url),
            class,
        });
    }
    if !https && !loopback_allowed {
        return Err(DiscoveryError::InsecureUrl { url: shown(url) });
    }
    Ok(())
}

/// Decides whether a `resource_metadata` URL from a challenge (already resolved against the
/// request URL, as [`Challenge::resource_metadata_url`](crate::challenge::Challenge::resource_metadata_url)
/// does) may be fetched: everything [`check_fetch_url`] checks, and then the same origin as
/// `server_url`, the URL whose response carried the challenge, unless
/// [`DiscoveryOptions::allow_cross_origin_resource_metadata`] is on.
///
/// ```
/// use audience_cache::{DiscoveryError, DiscoveryOptions};
/// use audience_cache::discovery::check_resource_metadata_url;
/// use url::Url;
///
/// let server = Url::parse("https://mcp.example.com/mcp")?;
/// let elsewhere = Url::parse("https://meta.other.example/prm")?;
/// let strict = DiscoveryOptions::strict();
/// assert!(matches!(
///     check_resource_metadata_url(&elsewhere, &server, &strict),
///     Err(DiscoveryError::CrossOriginMetadata { .. })
/// ));
/// let lenient = strict.allow_cross_origin_resource_metadata(true);
/// assert!(check_resource_metadata_url(&elsewhere, &server, &lenient).is_ok());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn check_resource_metadata_url(
    resource_metadata: &Url,
    server_url: &Url,
    options: &DiscoveryOptions,
) -> Result<(), DiscoveryError> {
    check_fetch_url(resource_metadata, options)?;
    if !options.cross_origin_resource_metadata && resource_metadata.origin() != server_url.origin()
    {
        return Err(DiscoveryError::CrossOriginMetadata {
            metadata_url: shown(resource_metadata),
            server_url: shown(server_url),
        });
    }
    Ok(())
}

/// Reads a URL sent by a server (a metadata member), refusing text that `url` would silently
/// repair: whitespace and tabs (removed anywhere), backslashes (read as `/`), quotes and angle
/// brackets. Then [`check_fetch_url`].
pub(crate) fn parse_fetch_url(
    value: &str,
    options: &DiscoveryOptions,
) -> Result<Url, DiscoveryError> {
    let invalid = |reason: &str| DiscoveryError::InvalidUrl {
        value: shorten(value),
        reason: reason.to_owned(),
    };
    crate::resource::screen_url_text(value).map_err(invalid)?;
    let url = Url::parse(value).map_err(|e| invalid(&e.to_string()))?;
    check_fetch_url(&url, options)?;
    Ok(url)
}

/// A URL for an error message: no userinfo, shortened.
pub(crate) fn shown(url: &Url) -> String {
    let mut url = url.clone();
    // Both fail only for URLs without a host, which have no userinfo to hide.
    let _ = url.set_username("");
    let _ = url.set_password(None);
    shorten(url.as_str())
}

/// The internal range a host is in, if it is a literal address or a loopback name.
pub(crate) fn address_class(host: &Host<&str>) -> Option<AddressClass> {
    match host {
        Host::Domain(name) => {
            let name = name.strip_suffix('.').unwrap_or(name);
            // RFC 6761 §6.3: localhost and its subdomains are loopback.
            (name.eq_ignore_ascii_case("localhost")
                || name.to_ascii_lowercase().ends_with(".localhost"))
            .then_some(AddressClass::Loopback)
        }
        Host::Ipv4(addr) => ipv4_class(*addr),
        Host::Ipv6(addr) => ipv6_class(*addr),
    }
}

fn ipv4_class(addr: Ipv4Addr) -> Option<AddressClass> {
    let [a, b, ..] = addr.octets();
    Some(match a {
        0 => AddressClass::Unspecified,
        10 => AddressClass::Private,
        127 => AddressClass::Loopback,
        100 if (64..128).contains(&b) => AddressClass::SharedAddressSpace,
        169 if b == 254 => AddressClass::LinkLocal,
        172 if (16..32).contains(&b) => AddressClass::Private,
        192 if b == 168 => AddressClass::Private,
        224..=239 => AddressClass::Multicast,
        _ if addr.is_broadcast() => AddressClass::Broadcast,
        240..=255 => AddressClass::Reserved,
        _ => return None,
    })
}

fn ipv6_class(addr: Ipv6Addr) -> Option<AddressClass> {
    let segments = addr.segments();
    if addr.is_unspecified() {
        return Some(AddressClass::Unspecified);
    }
    if addr.is_loopback() {
        return Some(AddressClass::Loopback);
    }
    let embeds_ipv4 = segments[..5] == [0; 5] && (segments[5] == 0 || segments[5] == 0xffff) // ::/96, ::ffff:0:0/96
        || segments[..6] == [0x64, 0xff9b, 0, 0, 0, 0] // NAT64, RFC 6052
        || segments[..3] == [0x64, 0xff9b, 1] // local-use NAT64, RFC 8215
        || segments[0] == 0x2002 // 6to4
        || segments[..2] == [0x2001, 0]; // Teredo
    Some(match segments[0] {
        _ if embeds_ipv4 => AddressClass::EmbeddedIpv4,
        0xfc00..=0xfdff => AddressClass::UniqueLocal,
        0xfe80..=0xfebf => AddressClass::LinkLocal,
        0xfec0..=0xfeff => AddressClass::Private,
        0xff00..=0xffff => AddressClass::Multicast,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn class(url: &str) -> Option<AddressClass> {
        let url = Url::parse(url).unwrap();
        address_class(&url.host().unwrap())
    }

    #[test]
    fn literal_ranges() {
        use AddressClass::*;
        for (url, expected) in [
            ("https://169.254.169.254/", Some(LinkLocal)),
            ("https://10.1.2.3/", Some(Private)),
            ("https://172.31.0.1/", Some(Private)),
            ("https://172.32.0.1/", None),
            ("https://192.168.0.1/", Some(Private)),
            ("https://100.64.0.1/", Some(SharedAddressSpace)),
            ("https://0.0.0.0/", Some(Unspecified)),
            ("https://127.0.0.1/", Some(Loopback)),
            ("https://0x7f.1/", Some(Loopback)),
            ("https://2130706433/", Some(Loopback)),
            ("https://255.255.255.255/", Some(Broadcast)),
            ("https://240.0.0.1/", Some(Reserved)),
            ("https://224.0.0.1/", Some(Multicast)),
            ("https://93.184.216.34/", None),
            ("https://[::1]/", Some(Loopback)),
            ("https://[::]/", Some(Unspecified)),
            ("https://[::ffff:169.254.169.254]/", Some(EmbeddedIpv4)),
            ("https://[::ffff:8.8.8.8]/", Some(EmbeddedIpv4)),
            ("https://[64:ff9b::a9fe:a9fe]/", Some(EmbeddedIpv4)),
            ("https://[2002:a9fe:a9fe::1]/", Some(EmbeddedIpv4)),
            ("https://[fd00::1]/", Some(UniqueLocal)),
            ("https://[fe80::1]/", Some(LinkLocal)),
            ("https://[ff02::1]/", Some(Multicast)),
            ("https://[2001:db8::1]/", None),
            ("https://[2606:4700::1111]/", None),
            ("https://localhost/", Some(Loopback)),
            ("https://LOCALHOST./", Some(Loopback)),
            ("https://api.localhost/", Some(Loopback)),
            ("https://localhost.example.com/", None),
        ] {
            assert_eq!(class(url), expected, "{url}");
        }
    }
}
