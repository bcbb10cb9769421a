//! Refresh ahead on the runtime's timer. A token is armed when it is stored; when its refresh
//! time comes, one task of the cache's own starts its refresh if a hit handed it out since it
//! was stored or last looked at. A hit only marks its token as used (one atomic load, and one
//! store the first time): it spawns nothing and wakes nothing, so no caller pays for a refresh.
//! A spawn from the main thread of a multi-thread runtime wakes a parked worker, and on a
//! machine with few cores the woken worker can take the caller's core for a scheduler slice
//! (BENCHMARKS.md §17).
//!
//! A token that was not used is looked at again halfway to its expiry (a second later at the
//! least), so that a hit late in the window still gets a refresh before the token expires. A
//! refresh that fails is retried when the key's backoff allows, while the token is still used.
//! If no task serves the queue (its runtime shut down) or it has fallen behind by more than a
//! second, a hit starts the refresh itself, as before (see `Shared::hit`).
//!
//! The same task lets a token go from the store a second after it expired: the store keeps no
//! expiry of its own per entry (the crate decides freshness on tokio's clock). Without a task,
//! an expired token stays until the store's capacity evicts it or a new token replaces it; it
//! is never served.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

use super::{Acquire, Shared};
use crate::error::Error;
use crate::grant::SubjectToken;
use crate::token::CachedToken;

/// How long the task may be late before hits stop counting on it, and the shortest wait
/// between two looks at one token.
const SLACK: Duration = Duration::from_secs(1);

/// The smallest queue that is ever cleared of dropped tokens' entries.
const MIN_COMPACT: usize = 1024;

/// The queue of armed tokens and the task that serves it.
pub(crate) struct Refresher {
    inner: Arc<Inner>,
    /// The cache, for the task (which must not keep it alive).
    shared: Weak<Shared>,
}

struct Inner {
    queue: Mutex<BinaryHeap<Reverse<Due>>>,
    wake: Notify,
    /// Whether a task serves the queue; cleared when it ends, however it ends.
    running: AtomicBool,
    /// When the task is due to look next, in milliseconds since `base` (`u64::MAX`: nothing
    /// queued).
    next: AtomicU64,
    /// The cache is gone: the task ends.
    closed: AtomicBool,
    /// The queue length past which the entries of dropped tokens are cleared out.
    compact_at: AtomicUsize,
    base: Instant,
}

/// One armed token: when to look at it, and how its refresh asks for a token.
struct Due {
    at: u64,
    token: Weak<CachedToken>,
    /// The subject token of an exchanged token (most tokens have none).
    subject: Option<Box<SubjectToken>>,
}

impl PartialEq for Due {
    fn eq(&self, other: &Self) -> bool {
        self.at == other.at
    }
}

impl Eq for Due {}

impl PartialOrd for Due {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Due {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.at.cmp(&other.at)
    }
}

impl Refresher {
    pub(crate) fn new(shared: Weak<Shared>) -> Self {
        Self {
            inner: Arc::new(Inner {
                queue: Mutex::default(),
                wake: Notify::new(),
                running: AtomicBool::new(false),
                next: AtomicU64::new(u64::MAX),
                closed: AtomicBool::new(false),
                compact_at: AtomicUsize::new(MIN_COMPACT),
                base: Instant::now(),
            }),
            shared,
        }
    }

    /// Arms `token`, just stored, for its refresh time, and makes sure a task on this runtime
    /// serves the queue.
    pub(crate) fn arm(&self, token: &Arc<CachedToken>, acquire: &Acquire) {
        let subject = match acquire {
            Acquire::Configured => None,
            Acquire::Exchange(subject) => Some(Box::new(subject.clone())),
        };
        self.inner.push(Due {
            at: self.inner.millis(token.schedule.refresh_at),
            token: Arc::downgrade(token),
            subject,
        });
        if !self.inner.running.swap(true, Ordering::AcqRel) {
            match tokio::runtime::Handle::try_current() {
                Ok(runtime) => {
                    let running = Running(self.inner.clone());
                    runtime.spawn(serve(running, self.shared.clone()));
                }
                Err(_) => self.inner.running.store(false, Ordering::Release),
            }
        }
    }

    /// Whether the task serves the queue and is not late: then a hit leaves the refresh to it.
    pub(crate) fn serves(&self, now: Instant) -> bool {
        self.inner.running.load(Ordering::Acquire)
            && self.inner.next.load(Ordering::Acquire)
                >= self.inner.millis(now).saturating_sub(millis(SLACK))
    }
}

impl Drop for Refresher {
    fn drop(&mut self) {
        self.inner.closed.store(true, Ordering::Release);
        self.inner.wake.notify_one();
    }
}

impl Inner {
    fn lock(&self) -> std::sync::MutexGuard<'_, BinaryHeap<Reverse<Due>>> {
        self.queue.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn millis(&self, at: Instant) -> u64 {
        millis(at.saturating_duration_since(self.base))
    }

    fn instant(&self, at: u64) -> Instant {
        self.base + Duration::from_millis(at)
    }

    /// Queues `due`, waking the task if it is now the first.
    fn push(&self, due: Due) {
        let at = due.at;
        let mut queue = self.lock();
        queue.push(Reverse(due));
        // Tokens that left the store before their time (evicted, replaced, invalidated) leave
        // their entry behind: once the queue has doubled since it was last cleared, the
        // entries of tokens no one holds go, so that it stays within twice the live tokens.
        let limit = self.compact_at.load(Ordering::Relaxed);
        if queue.len() > limit {
            queue.retain(|due| due.0.token.strong_count() > 0);
            self.compact_at
                .store((queue.len() * 2).max(MIN_COMPACT), Ordering::Relaxed);
        }
        drop(queue);
        if self.next.fetch_min(at, Ordering::AcqRel) > at {
            self.wake.notify_one();
        }
    }

    /// The entries due by `now`, and the time of the next.
    fn take_due(&self, now: u64) -> Vec<Due> {
        let mut queue = self.lock();
        let mut due = Vec::new();
        while queue.peek().is_some_and(|first| first.0.at <= now) {
            if let Some(Reverse(first)) = queue.pop() {
                due.push(first);
            }
        }
        let next = queue.peek().map_or(u64::MAX, |first| first.0.at);
        self.next.store(next, Ordering::Release);
        due
    }
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

/// Marks the queue as served while it lives.
struct Running(Arc<Inner>);

impl Drop for Running {
    fn drop(&mut self) {
        self.0.running.store(false, Ordering::Release);
    }
}

/// The task: sleeps until the first armed token is due (or an earlier one is armed), and looks
/// at every token that is due.
async fn serve(running: Running, shared: Weak<Shared>) {
    let inner = &running.0;
    loop {
        if inner.closed.load(Ordering::Acquire) {
            return;
        }
        let now = Instant::now();
        let due = inner.take_due(inner.millis(now));
        if !due.is_empty() {
            let Some(shared) = shared.upgrade() else {
                return;
            };
            for due in due {
                if let Some(again) = shared.look_at(due, now) {
                    inner.push(again);
                }
            }
            continue;
        }
        let notified = inner.wake.notified();
        match inner.next.load(Ordering::Acquire) {
            u64::MAX => notified.await,
            next => {
                let _ = tokio::time::timeout_at(inner.instant(next), notified).await;
            }
        }
    }
}

impl Shared {
    /// Looks at an armed token whose time has come: starts its refresh if it was used, lets it
    /// go from the store once it has expired, and says when to look again (`None`: never).
    fn look_at(self: &Arc<Self>, due: Due, now: Instant) -> Option<Due> {
        let token = due.token.upgrade()?;
        if !token.is_fresh(now) {
            // No longer served: out of memory too (the store's listener clears the rest).
            self.store
                .remove_if(&token.key, |stored| Arc::ptr_eq(stored, &token));
            return None;
        }
        if !self.store.holds(&token) {
            return None;
        }
        let expiry = token.schedule.expires_at;
        let again = |at: Instant| Due {
            // Past expiry, the next look lets it go.
            at: self
                .ahead
                .inner
                .millis(if at < expiry { at } else { expiry + SLACK }),
            token: due.token.clone(),
            subject: due.subject.clone(),
        };
        if !token.take_used() {
            // Not used since the last look: look again halfway to expiry.
            return Some(again(now + ((expiry - now) / 2).max(SLACK)));
        }
        let key = &token.key;
        if let Err(Error::BackingOff { retry_in, .. }) = self.backoff.check(key, now) {
            token.mark_used();
            return Some(again(now + retry_in.max(SLACK)));
        }
        let entry = self.outlet.routes.entry(&token.resource)?;
        // A resource that moved to another authorization server has let go of its tokens.
        if entry.config.issuer != key.issuer() {
            return None;
        }
        let acquire = match &due.subject {
            None => Acquire::Configured,
            Some(subject) => Acquire::Exchange((**subject).clone()),
        };
        let _started = self.flights.start(self, &entry, key, &acquire, true);
        // Looked at again shortly: by then the refresh has replaced the token, or it failed
        // and is retried if the token is still used.
        Some(again(now + SLACK))
    }
}

/// The refresher's queue and its purge of expired tokens.
#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::Ordering;
    use std::time::Duration;

    use tokio::time::advance;
    use url::Url;

    use super::{Due, MIN_COMPACT};
    use crate::audience::TokenAudience;
    use crate::cache::test_support::{MCP, one_resource};
    use crate::testing::AuthorizationServer;
    use crate::token::CachedToken;
    use crate::{ResourceUri, ScopeSet, TokenCache};

    fn setup() -> (AuthorizationServer, TokenCache) {
        one_resource(Some(Duration::from_secs(300)))
    }

    async fn pass(seconds: u64) {
        advance(Duration::from_secs(seconds)).await;
        for _ in 0..20 {
            tokio::task::yield_now().await;
        }
    }

    /// A token that expires unused leaves the store (and stops being its resource's current
    /// token) shortly after it expired (a second), and not while it is served.
    #[tokio::test(start_paused = true)]
    async fn an_expired_token_leaves_the_store_a_second_after_it_expired() {
        let (_server, cache) = setup();
        let resource = ResourceUri::parse(MCP).unwrap();
        let other = ScopeSet::parse("mcp:write").unwrap();
        let default = cache.token(&resource, &ScopeSet::empty()).await.unwrap();
        let scoped = cache.token(&resource, &other).await.unwrap();
        let shared = &cache.shared;
        let entry = shared.outlet.routes.entry(&resource).unwrap();
        // Served until 270 s.
        pass(269).await;
        for token in [&default, &scoped] {
            let stored = shared.store.get(token.key()).unwrap();
            assert!(Arc::ptr_eq(&stored, token.cached()), "gone before its time");
        }
        pass(3).await; // 272 s
        for token in [&default, &scoped] {
            assert!(shared.store.get(token.key()).is_none(), "still stored");
        }
        assert!(entry.current.load().is_none(), "still the current token");
        assert!(shared.ahead.inner.lock().is_empty(), "still armed");
    }

    /// The look that lets an expired token go leaves the token that replaced it alone.
    #[tokio::test(start_paused = true)]
    async fn letting_an_expired_token_go_leaves_its_successor_alone() {
        let (server, cache) = setup();
        let url = Url::parse(MCP).unwrap();
        let first = cache.token_for(&url).await.unwrap();
        assert!(cache.invalidate(&first).await);
        pass(100).await;
        let second = cache.token_for(&url).await.unwrap();
        assert_eq!(server.token_requests(), 2);
        // One jump to 280 s: the first token's look (due at 243 s) finds it expired, and its
        // successor (served until 370 s) under its key.
        pass(180).await;
        let stored = cache.shared.store.get(second.key()).unwrap();
        assert!(Arc::ptr_eq(&stored, second.cached()));
    }

    /// Entries of tokens no one holds any more are cleared once the queue doubles, so that a
    /// store that churns through keys does not grow the queue without bound.
    #[tokio::test]
    async fn the_queue_keeps_within_twice_the_tokens_still_held() {
        let (_server, cache) = setup();
        let resource = ResourceUri::parse(MCP).unwrap();
        let held = cache.token(&resource, &ScopeSet::empty()).await.unwrap();
        let inner = &cache.shared.ahead.inner;
        let like = held.cached();
        for i in 0..10 * MIN_COMPACT {
            let token = Arc::new(CachedToken::new(
                "a-token".into(),
                like.key.clone(),
                like.resource.clone(),
                like.scopes.clone(),
                TokenAudience::unread(),
                like.schedule,
                false,
            ));
            inner.push(Due {
                at: u64::MAX - i as u64,
                token: Arc::downgrade(&token),
                subject: None,
            });
            // Dropped at once: its entry is dead.
        }
        let len = inner.lock().len();
        assert!(len <= MIN_COMPACT + 1, "{len} entries for 1 held token");
        assert!(inner.compact_at.load(Ordering::Relaxed) >= MIN_COMPACT);
        let live = inner
            .lock()
            .iter()
            .filter(|due| due.0.token.strong_count() > 0)
            .count();
        assert_eq!(live, 1, "the held token's entry stays");
    }
}
