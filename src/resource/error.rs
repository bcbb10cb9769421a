//! Why a string is not an acceptable resource identifier.

use std::fmt;

/// Why a string was rejected as a resource identifier.
///
/// Every variant names a reason class and quotes the offending part of the input (escaped, so a
/// control character shows as `\u{..}` rather than acting on a terminal or a log). Userinfo is
/// the one part that is never quoted whole: it may hold a password.
///
/// The checks behind these variants run on the raw string *before* the `url` crate sees it,
/// because `url` silently repairs many of these inputs into something else (see the policies
/// rules §6–§9 and §16–§19 in the crate's documentation).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ResourceError {
    /// The input was empty.
    #[error(
        "resource identifier is empty; give an absolute https URL such as \"https://mcp.example.com/mcp\""
    )]
    Empty,

    /// The input is longer than the 2048-byte cap (rules §16).
    #[error("resource identifier is {len} bytes long; the limit is {max} bytes")]
    TooLong {
        /// The input's length in bytes.
        len: usize,
        /// The limit.
        max: usize,
    },

    /// A space or no-break space appears in the input (rules §16). `url` would trim or encode it.
    #[error(
        "resource identifier contains whitespace at byte {position}; remove it or percent-encode it as %20"
    )]
    Whitespace {
        /// Byte offset of the whitespace.
        position: usize,
    },

    /// A C0 or C1 control character or DEL appears in the input (rules §16). `url` would remove TAB,
    /// CR and LF silently, which turns header-injection shapes into "valid" URLs.
    #[error("resource identifier contains the control character {character:?} at byte {position}")]
    ControlCharacter {
        /// Byte offset of the character.
        position: usize,
        /// The character.
        character: char,
    },

    /// An invisible formatting character (zero-width, bidirectional override, byte-order mark,
    /// soft hyphen) appears in the input (rules §16).
    #[error(
        "resource identifier contains the invisible character {character:?} at byte {position}"
    )]
    InvisibleCharacter {
        /// Byte offset of the character.
        position: usize,
        /// The character.
        character: char,
    },

    /// A backslash appears in the input. `url` reads it as `/` for http(s), other parsers do not,
    /// so the host can differ between them (rules §16).
    #[error("resource identifier contains a backslash at byte {position}; URLs use '/'")]
    Backslash {
        /// Byte offset of the backslash.
        position: usize,
    },

    /// A non-ASCII character appears outside the host. A URI is ASCII (RFC 3986 §2);
    /// percent-encode it so the wire form is unambiguous.
    #[error(
        "resource identifier contains the non-ASCII character {character:?} at byte {position}; percent-encode its UTF-8 bytes"
    )]
    NonAscii {
        /// Byte offset of the character.
        position: usize,
        /// The character.
        character: char,
    },

    /// A character that RFC 3986 does not allow in a path or query appears in the input.
    #[error(
        "resource identifier contains {character:?} at byte {position}, which RFC 3986 does not allow there; percent-encode it"
    )]
    InvalidCharacter {
        /// Byte offset of the character.
        position: usize,
        /// The character.
        character: char,
    },

    /// The input is a relative reference (RFC 3986 §4.2); a resource is an absolute URI.
    #[error("resource identifier {input:?} is a relative reference; give an absolute https URL")]
    RelativeReference {
        /// The input (shortened when long).
        input: String,
    },

    /// The input has no scheme. `url` would read `mcp.example.com:443` as the scheme
    /// `mcp.example.com`.
    #[error("resource identifier {input:?} has no scheme; write it as \"https://{input}\"")]
    MissingScheme {
        /// The input (shortened when long).
        input: String,
    },

    /// The scheme is not http(s): `urn:`, `ftp:`, `ws:` and the like are refused (rules §9), because a
    /// token for an abstract identifier cannot be checked against a request URL.
    #[error("resource identifier has the scheme {scheme:?}; only https is accepted")]
    UnsupportedScheme {
        /// The scheme as written.
        scheme: String,
    },

    /// The scheme is `http`, which is accepted only for a loopback host and only when
    /// [`ParseOptions::allow_insecure_http_on_loopback`](crate::resource::ParseOptions::allow_insecure_http_on_loopback)
    /// is set (rules §9; RFC 6750 §5.3).
    #[error(
        "resource identifier uses http for the host {host:?}; use https (plain http is allowed only on a loopback host, with ParseOptions::allow_insecure_http_on_loopback)"
    )]
    InsecureScheme {
        /// The host as written.
        host: String,
    },

    /// The scheme is not followed by `//`, so under RFC 3986 there is no authority; `url` would
    /// repair `https:host/x` into `https://host/x`.
    #[error(
        "resource identifier has no \"//\" after \"{scheme}:\"; write it as \"{scheme}://host/path\""
    )]
    NoAuthority {
        /// The scheme as written.
        scheme: String,
    },

    /// The input has a fragment, even an empty one (RFC 8707 §2).
    #[error(
        "resource identifier has a fragment {fragment:?}; RFC 8707 forbids fragments in resource identifiers, remove everything from '#'"
    )]
    Fragment {
        /// The fragment, starting with `#`.
        fragment: String,
    },

    /// The input has userinfo (`user@` or an empty `@`), which disguises the real host
    /// (RFC 9110 §4.2.4; rules §18). A password in it is never quoted.
    #[error(
        "resource identifier has userinfo ({shown}) before the host; remove everything up to and including '@'"
    )]
    Userinfo {
        /// The userinfo with any password replaced by `***`.
        shown: String,
    },

    /// The host is empty (RFC 9110 §4.2.2).
    #[error("resource identifier has an empty host")]
    EmptyHost,

    /// The host is written in a form the crate refuses (rules §7).
    #[error("resource identifier host {host:?} is refused: {problem}")]
    Host {
        /// The host as written.
        host: String,
        /// What is wrong with it.
        problem: HostProblem,
    },

    /// The port is not acceptable (rules §8).
    #[error("resource identifier port {port:?} is refused: {problem}")]
    Port {
        /// The port as written.
        port: String,
        /// What is wrong with it.
        problem: PortProblem,
    },

    /// The path has a `.` or `..` segment, literal or percent-encoded (rules §19). Resolving it would
    /// silently widen the audience (`https://h/tenantA/..` is `https://h/`).
    #[error(
        "resource identifier path has the dot segment {segment:?}; write the path without '.' or '..' segments"
    )]
    DotSegment {
        /// The segment as written.
        segment: String,
    },

    /// The path reads differently once fully percent-decoded, with `\\` as `/`, `;params`
    /// removed and dot segments resolved (an encoded `/` or `\\`, a `;`), so servers could
    /// route it elsewhere (rules §5). Such a resource could never cover its own URL.
    #[error(
        "resource identifier path {path:?} can be routed differently by servers that decode it (an encoded '/' or '\\', or ';' parameters); use a path without them"
    )]
    AmbiguousPath {
        /// The path as written (shortened when long).
        path: String,
    },

    /// A `%` is not followed by two hex digits (rules §6).
    #[error(
        "resource identifier has the malformed percent-escape {escape:?}; a '%' must be followed by two hex digits (write a literal '%' as %25)"
    )]
    MalformedEscape {
        /// The escape as written (up to three characters).
        escape: String,
    },

    /// A percent-escape encodes a control character (`%00`–`%1F`, `%7F`) (rules §6).
    #[error(
        "resource identifier has the percent-escape {escape:?}, which encodes a control character"
    )]
    EscapedControl {
        /// The escape as written.
        escape: String,
    },

    /// The input ends in `?` with nothing after it. RFC 3986 §6.2.3 does not equate it with no
    /// query, so it is refused rather than keyed twice (rules §4).
    #[error("resource identifier has an empty query (a trailing '?'); remove the '?'")]
    EmptyQuery,

    /// The `url` crate could not parse the (already screened) input.
    #[error("resource identifier is not a valid URL: {reason}")]
    Unparseable {
        /// The parser's reason.
        reason: String,
    },

    /// The crate's reading of the input and the `url` crate's reading disagree. Rather than
    /// guess which one a server would use, the input is refused (fail closed).
    #[error(
        "resource identifier reads differently to the URL parser in its {component} ({ours:?} versus {theirs:?}); write it in canonical form"
    )]
    ParserDisagreement {
        /// The component that differs.
        component: &'static str,
        /// The crate's reading.
        ours: String,
        /// The `url` crate's reading.
        theirs: String,
    },
}

/// What is wrong with a resource identifier's host (rules §7).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum HostProblem {
    /// The host ends in a dot: it names the same DNS host as the name without it but is a
    /// different string.
    TrailingDot,
    /// The host has an empty label (`a..b`, or a leading dot).
    EmptyLabel,
    /// The host contains a percent-escape; `url` would decode it.
    PercentEncoded,
    /// The host contains a character that is not a letter, digit, `-`, `_` or `.`.
    InvalidCharacter,
    /// The host reads as an IPv4 address but is not four decimal numbers without leading zeros
    /// (`127.1`, `0x7f.1`, `0177.0.0.1`, `2130706433`).
    NonCanonicalIpv4,
    /// The host is four decimal numbers but not a valid IPv4 address (a part above 255).
    InvalidIpv4,
    /// The bracketed IPv6 literal does not parse, or is an IPvFuture literal.
    InvalidIpv6,
    /// The IPv6 literal has a zone identifier (`%25eth0`), meaningful only on the local host.
    Ipv6Zone,
    /// The IPv6 literal maps or embeds an IPv4 address (`::ffff:127.0.0.1`), which hides the
    /// address actually reached.
    EmbeddedIpv4,
    /// The internationalized name does not survive UTS-46 ToASCII then ToUnicode unchanged
    /// (fullwidth letters, ideographic full stops, zero-width characters), so what was typed
    /// is not what would be keyed.
    NotRoundTrippable,
    /// The internationalized name is invalid under UTS-46.
    InvalidIdn,
    /// A label is longer than 63 octets or the name longer than 253 (RFC 1035 §2.3.4), in its
    /// A-label form: no DNS name is that long.
    TooLong,
}

impl fmt::Display for HostProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::TrailingDot => "it ends in a dot; remove the trailing '.'",
            Self::EmptyLabel => "it has an empty label",
            Self::PercentEncoded => "it contains a percent-escape; write the host in plain characters",
            Self::InvalidCharacter => {
                "it contains a character other than letters, digits, '-', '_' and '.'"
            }
            Self::NonCanonicalIpv4 => {
                "it reads as an IPv4 address but is not written as four decimal numbers without leading zeros"
            }
            Self::InvalidIpv4 => "it is not a valid IPv4 address",
            Self::InvalidIpv6 => "it is not a valid IPv6 address",
            Self::Ipv6Zone => "IPv6 zone identifiers are not accepted",
            Self::EmbeddedIpv4 => {
                "it is an IPv6 address that maps or embeds an IPv4 address; write the IPv4 address itself"
            }
            Self::NotRoundTrippable => {
                "the internationalized name changes under IDNA mapping; write the name as it is registered (or its xn-- form)"
            }
            Self::InvalidIdn => "it is not a valid internationalized domain name",
            Self::TooLong => {
                "a DNS name has labels of at most 63 bytes and at most 253 bytes in all (as A-labels)"
            }
        })
    }
}

/// What is wrong with a resource identifier's port (rules §8).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum PortProblem {
    /// Port 0: nothing listens there.
    Zero,
    /// The port is not made only of decimal digits (a sign, a space, a letter).
    NotDigits,
    /// The port is above 65535.
    OutOfRange,
}

impl fmt::Display for PortProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Zero => "port 0 is not a usable port",
            Self::NotDigits => "a port is written with decimal digits only",
            Self::OutOfRange => "a port is at most 65535",
        })
    }
}
