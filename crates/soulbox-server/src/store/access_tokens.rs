//! Access tokens (E2B's `/access-tokens`, sent as `Authorization: Bearer`): a team's credential for E2B's
//! access-token routes, kept like API keys (only the SHA-256; the secret is shown once).

use sqlx::Row;

use super::teams::Role;
use super::{Caller, Store, StoreError, now_ms};
use crate::keys::{ACCESS_TOKEN, NewKey};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessTokenRecord {
    pub id: String,
    pub name: String,
    pub token_prefix: String,
    pub created_at_ms: i64,
    pub team_id: String,
    /// The key or token that made it.
    pub created_by: Option<String>,
}

impl Store {
    /// A new token for team `team_id`; the secret is in the returned key only.
    pub async fn create_access_token(
        &self,
        team_id: &str,
        name: &str,
        created_by: &str,
    ) -> Result<(AccessTokenRecord, NewKey), StoreError> {
        let team = self.get_team(team_id).await?;
        let token = ACCESS_TOKEN.generate();
        let id = ACCESS_TOKEN.record_id(&token);
        let created = now_ms();
        sqlx::query(
            "INSERT INTO access_tokens (id, name, token_hash, token_prefix, created_at, team_id, created_by) \
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(&id)
        .bind(name)
        .bind(&token.hash)
        .bind(&token.display_prefix)
        .bind(created)
        .bind(&team.id)
        .bind(created_by)
        .execute(&self.pool)
        .await?;
        let record = AccessTokenRecord {
            id,
            name: name.to_owned(),
            token_prefix: token.display_prefix.clone(),
            created_at_ms: created,
            team_id: team.id,
            created_by: Some(created_by.to_owned()),
        };
        Ok((record, token))
    }

    /// Deletes team `team_id`'s token `id`; `NotFound` for an unknown one or another team's.
    pub async fn delete_access_token(&self, team_id: &str, id: &str) -> Result<(), StoreError> {
        let done = sqlx::query("DELETE FROM access_tokens WHERE id = $1 AND team_id = $2")
            .bind(id)
            .bind(team_id)
            .execute(&self.pool)
            .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound(format!("access token {id}")));
        }
        Ok(())
    }

    /// The caller behind an access token: its team, with a member's role (a token never has the admin's).
    pub async fn authenticate_access_token(&self, secret: &str) -> Result<Option<Caller>, StoreError> {
        let select = "SELECT a.id AS id, a.token_hash AS secret_hash, a.team_id AS team_id, t.name AS team_name \
             FROM access_tokens a JOIN teams t ON t.id = a.team_id WHERE a.token_hash = $1";
        let Some(r) = self.find_by_secret(ACCESS_TOKEN, secret, select).await? else { return Ok(None) };
        Ok(Some(Caller {
            key_id: r.try_get("id")?,
            team_id: r.try_get("team_id")?,
            team_name: r.try_get("team_name")?,
            role: Role::Member,
        }))
    }
}

#[cfg(test)]
mod tests {
    use crate::store::test_db::store_test;
    use crate::store::{Role, StoreError};

    store_test!(access_token_lifecycle, |db| {
        let store = db.open().await;
        let (_, key) = store.create_api_key_in("a", "team-a", Role::Member).await.unwrap();
        let a = store.authenticate_api_key(&key.secret).await.unwrap().unwrap();
        let (_, key_b) = store.create_api_key_in("b", "team-b", Role::Member).await.unwrap();
        let b = store.authenticate_api_key(&key_b.secret).await.unwrap().unwrap();
        let (record, token) = store.create_access_token(&a.team_id, "laptop", &a.key_id).await.unwrap();
        assert!(token.secret.starts_with("sk_e2b_") && record.token_prefix.len() == 13);
        let caller = store.authenticate_access_token(&token.secret).await.unwrap().unwrap();
        assert_eq!((caller.team_id.as_str(), caller.role), (a.team_id.as_str(), Role::Member));
        // A token is no key, and a key no token.
        assert!(store.authenticate_api_key(&token.secret).await.unwrap().is_none());
        assert!(store.authenticate_access_token(&key.secret).await.unwrap().is_none());
        // Another team cannot delete it; its own can, once.
        assert!(matches!(store.delete_access_token(&b.team_id, &record.id).await, Err(StoreError::NotFound(_))));
        store.delete_access_token(&a.team_id, &record.id).await.unwrap();
        assert!(store.authenticate_access_token(&token.secret).await.unwrap().is_none());
        assert!(matches!(store.delete_access_token(&a.team_id, &record.id).await, Err(StoreError::NotFound(_))));
        assert!(matches!(store.create_access_token("team_nope", "x", "k").await, Err(StoreError::NotFound(_))));
    });
}
