//! `arbitrary::Arbitrary` for the crate's value types (feature `arbitrary`): every value is
//! built valid from raw bytes, by writing a string the parser accepts, so a fuzz target spends
//! its inputs on valid resources, scopes and keys rather than on parse errors.

use arbitrary::{Arbitrary, Result, Unstructured};

use crate::key::CacheKey;
use crate::resource::{ParseOptions, ResourceUri};
use crate::scope::ScopeSet;

/// Hosts whose Unicode form survives UTS-46 ToASCII and back unchanged (rules §7).
const UNICODE_LABELS: &[&str] = &["münchen", "bücher", "пример", "例え", "café", "ελλάδα"];

/// Characters of a path segment or query that no reading of a path treats specially: RFC 3986
/// unreserved and sub-delims less `;` (a `;param`, which servers drop), with `:` and `@`.
const PLAIN: &[u8] =
    b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-._~!$&'()*+,=:@";

/// Escapes a resource may hold: of unreserved characters (which the key decodes), of a space
/// and of UTF-8 bytes (which it keeps, in uppercase hex). None decodes to `/`, `\`, `;`, `%`, a
/// control character or a dot.
const ESCAPES: &[&str] = &[
    "%41",
    "%7e",
    "%5F",
    "%20",
    "%c3%a9",
    "%E2%82%AC",
    "%22",
    "%3C",
];

/// A resource identifier string that `ResourceUri::parse_with` accepts with the returned
/// options, written in a non-canonical form as often as in the canonical one (uppercase scheme
/// and host, explicit default ports, leading zeros, lowercase escapes) so that the key's
/// normalization is exercised.
pub(crate) fn resource_text(u: &mut Unstructured<'_>) -> Result<(String, ParseOptions)> {
    let mut options = ParseOptions::strict();
    let (host, loopback) = host(u)?;
    let http = loopback && u.ratio(1, 4)?;
    if http {
        options = options.allow_insecure_http_on_loopback(true);
    }
    let scheme = match (http, u.int_in_range(0..=3)?) {
        (true, 0) => "HTTP",
        (true, _) => "http",
        (false, 0) => "HTTPS",
        (false, _) => "https",
    };
    let mut text = format!("{scheme}://{host}");
    match u.int_in_range(0..=5)? {
        0 => text.push_str(if http { ":80" } else { ":443" }),
        1 => {
            let port: u16 = u.int_in_range(1..=65535)?;
            text.push_str(&format!(":{port}"));
        }
        2 => {
            let port: u16 = u.int_in_range(1..=9999)?;
            text.push_str(&format!(":0{port}"));
        }
        3 => text.push(':'),
        _ => {}
    }
    let segments = u.int_in_range(0..=4)?;
    for _ in 0..segments {
        text.push('/');
        text.push_str(&segment(u, false)?);
    }
    if segments > 0 && u.ratio(1, 4)? {
        text.push('/');
    }
    if u.ratio(1, 4)? {
        if segments == 0 && u.ratio(1, 2)? {
            text.push('/');
        }
        text.push('?');
        let mut query = segment(u, true)?;
        // An empty `?` is refused (rules §4).
        if query.is_empty() {
            query.push('q');
        }
        if u.ratio(1, 3)? {
            query.push_str("/?x=1");
        }
        text.push_str(&query);
    }
    Ok((text, options))
}

/// A host, and whether it is loopback (so that http may be allowed).
fn host(u: &mut Unstructured<'_>) -> Result<(String, bool)> {
    Ok(match u.int_in_range(0..=9)? {
        0 => ("localhost".to_owned(), true),
        1 => {
            let [a, b, c, d]: [u8; 4] = u.arbitrary()?;
            let loopback = a == 127;
            (format!("{a}.{b}.{c}.{d}"), loopback)
        }
        2 => {
            let mut segments: [u16; 8] = u.arbitrary()?;
            // Mapped, compatible and NAT64 forms embed IPv4 and are refused (rules §7): a
            // first segment outside 0 and 0x64 rules all of them out.
            if segments[0] == 0 || segments[0] == 0x64 {
                segments[0] = 0x2001;
            }
            let addr = std::net::Ipv6Addr::from(segments);
            let text = if u.ratio(1, 2)? {
                addr.to_string().to_uppercase()
            } else {
                addr.to_string()
            };
            (format!("[{text}]"), false)
        }
        3 => ("[::1]".to_owned(), true),
        4 => {
            let unicode = u.choose(UNICODE_LABELS)?;
            (format!("{unicode}.{}", domain(u)?), false)
        }
        _ => (domain(u)?, false),
    })
}

/// A registered name of one to three labels, the last starting with a letter (a numeric last
/// label would read as IPv4), in mixed case.
fn domain(u: &mut Unstructured<'_>) -> Result<String> {
    const LETTERS: &[u8] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ";
    const LABEL: &[u8] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
    let count = u.int_in_range(1..=3)?;
    let mut labels = Vec::with_capacity(count);
    for i in 0..count {
        let len = u.int_in_range(1..=10)?;
        let mut label = String::with_capacity(len + 1);
        if i + 1 == count {
            label.push(char::from(*u.choose(LETTERS)?));
        }
        for at in 0..len {
            // A hyphen inside a label, never at its ends nor as the `--` of an A-label prefix.
            let hyphen = at > 0 && at + 1 < len && at != 2 && at != 3 && u.ratio(1, 8)?;
            label.push(if hyphen {
                '-'
            } else {
                char::from(*u.choose(LABEL)?)
            });
        }
        labels.push(label);
    }
    Ok(labels.join("."))
}

/// A path segment (or query) of plain characters and harmless escapes; never `.` or `..`,
/// however it is escaped. A query has no `'`: `url`, the crate's second net, escapes it there
/// (WHATWG's special-query set), and the crate refuses a resource the two read differently.
fn segment(u: &mut Unstructured<'_>, query: bool) -> Result<String> {
    let len = u.int_in_range(0..=8)?;
    let mut out = String::new();
    for _ in 0..len {
        if u.ratio(1, 6)? {
            out.push_str(u.choose(ESCAPES)?);
        } else {
            let c = char::from(*u.choose(PLAIN)?);
            out.push(if query && c == '\'' { '(' } else { c });
        }
    }
    // `.` and `..` are dot segments (rules §19); `%2E` cannot appear (not in ESCAPES), and
    // `~` cannot make one.
    if out == "." || out == ".." {
        out.push('x');
    }
    Ok(out)
}

/// A valid resource identifier built from the bytes (see the module documentation). With
/// exhausted input it is `https://a/`-like; should the string ever be refused (a bug in the
/// generator, which the unit tests look for), the resource is `https://example.com/`.
impl<'a> Arbitrary<'a> for ResourceUri {
    fn arbitrary(u: &mut Unstructured<'a>) -> Result<Self> {
        let (text, options) = resource_text(u)?;
        match ResourceUri::parse_with(&text, &options) {
            Ok(resource) => Ok(resource),
            Err(_) => ResourceUri::parse("https://example.com/")
                .map_err(|_| arbitrary::Error::IncorrectFormat),
        }
    }
}

/// RFC 6749 §3.3 scope-token characters: visible ASCII except `"` and `\`.
const SCOPE_CHARS: &[u8] =
    b"!#$%&'()*+,-./0123456789:;<=>?@ABCDEFGHIJKLMNOPQRSTUVWXYZ[]^_`abcdefghijklmnopqrstuvwxyz{|}~";

/// Known scopes, so that sets overlap often enough for supersets and unions to matter.
const KNOWN_SCOPES: &[&str] = &[
    "openid",
    "offline_access",
    "files:read",
    "files:write",
    "mcp",
];

/// A set of zero to six scopes, known ones and ones of arbitrary scope-token characters.
impl<'a> Arbitrary<'a> for ScopeSet {
    fn arbitrary(u: &mut Unstructured<'a>) -> Result<Self> {
        let count = u.int_in_range(0..=6)?;
        let mut items = Vec::with_capacity(count);
        for _ in 0..count {
            if u.ratio(1, 2)? {
                items.push((*u.choose(KNOWN_SCOPES)?).to_owned());
            } else {
                let len = u.int_in_range(1..=12)?;
                let mut item = String::with_capacity(len);
                for _ in 0..len {
                    item.push(char::from(*u.choose(SCOPE_CHARS)?));
                }
                items.push(item);
            }
        }
        ScopeSet::from_items(items).map_err(|_| arbitrary::Error::IncorrectFormat)
    }
}

/// A key with an issuer (an https URL, or any string: the key compares it exactly), a resource,
/// scopes, a client id and, half the time, an account.
impl<'a> Arbitrary<'a> for CacheKey {
    fn arbitrary(u: &mut Unstructured<'a>) -> Result<Self> {
        let issuer = if u.ratio(3, 4)? {
            ResourceUri::arbitrary(u)?.wire().to_owned()
        } else {
            String::arbitrary(u)?
        };
        let resource = ResourceUri::arbitrary(u)?;
        let scopes = ScopeSet::arbitrary(u)?;
        let client_id = String::arbitrary(u)?;
        let key = CacheKey::new(&issuer, &resource, &scopes, &client_id);
        Ok(if u.ratio(1, 2)? {
            key.with_account(&String::arbitrary(u)?)
        } else {
            key
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{RngCore as _, SeedableRng as _};

    /// Raw inputs of every length from many seeds, as a fuzzer would give them.
    fn inputs() -> impl Iterator<Item = Vec<u8>> {
        let mut rng = rand::rngs::StdRng::seed_from_u64(20);
        (0..4000).map(move |i| {
            let mut bytes = vec![0; i % 300];
            rng.fill_bytes(&mut bytes);
            bytes
        })
    }

    /// The generator writes only identifiers the parser accepts: the fallback of `arbitrary`
    /// is never needed. Each generated resource's key is a fixed point.
    #[test]
    fn every_generated_resource_string_parses() {
        let mut hosts = std::collections::BTreeSet::new();
        for bytes in inputs() {
            let mut u = Unstructured::new(&bytes);
            let (text, options) = resource_text(&mut u).unwrap();
            let resource = ResourceUri::parse_with(&text, &options)
                .unwrap_or_else(|e| panic!("generated {text:?}, refused: {e}"));
            let again = ResourceUri::parse_with(resource.key(), &options).unwrap();
            assert_eq!(again.key(), resource.key());
            let kind = match resource.as_url().host() {
                Some(url::Host::Domain(d)) if d.contains("xn--") => "idn",
                Some(url::Host::Domain(_)) => "domain",
                Some(url::Host::Ipv4(_)) => "ipv4",
                Some(url::Host::Ipv6(_)) => "ipv6",
                None => "none",
            };
            hosts.insert(kind);
        }
        assert_eq!(
            hosts.into_iter().collect::<Vec<_>>(),
            ["domain", "idn", "ipv4", "ipv6"]
        );
    }

    /// Scope sets and keys built from the same inputs are valid: the set's canonical string
    /// parses back to it, and a key's parts read back as given.
    #[test]
    fn every_generated_scope_set_and_key_is_valid() {
        let mut non_empty = 0;
        for bytes in inputs() {
            let mut u = Unstructured::new(&bytes);
            let scopes = ScopeSet::arbitrary(&mut u).unwrap();
            assert_eq!(ScopeSet::parse(scopes.as_str()).unwrap(), scopes);
            non_empty += usize::from(!scopes.is_empty());
            let key = CacheKey::arbitrary(&mut u).unwrap();
            let rebuilt =
                CacheKey::new(key.issuer(), key.resource(), key.scopes(), key.client_id());
            let rebuilt = match key.account() {
                Some(account) => rebuilt.with_account(account),
                None => rebuilt,
            };
            assert_eq!(rebuilt, key);
            assert_eq!(
                ResourceUri::parse_with(
                    key.resource().key(),
                    &ParseOptions::strict().allow_insecure_http_on_loopback(true)
                )
                .unwrap(),
                *key.resource()
            );
        }
        assert!(non_empty > 1000, "{non_empty} non-empty sets");
    }
}
