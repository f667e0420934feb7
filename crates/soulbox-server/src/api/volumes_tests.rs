//! Volumes over the API (the official SDK itself: tests/e2e/test_volumes.py): team scoping of the catalogue and
//! of the content API, which takes the volume's own token or a key of its team and nothing else.

use axum::body::Body;
use http::{Request, StatusCode};
use serde_json::{Value, json};
use tower::ServiceExt;

use super::teams_tests::{Teams, teams};
use crate::lifecycle::LifecycleConfig;

async fn content(t: &Teams, method: &str, uri: &str, auth: Option<(&str, &str)>, body: &str) -> (StatusCode, Value) {
    let mut req = Request::builder().method(method).uri(uri);
    if let Some((name, value)) = auth {
        req = req.header(name, value);
    }
    let response = t.app.clone().oneshot(req.body(Body::from(body.to_owned())).unwrap()).await.unwrap();
    let status = response.status();
    let bytes = axum::body::to_bytes(response.into_body(), 1 << 20).await.unwrap();
    (status, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
}

#[tokio::test]
async fn volumes_are_the_teams_own_and_their_content_needs_their_token() {
    let dir = tempfile::tempdir().unwrap();
    let config = LifecycleConfig { volumes_dir: Some(dir.path().join("volumes")), ..LifecycleConfig::default() };
    let t = teams(config).await;
    let (status, va) = t.call(&t.a, "POST", "/volumes", Some(json!({"name": "data"}))).await;
    assert_eq!(status, StatusCode::CREATED, "{va}");
    let mut keys: Vec<&str> = va.as_object().unwrap().keys().map(String::as_str).collect();
    keys.sort_unstable();
    assert_eq!(keys, ["name", "token", "volumeID"]);
    let (id_a, token_a) = (va["volumeID"].as_str().unwrap().to_owned(), va["token"].as_str().unwrap().to_owned());
    // Names are per team: team b may use the same one; team a may not twice.
    let (status, vb) = t.call(&t.b, "POST", "/volumes", Some(json!({"name": "data"}))).await;
    assert_eq!(status, StatusCode::CREATED, "{vb}");
    let (id_b, token_b) = (vb["volumeID"].as_str().unwrap().to_owned(), vb["token"].as_str().unwrap().to_owned());
    let (status, again) = t.call(&t.a, "POST", "/volumes", Some(json!({"name": "data"}))).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{again}");

    // The catalogue: another team's volume is unknown.
    let (_, listed) = t.call(&t.a, "GET", "/volumes", None).await;
    assert_eq!(listed, json!([{"volumeID": id_a, "name": "data"}]));
    let (status, got) = t.call(&t.a, "GET", &format!("/volumes/{id_a}"), None).await;
    assert_eq!((status, got["token"].as_str()), (StatusCode::OK, Some(token_a.as_str())));
    for method in ["GET", "DELETE"] {
        let (status, _) = t.call(&t.b, method, &format!("/volumes/{id_a}"), None).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{method} of another team's volume");
    }
    // A create may not mount another team's volume.
    let mounts = json!({"templateID": "base", "volumeMounts": [{"name": "data", "path": "/d"}]});
    let (status, _) = t.call(&t.a, "POST", "/v2/sandboxes", Some(mounts)).await;
    assert_eq!(status, StatusCode::CREATED, "its own volume mounts");
    t.call(&t.admin, "POST", "/volumes", Some(json!({"name": "admins"}))).await;
    let theirs = json!({"templateID": "base", "volumeMounts": [{"name": "admins", "path": "/d"}]});
    let (status, body) = t.call(&t.a, "POST", "/v2/sandboxes", Some(theirs)).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");

    // Content: its own token works; the other volume's token, another team's key and no credential do not.
    let put = |id: &str| format!("/volumecontent/{id}/file?path=/hello.txt");
    let bearer = |token: &str| format!("Bearer {token}");
    let (status, stat) = content(&t, "PUT", &put(&id_a), Some(("authorization", &bearer(&token_a))), "hi").await;
    assert_eq!((status, stat["size"].as_i64()), (StatusCode::CREATED, Some(2)), "{stat}");
    let (status, _) = content(&t, "PUT", &put(&id_a), Some(("authorization", &bearer(&token_b))), "x").await;
    assert_eq!(status, StatusCode::NOT_FOUND, "another volume's token");
    let (status, _) = content(&t, "GET", &put(&id_a), Some(("x-api-key", &t.b)), "").await;
    assert_eq!(status, StatusCode::NOT_FOUND, "another team's key");
    let (status, _) = content(&t, "GET", &put(&id_a), None, "").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, stat) =
        content(&t, "GET", &format!("/volumecontent/{id_a}/path?path=/hello.txt"), Some(("x-api-key", &t.a)), "").await;
    assert_eq!((status, stat["type"].as_str()), (StatusCode::OK, Some("file")), "its team's key");
    let (status, _) = content(
        &t,
        "GET",
        &format!("/volumecontent/{id_b}/dir?path=/"),
        Some(("authorization", &bearer(&token_b))),
        "",
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    // Its files are in their own directory, nowhere else.
    assert!(dir.path().join("volumes").join(&id_a).join("hello.txt").is_file());
    assert!(!dir.path().join("volumes").join(&id_b).join("hello.txt").exists());
}

#[tokio::test]
async fn without_a_volumes_directory_the_routes_say_so() {
    let t = teams(LifecycleConfig::default()).await;
    let (status, body) = t.call(&t.a, "POST", "/volumes", Some(json!({"name": "data"}))).await;
    assert_eq!(status, StatusCode::NOT_IMPLEMENTED, "{body}");
    assert!(t.call(&t.a, "GET", "/volumes", None).await.1.as_array().is_some_and(|v| v.is_empty()));
}
