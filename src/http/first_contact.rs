//! The first request to a resource goes alone: requests that arrive while it is under way wait
//! for it, so that what it learns (the scopes a 403 `insufficient_scope` asked for, once its
//! retry succeeds) applies to them before they are sent. Without it, a burst of first calls to
//! a server that requires a scope the resource was not configured with is answered 403 once per
//! call before the step-up is known.
//!
//! A request waits at most [`MAX_WAIT`]: a slow first request (a long tool call) does not hold
//! the others longer than that. After the first request to a resource has ended, whatever its
//! answer, nothing waits here: one lookup per request.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;

/// The longest a request waits for the first request to its resource.
pub(crate) const MAX_WAIT: Duration = Duration::from_secs(2);

/// The resources (match keys) contacted so far, and the first contacts under way.
#[derive(Debug, Default)]
pub(crate) struct FirstContacts {
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    contacted: HashSet<String>,
    under_way: HashMap<String, watch::Receiver<()>>,
}

/// Held by the request that makes the first contact with a resource: when it is dropped, the
/// waiting requests go on, and the resource counts as contacted if the request ended (rather
/// than being cancelled).
pub(crate) struct Contact {
    contacts: Arc<FirstContacts>,
    resource: String,
    ended: bool,
    _done: watch::Sender<()>,
}

impl Contact {
    /// The request ended (with any answer): later requests need not wait.
    pub(crate) fn ended(mut self) {
        self.ended = true;
    }
}

impl Drop for Contact {
    fn drop(&mut self) {
        let mut state = self
            .contacts
            .state
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        state.under_way.remove(&self.resource);
        if self.ended {
            state.contacted.insert(self.resource.clone());
        }
    }
}

impl FirstContacts {
    /// `None` when `resource` was contacted already, or after waiting [`MAX_WAIT`] for
    /// another request's first contact; otherwise (no contact under way, or the one under way
    /// was cancelled) the [`Contact`] this request makes (dropping it lets the next one go).
    pub(crate) async fn first(self: &Arc<Self>, resource: &str) -> Option<Contact> {
        let deadline = Instant::now() + MAX_WAIT;
        loop {
            let waiting = {
                let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
                if state.contacted.contains(resource) {
                    return None;
                }
                match state.under_way.get(resource) {
                    Some(under_way) => under_way.clone(),
                    None => {
                        let (done, waiting) = watch::channel(());
                        state.under_way.insert(resource.to_owned(), waiting);
                        return Some(Contact {
                            contacts: self.clone(),
                            resource: resource.to_owned(),
                            ended: false,
                            _done: done,
                        });
                    }
                }
            };
            let mut waiting = waiting;
            // Closed when the first contact's request ends or is cancelled.
            let closed = async { while waiting.changed().await.is_ok() {} };
            if tokio::time::timeout_at(deadline, closed).await.is_err() {
                return None;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn later_requests_wait_for_the_first_and_then_pass() {
        let contacts = Arc::new(FirstContacts::default());
        let first = contacts.first("r").await.unwrap();
        let waiter = tokio::spawn({
            let contacts = contacts.clone();
            async move { contacts.first("r").await.is_none() }
        });
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished());
        first.ended();
        assert!(
            waiter.await.unwrap(),
            "the waiter passed without a contact of its own"
        );
        assert!(contacts.first("r").await.is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn a_slow_first_contact_holds_the_others_two_seconds_at_most() {
        let contacts = Arc::new(FirstContacts::default());
        let _first = contacts.first("r").await.unwrap();
        let started = Instant::now();
        assert!(contacts.first("r").await.is_none());
        assert_eq!(started.elapsed(), MAX_WAIT);
    }

    #[tokio::test]
    async fn a_cancelled_first_contact_hands_over_to_a_waiter() {
        let contacts = Arc::new(FirstContacts::default());
        let first = contacts.first("r").await.unwrap();
        let waiter = tokio::spawn({
            let contacts = contacts.clone();
            async move { contacts.first("r").await.is_some() }
        });
        tokio::task::yield_now().await;
        drop(first);
        assert!(
            waiter.await.unwrap(),
            "the waiter makes the first contact itself"
        );
    }
}
