//! The rule every redirect URI follows (MCP 2025-11-25 §11.3, RFC 6749 §3.1.2), and whether a
//! redirect came back to it. Handlers check their redirect URI with it when they are made, the
//! cache builder when a client registration is configured, and the loopback listener and the
//! completion of an authorization when the redirect arrives (with the comparison of its
//! `state` that both make).

use url::Url;

use crate::audience::redacted_url;
use crate::error::{BuildError, Error};

/// Why a redirect URI cannot be used, or `None` when it can: MCP 2025-11-25 §11.3 (https, or
/// http on a loopback host) and RFC 6749 §3.1.2 (no fragment). The same rule as the client
/// registration check in the cache builder.
pub(crate) fn redirect_uri_problem(uri: &Url) -> Option<String> {
    let shown = redacted_url(uri);
    if uri.fragment().is_some() {
        return Some(format!(
            "the redirect URI {shown} has a fragment; remove it (RFC 6749 §3.1.2)"
        ));
    }
    let loopback = matches!(uri.host_str(), Some("localhost" | "127.0.0.1" | "[::1]"));
    if uri.scheme() != "https" && !(uri.scheme() == "http" && loopback) {
        return Some(format!(
            "the redirect URI {shown} is neither https nor http on loopback (127.0.0.1, [::1] or localhost)"
        ));
    }
    None
}

/// The parameters an authorization response adds to the redirect URI's query: RFC 6749
/// §4.1.2 and §4.1.2.1, RFC 9207 §2.
const RESPONSE_PARAMETERS: [&str; 6] = [
    "code",
    "state",
    "iss",
    "error",
    "error_description",
    "error_uri",
];

/// Whether `redirect` came back to `redirect_uri`: same scheme, host, port and path, and the
/// same query once the response's own parameters are set aside (RFC 6749 §3.1.2: the server
/// keeps the redirect URI's query and adds to it), so `…/cb?tenant=a` is not `…/cb?tenant=b`,
/// nor `…/cb?tenant=a&tenant=b`.
pub(crate) fn same_endpoint(redirect: &Url, redirect_uri: &Url) -> bool {
    let rest = |url: &Url| -> Vec<(String, String)> {
        url.query_pairs()
            .filter(|(name, _)| !RESPONSE_PARAMETERS.contains(&name.as_ref()))
            .map(|(name, value)| (name.into_owned(), value.into_owned()))
            .collect()
    };
    redirect.scheme() == redirect_uri.scheme()
        && redirect.host() == redirect_uri.host()
        && redirect.port_or_known_default() == redirect_uri.port_or_known_default()
        && redirect.path() == redirect_uri.path()
        && rest(redirect) == rest(redirect_uri)
}

/// Compares without an early exit, so the time taken says nothing about the expected value (a
/// redirect's `state`, RFC 6749 §10.12).
pub(crate) fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

pub(crate) fn check_redirect_uri(uri: &Url) -> Result<(), Error> {
    match redirect_uri_problem(uri) {
        None => Ok(()),
        Some(reason) => Err(Error::Configuration(BuildError::Setting {
            setting: "redirect_uri",
            reason,
        })),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(s: &str) -> Url {
        Url::parse(s).unwrap()
    }

    #[test]
    fn redirect_uris_are_https_or_http_on_loopback_without_fragment() {
        for ok in [
            "https://app.example/callback",
            "http://127.0.0.1:53682/callback",
            "http://[::1]:8080/cb",
            "http://localhost/cb",
            "https://app.example/cb?tenant=a",
        ] {
            assert_eq!(redirect_uri_problem(&url(ok)), None, "{ok}");
        }
        for (bad, reason) in [
            (
                "http://app.example/cb",
                "the redirect URI http://app.example/cb is neither https nor http on loopback (127.0.0.1, [::1] or localhost)",
            ),
            (
                "http://127.0.0.1:1/cb#x",
                "the redirect URI http://127.0.0.1:1/cb has a fragment; remove it (RFC 6749 §3.1.2)",
            ),
            (
                "myapp://cb",
                "the redirect URI myapp://cb is neither https nor http on loopback (127.0.0.1, [::1] or localhost)",
            ),
            (
                "http://127.0.0.1.evil.example/cb?s=1",
                "the redirect URI http://127.0.0.1.evil.example/cb?… is neither https nor http on loopback (127.0.0.1, [::1] or localhost)",
            ),
        ] {
            assert_eq!(
                redirect_uri_problem(&url(bad)).as_deref(),
                Some(reason),
                "{bad}"
            );
        }
    }

    #[test]
    fn a_redirect_comes_back_to_the_redirect_uri_with_its_query() {
        let tenant_a = url("https://app.example/cb?tenant=a");
        for (redirect, same) in [
            ("https://app.example/cb?tenant=a&code=c&state=s&iss=x", true),
            ("https://app.example/cb?code=c&tenant=a&state=s", true),
            (
                "https://app.example/cb?tenant=a&error=e&error_description=d&error_uri=u",
                true,
            ),
            ("https://app.example/cb?tenant=b&code=c&state=s", false),
            ("https://app.example/cb?code=c&state=s", false),
            ("https://app.example/cb?tenant=a&tenant=b&code=c", false),
            ("https://app.example/cb?tenant=a&admin=1&code=c", false),
            ("https://app.example/cb?tenant=A&code=c", false),
            ("https://app.example/cb/?tenant=a&code=c", false),
            ("https://app.example:444/cb?tenant=a&code=c", false),
            ("http://app.example/cb?tenant=a&code=c", false),
        ] {
            assert_eq!(same_endpoint(&url(redirect), &tenant_a), same, "{redirect}");
        }
        let plain = url("http://127.0.0.1:4000/callback");
        assert!(same_endpoint(
            &url("http://127.0.0.1:4000/callback?code=c&state=s"),
            &plain
        ));
        assert!(!same_endpoint(
            &url("http://127.0.0.1:4000/callback?code=c&x=1"),
            &plain
        ));
    }
}
