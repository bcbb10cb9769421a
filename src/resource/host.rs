//! The authority of a resource identifier: host and port, screened per rules §7 and §8 before `url`
//! would map, decode or renumber them.

use std::borrow::Cow;
use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr};

use super::error::{HostProblem, PortProblem, ResourceError};

/// A host in canonical form, while a resource identifier is parsed (the parsed identifier
/// reads its host from its `Url`, which writes it back alike).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) enum Host<'a> {
    /// A registered name, lowercase, internationalized labels as A-labels (the input itself
    /// when it was that already).
    Domain(Cow<'a, str>),
    /// An IPv4 address (written as four decimal numbers in the input).
    V4(Ipv4Addr),
    /// An IPv6 address (neither zoned nor embedding IPv4).
    V6(Ipv6Addr),
}

impl Host<'_> {
    /// The host as `url` holds one.
    pub(crate) fn as_url_host(&self) -> url::Host<&str> {
        match self {
            Self::Domain(name) => url::Host::Domain(name),
            Self::V4(addr) => url::Host::Ipv4(*addr),
            Self::V6(addr) => url::Host::Ipv6(*addr),
        }
    }
}

/// Loopback as rules §9 means it: `localhost`, `127.0.0.0/8` and `[::1]`.
pub(crate) fn is_loopback(host: &url::Host<&str>) -> bool {
    match host {
        url::Host::Domain(name) => *name == "localhost",
        url::Host::Ipv4(addr) => addr.is_loopback(),
        url::Host::Ipv6(addr) => addr.is_loopback(),
    }
}

impl fmt::Display for Host<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Domain(name) => f.write_str(name),
            Self::V4(addr) => write!(f, "{addr}"),
            // RFC 5952 text (std's Display compresses the longest run of zeros, lowercase).
            Self::V6(addr) => write!(f, "[{addr}]"),
        }
    }
}

/// Host and port of an authority. `port` is `None` when absent, empty or the scheme default.
pub(crate) struct Authority<'a> {
    pub(crate) host: Host<'a>,
    pub(crate) port: Option<u16>,
}

/// Parses an authority with no userinfo (the caller has refused `@` already).
pub(crate) fn parse_authority(
    authority: &str,
    default_port: u16,
) -> Result<Authority<'_>, ResourceError> {
    let (host, port) = if let Some(rest) = authority.strip_prefix('[') {
        let Some(close) = rest.find(']') else {
            return Err(host_error(authority, HostProblem::InvalidIpv6));
        };
        let literal = &rest[..close];
        let after = &rest[close + 1..];
        let port = match after.strip_prefix(':') {
            Some(port) => Some(port),
            None if after.is_empty() => None,
            None => return Err(host_error(authority, HostProblem::InvalidIpv6)),
        };
        (parse_ipv6(literal)?, port)
    } else {
        let (name, port) = match authority.bytes().position(|b| b == b':') {
            Some(colon) => (&authority[..colon], Some(&authority[colon + 1..])),
            None => (authority, None),
        };
        (parse_name(name)?, port)
    };
    let port = match port {
        None | Some("") => None,
        Some(text) => Some(parse_port(text)?).filter(|&p| p != default_port),
    };
    Ok(Authority { host, port })
}

fn host_error(host: &str, problem: HostProblem) -> ResourceError {
    ResourceError::Host {
        host: host.to_owned(),
        problem,
    }
}

fn parse_ipv6(literal: &str) -> Result<Host<'static>, ResourceError> {
    let shown = format!("[{literal}]");
    if literal.contains('%') {
        return Err(host_error(&shown, HostProblem::Ipv6Zone));
    }
    let addr: Ipv6Addr = literal
        .parse()
        .map_err(|_| host_error(&shown, HostProblem::InvalidIpv6))?;
    let [a, b, c, d, e, f, _, _] = addr.segments();
    let mapped = addr.to_ipv4_mapped().is_some();
    let compatible = [a, b, c, d, e, f] == [0; 6] && !addr.is_loopback() && !addr.is_unspecified();
    let nat64 = [a, b, c, d, e, f] == [0x64, 0xff9b, 0, 0, 0, 0];
    if literal.contains('.') || mapped || compatible || nat64 {
        return Err(host_error(&shown, HostProblem::EmbeddedIpv4));
    }
    Ok(Host::V6(addr))
}

fn parse_name(name: &str) -> Result<Host<'_>, ResourceError> {
    if name.is_empty() {
        return Err(ResourceError::EmptyHost);
    }
    if name.as_bytes().contains(&b'%') {
        return Err(host_error(name, HostProblem::PercentEncoded));
    }
    if name.ends_with('.') && name.len() > 1 {
        return Err(host_error(name, HostProblem::TrailingDot));
    }
    if name.starts_with('.') || name.as_bytes().windows(2).any(|pair| pair == b"..") {
        return Err(host_error(name, HostProblem::EmptyLabel));
    }
    if name.is_ascii() {
        if !allowed_in_name(name) {
            return Err(host_error(name, HostProblem::InvalidCharacter));
        }
        if let Some(addr) = parse_ipv4(name)? {
            return Ok(Host::V4(addr));
        }
    }
    if name.is_ascii() {
        // Usually lowercase already: then it is borrowed as it is.
        let lowered: Cow<'_, str> = if name.bytes().any(|b| b.is_ascii_uppercase()) {
            Cow::Owned(name.to_ascii_lowercase())
        } else {
            Cow::Borrowed(name)
        };
        // An ASCII name (its characters were checked above) of letters, digits, `-`, `_` and
        // `.` with no A-label is its own ToASCII and ToUnicode (UTS-46 maps only uppercase among
        // those, and without CheckHyphens, STD3 rules or DNS length checks, as the URL Standard
        // sets them, refuses none), so the round trip could only give it back; and the checks
        // after it that the name has passed already (characters, empty labels, a trailing dot,
        // IPv4) hold for its lowercase too. What is left is the length rule.
        let (longest, alabel) = label_facts(lowered.as_bytes());
        if !alabel {
            if lowered.len() > 253 || longest > 63 {
                return Err(host_error(name, HostProblem::TooLong));
            }
            return Ok(Host::Domain(lowered));
        }
        return through_idna(name, lowered.into_owned());
    }
    through_idna(name, name.to_lowercase())
}

/// The round trip through UTS-46 of a name that is not a plain ASCII name.
fn through_idna(name: &str, lowered: String) -> Result<Host<'static>, ResourceError> {
    // UTS-46 ToASCII, then ToUnicode; the result must be what was typed (lowercased), so that
    // fullwidth letters, ideographic dots or zero-width characters cannot stand in for ASCII.
    let ascii =
        idna::domain_to_ascii(&lowered).map_err(|_| host_error(name, HostProblem::InvalidIdn))?;
    let (unicode, result) = idna::domain_to_unicode(&ascii);
    if result.is_err() {
        return Err(host_error(name, HostProblem::InvalidIdn));
    }
    // An ASCII name (A-labels included) must come back from ToASCII unchanged; a Unicode name
    // must come back from ToASCII then ToUnicode unchanged.
    let round_trips = if lowered.is_ascii() {
        ascii == lowered
    } else {
        unicode == lowered
    };
    if !round_trips {
        return Err(host_error(name, HostProblem::NotRoundTrippable));
    }
    checked_domain(name, ascii)
}

/// RFC 1035 §2.3.4: labels of at most 63 octets, names of at most 253 (without the root).
fn check_length(name: &str, ascii: &str) -> Result<(), ResourceError> {
    if ascii.len() > 253 || label_facts(ascii.as_bytes()).0 > 63 {
        return Err(host_error(name, HostProblem::TooLong));
    }
    Ok(())
}

/// The length of `name`'s longest label, and whether a label starts with `xn--` (an A-label,
/// in a lowercase name), in one pass over its bytes.
fn label_facts(name: &[u8]) -> (usize, bool) {
    let (mut longest, mut alabel) = (0, false);
    for label in name.split(|&b| b == b'.') {
        longest = longest.max(label.len());
        alabel |= label.starts_with(b"xn--");
    }
    (longest, alabel)
}

/// Letters, digits, `-`, `_` and `.`: what a registered name may hold, typed or as A-labels.
fn allowed_in_name(name: &str) -> bool {
    name.bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// The checks of a name's A-label form (`ascii`), after the round trip; `name` is what was
/// typed, for the error.
fn checked_domain(name: &str, ascii: String) -> Result<Host<'static>, ResourceError> {
    // The A-label form obeys the same rules as an ASCII name (UTS-46 without STD3 rules lets
    // `!`, `$` and the like through in the non-ASCII case).
    if !allowed_in_name(&ascii) {
        return Err(host_error(name, HostProblem::InvalidCharacter));
    }
    check_length(name, &ascii)?;
    if ascii.is_empty()
        || ascii.ends_with('.')
        || ascii.contains("..")
        || parse_ipv4(&ascii)?.is_some()
    {
        return Err(host_error(name, HostProblem::NotRoundTrippable));
    }
    Ok(Host::Domain(Cow::Owned(ascii)))
}

/// `Some` for a canonical dotted-quad; an error for anything WHATWG would read as IPv4 (a
/// numeric last label) that is not canonical; `None` for a registered name.
fn parse_ipv4(name: &str) -> Result<Option<Ipv4Addr>, ResourceError> {
    let last = name
        .bytes()
        .rposition(|b| b == b'.')
        .map_or(name, |dot| &name[dot + 1..]);
    let numeric = |label: &str| {
        !label.is_empty() && label.bytes().all(|b| b.is_ascii_digit())
            || label
                .strip_prefix("0x")
                .or_else(|| label.strip_prefix("0X"))
                .is_some_and(|hex| hex.bytes().all(|b| b.is_ascii_hexdigit()))
    };
    if !numeric(last) {
        return Ok(None);
    }
    let decimal = |label: &str| !label.is_empty() && label.bytes().all(|b| b.is_ascii_digit());
    let labels = name.split('.').count();
    if labels != 4 || !name.split('.').all(decimal) {
        let problem = if labels > 4 {
            HostProblem::InvalidIpv4
        } else {
            HostProblem::NonCanonicalIpv4
        };
        return Err(host_error(name, problem));
    }
    if name.split('.').any(|l| l.len() > 1 && l.starts_with('0')) {
        return Err(host_error(name, HostProblem::NonCanonicalIpv4));
    }
    let mut octets = [0u8; 4];
    for (octet, label) in octets.iter_mut().zip(name.split('.')) {
        *octet = label
            .parse()
            .map_err(|_| host_error(name, HostProblem::InvalidIpv4))?;
    }
    Ok(Some(Ipv4Addr::from(octets)))
}

fn parse_port(text: &str) -> Result<u16, ResourceError> {
    let error = |problem| ResourceError::Port {
        port: text.to_owned(),
        problem,
    };
    if !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(error(PortProblem::NotDigits));
    }
    let significant = text.trim_start_matches('0');
    if significant.len() > 5 {
        return Err(error(PortProblem::OutOfRange));
    }
    let value: u32 = if significant.is_empty() {
        0
    } else {
        significant
            .parse()
            .map_err(|_| error(PortProblem::OutOfRange))?
    };
    match u16::try_from(value) {
        Ok(0) => Err(error(PortProblem::Zero)),
        Ok(port) => Ok(port),
        Err(_) => Err(error(PortProblem::OutOfRange)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The shortcut for plain ASCII names decides what the UTS-46 round trip and the checks
    /// after it decide, with the same host or the same error.
    fn same_both_ways(name: &str) {
        let shortcut = parse_name(name);
        // `parse_name`'s checks before the round trip, then the round trip for every name.
        let round_trip = (|| {
            if !allowed_in_name(name) {
                return Err(host_error(name, HostProblem::InvalidCharacter));
            }
            if let Some(addr) = parse_ipv4(name)? {
                return Ok(Host::V4(addr));
            }
            through_idna(name, name.to_lowercase())
        })();
        assert_eq!(format!("{shortcut:?}"), format!("{round_trip:?}"), "{name}");
    }

    #[test]
    fn plain_ascii_names_skip_the_round_trip_with_the_same_result() {
        for name in [
            "mcp.example.com",
            "MCP.Example.COM",
            "a",
            "-a-.b-",
            "ab--cd.example",
            "under_score.example",
            "1.2.3.4.5",
            "1.2.3",
            "0x7f.example",
            "example.0x10",
            "a.b.c.d.e.f.g.h.i.j.k.l.m.n.o.p",
        ] {
            same_both_ways(name);
        }
        same_both_ways(&"a".repeat(63));
        same_both_ways(&"a".repeat(64));
        same_both_ways(&vec!["a".repeat(63); 4].join("."));
    }

    proptest! {
        #[test]
        fn plain_ascii_names_agree_with_the_round_trip(
            labels in proptest::collection::vec("[A-Za-z0-9_-]{1,12}", 1..6),
        ) {
            let name = labels.join(".");
            prop_assume!(!name.to_lowercase().split('.').any(|l| l.starts_with("xn--")));
            same_both_ways(&name);
        }
    }
}
