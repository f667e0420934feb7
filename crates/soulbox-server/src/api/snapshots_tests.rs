//! Snapshots, forks and paused-sandbox retention over the API with an in-memory node (the real runtime and the
//! official SDKs: tests/e2e/test_snapshots.py).

use std::time::Duration;

use http::StatusCode;
use serde_json::{Value, json};

use super::teams_tests::{e2b_error, teams};
use crate::lifecycle::LifecycleConfig;

fn id_of(sandbox: &Value) -> String {
    sandbox["sandboxID"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn snapshot_start_list_and_delete() {
    let t = teams(LifecycleConfig::default()).await;
    let source = id_of(&t.create(&t.a).await);
    let path = format!("/sandboxes/{source}/snapshots");
    let (status, named) = t.call(&t.a, "POST", &path, Some(json!({"name": "my-snap"}))).await;
    assert_eq!(status, StatusCode::CREATED, "{named}");
    assert_eq!(named["snapshotID"], "my-snap:default");
    assert_eq!(named["names"], json!(["my-snap:default"]));
    assert_eq!(named["mode"], "filesystem", "the fake node keeps no memory, and the answer says so");
    assert_eq!(named["sandboxID"], source.as_str());
    let (status, unnamed) = t.call(&t.a, "POST", &path, None).await;
    assert_eq!(status, StatusCode::CREATED, "{unnamed}");
    assert_eq!(unnamed["names"], json!([]));
    let unnamed_id = unnamed["snapshotID"].as_str().unwrap().to_owned();

    // Sandboxes start from it, by id with or without the tag; the record names the snapshot.
    for template in ["my-snap:default", "my-snap"] {
        let (status, created) = t.call(&t.a, "POST", "/v2/sandboxes", Some(json!({"templateID": template}))).await;
        assert_eq!(status, StatusCode::CREATED, "{created}");
        assert_eq!(created["templateID"], "my-snap");
        assert_eq!(t.node.created_from.lock().unwrap()[&id_of(&created)], "my-snap");
    }

    // Listing: the team's only, filters, pages.
    let (status, all) = t.call(&t.a, "GET", "/snapshots", None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(all.as_array().unwrap().len(), 2, "{all}");
    let (_, by_name) = t.call(&t.a, "GET", "/snapshots?name=my-snap", None).await;
    assert_eq!(by_name.as_array().unwrap().len(), 1);
    let (_, by_sandbox) = t.call(&t.a, "GET", &format!("/snapshots?sandboxID={source}"), None).await;
    assert_eq!(by_sandbox.as_array().unwrap().len(), 2);
    let (_, none) = t.call(&t.a, "GET", "/snapshots?sandboxID=iother", None).await;
    assert_eq!(none, json!([]));
    let (status, _, first) = super::tests::send(&t.app, "GET", "/snapshots?limit=1", None, Some(&t.a)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(first.as_array().unwrap().len(), 1);
    let (_, other_team) = t.call(&t.b, "GET", "/snapshots", None).await;
    assert_eq!(other_team, json!([]));

    // Another team can neither start, snapshot over nor delete it.
    let (status, body) = t.call(&t.b, "POST", "/v2/sandboxes", Some(json!({"templateID": "my-snap:default"}))).await;
    e2b_error(status, &body, StatusCode::NOT_FOUND);
    let theirs = id_of(&t.create(&t.b).await);
    let (status, body) =
        t.call(&t.b, "POST", &format!("/sandboxes/{theirs}/snapshots"), Some(json!({"name": "my-snap"}))).await;
    e2b_error(status, &body, StatusCode::CONFLICT);
    let (status, body) = t.call(&t.b, "DELETE", "/templates/my-snap%3Adefault", None).await;
    e2b_error(status, &body, StatusCode::NOT_FOUND);

    // Deleting (as the SDKs do: the id with its tag) removes it on the node and in the store.
    let (status, _) = t.call(&t.a, "DELETE", "/templates/my-snap%3Adefault", None).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert!(!t.node.snapshots.lock().unwrap().contains(&"my-snap".to_string()));
    let (_, left) = t.call(&t.a, "GET", "/snapshots", None).await;
    assert_eq!(left[0]["snapshotID"], unnamed_id.as_str());
    let (status, body) = t.call(&t.a, "POST", "/v2/sandboxes", Some(json!({"templateID": "my-snap"}))).await;
    e2b_error(status, &body, StatusCode::NOT_FOUND);
    let (status, _) = t.call(&t.a, "DELETE", "/templates/my-snap%3Adefault", None).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "a second delete finds nothing (the SDK then returns false)");
}

#[tokio::test]
async fn snapshot_names_that_are_refused() {
    let t = teams(LifecycleConfig::default()).await;
    let source = id_of(&t.create(&t.a).await);
    let path = format!("/sandboxes/{source}/snapshots");
    for (name, want) in [
        ("base", StatusCode::CONFLICT),                // a server template
        ("code-interpreter-v1", StatusCode::CONFLICT), // shipped, before its first use too
        ("bad name", StatusCode::BAD_REQUEST),         // not a template name
        ("x:v2", StatusCode::BAD_REQUEST),             // a tag
        ("sbb-1", StatusCode::BAD_REQUEST),            // internal
    ] {
        let (status, body) = t.call(&t.a, "POST", &path, Some(json!({"name": name}))).await;
        e2b_error(status, &body, want);
    }
    assert!(t.node.snapshots.lock().unwrap().is_empty(), "a refused snapshot touches no node");
    let (status, body) = t.call(&t.a, "POST", "/sandboxes/inosuch/snapshots", None).await;
    e2b_error(status, &body, StatusCode::NOT_FOUND);
    let (_, listed) = t.call(&t.a, "GET", "/snapshots", None).await;
    assert_eq!(listed, json!([]), "nothing recorded for a refused snapshot");
}

#[tokio::test]
async fn forks_copy_settings_and_leave_no_template() {
    let t = teams(LifecycleConfig::default()).await;
    let body = json!({"templateID": "base", "metadata": {"who": "src"}, "envVars": {"A": "1"}});
    let (status, source) = t.call(&t.a, "POST", "/v2/sandboxes", Some(body)).await;
    assert_eq!(status, StatusCode::CREATED);
    let source = id_of(&source);
    let (status, forks) =
        t.call(&t.a, "POST", &format!("/sandboxes/{source}/fork"), Some(json!({"count": 3, "timeout": 60}))).await;
    assert_eq!(status, StatusCode::CREATED, "{forks}");
    let forks = forks.as_array().unwrap();
    assert_eq!(forks.len(), 3);
    let mut ids = vec![];
    for fork in forks {
        let sandbox = &fork["sandbox"];
        assert!(fork.get("error").is_none(), "{fork}");
        assert_eq!(sandbox["templateID"], "base");
        assert!(sandbox["envdAccessToken"].as_str().is_some(), "a v2 source is secured, so are its forks");
        ids.push(id_of(sandbox));
    }
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 3, "each fork is its own sandbox");
    for id in &ids {
        let from = t.node.created_from.lock().unwrap()[id].clone();
        assert!(from.starts_with("sbfork-"), "{from}");
        let record = t.store.get_sandbox(id).await.unwrap();
        assert_eq!(record.metadata["who"], "src");
        assert_eq!(record.env_vars["A"], "1");
    }
    assert!(t.node.snapshots.lock().unwrap().is_empty(), "the fork's template is gone once the forks started");
    let (status, _) = t.call(&t.a, "GET", &format!("/sandboxes/{source}"), None).await;
    assert_eq!(status, StatusCode::OK, "the source keeps running");

    for count in [0, 21] {
        let (status, body) =
            t.call(&t.a, "POST", &format!("/sandboxes/{source}/fork"), Some(json!({"count": count}))).await;
        e2b_error(status, &body, StatusCode::BAD_REQUEST);
    }
    let (status, body) = t.call(&t.b, "POST", &format!("/sandboxes/{source}/fork"), None).await;
    e2b_error(status, &body, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn paused_sandboxes_are_deleted_after_their_retention() {
    // Kept 30 days by default: the paused record's end says until when.
    let t = teams(LifecycleConfig::default()).await;
    let kept = id_of(&t.create(&t.a).await);
    let (status, _) = t.call(&t.a, "POST", &format!("/sandboxes/{kept}/pause"), None).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let end = t.store.get_sandbox(&kept).await.unwrap().end_at_ms;
    let thirty_days = 30 * 24 * 3600 * 1000;
    assert!((end - crate::store::now_ms() - thirty_days).abs() < 60_000, "end {end}");
    // A timeout or refresh while paused does not cut the retention short.
    let (status, _) = t.call(&t.a, "POST", &format!("/sandboxes/{kept}/timeout"), Some(json!({"timeout": 1}))).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, _) = t.call(&t.a, "POST", &format!("/sandboxes/{kept}/refreshes"), Some(json!({"duration": 1}))).await;
    assert!(status.is_success(), "{status}");
    assert_eq!(t.store.get_sandbox(&kept).await.unwrap().end_at_ms, end);

    // A retention that is over at once: the paused sandbox goes, on its node too.
    let t = teams(LifecycleConfig { paused_retention: Duration::ZERO, ..Default::default() }).await;
    let gone = id_of(&t.create(&t.a).await);
    let running = id_of(&t.create(&t.a).await);
    let (status, _) = t.call(&t.a, "POST", &format!("/sandboxes/{gone}/pause"), None).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while t.store.get_sandbox(&gone).await.is_ok() {
        assert!(tokio::time::Instant::now() < deadline, "the paused sandbox was never deleted");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(!t.node.sandboxes.lock().unwrap().contains_key(&gone));
    assert!(t.store.get_sandbox(&running).await.is_ok(), "a running sandbox is not touched");
}
