//! A headless user agent for the authorization code flow: it follows the authorization
//! server's redirects (login and consent are automatic in `server.mjs`) with a cookie jar,
//! reading each `Location` itself, and stops at the redirect URI without connecting to it.

use std::time::Duration;

use url::Url;

/// More hops than a fresh jar needs (auth → login → auth → consent → auth → redirect URI).
const MAX_REDIRECTS: usize = 10;

/// Follows the redirects from `authorization_url` until one points at `redirect_uri` and
/// returns that URL (with `code`, `state` and `iss`, or an `error`). Only URLs on the
/// authorization server's origin are fetched.
pub async fn authorize(authorization_url: &Url, redirect_uri: &Url) -> Url {
    let agent = reqwest::Client::builder()
        .cookie_store(true)
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(10))
        .build()
        .expect("a reqwest client");
    let origin = authorization_url.origin();
    let mut current = authorization_url.clone();
    for _ in 0..MAX_REDIRECTS {
        assert_eq!(
            current.origin(),
            origin,
            "the authorization server redirected to {current}, off its own origin"
        );
        let response = agent
            .get(current.clone())
            .send()
            .await
            .unwrap_or_else(|e| panic!("GET {current}: {e}"));
        let status = response.status();
        let location = response
            .headers()
            .get(reqwest::header::LOCATION)
            .map(|l| l.to_str().expect("an ASCII Location").to_owned());
        let Some(location) = location.filter(|_| status.is_redirection()) else {
            let body = response.text().await.unwrap_or_default();
            panic!("GET {current} answered HTTP {status} instead of a redirect: {body}");
        };
        let next = current
            .join(&location)
            .unwrap_or_else(|e| panic!("Location {location:?} from {current}: {e}"));
        if is_redirect_uri(&next, redirect_uri) {
            return next;
        }
        current = next;
    }
    panic!("no redirect to {redirect_uri} within {MAX_REDIRECTS} hops from {authorization_url}");
}

fn is_redirect_uri(url: &Url, redirect_uri: &Url) -> bool {
    url.origin() == redirect_uri.origin() && url.path() == redirect_uri.path()
}

/// The value of the query parameter `name`, if it appears once; panics if it repeats.
pub fn param(url: &Url, name: &str) -> Option<String> {
    let mut values = url
        .query_pairs()
        .filter(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned());
    let first = values.next();
    assert!(
        values.next().is_none(),
        "{name} appears more than once in {url}"
    );
    first
}

/// `url` with the query parameter `name` set to `value` (the others kept in order).
pub fn with_param(url: &Url, name: &str, value: &str) -> Url {
    let pairs: Vec<(String, String)> = url
        .query_pairs()
        .map(|(k, v)| {
            let v = if k == name {
                value.to_owned()
            } else {
                v.into_owned()
            };
            (k.into_owned(), v)
        })
        .collect();
    let mut changed = url.clone();
    changed.query_pairs_mut().clear().extend_pairs(pairs);
    changed
}
