//! The processes envd started, addressable by pid or tag.
//!
//! A process is listed and accepts input and signals while it runs. After it ends, its entry stays for
//! [`FINISHED_RETENTION`] only so that a late `Connect` still gets `start` + `end`; then it is forgotten.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use soulbox_protocol::connect::RpcError;
use soulbox_protocol::process as pb;

use super::handle::ProcessHandle;

/// How long a finished process's end event stays available to `Connect`.
pub const FINISHED_RETENTION: Duration = Duration::from_secs(30);

#[derive(Default)]
pub struct ProcessRegistry {
    processes: Mutex<HashMap<u32, Arc<ProcessHandle>>>,
}

impl ProcessRegistry {
    fn lock(&self) -> MutexGuard<'_, HashMap<u32, Arc<ProcessHandle>>> {
        self.processes.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Adds a new process; a finished one whose pid the kernel has reused is replaced.
    pub fn insert(&self, handle: Arc<ProcessHandle>) {
        self.lock().insert(handle.pid, handle);
    }

    /// Forgets `handle` unless its pid already belongs to a newer process.
    pub fn remove(&self, handle: &Arc<ProcessHandle>) {
        let mut processes = self.lock();
        if processes.get(&handle.pid).is_some_and(|h| Arc::ptr_eq(h, handle)) {
            processes.remove(&handle.pid);
        }
    }

    /// Running processes, by pid.
    pub fn running(&self) -> Vec<Arc<ProcessHandle>> {
        let mut list: Vec<_> = self.lock().values().filter(|h| !h.fanout.is_finished()).cloned().collect();
        list.sort_by_key(|h| h.pid);
        list
    }

    /// A running process (for input, signals, resizing).
    pub fn running_process(&self, selector: Option<&pb::ProcessSelector>) -> Result<Arc<ProcessHandle>, RpcError> {
        self.find(selector, false)
    }

    /// A running process, or a finished one still retained (for `Connect`).
    pub fn connectable_process(&self, selector: Option<&pb::ProcessSelector>) -> Result<Arc<ProcessHandle>, RpcError> {
        self.find(selector, true)
    }

    fn find(
        &self,
        selector: Option<&pb::ProcessSelector>,
        include_finished: bool,
    ) -> Result<Arc<ProcessHandle>, RpcError> {
        use pb::process_selector::Selector;
        let usable = |h: &&Arc<ProcessHandle>| include_finished || !h.fanout.is_finished();
        let processes = self.lock();
        match selector.and_then(|s| s.selector.as_ref()) {
            Some(Selector::Pid(pid)) => processes
                .get(pid)
                .filter(usable)
                .cloned()
                .ok_or_else(|| RpcError::not_found(format!("process with pid {pid} not found"))),
            Some(Selector::Tag(tag)) => {
                let mut matches = processes.values().filter(|h| h.tag.as_deref() == Some(tag.as_str())).filter(usable);
                // A running process with the tag wins over a finished one that is only retained.
                let (running, finished): (Vec<_>, Vec<_>) = matches.by_ref().partition(|h| !h.fanout.is_finished());
                running
                    .into_iter()
                    .chain(finished)
                    .next()
                    .cloned()
                    .ok_or_else(|| RpcError::not_found(format!("process with tag {tag} not found")))
            }
            None => Err(RpcError::invalid_argument("a process selector (pid or tag) is required")),
        }
    }
}
