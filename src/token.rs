//! Tokens as the cache holds them, and the one place their expiry is computed.

use std::time::Duration;

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
    /// How long before expiry a hit starts a background refresh, at most (the share below
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

/// An access token in the cache, with everything decided about it when it was received.
pub(crate) struct CachedToken {
    pub(crate) access_token: SecretString,
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
}

impl CachedToken {
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

#[cfg(test)]
mod tests {
    use super::*;

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
