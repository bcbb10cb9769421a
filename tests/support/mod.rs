//! What the grant, code-flow and redaction tests share: names, an in-process authorization
//! server with a confidential and a public client, and caches wired to it.

// Each test file uses part of this module.
#![allow(dead_code)]

use std::time::Duration;

use audience_cache::testing::{AuthorizationServer, Client, IN_PROCESS_ISSUER};
use audience_cache::{
    ClientRegistration, Grant, PendingAuthorization, ResourceConfig, ResourceUri, ScopeSet,
    TokenCache, TokenCacheBuilder,
};
use secrecy::SecretString;
use url::Url;

/// The in-process authorization server's issuer.
pub const ISSUER: &str = IN_PROCESS_ISSUER;
/// A resource configured at its origin: its wire form has no trailing slash.
pub const MCP: &str = "https://mcp.example.com";
/// Another resource of the same authorization server.
pub const API: &str = "https://api.example.com/v1";
/// The confidential client.
pub const SVC: &str = "svc";
/// Its secret holds every character RFC 6749 §2.3.1 encoding changes.
pub const SECRET: &str = "s3cret:+/%& x";
/// The public client.
pub const APP: &str = "app";
/// A loopback redirect URI (RFC 8252 §7.3), accepted by the server for every client.
pub const REDIRECT: &str = "http://127.0.0.1:53682/callback";

pub fn url(s: &str) -> Url {
    Url::parse(s).unwrap()
}

pub fn resource(s: &str) -> ResourceUri {
    ResourceUri::parse(s).unwrap()
}

pub fn scopes(s: &str) -> ScopeSet {
    ScopeSet::parse(s).unwrap()
}

pub fn secret(s: &str) -> SecretString {
    SecretString::from(s)
}

pub fn token_endpoint() -> Url {
    url(&format!("{ISSUER}/token"))
}

pub fn authorization_endpoint() -> Url {
    url(&format!("{ISSUER}/authorize"))
}

/// An in-process server with the confidential client `svc` (either secret method) and the
/// public client `app`.
pub fn new_server() -> AuthorizationServer {
    AuthorizationServer::builder()
        .client(Client::confidential(SVC, SECRET))
        .client(Client::public(APP))
        .in_process()
}

/// `svc` with `client_secret_basic` and the client credentials grant (the default for a client
/// with a secret).
pub fn confidential() -> ClientRegistration {
    ClientRegistration::new(ISSUER, token_endpoint(), SVC).client_secret_basic(secret(SECRET))
}

/// `app`, a public client using the authorization code grant.
pub fn public_app() -> ClientRegistration {
    ClientRegistration::new(ISSUER, token_endpoint(), APP)
        .authorization_endpoint(authorization_endpoint())
        .grant(Grant::AuthorizationCode {
            redirect_uri: url(REDIRECT),
        })
}

/// A builder sending token requests to `server` in process.
pub fn builder(
    server: &AuthorizationServer,
    registration: ClientRegistration,
) -> TokenCacheBuilder {
    TokenCache::builder()
        .in_process(server)
        .client(registration)
}

/// A cache for `registration` and `resources`, in process.
pub fn new_cache(
    server: &AuthorizationServer,
    registration: ClientRegistration,
    resources: impl IntoIterator<Item = ResourceConfig>,
) -> TokenCache {
    resources
        .into_iter()
        .fold(builder(server, registration), TokenCacheBuilder::resource)
        .build()
        .unwrap()
}

/// A resource of the in-process server.
pub fn config(uri: &str) -> ResourceConfig {
    ResourceConfig::new(resource(uri), ISSUER)
}

/// A builder for a cache of the one resource `uri`, for `svc`, on `server` in process.
pub fn one_resource(server: &AuthorizationServer, uri: &str) -> TokenCacheBuilder {
    builder(server, confidential()).resource(config(uri))
}

/// Sends the user agent to the authorization URL (the server approves at once) and returns
/// the redirect it answers with.
pub async fn approve(server: &AuthorizationServer, pending: &PendingAuthorization) -> Url {
    let request = http::Request::get(pending.url().as_str())
        .body(Vec::new())
        .unwrap();
    let response = server.handle(request).await;
    assert_eq!(response.status(), http::StatusCode::FOUND);
    let location = response.headers()[http::header::LOCATION].to_str().unwrap();
    url(location)
}

/// The value of the only query parameter `name` of `url`.
pub fn param(url: &Url, name: &str) -> Option<String> {
    let mut values = url.query_pairs().filter(|(k, _)| k == name);
    let first = values.next().map(|(_, v)| v.into_owned());
    assert!(values.next().is_none(), "{name} is repeated in {url}");
    first
}

/// The one-hour lifetime the server grants, less the default 30 s skew.
pub const USABLE: Duration = Duration::from_secs(3600 - 30);

/// Embedded servers on 127.0.0.1, for the tests that go through real sockets (the request
/// loop, redirects, discovery).
pub mod on_loopback {
    use audience_cache::testing::{AuthorizationServer, Client};
    use audience_cache::{ClientRegistration, ParseOptions, ResourceUri};
    use url::Url;

    /// A resource on loopback, plain http allowed.
    pub fn resource(uri: &str) -> ResourceUri {
        ResourceUri::parse_with(
            uri,
            &ParseOptions::strict().allow_insecure_http_on_loopback(true),
        )
        .unwrap()
    }

    /// An authorization server on 127.0.0.1 that knows the client `svc` / `s3cret`.
    pub async fn authorization_server() -> AuthorizationServer {
        AuthorizationServer::builder()
            .client(Client::confidential("svc", "s3cret"))
            .start()
            .await
            .unwrap()
    }

    /// The client `svc` at `auth` (client_secret_basic).
    pub fn registration(auth: &AuthorizationServer) -> ClientRegistration {
        ClientRegistration::new(
            auth.issuer(),
            Url::parse(&auth.token_endpoint()).unwrap(),
            "svc",
        )
        .client_secret_basic("s3cret".into())
    }
}
