//! The crate in one run: an embedded authorization server and two resource servers on
//! 127.0.0.1, a token cache in front of them, and what it does and refuses to do.
//!
//! ```sh
//! cargo run --example quickstart
//! ```

use std::time::{Duration, Instant};

use audience_cache::testing::{AuthorizationServer, Client, ResourceServer};
use audience_cache::{
    AuthorizedClient, ClientRegistration, ParseOptions, ResourceConfig, ResourceUri, ScopeSet,
    TokenCache,
};
use url::Url;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // An authorization server issuing 6-second JWTs whose `aud` is the requested resource, and
    // two resource servers that accept only tokens for themselves.
    let auth = AuthorizationServer::builder()
        .client(Client::confidential("quickstart", "quickstart-secret"))
        .script(|s| s.expires_in = Some(Duration::from_secs(6)))
        .start()
        .await?;
    let files = ResourceServer::builder(&auth)
        .path("/files")
        .start()
        .await?;
    let mail = ResourceServer::builder(&auth).path("/mail").start().await?;
    println!("authorization server  {}", auth.issuer());
    println!("resource A            {}", files.resource());
    println!("resource B            {}", mail.resource());

    // The servers run on plain http on loopback, which must be allowed explicitly.
    let loopback = ParseOptions::strict().allow_insecure_http_on_loopback(true);
    let resource_a = ResourceUri::parse_with(files.resource(), &loopback)?;
    let resource_b = ResourceUri::parse_with(mail.resource(), &loopback)?;
    let cache = TokenCache::builder()
        .allow_insecure_http_on_loopback(true)
        .client(
            ClientRegistration::new(
                auth.issuer(),
                Url::parse(&auth.token_endpoint())?,
                "quickstart",
            )
            .client_secret_basic("quickstart-secret".into()),
        )
        .resource(ResourceConfig::new(resource_a.clone(), auth.issuer()))
        .resource(ResourceConfig::new(resource_b.clone(), auth.issuer()))
        .build()?;
    let client = AuthorizedClient::new(cache.clone())?;

    println!("\n1. One token per resource, fetched once, then served from the cache");
    for server in [&files, &mail] {
        let url = format!("{}/report", server.url());
        for _ in 0..2 {
            let before = auth.token_requests();
            let response = client.execute(client.get(&url).build()?).await?;
            let fetched = auth.token_requests() > before;
            let how = if fetched {
                let sent = auth
                    .requests()
                    .last()
                    .map(|r| r.resources.join(" "))
                    .unwrap_or_default();
                format!("token fetched (resource={sent})")
            } else {
                "token from the cache".to_owned()
            };
            println!("   GET {url:<40} {} {how}", response.status().as_u16());
        }
    }
    println!("   token requests so far: {}", auth.token_requests());

    println!("\n2. Refresh ahead of expiry: the caller is served at once, one refresh runs behind");
    // 6 s lifetime: served for 3 s (the skew takes at most half), refreshed from 1.5 s on.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let url = Url::parse(&format!("{}/report", files.url()))?;
    let old = cache.token_for(&url).await?;
    let started = Instant::now();
    let served = cache.token_for(&url).await?;
    println!(
        "   token_for took {:?}; same token as before: {}",
        started.elapsed(),
        served.same_token_as(&old)
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    let refreshed = cache.token_for(&url).await?;
    println!(
        "   a moment later: new token: {}; token requests: {}",
        !refreshed.same_token_as(&old),
        auth.token_requests()
    );

    println!("\n3. A token for A is refused for a request to B");
    let token_a = cache.token(&resource_a, &ScopeSet::empty()).await?;
    let url_b = Url::parse(&format!("{}/inbox", mail.url()))?;
    match token_a.header_for(&url_b) {
        Ok(_) => println!("   (unexpected) the token was allowed"),
        Err(refusal) => println!("   error: {refusal}"),
    }
    let unknown = format!("{}-admin/users", files.url());
    match client.execute(client.get(&unknown).build()?).await {
        Ok(response) => println!("   (unexpected) {}", response.status()),
        Err(error) => println!("   error: {error}"),
    }
    let received_by_b = mail
        .requests()
        .iter()
        .filter(|r| r.token_fingerprint.is_some())
        .count();
    let foreign = mail
        .requests()
        .iter()
        .filter(|r| r.token_audiences.iter().any(|a| a == resource_a.key()))
        .count();
    println!("   B received {received_by_b} token(s), {foreign} of them meant for A");

    let stats = cache.stats();
    println!("\n4. Stats");
    println!(
        "   hits {}, misses {}, token requests {}, refreshes {}, refusals {}, errors {}",
        stats.hits, stats.misses, stats.fetches, stats.refreshes, stats.refusals, stats.errors
    );
    Ok(())
}
