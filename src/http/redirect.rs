//! Following redirects in the crate (reqwest's own following is off): which status codes are
//! redirects, which of them a token-bearing client may follow at all, and what the next request
//! carries. The token is attached again (or not) by the caller's loop, which resolves the new
//! URL and decides afresh for every hop.
//!
//! A server the client did not choose decides where a redirect goes, so each hop is checked
//! before anything is sent there:
//! - never from https to http (the request and its answer would cross the network in clear);
//! - never into the client's own network: a hop to a loopback, private, link-local, shared,
//!   unique-local or otherwise internal literal address (or `localhost`) is refused unless the
//!   request started at an address of that same kind (a developer's servers on 127.0.0.1);
//! - across origins, only what any origin may see: a cross-origin hop that would re-send the
//!   request's method and body (a 307 or 308 of a POST, PUT, PATCH or DELETE; a 301 or 302 of
//!   a method other than GET, HEAD and POST) is refused unless the caller allows it, and every
//!   cross-origin hop keeps only [`SAFE_HEADERS`] (and [`SAFE_BODY_HEADERS`] with a body it
//!   re-sends).
//!
//! Host names are checked as written: a name that resolves to an internal address is not seen
//! here (the resolver of the HTTP client below decides that).

use http::header::{
    ACCEPT, ACCEPT_ENCODING, ACCEPT_LANGUAGE, AUTHORIZATION, CACHE_CONTROL, CONTENT_ENCODING,
    CONTENT_LANGUAGE, CONTENT_LENGTH, CONTENT_TYPE, COOKIE, HeaderName, LOCATION, PRAGMA,
    PROXY_AUTHORIZATION, TRANSFER_ENCODING, USER_AGENT, WWW_AUTHENTICATE,
};
use http::{HeaderMap, Method, StatusCode};
use reqwest::Request;
use url::Url;

use crate::audience::redacted_url;
use crate::discovery::address_class;
use crate::error::Error;

/// The headers a request keeps when a redirect takes it to another origin: content
/// negotiation and caching, nothing that identifies the caller or a session.
pub(crate) const SAFE_HEADERS: [HeaderName; 6] = [
    ACCEPT,
    ACCEPT_ENCODING,
    ACCEPT_LANGUAGE,
    USER_AGENT,
    CACHE_CONTROL,
    PRAGMA,
];

/// With a body re-sent to another origin (only where the caller allowed it), the headers that
/// describe the body too.
pub(crate) const SAFE_BODY_HEADERS: [HeaderName; 4] = [
    CONTENT_TYPE,
    CONTENT_LANGUAGE,
    CONTENT_ENCODING,
    CONTENT_LENGTH,
];

/// One redirect to follow.
pub(crate) struct Hop {
    from: Url,
    to: Url,
    status: StatusCode,
}

/// `Some` when the response is a redirect: `Ok` with where it goes, `Err` when its `Location`
/// is missing or unusable, or leads where a token-bearing request must not go (see the module
/// docs). `start` is the URL the request was first sent to.
pub(crate) fn hop(
    start: &Url,
    from: &Url,
    status: StatusCode,
    headers: &HeaderMap,
) -> Option<Result<Hop, Error>> {
    if !matches!(status.as_u16(), 301 | 302 | 303 | 307 | 308) {
        return None;
    }
    let refuse = |detail: String| Error::Redirect {
        url: redacted_url(from),
        detail,
    };
    let Some(location) = headers.get(LOCATION).and_then(|v| v.to_str().ok()) else {
        return Some(Err(refuse("the redirect has no readable Location".into())));
    };
    let to = match from.join(location) {
        Ok(to) => to,
        Err(_) => {
            return Some(Err(refuse(
                "the redirect's Location is not a valid URL".into(),
            )));
        }
    };
    Some(check(start, from, &to).map_err(refuse).map(|()| Hop {
        from: from.clone(),
        to,
        status,
    }))
}

/// Whether a hop from `from` to `to` may be followed by a request that started at `start`;
/// the error says why not, naming the hop.
fn check(start: &Url, from: &Url, to: &Url) -> Result<(), String> {
    let shown = redacted_url(to);
    if !matches!(to.scheme(), "https" | "http") {
        return Err(format!(
            "the redirect to {shown} leads to a scheme other than http(s)"
        ));
    }
    if from.scheme() == "https" && to.scheme() == "http" {
        return Err(format!(
            "the redirect to {shown} downgrades https to plain http; the request is not sent there"
        ));
    }
    let Some(host) = to.host() else {
        return Err(format!("the redirect to {shown} has no host"));
    };
    if let Some(class) = address_class(&host) {
        let started_there = start.host().and_then(|h| address_class(&h)) == Some(class);
        if !started_there {
            return Err(format!(
                "the redirect to {shown} leads to a {class} address, into the client's own network; a request that did not start at such an address never follows a server there"
            ));
        }
    }
    Ok(())
}

/// The request for the next hop, from a copy of the previous one: 303 (and 301/302 after a
/// POST) become a GET without a body, 307 and 308 repeat the method and body. Credentials are
/// removed. Across origins, only [`SAFE_HEADERS`] stay, and a hop that would re-send the
/// method and body (any method but GET and HEAD, kept by a 307 or 308, or by a 301 or 302 of a
/// method other than POST) is refused unless `replay_across_origins`, when
/// [`SAFE_BODY_HEADERS`] stay too.
pub(crate) fn follow(
    hop: Hop,
    previous: Option<Request>,
    replay_across_origins: bool,
) -> Result<Request, Error> {
    let not_replayable = || Error::NotReplayable {
        url: redacted_url(&hop.from),
    };
    let previous = previous.ok_or_else(not_replayable)?;
    let same_origin = hop.from.origin() == hop.to.origin();
    let method = previous.method().clone();
    let to_get = hop.status == StatusCode::SEE_OTHER && method != Method::HEAD
        || matches!(hop.status.as_u16(), 301 | 302) && method == Method::POST;
    // A GET or HEAD carries no body, and with the safe headers only it sends another origin
    // what a 302 would; any other method kept across origins re-sends the request itself.
    let replays = !to_get && !matches!(method, Method::GET | Method::HEAD);
    if !same_origin && replays && !replay_across_origins {
        return Err(Error::Redirect {
            url: redacted_url(&hop.from),
            detail: format!(
                "the {} redirect to {} would re-send the {method} request (its body and headers) to another origin; allow it with allow_cross_origin_replay(true) on the client or middleware if that server is trusted",
                hop.status.as_u16(),
                redacted_url(&hop.to)
            ),
        });
    }
    let mut next = if to_get {
        let mut get = Request::new(Method::GET, hop.to.clone());
        *get.headers_mut() = previous.headers().clone();
        for name in [CONTENT_TYPE, CONTENT_LENGTH, TRANSFER_ENCODING] {
            get.headers_mut().remove(name);
        }
        *get.timeout_mut() = previous.timeout().copied();
        get
    } else {
        let mut same = previous;
        *same.url_mut() = hop.to.clone();
        same
    };
    let headers = next.headers_mut();
    headers.remove(AUTHORIZATION);
    headers.remove(WWW_AUTHENTICATE);
    if !same_origin {
        let body = next.body().is_some();
        let kept: HeaderMap = next
            .headers()
            .iter()
            .filter(|(name, _)| {
                SAFE_HEADERS.contains(name) || (body && SAFE_BODY_HEADERS.contains(name))
            })
            .map(|(name, value)| (name.clone(), value.clone()))
            .collect();
        *next.headers_mut() = kept;
        debug_assert!(!next.headers().contains_key(COOKIE));
        debug_assert!(!next.headers().contains_key(PROXY_AUTHORIZATION));
    }
    Ok(next)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(s: &str) -> Url {
        Url::parse(s).unwrap()
    }

    #[test]
    fn hops_into_the_clients_network_are_refused_from_public_starts() {
        let start = url("https://mcp.example.com/mcp");
        for to in [
            "https://127.0.0.2:8080/admin",
            "https://localhost/admin",
            "https://10.0.0.1/",
            "https://192.168.1.1/",
            "https://172.16.0.1/",
            "https://169.254.169.254/latest/meta-data/",
            "https://100.64.0.1/",
            "https://[::1]/",
            "https://[fd00::1]/",
            "https://[fe80::1]/",
            "https://[::ffff:127.0.0.1]/",
            "https://0.0.0.0/",
        ] {
            let error = check(&start, &start, &url(to)).unwrap_err();
            assert!(error.contains("client's own network"), "{to}: {error}");
        }
        assert!(check(&start, &start, &url("https://api.example.com/x")).is_ok());
    }

    #[test]
    fn a_start_at_an_internal_address_may_stay_in_that_kind_of_address() {
        let start = url("http://127.0.0.1:8080/mcp");
        assert!(check(&start, &start, &url("http://127.0.0.2:9/x")).is_ok());
        assert!(check(&start, &start, &url("http://localhost:9/x")).is_ok());
        // Another kind is still refused: a developer's loopback server cannot steer the client
        // to the cloud metadata service.
        let error = check(&start, &start, &url("http://169.254.169.254/")).unwrap_err();
        assert!(error.contains("link-local"), "{error}");
        let private = url("https://10.0.0.5/mcp");
        assert!(check(&private, &private, &url("https://10.1.2.3/")).is_ok());
        assert!(check(&private, &private, &url("https://127.0.0.1/")).is_err());
    }

    #[test]
    fn https_never_goes_to_http() {
        let start = url("https://mcp.example.com/mcp");
        let error = check(&start, &start, &url("http://mcp.example.com/mcp")).unwrap_err();
        assert!(error.contains("downgrades https"), "{error}");
        // Once on http (loopback development), http stays possible.
        let local = url("http://127.0.0.1:1/mcp");
        assert!(check(&local, &local, &url("http://127.0.0.1:2/mcp")).is_ok());
        assert!(check(&start, &start, &url("ftp://mcp.example.com/")).is_err());
    }

    fn request(method: Method, to: &str, body: bool) -> Request {
        let mut request = Request::new(method, url(to));
        for (name, value) in [
            ("accept", "application/json"),
            ("user-agent", "test"),
            ("x-api-key", "k-123"),
            ("mcp-session-id", "s-456"),
            ("cookie", "c=1"),
            ("content-type", "application/json"),
        ] {
            request
                .headers_mut()
                .insert(HeaderName::from_static(name), value.parse().unwrap());
        }
        if body {
            *request.body_mut() = Some("{\"a\":1}".into());
        }
        request
    }

    fn hop_to(status: u16, to: &str) -> Hop {
        Hop {
            from: url("https://a.example/mcp"),
            to: url(to),
            status: StatusCode::from_u16(status).unwrap(),
        }
    }

    fn names(request: &Request) -> Vec<&str> {
        let mut names: Vec<&str> = request.headers().keys().map(|n| n.as_str()).collect();
        names.sort_unstable();
        names
    }

    #[test]
    fn cross_origin_replays_are_refused_unless_allowed() {
        for status in [307, 308] {
            let previous = request(Method::POST, "https://a.example/mcp", true);
            let error =
                follow(hop_to(status, "https://b.example/x"), Some(previous), false).unwrap_err();
            let message = error.to_string();
            assert!(
                message.contains("allow_cross_origin_replay") && message.contains("b.example"),
                "{message}"
            );
            let previous = request(Method::POST, "https://a.example/mcp", true);
            let next = follow(hop_to(status, "https://b.example/x"), Some(previous), true).unwrap();
            assert_eq!(next.method(), Method::POST);
            assert!(next.body().is_some());
            assert_eq!(names(&next), ["accept", "content-type", "user-agent"]);
        }
        // A 302 of a PUT keeps its method and body: a replay too; so does a 307 of a DELETE.
        let previous = request(Method::PUT, "https://a.example/mcp", true);
        assert!(follow(hop_to(302, "https://b.example/x"), Some(previous), false).is_err());
        let previous = request(Method::DELETE, "https://a.example/mcp", false);
        assert!(follow(hop_to(307, "https://b.example/x"), Some(previous), false).is_err());
        // A 307 or 308 of a GET re-sends no body: followed, with the safe headers only.
        for status in [307, 308] {
            let previous = request(Method::GET, "https://a.example/mcp", false);
            let next =
                follow(hop_to(status, "https://b.example/x"), Some(previous), false).unwrap();
            assert_eq!(next.method(), Method::GET);
            assert_eq!(names(&next), ["accept", "user-agent"]);
        }
    }

    #[test]
    fn cross_origin_gets_keep_only_safe_headers() {
        for status in [301, 302, 303] {
            let previous = request(Method::POST, "https://a.example/mcp", true);
            let next =
                follow(hop_to(status, "https://b.example/x"), Some(previous), false).unwrap();
            assert_eq!(next.method(), Method::GET, "{status}");
            assert!(next.body().is_none());
            assert_eq!(names(&next), ["accept", "user-agent"], "{status}");
        }
    }

    #[test]
    fn same_origin_hops_keep_the_callers_headers_but_not_credentials() {
        let mut previous = request(Method::POST, "https://a.example/mcp", true);
        previous
            .headers_mut()
            .insert(AUTHORIZATION, "Bearer t".parse().unwrap());
        let next = follow(
            hop_to(307, "https://a.example/mcp/2"),
            Some(previous),
            false,
        )
        .unwrap();
        assert_eq!(
            names(&next),
            [
                "accept",
                "content-type",
                "cookie",
                "mcp-session-id",
                "user-agent",
                "x-api-key"
            ]
        );
        assert!(next.body().is_some());
    }
}
