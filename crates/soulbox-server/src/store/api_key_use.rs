//! When each API key was last used (E2B's `TeamAPIKey.lastUsed`). Stamped when a key authenticates, but written
//! at most once a minute per key: a busy key costs one UPDATE a minute, not one per request. Two guards: this
//! process remembers what it wrote (no query at all within the minute), and the UPDATE itself only moves a stamp
//! that is a minute old, so several servers sharing one PostgreSQL database keep to the same rate. A server whose
//! UPDATE found another's fresher stamp waits its own minute too, so there a stamp may lag by up to two minutes.

use std::collections::HashMap;
use std::sync::Mutex;

use super::{Store, StoreError};

/// How old a key's stamp gets before a use writes a new one.
pub(super) const LAST_USED_RESOLUTION_MS: i64 = 60_000;

/// When this process last wrote each key's stamp; only keys written within the last minute are kept.
#[derive(Debug, Default)]
pub(super) struct LastUsedWrites(Mutex<HashMap<String, i64>>);

impl LastUsedWrites {
    /// Claims the write of `key_id`'s use at `now_ms`: false when this process wrote it less than a minute ago.
    fn claim(&self, key_id: &str, now_ms: i64) -> bool {
        let mut written = self.0.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if written.get(key_id).is_some_and(|&at| now_ms - at < LAST_USED_RESOLUTION_MS) {
            return false;
        }
        written.retain(|_, at| now_ms - *at < LAST_USED_RESOLUTION_MS);
        written.insert(key_id.to_owned(), now_ms);
        true
    }

    /// Gives back a claim whose write failed, so the next use tries again.
    fn release(&self, key_id: &str, claimed_ms: i64) {
        let mut written = self.0.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if written.get(key_id) == Some(&claimed_ms) {
            written.remove(key_id);
        }
    }
}

impl Store {
    /// Records that key `key_id` authenticated at `now_ms`, unless its stamp is less than a minute old.
    pub(super) async fn note_api_key_use(&self, key_id: &str, now_ms: i64) -> Result<(), StoreError> {
        if !self.last_used_writes.claim(key_id, now_ms) {
            return Ok(());
        }
        let written = sqlx::query(
            "UPDATE api_keys SET last_used_at = $1 WHERE id = $2 AND (last_used_at IS NULL OR last_used_at <= $3)",
        )
        .bind(now_ms)
        .bind(key_id)
        .bind(now_ms - LAST_USED_RESOLUTION_MS)
        .execute(&self.pool)
        .await;
        if let Err(e) = written {
            self.last_used_writes.release(key_id, now_ms);
            return Err(e.into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::store::now_ms;
    use crate::store::test_db::store_test;

    async fn last_used(store: &Store, key_id: &str) -> Option<i64> {
        store.list_api_keys().await.unwrap().into_iter().find(|k| k.id == key_id).unwrap().last_used_ms
    }

    store_test!(a_key_is_stamped_when_it_authenticates_at_most_once_a_minute, |db| {
        let store = db.open().await;
        let (record, key) = store.create_api_key("k").await.unwrap();
        let (other, _) = store.create_api_key("unused").await.unwrap();
        assert_eq!(last_used(&store, &record.id).await, None);
        let before = now_ms();
        store.authenticate_api_key(&key.secret).await.unwrap().unwrap();
        let stamp = last_used(&store, &record.id).await.expect("stamped by its first use");
        assert!(stamp >= before && stamp <= now_ms(), "{before} <= {stamp} <= now");
        assert_eq!(last_used(&store, &other.id).await, None, "only the key that was used");
        // Within the minute this process sends no query: a stamp cleared behind its back stays cleared.
        sqlx::query("UPDATE api_keys SET last_used_at = NULL WHERE id = $1")
            .bind(&record.id)
            .execute(&store.pool)
            .await
            .unwrap();
        store.note_api_key_use(&record.id, stamp + 30_000).await.unwrap();
        assert_eq!(last_used(&store, &record.id).await, None);
        store.note_api_key_use(&record.id, stamp + LAST_USED_RESOLUTION_MS).await.unwrap();
        assert_eq!(last_used(&store, &record.id).await, Some(stamp + LAST_USED_RESOLUTION_MS));
        // Another server on the same database (its own memory): the UPDATE's condition keeps it to once a minute.
        let second_server = db.open().await;
        let early = stamp + LAST_USED_RESOLUTION_MS + 59_999;
        second_server.note_api_key_use(&record.id, early).await.unwrap();
        assert_eq!(last_used(&store, &record.id).await, Some(stamp + LAST_USED_RESOLUTION_MS));
        second_server.note_api_key_use(&record.id, early + LAST_USED_RESOLUTION_MS).await.unwrap();
        assert_eq!(last_used(&store, &record.id).await, Some(early + LAST_USED_RESOLUTION_MS));
    });

    #[test]
    fn the_memory_keeps_only_keys_written_within_the_minute() {
        let writes = LastUsedWrites::default();
        assert!(writes.claim("a", 0) && writes.claim("b", 0));
        assert!(!writes.claim("a", LAST_USED_RESOLUTION_MS - 1));
        assert!(writes.claim("a", LAST_USED_RESOLUTION_MS), "a minute later");
        assert_eq!(writes.0.lock().unwrap().keys().collect::<Vec<_>>(), ["a"], "b's old entry is gone");
        writes.release("a", LAST_USED_RESOLUTION_MS);
        assert!(writes.claim("a", LAST_USED_RESOLUTION_MS + 1), "a failed write is tried again");
    }
}
