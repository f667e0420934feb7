//! Placement decision time with many simulated nodes (issue 7 benchmark): no processes, no store — the pure
//! scheduler over N candidates with random load, as the registry calls it for every create.
//!
//! `cargo run --release -p soulbox-server --example placement_bench [-- NODES PLACEMENTS]` (default 1000 10000)

use std::time::Instant;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use soulbox_server::cluster::scheduler::{Candidate, Policy, Requirements, place};
use soulbox_server::node::NodeStatus;

fn main() {
    let mut args = std::env::args().skip(1);
    let nodes: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(1000);
    let placements: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(10_000);
    let mut rng = StdRng::seed_from_u64(42);
    let statuses = [
        NodeStatus::Healthy,
        NodeStatus::Healthy,
        NodeStatus::Healthy,
        NodeStatus::Healthy,
        NodeStatus::Degraded,
        NodeStatus::Draining,
    ];
    let mut candidates: Vec<Candidate> = (0..nodes)
        .map(|i| {
            let cpu_count = [8, 16, 32, 64][i % 4];
            let memory_mb = u64::from(cpu_count) * 4096;
            let reserved_cpu = rng.random_range(0..u64::from(cpu_count) * 6);
            Candidate {
                node_id: format!("node-{i:05}"),
                status: statuses[i % statuses.len()],
                cpu_count,
                memory_mb,
                memory_available_mb: memory_mb / 2,
                reserved_cpu,
                reserved_memory_mb: reserved_cpu * 512,
                sandbox_count: reserved_cpu / 2,
            }
        })
        .collect();
    let need = Requirements { cpu_count: 2, memory_mb: 512 };
    for (label, policy) in [
        ("power of two choices (default)", Policy::default()),
        ("full scan (least loaded of all)", Policy { sample_above: usize::MAX, ..Policy::default() }),
    ] {
        let mut times = Vec::with_capacity(placements);
        for _ in 0..placements {
            let started = Instant::now();
            let chosen = place(&candidates, &need, &policy, &mut rng).map(|c| c.node_id.clone());
            times.push(started.elapsed());
            // Keep the cluster evolving like real creates do.
            if let Ok(id) = chosen
                && let Some(c) = candidates.iter_mut().find(|c| c.node_id == id)
            {
                c.reserved_cpu += 2;
                c.reserved_memory_mb += 512;
                c.sandbox_count += 1;
            }
        }
        times.sort();
        let pct = |p: f64| times[((times.len() as f64 * p) as usize).min(times.len() - 1)];
        println!(
            "{nodes} nodes, {placements} placements, {label}: p50 {:.1} µs, p99 {:.1} µs, max {:.1} µs",
            pct(0.50).as_secs_f64() * 1e6,
            pct(0.99).as_secs_f64() * 1e6,
            times[times.len() - 1].as_secs_f64() * 1e6,
        );
    }
}
