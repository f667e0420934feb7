//! Secrets on both backends (`<test>::sqlite`, `<test>::postgres`): versions, team scoping, and what the
//! database holds (never a plaintext; ciphertexts bound to their row and key).

use std::collections::BTreeMap;

use base64::Engine;
use sqlx::Row;

use super::test_db::{TestDatabase, store_test};
use super::*;
use crate::secret_box::{SealError, SecretBox};

const KEY: [u8; 32] = [42; 32];

async fn open(db: &TestDatabase) -> Store {
    db.open().await.with_secret_box(SecretBox::new(&KEY))
}

fn value(s: &str) -> SecretValue {
    SecretValue::new(s.into())
}

fn meta(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

/// Every column of every row of both tables, as text.
async fn raw_rows(store: &Store) -> Vec<String> {
    let mut out = vec![];
    for sql in [
        "SELECT id, team_id, name, metadata, CAST(current_version AS TEXT) AS v FROM secrets",
        "SELECT secret_id, ciphertext, CAST(version AS TEXT) AS v FROM secret_versions",
    ] {
        for row in sqlx::query(sql).fetch_all(&store.pool).await.unwrap() {
            for i in 0..row.len() {
                out.push(row.try_get::<String, _>(i).unwrap());
            }
        }
    }
    out
}

store_test!(secrets_have_versions_and_are_found_by_id_or_name, |db| {
    let store = open(&db).await;
    let created = store.create_secret("team_a", "OpenAI-Key", &value("v1"), &meta(&[("env", "prod")])).await.unwrap();
    assert_eq!((created.name.as_str(), created.current_version), ("openai-key", 1), "names are lower-cased");
    assert!(created.id.starts_with(SECRET_ID_PREFIX), "{}", created.id);
    assert_eq!(created.created_at_ms, created.updated_at_ms);
    let shouted = created.id.to_uppercase();
    for key in [created.id.as_str(), &shouted, "openai-key", "OPENAI-KEY"] {
        assert_eq!(store.get_secret("team_a", key).await.unwrap().as_ref(), Some(&created), "{key}");
    }
    assert_eq!(store.secret_value("team_a", "OpenAI-Key").await.unwrap().unwrap().expose(), "v1");

    // An update is a new version; metadata stays unless given.
    let second = store.update_secret("team_a", "openai-key", &value("v2"), None).await.unwrap();
    assert_eq!((second.id.as_str(), second.current_version), (created.id.as_str(), 2));
    assert_eq!(second.metadata, meta(&[("env", "prod")]));
    assert!(second.updated_at_ms >= created.updated_at_ms);
    let third = store.update_secret("team_a", &created.id, &value("v3"), Some(&BTreeMap::new())).await.unwrap();
    assert_eq!((third.current_version, third.metadata.len()), (3, 0));
    assert_eq!(store.secret_value("team_a", "openai-key").await.unwrap().unwrap().expose(), "v3");
    let versions = sqlx::query("SELECT version FROM secret_versions WHERE secret_id = $1")
        .bind(&created.id)
        .fetch_all(&store.pool)
        .await
        .unwrap();
    assert_eq!(versions.len(), 3, "every version is kept");

    let other = store.create_secret("team_a", "db-password", &value("pw"), &BTreeMap::new()).await.unwrap();
    let listed = store.list_team_secrets("team_a").await.unwrap();
    assert_eq!(listed.iter().map(|s| s.id.as_str()).collect::<Vec<_>>(), [created.id.as_str(), other.id.as_str()]);

    // Deleting takes every version with it; the name is free again.
    assert!(store.delete_secret("team_a", "OPENAI-KEY").await.unwrap());
    assert!(!store.delete_secret("team_a", &created.id).await.unwrap(), "already gone");
    assert_eq!(store.get_secret("team_a", &created.id).await.unwrap(), None);
    assert!(store.secret_value("team_a", "openai-key").await.unwrap().is_none());
    let left = sqlx::query("SELECT version FROM secret_versions WHERE secret_id = $1")
        .bind(&created.id)
        .fetch_all(&store.pool)
        .await
        .unwrap();
    assert!(left.is_empty());
    assert!(matches!(
        store.update_secret("team_a", &created.id, &value("x"), None).await,
        Err(StoreError::NotFound(_))
    ));
    store.create_secret("team_a", "openai-key", &value("again"), &BTreeMap::new()).await.unwrap();
});

store_test!(names_are_unique_per_team_and_checked, |db| {
    let store = open(&db).await;
    let none = BTreeMap::new();
    store.create_secret("team_a", "api", &value("a"), &none).await.unwrap();
    assert!(matches!(store.create_secret("team_a", "API", &value("b"), &none).await, Err(StoreError::Conflict(_))));
    store.create_secret("team_b", "api", &value("b"), &none).await.expect("another team may use the name");
    assert_eq!(store.secret_value("team_a", "api").await.unwrap().unwrap().expose(), "a");
    assert_eq!(store.secret_value("team_b", "api").await.unwrap().unwrap().expose(), "b");

    let long = "n".repeat(257);
    for bad in ["", "a{b", "a}b", "line\nbreak", "del\u{7f}", "c1\u{85}", "sec_1", "SEC_x", long.as_str()] {
        let refused = store.create_secret("team_a", bad, &value("v"), &none).await;
        assert!(matches!(refused, Err(StoreError::Invalid(_))), "{bad:?}: {refused:?}");
    }
    for good in ["with space", "dots.and-dashes_1", "ünïcode", &"n".repeat(256)] {
        store.create_secret("team_a", good, &value("v"), &none).await.expect(good);
    }
    let big = value(&"x".repeat(64 * 1024 + 1));
    assert!(matches!(store.create_secret("team_a", "big", &big, &none).await, Err(StoreError::Invalid(_))));
    assert!(matches!(store.update_secret("team_a", "api", &big, None).await, Err(StoreError::Invalid(_))));
    store.create_secret("team_a", "max", &value(&"x".repeat(64 * 1024)), &none).await.unwrap();

    let many: BTreeMap<String, String> = (0..33).map(|i| (format!("k{i}"), "v".into())).collect();
    let long_key = meta(&[(&"k".repeat(129), "v")]);
    let long_value = meta(&[("k", &"v".repeat(1025))]);
    let too_much: BTreeMap<String, String> = (0..9).map(|i| (format!("k{i}"), "v".repeat(1000))).collect();
    for bad in [many, long_key, long_value, too_much] {
        let refused = store.create_secret("team_a", "meta", &value("v"), &bad).await;
        assert!(matches!(refused, Err(StoreError::Invalid(_))), "{refused:?}");
    }
    assert_eq!(store.list_team_secrets("team_b").await.unwrap().len(), 1, "nothing refused was stored");
});

store_test!(another_teams_secret_is_not_there, |db| {
    let store = open(&db).await;
    let theirs = store.create_secret("team_a", "token", &value("a-value"), &BTreeMap::new()).await.unwrap();
    for key in [theirs.id.as_str(), "token"] {
        assert_eq!(store.get_secret("team_b", key).await.unwrap(), None, "{key}");
        let update = store.update_secret("team_b", key, &value("b-value"), None).await;
        assert!(matches!(update, Err(StoreError::NotFound(_))), "{key}: {update:?}");
        assert!(!store.delete_secret("team_b", key).await.unwrap(), "{key}");
    }
    assert!(store.secret_value("team_b", "token").await.unwrap().is_none());
    assert!(store.list_team_secrets("team_b").await.unwrap().is_empty());
    // Untouched.
    assert_eq!(store.get_secret("team_a", "token").await.unwrap(), Some(theirs));
    assert_eq!(store.secret_value("team_a", "token").await.unwrap().unwrap().expose(), "a-value");
});

store_test!(the_database_holds_no_plaintext, |db| {
    let store = open(&db).await;
    let plain = "PLAINTEXT-CANARY-7f3a91";
    store.create_secret("team_a", "canary", &value(plain), &BTreeMap::new()).await.unwrap();
    store.update_secret("team_a", "canary", &value(&format!("{plain}-v2")), None).await.unwrap();
    let rows = raw_rows(&store).await;
    assert!(rows.len() >= 8, "{rows:?}");
    for text in &rows {
        assert!(!text.contains(plain), "plaintext in a column: {text}");
        if let Ok(bytes) = base64::engine::general_purpose::STANDARD.decode(text) {
            assert!(!bytes.windows(plain.len()).any(|w| w == plain.as_bytes()), "plaintext in a decoded column");
        }
    }
    // SQLite: not in the database file or its WAL either.
    if let Some(path) = sqlite_path(db.url()) {
        for suffix in ["", "-wal"] {
            let mut file = path.clone().into_os_string();
            file.push(suffix);
            let bytes = std::fs::read(&file).unwrap_or_default();
            assert!(!bytes.windows(plain.len()).any(|w| w == plain.as_bytes()), "plaintext in {file:?}");
        }
    }
});

store_test!(a_ciphertext_copied_to_another_row_does_not_decrypt, |db| {
    let store = open(&db).await;
    let none = BTreeMap::new();
    let a = store.create_secret("team_a", "a", &value("value-a"), &none).await.unwrap();
    let b = store.create_secret("team_a", "b", &value("value-b"), &none).await.unwrap();
    store.update_secret("team_a", "a", &value("value-a2"), None).await.unwrap();
    let ciphertext = |id: String, version: i64| {
        let pool = store.pool.clone();
        async move {
            sqlx::query("SELECT ciphertext FROM secret_versions WHERE secret_id = $1 AND version = $2")
                .bind(id)
                .bind(version)
                .fetch_one(&pool)
                .await
                .unwrap()
                .try_get::<String, _>("ciphertext")
                .unwrap()
        }
    };
    let set = |id: String, version: i64, text: String| {
        let pool = store.pool.clone();
        async move {
            sqlx::query("UPDATE secret_versions SET ciphertext = $1 WHERE secret_id = $2 AND version = $3")
                .bind(text)
                .bind(id)
                .bind(version)
                .execute(&pool)
                .await
                .unwrap();
        }
    };
    // A's current ciphertext into B's row: B does not become A's value.
    set(b.id.clone(), 1, ciphertext(a.id.clone(), 2).await).await;
    assert!(matches!(store.secret_value("team_a", "b").await, Err(StoreError::Secrets(SealError::Open))));
    // An old version of A into A's current row: no rollback to the old value.
    set(a.id.clone(), 2, ciphertext(a.id.clone(), 1).await).await;
    assert!(matches!(store.secret_value("team_a", "a").await, Err(StoreError::Secrets(SealError::Open))));
    assert!(store.check_secrets_key().await.is_err());
});

store_test!(another_key_opens_nothing, |db| {
    let store = open(&db).await;
    assert!(store.check_secrets_key().await.is_ok(), "nothing stored yet");
    store.create_secret("team_a", "s", &value("v"), &BTreeMap::new()).await.unwrap();
    assert!(store.check_secrets_key().await.is_ok());

    let other = db.open().await.with_secret_box(SecretBox::random());
    assert!(matches!(other.check_secrets_key().await, Err(StoreError::Secrets(SealError::Open))));
    assert!(matches!(other.secret_value("team_a", "s").await, Err(StoreError::Secrets(SealError::Open))));
    // Metadata needs no key: listing still works, and the secret can be replaced.
    assert_eq!(other.list_team_secrets("team_a").await.unwrap().len(), 1);

    let keyless = db.open().await;
    let refused = keyless.create_secret("team_a", "t", &value("v"), &BTreeMap::new()).await;
    assert!(matches!(refused, Err(StoreError::Secrets(SealError::NoKey))), "{refused:?}");
    assert!(matches!(keyless.secret_value("team_a", "s").await, Err(StoreError::Secrets(SealError::NoKey))));
});

store_test!(concurrent_updates_get_distinct_versions, |db| {
    let store = open(&db).await;
    store.create_secret("team_a", "busy", &value("v1"), &BTreeMap::new()).await.unwrap();
    let updates = (0..8).map(|i| {
        let store = store.clone();
        tokio::spawn(async move { store.update_secret("team_a", "busy", &value(&format!("u{i}")), None).await })
    });
    let mut versions = vec![];
    for update in updates {
        versions.push(update.await.unwrap().unwrap().current_version);
    }
    versions.sort();
    assert_eq!(versions, (2..=9).collect::<Vec<_>>());
    assert_eq!(store.get_secret("team_a", "busy").await.unwrap().unwrap().current_version, 9);
    assert!(store.secret_value("team_a", "busy").await.unwrap().unwrap().expose().starts_with('u'));
});
