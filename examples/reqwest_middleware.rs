//! The crate as a `reqwest_middleware` layer, against embedded servers on 127.0.0.1.
//!
//! ```sh
//! cargo run --example reqwest_middleware
//! ```

use audience_cache::testing::{AuthorizationServer, Client, Redirect, ResourceServer};
use audience_cache::{
    AudienceMiddleware, ClientRegistration, ParseOptions, ResourceConfig, ResourceUri, TokenCache,
};
use url::Url;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let auth = AuthorizationServer::builder()
        .client(Client::confidential("svc", "svc-secret"))
        .start()
        .await?;
    let api = ResourceServer::builder(&auth).path("/api").start().await?;
    let elsewhere = ResourceServer::builder(&auth)
        .path("/elsewhere")
        .start()
        .await?;
    // The API redirects one path to another origin: the token must not follow.
    let target = format!("{}/moved", elsewhere.url());
    api.script(|s| s.redirects = vec![Redirect::temporary("/api/old", target)]);

    let loopback = ParseOptions::strict().allow_insecure_http_on_loopback(true);
    let cache = TokenCache::builder()
        .allow_insecure_http_on_loopback(true)
        .client(
            ClientRegistration::new(auth.issuer(), Url::parse(&auth.token_endpoint())?, "svc")
                .client_secret_basic("svc-secret".into()),
        )
        .resource(ResourceConfig::new(
            ResourceUri::parse_with(api.resource(), &loopback)?,
            auth.issuer(),
        ))
        .build()?;

    // reqwest follows redirects below every middleware, so the middleware builds the client
    // with them turned off: it follows them itself, deciding again at every hop.
    let client = AudienceMiddleware::new(cache.clone())
        .into_client_builder(reqwest::Client::builder())?
        .build();

    let response = client.get(format!("{}/items", api.url())).send().await?;
    println!("GET {}/items -> {}", api.url(), response.status());

    let response = client.get(format!("{}/old", api.url())).send().await?;
    let hop = elsewhere.requests().pop();
    println!(
        "GET {}/old -> {} after a redirect to another origin; token sent there: {}",
        api.url(),
        response.status(),
        hop.is_some_and(|r| r.bearer_presented)
    );

    match client.get(format!("{}-admin", api.url())).send().await {
        Ok(response) => println!("(unexpected) {}", response.status()),
        Err(error) => println!("GET {}-admin -> refused: {error}", api.url()),
    }
    println!("token requests: {}", auth.token_requests());
    Ok(())
}
