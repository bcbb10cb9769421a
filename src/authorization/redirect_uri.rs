//! The rule every redirect URI follows (MCP 2025-11-25 §11.3, RFC 6749 §3.1.2), and whether a
//! redirect came back to it. Handlers check their redirect URI with it when they are made, the
//! cache builder when a client registration is configured, and the completion of an
//! authorization when the redirect arrives.

use url::Url;

use crate::audience::redacted_url;
use crate::{BuildError, Error};

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

/// Whether `redirect` went to the endpoint `redirect_uri` names: same scheme, host, port and
/// path (the query carries the response; the rest must be the registered URI's).
pub(crate) fn same_endpoint(redirect: &Url, redirect_uri: &Url) -> bool {
    redirect.scheme() == redirect_uri.scheme()
        && redirect.host() == redirect_uri.host()
        && redirect.port_or_known_default() == redirect_uri.port_or_known_default()
        && redirect.path() == redirect_uri.path()
}

pub(super) fn check_redirect_uri(uri: &Url) -> Result<(), Error> {
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

}
