//! Secrets over the API as the E2B SDKs call it (the official SDK itself: tests/e2e/test_secrets.py): shapes,
//! statuses, pages, team scoping, and no value in any answer.

use http::StatusCode;
use serde_json::{Value, json};

use super::teams_tests::{Teams, e2b_error, teams};
use crate::lifecycle::LifecycleConfig;

const VALUE: &str = "sk-live-CANARY-0123456789";

impl Teams {
    /// The call, checking that no answer ever carries a secret value.
    async fn secrets(&self, key: &str, method: &str, path: &str, body: Option<Value>) -> (StatusCode, Value) {
        let (status, headers, value) =
            super::tests::send(&self.app, method, path, body.map(|b| b.to_string()), Some(key)).await;
        let text = format!("{value} {headers:?}");
        assert!(!text.contains("CANARY"), "{method} {path} answered a value: {text}");
        (status, value)
    }
}

#[tokio::test]
async fn secrets_crud_as_the_sdk_calls_it() {
    let t = teams(LifecycleConfig::default()).await;
    let body = json!({"name": "OpenAI", "value": VALUE, "metadata": {"env": "prod"}});
    let (status, created) = t.secrets(&t.a, "POST", "/secrets", Some(body)).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let mut keys: Vec<&str> = created.as_object().unwrap().keys().map(String::as_str).collect();
    keys.sort_unstable();
    assert_eq!(keys, ["createdAt", "currentVersion", "metadata", "name", "secretID", "updatedAt"]);
    assert_eq!((created["name"].as_str(), created["currentVersion"].as_i64()), (Some("openai"), Some(1)));
    assert_eq!(created["metadata"], json!({"env": "prod"}));
    let id = created["secretID"].as_str().unwrap().to_owned();
    assert!(id.starts_with("sec_"), "{id}");

    // By id or by name (any case).
    for path in [format!("/secrets/{id}"), "/secrets/openai".into(), "/secrets/OpenAI".into()] {
        let (status, got) = t.secrets(&t.a, "GET", &path, None).await;
        assert_eq!((status, &got), (StatusCode::OK, &created), "{path}");
    }

    // An update is version 2; metadata stays unless sent.
    let (status, updated) =
        t.secrets(&t.a, "POST", "/secrets/openai", Some(json!({"value": format!("{VALUE}-2")}))).await;
    assert_eq!(status, StatusCode::OK, "{updated}");
    assert_eq!((updated["secretID"].as_str(), updated["currentVersion"].as_i64()), (Some(id.as_str()), Some(2)));
    assert_eq!(updated["metadata"], json!({"env": "prod"}));
    assert_eq!(updated["createdAt"], created["createdAt"]);
    let (_, updated) =
        t.secrets(&t.a, "POST", &format!("/secrets/{id}"), Some(json!({"value": "x", "metadata": {}}))).await;
    assert_eq!((updated["currentVersion"].as_i64(), &updated["metadata"]), (Some(3), &json!({})));
    assert_eq!(t.store.secret_value(&team_of(&t, &t.a).await, "openai").await.unwrap().unwrap().expose(), "x");

    let (status, listed) = t.secrets(&t.a, "GET", "/secrets", None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(listed.as_array().unwrap().len(), 1);
    assert_eq!(listed[0]["secretID"], id.as_str());

    let (status, body) = t.secrets(&t.a, "DELETE", "/secrets/OPENAI", None).await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
    for (method, body) in [("GET", None), ("DELETE", None), ("POST", Some(json!({"value": VALUE})))] {
        let (status, answer) = t.secrets(&t.a, method, &format!("/secrets/{id}"), body).await;
        e2b_error(status, &answer, StatusCode::NOT_FOUND);
    }
    assert_eq!(t.secrets(&t.a, "GET", "/secrets", None).await.1, json!([]));
}

#[tokio::test]
async fn refusals_in_e2b_shape_without_the_value() {
    let t = teams(LifecycleConfig::default()).await;
    let (status, _) = t.secrets(&t.a, "POST", "/secrets", Some(json!({"name": "dup", "value": VALUE}))).await;
    assert_eq!(status, StatusCode::CREATED);
    let (status, body) = t.secrets(&t.a, "POST", "/secrets", Some(json!({"name": "DUP", "value": VALUE}))).await;
    e2b_error(status, &body, StatusCode::CONFLICT);

    let big = "x".repeat(64 * 1024 + 1);
    let refused = [
        json!({"name": "", "value": VALUE}),
        json!({"name": "a{b}", "value": VALUE}),
        json!({"name": "tab\there", "value": VALUE}),
        json!({"name": "sec_mine", "value": VALUE}),
        json!({"name": "n".repeat(257), "value": VALUE}),
        json!({"name": "big", "value": big}),
        json!({"name": "meta", "value": VALUE, "metadata": {"k": 1}}),
        json!({"name": "no-value"}),
        json!({"value": VALUE}),
        json!({"name": "typed", "value": 12345}),
        json!({"name": "CANARY-not-a-string", "value": ["CANARY"]}),
    ];
    for body in refused {
        let (status, answer) = t.secrets(&t.a, "POST", "/secrets", Some(body.clone())).await;
        e2b_error(status, &answer, StatusCode::BAD_REQUEST);
        assert!(!answer.to_string().contains("12345"), "{body} echoed: {answer}");
    }
    let (status, answer) = t.secrets(&t.a, "POST", "/secrets/dup", Some(json!({"metadata": {}}))).await;
    let message = e2b_error(status, &answer, StatusCode::BAD_REQUEST);
    assert!(message.contains("missing field `value`"), "{message}");
    let (status, answer) = t.secrets(&t.a, "POST", "/secrets/dup", Some(json!({"value": big}))).await;
    e2b_error(status, &answer, StatusCode::BAD_REQUEST);
    let (_, listed) = t.secrets(&t.a, "GET", "/secrets", None).await;
    assert_eq!(listed.as_array().unwrap().len(), 1, "nothing refused was stored: {listed}");
    assert_eq!(listed[0]["currentVersion"], 1);
    for bad in ["limit=0", "limit=101", "limit=x", "nextToken=!!"] {
        let (status, answer) = t.secrets(&t.a, "GET", &format!("/secrets?{bad}"), None).await;
        e2b_error(status, &answer, StatusCode::BAD_REQUEST);
    }
}

#[tokio::test]
async fn another_teams_secret_answers_like_an_unknown_one() {
    let t = teams(LifecycleConfig::default()).await;
    let (_, created) = t.secrets(&t.a, "POST", "/secrets", Some(json!({"name": "token", "value": VALUE}))).await;
    let id = created["secretID"].as_str().unwrap().to_owned();
    for key in [id.as_str(), "token"] {
        let routes = [("GET", None), ("POST", Some(json!({"value": "theirs"}))), ("DELETE", None)];
        for (method, body) in routes {
            let (status, theirs) = t.secrets(&t.b, method, &format!("/secrets/{key}"), body.clone()).await;
            let message = e2b_error(status, &theirs, StatusCode::NOT_FOUND);
            let (_, unknown) = t.secrets(&t.b, method, "/secrets/nosuch", body).await;
            assert_eq!(message.replace(key, "nosuch"), unknown["message"].as_str().unwrap(), "{method} {key}");
        }
    }
    assert_eq!(t.secrets(&t.b, "GET", "/secrets", None).await.1, json!([]));
    // Team B may have its own secret of that name; A's is untouched.
    let (status, _) = t.secrets(&t.b, "POST", "/secrets", Some(json!({"name": "token", "value": "b"}))).await;
    assert_eq!(status, StatusCode::CREATED);
    let (_, still) = t.secrets(&t.a, "GET", &format!("/secrets/{id}"), None).await;
    assert_eq!(still, created);
    assert_eq!(t.store.secret_value(&team_of(&t, &t.a).await, "token").await.unwrap().unwrap().expose(), VALUE);
}

#[tokio::test]
async fn listing_pages_with_next_tokens() {
    let t = teams(LifecycleConfig::default()).await;
    let mut made = vec![];
    for i in 0..5 {
        let (_, s) = t.secrets(&t.a, "POST", "/secrets", Some(json!({"name": format!("s{i}"), "value": VALUE}))).await;
        made.push(s["secretID"].as_str().unwrap().to_owned());
    }
    let mut seen = vec![];
    let mut path = "/secrets?limit=2".to_owned();
    loop {
        let (status, headers, page) = super::tests::send(&t.app, "GET", &path, None, Some(&t.a)).await;
        assert_eq!(status, StatusCode::OK, "{page}");
        seen.extend(page.as_array().unwrap().iter().map(|s| s["secretID"].as_str().unwrap().to_owned()));
        match headers.get("x-next-token") {
            Some(token) => path = format!("/secrets?limit=2&nextToken={}", token.to_str().unwrap()),
            None => break,
        }
    }
    // Oldest first, by millisecond, then by id: secrets made in the same millisecond come in id order.
    let (_, _, all) = super::tests::send(&t.app, "GET", "/secrets", None, Some(&t.a)).await;
    let listed: Vec<String> =
        all.as_array().unwrap().iter().map(|s| s["secretID"].as_str().unwrap().to_owned()).collect();
    assert_eq!(seen, listed, "the pages, in order, are the listing");
    let (mut seen_sorted, mut made_sorted) = (seen.clone(), made.clone());
    seen_sorted.sort();
    made_sorted.sort();
    assert_eq!(seen_sorted, made_sorted, "every secret once");
    let created: Vec<i64> = all.as_array().unwrap().iter().map(|s| created_ms(&s["createdAt"])).collect();
    assert!(created.windows(2).all(|w| w[0] <= w[1]), "oldest first: {created:?}");
}

fn created_ms(value: &serde_json::Value) -> i64 {
    crate::time::parse_rfc3339_ms(value.as_str().expect("createdAt")).expect("an RFC 3339 time")
}

async fn team_of(t: &Teams, key: &str) -> String {
    t.store.authenticate_api_key(key).await.unwrap().unwrap().team_id
}

#[tokio::test]
async fn without_a_key_the_server_refuses_instead_of_storing_plaintext() {
    let dir = tempfile::tempdir().unwrap();
    let store = crate::store::Store::open(&crate::store::Store::sqlite_url(&dir.path().join("db"))).await.unwrap();
    let (_, key) = store.create_api_key_in("a", "team-a", crate::store::Role::Member).await.unwrap();
    let node = std::sync::Arc::new(crate::testing::FakeNode::default());
    let lifecycle = crate::lifecycle::Lifecycle::start(store, node, LifecycleConfig::default()).await.unwrap();
    let app = super::router(super::ApiState {
        lifecycle,
        metrics: std::sync::Arc::new(crate::metrics::MetricsStore::default()),
        domain: None,
        started: std::time::Instant::now(),
    });
    let body = json!({"name": "k", "value": VALUE}).to_string();
    let (status, _, answer) = super::tests::send(&app, "POST", "/secrets", Some(body), Some(&key.secret)).await;
    e2b_error(status, &answer, StatusCode::INTERNAL_SERVER_ERROR);
    assert!(!answer.to_string().contains("CANARY"));
    let (status, _, listed) = super::tests::send(&app, "GET", "/secrets", None, Some(&key.secret)).await;
    assert_eq!((status, listed), (StatusCode::OK, json!([])), "nothing was stored");
}
