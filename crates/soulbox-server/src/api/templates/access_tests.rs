//! Templates across teams over the API (the tags harness of `api.rs`, with a second team's key).

use http::StatusCode;
use serde_json::json;

use super::tests::Harness;
use soulbox_templates::BaseAccess;

#[tokio::test]
async fn another_teams_templates_builds_tags_and_names_are_out_of_reach() {
    let h = Harness::new().await;
    let (build, _) = h.build("app", &["default", "v1"], 1).await;
    let b = h.key_b.clone();
    let not_found = |(status, body): (StatusCode, serde_json::Value), what: &str| {
        assert_eq!(status, StatusCode::NOT_FOUND, "{what}: {body}");
        assert_eq!(body["code"], 404, "{what}: {body}");
    };
    for template in ["app", "app:v1", "app:default"] {
        not_found(h.call_as(&b, "POST", "/v2/sandboxes", Some(json!({"templateID": template}))).await, template);
    }
    not_found(h.call_as(&b, "GET", "/templates/aliases/app", None).await, "alias");
    not_found(h.call_as(&b, "GET", "/templates/app/tags", None).await, "tags");
    not_found(h.call_as(&b, "GET", &format!("/templates/app/builds/{build}/status"), None).await, "status");
    not_found(h.call_as(&b, "GET", &format!("/templates/app/builds/{build}/logs/stream"), None).await, "logs");
    not_found(h.call_as(&b, "GET", &format!("/templates/app/files/{}", "ab".repeat(32)), None).await, "files");
    not_found(
        h.call_as(&b, "POST", "/templates/tags", Some(json!({"target": "app:v1", "tags": ["pwned"]}))).await,
        "assign",
    );
    not_found(
        h.call_as(&b, "DELETE", "/templates/tags", Some(json!({"name": "app", "tags": ["v1"]}))).await,
        "remove tags",
    );
    not_found(h.call_as(&b, "DELETE", "/templates/app", None).await, "delete");
    let (_, listed) = h.call_as(&b, "GET", "/templates", None).await;
    let names: Vec<&str> = listed.as_array().unwrap().iter().map(|t| t["templateID"].as_str().unwrap()).collect();
    assert_eq!(names, ["base"], "team B sees the server's templates only");

    // Its name and the server's `base` cannot be taken; a build cannot start from its tag.
    for taken in ["app", "base", "code-interpreter-v1"] {
        let (status, body) = h.call_as(&b, "POST", "/v3/templates", Some(json!({"name": taken}))).await;
        assert_eq!(status, StatusCode::CONFLICT, "{taken}: {body}");
    }
    let (status, req) = h.call_as(&b, "POST", "/v3/templates", Some(json!({"name": "bee"}))).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{req}");
    let path = format!("/v2/templates/bee/builds/{}", req["buildID"].as_str().unwrap());
    let (status, body) = h.call_as(&b, "POST", &path, Some(json!({"fromTemplate": "app:v1"}))).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    let (status, body) =
        h.call_as(&b, "POST", "/v3/templates", Some(json!({"name": "bee2", "teamID": "team_default"}))).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "another team's id in the body: {body}");

    // Nothing of team A's changed.
    assert_eq!(h.create_from("app:v1").await.0, StatusCode::CREATED);
    let (_, tags) = h.call("GET", "/templates/app/tags", None).await;
    assert_eq!(tags.as_array().unwrap().len(), 2, "{tags}");
    assert_eq!(h.call("DELETE", "/templates/app", None).await.0, StatusCode::NO_CONTENT);
}

#[tokio::test]
async fn uploads_belong_to_their_team() {
    let h = Harness::new().await;
    let hash = "cd".repeat(32);
    for (key, name) in [(h.key.clone(), "mine"), (h.key_b.clone(), "theirs")] {
        assert_eq!(h.call_as(&key, "POST", "/v3/templates", Some(json!({"name": name}))).await.0, StatusCode::ACCEPTED);
    }
    let (status, link) = h.call("GET", &format!("/templates/mine/files/{hash}"), None).await;
    assert_eq!((status, &link["present"]), (StatusCode::CREATED, &json!(false)), "{link}");
    let url = link["url"].as_str().unwrap();
    let upload = &url[url.find("/templates/").unwrap()..];
    // Team A's upload URL does not write into team B's template.
    let theirs = upload.replacen("/templates/mine/", "/templates/theirs/", 1);
    assert_eq!(h.call("PUT", &theirs, Some(json!("x"))).await.0, StatusCode::FORBIDDEN);
    assert_eq!(h.call("PUT", upload, Some(json!("team A's files"))).await.0, StatusCode::OK);

    let (_, again) = h.call("GET", &format!("/templates/mine/files/{hash}"), None).await;
    assert_eq!(again["present"], true, "{again}");
    let (_, other) = h.call_as(&h.key_b, "GET", &format!("/templates/theirs/files/{hash}"), None).await;
    assert_eq!(other["present"], false, "team B must not see (or build from) team A's upload: {other}");
}

#[test]
fn a_teams_build_may_start_from_public_and_own_templates_only() {
    let team = BaseAccess::Team { hidden: ["their-app".to_string()].into(), tag_build: Some("sbb-b1".into()) };
    assert!(team.permits("base") && team.permits("my-app"));
    assert!(team.permits("sbb-b1"), "the build template its checked tag resolved to");
    assert!(!team.permits("their-app"));
    assert!(!team.permits("sbb-b2") && !team.permits("sbbuild-b1-3"), "other build-internal templates");
    assert!(BaseAccess::Any.permits("their-app") && BaseAccess::Any.permits("sbb-b2"), "the server's own builds");
}
