//! The proxy's route cache (`route_cache.rs`) over real sockets: once a sandbox's route is warm, a pause, a
//! resume or a kill still decides where the next request goes, and a private sandbox still wants its token.

use soulbox_protocol::api::TRAFFIC_ACCESS_TOKEN_HEADER;

use crate::lifecycle::CreateRequest;
use crate::proxy_secret_tests::{Answer, send, server, upstream};
use crate::store::DEFAULT_TEAM_ID;

fn request(private: bool, auto_resume: bool) -> CreateRequest {
    CreateRequest {
        template: "base".into(),
        allow_internet: true,
        team_id: DEFAULT_TEAM_ID.into(),
        private_ports: private,
        auto_resume,
        ..Default::default()
    }
}

async fn status(port: u16, route: &str) -> String {
    let response = send(port, &format!("GET / HTTP/1.1\r\n{route}Connection: close\r\n\r\n")).await;
    response.lines().next().unwrap_or_default().to_owned()
}

// The fake node answers for a paused sandbox at its kept address: only the cut of the cached route keeps a
// paused sandbox's port from answering (or a paused sandbox with auto-resume from staying asleep).
#[tokio::test]
async fn a_warm_route_follows_pause_resume_and_kill() {
    let (lifecycle, node, port, _dir) = server().await;
    let echo = upstream(Answer::Echo).await;
    for auto_resume in [false, true] {
        let id = lifecycle.create(request(false, auto_resume)).await.unwrap().id;
        let route = format!("Host: x\r\nE2b-Sandbox-Id: {id}\r\nE2b-Sandbox-Port: {}\r\n", echo.port);
        for _ in 0..3 {
            assert_eq!(status(port, &route).await, "HTTP/1.1 200 OK");
        }
        lifecycle.pause(DEFAULT_TEAM_ID, &id, true).await.unwrap();
        if auto_resume {
            assert_eq!(status(port, &route).await, "HTTP/1.1 200 OK");
            assert_eq!(node.sandboxes.lock().unwrap().get(&id), Some(&false), "the request resumes it");
        } else {
            assert_eq!(status(port, &route).await, "HTTP/1.1 502 Bad Gateway", "a paused sandbox got traffic");
            lifecycle.resume(DEFAULT_TEAM_ID, &id, None).await.unwrap();
            assert_eq!(status(port, &route).await, "HTTP/1.1 200 OK");
        }
        assert_eq!(status(port, &route).await, "HTTP/1.1 200 OK");
        lifecycle.kill(DEFAULT_TEAM_ID, &id).await.unwrap();
        assert_eq!(status(port, &route).await, "HTTP/1.1 502 Bad Gateway", "a killed sandbox got traffic");
    }
}

#[tokio::test]
async fn a_warm_route_still_needs_the_traffic_token() {
    let (lifecycle, _node, port, _dir) = server().await;
    let echo = upstream(Answer::Echo).await;
    let record = lifecycle.create(request(true, false)).await.unwrap();
    let token = record.ingress.traffic_access_token.clone().expect("a token");
    let route = format!("Host: x\r\nE2b-Sandbox-Id: {}\r\nE2b-Sandbox-Port: {}\r\n", record.id, echo.port);
    let with_token = format!("{route}{TRAFFIC_ACCESS_TOKEN_HEADER}: {token}\r\n");
    for _ in 0..3 {
        assert_eq!(status(port, &with_token).await, "HTTP/1.1 200 OK");
    }
    let before = echo.heads.lock().unwrap().len();
    assert_eq!(status(port, &route).await, "HTTP/1.1 403 Forbidden");
    assert_eq!(echo.heads.lock().unwrap().len(), before, "a request without the token reached the sandbox");
}
