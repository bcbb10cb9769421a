//! Tokens as the cache holds them, and the one place their expiry is computed.

use std::sync::atomic::{AtomicU8, Ordering};
use std::time::Duration;

use http::HeaderValue;
use secrecy::zeroize::Zeroize as _;
use secrecy::{ExposeSecret, SecretString};
use tokio::time::Instant;

use crate::audience::TokenAudience;
use crate::key::CacheKey;
use crate::resource::ResourceUri;
use crate::scope::ScopeSet;

/// The longest lifetime the cache believes a server: a year. A token is refreshed after that
/// whatever its `expires_in` said.
const MAX_LIFETIME: Duration = Duration::from_secs(365 * 86_400);

/// When a token stops being served and when its refresh starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Timing {
    /// Subtracted from the lifetime the server granted (bounded to half of it).
    pub(crate) skew: Duration,
    /// The lifetime assumed when the response has no `expires_in`.
    pub(crate) default_lifetime: Duration,
    /// How long before expiry the background refresh starts, at most (the share below
    /// bounds it for shorter tokens).
    pub(crate) refresh_ahead: Duration,
    /// The share of the usable lifetime, in percent (1 to 50), that the refresh-ahead window
    /// may take.
    pub(crate) refresh_ahead_share: u8,
}

impl Default for Timing {
    fn default() -> Self {
        Self {
            skew: Duration::from_secs(30),
            default_lifetime: Duration::from_secs(300),
            refresh_ahead: Duration::from_secs(120),
            refresh_ahead_share: 10,
        }
    }
}

impl Timing {
    /// The expiry and refresh instants of a token received at `received_at`. This is the only
    /// place the skew is applied (RFC 6749 §5.1 `expires_in`; rules §22).
    pub(crate) fn schedule(&self, received_at: Instant, expires_in: Option<Duration>) -> Schedule {
        // `expires_in` is whatever number the server sent: bounded, so that adding it to an
        // instant cannot overflow (which panics).
        let lifetime = expires_in
            .unwrap_or(self.default_lifetime)
            .min(MAX_LIFETIME);
        let usable = lifetime - self.skew.min(lifetime / 2);
        let expires_at = received_at + usable;
        let share = u32::from(self.refresh_ahead_share.clamp(1, 50));
        let refresh_at = expires_at - self.refresh_ahead.min(usable * share / 100);
        Schedule {
            received_at,
            lifetime,
            expires_at,
            refresh_at,
        }
    }
}

/// The output of [`Timing::schedule`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Schedule {
    /// What the schedule was made from (the shared level stores these, so that another
    /// process makes the same schedule with its own [`Timing`]).
    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    pub(crate) received_at: Instant,
    /// The lifetime granted (or assumed), bounded, before the skew.
    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    pub(crate) lifetime: Duration,
    pub(crate) expires_at: Instant,
    pub(crate) refresh_at: Instant,
}

/// A [`CachedToken`] mark: handed out by a hit since its refresh was last looked at.
const USED: u8 = 1;
/// A [`CachedToken`] mark: handed out since the store's eviction hand last passed it.
const RECENT: u8 = 2;

/// An access token in the cache, with everything decided about it when it was received.
pub(crate) struct CachedToken {
    pub(crate) access_token: AccessToken,
    pub(crate) key: CacheKey,
    /// The resource it was requested for (with the wire form that was sent).
    pub(crate) resource: ResourceUri,
    /// The granted scopes (the requested ones when the response had no `scope`).
    pub(crate) scopes: ScopeSet,
    /// The `aud` claim, read once on receipt.
    pub(crate) audience: TokenAudience,
    pub(crate) schedule: Schedule,
    /// Bound to the cache's DPoP key (RFC 9449 `token_type: DPoP`): sent only as
    /// `Authorization: DPoP` with a proof by that key.
    pub(crate) dpop_bound: bool,
    /// What the cache noted of its use: [`USED`] (handed out by a hit since its refresh was
    /// last looked at, `cache::ahead`) and [`RECENT`] (handed out since the store's eviction
    /// hand last passed it, `cache::tokens`).
    marks: AtomicU8,
}

impl CachedToken {
    /// A token as received; its `Authorization` value is made here, once.
    pub(crate) fn new(
        access_token: SecretString,
        key: CacheKey,
        resource: ResourceUri,
        scopes: ScopeSet,
        audience: TokenAudience,
        schedule: Schedule,
        dpop_bound: bool,
    ) -> Self {
        // The granted scopes are usually the requested ones: then they are the key's, not a
        // copy of them.
        let scopes = if scopes == *key.scopes() {
            key.scopes().clone()
        } else {
            scopes
        };
        Self {
            access_token: AccessToken::new(access_token, dpop_bound),
            key,
            resource,
            scopes,
            audience,
            schedule,
            dpop_bound,
            // Neither: a token fetched and never handed out again is the store's first choice
            // to evict, and its refresh waits for a hit.
            marks: AtomicU8::new(0),
        }
    }

    /// Notes that a hit handed it out (used and recent): a write only the first time after
    /// each look, so that hits on one token from many threads only read its line.
    pub(crate) fn mark_used(&self) {
        if self.marks.load(Ordering::Relaxed) != USED | RECENT {
            self.marks.fetch_or(USED | RECENT, Ordering::Relaxed);
        }
    }

    /// Notes that the store handed it out (recent).
    pub(crate) fn mark_recent(&self) {
        if self.marks.load(Ordering::Relaxed) & RECENT == 0 {
            self.marks.fetch_or(RECENT, Ordering::Relaxed);
        }
    }

    /// Whether a hit handed it out since the last look, starting the next period.
    pub(crate) fn take_used(&self) -> bool {
        self.marks.fetch_and(!USED, Ordering::Relaxed) & USED != 0
    }

    /// Whether it was handed out since the eviction hand last passed, starting the next pass.
    pub(crate) fn take_recent(&self) -> bool {
        self.marks.fetch_and(!RECENT, Ordering::Relaxed) & RECENT != 0
    }

    pub(crate) fn is_fresh(&self, now: Instant) -> bool {
        now < self.schedule.expires_at
    }

    pub(crate) fn wants_refresh(&self, now: Instant) -> bool {
        now >= self.schedule.refresh_at
    }

    /// Approximate bytes held, for the cache's weigher.
    pub(crate) fn weight(&self) -> u32 {
        let bytes = self.access_token.expose_secret().len() + 256;
        u32::try_from(bytes).unwrap_or(u32::MAX)
    }
}

/// An access token, kept once: as the `Authorization` value that carries it (`Bearer <token>`,
/// or `DPoP <token>` for a bound token, RFC 6750 §2.1, RFC 9449 §7.1), made when the token is
/// received and marked sensitive. A hand-out clones the value (a reference count), so that no
/// request copies or formats the token. The bytes are one buffer, zeroed when the last value
/// made from it is dropped, as a `SecretString` is.
pub(crate) enum AccessToken {
    /// The value, and the length of the scheme and its space before the token.
    Header(HeaderValue, usize),
    /// A token that cannot be a header value (a control character): kept, and refused when a
    /// header is asked for, as it always was.
    Unusable(SecretString),
}

impl AccessToken {
    fn new(token: SecretString, dpop_bound: bool) -> Self {
        let scheme = if dpop_bound { "DPoP " } else { "Bearer " };
        let raw = token.expose_secret();
        let mut text = String::with_capacity(scheme.len() + raw.len());
        text.push_str(scheme);
        text.push_str(raw);
        let bytes = bytes::Bytes::from_owner(Zeroed(text.into_boxed_str()));
        match HeaderValue::from_maybe_shared(bytes) {
            Ok(mut value) => {
                value.set_sensitive(true);
                Self::Header(value, scheme.len())
            }
            Err(_) => Self::Unusable(token),
        }
    }

    /// The raw token.
    pub(crate) fn expose_secret(&self) -> &str {
        match self {
            // The value was made from a string, and the scheme is ASCII: the rest is the
            // token, whole.
            Self::Header(value, scheme) => value
                .as_bytes()
                .get(*scheme..)
                .and_then(|token| std::str::from_utf8(token).ok())
                .unwrap_or_default(),
            Self::Unusable(token) => token.expose_secret(),
        }
    }

    /// The `Authorization` value, marked sensitive; `None` for a token that cannot be one.
    pub(crate) fn header(&self) -> Option<&HeaderValue> {
        match self {
            Self::Header(value, _) => Some(value),
            Self::Unusable(_) => None,
        }
    }
}

/// A token's text, zeroed on drop.
struct Zeroed(Box<str>);

impl Drop for Zeroed {
    fn drop(&mut self) {
        self.0.zeroize();
    }
}

impl AsRef<[u8]> for Zeroed {
    fn as_ref(&self) -> &[u8] {
        self.0.as_bytes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_header_holds_the_token_once_and_marked_sensitive() {
        let bearer = AccessToken::new(SecretString::from("t0k.en"), false);
        assert_eq!(bearer.expose_secret(), "t0k.en");
        let header = bearer.header().unwrap();
        assert_eq!(header.as_bytes(), b"Bearer t0k.en");
        assert!(header.is_sensitive());
        assert!(header.clone().is_sensitive());
        let bound = AccessToken::new(SecretString::from("t0k.en"), true);
        assert_eq!(bound.header().unwrap().as_bytes(), b"DPoP t0k.en");
        assert_eq!(bound.expose_secret(), "t0k.en");
        // Not a header value: kept, and refused when a header is asked for.
        let control = AccessToken::new(SecretString::from("a\nb"), false);
        assert!(control.header().is_none());
        assert_eq!(control.expose_secret(), "a\nb");
    }

    #[tokio::test(start_paused = true)]
    async fn skew_is_bounded_by_half_the_lifetime() {
        let timing = Timing::default();
        let now = Instant::now();
        let long = timing.schedule(now, Some(Duration::from_secs(3600)));
        assert_eq!(long.expires_at, now + Duration::from_secs(3570));
        // The 120 s window, less than 10 % of the usable 3,570 s.
        assert_eq!(long.refresh_at, now + Duration::from_secs(3450));
        let usual = timing.schedule(now, Some(Duration::from_secs(300)));
        assert_eq!(usual.expires_at, now + Duration::from_secs(270));
        // 10 % of the usable 270 s.
        assert_eq!(usual.refresh_at, now + Duration::from_secs(243));
        let short = timing.schedule(now, Some(Duration::from_secs(10)));
        assert_eq!(short.expires_at, now + Duration::from_secs(5));
        assert_eq!(short.refresh_at, now + Duration::from_millis(4500));
        let absent = timing.schedule(now, None);
        assert_eq!(absent.expires_at, now + Duration::from_secs(270));
        let zero = timing.schedule(now, Some(Duration::ZERO));
        assert_eq!(zero.expires_at, now);
        let absurd = timing.schedule(now, Some(Duration::from_secs(u64::MAX)));
        assert_eq!(
            absurd.expires_at,
            now + MAX_LIFETIME - Duration::from_secs(30)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn the_refresh_ahead_window_is_a_share_of_the_usable_lifetime() {
        let now = Instant::now();
        let half = Timing {
            refresh_ahead_share: 50,
            ..Timing::default()
        };
        let usual = half.schedule(now, Some(Duration::from_secs(300)));
        // Half of the usable 270 s is 135 s, more than the 120 s window: the window holds.
        assert_eq!(usual.refresh_at, now + Duration::from_secs(150));
        let short = half.schedule(now, Some(Duration::from_secs(100)));
        // Half of the usable 70 s.
        assert_eq!(short.refresh_at, now + Duration::from_secs(35));
    }
}
