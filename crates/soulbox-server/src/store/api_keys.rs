//! API key records: hashed keys, listing and revocation.

use sqlx::Row;
use sqlx::any::AnyRow;

use super::teams::{DEFAULT_TEAM_NAME, Role};
use super::{Store, StoreError, now_ms};
use crate::keys::{API_KEY, NewKey};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiKeyRecord {
    pub id: String,
    pub name: String,
    pub key_prefix: String,
    pub created_at_ms: i64,
    pub revoked_at_ms: Option<i64>,
    /// When it last authenticated, to the minute (`api_key_use.rs`).
    pub last_used_ms: Option<i64>,
    pub team_id: String,
    pub team_name: String,
    pub role: Role,
}

/// Who a request comes from: the key's team scopes everything it sees; the role gates the admin routes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    pub key_id: String,
    pub team_id: String,
    pub team_name: String,
    pub role: Role,
}

impl Caller {
    pub fn is_admin(&self) -> bool {
        self.role == Role::Admin
    }
}

const KEY_COLUMNS: &str = "k.id AS id, k.name AS name, k.key_prefix AS key_prefix, k.created_at AS created_at, \
    k.revoked_at AS revoked_at, k.last_used_at AS last_used_at, k.team_id AS team_id, t.name AS team_name, k.role AS role";

fn key_from_row(r: &AnyRow) -> Result<ApiKeyRecord, StoreError> {
    Ok(ApiKeyRecord {
        id: r.try_get("id")?,
        name: r.try_get("name")?,
        key_prefix: r.try_get("key_prefix")?,
        created_at_ms: r.try_get("created_at")?,
        revoked_at_ms: r.try_get("revoked_at")?,
        last_used_ms: r.try_get("last_used_at")?,
        team_id: r.try_get("team_id")?,
        team_name: r.try_get("team_name")?,
        role: Role::parse(&r.try_get::<String, _>("role")?),
    })
}

impl Store {
    /// A member key in the default team; returns the record and the secret (to print once).
    pub async fn create_api_key(&self, name: &str) -> Result<(ApiKeyRecord, NewKey), StoreError> {
        self.create_api_key_in(name, DEFAULT_TEAM_NAME, Role::Member).await
    }

    /// A key in the team called `team` (created if it does not exist) with `role`.
    pub async fn create_api_key_in(
        &self,
        name: &str,
        team: &str,
        role: Role,
    ) -> Result<(ApiKeyRecord, NewKey), StoreError> {
        let team = self.ensure_team(team).await?;
        let key = API_KEY.generate();
        let id = API_KEY.record_id(&key);
        let created = now_ms();
        sqlx::query(
            "INSERT INTO api_keys (id, name, key_hash, key_prefix, created_at, team_id, role) VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(&id)
        .bind(name)
        .bind(&key.hash)
        .bind(&key.display_prefix)
        .bind(created)
        .bind(&team.id)
        .bind(role.as_str())
        .execute(&self.pool)
        .await?;
        let record = ApiKeyRecord {
            id,
            name: name.to_owned(),
            key_prefix: key.display_prefix.clone(),
            created_at_ms: created,
            revoked_at_ms: None,
            last_used_ms: None,
            team_id: team.id,
            team_name: team.name,
            role,
        };
        Ok((record, key))
    }

    /// Every key of every team, oldest first (never the secrets).
    pub async fn list_api_keys(&self) -> Result<Vec<ApiKeyRecord>, StoreError> {
        let sql = format!(
            "SELECT {KEY_COLUMNS} FROM api_keys k JOIN teams t ON t.id = k.team_id ORDER BY k.created_at, k.id"
        );
        let rows = sqlx::query(&sql).fetch_all(&self.pool).await?;
        rows.iter().map(key_from_row).collect()
    }

    pub async fn count_active_api_keys(&self) -> Result<i64, StoreError> {
        let row =
            sqlx::query("SELECT COUNT(*) AS n FROM api_keys WHERE revoked_at IS NULL").fetch_one(&self.pool).await?;
        Ok(row.try_get("n")?)
    }

    /// Revokes by id; `NotFound` when no active key has it.
    pub async fn revoke_api_key(&self, id: &str) -> Result<(), StoreError> {
        let done = sqlx::query("UPDATE api_keys SET revoked_at = $1 WHERE id = $2 AND revoked_at IS NULL")
            .bind(now_ms())
            .bind(id)
            .execute(&self.pool)
            .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound(format!("api key {id}")));
        }
        Ok(())
    }

    /// Revokes team `team_id`'s key `id`; `NotFound` for an unknown, revoked or other team's key.
    pub async fn revoke_team_api_key(&self, team_id: &str, id: &str) -> Result<(), StoreError> {
        let done =
            sqlx::query("UPDATE api_keys SET revoked_at = $1 WHERE id = $2 AND team_id = $3 AND revoked_at IS NULL")
                .bind(now_ms())
                .bind(id)
                .bind(team_id)
                .execute(&self.pool)
                .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound(format!("api key {id}")));
        }
        Ok(())
    }

    /// Renames an active key, of team `team_id` when given (any team's otherwise); `NotFound` when there is none.
    pub async fn rename_api_key(&self, team_id: Option<&str>, id: &str, name: &str) -> Result<(), StoreError> {
        let done = match team_id {
            Some(team) => {
                sqlx::query("UPDATE api_keys SET name = $1 WHERE id = $2 AND revoked_at IS NULL AND team_id = $3")
                    .bind(name)
                    .bind(id)
                    .bind(team)
                    .execute(&self.pool)
                    .await?
            }
            None => {
                sqlx::query("UPDATE api_keys SET name = $1 WHERE id = $2 AND revoked_at IS NULL")
                    .bind(name)
                    .bind(id)
                    .execute(&self.pool)
                    .await?
            }
        };
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound(format!("api key {id}")));
        }
        Ok(())
    }

    /// The caller behind `secret` when it is an active key (which stamps its last use). The lookup is by hash;
    /// the final comparison is constant-time.
    pub async fn authenticate_api_key(&self, secret: &str) -> Result<Option<Caller>, StoreError> {
        let select = "SELECT k.id AS id, k.key_hash AS secret_hash, k.team_id AS team_id, t.name AS team_name, \
             k.role AS role FROM api_keys k JOIN teams t ON t.id = k.team_id \
             WHERE k.key_hash = $1 AND k.revoked_at IS NULL";
        let Some(r) = self.find_by_secret(API_KEY, secret, select).await? else { return Ok(None) };
        let caller = Caller {
            key_id: r.try_get("id")?,
            team_id: r.try_get("team_id")?,
            team_name: r.try_get("team_name")?,
            role: Role::parse(&r.try_get::<String, _>("role")?),
        };
        if let Err(e) = self.note_api_key_use(&caller.key_id, now_ms()).await {
            // A stamp that could not be written is no reason to refuse a valid key.
            tracing::warn!(key = %caller.key_id, error = %e, "could not record the API key's last use");
        }
        Ok(Some(caller))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::store::test_db::store_test;

    store_test!(key_lifecycle, |db| {
        let store = db.open().await;
        assert_eq!(store.count_active_api_keys().await.unwrap(), 0);
        let (record, key) = store.create_api_key("admin").await.unwrap();
        let caller = store.authenticate_api_key(&key.secret).await.unwrap().unwrap();
        assert_eq!(
            (caller.key_id.as_str(), caller.team_name.as_str(), caller.role),
            (record.id.as_str(), "default", Role::Member)
        );
        assert!(store.authenticate_api_key("e2b_0000000000000000000000000000000000000000").await.unwrap().is_none());
        assert!(store.authenticate_api_key("not-a-key").await.unwrap().is_none());
        let listed = store.list_api_keys().await.unwrap();
        assert!(listed[0].last_used_ms.is_some(), "authenticating stamped it");
        assert_eq!(listed, vec![ApiKeyRecord { last_used_ms: listed[0].last_used_ms, ..record.clone() }]);
        assert!(!listed[0].key_prefix.is_empty() && !key.secret.contains(&listed[0].id));
        assert_eq!(store.count_active_api_keys().await.unwrap(), 1);
        store.revoke_api_key(&record.id).await.unwrap();
        assert!(store.authenticate_api_key(&key.secret).await.unwrap().is_none());
        assert!(matches!(store.revoke_api_key(&record.id).await, Err(StoreError::NotFound(_))));
        let revoked = store.list_api_keys().await.unwrap();
        assert!(revoked[0].revoked_at_ms.is_some_and(|t| t >= record.created_at_ms));
        // Re-opening applies no migration twice and keeps the data.
        drop(store);
        let again = db.open().await;
        assert_eq!(again.list_api_keys().await.unwrap().len(), 1);
    });
}
