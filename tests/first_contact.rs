//! A burst of first calls to a resource configured without the scopes its server requires:
//! the first call learns the scopes from its 403 `insufficient_scope` and steps up, and the
//! calls that arrived meanwhile wait for it (up to two seconds) and go out with the step-up
//! applied, instead of each being refused once.

use std::sync::Arc;

mod support;

use audience_cache::testing::ResourceServer;
use audience_cache::{AuthorizedClient, ResourceConfig, TokenCache};
use support::on_loopback::{authorization_server, registration, resource};
use tokio::sync::Barrier;

const CALLERS: usize = 200;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_step_up_learned_by_the_first_call_applies_to_the_calls_waiting_for_it() {
    let auth = authorization_server().await;
    let mcp = ResourceServer::builder(&auth)
        .path("/mcp")
        .scopes_required(["mcp:read"])
        .start()
        .await
        .unwrap();
    let cache = TokenCache::builder()
        .allow_insecure_http_on_loopback(true)
        .client(registration(&auth))
        // No scopes: the server's challenge has to say which.
        .resource(ResourceConfig::new(resource(mcp.resource()), auth.issuer()))
        .build()
        .unwrap();
    let client = AuthorizedClient::new(cache).unwrap();
    let barrier = Arc::new(Barrier::new(CALLERS));
    let callers: Vec<_> = (0..CALLERS)
        .map(|_| {
            let (client, url, barrier) = (client.clone(), mcp.url(), barrier.clone());
            tokio::spawn(async move {
                barrier.wait().await;
                let response = client.execute(client.get(&url).build().unwrap()).await;
                response.unwrap().status().as_u16()
            })
        })
        .collect();
    for caller in callers {
        assert_eq!(caller.await.unwrap(), 200);
    }
    let records = mcp.requests();
    let refused = records.iter().filter(|r| r.status == 403).count();
    assert_eq!(refused, 1, "one 403, the first call's");
    assert_eq!(records.len(), CALLERS + 1);
    let token_requests = auth.requests();
    assert_eq!(token_requests.len(), 2, "{token_requests:?}");
    assert_eq!(token_requests[1].scope.as_deref(), Some("mcp:read"));
}
