//! Which host CPUs a sandbox runs on. `nproc` (sched_getaffinity) and everything that sizes itself from it count
//! the CPUs a process may run on, which only a cpuset changes: so a sandbox limited to fewer CPUs than the node
//! may use is pinned to that many, taken in turn round the node's CPUs so sandboxes spread over all of them (once
//! it is up: `lifecycle/proc_view.rs`). Its CFS quota still caps what it may use of them.
use std::sync::atomic::{AtomicUsize, Ordering};

static NEXT: AtomicUsize = AtomicUsize::new(0);

/// The CPUs this process may run on (the node's share of the host), ascending.
pub fn node_cpus() -> Vec<u32> {
    // SAFETY: sched_getaffinity writes into the set we pass, of the size we pass.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    if unsafe { libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) } != 0 {
        return Vec::new();
    }
    (0..libc::CPU_SETSIZE as u32)
        // SAFETY: CPU_ISSET reads the set within its size.
        .filter(|c| unsafe { libc::CPU_ISSET(*c as usize, &set) })
        .collect()
}

/// Restricts sandbox `id`'s cgroup (made by the OCI runtime) to `cpus`; the kernel moves its processes' affinity
/// with it.
pub fn apply(cgroup_parent: &str, id: &str, cpus: &str) -> std::io::Result<()> {
    let dir = if crate::cgroup::is_v2() {
        std::path::Path::new("/sys/fs/cgroup").join(cgroup_parent).join(id)
    } else {
        std::path::Path::new("/sys/fs/cgroup/cpuset").join(cgroup_parent).join(id)
    };
    std::fs::write(dir.join("cpuset.cpus"), cpus)
}

/// The cpuset (`"2,3"`) for a sandbox of `cpu_count` CPUs; None when it may use all of the node's.
pub fn pick(cpu_count: u32) -> Option<String> {
    pick_from(&node_cpus(), cpu_count, NEXT.fetch_add(cpu_count.max(1) as usize, Ordering::Relaxed))
}

fn pick_from(node: &[u32], cpu_count: u32, start: usize) -> Option<String> {
    let n = cpu_count.max(1) as usize;
    if node.is_empty() || n >= node.len() {
        return None;
    }
    let mut cpus: Vec<u32> = (0..n).map(|i| node[(start + i) % node.len()]).collect();
    cpus.sort_unstable();
    Some(cpus.iter().map(|c| c.to_string()).collect::<Vec<_>>().join(","))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sandboxes_take_the_node_cpus_in_turn() {
        let node = [0, 1, 2, 3];
        assert_eq!(pick_from(&node, 1, 0).as_deref(), Some("0"));
        assert_eq!(pick_from(&node, 1, 1).as_deref(), Some("1"));
        assert_eq!(pick_from(&node, 2, 3).as_deref(), Some("0,3"));
        assert_eq!(pick_from(&node, 0, 5).as_deref(), Some("1"), "0 CPUs is read as 1");
        assert_eq!(pick_from(&node, 4, 0), None, "all of the node's: no cpuset");
        assert_eq!(pick_from(&node, 8, 0), None);
        assert_eq!(pick_from(&[], 1, 0), None);
        assert_eq!(pick_from(&[4, 6], 1, 1).as_deref(), Some("6"));
    }
}
