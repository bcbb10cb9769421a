//! Hostile request URLs relative to a resource (feature `arbitrary`): what a user fuzzing their
//! own routing, or their integration of the coverage check, feeds it.

use arbitrary::{Arbitrary, Result, Unstructured};

use crate::resource::ResourceUri;

/// What makes a [`HostileRequest`] hostile. Each kind is a way a request URL has been written
/// to reach something other than what a check of it saw (rules §5, §7, §8, §18).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum HostileKind {
    /// A percent-escape in the path that decodes to a delimiter or a dot (`%2F..%2F`, `%5C`,
    /// `%3B`, `%2e%2e`, `%00`): a server that decodes before routing sees other segments.
    Escape,
    /// An escaped escape (`%252e%252e`, `%252F`, `%25%32%65`, `%255C`): a chain of servers that
    /// each decode once reads a delimiter or a dot segment at its end.
    DoubleEscape,
    /// A `;` parameter in a segment (`/mcp;x=1`, `..;/admin`), which Tomcat and Spring drop
    /// before routing.
    Semicolon,
    /// A `\` in the path, which `url` and browsers read as `/` and some servers as a character.
    Backslash,
    /// A `.` or `..` segment, literal or escaped (`.%2e`).
    DotSegment,
    /// Userinfo in the authority (`user:pass@`, an `@` that moves the host, an empty `@`).
    Userinfo,
    /// A host that looks like the resource's: a suffix, a prefix, a subdomain, a trailing dot,
    /// another case, a fullwidth letter, another spelling of the same IP address.
    LookAlikeHost,
    /// The resource's host with another port, or its own port spelled otherwise (`:443`,
    /// `:0443`, an empty port, one out of range).
    Port,
    /// A path that extends the resource's last segment (`/mcp-admin`, `/mcpx`), or the
    /// resource's path without its trailing `/`. (A resource at the root has no sibling: every
    /// path of its origin is inside it, and this kind writes one below it.)
    SiblingPath,
}

impl HostileKind {
    /// Every kind, in declaration order.
    pub const ALL: [HostileKind; 9] = [
        Self::Escape,
        Self::DoubleEscape,
        Self::Semicolon,
        Self::Backslash,
        Self::DotSegment,
        Self::Userinfo,
        Self::LookAlikeHost,
        Self::Port,
        Self::SiblingPath,
    ];
}

/// A request URL written to trick a router or a coverage check, relative to a resource: the
/// resource's origin and path with one hostile change of the given [`kind`](Self::kind).
///
/// The URL is a string as a client would type it, not a parsed [`url::Url`]: parsers repair
/// some of these forms (`url` reads `\` as `/` and drops an empty `@`), and what each reader
/// makes of the string is what the fuzzing is about. Some are harmless to a correct check
/// (`HTTPS://MCP.Example.com:443/mcp` is the resource itself); a check is right when it covers a
/// request exactly when a server routes it inside the resource, which
/// [`coverage`](super::coverage) asserts.
///
/// ```
/// use arbitrary::Unstructured;
/// use audience_cache::ResourceUri;
/// use audience_cache::fuzzing::HostileRequest;
///
/// let resource = ResourceUri::parse("https://mcp.example.com/mcp")?;
/// let mut u = Unstructured::new(&[3, 1, 4, 1, 5, 9, 2, 6]);
/// let request = HostileRequest::generate(&resource, &mut u).unwrap();
/// // A fuzz target asserts its own routing against the crate's decision here.
/// audience_cache::fuzzing::coverage(format!("{}\n{}", resource.key(), request.url()).as_bytes());
/// # Ok::<(), audience_cache::ResourceError>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostileRequest {
    resource: ResourceUri,
    kind: HostileKind,
    url: String,
}

impl HostileRequest {
    /// A hostile request for `resource`, its kind and its details taken from `u`.
    pub fn generate(resource: &ResourceUri, u: &mut Unstructured<'_>) -> Result<Self> {
        let kind = *u.choose(&HostileKind::ALL)?;
        let url = write(resource, kind, u)?;
        Ok(Self {
            resource: resource.clone(),
            kind,
            url,
        })
    }

    /// The resource the request was written against.
    pub fn resource(&self) -> &ResourceUri {
        &self.resource
    }

    /// What makes it hostile.
    pub fn kind(&self) -> HostileKind {
        self.kind
    }

    /// The request URL as written, before any parser has read it.
    pub fn url(&self) -> &str {
        &self.url
    }
}

/// A resource (itself arbitrary) and a hostile request for it.
impl<'a> Arbitrary<'a> for HostileRequest {
    fn arbitrary(u: &mut Unstructured<'a>) -> Result<Self> {
        let resource = ResourceUri::arbitrary(u)?;
        Self::generate(&resource, u)
    }
}

const ESCAPES: &[&str] = &[
    "%2F..%2Fadmin",
    "%2f..%2f..%2fadmin",
    "%2e%2e/admin",
    "%2E%2E%2Fadmin",
    "%5C..%5Cadmin",
    "x%5c..%5c..%5cadmin",
    "x%3B/admin",
    "%3b..%3b/admin",
    "x%00",
    "%2e",
    "%2F",
];

const DOUBLE_ESCAPES: &[&str] = &[
    "%252e%252e/admin",
    "%252E%252E%252Fadmin",
    "x%252F..%252F..%252Fadmin",
    "%25%32%65%25%32%65/admin",
    "%255C..%255Cadmin",
    "%25252e%25252e/admin",
    "%252e",
    "%25%35%43..%25%35%43admin",
];

const SEMICOLONS: &[&str] = &["..;/admin", "x;/..;/admin", ";jsessionid=1", "x;a=b/y"];

const BACKSLASHES: &[&str] = &["\\..\\admin", "x\\..\\..\\admin", "\\", "x\\y"];

const DOT_SEGMENTS: &[&str] = &[
    "../admin",
    "./x",
    "x/../../admin",
    ".%2e/admin",
    "%2e./x",
    "..",
    ".",
];

/// The resource's parts as its URL (in key form) holds them.
struct Parts<'r> {
    scheme: &'r str,
    host: String,
    /// `:port`, or empty for the default.
    port: String,
    path: &'r str,
    query: Option<&'r str>,
}

fn parts(resource: &ResourceUri) -> Parts<'_> {
    let url = resource.as_url();
    Parts {
        scheme: url.scheme(),
        host: url.host_str().unwrap_or_default().to_owned(),
        port: url.port().map(|p| format!(":{p}")).unwrap_or_default(),
        path: url.path(),
        query: url.query(),
    }
}

fn write(resource: &ResourceUri, kind: HostileKind, u: &mut Unstructured<'_>) -> Result<String> {
    let Parts {
        scheme,
        host,
        port,
        path,
        query,
    } = parts(resource);
    let query = query.map(|q| format!("?{q}")).unwrap_or_default();
    // The path's directory: a hostile piece goes below the resource.
    let below = |piece: &str| format!("{}/{piece}", path.trim_end_matches('/'));
    let url = match kind {
        HostileKind::Escape => format!("{scheme}://{host}{port}{}", below(u.choose(ESCAPES)?)),
        HostileKind::DoubleEscape => {
            format!(
                "{scheme}://{host}{port}{}",
                below(u.choose(DOUBLE_ESCAPES)?)
            )
        }
        HostileKind::Semicolon => {
            let path = if u.ratio(1, 2)? {
                below(u.choose(SEMICOLONS)?)
            } else {
                format!("{}{}", path.trim_end_matches('/'), ";x=1")
            };
            format!("{scheme}://{host}{port}{path}")
        }
        HostileKind::Backslash => {
            format!("{scheme}://{host}{port}{}", below(u.choose(BACKSLASHES)?))
        }
        HostileKind::DotSegment => {
            format!("{scheme}://{host}{port}{}", below(u.choose(DOT_SEGMENTS)?))
        }
        HostileKind::Userinfo => match u.int_in_range(0..=3)? {
            0 => format!("{scheme}://user:pass@{host}{port}{path}{query}"),
            1 => format!("{scheme}://{host}{port}@evil.example{path}"),
            2 => format!("{scheme}://@{host}{port}{path}{query}"),
            _ => format!("{scheme}://{host}%40evil.example{port}{path}"),
        },
        HostileKind::LookAlikeHost => {
            let other = look_alike(&host, u)?;
            format!("{scheme}://{other}{port}{path}{query}")
        }
        HostileKind::Port => {
            let default = if scheme == "https" { 443 } else { 80 };
            let number: u16 = port
                .strip_prefix(':')
                .and_then(|p| p.parse().ok())
                .unwrap_or(default);
            let other = match u.int_in_range(0..=6)? {
                0 => format!(":{number}"),
                1 => format!(":0{number}"),
                2 => format!(":{}", number.wrapping_add(1).max(1)),
                3 => format!(":{}", if default == 443 { 80 } else { 443 }),
                4 => ":".to_owned(),
                5 => format!(":{}", u32::from(number) + 65536),
                _ => format!(":{}", u.int_in_range(1..=65535u16)?),
            };
            format!("{scheme}://{host}{other}{path}{query}")
        }
        HostileKind::SiblingPath => {
            let trimmed = path.trim_end_matches('/');
            let sibling = match u.int_in_range(0..=3)? {
                0 if path.ends_with('/') && trimmed.is_empty() => "/x".to_owned(),
                0 if path.ends_with('/') => trimmed.to_owned(),
                1 => format!("{trimmed}-admin"),
                2 => format!("{trimmed}.json"),
                _ => format!("{trimmed}x"),
            };
            format!("{scheme}://{host}{port}{sibling}")
        }
    };
    Ok(url)
}

/// A host that looks like `host` (in key form: lowercase, A-labels, canonical IP literals).
fn look_alike(host: &str, u: &mut Unstructured<'_>) -> Result<String> {
    if let Ok(v4) = host.parse::<std::net::Ipv4Addr>() {
        let [a, b, c, d] = v4.octets();
        return Ok(match u.int_in_range(0..=4)? {
            0 => format!("0x{a:x}.{b}.{c}.{d}"),
            1 => format!("{a}.{b}.{}", u32::from(c) << 8 | u32::from(d)),
            2 => u32::from(v4).to_string(),
            3 => format!("[::ffff:{v4}]"),
            _ => format!("0{a}.{b}.{c}.{d}"),
        });
    }
    if let Some(v6) = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        let addr: std::net::Ipv6Addr = v6.parse().unwrap_or(std::net::Ipv6Addr::LOCALHOST);
        let full = addr
            .segments()
            .iter()
            .map(|s| format!("{s:04X}"))
            .collect::<Vec<_>>()
            .join(":");
        return Ok(match u.int_in_range(0..=2)? {
            0 => format!("[{full}]"),
            1 => format!("[{v6}%25eth0]"),
            _ => format!("[{v6}]:@evil.example"),
        });
    }
    Ok(match u.int_in_range(0..=7)? {
        0 => format!("{host}.evil.example"),
        1 => format!("evil{host}"),
        2 => format!("{host}x"),
        3 => format!("x.{host}"),
        4 => format!("{host}."),
        5 => host.to_uppercase(),
        6 => fullwidth_first_letter(host),
        _ => format!("{host}%2eevil.example"),
    })
}

/// `host` with its first ASCII letter in fullwidth form (U+FF41…), which UTS-46 maps back.
fn fullwidth_first_letter(host: &str) -> String {
    let mut done = false;
    host.chars()
        .map(|c| {
            if !done && c.is_ascii_lowercase() {
                done = true;
                char::from_u32(u32::from(c) - u32::from('a') + 0xFF41).unwrap_or(c)
            } else {
                c
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{RngCore as _, SeedableRng as _};
    use std::collections::BTreeMap;

    /// Over many seeds every kind is produced, for resources of every host form, and every
    /// request passes the exact coverage oracle (a covered request routes inside the resource
    /// on its origin). A sibling path is never covered.
    #[test]
    fn the_generator_produces_every_kind_and_the_crate_holds() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(8707);
        let mut kinds: BTreeMap<HostileKind, usize> = BTreeMap::new();
        let mut covered = 0;
        for i in 0..6000 {
            let mut bytes = vec![0; 8 + i % 120];
            rng.fill_bytes(&mut bytes);
            let mut u = Unstructured::new(&bytes);
            let request = HostileRequest::arbitrary(&mut u).unwrap();
            *kinds.entry(request.kind()).or_default() += 1;
            let resource = request.resource();
            super::super::coverage(format!("{}\n{}", resource.key(), request.url()).as_bytes());
            let Ok(url) = url::Url::parse(request.url()) else {
                continue;
            };
            let is_covered = resource.covers(&url).is_covered();
            covered += usize::from(is_covered);
            if request.kind() == HostileKind::SiblingPath && resource.as_url().path() != "/" {
                assert!(!is_covered, "{} covers {}", resource.key(), request.url());
            }
        }
        assert_eq!(kinds.len(), HostileKind::ALL.len(), "{kinds:?}");
        assert!(kinds.values().all(|&n| n > 300), "{kinds:?}");
        // Some forms are the resource itself spelled otherwise (`:443`, uppercase): the check
        // is exercised on both answers.
        assert!(covered > 100, "{covered} covered");
    }

    /// Each kind writes what its documentation says, for a fixed resource.
    #[test]
    fn each_kind_writes_its_hostile_piece() {
        let resource = ResourceUri::parse("https://mcp.example.com/mcp").unwrap();
        let mut seen: BTreeMap<HostileKind, Vec<String>> = BTreeMap::new();
        let mut rng = rand::rngs::StdRng::seed_from_u64(3986);
        for _ in 0..3000 {
            let mut bytes = [0u8; 16];
            rng.fill_bytes(&mut bytes);
            let request =
                HostileRequest::generate(&resource, &mut Unstructured::new(&bytes)).unwrap();
            seen.entry(request.kind())
                .or_default()
                .push(request.url().to_owned());
        }
        let all = |kind: HostileKind, test: &dyn Fn(&str) -> bool| {
            let urls = &seen[&kind];
            assert!(urls.iter().all(|u| test(u)), "{kind:?}: {urls:?}");
        };
        all(HostileKind::Escape, &|u| u.contains('%'));
        all(HostileKind::DoubleEscape, &|u| u.contains("%25"));
        all(HostileKind::Semicolon, &|u| u.contains(';'));
        all(HostileKind::Backslash, &|u| u.contains('\\'));
        all(HostileKind::DotSegment, &|u| {
            u.contains("/.") || u.contains("%2e")
        });
        all(HostileKind::Userinfo, &|u| {
            u.contains('@') || u.contains("%40")
        });
        all(HostileKind::LookAlikeHost, &|u| {
            !u.starts_with("https://mcp.example.com/")
        });
        all(HostileKind::Port, &|u| {
            u.starts_with("https://mcp.example.com:")
        });
        all(HostileKind::SiblingPath, &|u| {
            u.starts_with("https://mcp.example.com/mcp") && !u.contains("/mcp/")
        });
    }
}
