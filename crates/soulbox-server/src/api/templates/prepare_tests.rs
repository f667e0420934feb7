//! `POST /templates/{name}/prepare` with the in-memory building node of `tests.rs`: the build's log as NDJSON
//! ending in the ready line, the template registered, a second call only told it is ready, and a name SoulBox
//! does not ship refused before anything is built. (nextest runs each test in its own process: the record of
//! shipped templates built by "this server" starts empty.)

use http::StatusCode;
use serde_json::Value;

use super::tests::Harness;

fn ndjson(body: &Value) -> Vec<Value> {
    let text = body.as_str().unwrap_or_else(|| panic!("not NDJSON text: {body}"));
    text.lines().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}"))).collect()
}

#[tokio::test]
async fn prepare_builds_a_shipped_template_streaming_its_log_then_reports_it_ready() {
    let h = Harness::new().await;
    let (status, body) = h.call("POST", "/templates/code-interpreter-v1/prepare", None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let lines = ndjson(&body);
    assert_eq!(lines[0]["message"], "[1/1] building code-interpreter-v1", "{body}");
    assert_eq!(lines[0]["step"], "1");
    assert_eq!(lines.last().unwrap(), &serde_json::json!({"status": "ready"}));
    assert!(h.node.templates.lock().unwrap().contains_key("code-interpreter-v1"), "the build registered it");

    let (status, again) = h.call_as(&h.key_b, "POST", "/templates/code-interpreter-v1/prepare", None).await;
    assert_eq!(status, StatusCode::OK, "any team's key may ask");
    let lines = ndjson(&again);
    assert_eq!(lines.len(), 2, "{again}");
    assert!(lines[0]["message"].as_str().unwrap().contains("built or checked it already"), "{again}");
    assert_eq!(lines[1]["status"], "ready");
}

#[tokio::test]
async fn prepare_refuses_a_name_soulbox_does_not_ship_before_building_anything() {
    let h = Harness::new().await;
    let (status, body) = h.call("POST", "/templates/my-own/prepare", None).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    let message = body["message"].as_str().unwrap();
    assert!(message.contains("not a template SoulBox ships") && message.contains("code-interpreter-v1"), "{message}");
    assert!(h.node.templates.lock().unwrap().is_empty(), "nothing was built");
}
