//! Fetches a client-credentials token for one resource and prints what the cache knows about
//! it: the resource, the audiences, the scopes granted and the expiry. The token itself is
//! printed only with `--print-token`.
//!
//! ```sh
//! TOKEN_ENDPOINT=https://auth.example.com/oauth/token CLIENT_ID=my-client CLIENT_SECRET=… \
//!   cargo run --example client_credentials -- https://mcp.example.com/mcp mcp:read
//! ```
//!
//! Environment: `TOKEN_ENDPOINT`, `CLIENT_ID`, `CLIENT_SECRET` (required); `ISSUER` (default:
//! the token endpoint's origin); `AUTH_METHOD` = `basic` (default) or `post`;
//! `ALLOW_HTTP_LOOPBACK=1` for an authorization server on plain http on loopback.

use std::process::ExitCode;

use audience_cache::{
    ClientRegistration, ParseOptions, ResourceConfig, ResourceUri, ScopeSet, TokenCache,
};
use url::Url;

const USAGE: &str = "usage: client_credentials <resource> [scope ...] [--print-token]
environment: TOKEN_ENDPOINT, CLIENT_ID, CLIENT_SECRET (required); ISSUER, AUTH_METHOD=basic|post, ALLOW_HTTP_LOOPBACK=1";

#[tokio::main]
async fn main() -> ExitCode {
    match run().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("error: {message}");
            ExitCode::from(2)
        }
    }
}

fn env(name: &str) -> Result<String, String> {
    std::env::var(name).map_err(|_| format!("{name} is not set\n{USAGE}"))
}

async fn run() -> Result<(), String> {
    let mut print_token = false;
    let mut positional = Vec::new();
    for arg in std::env::args().skip(1) {
        match arg.as_str() {
            "--print-token" => print_token = true,
            "-h" | "--help" => return Err(USAGE.to_owned()),
            _ if arg.starts_with("--") => return Err(format!("unknown option {arg}\n{USAGE}")),
            _ => positional.push(arg),
        }
    }
    let Some((resource, scopes)) = positional.split_first() else {
        return Err(format!("no resource given\n{USAGE}"));
    };
    let loopback = std::env::var("ALLOW_HTTP_LOOPBACK").is_ok_and(|v| v == "1");
    let options = ParseOptions::strict().allow_insecure_http_on_loopback(loopback);
    let resource = ResourceUri::parse_with(resource, &options).map_err(|e| e.to_string())?;
    let scopes = ScopeSet::from_items(scopes).map_err(|e| e.to_string())?;
    let token_endpoint = Url::parse(&env("TOKEN_ENDPOINT")?)
        .map_err(|e| format!("TOKEN_ENDPOINT is not a URL: {e}"))?;
    let issuer = match std::env::var("ISSUER") {
        Ok(issuer) => issuer,
        Err(_) => token_endpoint.origin().ascii_serialization(),
    };
    let secret = env("CLIENT_SECRET")?.into();
    let registration = ClientRegistration::new(issuer.clone(), token_endpoint, env("CLIENT_ID")?);
    let registration = match std::env::var("AUTH_METHOD").as_deref() {
        Ok("post") => registration.client_secret_post(secret),
        Ok("basic") | Err(_) => registration.client_secret_basic(secret),
        Ok(other) => return Err(format!("AUTH_METHOD must be basic or post, not {other:?}")),
    };
    let cache = TokenCache::builder()
        .allow_insecure_http_on_loopback(loopback)
        .client(registration)
        .resource(ResourceConfig::new(resource.clone(), issuer.clone()))
        .build()
        .map_err(|e| e.to_string())?;
    let token = cache
        .token(&resource, &scopes)
        .await
        .map_err(|e| e.to_string())?;

    println!("issuer      {issuer}");
    println!(
        "resource    {} (sent as {})",
        resource.key(),
        resource.wire()
    );
    println!("scopes      {}", token.scopes());
    match token.audiences() {
        Some(audiences) => println!("audiences   {}", audiences.join(" ")),
        None => println!("audiences   (not a readable JWT with aud: allowed on provenance)"),
    }
    println!(
        "expires in  {} s (after the skew)",
        token.expires_in().as_secs()
    );
    if print_token {
        println!("token       {}", token.expose_secret());
    }
    Ok(())
}
