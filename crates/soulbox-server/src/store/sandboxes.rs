//! Sandbox records: everything the control plane must remember about a running or paused sandbox.

use std::collections::BTreeMap;

use soulbox_protocol::api::SandboxState;
use sqlx::Row;
use sqlx::any::AnyRow;

use super::{Store, StoreError, now_ms};
use crate::node::NetworkPolicy;

#[derive(Debug, Clone, PartialEq)]
pub struct SandboxRecord {
    pub id: String,
    pub template_id: String,
    pub alias: Option<String>,
    pub node_id: String,
    pub state: SandboxState,
    pub started_at_ms: i64,
    pub end_at_ms: i64,
    pub cpu_count: i32,
    pub memory_mb: i32,
    pub disk_size_mb: i32,
    pub envd_version: String,
    pub envd_access_token: Option<String>,
    pub metadata: BTreeMap<String, String>,
    pub env_vars: BTreeMap<String, String>,
    pub auto_pause: bool,
    pub auto_pause_memory: bool,
    pub auto_pause_grace_s: i32,
    pub auto_resume: bool,
    pub network: NetworkPolicy,
    /// Who may reach the sandbox's ports and with which `Host` (set at create, kept for its life).
    pub ingress: Ingress,
    /// The sandbox's address on its node (absent while paused to disk).
    pub address: Option<String>,
    /// The team whose key created it: only that team sees it.
    pub team_id: String,
}

#[cfg(test)]
impl SandboxRecord {
    /// A running `base` sandbox of the default team on node `local` with every option at its default: tests
    /// override the fields they are about (`SandboxRecord { state: .., ..SandboxRecord::running(id) }`).
    pub fn running(id: &str) -> Self {
        SandboxRecord {
            id: id.into(),
            template_id: "base".into(),
            alias: None,
            node_id: "local".into(),
            state: SandboxState::Running,
            started_at_ms: 1,
            end_at_ms: 2,
            cpu_count: 1,
            memory_mb: 512,
            disk_size_mb: 0,
            envd_version: "0.6.13".into(),
            envd_access_token: None,
            metadata: Default::default(),
            env_vars: Default::default(),
            auto_pause: false,
            auto_pause_memory: false,
            auto_pause_grace_s: 0,
            auto_resume: false,
            network: Default::default(),
            ingress: Default::default(),
            address: None,
            team_id: crate::store::DEFAULT_TEAM_ID.into(),
        }
    }
}

/// How requests reach a sandbox's ports (E2B's `allowPublicTraffic: false` and `maskRequestHost`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Ingress {
    /// Set for a private sandbox: requests to its ports (not envd's) must carry it.
    pub traffic_access_token: Option<String>,
    /// The `Host` requests to its ports arrive with (`${PORT}` replaced).
    pub mask_request_host: Option<String>,
}

pub(super) const COLUMNS: &str = "id, template_id, alias, node_id, state, started_at, end_at, cpu_count, memory_mb, disk_size_mb, \
    envd_version, envd_access_token, metadata, env_vars, auto_pause, auto_pause_memory, auto_pause_grace_s, auto_resume, \
    allow_internet, network, address, team_id";

pub(super) fn state_str(state: SandboxState) -> &'static str {
    match state {
        SandboxState::Running => "running",
        SandboxState::Paused => "paused",
    }
}

/// The `network` column: the egress lists and the ingress settings (`allow_internet` has its own column).
fn network_json(n: &NetworkPolicy, ingress: &Ingress) -> String {
    let mut json = serde_json::json!({ "allowOut": n.allow_out, "denyOut": n.deny_out });
    if n.has_host_rules() {
        json["allowHosts"] = n.allow_hosts.clone().into();
        json["denyHosts"] = n.deny_hosts.clone().into();
    }
    if !n.dns_servers.is_empty() {
        json["dnsServers"] = serde_json::to_value(&n.dns_servers).unwrap_or_default();
    }
    if !n.rules.is_empty() {
        json["rules"] = serde_json::to_value(&n.rules).unwrap_or_default();
    }
    if let Some(proxy) = &n.egress_proxy {
        json["egressProxy"] = serde_json::to_value(proxy).unwrap_or_default();
    }
    if let Some(token) = &ingress.traffic_access_token {
        json["trafficAccessToken"] = token.as_str().into();
    }
    if let Some(mask) = &ingress.mask_request_host {
        json["maskRequestHost"] = mask.as_str().into();
    }
    json.to_string()
}

pub(super) fn from_row(row: &AnyRow) -> Result<SandboxRecord, StoreError> {
    let state: String = row.try_get("state")?;
    let metadata: String = row.try_get("metadata")?;
    let env_vars: String = row.try_get("env_vars")?;
    let network: String = row.try_get("network")?;
    let network: serde_json::Value = serde_json::from_str(&network).unwrap_or_default();
    let list = |key: &str| -> Vec<String> {
        network[key]
            .as_array()
            .map(|a| a.iter().filter_map(|v| v.as_str().map(str::to_owned)).collect())
            .unwrap_or_default()
    };
    Ok(SandboxRecord {
        id: row.try_get("id")?,
        template_id: row.try_get("template_id")?,
        alias: row.try_get("alias")?,
        node_id: row.try_get("node_id")?,
        state: if state == "paused" { SandboxState::Paused } else { SandboxState::Running },
        started_at_ms: row.try_get("started_at")?,
        end_at_ms: row.try_get("end_at")?,
        cpu_count: row.try_get("cpu_count")?,
        memory_mb: row.try_get("memory_mb")?,
        disk_size_mb: row.try_get("disk_size_mb")?,
        envd_version: row.try_get("envd_version")?,
        envd_access_token: row.try_get("envd_access_token")?,
        metadata: serde_json::from_str(&metadata).unwrap_or_default(),
        env_vars: serde_json::from_str(&env_vars).unwrap_or_default(),
        auto_pause: row.try_get::<i32, _>("auto_pause")? != 0,
        auto_pause_memory: row.try_get::<i32, _>("auto_pause_memory")? != 0,
        auto_pause_grace_s: row.try_get("auto_pause_grace_s")?,
        auto_resume: row.try_get::<i32, _>("auto_resume")? != 0,
        network: NetworkPolicy {
            allow_internet: row.try_get::<i32, _>("allow_internet")? != 0,
            allow_out: list("allowOut"),
            deny_out: list("denyOut"),
            allow_hosts: list("allowHosts"),
            deny_hosts: list("denyHosts"),
            egress_proxy: serde_json::from_value(network["egressProxy"].clone()).ok(),
            rules: serde_json::from_value(network["rules"].clone()).unwrap_or_default(),
            dns_servers: serde_json::from_value(network["dnsServers"].clone()).unwrap_or_default(),
        },
        ingress: Ingress {
            traffic_access_token: network["trafficAccessToken"].as_str().map(str::to_owned),
            mask_request_host: network["maskRequestHost"].as_str().map(str::to_owned),
        },
        address: row.try_get("address")?,
        team_id: row.try_get("team_id")?,
    })
}

impl Store {
    pub async fn insert_sandbox(&self, s: &SandboxRecord) -> Result<(), StoreError> {
        self.insert_sandbox_for_holds(s, Holds::default()).await
    }

    /// Inserts the record and, in the same transaction, drops the holds its capacity was held under (from then on
    /// the record counts), so neither the node's nor the team's usage counts the sandbox twice or not at all.
    pub async fn insert_sandbox_for_holds(&self, s: &SandboxRecord, holds: Holds<'_>) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        let sql = format!(
            "INSERT INTO sandboxes ({COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20, $21, $22)"
        );
        sqlx::query(&sql)
            .bind(&s.id)
            .bind(&s.template_id)
            .bind(&s.alias)
            .bind(&s.node_id)
            .bind(state_str(s.state))
            .bind(s.started_at_ms)
            .bind(s.end_at_ms)
            .bind(s.cpu_count)
            .bind(s.memory_mb)
            .bind(s.disk_size_mb)
            .bind(&s.envd_version)
            .bind(&s.envd_access_token)
            .bind(serde_json::to_string(&s.metadata).unwrap_or_else(|_| "{}".into()))
            .bind(serde_json::to_string(&s.env_vars).unwrap_or_else(|_| "{}".into()))
            .bind(s.auto_pause as i32)
            .bind(s.auto_pause_memory as i32)
            .bind(s.auto_pause_grace_s)
            .bind(s.auto_resume as i32)
            .bind(s.network.allow_internet as i32)
            .bind(network_json(&s.network, &s.ingress))
            .bind(&s.address)
            .bind(&s.team_id)
            .execute(&mut *tx)
            .await?;
        let running = s.state == SandboxState::Running;
        super::usage::record_created(&mut tx, &s.id, &s.team_id, &s.template_id, running).await?;
        holds.drop_in(&mut tx).await?;
        tx.commit().await?;
        Ok(())
    }

    pub async fn get_sandbox(&self, id: &str) -> Result<SandboxRecord, StoreError> {
        let sql = format!("SELECT {COLUMNS} FROM sandboxes WHERE id = $1");
        let row = sqlx::query(&sql).bind(id).fetch_optional(&self.pool).await?;
        match row {
            Some(r) => from_row(&r),
            None => Err(StoreError::NotFound(format!("sandbox {id}"))),
        }
    }

    pub async fn list_sandboxes(&self) -> Result<Vec<SandboxRecord>, StoreError> {
        let sql = format!("SELECT {COLUMNS} FROM sandboxes ORDER BY started_at, id");
        let rows = sqlx::query(&sql).fetch_all(&self.pool).await?;
        rows.iter().map(from_row).collect()
    }

    /// The team's sandboxes (running and paused).
    pub async fn list_team_sandboxes(&self, team_id: &str) -> Result<Vec<SandboxRecord>, StoreError> {
        let sql = format!("SELECT {COLUMNS} FROM sandboxes WHERE team_id = $1 ORDER BY started_at, id");
        let rows = sqlx::query(&sql).bind(team_id).fetch_all(&self.pool).await?;
        rows.iter().map(from_row).collect()
    }

    pub async fn delete_sandbox(&self, id: &str) -> Result<bool, StoreError> {
        let mut tx = self.pool.begin().await?;
        let done = sqlx::query("DELETE FROM sandboxes WHERE id = $1").bind(id).execute(&mut *tx).await?;
        super::usage::record_stopped(&mut tx, id).await?;
        tx.commit().await?;
        Ok(done.rows_affected() > 0)
    }

    pub async fn set_sandbox_end(&self, id: &str, end_at_ms: i64) -> Result<(), StoreError> {
        let done = sqlx::query("UPDATE sandboxes SET end_at = $1 WHERE id = $2")
            .bind(end_at_ms)
            .bind(id)
            .execute(&self.pool)
            .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound(format!("sandbox {id}")));
        }
        Ok(())
    }

    /// Replaces the sandbox's egress policy (a live network update); its ingress settings stay.
    pub async fn set_sandbox_network(
        &self,
        id: &str,
        policy: &NetworkPolicy,
        ingress: &Ingress,
    ) -> Result<(), StoreError> {
        let done = sqlx::query("UPDATE sandboxes SET allow_internet = $1, network = $2 WHERE id = $3")
            .bind(policy.allow_internet as i32)
            .bind(network_json(policy, ingress))
            .bind(id)
            .execute(&self.pool)
            .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound(format!("sandbox {id}")));
        }
        Ok(())
    }

    /// Records that the sandbox now lives on `to` (moved off `from`, `lifecycle::moves`); false when its record
    /// no longer names `from`.
    pub async fn move_sandbox_node(&self, id: &str, from: &str, to: &str) -> Result<bool, StoreError> {
        let done = sqlx::query("UPDATE sandboxes SET node_id = $1 WHERE id = $2 AND node_id = $3")
            .bind(to)
            .bind(id)
            .bind(from)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Moves a sandbox between running and paused; `expected` guards against a concurrent transition.
    /// Returns false when the sandbox was not in `expected`.
    pub async fn transition_sandbox(
        &self,
        id: &str,
        expected: SandboxState,
        next: SandboxState,
        address: Option<&str>,
        end_at_ms: i64,
    ) -> Result<bool, StoreError> {
        self.transition_sandbox_for_holds(id, expected, next, address, end_at_ms, Holds::default()).await
    }

    /// [`Store::transition_sandbox`], dropping `holds` in the same transaction (a resume held the team's capacity
    /// until the record counts again).
    pub async fn transition_sandbox_for_holds(
        &self,
        id: &str,
        expected: SandboxState,
        next: SandboxState,
        address: Option<&str>,
        end_at_ms: i64,
        holds: Holds<'_>,
    ) -> Result<bool, StoreError> {
        let mut tx = self.pool.begin().await?;
        // A transition ends any claim on the row (it was the claimed operation's last step).
        let done = sqlx::query(
            "UPDATE sandboxes SET state = $1, address = $2, end_at = $3, claimed_by = NULL, claim_until = NULL \
             WHERE id = $4 AND state = $5",
        )
        .bind(state_str(next))
        .bind(address)
        .bind(end_at_ms)
        .bind(id)
        .bind(state_str(expected))
        .execute(&mut *tx)
        .await?;
        if done.rows_affected() > 0 && expected != next {
            match next {
                SandboxState::Running => super::usage::record_running(&mut tx, id).await?,
                SandboxState::Paused => super::usage::record_stopped(&mut tx, id).await?,
            }
        }
        holds.drop_in(&mut tx).await?;
        tx.commit().await?;
        Ok(done.rows_affected() > 0)
    }
}

/// Capacity held for a sandbox until its record counts: a node placement (cluster mode) and its team's admission.
#[derive(Debug, Clone, Copy, Default)]
pub struct Holds<'a> {
    pub placement: Option<&'a str>,
    pub team: Option<&'a str>,
}

impl Holds<'_> {
    async fn drop_in(self, tx: &mut sqlx::Transaction<'static, sqlx::Any>) -> Result<(), StoreError> {
        if let Some(hold) = self.placement {
            sqlx::query("DELETE FROM placements WHERE id = $1").bind(hold).execute(&mut **tx).await?;
        }
        if let Some(hold) = self.team {
            sqlx::query("DELETE FROM team_holds WHERE id = $1").bind(hold).execute(&mut **tx).await?;
        }
        Ok(())
    }
}

/// What a claim requires of the row besides being unclaimed (or its claim having expired).
#[derive(Debug, Clone, Copy)]
pub struct ClaimCondition {
    pub state: SandboxState,
    /// The end time the claimer acted on: a timeout claim fails when another replica extended it meanwhile.
    pub end_at_ms: Option<i64>,
}

impl Store {
    /// Claims the sandbox for a state change, for `lease_ms`: true only for the one caller whose conditional
    /// UPDATE changed the row (the database serialises concurrent UPDATEs of a row, on SQLite and PostgreSQL
    /// alike). A claim held by someone else counts only until it expires.
    pub async fn claim_sandbox(
        &self,
        id: &str,
        condition: ClaimCondition,
        owner: &str,
        lease_ms: i64,
    ) -> Result<bool, StoreError> {
        let now = now_ms();
        let base = "UPDATE sandboxes SET claimed_by = $1, claim_until = $2 \
                    WHERE id = $3 AND state = $4 AND (claim_until IS NULL OR claim_until < $5)";
        let sql = match condition.end_at_ms {
            Some(_) => format!("{base} AND end_at = $6"),
            None => base.to_owned(),
        };
        let mut query =
            sqlx::query(&sql).bind(owner).bind(now + lease_ms).bind(id).bind(state_str(condition.state)).bind(now);
        if let Some(end) = condition.end_at_ms {
            query = query.bind(end);
        }
        Ok(query.execute(&self.pool).await?.rows_affected() == 1)
    }

    /// Gives a claim back after the claimed operation failed (only the owner's claim).
    pub async fn release_sandbox_claim(&self, id: &str, owner: &str) -> Result<(), StoreError> {
        sqlx::query("UPDATE sandboxes SET claimed_by = NULL, claim_until = NULL WHERE id = $1 AND claimed_by = $2")
            .bind(id)
            .bind(owner)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Running sandboxes whose deadline (end, plus the auto-pause grace when auto-pause is on) is at or before
    /// `before_ms`, and paused ones whose retention ends by then: every replica sweeps these, so a timeout fires
    /// even when the replica that set it is gone.
    pub async fn sandboxes_due(&self, before_ms: i64) -> Result<Vec<SandboxRecord>, StoreError> {
        // `end_at <= $1` first: the deadline is never before the end, and it can use the end_at index.
        let sql = format!(
            "SELECT {COLUMNS} FROM sandboxes WHERE end_at <= $1 AND (state = 'paused' OR \
             end_at + (CASE WHEN auto_pause <> 0 THEN CAST(auto_pause_grace_s AS BIGINT) * 1000 ELSE 0 END) <= $2) \
             ORDER BY end_at, id"
        );
        let rows = sqlx::query(&sql).bind(before_ms).bind(before_ms).fetch_all(&self.pool).await?;
        rows.iter().map(from_row).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub fn record(id: &str) -> SandboxRecord {
        SandboxRecord {
            alias: Some("base".into()),
            started_at_ms: 1_000,
            end_at_ms: 301_000,
            cpu_count: 2,
            disk_size_mb: 1024,
            envd_access_token: Some("tok".into()),
            metadata: BTreeMap::from([("k".into(), "v".into())]),
            auto_pause: true,
            auto_pause_memory: true,
            auto_pause_grace_s: 5,
            network: NetworkPolicy {
                allow_internet: true,
                allow_out: vec!["1.1.1.1/32".into()],
                deny_out: vec![],
                ..Default::default()
            },
            address: Some("10.77.0.2".into()),
            ..SandboxRecord::running(id)
        }
    }

    use crate::store::test_db::store_test;

    store_test!(sandbox_round_trip_and_guarded_transitions, |db| {
        let store = db.open().await;
        let rec = record("iabc");
        store.insert_sandbox(&rec).await.unwrap();
        assert_eq!(store.get_sandbox("iabc").await.unwrap(), rec);
        assert!(store.transition_sandbox("iabc", SandboxState::Running, SandboxState::Paused, None, 9).await.unwrap());
        assert!(!store.transition_sandbox("iabc", SandboxState::Running, SandboxState::Paused, None, 9).await.unwrap());
        let paused = store.get_sandbox("iabc").await.unwrap();
        assert_eq!((paused.state, paused.address, paused.end_at_ms), (SandboxState::Paused, None, 9));
        store.set_sandbox_end("iabc", 42).await.unwrap();
        assert_eq!(store.list_sandboxes().await.unwrap().len(), 1);
        assert!(store.delete_sandbox("iabc").await.unwrap());
        assert!(matches!(store.get_sandbox("iabc").await, Err(StoreError::NotFound(_))));
    });

    store_test!(a_sandbox_moves_between_nodes_only_from_the_node_its_record_names, |db| {
        let store = db.open().await;
        store.insert_sandbox(&record("imove")).await.unwrap();
        assert!(!store.move_sandbox_node("imove", "elsewhere", "node-b").await.unwrap(), "a stale move");
        assert!(store.move_sandbox_node("imove", "local", "node-b").await.unwrap());
        assert_eq!(store.get_sandbox("imove").await.unwrap().node_id, "node-b");
        assert!(!store.move_sandbox_node("imove", "local", "node-c").await.unwrap(), "moved twice from local");
    });

    store_test!(deadlines_due_and_exclusive_claims, |db| {
        let store = db.open().await;
        // iabc: auto-pause, end 301 s + 5 s grace; kill1: plain kill at 100 ms; gone: paused, its retention ends at
        // 200 ms (no grace: a paused sandbox is deleted then).
        store.insert_sandbox(&record("iabc")).await.unwrap();
        store.insert_sandbox(&SandboxRecord { auto_pause: false, end_at_ms: 100, ..record("kill1") }).await.unwrap();
        store
            .insert_sandbox(&SandboxRecord { state: SandboxState::Paused, end_at_ms: 200, ..record("gone") })
            .await
            .unwrap();
        let due = |before| {
            let store = store.clone();
            async move { store.sandboxes_due(before).await.unwrap().into_iter().map(|r| r.id).collect::<Vec<_>>() }
        };
        assert!(due(99).await.is_empty());
        assert_eq!(due(100).await, ["kill1"]);
        assert_eq!(due(200).await, ["kill1", "gone"]);
        assert_eq!(due(305_999).await, ["kill1", "gone"], "the auto-pause grace delays the deadline");
        assert_eq!(due(306_000).await, ["kill1", "gone", "iabc"]);

        let running_at = |end| ClaimCondition { state: SandboxState::Running, end_at_ms: Some(end) };
        assert!(!store.claim_sandbox("iabc", running_at(1), "a", 60_000).await.unwrap(), "extended meanwhile");
        assert!(
            !store
                .claim_sandbox("iabc", ClaimCondition { state: SandboxState::Paused, end_at_ms: None }, "a", 60_000)
                .await
                .unwrap()
        );
        assert!(store.claim_sandbox("iabc", running_at(301_000), "a", 60_000).await.unwrap());
        assert!(!store.claim_sandbox("iabc", running_at(301_000), "b", 60_000).await.unwrap(), "held by a");
        store.release_sandbox_claim("iabc", "b").await.unwrap(); // not b's: no effect
        assert!(!store.claim_sandbox("iabc", running_at(301_000), "b", 60_000).await.unwrap());
        store.release_sandbox_claim("iabc", "a").await.unwrap();
        assert!(store.claim_sandbox("iabc", running_at(301_000), "b", 60_000).await.unwrap());
        // The claimed operation's transition ends the claim.
        assert!(
            store.transition_sandbox("iabc", SandboxState::Running, SandboxState::Paused, None, 301_000).await.unwrap()
        );
        let paused = ClaimCondition { state: SandboxState::Paused, end_at_ms: None };
        assert!(store.claim_sandbox("iabc", paused, "c", 60_000).await.unwrap());

        // A claim whose holder died expires: an already expired lease does not block anyone.
        assert!(store.claim_sandbox("kill1", running_at(100), "dead", -1).await.unwrap());
        assert!(store.claim_sandbox("kill1", running_at(100), "b", 60_000).await.unwrap());
        assert!(!store.claim_sandbox("kill1", running_at(100), "c", 60_000).await.unwrap());

        // Many concurrent claimers (separate connections on PostgreSQL): exactly one wins.
        store.insert_sandbox(&record("race")).await.unwrap();
        let claims = (0..8).map(|i| {
            let store = store.clone();
            tokio::spawn(async move {
                store.claim_sandbox("race", running_at(301_000), &format!("r{i}"), 60_000).await.unwrap()
            })
        });
        let won = futures::future::join_all(claims).await.into_iter().filter(|r| *r.as_ref().unwrap()).count();
        assert_eq!(won, 1);
    });
}
