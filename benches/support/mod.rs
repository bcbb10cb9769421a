//! What the benchmarks share: the in-process authorization server and cache they run against,
//! a description of the machine and its load (printed with every result, because absolute
//! times here vary by 30–50 % from run to run), and small statistics helpers.

#![allow(dead_code)] // each benchmark uses a different part of this module

use std::time::Duration;

use audience_cache::testing::{AuthorizationServer, AuthorizationServerBuilder, Client};
use audience_cache::{
    ClientRegistration, ResourceConfig, ResourceUri, TokenCache, TokenCacheBuilder,
};
use url::Url;

/// The issuer of in-process servers.
pub const ISSUER: &str = audience_cache::testing::IN_PROCESS_ISSUER;
pub const MCP: &str = "https://mcp.example.com/mcp";
pub const MCP_REQUEST: &str = "https://mcp.example.com/mcp/tools/call";
pub const API: &str = "https://api.example.com/v1";
pub const API_REQUEST: &str = "https://api.example.com/v1/items";

/// An in-process authorization server with one confidential client, `svc`, whose tokens are
/// JWTs with `aud` = the requested resource, answering after `latency`.
pub fn server(latency: Duration) -> AuthorizationServer {
    server_builder()
        .script(|s| s.latency = latency)
        .in_process()
}

/// The same server, not yet started (`.start().await` serves it on 127.0.0.1).
pub fn server_builder() -> AuthorizationServerBuilder {
    AuthorizationServer::builder().client(Client::confidential("svc", "s3cret"))
}

/// A cache builder that sends its token requests to `server` in process, with `resources`.
pub fn builder(server: &AuthorizationServer, resources: &[&str]) -> TokenCacheBuilder {
    let mut builder = TokenCache::builder()
        .in_process(server)
        .client(registration(server));
    for resource in resources {
        builder = builder.resource(ResourceConfig::new(resource_uri(resource), server.issuer()));
    }
    builder
}

pub fn registration(server: &AuthorizationServer) -> ClientRegistration {
    ClientRegistration::new(server.issuer(), url(&server.token_endpoint()), "svc")
        .client_secret_basic("s3cret".into())
}

pub fn url(s: &str) -> Url {
    Url::parse(s).expect("a valid URL in the benchmark")
}

pub fn resource_uri(s: &str) -> ResourceUri {
    ResourceUri::parse_with(
        s,
        &audience_cache::ParseOptions::strict().allow_insecure_http_on_loopback(true),
    )
    .expect("a valid resource in the benchmark")
}

/// `nproc`, memory, CPU model and load average, as one line per fact.
pub fn machine() -> String {
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown".to_owned());
    let mem_gib = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find(|l| l.starts_with("MemTotal:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0 / 1024.0);
    format!(
        "machine: {cpus} CPUs ({model}), {mem_gib:.0} GiB memory; {}",
        load()
    )
}

/// The load average now, as `/proc/loadavg` has it.
pub fn load() -> String {
    let avg = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let parts: Vec<&str> = avg.split_whitespace().take(3).collect();
    format!("load average {}", parts.join(" "))
}

/// Resident memory of this process, in bytes (`VmRSS` of /proc/self/status).
pub fn rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<u64>().ok())
        })
        .map_or(0, |kb| kb * 1024)
}

/// Resident memory of this process, in bytes: the second field of /proc/self/statm (pages)
/// times the page size (4 KiB on the machines these run on).
pub fn statm_resident_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|statm| statm.split_whitespace().nth(1)?.parse::<u64>().ok())
        .map_or(0, |pages| pages * 4096)
}

/// The `q`-quantile (0..=1) of sorted samples, nearest rank.
pub fn quantile(sorted: &[Duration], q: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

pub fn median(samples: &[Duration]) -> Duration {
    let mut sorted = samples.to_vec();
    sorted.sort_unstable();
    quantile(&sorted, 0.5)
}

/// A duration in the unit that reads best.
pub fn show(d: Duration) -> String {
    let ns = d.as_nanos();
    if ns < 10_000 {
        format!("{ns} ns")
    } else if ns < 10_000_000 {
        format!("{:.1} µs", ns as f64 / 1e3)
    } else {
        format!("{:.1} ms", ns as f64 / 1e6)
    }
}

pub fn ratio(value: Duration, baseline: Duration) -> f64 {
    value.as_secs_f64() / baseline.as_secs_f64().max(1e-12)
}

/// An integer from the environment (for shortening or lengthening a run), or `default`.
pub fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Where criterion writes its results: `$CARGO_TARGET_DIR/criterion` or `target/criterion`
/// beside Cargo.toml (set explicitly, so the ratios below read what this run wrote).
pub fn criterion_dir() -> std::path::PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target"));
    target.join("criterion")
}

/// Criterion's headline estimate (the slope of time against iterations, or the mean) for one
/// benchmark, if this run wrote it (its file is newer than `since`).
pub fn estimate(group: &str, id: &str, since: std::time::SystemTime) -> Option<Duration> {
    let path = criterion_dir()
        .join(group)
        .join(id)
        .join("new/estimates.json");
    let modified = std::fs::metadata(&path).ok()?.modified().ok()?;
    if modified < since {
        return None;
    }
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).ok()?).ok()?;
    let ns = json["slope"]["point_estimate"]
        .as_f64()
        .or_else(|| json["mean"]["point_estimate"].as_f64())?;
    Some(Duration::from_secs_f64(ns / 1e9))
}

/// Prints each benchmark of `group` that ran as a ratio to `baseline` (a group and id measured
/// in the same run).
pub fn print_ratios(
    group: &str,
    ids: &[&str],
    baseline: (&str, &str),
    since: std::time::SystemTime,
) {
    let Some(base) = estimate(baseline.0, baseline.1, since) else {
        return;
    };
    println!(
        "\n{group}: ratio to {}/{} ({}), same run",
        baseline.0,
        baseline.1,
        show_precise(base)
    );
    for id in ids {
        if let Some(value) = estimate(group, id, since) {
            println!(
                "  {id:<32} {:>10}  {:>6.2}×",
                show_precise(value),
                ratio(value, base)
            );
        }
    }
}

/// Nanoseconds with one decimal below 10 µs.
pub fn show_precise(d: Duration) -> String {
    let ns = d.as_secs_f64() * 1e9;
    if ns < 10_000.0 {
        format!("{ns:.1} ns")
    } else {
        show(d)
    }
}

/// Candidates interleaved: in each round every candidate makes one batch of calls in turn, and
/// its time is divided by the floor's (the first candidate's) time in that round. Load on this
/// machine drifts over seconds, which moves criterion's figures (taken one benchmark after
/// another) by 30-50 %; a ratio taken within one round is not moved by it. Prints the median
/// ratio with its interquartile range, and the median time per call.
pub fn interleaved(
    label: &str,
    candidates: &[(&str, &dyn Fn(u64) -> Duration)],
    rounds: usize,
    batch: u64,
) {
    let mut times: Vec<Vec<Duration>> = candidates.iter().map(|_| Vec::new()).collect();
    for _ in 0..rounds {
        for (i, (_, run)) in candidates.iter().enumerate() {
            times[i].push(run(batch) / batch as u32);
        }
    }
    println!(
        "\n{label}, interleaved: {rounds} rounds of {batch} calls per candidate; ratio to {} in the same round",
        candidates[0].0
    );
    println!(
        "  {:<28} {:>10}  {:>7}  {:>15}",
        "", "per call", "ratio", "IQR of ratio"
    );
    for (i, (name, _)) in candidates.iter().enumerate() {
        let mut ratios: Vec<f64> = times[i]
            .iter()
            .zip(&times[0])
            .map(|(t, floor)| ratio(*t, *floor))
            .collect();
        ratios.sort_by(f64::total_cmp);
        let at = |q: f64| ratios[((q * (ratios.len() - 1) as f64).round()) as usize];
        println!(
            "  {name:<28} {:>10}  {:>6.2}×  {:>6.2}–{:<6.2}",
            show_precise(median(&times[i])),
            at(0.5),
            at(0.25),
            at(0.75)
        );
    }
}
