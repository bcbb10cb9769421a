//! A reference for the coverage invariant: how a server that reads request paths the most
//! aggressive way routes them. Written for the invariant, simple on purpose, and independent of
//! the crate's own readings in `resource::coverage`, so that a fault there is not repeated here.

use url::Url;

/// Whether a server that reads paths the most aggressive way routes `request` inside
/// `resource`: it decodes every `%XX` again and again until nothing changes (a proxy and an
/// application that each decode once, or a framework that decodes until stable), then takes `\`
/// as `/`, drops `;params` from each segment and resolves dot segments (RFC 3986 §5.2.4);
/// with `merge_slashes` it also drops empty segments first (nginx's default `merge_slashes`).
/// Both paths are read the same way; the resource's segments must be a prefix of the
/// request's, on a segment boundary, and a resource with a query names exactly its path.
pub(super) fn routes_inside(resource: &Url, request: &Url, merge_slashes: bool) -> bool {
    let own = routed_segments(resource.path(), merge_slashes);
    let theirs = routed_segments(request.path(), merge_slashes);
    if resource.query().is_some() {
        return theirs == own;
    }
    match own.split_last() {
        // `/p/` (and `/`): the request must go below it.
        Some((last, parent)) if last.is_empty() => {
            theirs.len() > parent.len() && theirs.starts_with(parent)
        }
        _ => theirs.starts_with(&own),
    }
}

/// The segments a path routes to, read as [`routes_inside`] describes.
fn routed_segments(path: &str, merge_slashes: bool) -> Vec<Vec<u8>> {
    let mut bytes = path.as_bytes().to_vec();
    loop {
        let decoded = decode_once(&bytes);
        if decoded == bytes {
            break;
        }
        bytes = decoded;
    }
    let mut segments: Vec<&[u8]> = bytes.split(|&b| b == b'/' || b == b'\\').collect();
    if merge_slashes {
        // `a//b` is `a/b`; the empty segment before the leading `/` and the one after a
        // trailing `/` are not merged away.
        let last = segments.len() - 1;
        segments = segments
            .into_iter()
            .enumerate()
            .filter(|&(i, segment)| i == 0 || i == last || !segment.is_empty())
            .map(|(_, segment)| segment)
            .collect();
    }
    let mut routed: Vec<Vec<u8>> = Vec::new();
    for (i, segment) in segments.iter().enumerate() {
        let segment = segment.split(|&b| b == b';').next().unwrap_or_default();
        let last = i + 1 == segments.len();
        match segment {
            b"." | b".." if i > 0 => {
                // The first segment is the empty one before the leading `/`: `..` never
                // removes it.
                if segment == b".." && routed.len() > 1 {
                    routed.pop();
                }
                // A path ending in a dot segment names a directory: `/a/b/..` is `/a/`.
                if last {
                    routed.push(Vec::new());
                }
            }
            _ => routed.push(segment.to_vec()),
        }
    }
    routed
}

/// One pass of percent-decoding: every `%` followed by two hex digits becomes that byte.
fn decode_once(bytes: &[u8]) -> Vec<u8> {
    let hex = |b: u8| char::from(b).to_digit(16);
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let escape = match (bytes[i], bytes.get(i + 1), bytes.get(i + 2)) {
            (b'%', Some(&hi), Some(&lo)) => hex(hi).zip(hex(lo)),
            _ => None,
        };
        match escape {
            Some((hi, lo)) => {
                out.push((hi * 16 + lo) as u8);
                i += 3;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn routed(path: &str, merge_slashes: bool) -> Vec<String> {
        routed_segments(path, merge_slashes)
            .into_iter()
            .map(|segment| String::from_utf8_lossy(&segment).into_owned())
            .collect()
    }

    /// The reference reading itself, on the paths the coverage invariant is about.
    #[test]
    fn the_server_reading_decodes_until_nothing_changes() {
        let cases: &[(&str, &[&str], &[&str])] = &[
            ("/mcp/tools", &["", "mcp", "tools"], &["", "mcp", "tools"]),
            ("/mcp/", &["", "mcp", ""], &["", "mcp", ""]),
            ("/", &["", ""], &["", ""]),
            ("/mcp/%252e%252e/admin", &["", "admin"], &["", "admin"]),
            (
                "/mcp/%25%32%65%25%32%65/admin",
                &["", "admin"],
                &["", "admin"],
            ),
            ("/mcp/%25252e%25252e/admin", &["", "admin"], &["", "admin"]),
            (
                "/mcp/x%252f..%252fadmin",
                &["", "mcp", "admin"],
                &["", "mcp", "admin"],
            ),
            ("/mcp/%255c..", &["", "mcp", ""], &["", ""]),
            (
                "/mcp//x//",
                &["", "mcp", "", "x", "", ""],
                &["", "mcp", "x", ""],
            ),
            (
                "/mcp/%255c..%255c..%255cadmin",
                &["", "admin"],
                &["", "admin"],
            ),
            ("/a/b/..", &["", "a", ""], &["", "a", ""]),
            ("/..", &["", ""], &["", ""]),
            ("/a;x=1/b;y", &["", "a", "b"], &["", "a", "b"]),
            ("/a%3Bx/b", &["", "a", "b"], &["", "a", "b"]),
            ("/a%2", &["", "a%2"], &["", "a%2"]),
            ("/a%zz%41", &["", "a%zzA"], &["", "a%zzA"]),
            ("//a", &["", "", "a"], &["", "a"]),
        ];
        for (path, plain, merged) in cases {
            assert_eq!(routed(path, false), *plain, "{path}");
            assert_eq!(routed(path, true), *merged, "{path} (merging slashes)");
        }
    }

    #[test]
    fn routing_inside_is_a_segment_prefix() {
        let url = |s: &str| Url::parse(s).unwrap();
        let cases = [
            ("https://h/mcp", "https://h/mcp", true),
            ("https://h/mcp", "https://h/mcp/x", true),
            ("https://h/mcp", "https://h/mcpx", false),
            ("https://h/mcp", "https://h/mcp/%252e%252e/admin", false),
            ("https://h/mcp", "https://h/mcp/x%252f..%252fadmin", true),
            ("https://h/mcp/", "https://h/mcp", false),
            ("https://h/mcp/", "https://h/mcp/", true),
            ("https://h/mcp/", "https://h/mcp/x", true),
            ("https://h/", "https://h/", true),
            ("https://h/", "https://h/%252e%252e", true),
            ("https://h/mcp?v=1", "https://h/mcp?v=2", true),
            ("https://h/mcp?v=1", "https://h/mcp/x?v=1", false),
        ];
        for (resource, request, inside) in cases {
            assert_eq!(
                routes_inside(&url(resource), &url(request), false),
                inside,
                "{resource} {request}"
            );
        }
    }
}
