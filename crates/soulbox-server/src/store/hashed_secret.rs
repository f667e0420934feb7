//! The lookup shared by API keys and access tokens: a presented secret is found by its SHA-256 (the only form
//! stored), and the stored hash is compared again in constant time.

use sqlx::Row;
use sqlx::any::AnyRow;
use subtle::ConstantTimeEq;

use super::{Store, StoreError};
use crate::keys::{self, SecretKind};

impl Store {
    /// The row `select` finds for `secret` of `kind`, or `None` for a secret of the wrong shape or an unknown one.
    /// `select` takes the hash as `$1` and names the stored hash `secret_hash`.
    pub(super) async fn find_by_secret(
        &self,
        kind: SecretKind,
        secret: &str,
        select: &str,
    ) -> Result<Option<AnyRow>, StoreError> {
        if !kind.looks_like(secret) {
            return Ok(None);
        }
        let wanted = keys::hash(secret);
        let Some(row) = sqlx::query(select).bind(&wanted).fetch_optional(&self.pool).await? else {
            return Ok(None);
        };
        let stored: String = row.try_get("secret_hash")?;
        Ok(bool::from(stored.as_bytes().ct_eq(wanted.as_bytes())).then_some(row))
    }
}
