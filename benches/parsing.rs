//! Benchmark 2: parsing and coverage per call, on a short (40-byte) and a long (about
//! 1500-byte) input: `ResourceUri::parse`, `ResourceUri::covers`, `ScopeSet::parse`.
//!
//! `covers` is measured on a plain request path (the usual case: no `%`, `\`, `;` or dot
//! segment) and on the same path with one more segment of escapes (the general way); the long
//! resource has an escape in each of its 66 segments, so its requests take the general way too.
//!
//! The baseline, measured in the same run, is `url::Url::parse` of the same-size input (what a
//! client does with a URL anyway); the naive, unsafe coverage check (`starts_with` on the
//! serialized URL) is shown beside `covers` for scale.
//!
//! After criterion, the parses, `covers` and `ScopeSet::parse` run again interleaved with
//! `Url::parse` (one batch each per round, each round's ratio taken within the round), which
//! load drift on a shared machine does not move.
//!
//! Run: `cargo bench --all-features --bench parsing` (ratios are printed at the end); the
//! interleaved rounds alone: `… --bench parsing -- no_such_benchmark`.

mod support;

use std::hint::black_box;
use std::time::{Duration, Instant, SystemTime};

use audience_cache::{ResourceUri, ScopeSet};
use criterion::Criterion;
use url::Url;

/// 40 bytes.
const SHORT_RESOURCE: &str = "https://mcp.example.com/mcp/v1/tools/abc";
const SHORT_REQUEST: &str = "https://mcp.example.com/mcp/v1/tools/abc/call";
/// Two scopes, 18 bytes.
const SHORT_SCOPES: &str = "mcp:read mcp:write";

/// About 1500 bytes: 66 segments, each with a percent-encoded `é`.
fn long_resource() -> String {
    let mut s = String::from("https://mcp.example.com");
    while s.len() < 1480 {
        s.push_str("/tenant-12/caf%C3%A9");
    }
    s
}

/// About 1500 bytes: 136 scopes of 10 bytes and a space.
fn long_scopes() -> String {
    (0..136)
        .map(|i| format!("scope:{i:04}"))
        .collect::<Vec<_>>()
        .join(" ")
}

const IDS: [&str; 9] = [
    "url_parse",
    "resource_parse",
    "request_url_parse",
    "covers",
    "covers_escaped",
    "covers_naive_prefix",
    "covers_not_covered",
    "scope_parse",
    "scopes_naive_btreeset",
];

/// The short and the long case: name, resource, a request URL under it, and scopes.
fn inputs() -> [(&'static str, String, String, String); 2] {
    let long = long_resource();
    let long_request = format!("{long}/call");
    [
        (
            "short",
            SHORT_RESOURCE.to_owned(),
            SHORT_REQUEST.to_owned(),
            SHORT_SCOPES.to_owned(),
        ),
        ("long", long, long_request, long_scopes()),
    ]
}

fn parsing(c: &mut Criterion) {
    let inputs = inputs();
    for (size, resource_str, request_str, scopes_str) in &inputs {
        println!(
            "{size}: resource {} bytes, request {} bytes, scopes {} bytes",
            resource_str.len(),
            request_str.len(),
            scopes_str.len()
        );
        let resource = ResourceUri::parse(resource_str).expect("a valid resource");
        let request = Url::parse(request_str).expect("a valid URL");
        let elsewhere = Url::parse(&request_str.replace("mcp.example.com", "api.example.com"))
            .expect("a valid URL");
        // The same request with one more segment holding escapes, so that the path is not
        // plain and coverage takes the general way (normalize, then both rules §5 readings).
        let escaped =
            Url::parse(&format!("{request_str}/caf%C3%A9%20au%20lait")).expect("a valid URL");
        assert!(resource.covers(&escaped).is_covered());
        assert!(resource.covers(&request).is_covered());
        assert!(!resource.covers(&elsewhere).is_covered());

        let mut group = c.benchmark_group(format!("parsing_{size}"));
        group.bench_function("url_parse", |b| {
            b.iter(|| black_box(Url::parse(black_box(resource_str))))
        });
        group.bench_function("resource_parse", |b| {
            b.iter(|| black_box(ResourceUri::parse(black_box(resource_str))))
        });
        group.bench_function("request_url_parse", |b| {
            b.iter(|| black_box(Url::parse(black_box(request_str))))
        });
        group.bench_function("covers", |b| {
            b.iter(|| black_box(resource.covers(black_box(&request))))
        });
        group.bench_function("covers_escaped", |b| {
            b.iter(|| black_box(resource.covers(black_box(&escaped))))
        });
        group.bench_function("covers_not_covered", |b| {
            b.iter(|| black_box(resource.covers(black_box(&elsewhere))))
        });
        group.bench_function("covers_naive_prefix", |b| {
            b.iter(|| black_box(black_box(&request).as_str().starts_with(resource.key())))
        });
        group.bench_function("scope_parse", |b| {
            b.iter(|| black_box(ScopeSet::parse(black_box(scopes_str))))
        });
        group.bench_function("scopes_naive_btreeset", |b| {
            b.iter(|| {
                black_box(
                    black_box(scopes_str)
                        .split(' ')
                        .filter(|s| !s.is_empty())
                        .map(str::to_owned)
                        .collect::<std::collections::BTreeSet<String>>(),
                )
            })
        });
        group.finish();
    }
}

fn main() {
    let started = SystemTime::now();
    println!("{}", support::machine());
    let mut c = Criterion::default()
        .output_directory(&support::criterion_dir())
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(2))
        .sample_size(30)
        .configure_from_args();
    parsing(&mut c);
    c.final_summary();
    for size in ["short", "long"] {
        let group = format!("parsing_{size}");
        support::print_ratios(&group, &IDS, (&group, "url_parse"), started);
    }
    interleaved();
    println!("{}", support::load());
}

/// The parses and `covers` again, interleaved with `Url::parse` of the same input (one batch
/// each per round, the ratio taken within the round): criterion's figures, taken one after
/// another, move with the machine's load; these ratios do not. `PARSE_ROUNDS` and
/// `PARSE_BATCH` change the 40 rounds of 2,000 calls (200 for the long input).
fn interleaved() {
    let rounds = support::env_or("PARSE_ROUNDS", 40) as usize;
    if rounds == 0 {
        return;
    }
    // The long inputs take about ten times as long: a tenth of the batch each.
    let batch = support::env_or("PARSE_BATCH", 2_000);
    let inputs = inputs();
    let batches = [batch, batch / 10];
    for ((size, resource_str, request_str, scopes_str), batch) in inputs.iter().zip(&batches) {
        let resource = ResourceUri::parse(resource_str).expect("a valid resource");
        let request = Url::parse(request_str).expect("a valid URL");
        let url_parse = timed(|| {
            black_box(Url::parse(black_box(resource_str)).is_ok());
        });
        let resource_parse = timed(|| {
            black_box(ResourceUri::parse(black_box(resource_str)).is_ok());
        });
        let covers = timed(|| {
            black_box(resource.covers(black_box(&request)));
        });
        let scope_parse = timed(|| {
            black_box(ScopeSet::parse(black_box(scopes_str)).is_ok());
        });
        let candidates: [(&str, &dyn Fn(u64) -> Duration); 4] = [
            ("url_parse", &url_parse),
            ("resource_parse", &resource_parse),
            ("covers", &covers),
            ("scope_parse", &scope_parse),
        ];
        support::interleaved(&format!("parsing_{size}"), &candidates, rounds, *batch);
    }
}

/// `f` made `n` times, timed as a whole.
fn timed(f: impl Fn()) -> impl Fn(u64) -> Duration {
    move |n| {
        let started = Instant::now();
        for _ in 0..n {
            f();
        }
        started.elapsed()
    }
}
