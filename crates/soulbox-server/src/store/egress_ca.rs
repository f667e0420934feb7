//! The installation's egress CA in the store (migration `0011_egress_ca.sql`): one for every replica and node.

use sqlx::Row;

use super::{Store, StoreError, now_ms};
use crate::secret_box::SecretValue;
use soulbox_runtime::egress_ca::CaPem;

/// The key's associated data when sealed (a secret id no team's secret can have: ids are `sec_…`).
const SEALED_AS: (&str, &str, i64) = ("", "egress-ca", 1);

impl Store {
    /// The installation's egress CA; made by the first caller (a race between replicas keeps one).
    pub async fn egress_ca(&self) -> Result<CaPem, StoreError> {
        if let Some(ca) = self.stored_egress_ca().await? {
            return Ok(ca);
        }
        let ca = CaPem::generate().map_err(|e| StoreError::Invalid(e.to_string()))?;
        let (team, id, version) = SEALED_AS;
        let sealed = self.secret_box()?.seal(team, id, version, &SecretValue::new(ca.key_pem.clone()))?;
        sqlx::query(
            "INSERT INTO egress_ca (id, cert_pem, key_sealed, created_at) VALUES (1, $1, $2, $3) \
             ON CONFLICT (id) DO NOTHING",
        )
        .bind(&ca.cert_pem)
        .bind(sealed)
        .bind(now_ms())
        .execute(&self.pool)
        .await?;
        tracing::info!("created the installation's egress CA");
        self.stored_egress_ca().await?.ok_or_else(|| StoreError::Invalid("the egress CA vanished".into()))
    }

    async fn stored_egress_ca(&self) -> Result<Option<CaPem>, StoreError> {
        let row =
            sqlx::query("SELECT cert_pem, key_sealed FROM egress_ca WHERE id = 1").fetch_optional(&self.pool).await?;
        let Some(row) = row else { return Ok(None) };
        let (cert_pem, sealed): (String, String) = (row.try_get("cert_pem")?, row.try_get("key_sealed")?);
        let (team, id, version) = SEALED_AS;
        let key = self.secret_box()?.open(team, id, version, &sealed)?;
        Ok(Some(CaPem { cert_pem, key_pem: key.expose().to_owned() }))
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_db::store_test;
    use crate::secret_box::SecretBox;
    use sqlx::Row;

    store_test!(one_ca_for_every_caller_and_its_key_sealed, |db| {
        let store = db.open().await.with_secret_box(SecretBox::new(&[7; 32]));
        let first = store.egress_ca().await.unwrap();
        let replica = db.open().await.with_secret_box(SecretBox::new(&[7; 32]));
        assert_eq!(replica.egress_ca().await.unwrap(), first, "made once, then read by every replica");
        let sealed: String =
            sqlx::query("SELECT key_sealed FROM egress_ca").fetch_one(&store.pool).await.unwrap().try_get(0).unwrap();
        assert!(!sealed.contains("PRIVATE KEY"), "the key is stored sealed");
        let stranger = db.open().await.with_secret_box(SecretBox::new(&[8; 32]));
        assert!(stranger.egress_ca().await.is_err(), "another key cannot open it");
    });
}
