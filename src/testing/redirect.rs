//! [`Redirect`]: a redirect a [`ResourceServer`](super::ResourceServer) is scripted to answer.

use axum::http::StatusCode;

/// A scripted redirect: a request for exactly `from` (a path) is answered with `status` and
/// `Location: to` (a path or an absolute URL, e.g. another server's
/// [`ResourceServer::url`](super::ResourceServer::url)).
///
/// ```
/// use audience_cache::testing::Redirect;
///
/// let same_origin = Redirect::temporary("/tenant-a/mcp", "/tenant-b/mcp");
/// let cross_origin = Redirect::permanent("/mcp", "http://127.0.0.1:9/mcp");
/// assert_eq!(same_origin.status(), 307);
/// assert_eq!(cross_origin.status(), 308);
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Redirect {
    pub(super) from: String,
    pub(super) to: String,
    status: StatusCode,
}

impl Redirect {
    /// `307 Temporary Redirect`: the client must repeat the method and body.
    pub fn temporary(from: impl Into<String>, to: impl Into<String>) -> Self {
        Self::with_status(from, to, StatusCode::TEMPORARY_REDIRECT)
    }

    /// `308 Permanent Redirect`.
    pub fn permanent(from: impl Into<String>, to: impl Into<String>) -> Self {
        Self::with_status(from, to, StatusCode::PERMANENT_REDIRECT)
    }

    /// Any status, e.g. `302` or `303`.
    pub fn with_status(from: impl Into<String>, to: impl Into<String>, status: StatusCode) -> Self {
        Self {
            from: from.into(),
            to: to.into(),
            status,
        }
    }

    /// The status the redirect is answered with.
    pub fn status(&self) -> StatusCode {
        self.status
    }
}
