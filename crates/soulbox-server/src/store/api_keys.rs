//! API key records: hashed keys, listing and revocation.

use sqlx::Row;
use subtle::ConstantTimeEq;

use super::{Store, StoreError, now_ms};
use crate::keys::{self, NewKey};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiKeyRecord {
    pub id: String,
    pub name: String,
    pub key_prefix: String,
    pub created_at_ms: i64,
    pub revoked_at_ms: Option<i64>,
}

impl Store {
    /// Stores a new key's hash; returns the record and the secret (to print once).
    pub async fn create_api_key(&self, name: &str) -> Result<(ApiKeyRecord, NewKey), StoreError> {
        let key = keys::generate();
        let id = format!("key_{}", &key.hash[..12]);
        let created = now_ms();
        sqlx::query("INSERT INTO api_keys (id, name, key_hash, key_prefix, created_at) VALUES ($1, $2, $3, $4, $5)")
            .bind(&id)
            .bind(name)
            .bind(&key.hash)
            .bind(&key.display_prefix)
            .bind(created)
            .execute(&self.pool)
            .await?;
        let record = ApiKeyRecord {
            id,
            name: name.to_owned(),
            key_prefix: key.display_prefix.clone(),
            created_at_ms: created,
            revoked_at_ms: None,
        };
        Ok((record, key))
    }

    pub async fn list_api_keys(&self) -> Result<Vec<ApiKeyRecord>, StoreError> {
        let rows = sqlx::query("SELECT id, name, key_prefix, created_at, revoked_at FROM api_keys ORDER BY created_at")
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|r| {
                Ok(ApiKeyRecord {
                    id: r.try_get("id")?,
                    name: r.try_get("name")?,
                    key_prefix: r.try_get("key_prefix")?,
                    created_at_ms: r.try_get("created_at")?,
                    revoked_at_ms: r.try_get("revoked_at")?,
                })
            })
            .collect()
    }

    pub async fn count_active_api_keys(&self) -> Result<i64, StoreError> {
        let row = sqlx::query("SELECT COUNT(*) AS n FROM api_keys WHERE revoked_at IS NULL").fetch_one(&self.pool).await?;
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

    /// Whether `secret` is an active key. The lookup is by hash; the final comparison is constant-time.
    pub async fn verify_api_key(&self, secret: &str) -> Result<bool, StoreError> {
        if !keys::looks_like_key(secret) {
            return Ok(false);
        }
        let wanted = keys::hash(secret);
        let row = sqlx::query("SELECT key_hash FROM api_keys WHERE key_hash = $1 AND revoked_at IS NULL")
            .bind(&wanted)
            .fetch_optional(&self.pool)
            .await?;
        Ok(match row {
            Some(r) => {
                let stored: String = r.try_get("key_hash")?;
                bool::from(stored.as_bytes().ct_eq(wanted.as_bytes()))
            }
            None => false,
        })
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
        assert!(store.verify_api_key(&key.secret).await.unwrap());
        assert!(!store.verify_api_key("e2b_0000000000000000000000000000000000000000").await.unwrap());
        assert!(!store.verify_api_key("not-a-key").await.unwrap());
        let listed = store.list_api_keys().await.unwrap();
        assert_eq!(listed, vec![record.clone()]);
        assert!(!listed[0].key_prefix.is_empty() && !key.secret.contains(&listed[0].id));
        assert_eq!(store.count_active_api_keys().await.unwrap(), 1);
        store.revoke_api_key(&record.id).await.unwrap();
        assert!(!store.verify_api_key(&key.secret).await.unwrap());
        assert!(matches!(store.revoke_api_key(&record.id).await, Err(StoreError::NotFound(_))));
        let revoked = store.list_api_keys().await.unwrap();
        assert!(revoked[0].revoked_at_ms.is_some_and(|t| t >= record.created_at_ms));
        // Re-opening applies no migration twice and keeps the data.
        drop(store);
        let again = db.open().await;
        assert_eq!(again.list_api_keys().await.unwrap().len(), 1);
    });
}
