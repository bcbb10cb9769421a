//! Following redirects in the crate (reqwest's own following is off): which status codes are
//! redirects, where they go, and what the next request carries. The token is attached again
//! (or not) by the caller's loop, which decides afresh for every hop.

use http::header::{
    AUTHORIZATION, CONTENT_LENGTH, CONTENT_TYPE, COOKIE, LOCATION, PROXY_AUTHORIZATION,
    TRANSFER_ENCODING, WWW_AUTHENTICATE,
};
use http::{HeaderMap, Method, StatusCode};
use reqwest::Request;
use url::Url;

use crate::Error;

/// One redirect to follow.
pub(crate) struct Hop {
    to: Url,
    status: StatusCode,
}

/// `Some` when the response is a redirect: `Ok` with where it goes, `Err` when its `Location`
/// is missing or unusable.
pub(crate) fn hop(
    from: &Url,
    status: StatusCode,
    headers: &HeaderMap,
) -> Option<Result<Hop, Error>> {
    if !matches!(status.as_u16(), 301 | 302 | 303 | 307 | 308) {
        return None;
    }
    let refuse = |detail: &str| Error::Redirect {
        url: crate::audience::redacted_url(from),
        detail: detail.to_owned(),
    };
    let Some(location) = headers.get(LOCATION).and_then(|v| v.to_str().ok()) else {
        return Some(Err(refuse("the redirect has no readable Location")));
    };
    let to = match from.join(location) {
        Ok(to) => to,
        Err(_) => return Some(Err(refuse("the redirect's Location is not a valid URL"))),
    };
    if !matches!(to.scheme(), "https" | "http") {
        return Some(Err(refuse(
            "the redirect leads to a scheme other than http(s)",
        )));
    }
    Some(Ok(Hop { to, status }))
}

/// The request for the next hop, from a copy of the previous one: 303 (and 301/302 after a
/// POST) become a GET without a body, 307 and 308 repeat the method and body. Credentials are
/// removed; cookies and proxy credentials too when the origin changes. `None` when the body
/// must be repeated but could not be copied.
pub(crate) fn follow(hop: Hop, previous: Option<Request>) -> Option<Request> {
    let previous = previous?;
    let same_origin = previous.url().origin() == hop.to.origin();
    let method = previous.method().clone();
    let to_get = hop.status == StatusCode::SEE_OTHER && method != Method::HEAD
        || matches!(hop.status.as_u16(), 301 | 302) && method == Method::POST;
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
        headers.remove(COOKIE);
        headers.remove(PROXY_AUTHORIZATION);
    }
    Some(next)
}
