//! Cluster nodes (issue 7): what each node agent last reported, plus the operator's drain flag.

use std::collections::HashMap;

use sqlx::Row;
use sqlx::any::AnyRow;

use super::{Store, StoreError, now_ms};

#[derive(Debug, Clone, PartialEq)]
pub struct NodeRecord {
    pub id: String,
    /// Base URL of the node agent's API (`http://host:port`).
    pub address: String,
    /// The node's own secret, presented by the control plane on every node API call. Stored in clear like
    /// envd access tokens: the control plane has to present it, not just verify it.
    pub api_secret: String,
    pub region: String,
    pub version: String,
    pub cpu_count: u32,
    pub memory_mb: u64,
    pub cpu_available: f64,
    pub memory_available_mb: u64,
    pub sandbox_count: u32,
    pub trouble: Option<String>,
    /// The control plane reached the node's API at least once since it (re)registered with this address/secret.
    pub confirmed: bool,
    pub draining: bool,
    pub registered_at_ms: i64,
    pub last_heartbeat_ms: i64,
    pub last_health_check_ms: i64,
}

/// Resources of the running sandboxes the store places on one node.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NodeReservation {
    pub sandboxes: u64,
    pub cpu: u64,
    pub memory_mb: u64,
}

const COLUMNS: &str = "id, address, api_secret, region, version, cpu_count, memory_mb, cpu_available_milli, \
    memory_available_mb, sandbox_count, trouble, confirmed, draining, registered_at, last_heartbeat, last_health_check";

fn from_row(row: &AnyRow) -> Result<NodeRecord, StoreError> {
    Ok(NodeRecord {
        id: row.try_get("id")?,
        address: row.try_get("address")?,
        api_secret: row.try_get("api_secret")?,
        region: row.try_get("region")?,
        version: row.try_get("version")?,
        cpu_count: row.try_get::<i32, _>("cpu_count")?.max(0) as u32,
        memory_mb: row.try_get::<i64, _>("memory_mb")?.max(0) as u64,
        cpu_available: row.try_get::<i64, _>("cpu_available_milli")? as f64 / 1000.0,
        memory_available_mb: row.try_get::<i64, _>("memory_available_mb")?.max(0) as u64,
        sandbox_count: row.try_get::<i32, _>("sandbox_count")?.max(0) as u32,
        trouble: row.try_get("trouble")?,
        confirmed: row.try_get::<i32, _>("confirmed")? != 0,
        draining: row.try_get::<i32, _>("draining")? != 0,
        registered_at_ms: row.try_get("registered_at")?,
        last_heartbeat_ms: row.try_get("last_heartbeat")?,
        last_health_check_ms: row.try_get("last_health_check")?,
    })
}

/// Every unit of capacity in use, one row each (`$1` = now): running sandboxes, sandboxes paused with their memory
/// (frozen on the node; they keep their address, a sandbox paused to disk has none) and unexpired placement holds.
const USED_ROWS: &str = "SELECT node_id, cpu_count AS cpu, memory_mb AS mem FROM sandboxes \
     WHERE state = 'running' OR (state = 'paused' AND address IS NOT NULL) \
     UNION ALL SELECT node_id, cpu_count AS cpu, memory_mb AS mem FROM placements WHERE expires_at > $1";
const USAGE_COLUMNS: &str = "COUNT(*) AS n, SUM(cpu) AS cpu, SUM(mem) AS mem";

fn reservation_of(row: &AnyRow) -> Result<NodeReservation, StoreError> {
    Ok(NodeReservation {
        sandboxes: row.try_get::<i64, _>("n")?.max(0) as u64,
        cpu: row.try_get::<Option<i64>, _>("cpu")?.unwrap_or(0).max(0) as u64,
        memory_mb: row.try_get::<Option<i64>, _>("mem")?.unwrap_or(0).max(0) as u64,
    })
}

impl Store {
    /// Records a heartbeat (registering the node on its first). A node that comes back with another address or
    /// secret (its agent restarted) is unconfirmed again until the control plane reaches it; the drain flag and
    /// registration time survive.
    pub async fn record_node_heartbeat(&self, n: &NodeRecord) -> Result<NodeRecord, StoreError> {
        let sql = format!(
            "INSERT INTO nodes ({COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, 0, 0, $12, $13, $14) \
             ON CONFLICT (id) DO UPDATE SET \
               confirmed = CASE WHEN nodes.address = excluded.address AND nodes.api_secret = excluded.api_secret \
                           THEN nodes.confirmed ELSE 0 END, \
               address = excluded.address, api_secret = excluded.api_secret, region = excluded.region, \
               version = excluded.version, cpu_count = excluded.cpu_count, memory_mb = excluded.memory_mb, \
               cpu_available_milli = excluded.cpu_available_milli, memory_available_mb = excluded.memory_available_mb, \
               sandbox_count = excluded.sandbox_count, trouble = excluded.trouble, \
               last_heartbeat = excluded.last_heartbeat, last_health_check = excluded.last_health_check"
        );
        sqlx::query(&sql)
            .bind(&n.id)
            .bind(&n.address)
            .bind(&n.api_secret)
            .bind(&n.region)
            .bind(&n.version)
            .bind(n.cpu_count as i32)
            .bind(n.memory_mb as i64)
            .bind((n.cpu_available * 1000.0).round() as i64)
            .bind(n.memory_available_mb as i64)
            .bind(n.sandbox_count as i32)
            .bind(&n.trouble)
            .bind(n.registered_at_ms)
            .bind(n.last_heartbeat_ms)
            .bind(n.last_health_check_ms)
            .execute(&self.pool)
            .await?;
        self.get_node(&n.id).await
    }

    pub async fn get_node(&self, id: &str) -> Result<NodeRecord, StoreError> {
        let sql = format!("SELECT {COLUMNS} FROM nodes WHERE id = $1");
        match sqlx::query(&sql).bind(id).fetch_optional(&self.pool).await? {
            Some(row) => from_row(&row),
            None => Err(StoreError::NotFound(format!("node {id}"))),
        }
    }

    pub async fn list_nodes(&self) -> Result<Vec<NodeRecord>, StoreError> {
        let sql = format!("SELECT {COLUMNS} FROM nodes ORDER BY id");
        let rows = sqlx::query(&sql).fetch_all(&self.pool).await?;
        rows.iter().map(from_row).collect()
    }

    /// Marks the node reachable; only for the address and secret that were checked (a re-registration in between
    /// must be checked again).
    pub async fn confirm_node(&self, id: &str, address: &str, api_secret: &str) -> Result<bool, StoreError> {
        let done = sqlx::query("UPDATE nodes SET confirmed = 1 WHERE id = $1 AND address = $2 AND api_secret = $3")
            .bind(id)
            .bind(address)
            .bind(api_secret)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() > 0)
    }

    pub async fn set_node_draining(&self, id: &str, draining: bool) -> Result<(), StoreError> {
        let done = sqlx::query("UPDATE nodes SET draining = $1 WHERE id = $2")
            .bind(draining as i32)
            .bind(id)
            .execute(&self.pool)
            .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound(format!("node {id}")));
        }
        Ok(())
    }

    pub async fn delete_node(&self, id: &str) -> Result<bool, StoreError> {
        let done = sqlx::query("DELETE FROM nodes WHERE id = $1").bind(id).execute(&self.pool).await?;
        Ok(done.rows_affected() > 0)
    }

    /// What each node holds: its running sandboxes plus the unexpired placement holds of creates in flight.
    pub async fn node_reservations(&self) -> Result<HashMap<String, NodeReservation>, StoreError> {
        let rows = sqlx::query(&format!("SELECT node_id, {USAGE_COLUMNS} FROM ({USED_ROWS}) AS used GROUP BY node_id"))
            .bind(now_ms())
            .fetch_all(&self.pool)
            .await?;
        let mut out = HashMap::new();
        for row in rows {
            out.insert(row.try_get("node_id")?, reservation_of(&row)?);
        }
        Ok(out)
    }

    /// Holds `cpu`/`memory_mb` on `node_id` for a create in flight, if `fits` accepts what the node holds already.
    /// The check and the insert run under the node row's lock, so two replicas cannot both take the last room.
    /// `Ok(false)`: it does not fit (or the node is gone). Release with [`Store::release_placement`].
    pub async fn hold_placement(
        &self,
        hold_id: &str,
        node_id: &str,
        cpu: u32,
        memory_mb: u64,
        ttl_ms: i64,
        fits: impl FnOnce(NodeReservation) -> bool,
    ) -> Result<bool, StoreError> {
        let now = now_ms();
        let mut tx = self.pool.begin().await?;
        // The row lock (PostgreSQL) or the write lock (SQLite) serialises every placement on this node until commit.
        let locked = sqlx::query("UPDATE nodes SET placement_seq = placement_seq + 1 WHERE id = $1")
            .bind(node_id)
            .execute(&mut *tx)
            .await?;
        if locked.rows_affected() == 0 {
            return Ok(false);
        }
        let row = sqlx::query(&format!("SELECT {USAGE_COLUMNS} FROM ({USED_ROWS}) AS used WHERE node_id = $2"))
            .bind(now)
            .bind(node_id)
            .fetch_one(&mut *tx)
            .await?;
        if !fits(reservation_of(&row)?) {
            return Ok(false);
        }
        sqlx::query("DELETE FROM placements WHERE expires_at <= $1").bind(now).execute(&mut *tx).await?;
        sqlx::query(
            "INSERT INTO placements (id, node_id, cpu_count, memory_mb, expires_at) VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(hold_id)
        .bind(node_id)
        .bind(i32::try_from(cpu).unwrap_or(i32::MAX))
        .bind(i32::try_from(memory_mb).unwrap_or(i32::MAX))
        .bind(now + ttl_ms)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(true)
    }

    pub async fn release_placement(&self, hold_id: &str) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM placements WHERE id = $1").bind(hold_id).execute(&self.pool).await?;
        Ok(())
    }

    /// Ids and start times of every sandbox (running or paused) the store places on `node_id`.
    pub async fn sandboxes_on_node(&self, node_id: &str) -> Result<Vec<(String, i64)>, StoreError> {
        let rows = sqlx::query("SELECT id, started_at FROM sandboxes WHERE node_id = $1 ORDER BY id")
            .bind(node_id)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(|r| Ok((r.try_get("id")?, r.try_get("started_at")?))).collect()
    }

    /// Ids of the sandboxes on `node_id` that are not paused: what a lost node loses (a paused sandbox's memory
    /// image or files wait on the node's disk for it to come back).
    pub async fn unpaused_sandboxes_on_node(&self, node_id: &str) -> Result<Vec<String>, StoreError> {
        let rows = sqlx::query("SELECT id FROM sandboxes WHERE node_id = $1 AND state <> 'paused' ORDER BY id")
            .bind(node_id)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(|r| Ok(r.try_get("id")?)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(id: &str, secret: &str) -> NodeRecord {
        NodeRecord {
            id: id.into(),
            address: "http://127.0.0.1:4001".into(),
            api_secret: secret.into(),
            region: "eu".into(),
            version: "0.1.0".into(),
            cpu_count: 4,
            memory_mb: 8192,
            cpu_available: 3.25,
            memory_available_mb: 6000,
            sandbox_count: 2,
            trouble: None,
            confirmed: false,
            draining: false,
            registered_at_ms: 1_000,
            last_heartbeat_ms: 1_000,
            last_health_check_ms: 1_000,
        }
    }

    #[tokio::test]
    async fn heartbeats_register_update_and_reset_confirmation_on_a_new_secret() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&Store::sqlite_url(&dir.path().join("db"))).await.unwrap();
        let first = store.record_node_heartbeat(&node("n1", "s1")).await.unwrap();
        assert_eq!(first, node("n1", "s1"));
        assert!(store.confirm_node("n1", "http://127.0.0.1:4001", "s1").await.unwrap());
        assert!(!store.confirm_node("n1", "http://127.0.0.1:4001", "other").await.unwrap());
        store.set_node_draining("n1", true).await.unwrap();

        let beat =
            NodeRecord { last_heartbeat_ms: 2_000, registered_at_ms: 2_000, sandbox_count: 5, ..node("n1", "s1") };
        let got = store.record_node_heartbeat(&beat).await.unwrap();
        assert!(got.confirmed && got.draining, "same secret: confirmation and drain kept");
        assert_eq!((got.sandbox_count, got.last_heartbeat_ms, got.registered_at_ms), (5, 2_000, 1_000));

        let restarted = store.record_node_heartbeat(&node("n1", "s2")).await.unwrap();
        assert!(!restarted.confirmed && restarted.draining, "new secret: must be confirmed again");

        assert_eq!(store.list_nodes().await.unwrap().len(), 1);
        assert!(store.delete_node("n1").await.unwrap());
        assert!(matches!(store.get_node("n1").await, Err(StoreError::NotFound(_))));
        assert!(matches!(store.set_node_draining("n1", false).await, Err(StoreError::NotFound(_))));
    }

    #[tokio::test]
    async fn reservations_sum_running_sandboxes_per_node() {
        use soulbox_protocol::api::SandboxState;
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&Store::sqlite_url(&dir.path().join("db"))).await.unwrap();
        let rec = super::super::SandboxRecord {
            node_id: "n1".into(),
            cpu_count: 2,
            ..super::super::SandboxRecord::running("a")
        };
        store.insert_sandbox(&rec).await.unwrap();
        store.insert_sandbox(&super::super::SandboxRecord { id: "b".into(), ..rec.clone() }).await.unwrap();
        store
            .insert_sandbox(&super::super::SandboxRecord { id: "c".into(), state: SandboxState::Paused, ..rec.clone() })
            .await
            .unwrap();
        let r = store.node_reservations().await.unwrap();
        assert_eq!(r["n1"], NodeReservation { sandboxes: 2, cpu: 4, memory_mb: 1024 }, "paused to disk holds nothing");
        let frozen = super::super::SandboxRecord {
            id: "d".into(),
            state: SandboxState::Paused,
            address: Some("10.0.0.2".into()),
            ..rec.clone()
        };
        store.insert_sandbox(&frozen).await.unwrap();
        let r = store.node_reservations().await.unwrap();
        assert_eq!(
            r["n1"],
            NodeReservation { sandboxes: 3, cpu: 6, memory_mb: 1536 },
            "paused with memory still holds it"
        );
        assert_eq!(store.sandboxes_on_node("n1").await.unwrap().len(), 4);
        assert!(store.sandboxes_on_node("n2").await.unwrap().is_empty());
        assert_eq!(store.unpaused_sandboxes_on_node("n1").await.unwrap(), ["a", "b"], "both pauses wait for the node");
    }
}
