//! Whether a resource covers a request URL: the check that runs before a token is attached.

use std::borrow::Cow;
use std::fmt;

use url::Url;

use super::parse::Parsed;
use super::percent;

/// The answer to "may a token for this resource be sent to this URL?" (rules §4, §5, §17, §18).
///
/// Three outcomes, because a refusal is not the same as a mismatch: `NotCovered` means the URL
/// belongs to something else; `Refused` means the URL is one the crate will not send a token to
/// at all, whatever the resource (it carries userinfo, or servers could read its path in two
/// ways).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Coverage {
    /// Same origin, the resource's path is a segment-boundary prefix of the request path, and
    /// the query rule holds.
    Covered,
    /// The request URL is outside the resource.
    NotCovered,
    /// The request URL is refused whatever it would match.
    Refused(CoverageRefusal),
}

impl Coverage {
    /// `true` only for [`Coverage::Covered`].
    pub fn is_covered(&self) -> bool {
        matches!(self, Self::Covered)
    }
}

/// Why a request URL is refused outright.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CoverageRefusal {
    /// The request URL has userinfo (RFC 9110 §4.2.4; rules §18).
    #[error("the request URL has userinfo; tokens are never sent to such URLs")]
    Userinfo,
    /// The request path reads differently when percent-decoded until nothing changes (an
    /// escaped `%` that makes another escape, like `%252e`, counts), with `\` as `/`,
    /// `;params` removed and dot segments resolved, as some servers and proxy chains route it.
    #[error(
        "the request path {path:?} can be routed differently by servers that decode it (encoded '/', '\\', ';' parameters, dot segments, or an escaped '%' that decodes into another escape)"
    )]
    AmbiguousPath {
        /// The request path as `url` serialized it.
        path: String,
    },
    /// The request path has a `%` not followed by two hex digits.
    #[error("the request path {path:?} has a malformed percent-escape")]
    MalformedEscape {
        /// The request path as `url` serialized it.
        path: String,
    },
}

impl fmt::Display for Coverage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Covered => f.write_str("covered"),
            Self::NotCovered => f.write_str("not covered"),
            Self::Refused(reason) => write!(f, "refused: {reason}"),
        }
    }
}

/// `covers(R, U)` from the crate's rules, over a resource's canonical parts: the request URL is
/// checked first ([`check_request`], whatever the resource), then compared.
pub(crate) fn covers(resource: &Parsed, request: &Url) -> Coverage {
    match check_request(request) {
        Ok(path) => covers_checked(resource, request, &path),
        Err(refusal) => Coverage::Refused(refusal),
    }
}

/// Whether a token may go to `request` at all, whatever resource it is for: no userinfo
/// (RFC 9110 §4.2.4), and a path that every server reads the same way (see
/// [`CoverageRefusal::AmbiguousPath`]). Returns the path normalized (RFC 3986 §6.2.2), which is
/// what [`covers_checked`] compares.
pub(crate) fn check_request(request: &Url) -> Result<Cow<'_, str>, CoverageRefusal> {
    if !request.username().is_empty() || request.password().is_some() {
        return Err(CoverageRefusal::Userinfo);
    }
    request_path(request.path())
}

/// [`covers`] for a request that [`check_request`] accepted, with the path it returned: the
/// same origin, then the path and query rules.
pub(crate) fn covers_checked(resource: &Parsed, request: &Url, path: &str) -> Coverage {
    let same_origin = request.scheme() == resource.scheme.as_str()
        && request
            .host()
            .is_some_and(|host| resource.host() == Some(host))
        && request.port_or_known_default() == Some(resource.effective_port());
    if !same_origin {
        return Coverage::NotCovered;
    }
    let covered = match resource.query() {
        // A resource with a query covers exactly that path and that query.
        Some(query) => {
            *path == *resource.path()
                && request.query().is_some_and(|q| {
                    if q.contains('%') {
                        percent::normalize(q).is_ok_and(|q| q == query)
                    } else {
                        // Without an escape, normalization returns the query unchanged.
                        q == query
                    }
                })
        }
        // Without a query, the request's query does not matter; the path is a prefix on a
        // segment boundary.
        None => path_prefix_covers(resource.path(), path),
    };
    if covered {
        Coverage::Covered
    } else {
        Coverage::NotCovered
    }
}

/// A request path, normalized (rules §6), or why it is refused (rules §5).
///
/// Most request paths are plain: no `%`, `\` or `;`, and no `.` or `..` segment. Such a path
/// is already normalized and both readings of it are its segments, so it is borrowed as it is;
/// only the others are normalized and read both ways. This runs on every hand-out, so the
/// common case allocates nothing.
fn request_path(raw: &str) -> Result<Cow<'_, str>, CoverageRefusal> {
    if is_plain(raw) {
        return Ok(Cow::Borrowed(raw));
    }
    normalized_and_unambiguous(raw).map(Cow::Owned)
}

/// The general case of [`request_path`]: normalize, then compare the two readings.
fn normalized_and_unambiguous(raw: &str) -> Result<String, CoverageRefusal> {
    let Ok(path) = percent::normalize(raw) else {
        return Err(CoverageRefusal::MalformedEscape {
            path: raw.to_owned(),
        });
    };
    if rfc_reading(&path) != aggressive_reading(raw) {
        return Err(CoverageRefusal::AmbiguousPath {
            path: raw.to_owned(),
        });
    }
    Ok(path)
}

/// No escape (so `percent::normalize` would return it unchanged and decoding changes nothing),
/// no `\` and no `;` (so the aggressive reading splits and trims nothing more), and no dot
/// segment (so neither reading resolves anything): both readings are the plain segments.
/// A search for `%`, then [`reads_alike`]'s pass over the bytes (the one place the dot-segment
/// rule is written): this runs for every configured resource and every `aud` value on every
/// hand-out.
fn is_plain(path: &str) -> bool {
    // Without an escape, reading alike is exactly this (the dot-segment rule is the same).
    !path.as_bytes().contains(&b'%') && reads_alike(path)
}

/// Whether a (normalized) path reads differently under the RFC 3986 reading and the
/// aggressive one (rules §5).
pub(crate) fn is_ambiguous(normalized: &str) -> bool {
    // A path that reads alike both ways is known to without building either reading.
    !reads_alike(normalized) && rfc_reading(normalized) != aggressive_reading(normalized)
}

/// Whether both readings of `path` are sure to be its segments, each decoded once: every `%`
/// starts an escape, and none decodes to `/`, `\`, `;`, `%` or `.` (so one decoding leaves
/// no `%` for another, and splits, trims and resolves nothing the raw path does not); no `\`
/// and no `;` (so the aggressive reading splits and trims nothing more); and no dot segment
/// (so neither reading resolves anything). A plain path is one of these. One pass over the
/// bytes.
fn reads_alike(path: &str) -> bool {
    let bytes = path.as_bytes();
    // The current segment's length in characters, and whether it is only dots so far.
    let (mut len, mut dots) = (0usize, true);
    let mut i = 0;
    while i < bytes.len() {
        // A run of bytes none of the rules looks at is one step.
        let run = bytes[i..]
            .iter()
            .position(|&b| matches!(b, b'%' | b'\\' | b';' | b'/' | b'.'))
            .unwrap_or(bytes.len() - i);
        if run > 0 {
            (len, dots) = (len + run, false);
            i += run;
            continue;
        }
        match bytes[i] {
            b'%' => match percent::escape_at(bytes, i) {
                Some(b'/' | b'\\' | b';' | b'%' | b'.') | None => return false,
                Some(_) => {
                    (len, dots) = (len + 1, false);
                    i += 3;
                    continue;
                }
            },
            b'\\' | b';' => return false,
            b'/' => {
                if dots && (len == 1 || len == 2) {
                    return false;
                }
                (len, dots) = (0, true);
            }
            b => {
                len += 1;
                dots &= b == b'.';
            }
        }
        i += 1;
    }
    !(dots && (len == 1 || len == 2))
}

/// rules §2/§5: `/` covers everything; `/p` covers `/p`, `/p/` and `/p/…`; `/p/` covers `/p/…` only.
pub(crate) fn path_prefix_covers(resource_path: &str, request_path: &str) -> bool {
    if resource_path.ends_with('/') {
        return request_path.starts_with(resource_path);
    }
    match request_path.strip_prefix(resource_path) {
        Some(rest) => rest.is_empty() || rest.starts_with('/'),
        None => false,
    }
}

/// A reading of a path: its segments, kept as one byte string and the end of each segment, so
/// that a reading costs two allocations however many segments the path has. Two readings are
/// equal exactly when their lists of segments are.
#[derive(Debug, PartialEq, Eq)]
struct Reading {
    bytes: Vec<u8>,
    ends: Vec<usize>,
}

impl Reading {
    fn with_capacity(bytes: usize) -> Self {
        Self {
            bytes: Vec::with_capacity(bytes),
            ends: Vec::new(),
        }
    }

    fn push(&mut self, segment: &[u8]) {
        self.bytes.extend_from_slice(segment);
        self.end_segment();
    }

    fn end_segment(&mut self) {
        self.ends.push(self.bytes.len());
    }

    fn pop(&mut self) {
        self.ends.pop();
        self.bytes.truncate(self.ends.last().copied().unwrap_or(0));
    }

    fn len(&self) -> usize {
        self.ends.len()
    }
}

/// The RFC 3986 reading: the segments of the normalized path, each then fully decoded (an
/// encoded `/` stays inside its segment).
fn rfc_reading(normalized: &str) -> Reading {
    let mut reading = Reading::with_capacity(normalized.len());
    for segment in normalized.split('/') {
        let bytes = segment.as_bytes();
        // `percent::decode_all` of the segment, appended in place.
        let mut i = 0;
        while i < bytes.len() {
            if bytes[i] == b'%'
                && let Some(decoded) = percent::escape_at(bytes, i)
            {
                reading.bytes.push(decoded);
                i += 3;
            } else {
                reading.bytes.push(bytes[i]);
                i += 1;
            }
        }
        reading.end_segment();
    }
    reading
}

/// The aggressive reading: decode everything, again and again until nothing changes (a chain
/// of servers and proxies that each decode once), treat `\` as `/`, drop `;params` from each
/// segment, then resolve dot segments (RFC 3986 §5.2.4 over segments).
fn aggressive_reading(raw: &str) -> Reading {
    let decoded = percent::decode_to_fixed_point(raw);
    let mut out = Reading::with_capacity(decoded.len());
    let mut segments = decoded
        .split(|&b| b == b'/' || b == b'\\')
        .enumerate()
        .peekable();
    while let Some((i, segment)) = segments.next() {
        let segment = match segment.iter().position(|&b| b == b';') {
            Some(at) => &segment[..at],
            None => segment,
        };
        let last = segments.peek().is_none();
        match segment {
            b"." | b".." if i > 0 => {
                if segment == b".." && out.len() > 1 {
                    out.pop();
                }
                if last {
                    out.push(&[]);
                }
            }
            _ => out.push(segment),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readings_agree_on_plain_and_escaped_paths() {
        for path in ["/", "/mcp", "/mcp/", "/a%20b/c", "//mcp", "/caf%C3%A9"] {
            let normalized = percent::normalize(path).unwrap();
            assert_eq!(rfc_reading(&normalized), aggressive_reading(path), "{path}");
        }
    }

    #[test]
    fn readings_disagree_on_routing_tricks() {
        for path in [
            "/mcp/x%2F..%2F..%2Fadmin",
            "/mcp;jsessionid=1",
            "/mcp/x%5C..%5Cadmin",
            "/mcp/..;/admin",
            "/a%2Fb",
        ] {
            let normalized = percent::normalize(path).unwrap();
            assert_ne!(rfc_reading(&normalized), aggressive_reading(path), "{path}");
        }
    }

    /// A path the shortcut calls alike is one whose two readings are equal.
    fn alike_means_equal_readings(path: &str) {
        if reads_alike(path) {
            assert_eq!(rfc_reading(path), aggressive_reading(path), "{path}");
        }
    }

    #[test]
    fn paths_that_read_alike_have_equal_readings() {
        for path in [
            "/",
            "/mcp/caf%C3%A9",
            "/tenant-12/caf%C3%A9/x",
            "/a%20b/c%7E",
            "/%2E%2E/admin",
            "/a%2Fb",
            "/a%5Cb",
            "/a%3Bb",
            "/a%25%32%45",
            "/%%32%35",
            "/a/%zz",
            "/.../x",
        ] {
            alike_means_equal_readings(path);
        }
        assert!(reads_alike("/tenant-12/caf%C3%A9"));
        for not_alike in [
            "/%2E%2E/x",
            "/a%2Fb",
            "/a%25",
            "/%%32%35",
            "/a;b",
            "/./x",
            "/a/..",
        ] {
            assert!(!reads_alike(not_alike), "{not_alike}");
        }
    }

    proptest::proptest! {
        #[test]
        fn alike_paths_have_equal_readings(
            segments in proptest::collection::vec("(%[0-9A-Fa-f]{2}|%|[a.;\\\\2-5EeFfCc]){0,6}", 0..5),
        ) {
            alike_means_equal_readings(&format!("/{}", segments.join("/")));
        }
    }

    #[test]
    fn plain_paths_take_the_short_way_with_the_same_result() {
        let paths = [
            "/",
            "/mcp",
            "/mcp/",
            "/mcp/tools/call",
            "//mcp",
            "/a-b_c~d/e.f/.g/..h/h..",
            "/mcp/x:y@z!$&'()*+,=",
            "/mcp/caf%C3%A9",
            "/mcp/%7Euser",
            "/mcp/a%2Fb",
            "/mcp/x%2F..%2F..%2Fadmin",
            "/mcp;jsessionid=1",
            "/mcp/..;/admin",
            "/mcp/x%5C..%5Cadmin",
            "/mcp/./x",
            "/mcp/../x",
            "/mcp/.",
            "/mcp/..",
            "/mcp/%2e%2e/x",
            "/mcp/a%2",
            "/mcp/%zz",
        ];
        for raw in paths {
            let general = normalized_and_unambiguous(raw);
            assert_eq!(request_path(raw).map(Cow::into_owned), general, "{raw}");
            if is_plain(raw) {
                assert_eq!(general.as_deref(), Ok(raw), "{raw}");
            }
        }
        for plain in ["/", "/mcp/tools/call", "/.../x", "/.x/x./..x/x..", "//"] {
            assert!(is_plain(plain), "{plain}");
        }
        for not_plain in [
            "/mcp/caf%C3%A9",
            "/mcp/./x",
            "/mcp/../x",
            "/.",
            "/..",
            ".",
            "/a;b",
            "/a\\b",
        ] {
            assert!(!is_plain(not_plain), "{not_plain}");
        }
    }

    /// The readings as they were first written, one vector per segment: the reference the
    /// flat readings are checked against.
    fn reference_rfc_reading(normalized: &str) -> Vec<Vec<u8>> {
        normalized.split('/').map(percent::decode_all).collect()
    }

    fn reference_aggressive_reading(raw: &str) -> Vec<Vec<u8>> {
        let decoded: Vec<u8> = percent::decode_to_fixed_point(raw)
            .into_iter()
            .map(|b| if b == b'\\' { b'/' } else { b })
            .collect();
        let segments: Vec<&[u8]> = decoded.split(|&b| b == b'/').collect();
        let count = segments.len();
        let mut out: Vec<Vec<u8>> = Vec::with_capacity(count);
        for (i, segment) in segments.into_iter().enumerate() {
            let segment = match segment.iter().position(|&b| b == b';') {
                Some(at) => &segment[..at],
                None => segment,
            };
            let last = i + 1 == count;
            match segment {
                b"." | b".." if i > 0 => {
                    if segment == b".." && out.len() > 1 {
                        out.pop();
                    }
                    if last {
                        out.push(Vec::new());
                    }
                }
                _ => out.push(segment.to_vec()),
            }
        }
        out
    }

    fn segments(reading: &Reading) -> Vec<Vec<u8>> {
        let mut start = 0;
        reading
            .ends
            .iter()
            .map(|&end| {
                let segment = reading.bytes[start..end].to_vec();
                start = end;
                segment
            })
            .collect()
    }

    /// Every string of up to five characters over the characters that matter to the readings
    /// (escapes of `/`, `\`, `.` and `;` included), with and without a leading `/`.
    #[test]
    fn the_flat_readings_agree_with_the_reference_exhaustively() {
        const ALPHABET: &[u8] = b"/.a%;\\2FE5C";
        let n = ALPHABET.len() as u32;
        let mut checked = 0;
        for len in 0..=5u32 {
            for mut k in 0..n.pow(len) {
                let mut tail = String::new();
                for _ in 0..len {
                    tail.push(char::from(ALPHABET[(k % n) as usize]));
                    k /= n;
                }
                for raw in [format!("/{tail}"), tail.clone()] {
                    assert_eq!(
                        segments(&rfc_reading(&raw)),
                        reference_rfc_reading(&raw),
                        "{raw}"
                    );
                    assert_eq!(
                        segments(&aggressive_reading(&raw)),
                        reference_aggressive_reading(&raw),
                        "{raw}"
                    );
                    checked += 1;
                }
            }
        }
        assert!(checked > 300_000);
    }

    /// Every path of up to six characters over an alphabet of the characters that matter:
    /// the short way and the general one agree.
    #[test]
    fn the_short_way_agrees_with_the_general_one_exhaustively() {
        const ALPHABET: &[u8] = b"/.a%;\\2F";
        let mut checked = 0;
        for len in 0..=5u32 {
            for mut n in 0..(ALPHABET.len() as u32).pow(len) {
                let mut raw = String::from("/");
                for _ in 0..len {
                    raw.push(char::from(ALPHABET[(n % ALPHABET.len() as u32) as usize]));
                    n /= ALPHABET.len() as u32;
                }
                assert_eq!(
                    request_path(&raw).map(Cow::into_owned),
                    normalized_and_unambiguous(&raw),
                    "{raw}"
                );
                checked += 1;
            }
        }
        assert!(checked > 30_000);
    }

    #[test]
    fn prefix_is_on_segment_boundaries() {
        assert!(path_prefix_covers("/", "/anything"));
        assert!(path_prefix_covers("/mcp", "/mcp"));
        assert!(path_prefix_covers("/mcp", "/mcp/"));
        assert!(path_prefix_covers("/mcp", "/mcp/x"));
        assert!(!path_prefix_covers("/mcp", "/mcpx"));
        assert!(!path_prefix_covers("/mcp/", "/mcp"));
        assert!(path_prefix_covers("/mcp/", "/mcp/x"));
    }
}
