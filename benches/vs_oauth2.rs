//! Benchmark 6: against what a user would otherwise pick, the plain `oauth2` crate (5.0) with
//! no cache: one client-credentials request per call, with the RFC 8707 `resource` parameter.
//!
//! Both make the same sequence of N calls alternating between two resources, against the same
//! authorization server, once in process (no socket; the cache through
//! `TokenCacheBuilder::in_process`, oauth2 through an `AsyncHttpClient` closure that calls
//! `AuthorizationServer::handle`) and once over loopback (`start()` on 127.0.0.1; the cache
//! with its own reqwest client, oauth2 with a reqwest 0.13 closure adapter). Reported: token
//! requests the server received, and time per call, the cache's as the baseline of the same
//! run. Each sequence is repeated and the median repetition is shown.
//!
//! Run: `cargo bench --all-features --bench vs_oauth2` (`VS_CALLS=10,1000` and `VS_REPEATS=5`
//! are the defaults: sequences of 10 and 1,000 calls, 5 repetitions each).

mod support;

use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, Instant};

use audience_cache::TokenCache;
use audience_cache::testing::AuthorizationServer;
use oauth2::basic::BasicClient;
use oauth2::{
    AuthType, ClientId, ClientSecret, HttpRequest, HttpResponse, TokenResponse, TokenUrl,
};

use support::{API, API_REQUEST, MCP, MCP_REQUEST};

struct Run {
    per_call: Duration,
    token_requests: usize,
}

/// The sequence: call i goes to MCP when i is even, to API when odd.
fn target(i: usize) -> (&'static str, &'static str) {
    if i.is_multiple_of(2) {
        (MCP, MCP_REQUEST)
    } else {
        (API, API_REQUEST)
    }
}

async fn with_cache(server: &AuthorizationServer, cache: TokenCache, calls: usize) -> Run {
    server.reset_counts();
    let urls = [support::url(MCP_REQUEST), support::url(API_REQUEST)];
    let started = Instant::now();
    for i in 0..calls {
        let token = cache.token_for(&urls[i % 2]).await.expect("a token");
        std::hint::black_box(token.expose_secret());
    }
    Run {
        per_call: started.elapsed() / calls as u32,
        token_requests: server.token_requests(),
    }
}

async fn with_oauth2<C>(server: &AuthorizationServer, http: &C, calls: usize) -> Run
where
    C: for<'c> oauth2::AsyncHttpClient<'c>,
{
    server.reset_counts();
    let client = BasicClient::new(ClientId::new("svc".to_owned()))
        .set_client_secret(ClientSecret::new("s3cret".to_owned()))
        .set_auth_type(AuthType::BasicAuth)
        .set_token_uri(TokenUrl::new(server.token_endpoint()).expect("a token URL"));
    let started = Instant::now();
    for i in 0..calls {
        let (resource, _) = target(i);
        let response = client
            .exchange_client_credentials()
            .add_extra_param("resource", resource)
            .request_async(http)
            .await
            .expect("a token");
        std::hint::black_box(response.access_token().secret());
    }
    Run {
        per_call: started.elapsed() / calls as u32,
        token_requests: server.token_requests(),
    }
}

fn median_run(mut runs: Vec<Run>) -> Run {
    runs.sort_by_key(|r| r.per_call);
    runs.swap_remove(runs.len() / 2)
}

fn report(label: &str, cache: &Run, oauth2: &Run, calls: usize) {
    println!("\n{label}: {calls} calls alternating {MCP} and {API}");
    println!(
        "{:<28} {:>15} {:>14} {:>16}",
        "", "token requests", "per call", "÷ audience-cache"
    );
    for (name, run) in [
        ("audience-cache token_for", cache),
        ("oauth2 5.0, no cache", oauth2),
    ] {
        println!(
            "{name:<28} {:>15} {:>14} {:>15.1}×",
            run.token_requests,
            support::show(run.per_call),
            support::ratio(run.per_call, cache.per_call)
        );
    }
}

fn main() {
    println!("{}", support::machine());
    let sizes: Vec<usize> = std::env::var("VS_CALLS")
        .unwrap_or_else(|_| "10,1000".to_owned())
        .split(',')
        .filter_map(|n| n.trim().parse().ok())
        .collect();
    let repeats = support::env_or("VS_REPEATS", 5) as usize;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime");
    // Inside a task on the runtime, as an application's calls are (block_on runs its future on
    // this thread, outside the workers, so every wake-up would cross threads).
    let work = rt.spawn(async move {
        // In process.
        let server = Arc::new(support::server(Duration::ZERO));
        let in_process = |request: HttpRequest| {
            let server = server.clone();
            async move { Ok::<HttpResponse, Infallible>(server.handle(request).await) }
        };
        for &calls in &sizes {
            let (mut cache_runs, mut oauth2_runs) = (Vec::new(), Vec::new());
            for _ in 0..repeats {
                let cache = support::builder(&server, &[MCP, API])
                    .build()
                    .expect("a cache");
                cache_runs.push(with_cache(&server, cache, calls).await);
                oauth2_runs.push(with_oauth2(&server, &in_process, calls).await);
            }
            report(
                "in process",
                &median_run(cache_runs),
                &median_run(oauth2_runs),
                calls,
            );
        }

        // Over loopback.
        let server = support::server_builder()
            .start()
            .await
            .expect("a loopback server");
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .expect("a reqwest client");
        let loopback = |request: HttpRequest| {
            let http = http.clone();
            async move {
                let response = http.execute(reqwest::Request::try_from(request)?).await?;
                let mut builder = http::Response::builder().status(response.status());
                for (name, value) in response.headers() {
                    builder = builder.header(name, value);
                }
                let body = response.bytes().await?.to_vec();
                Ok::<HttpResponse, reqwest::Error>(builder.body(body).expect("a response"))
            }
        };
        for &calls in &sizes {
            let (mut cache_runs, mut oauth2_runs) = (Vec::new(), Vec::new());
            for _ in 0..repeats {
                // The cache builds its own client from this builder (redirects off); it makes
                // two token requests in all, so sharing oauth2's connection pool would not
                // change its figures.
                let cache = TokenCache::builder()
                    .http_client_builder(reqwest::Client::builder())
                    .allow_insecure_http_on_loopback(true)
                    .client(support::registration(&server))
                    .resource(audience_cache::ResourceConfig::new(
                        support::resource_uri(MCP),
                        server.issuer(),
                    ))
                    .resource(audience_cache::ResourceConfig::new(
                        support::resource_uri(API),
                        server.issuer(),
                    ))
                    .build()
                    .expect("a cache");
                cache_runs.push(with_cache(&server, cache, calls).await);
                oauth2_runs.push(with_oauth2(&server, &loopback, calls).await);
            }
            report(
                "loopback (127.0.0.1)",
                &median_run(cache_runs),
                &median_run(oauth2_runs),
                calls,
            );
        }
    });
    rt.block_on(work).expect("the comparison ran");
    println!("{}", support::load());
}
