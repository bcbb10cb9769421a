//! Discovery from the request loop, once per origin however many requests arrive at once.
//!
//! A request to a URL no configured resource covers is sent once without a token (the probe);
//! a 401 leads to the protected resource metadata, the authorization server's metadata, a
//! client there and a new resource in the cache. When many requests to one MCP server start
//! together (an agent's first burst of tool calls), one of them leads: its request is the one
//! probe, and the discovery it starts runs as a task of its own, so that cancelling the caller
//! that started it cancels nothing. The others wait for that discovery and then take the route
//! it made, so the servers see one probe, one fetch of each document, one registration and
//! (through the cache's own single-flight) one token request.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use http::StatusCode;
use http::header::WWW_AUTHENTICATE;
use reqwest::{Request, Response};
use tokio::sync::watch;
use url::Url;

use super::{Policy, RunError, SendError};
use crate::authorization::ClientRegistrar;
use crate::authorization::Trust;
use crate::cache::{Route, TokenCache};
use crate::challenge::Challenges;
use crate::discovery::Discovery;
use crate::error::Error;

/// How many discoveries of other servers on the same origin a request waits for before it
/// probes on its own.
const MAX_WAITS: usize = 3;

/// The discoveries under way, by origin.
#[derive(Debug, Default)]
pub(crate) struct Discoveries {
    inflight: Mutex<HashMap<String, watch::Receiver<State>>>,
}

/// Where a discovery stands, as its waiters see it.
#[derive(Debug, Clone)]
enum State {
    Running,
    Done(Result<Outcome, Error>),
}

#[derive(Debug, Clone, Copy)]
enum Outcome {
    /// A resource (and a client for it) was registered with the cache.
    Registered,
    /// The probe was not answered with a 401: nothing to discover there.
    NotProtected,
}

/// What a request to a URL without a configured resource comes to.
pub(crate) enum Found {
    /// Discovery (this request's or another's) registered the resource that owns the URL.
    Route(Route<'static>),
    /// The probe was answered without a 401: the answer, for the caller.
    Response(Response),
}

enum Turn {
    Lead(Leader),
    Wait(watch::Receiver<State>),
}

/// The request that leads a discovery: publishes how it ended, and takes the origin off the
/// list when dropped (a leader cancelled before its discovery started leaves its waiters to
/// try again).
struct Leader {
    discoveries: Arc<Discoveries>,
    origin: String,
    state: watch::Sender<State>,
}

impl Discoveries {
    fn turn(self: &Arc<Self>, origin: &str) -> Turn {
        let mut inflight = self.inflight.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(running) = inflight.get(origin)
            && running.has_changed().is_ok()
        {
            return Turn::Wait(running.clone());
        }
        let (state, running) = watch::channel(State::Running);
        inflight.insert(origin.to_owned(), running);
        Turn::Lead(Leader {
            discoveries: self.clone(),
            origin: origin.to_owned(),
            state,
        })
    }
}

impl Leader {
    fn finish(&self, outcome: Result<Outcome, Error>) {
        self.state.send_replace(State::Done(outcome));
    }
}

impl Drop for Leader {
    fn drop(&mut self) {
        let mut inflight = self
            .discoveries
            .inflight
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if inflight
            .get(&self.origin)
            .is_some_and(|running| running.same_channel(&self.state.subscribe()))
        {
            inflight.remove(&self.origin);
        }
    }
}

/// The route of `request`'s URL, after discovering it (or waiting for the discovery another
/// request to its origin leads); or the answer to the probe when it was not a 401.
pub(crate) async fn route_or_discover<S, F>(
    policy: &Policy,
    (discovery, clients): (&Discovery, &ClientRegistrar),
    request: &Request,
    send: &mut S,
) -> Result<Found, RunError>
where
    S: FnMut(Request) -> F,
    F: Future<Output = Result<Response, SendError>>,
{
    let url = request.url();
    let origin = url.origin().ascii_serialization();
    let mut waits = 0;
    loop {
        match policy.cache.route(url) {
            Ok(route) => return Ok(Found::Route(route.into_owned())),
            Err(Error::NoResource { .. }) => {}
            Err(error) => return Err(RunError::Crate(error)),
        }
        let turn = if waits < MAX_WAITS {
            policy.discoveries.turn(&origin)
        } else {
            // Discoveries of other servers on this origin kept this one waiting: probe alone.
            let (state, _) = watch::channel(State::Running);
            Turn::Lead(Leader {
                discoveries: Arc::default(),
                origin: origin.clone(),
                state,
            })
        };
        let leader = match turn {
            Turn::Lead(leader) => leader,
            Turn::Wait(running) => {
                waits += 1;
                match finished(running).await {
                    Some(Err(error)) => return Err(RunError::Crate(error)),
                    // Not protected: this request is sent as its own probe, like the leader's.
                    Some(Ok(Outcome::NotProtected)) => {
                        let (state, _) = watch::channel(State::Running);
                        Leader {
                            discoveries: Arc::default(),
                            origin: origin.clone(),
                            state,
                        }
                    }
                    // Registered (perhaps another server on this origin), or the leader was
                    // cancelled before it started: look again.
                    Some(Ok(Outcome::Registered)) | None => continue,
                }
            }
        };
        // A discovery of this origin may have ended between the look above and taking the
        // lead (it registers before it leaves the list): look once more before probing.
        if let Ok(route) = policy.cache.route(url) {
            leader.finish(Ok(Outcome::Registered));
            return Ok(Found::Route(route.into_owned()));
        }
        let probe = request.try_clone().ok_or_else(|| {
            RunError::Crate(Error::NotReplayable {
                url: crate::audience::redacted_url(url),
            })
        })?;
        let response = send(probe).await.map_err(RunError::Send)?;
        if response.status() != StatusCode::UNAUTHORIZED {
            leader.finish(Ok(Outcome::NotProtected));
            return Ok(Found::Response(response));
        }
        let job = Job {
            cache: policy.cache.clone(),
            discovery: discovery.clone(),
            clients: clients.clone(),
            redirect_uri: policy.handler.as_ref().map(|h| h.redirect_uri()),
            url: url.clone(),
            headers: response.headers().clone(),
        };
        let task = tokio::spawn(async move {
            let result = job.run().await;
            leader.finish(result.clone().map(|()| Outcome::Registered));
            result
        });
        match task.await {
            Ok(result) => result.map_err(RunError::Crate)?,
            Err(_) => {
                return Err(RunError::Crate(Error::Request {
                    url: crate::audience::redacted_url(url),
                    detail: "the discovery of this server stopped before it finished".to_owned(),
                    transient: true,
                }));
            }
        }
    }
}

/// Waits for a discovery to end; `None` when its leader went away before it started.
async fn finished(mut running: watch::Receiver<State>) -> Option<Result<Outcome, Error>> {
    loop {
        if let State::Done(outcome) = &*running.borrow_and_update() {
            return Some(outcome.clone());
        }
        running.changed().await.ok()?;
    }
}

/// One discovery, owned, so that it runs to its end in a task of its own.
struct Job {
    cache: TokenCache,
    discovery: Discovery,
    clients: ClientRegistrar,
    redirect_uri: Option<Url>,
    url: Url,
    headers: http::HeaderMap,
}

impl Job {
    async fn run(self) -> Result<(), Error> {
        let Job {
            cache,
            discovery,
            clients,
            redirect_uri,
            url,
            headers,
        } = self;
        let usable = |issuer: &str| cache.trust(issuer, &clients) != Trust::Untrusted;
        let discovered = discovery
            .discover_preferring(&url, &headers, &usable)
            .await?;
        // RFC 9449 §7.1: a server that offers only the DPoP scheme gets bound tokens from the
        // first one on (or an error naming the setting, where the client has no key), rather
        // than a bearer token it would refuse.
        if Challenges::parse(headers.get_all(WWW_AUTHENTICATE)).is_ok_and(|c| c.requires_dpop()) {
            cache
                .dpop()
                .raise(discovered.resource(), crate::dpop::Use::Required);
        }
        cache
            .register_discovered_with(&discovered, &discovery, &clients, redirect_uri)
            .await?;
        tracing::info!(
            resource = discovered.resource().wire(),
            issuer = discovered.authorization_server().issuer().as_str(),
            "discovered the resource and its authorization server"
        );
        Ok(())
    }
}
