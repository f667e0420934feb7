//! Secrets: a team's named values, encrypted at rest with the server's key (migration `0010_secrets.sql`,
//! `secret_box.rs`). Every value written is a version; the current one is what the egress gateway reads
//! ([`Store::secret_value`]). Nothing here returns a value except that method.

use std::collections::BTreeMap;

use sqlx::Row;
use sqlx::any::AnyRow;

use super::{Store, StoreError, now_ms};
pub use crate::secret_box::SecretValue;
use crate::secret_box::{SealError, SecretBox};

/// Secret ids start with it; names may not (E2B reserves it), so `/secrets/{x}` tells the two apart.
pub const SECRET_ID_PREFIX: &str = "sec_";
const MAX_NAME_BYTES: usize = 256;
const MAX_VALUE_BYTES: usize = 64 * 1024;
// E2B's metadata limits (its `SecretMetadata`).
const MAX_METADATA_ENTRIES: usize = 32;
const MAX_METADATA_KEY_BYTES: usize = 128;
const MAX_METADATA_VALUE_BYTES: usize = 1024;
const MAX_METADATA_BYTES: usize = 8192;

/// A secret as the API shows it: never its value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretRecord {
    pub id: String,
    pub team_id: String,
    /// Canonical (lower-case).
    pub name: String,
    pub current_version: i64,
    pub metadata: BTreeMap<String, String>,
    pub created_at_ms: i64,
    pub updated_at_ms: i64,
}

const COLUMNS: &str = "id, team_id, name, current_version, metadata, created_at, updated_at";

fn from_row(r: &AnyRow) -> Result<SecretRecord, StoreError> {
    let metadata: String = r.try_get("metadata")?;
    Ok(SecretRecord {
        id: r.try_get("id")?,
        team_id: r.try_get("team_id")?,
        name: r.try_get("name")?,
        current_version: r.try_get("current_version")?,
        metadata: serde_json::from_str(&metadata).unwrap_or_default(),
        created_at_ms: r.try_get("created_at")?,
        updated_at_ms: r.try_get("updated_at")?,
    })
}

/// The canonical form of a secret's name (E2B lower-cases names before storing them), or why it is refused: the
/// SDKs' rule (not empty, no `{`, `}` or control characters: names go into `${e2b.secrets.<name>}`), a length
/// limit, and not the id prefix.
pub fn canonical_secret_name(name: &str) -> Result<String, StoreError> {
    let invalid = |why: &str| Err(StoreError::Invalid(format!("invalid secret name: {why}")));
    let name = name.to_lowercase();
    if name.is_empty() {
        return invalid("it is empty");
    }
    if name.len() > MAX_NAME_BYTES {
        return invalid(&format!("it is longer than {MAX_NAME_BYTES} bytes"));
    }
    if name.chars().any(|c| c == '{' || c == '}' || c.is_control()) {
        return invalid("it may not contain '{', '}' or control characters");
    }
    if name.starts_with(SECRET_ID_PREFIX) {
        return invalid(&format!("the prefix '{SECRET_ID_PREFIX}' is reserved for secret ids"));
    }
    Ok(name)
}

fn check_value(value: &SecretValue) -> Result<(), StoreError> {
    if value.expose().len() > MAX_VALUE_BYTES {
        return Err(StoreError::Invalid(format!("a secret value may be at most {MAX_VALUE_BYTES} bytes")));
    }
    Ok(())
}

fn metadata_json(metadata: &BTreeMap<String, String>) -> Result<String, StoreError> {
    let invalid = |why: String| Err(StoreError::Invalid(format!("invalid secret metadata: {why}")));
    if metadata.len() > MAX_METADATA_ENTRIES {
        return invalid(format!("at most {MAX_METADATA_ENTRIES} entries"));
    }
    if let Some(k) = metadata.keys().find(|k| k.len() > MAX_METADATA_KEY_BYTES) {
        return invalid(format!("key {k:?} is longer than {MAX_METADATA_KEY_BYTES} bytes"));
    }
    if let Some(k) = metadata.iter().find(|(_, v)| v.len() > MAX_METADATA_VALUE_BYTES).map(|(k, _)| k) {
        return invalid(format!("the value of {k:?} is longer than {MAX_METADATA_VALUE_BYTES} bytes"));
    }
    if metadata.iter().map(|(k, v)| k.len() + v.len()).sum::<usize>() > MAX_METADATA_BYTES {
        return invalid(format!("at most {MAX_METADATA_BYTES} bytes in all"));
    }
    serde_json::to_string(metadata).map_err(|e| StoreError::Invalid(e.to_string()))
}

/// The column and value `/secrets/{secretID}` selects by: an id (`sec_…`, lower-case hex) or a name
/// (canonicalised). No name starts with the prefix, so the two never overlap.
fn selector(id_or_name: &str) -> (&'static str, String) {
    let key = id_or_name.to_lowercase();
    let column = if key.starts_with(SECRET_ID_PREFIX) { "id" } else { "name" };
    (column, key)
}

fn not_found(id_or_name: &str) -> StoreError {
    StoreError::NotFound(format!("secret '{id_or_name}'"))
}

impl Store {
    pub(super) fn secret_box(&self) -> Result<&SecretBox, StoreError> {
        Ok(self.secrets.as_deref().ok_or(SealError::NoKey)?)
    }

    /// A new secret of `team_id` with its first version: `Invalid` for a bad name, value or metadata,
    /// `Conflict` when the team has a secret of that name.
    pub async fn create_secret(
        &self,
        team_id: &str,
        name: &str,
        value: &SecretValue,
        metadata: &BTreeMap<String, String>,
    ) -> Result<SecretRecord, StoreError> {
        let name = canonical_secret_name(name)?;
        check_value(value)?;
        let metadata_text = metadata_json(metadata)?;
        let secret_box = self.secret_box()?;
        let id = format!("{SECRET_ID_PREFIX}{}", &crate::ids::access_token()[..32]);
        let sealed = secret_box.seal(team_id, &id, 1, value)?;
        let now = now_ms();
        let mut tx = self.pool.begin().await?;
        let inserted = sqlx::query(&format!(
            "INSERT INTO secrets ({COLUMNS}) VALUES ($1, $2, $3, 1, $4, $5, $6) ON CONFLICT (team_id, name) DO NOTHING"
        ))
        .bind(&id)
        .bind(team_id)
        .bind(&name)
        .bind(&metadata_text)
        .bind(now)
        .bind(now)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if inserted != 1 {
            return Err(StoreError::Conflict(format!("a secret named '{name}' already exists")));
        }
        insert_version(&mut tx, &id, 1, &sealed, now).await?;
        tx.commit().await?;
        Ok(SecretRecord {
            id,
            team_id: team_id.to_owned(),
            name,
            current_version: 1,
            metadata: metadata.clone(),
            created_at_ms: now,
            updated_at_ms: now,
        })
    }

    /// Stores `value` as the secret's next version (and `metadata`, when given, in place of the old).
    pub async fn update_secret(
        &self,
        team_id: &str,
        id_or_name: &str,
        value: &SecretValue,
        metadata: Option<&BTreeMap<String, String>>,
    ) -> Result<SecretRecord, StoreError> {
        check_value(value)?;
        let metadata_text = metadata.map(metadata_json).transpose()?;
        let secret_box = self.secret_box()?;
        let (column, key) = selector(id_or_name);
        let now = now_ms();
        let mut tx = self.pool.begin().await?;
        // The increment comes first: it locks the row, so concurrent updates get distinct versions (PostgreSQL;
        // SQLite runs one writer at a time anyway), and a concurrent delete either waits or finds nothing.
        let updated = sqlx::query(&format!(
            "UPDATE secrets SET current_version = current_version + 1, updated_at = $1, \
             metadata = COALESCE($2, metadata) WHERE team_id = $3 AND {column} = $4"
        ))
        .bind(now)
        .bind(metadata_text)
        .bind(team_id)
        .bind(&key)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if updated != 1 {
            return Err(not_found(id_or_name));
        }
        let sql = format!("SELECT {COLUMNS} FROM secrets WHERE team_id = $1 AND {column} = $2");
        let record = from_row(&sqlx::query(&sql).bind(team_id).bind(&key).fetch_one(&mut *tx).await?)?;
        let sealed = secret_box.seal(team_id, &record.id, record.current_version, value)?;
        insert_version(&mut tx, &record.id, record.current_version, &sealed, now).await?;
        tx.commit().await?;
        Ok(record)
    }

    /// The team's secret by id or name; `None` for another team's.
    pub async fn get_secret(&self, team_id: &str, id_or_name: &str) -> Result<Option<SecretRecord>, StoreError> {
        let (column, key) = selector(id_or_name);
        let sql = format!("SELECT {COLUMNS} FROM secrets WHERE team_id = $1 AND {column} = $2");
        let row = sqlx::query(&sql).bind(team_id).bind(&key).fetch_optional(&self.pool).await?;
        row.as_ref().map(from_row).transpose()
    }

    /// The team's secrets, oldest first (ties by id; sorted here, not by the database's collation).
    pub async fn list_team_secrets(&self, team_id: &str) -> Result<Vec<SecretRecord>, StoreError> {
        let sql = format!("SELECT {COLUMNS} FROM secrets WHERE team_id = $1");
        let rows = sqlx::query(&sql).bind(team_id).fetch_all(&self.pool).await?;
        let mut secrets = rows.iter().map(from_row).collect::<Result<Vec<_>, _>>()?;
        secrets.sort_by(|a, b| (a.created_at_ms, &a.id).cmp(&(b.created_at_ms, &b.id)));
        Ok(secrets)
    }

    /// Deletes the team's secret and every version of it; false when it has none by that id or name.
    pub async fn delete_secret(&self, team_id: &str, id_or_name: &str) -> Result<bool, StoreError> {
        let Some(secret) = self.get_secret(team_id, id_or_name).await? else {
            return Ok(false);
        };
        let mut tx = self.pool.begin().await?;
        // The secret's row first: it waits for an update in flight, whose version is then visible to the next
        // statement (and an update after this finds no secret).
        let deleted = sqlx::query("DELETE FROM secrets WHERE id = $1 AND team_id = $2")
            .bind(&secret.id)
            .bind(team_id)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        sqlx::query("DELETE FROM secret_versions WHERE secret_id = $1").bind(&secret.id).execute(&mut *tx).await?;
        tx.commit().await?;
        Ok(deleted == 1)
    }

    /// The current value of the team's secret `name` (any case), decrypted: for the egress gateway only, never
    /// for an API answer. `None` when the team has no such secret.
    pub async fn secret_value(&self, team_id: &str, name: &str) -> Result<Option<SecretValue>, StoreError> {
        let row = sqlx::query(
            "SELECT s.id, s.current_version, v.ciphertext FROM secrets s \
             JOIN secret_versions v ON v.secret_id = s.id AND v.version = s.current_version \
             WHERE s.team_id = $1 AND s.name = $2",
        )
        .bind(team_id)
        .bind(name.to_lowercase())
        .fetch_optional(&self.pool)
        .await?;
        let Some(row) = row else { return Ok(None) };
        let (id, version, sealed): (String, i64, String) =
            (row.try_get("id")?, row.try_get("current_version")?, row.try_get("ciphertext")?);
        Ok(Some(self.secret_box()?.open(team_id, &id, version, &sealed)?))
    }

    /// Checks that the configured key opens the newest stored version (if any; of versions stored in the same
    /// millisecond, the highest): a replaced key file or a
    /// replica with another key would otherwise only show when a secret is used.
    pub async fn check_secrets_key(&self) -> Result<(), StoreError> {
        let row = sqlx::query(
            "SELECT s.team_id, v.secret_id, v.version, v.ciphertext FROM secret_versions v \
             JOIN secrets s ON s.id = v.secret_id ORDER BY v.created_at DESC, v.version DESC, v.secret_id DESC LIMIT 1",
        )
        .fetch_optional(&self.pool)
        .await?;
        let Some(row) = row else { return Ok(()) };
        let team_id: String = row.try_get("team_id")?;
        let id: String = row.try_get("secret_id")?;
        let version: i64 = row.try_get("version")?;
        let sealed: String = row.try_get("ciphertext")?;
        self.secret_box()?.open(&team_id, &id, version, &sealed)?;
        Ok(())
    }
}

async fn insert_version(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    secret_id: &str,
    version: i64,
    sealed: &str,
    now: i64,
) -> Result<(), StoreError> {
    sqlx::query("INSERT INTO secret_versions (secret_id, version, ciphertext, created_at) VALUES ($1, $2, $3, $4)")
        .bind(secret_id)
        .bind(version)
        .bind(sealed)
        .bind(now)
        .execute(&mut **tx)
        .await?;
    Ok(())
}
