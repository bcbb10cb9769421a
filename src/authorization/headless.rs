//! [`HeadlessAuthorization`]: the authorization URL fetched without following its redirect, for
//! tests and for servers that approve at once.
//!
//! It keeps neither the authorization URL nor the redirect after `authorize` returns; its
//! `Debug` shows the redirect URI, never a `code` or `state`. Error messages show URLs without
//! their query, and excerpts of a body without the authorization URL's secret values.

use std::fmt;
use std::time::Duration;

use url::Url;

use super::handler::{check_authorization_url, gave_up};
use super::{AuthorizationFuture, AuthorizationHandler};
use crate::audience::redacted_url;
use crate::error::{BuildError, Error};
use crate::redirect_uri::{check_redirect_uri, same_endpoint};

/// How long [`HeadlessAuthorization::new`]'s client waits for the authorization endpoint.
const HEADLESS_TIMEOUT: Duration = Duration::from_secs(10);
/// At most this much of an error body is read, to show an excerpt of it.
const BODY_EXCERPT_READ: usize = 4096;

/// An [`AuthorizationHandler`] with no user: it requests the authorization URL, does not
/// follow the redirect, and returns the `Location` it points to.
///
/// For tests (the `testing` feature's authorization server approves at once) and for
/// authorization servers that approve this client without asking anyone. A server that
/// answers with a page (a login or consent form) needs a user: that is an
/// [`Error::Authorization`] naming [`LoopbackListener`](super::LoopbackListener) as the way on.
///
/// The redirect must come back to the redirect URI (same scheme, host, port and path);
/// anywhere else is an error that says where it went. Nothing is ever sent to the redirect
/// URI itself. `Debug` shows the redirect URI only.
///
/// ```no_run
/// use audience_cache::{AuthorizationHandler, HeadlessAuthorization, ResourceUri, ScopeSet, TokenCache};
/// use url::Url;
///
/// # async fn run(cache: TokenCache) -> Result<(), Box<dyn std::error::Error>> {
/// // The redirect URI the client is registered with (Grant::AuthorizationCode).
/// let handler = HeadlessAuthorization::new(Url::parse("http://127.0.0.1:53682/callback")?)?;
/// let resource = ResourceUri::parse("https://mcp.example.com")?;
/// let pending = cache.begin_authorization(&resource, &ScopeSet::empty())?;
/// let redirect = handler.authorize(pending.url()).await?;
/// let token = cache.complete_authorization(pending, &redirect).await?;
/// # let _ = token;
/// # Ok(())
/// # }
/// ```
pub struct HeadlessAuthorization {
    redirect_uri: Url,
    http: reqwest::Client,
}

impl HeadlessAuthorization {
    /// A handler for `redirect_uri` with its own HTTP client: redirects are not followed and
    /// a request times out after 10 s.
    ///
    /// The redirect URI must be https, or http on a loopback host (`127.0.0.1`, `[::1]`,
    /// `localhost`), without a fragment (MCP 2025-11-25 §11.3, RFC 6749 §3.1.2); otherwise
    /// [`Error::Configuration`] with [`BuildError::Setting`].
    ///
    /// ```
    /// use audience_cache::{AuthorizationHandler, HeadlessAuthorization};
    /// use url::Url;
    ///
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let handler = HeadlessAuthorization::new(Url::parse("http://127.0.0.1:53682/callback")?)?;
    /// assert_eq!(handler.redirect_uri().as_str(), "http://127.0.0.1:53682/callback");
    /// assert!(HeadlessAuthorization::new(Url::parse("http://app.example/callback")?).is_err());
    /// # Ok(())
    /// # }
    /// ```
    pub fn new(redirect_uri: Url) -> Result<Self, Error> {
        check_redirect_uri(&redirect_uri)?;
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(HEADLESS_TIMEOUT)
            .build()
            .map_err(|e| {
                Error::Configuration(BuildError::HttpClient {
                    reason: e.to_string(),
                })
            })?;
        Ok(Self { redirect_uri, http })
    }

    /// A handler for `redirect_uri` (checked as in [`new`](Self::new)) that sends its request
    /// with `http`, for a proxy, custom roots or another timeout.
    ///
    /// The client must not follow redirects: build it with
    /// `.redirect(reqwest::redirect::Policy::none())`. One that does would send the code to
    /// the redirect URI itself; when the response comes from another URL than the one
    /// requested, [`authorize`](AuthorizationHandler::authorize) refuses it.
    ///
    /// ```
    /// use std::time::Duration;
    /// use audience_cache::HeadlessAuthorization;
    /// use url::Url;
    ///
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let http = reqwest::Client::builder()
    ///     .redirect(reqwest::redirect::Policy::none())
    ///     .timeout(Duration::from_secs(30))
    ///     .build()?;
    /// let handler =
    ///     HeadlessAuthorization::with_client(Url::parse("https://app.example/callback")?, http)?;
    /// # let _ = handler;
    /// # Ok(())
    /// # }
    /// ```
    pub fn with_client(redirect_uri: Url, http: reqwest::Client) -> Result<Self, Error> {
        check_redirect_uri(&redirect_uri)?;
        Ok(Self { redirect_uri, http })
    }

    async fn fetch(&self, url: &Url) -> Result<Url, Error> {
        check_authorization_url(url)?;
        let endpoint = redacted_url(url);
        let response = self.http.get(url.clone()).send().await.map_err(|e| {
            gave_up(format!(
                "the authorization endpoint {endpoint} could not be reached: {}",
                crate::error::describe(&e)
            ))
        })?;
        if response.url() != url {
            return Err(gave_up(format!(
                "the HTTP client followed a redirect from {endpoint} to {}; give HeadlessAuthorization a client built with redirect::Policy::none()",
                redacted_url(response.url())
            )));
        }
        let status = response.status();
        match status.as_u16() {
            301 | 302 | 303 | 307 | 308 => self.location(url, &response),
            200 => {
                let excerpt = body_excerpt(response, url).await;
                Err(gave_up(format!(
                    "the authorization endpoint {endpoint} answered 200 with a page{excerpt}, not a redirect: the server wants a user to log in or consent, which HeadlessAuthorization cannot do; use LoopbackListener or another AuthorizationHandler that brings a user there"
                )))
            }
            _ => {
                let excerpt = body_excerpt(response, url).await;
                Err(gave_up(format!(
                    "the authorization endpoint {endpoint} answered HTTP {status}{excerpt}, not a redirect"
                )))
            }
        }
    }

    /// The one `Location` of a redirect, resolved against the request URL, if it comes back to
    /// the redirect URI.
    fn location(&self, url: &Url, response: &reqwest::Response) -> Result<Url, Error> {
        let endpoint = redacted_url(url);
        let status = response.status().as_u16();
        let mut locations = response.headers().get_all(reqwest::header::LOCATION).iter();
        let (Some(location), None) = (locations.next(), locations.next()) else {
            let count = response
                .headers()
                .get_all(reqwest::header::LOCATION)
                .iter()
                .count();
            return Err(gave_up(format!(
                "the authorization endpoint {endpoint} answered {status} with {count} Location headers, not exactly one"
            )));
        };
        let target = location
            .to_str()
            .ok()
            .and_then(|location| url.join(location).ok())
            .ok_or_else(|| {
                gave_up(format!(
                    "the authorization endpoint {endpoint} answered {status} with a Location that is not a valid URL"
                ))
            })?;
        if !same_endpoint(&target, &self.redirect_uri) {
            return Err(gave_up(format!(
                "the authorization endpoint {endpoint} redirected to {}, not to the redirect URI {}; if that is a login or consent page, the server wants a user: use LoopbackListener or another AuthorizationHandler",
                redacted_url(&target),
                redacted_url(&self.redirect_uri)
            )));
        }
        Ok(target)
    }
}

/// A short, escaped excerpt of an unexpected answer's body (`": …"`), or nothing. At most
/// [`BODY_EXCERPT_READ`] bytes are read.
async fn body_excerpt(mut response: reqwest::Response, url: &Url) -> String {
    let mut body = Vec::new();
    while body.len() < BODY_EXCERPT_READ {
        match response.chunk().await {
            Ok(Some(chunk)) => body.extend_from_slice(&chunk),
            Ok(None) | Err(_) => break,
        }
    }
    body.truncate(BODY_EXCERPT_READ);
    excerpt(&String::from_utf8_lossy(&body), url)
}

/// The authorization URL's parameters whose values are secrets: the `state` (and an OpenID
/// `nonce`). The PKCE challenge is public by design.
const SECRET_PARAMETERS: [&str; 2] = ["state", "nonce"];

/// A server may echo the request in its answer: the secret values of the authorization URL,
/// decoded or as sent, are cut out before the excerpt is made.
fn excerpt(body: &str, url: &Url) -> String {
    let mut text = body.trim().to_owned();
    let decoded = url
        .query_pairs()
        .filter(|(name, _)| SECRET_PARAMETERS.contains(&name.as_ref()))
        .map(|(_, value)| value.into_owned());
    let raw = url
        .query()
        .unwrap_or_default()
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .filter(|(name, _)| SECRET_PARAMETERS.contains(name))
        .map(|(_, value)| value.to_owned());
    for value in decoded.chain(raw).filter(|value| !value.is_empty()) {
        text = text.replace(&value, "[redacted]");
    }
    if text.is_empty() {
        return String::new();
    }
    format!(": \"{}\"", crate::resource::shorten(&text).escape_debug())
}

impl AuthorizationHandler for HeadlessAuthorization {
    fn redirect_uri(&self) -> Url {
        self.redirect_uri.clone()
    }

    fn authorize<'a>(&'a self, url: &'a Url) -> AuthorizationFuture<'a> {
        Box::pin(self.fetch(url))
    }
}

impl fmt::Debug for HeadlessAuthorization {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HeadlessAuthorization")
            .field("redirect_uri", &self.redirect_uri.as_str())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(s: &str) -> Url {
        Url::parse(s).unwrap()
    }

    #[test]
    fn excerpts_leave_out_the_state_and_escape_control_characters() {
        let authorization = url(
            "https://as.example/authorize?state=s3cr%2Bstate&code_challenge=ch4llenge&nonce=n0nce&x=1",
        );
        assert_eq!(
            excerpt(
                " bad state s3cr+state (s3cr%2Bstate), nonce n0nce, challenge ch4llenge\n\u{1b}[31m ",
                &authorization
            ),
            r#": "bad state [redacted] ([redacted]), nonce [redacted], challenge ch4llenge\n\u{1b}[31m""#
        );
        assert_eq!(excerpt(" \n", &authorization), "");
        let long = "x".repeat(200);
        assert_eq!(
            excerpt(&long, &authorization),
            format!(": \"{}…\"", "x".repeat(80))
        );
    }
}
