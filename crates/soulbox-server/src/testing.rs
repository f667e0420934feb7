//! Test doubles shared by the crate's tests.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, Ordering};

use async_trait::async_trait;

use crate::node::*;

/// An in-memory node: sandboxes are names in a map, every address is 127.0.0.1 (so the proxy reaches servers
/// the test runs on loopback).
#[derive(Default)]
pub struct FakeNode {
    next: AtomicU32,
    pub sandboxes: Mutex<HashMap<String, bool>>, // id → paused
    /// Each sandbox's envd secret, as a real node's runtime keeps it.
    pub secrets: Mutex<HashMap<String, soulbox_runtime::EnvdSecret>>,
    /// Templates snapshots made (besides `base`), and the template each sandbox was created from.
    pub snapshots: Mutex<Vec<String>>,
    pub created_from: Mutex<HashMap<String, String>>,
    /// The policy of each sandbox whose network was updated.
    pub networks: Mutex<HashMap<String, NetworkPolicy>>,
}

impl FakeNode {
    fn template(name: &str) -> TemplateInfo {
        TemplateInfo {
            template_id: name.into(),
            aliases: vec![name.into()],
            cpu_count: 2,
            memory_mb: 512,
            disk_size_mb: 1024,
            envd_version: "0.6.13".into(),
            created_at_ms: 0,
        }
    }
}

#[async_trait]
impl Node for FakeNode {
    async fn info(&self) -> NodeInfo {
        NodeInfo {
            node_id: "fake".into(),
            status: NodeStatus::Healthy,
            region: "test".into(),
            version: "0".into(),
            cpu_count: 2,
            memory_mb: 1024,
            cpu_available: 2.0,
            memory_available_mb: 1024,
            sandbox_count: self.sandboxes.lock().unwrap().len() as u32,
            last_health_check_unix_ms: 0,
            trouble: None,
        }
    }
    async fn templates(&self) -> Result<Vec<TemplateInfo>, NodeError> {
        let mut all = vec![Self::template("base")];
        all.extend(self.snapshots.lock().unwrap().iter().map(|n| Self::template(n)));
        Ok(all)
    }
    async fn create(&self, spec: SandboxSpec) -> Result<CreatedSandbox, NodeError> {
        if spec.template_id != "base" && !self.snapshots.lock().unwrap().contains(&spec.template_id) {
            return Err(NodeError::TemplateNotFound(spec.template_id));
        }
        let id = format!("f{}", self.next.fetch_add(1, Ordering::SeqCst));
        self.created_from.lock().unwrap().insert(id.clone(), spec.template_id);
        self.sandboxes.lock().unwrap().insert(id.clone(), false);
        self.secrets.lock().unwrap().insert(id.clone(), soulbox_runtime::EnvdSecret::generate());
        Ok(CreatedSandbox { sandbox_id: id, address: IpAddr::V4(Ipv4Addr::LOCALHOST) })
    }
    async fn pause(&self, id: &str, _keep_memory: bool) -> Result<(), NodeError> {
        self.sandboxes.lock().unwrap().insert(id.into(), true);
        Ok(())
    }
    async fn resume(&self, id: &str) -> Result<IpAddr, NodeError> {
        self.sandboxes.lock().unwrap().insert(id.into(), false);
        Ok(IpAddr::V4(Ipv4Addr::LOCALHOST))
    }
    async fn update_network(&self, id: &str, policy: &NetworkPolicy) -> Result<(), NodeError> {
        if !self.sandboxes.lock().unwrap().contains_key(id) {
            return Err(NodeError::SandboxNotFound(id.into()));
        }
        self.networks.lock().unwrap().insert(id.into(), policy.clone());
        Ok(())
    }
    async fn kill(&self, id: &str) -> Result<(), NodeError> {
        self.sandboxes.lock().unwrap().remove(id);
        self.secrets.lock().unwrap().remove(id);
        Ok(())
    }
    async fn snapshot(&self, id: &str, name: &str) -> Result<SnapshotTaken, NodeError> {
        if !self.sandboxes.lock().unwrap().contains_key(id) {
            return Err(NodeError::SandboxNotFound(id.into()));
        }
        let mut snapshots = self.snapshots.lock().unwrap();
        if !snapshots.iter().any(|n| n == name) {
            snapshots.push(name.into());
        }
        Ok(SnapshotTaken { template: Self::template(name), memory: false })
    }
    async fn delete_template(&self, name: &str) -> Result<bool, NodeError> {
        let mut snapshots = self.snapshots.lock().unwrap();
        let before = snapshots.len();
        snapshots.retain(|n| n != name);
        Ok(snapshots.len() < before)
    }
    async fn stats(&self, _id: &str) -> Result<SandboxStats, NodeError> {
        Ok(SandboxStats { cpu_count: 2, ..Default::default() })
    }
    fn envd_secret(&self, id: &str) -> Option<soulbox_runtime::EnvdSecret> {
        self.secrets.lock().unwrap().get(id).cloned()
    }
    async fn logs(&self, _id: &str, query: LogQuery) -> Result<Vec<LogLine>, NodeError> {
        // envd's format (tracing's text): time, level, target, message.
        let lines = [
            (5, "2026-01-01T00:00:00.005Z  INFO soulbox_envd: envd listening"),
            (7, "2026-01-01T00:00:00.007Z  WARN soulbox_envd::process: second line"),
            (9, "2026-01-01T00:00:00.009Z ERROR soulbox_envd::process: third line"),
        ];
        Ok(lines
            .into_iter()
            .filter(|(ms, _)| *ms >= query.start_ms)
            .take(query.limit)
            .map(|(unix_ms, line)| LogLine { unix_ms, line: line.into() })
            .collect())
    }
}
