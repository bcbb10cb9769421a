//! What starting a task costs the caller: `tokio::spawn` from the main thread of a 2-worker
//! multi-thread runtime (what `#[tokio::main]` gives: `block_on` on a thread that is not a
//! worker), about once a millisecond, against the same loop without the spawn. A refresh-ahead
//! hit used to start its refresh this way (the cache's own task starts it now, on the
//! runtime's timer), so this was the floor of what such a call cost, with no code of the
//! crate's in it: the spawn pushes the task on the runtime's shared queue and wakes a parked
//! worker.
//!
//! Run: `cargo bench --all-features --bench spawn_cost` (`SPAWN_ROUNDS`, `SPAWN_CALLS` change
//! the 3 rounds of 3,000 spawns and 3,000 controls, interleaved).

mod support;

use std::time::{Duration, Instant};

fn show(label: &str, mut calls: Vec<Duration>) {
    calls.sort();
    let at = |q: f64| support::quantile(&calls, q);
    let over = calls
        .iter()
        .filter(|d| **d > Duration::from_micros(500))
        .count();
    println!(
        "  {label:<34} {:>9} {:>9} {:>9} {:>6}",
        support::show(at(0.5)),
        support::show(at(0.99)),
        support::show(calls[calls.len() - 1]),
        over
    );
}

fn main() {
    println!("{}", support::machine());
    let rounds = support::env_or("SPAWN_ROUNDS", 3);
    let calls = support::env_or("SPAWN_CALLS", 3_000) as usize;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime");
    println!(
        "\none call about every millisecond on the block_on thread of a 2-worker runtime; the \
         spawned task sleeps 20 ms (a token request's wait)"
    );
    println!(
        "  {:<34} {:>9} {:>9} {:>9} {:>6}",
        "", "p50", "p99", "max", ">500µs"
    );
    for round in 0..rounds {
        let (spawns, controls) = runtime.block_on(async {
            let (mut spawns, mut controls) = (Vec::new(), Vec::new());
            for i in 0..2 * calls {
                tokio::time::sleep(Duration::from_millis(1)).await;
                let started = Instant::now();
                if i % 2 == 0 {
                    drop(tokio::spawn(tokio::time::sleep(Duration::from_millis(20))));
                    spawns.push(started.elapsed());
                } else {
                    std::hint::black_box(Instant::now());
                    controls.push(started.elapsed());
                }
            }
            (spawns, controls)
        });
        show(&format!("round {round}: tokio::spawn"), spawns);
        show(&format!("round {round}: the same loop, no spawn"), controls);
    }
    println!("{}", support::load());
}
