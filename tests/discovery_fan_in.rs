//! Discovery fan-in: however many requests to an MCP server known only by its URL start at
//! once, the servers see one unauthenticated probe, one fetch of each metadata document, one
//! registration, one authorization and one token request, counted from their own records. A
//! discovery runs to its end when every caller that waited for it is cancelled.

use std::sync::Arc;

use audience_cache::testing::{AuthorizationServer, ResourceServer};
use audience_cache::{
    AuthorizedClient, ClientRegistrar, Discovery, DiscoveryOptions, DynamicRegistration,
    HeadlessAuthorization, TokenCache,
};
use tokio::sync::Barrier;
use url::Url;

const CALLERS: usize = 500;

struct World {
    auth: AuthorizationServer,
    mcp: ResourceServer,
    client: AuthorizedClient,
}

async fn world() -> World {
    let auth = AuthorizationServer::builder()
        .script(|s| s.advertise_pkce = true)
        .dynamic_registration(true)
        .start()
        .await
        .unwrap();
    let mcp = ResourceServer::builder(&auth)
        .path("/mcp")
        .scopes_required(["mcp:read"])
        .start()
        .await
        .unwrap();
    let cache = TokenCache::builder()
        .allow_insecure_http_on_loopback(true)
        .build()
        .unwrap();
    let discovery =
        Discovery::new(DiscoveryOptions::strict().allow_insecure_http_on_loopback(true)).unwrap();
    let client = AuthorizedClient::new(cache)
        .unwrap()
        .with_discovery(
            discovery,
            ClientRegistrar::new().dynamic_registration(DynamicRegistration::new("fan-in")),
        )
        .with_authorization(Arc::new(
            HeadlessAuthorization::new(Url::parse("http://127.0.0.1:43219/callback").unwrap())
                .unwrap(),
        ));
    World { auth, mcp, client }
}

/// The resource server's records, sorted into what the counts are about.
#[derive(Debug, PartialEq, Eq)]
struct Seen {
    probes: usize,
    metadata: usize,
    with_token: usize,
}

fn seen(mcp: &ResourceServer) -> Seen {
    let records = mcp.requests();
    Seen {
        probes: records
            .iter()
            .filter(|r| r.path == "/mcp" && !r.bearer_presented)
            .count(),
        metadata: records
            .iter()
            .filter(|r| r.path.starts_with("/.well-known/oauth-protected-resource"))
            .count(),
        with_token: records
            .iter()
            .filter(|r| r.path == "/mcp" && r.bearer_presented)
            .count(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_hundred_cold_requests_make_one_discovery() {
    let w = world().await;
    let barrier = Arc::new(Barrier::new(CALLERS));
    let url = w.mcp.url();
    let callers: Vec<_> = (0..CALLERS)
        .map(|_| {
            let (client, url, barrier) = (w.client.clone(), url.clone(), barrier.clone());
            tokio::spawn(async move {
                barrier.wait().await;
                let response = client.execute(client.get(&url).build().unwrap()).await;
                response.map(|r| r.status().as_u16())
            })
        })
        .collect();
    for caller in callers {
        assert_eq!(caller.await.unwrap().unwrap(), 200);
    }
    assert_eq!(
        seen(&w.mcp),
        Seen {
            probes: 1,
            metadata: 1,
            with_token: CALLERS
        }
    );
    assert_eq!(w.auth.metadata_requests(), 1);
    assert_eq!(w.auth.registrations().len(), 1);
    assert_eq!(w.auth.authorization_requests().len(), 1);
    assert_eq!(w.auth.requests().len(), 1, "{:?}", w.auth.requests());
}

/// Every caller is cancelled once the discovery has begun (the protected resource metadata
/// was asked for); the discovery still registers the resource, and the next request uses it
/// without probing again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelled_callers_do_not_cancel_the_discovery() {
    let w = world().await;
    let url = w.mcp.url();
    let callers: Vec<_> = (0..20)
        .map(|_| {
            let (client, url) = (w.client.clone(), url.clone());
            tokio::spawn(async move {
                let _ = client.execute(client.get(&url).build().unwrap()).await;
            })
        })
        .collect();
    while seen(&w.mcp).metadata == 0 {
        tokio::time::sleep(std::time::Duration::from_millis(1)).await;
    }
    for caller in &callers {
        caller.abort();
    }
    // The discovery goes on without them: the client it registers appears at the server.
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    while w.auth.registrations().is_empty() && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    let response = w
        .client
        .execute(w.client.get(&url).build().unwrap())
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let after = seen(&w.mcp);
    assert_eq!((after.probes, after.metadata), (1, 1), "{after:?}");
    assert_eq!(w.auth.metadata_requests(), 1);
    assert_eq!(w.auth.registrations().len(), 1);
}
