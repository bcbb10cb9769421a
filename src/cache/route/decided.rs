//! A decision remembered with the token it allowed, for the header made right after it.
//!
//! `token_for(url)` decides for `url`; the caller then asks the same token for the header for
//! the same URL (`header_for(url)`), which must decide again: the token may be kept and used
//! for other URLs. The decision is a function of the URL's text, the token and the configured
//! resources, so the one `token_for` made is the answer `header_for` would get as long as the
//! URL's text is the same and no resource was added since: then it is used, and otherwise
//! [`decide`](super::decide) runs as always. The URL is kept in the handle itself (up to
//! [`MAX_URL`] bytes, no allocation); a longer one is decided again.

use url::Url;

use super::Route;

/// The longest URL whose decision is kept (longer ones are decided again).
const MAX_URL: usize = 118;

/// An allowed decision for one URL, under one version of the configured resources.
#[derive(Clone)]
pub(crate) struct Decided {
    generation: u64,
    len: u8,
    url: [u8; MAX_URL],
}

impl Decided {
    /// The decision just made (and allowed) on `route`, if its URL is short enough to keep.
    pub(crate) fn allowed_on(route: &Route<'_>) -> Option<Self> {
        let text = route.url().as_str().as_bytes();
        let len = u8::try_from(text.len())
            .ok()
            .filter(|&len| usize::from(len) <= MAX_URL)?;
        let mut url = [0; MAX_URL];
        url[..text.len()].copy_from_slice(text);
        Some(Self {
            generation: route.generation,
            len,
            url,
        })
    }

    /// Whether this is the decision for `url` under the resources of `generation`.
    pub(super) fn holds_for(&self, url: &Url, generation: u64) -> bool {
        self.generation == generation
            && self.url[..usize::from(self.len)] == *url.as_str().as_bytes()
    }
}
