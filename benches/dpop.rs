//! The added cost of DPoP (RFC 9449) on the hit path: a request's headers for a bearer token
//! (`token_for` then `headers_for`: the decision and `Authorization: Bearer`) against the same
//! for a DPoP-bound token (the decision, `Authorization: DPoP`, and a fresh ES256 proof with
//! its jti, htu, iat and ath), the proof alone (`headers_for` on a token already held), and
//! its floor: one bare ES256 signature with p256 over an input of a proof's size.
//!
//! Both caches are warm (one token fetched from the in-process server before measuring). After
//! criterion, the candidates run again interleaved, one batch each per round, and the median
//! of each round's figures is printed with its ratio to the bearer figure, which load drift on
//! a shared machine moves less.
//!
//! Run: `cargo bench --all-features --bench dpop` (`DPOP_ROUNDS`, `DPOP_BATCH` change the 15
//! rounds of 500 calls).

mod support;

use std::hint::black_box;
use std::time::{Duration, Instant};

use audience_cache::{BearerToken, DpopKey, TokenCache};
use criterion::Criterion;
use http::Method;
use tokio::runtime::Runtime;
use url::Url;

use support::{MCP, MCP_REQUEST};

struct Setup {
    bearer: TokenCache,
    dpop: TokenCache,
    bound: BearerToken,
    url: Url,
}

fn setup(rt: &Runtime) -> Setup {
    let server = support::server(Duration::ZERO);
    let bearer = support::builder(&server, &[MCP]).build().expect("a cache");
    let dpop = support::builder(&server, &[MCP])
        .dpop_key(DpopKey::generate())
        .use_dpop_for(support::resource_uri(MCP))
        .build()
        .expect("a cache");
    let url = support::url(MCP_REQUEST);
    let plain = rt.block_on(bearer.token_for(&url)).expect("a token");
    assert!(!plain.is_dpop_bound());
    let bound = rt.block_on(dpop.token_for(&url)).expect("a token");
    assert!(
        bound.is_dpop_bound(),
        "the in-process server binds the token"
    );
    Setup {
        bearer,
        dpop,
        bound,
        url,
    }
}

/// `token_for` then `headers_for` on `cache`, `iters` times.
fn hit(rt: &Runtime, cache: &TokenCache, url: &Url, iters: u64) -> Duration {
    rt.block_on(async {
        let start = Instant::now();
        for _ in 0..iters {
            let token = cache.token_for(black_box(url)).await.expect("a hit");
            black_box(token.headers_for(&Method::POST, url).expect("allowed"));
        }
        start.elapsed()
    })
}

/// `headers_for` on a token already held, `iters` times.
fn proof_only(token: &BearerToken, url: &Url, iters: u64) -> Duration {
    let start = Instant::now();
    for _ in 0..iters {
        black_box(
            token
                .headers_for(&Method::POST, black_box(url))
                .expect("allowed"),
        );
    }
    start.elapsed()
}

/// One ES256 signature over `input`, `iters` times: the floor under a proof.
fn sign_only(key: &p256::ecdsa::SigningKey, input: &[u8], iters: u64) -> Duration {
    use p256::ecdsa::signature::Signer as _;
    let start = Instant::now();
    for _ in 0..iters {
        let signature: p256::ecdsa::Signature = key.sign(black_box(input));
        black_box(signature);
    }
    start.elapsed()
}

fn signing_key() -> p256::ecdsa::SigningKey {
    let bytes: Vec<u8> = (1..=32).collect();
    p256::ecdsa::SigningKey::from_slice(&bytes).expect("a scalar below the order")
}

/// A signing input as long as a proof's (header with jwk, claims with ath).
const INPUT: [u8; 420] = [b'a'; 420];

fn dpop(c: &mut Criterion, rt: &Runtime, setup: &Setup) {
    let mut group = c.benchmark_group("dpop");
    group.bench_function("bearer_token_for_then_headers_for", |b| {
        b.iter_custom(|iters| hit(rt, &setup.bearer, &setup.url, iters))
    });
    group.bench_function("dpop_token_for_then_headers_for", |b| {
        b.iter_custom(|iters| hit(rt, &setup.dpop, &setup.url, iters))
    });
    group.bench_function("dpop_headers_for_only", |b| {
        b.iter_custom(|iters| proof_only(&setup.bound, &setup.url, iters))
    });
    let key = signing_key();
    group.bench_function("es256_sign_only", |b| {
        b.iter_custom(|iters| sign_only(&key, &INPUT, iters))
    });
    group.finish();
}

/// The three candidates interleaved: per-call medians over the rounds.
fn interleaved(rt: &Runtime, setup: &Setup) {
    let rounds = support::env_or("DPOP_ROUNDS", 15);
    let batch = support::env_or("DPOP_BATCH", 500);
    let mut samples: [Vec<Duration>; 4] = Default::default();
    let key = signing_key();
    for _ in 0..rounds {
        let per_call = |d: Duration| d / u32::try_from(batch).unwrap_or(u32::MAX);
        samples[0].push(per_call(hit(rt, &setup.bearer, &setup.url, batch)));
        samples[1].push(per_call(hit(rt, &setup.dpop, &setup.url, batch)));
        samples[2].push(per_call(proof_only(&setup.bound, &setup.url, batch)));
        samples[3].push(per_call(sign_only(&key, &INPUT, batch)));
    }
    let medians: Vec<Duration> = samples.iter().map(|s| support::median(s)).collect();
    println!("\ninterleaved, {rounds} rounds of {batch} calls, median per call:");
    for (name, median) in [
        "bearer: token_for + headers_for",
        "dpop:   token_for + headers_for",
        "dpop:   headers_for only (proof)",
        "floor:  one ES256 signature (p256)",
    ]
    .iter()
    .zip(&medians)
    {
        println!(
            "  {name:34} {:>10}  ({:.1}x bearer)",
            support::show_precise(*median),
            support::ratio(*median, medians[0])
        );
    }
    println!(
        "  added by DPoP per request: {}",
        support::show_precise(medians[1].saturating_sub(medians[0]))
    );
}

fn main() {
    println!("{}", support::machine());
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    let setup = setup(&rt);
    let mut c = Criterion::default()
        .output_directory(&support::criterion_dir())
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .sample_size(30)
        .configure_from_args();
    dpop(&mut c, &rt, &setup);
    c.final_summary();
    println!("{}", support::load());
    if std::env::args().any(|a| a == "--list" || a == "--test") {
        return;
    }
    interleaved(&rt, &setup);
    println!("{}", support::load());
}
