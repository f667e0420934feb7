//! Private sandbox ports and masked hosts through the server's proxy, over real sockets: without the traffic
//! access token a private sandbox's port answers 403 and a paused one is not woken; with it the request passes
//! and the token does not; a masked sandbox's port sees the mask as its `Host`.

use soulbox_protocol::ENVD_PORT;
use soulbox_protocol::api::TRAFFIC_ACCESS_TOKEN_HEADER;

use crate::lifecycle::CreateRequest;
use crate::proxy_secret_tests::{Answer, header_values, send, server, upstream};

fn request(private: bool, mask: Option<&str>) -> CreateRequest {
    CreateRequest {
        template: "base".into(),
        allow_internet: true,
        team_id: crate::store::DEFAULT_TEAM_ID.into(),
        private_ports: private,
        mask_request_host: mask.map(str::to_owned),
        auto_resume: true,
        ..Default::default()
    }
}

#[tokio::test]
async fn a_private_sandboxs_ports_need_its_token_and_never_see_it() {
    let (lifecycle, node, port, _dir) = server().await;
    let echo = upstream(Answer::Echo).await;
    let record = lifecycle.create(request(true, None)).await.unwrap();
    let (id, token) = (record.id.clone(), record.ingress.traffic_access_token.clone().expect("a token"));
    let h = TRAFFIC_ACCESS_TOKEN_HEADER;
    let routes = [
        format!("Host: x\r\nE2b-Sandbox-Id: {id}\r\nE2b-Sandbox-Port: {}\r\n", echo.port),
        format!("Host: {}-{id}.sb.test\r\n", echo.port),
    ];
    for route in &routes {
        for offered in [String::new(), format!("{h}: wrong\r\n"), format!("{h}: {token}\r\n{h}: {token}\r\n")] {
            let response = send(port, &format!("GET / HTTP/1.1\r\n{route}{offered}Connection: close\r\n\r\n")).await;
            assert!(response.starts_with("HTTP/1.1 403"), "{route}{offered}: {response}");
            assert!(response.contains(r#""code":403"#), "{response}");
        }
    }
    assert!(echo.heads.lock().unwrap().is_empty(), "a request without the token reached the sandbox");
    for route in &routes {
        let response = send(port, &format!("GET / HTTP/1.1\r\n{route}{h}: {token}\r\nConnection: close\r\n\r\n")).await;
        assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    }
    for head in echo.heads.lock().unwrap().iter() {
        assert!(header_values(head, h).is_empty() && !head.contains(&token), "the token reached the sandbox: {head}");
    }
    // envd's port keeps its own token (X-Access-Token, checked by envd): no traffic token needed there.
    let response =
        send(port, &format!("GET /health HTTP/1.1\r\nHost: x\r\nE2b-Sandbox-Id: {id}\r\nE2b-Sandbox-Port: {ENVD_PORT}\r\nConnection: close\r\n\r\n"))
            .await;
    assert!(!response.starts_with("HTTP/1.1 403"), "{response}");

    // Paused with auto-resume: a stranger's request does not wake it.
    lifecycle.pause(crate::store::DEFAULT_TEAM_ID, &id, true).await.unwrap();
    let response = send(port, &format!("GET / HTTP/1.1\r\n{}Connection: close\r\n\r\n", routes[0])).await;
    assert!(response.starts_with("HTTP/1.1 403"), "{response}");
    assert_eq!(node.sandboxes.lock().unwrap().get(&id), Some(&true), "a request without the token resumed the sandbox");
    let response =
        send(port, &format!("GET / HTTP/1.1\r\n{}{h}: {token}\r\nConnection: close\r\n\r\n", routes[0])).await;
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert_eq!(node.sandboxes.lock().unwrap().get(&id), Some(&false), "the token holder's request resumes it");
}

#[tokio::test]
async fn a_masked_sandboxs_ports_see_the_mask_as_host() {
    let (lifecycle, _node, port, _dir) = server().await;
    let echo = upstream(Answer::Echo).await;
    let id = lifecycle.create(request(false, Some("${PORT}-app.example.test"))).await.unwrap().id;
    let route = format!("Host: {}-{id}.sb.test\r\n", echo.port);
    let response = send(port, &format!("GET / HTTP/1.1\r\n{route}Connection: close\r\n\r\n")).await;
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    let heads = echo.heads.lock().unwrap().clone();
    assert_eq!(header_values(&heads[0], "host"), vec![format!("{}-app.example.test", echo.port)], "{}", heads[0]);
    // A public sandbox takes requests without any token, and a client cannot choose a node agent's Host.
    let plain = lifecycle.create(request(false, None)).await.unwrap().id;
    let response = send(
        port,
        &format!("GET / HTTP/1.1\r\nHost: {}-{plain}.sb.test\r\nx-soulbox-sandbox-host: evil.test\r\nConnection: close\r\n\r\n", echo.port),
    )
    .await;
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    let heads = echo.heads.lock().unwrap().clone();
    assert_eq!(header_values(&heads[1], "host"), vec![format!("127.0.0.1:{}", echo.port)], "{}", heads[1]);
    assert!(header_values(&heads[1], "x-soulbox-sandbox-host").is_empty(), "{}", heads[1]);
}
