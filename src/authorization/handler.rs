//! The [`AuthorizationHandler`] trait: how a user is brought to the authorization endpoint and
//! how the redirect comes back, with the check every handler makes of the URL it is given. The
//! crate's own handlers are in `loopback` and `headless`; the rule every redirect URI follows
//! is in `redirect_uri`.

use std::fmt;
use std::future::Future;
use std::pin::Pin;

use url::Url;

use crate::error::Error;

/// The future an [`AuthorizationHandler`] returns: the URL the authorization server redirected
/// the user agent to.
pub type AuthorizationFuture<'a> = Pin<Box<dyn Future<Output = Result<Url, Error>> + Send + 'a>>;

/// Has a user authorize a request at the authorization endpoint, and returns the redirect.
///
/// The crate builds the authorization URL (with `resource`, `scope`, `state`, and the S256 PKCE
/// challenge) and hands it to [`authorize`](Self::authorize); the handler brings the user
/// there (a browser, a prompt, or for servers that approve at once a plain request) and
/// returns the URL the authorization server redirected to, which carries `code` and `state`
/// (or `error`). The crate checks that redirect (redirect URI, `state`, RFC 9207 `iss`) before
/// it exchanges the code; a handler does not need to.
///
/// The crate has two: [`LoopbackListener`](super::LoopbackListener) for command-line apps (it
/// shows the URL or opens a browser, and receives the redirect on 127.0.0.1) and
/// [`HeadlessAuthorization`](super::HeadlessAuthorization) for tests and servers that approve
/// at once (it requests the URL and reads the redirect's `Location` without following it).
pub trait AuthorizationHandler: Send + Sync + fmt::Debug {
    /// The redirect URI the authorization server sends the user agent back to. It is
    /// registered with the client (dynamic registration) and sent in every authorization
    /// request.
    fn redirect_uri(&self) -> Url;

    /// Brings the user to `url` and resolves to the URL the authorization server redirected
    /// to. Failures (the user gave up, a timeout, no redirect) are
    /// [`Error::Authorization`].
    fn authorize<'a>(&'a self, url: &'a Url) -> AuthorizationFuture<'a>;
}

/// A handler is only given http(s) authorization URLs: nothing else is fetched, shown as a
/// link or passed to a browser opener.
pub(super) fn check_authorization_url(url: &Url) -> Result<(), Error> {
    match url.scheme() {
        "https" | "http" => Ok(()),
        other => Err(Error::Authorization {
            detail: format!(
                "the authorization URL has the scheme {:?}, not http or https; it was not opened",
                crate::resource::shorten(other)
            ),
        }),
    }
}

pub(super) fn gave_up(detail: String) -> Error {
    Error::Authorization { detail }
}
