//! Placement: which node gets a new sandbox. Pure — the caller gathers the candidates (the nodes' heartbeats plus
//! what the store says is already placed on them) and passes the random source, so this is unit-tested and
//! benchmarked without processes.
//!
//! Rules: only Healthy nodes; only nodes with room for the template's vCPUs and memory (reservations of the
//! sandboxes already placed, against the node's size times an overcommit factor, and the memory the node reports
//! free right now); among those the least loaded. With many fitting nodes only `choices` random ones are compared
//! ("power of k choices"): nearly as good as the global minimum, and replicas placing concurrently from the same
//! slightly stale view do not all pile onto the one least loaded node.

use rand::Rng;

use crate::node::NodeStatus;

/// A node as the scheduler sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct Candidate {
    pub node_id: String,
    pub status: NodeStatus,
    pub cpu_count: u32,
    pub memory_mb: u64,
    /// Memory the node reported free at its last heartbeat.
    pub memory_available_mb: u64,
    /// vCPUs of the running sandboxes the store places on this node.
    pub reserved_cpu: u64,
    pub reserved_memory_mb: u64,
    pub sandbox_count: u64,
}

/// What one sandbox of the template needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Requirements {
    pub cpu_count: u32,
    pub memory_mb: u64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Policy {
    /// vCPUs a node may hand out per host CPU (sandboxes rarely use their whole share).
    pub cpu_overcommit: f64,
    /// Memory limits a node may hand out per MiB of host memory.
    pub memory_overcommit: f64,
    /// Above this many fitting nodes, compare only `choices` random ones.
    pub sample_above: usize,
    pub choices: usize,
}

impl Default for Policy {
    fn default() -> Self {
        Policy { cpu_overcommit: 8.0, memory_overcommit: 2.0, sample_above: 16, choices: 2 }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlacementError {
    #[error("no nodes are registered with the control plane")]
    NoNodes,
    #[error("no healthy node: {0}")]
    NoHealthyNode(String),
    #[error("no healthy node has room for {cpu} vCPU and {memory_mb} MiB ({healthy} healthy nodes are full)")]
    NoCapacity { cpu: u32, memory_mb: u64, healthy: usize },
}

impl Candidate {
    pub fn fits(&self, need: &Requirements, policy: &Policy) -> bool {
        let cpu_cap = f64::from(self.cpu_count) * policy.cpu_overcommit;
        let memory_cap = self.memory_mb as f64 * policy.memory_overcommit;
        (self.reserved_cpu + u64::from(need.cpu_count)) as f64 <= cpu_cap
            && (self.reserved_memory_mb + need.memory_mb) as f64 <= memory_cap
            && need.memory_mb <= self.memory_available_mb
    }

    /// The larger of the CPU and memory reservation fractions (0 = empty); what "least loaded" compares.
    fn load(&self, policy: &Policy) -> f64 {
        let cpu = self.reserved_cpu as f64 / (f64::from(self.cpu_count.max(1)) * policy.cpu_overcommit);
        let memory = self.reserved_memory_mb as f64 / (self.memory_mb.max(1) as f64 * policy.memory_overcommit);
        cpu.max(memory)
    }

    fn less_loaded_than(&self, other: &Candidate, policy: &Policy) -> bool {
        let (a, b) = (self.load(policy), other.load(policy));
        if (a - b).abs() > f64::EPSILON {
            return a < b;
        }
        (self.sandbox_count, &self.node_id) < (other.sandbox_count, &other.node_id)
    }
}

/// Picks the node for one sandbox.
pub fn place<'a, R: Rng + ?Sized>(
    candidates: &'a [Candidate],
    need: &Requirements,
    policy: &Policy,
    rng: &mut R,
) -> Result<&'a Candidate, PlacementError> {
    if candidates.is_empty() {
        return Err(PlacementError::NoNodes);
    }
    let healthy: Vec<&Candidate> = candidates.iter().filter(|c| c.status == NodeStatus::Healthy).collect();
    if healthy.is_empty() {
        return Err(PlacementError::NoHealthyNode(status_summary(candidates)));
    }
    let fitting: Vec<&Candidate> = healthy.iter().copied().filter(|c| c.fits(need, policy)).collect();
    if fitting.is_empty() {
        return Err(PlacementError::NoCapacity {
            cpu: need.cpu_count,
            memory_mb: need.memory_mb,
            healthy: healthy.len(),
        });
    }
    let pool: Vec<&Candidate> = if fitting.len() > policy.sample_above && policy.choices > 0 {
        rand::seq::index::sample(rng, fitting.len(), policy.choices.min(fitting.len()))
            .into_iter()
            .map(|i| fitting[i])
            .collect()
    } else {
        fitting
    };
    let mut best = pool[0];
    for c in &pool[1..] {
        if c.less_loaded_than(best, policy) {
            best = c;
        }
    }
    Ok(best)
}

/// "2 unhealthy, 1 draining" — why nothing is Healthy, for the error message.
fn status_summary(candidates: &[Candidate]) -> String {
    let mut counts: Vec<(NodeStatus, usize)> = Vec::new();
    for c in candidates {
        match counts.iter_mut().find(|(s, _)| *s == c.status) {
            Some((_, n)) => *n += 1,
            None => counts.push((c.status, 1)),
        }
    }
    counts.iter().map(|(s, n)| format!("{n} {}", s.as_str())).collect::<Vec<_>>().join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    fn node(id: &str, status: NodeStatus, reserved_cpu: u64, reserved_memory_mb: u64) -> Candidate {
        Candidate {
            node_id: id.into(),
            status,
            cpu_count: 4,
            memory_mb: 8192,
            memory_available_mb: 6000,
            reserved_cpu,
            reserved_memory_mb,
            sandbox_count: reserved_cpu / 2,
        }
    }

    const NEED: Requirements = Requirements { cpu_count: 2, memory_mb: 512 };

    fn rng() -> StdRng {
        StdRng::seed_from_u64(7)
    }

    #[test]
    fn only_healthy_nodes_are_candidates() {
        let nodes = [
            node("connecting", NodeStatus::Connecting, 0, 0),
            node("degraded", NodeStatus::Degraded, 0, 0),
            node("draining", NodeStatus::Draining, 0, 0),
            node("unhealthy", NodeStatus::Unhealthy, 0, 0),
            node("busy", NodeStatus::Healthy, 20, 4096),
        ];
        assert_eq!(place(&nodes, &NEED, &Policy::default(), &mut rng()).unwrap().node_id, "busy");
        let err = place(&nodes[..4], &NEED, &Policy::default(), &mut rng()).unwrap_err();
        assert_eq!(err, PlacementError::NoHealthyNode("1 connecting, 1 degraded, 1 draining, 1 unhealthy".into()));
        assert_eq!(place(&[], &NEED, &Policy::default(), &mut rng()).unwrap_err(), PlacementError::NoNodes);
    }

    #[test]
    fn least_loaded_wins_and_ties_go_to_fewer_sandboxes_then_id() {
        let nodes = [
            node("a", NodeStatus::Healthy, 8, 1024),
            node("b", NodeStatus::Healthy, 2, 512),
            node("c", NodeStatus::Healthy, 4, 256),
        ];
        assert_eq!(place(&nodes, &NEED, &Policy::default(), &mut rng()).unwrap().node_id, "b");
        let tied = [node("z", NodeStatus::Healthy, 0, 0), node("y", NodeStatus::Healthy, 0, 0)];
        assert_eq!(place(&tied, &NEED, &Policy::default(), &mut rng()).unwrap().node_id, "y");
    }

    #[test]
    fn memory_dominates_when_it_is_the_scarcer_resource() {
        // Caps with the default overcommit: 32 vCPU, 16 GiB. a: 25 % of CPU, 50 % of memory; b: 37.5 % of CPU,
        // 6 % of memory → b is less loaded although it holds more vCPUs.
        let nodes = [node("a", NodeStatus::Healthy, 8, 8192), node("b", NodeStatus::Healthy, 12, 1024)];
        assert_eq!(place(&nodes, &NEED, &Policy::default(), &mut rng()).unwrap().node_id, "b");
    }

    #[test]
    fn capacity_limits_cpu_memory_and_reported_free_memory() {
        let policy = Policy { cpu_overcommit: 1.0, memory_overcommit: 1.0, ..Policy::default() };
        let full_cpu = node("cpu", NodeStatus::Healthy, 3, 0);
        let full_memory = node("mem", NodeStatus::Healthy, 0, 7900);
        let mut low_free = node("free", NodeStatus::Healthy, 0, 0);
        low_free.memory_available_mb = 100;
        let nodes = [full_cpu, full_memory, low_free];
        let err = place(&nodes, &NEED, &policy, &mut rng()).unwrap_err();
        assert_eq!(err, PlacementError::NoCapacity { cpu: 2, memory_mb: 512, healthy: 3 });
        assert!(err.to_string().contains("no healthy node has room for 2 vCPU and 512 MiB"));
        // Overcommit lets the CPU-full node take it.
        let got = place(&nodes, &NEED, &Policy { cpu_overcommit: 2.0, ..policy }, &mut rng()).unwrap();
        assert_eq!(got.node_id, "cpu");
    }

    #[test]
    fn many_nodes_sample_two_and_spread_without_herding() {
        // 100 equal nodes; placing 1,000 sandboxes one by one (updating reservations) must spread them evenly.
        let mut nodes: Vec<Candidate> =
            (0..100).map(|i| node(&format!("n{i:03}"), NodeStatus::Healthy, 0, 0)).collect();
        let policy = Policy::default();
        let mut rng = rng();
        for _ in 0..1000 {
            let id = place(&nodes, &NEED, &policy, &mut rng).unwrap().node_id.clone();
            let chosen = nodes.iter_mut().find(|n| n.node_id == id).unwrap();
            chosen.reserved_cpu += 2;
            chosen.reserved_memory_mb += 512;
            chosen.sandbox_count += 1;
        }
        let max = nodes.iter().map(|n| n.sandbox_count).max().unwrap();
        let min = nodes.iter().map(|n| n.sandbox_count).min().unwrap();
        // Power of two choices keeps the maximum within a few of the mean (10); random placement would not.
        assert!(max <= 14 && min >= 6, "spread {min}..{max}");
    }

    #[test]
    fn with_a_sample_the_choice_is_the_lesser_of_the_sampled() {
        let nodes: Vec<Candidate> = (0..40).map(|i| node(&format!("n{i:02}"), NodeStatus::Healthy, i, 0)).collect();
        let policy = Policy::default();
        let mut rng = rng();
        let mut picks = std::collections::HashSet::new();
        for _ in 0..200 {
            picks.insert(place(&nodes, &NEED, &policy, &mut rng).unwrap().node_id.clone());
        }
        assert!(picks.len() > 5, "sampling explores several nodes");
        assert!(!picks.contains("n39"), "the most loaded node is never the lesser of two");
    }
}
