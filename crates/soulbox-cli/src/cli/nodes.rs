//! `soulbox nodes list|show|drain|undrain|evacuate|remove`: cluster nodes (seed feature 10, issues 7 and 13).

use clap::Subcommand;
use reqwest::Method;
use soulbox::{Error, NodeInfo};

use super::Conn;
use super::output::{print_json, table};

#[derive(Subcommand, Debug)]
pub enum NodesCommand {
    /// Nodes with status and capacity.
    List {
        /// Print only the ids, one per line (for scripts: `xargs -n1 soulbox nodes drain`).
        #[arg(short, long)]
        quiet: bool,
        #[command(flatten)]
        conn: Conn,
    },
    /// One node in detail (JSON).
    Show {
        node_id: String,
        #[command(flatten)]
        conn: Conn,
    },
    /// Stop placing new sandboxes on a node; the ones it runs continue to their end.
    Drain {
        node_id: String,
        #[command(flatten)]
        conn: Conn,
    },
    /// Move a drained node's sandboxes paused to disk and its snapshots to other nodes now.
    Evacuate {
        node_id: String,
        #[command(flatten)]
        conn: Conn,
    },
    /// Let a drained node take new sandboxes again.
    Undrain {
        node_id: String,
        #[command(flatten)]
        conn: Conn,
    },
    /// Forget a node (stop its agent first). Refused while it still runs sandboxes or holds volumes' files, unless
    /// --force (its sandboxes are lost; its volumes unreachable until an agent with its id registers again).
    Remove {
        node_id: String,
        #[arg(long)]
        force: bool,
        #[command(flatten)]
        conn: Conn,
    },
}

pub async fn run(cmd: NodesCommand) -> soulbox::Result<i32> {
    match cmd {
        NodesCommand::List { quiet, conn } => list(conn, quiet).await,
        NodesCommand::Show { node_id, conn } => {
            let node = call(&conn, Method::GET, &format!("/nodes/{}", seg(&node_id))).await?;
            print_json(&node);
            Ok(0)
        }
        NodesCommand::Drain { node_id, conn } => set_drain(conn, &node_id, "drain").await,
        NodesCommand::Undrain { node_id, conn } => set_drain(conn, &node_id, "undrain").await,
        NodesCommand::Evacuate { node_id, conn } => evacuate(conn, &node_id).await,
        NodesCommand::Remove { node_id, force, conn } => {
            let path = format!("/nodes/{}{}", seg(&node_id), if force { "?force=true" } else { "" });
            call(&conn, Method::DELETE, &path).await?;
            if !conn.json {
                println!("removed node {node_id}");
            }
            Ok(0)
        }
    }
}

async fn list(conn: Conn, quiet: bool) -> soulbox::Result<i32> {
    let nodes = conn.client()?.list_nodes().await?;
    if quiet {
        nodes.iter().for_each(|n| println!("{}", n.node_id));
    } else if conn.json {
        print_json(&nodes);
    } else {
        table(
            &["NODE", "STATUS", "REGION", "CPU FREE/TOTAL", "MEM MiB FREE/TOTAL", "SANDBOXES", "LAST CHECK"],
            rows(&nodes),
        );
    }
    Ok(0)
}

fn rows(nodes: &[NodeInfo]) -> Vec<Vec<String>> {
    nodes
        .iter()
        .map(|n| {
            vec![
                n.node_id.clone(),
                n.status.clone(),
                n.region.clone(),
                format!("{:.1}/{}", n.cpu_available, n.cpu_count),
                format!("{}/{}", n.memory_available_mb, n.memory_mb),
                n.sandbox_count.to_string(),
                n.last_health_check.clone().unwrap_or_default(),
            ]
        })
        .collect()
}

async fn set_drain(conn: Conn, node_id: &str, action: &str) -> soulbox::Result<i32> {
    let node = call(&conn, Method::POST, &format!("/nodes/{}/{action}", seg(node_id))).await?;
    if conn.json {
        print_json(&node);
    } else {
        println!("node {node_id}: {}", node["status"].as_str().unwrap_or("?"));
    }
    Ok(0)
}

async fn evacuate(conn: Conn, node_id: &str) -> soulbox::Result<i32> {
    let done = call(&conn, Method::POST, &format!("/nodes/{}/evacuate", seg(node_id))).await?;
    if conn.json {
        print_json(&done);
        return Ok(0);
    }
    let names = |key: &str| -> Vec<String> {
        done[key].as_array().into_iter().flatten().filter_map(|v| v.as_str().map(str::to_owned)).collect()
    };
    println!("moved sandboxes: {}", names("movedSandboxes").join(" "));
    println!("moved snapshots: {}", names("movedSnapshots").join(" "));
    println!("remaining (running or paused with memory): {}", names("remaining").join(" "));
    let failed = done["failed"].as_array().cloned().unwrap_or_default();
    for f in &failed {
        println!("failed: {} ({})", f["id"].as_str().unwrap_or("?"), f["message"].as_str().unwrap_or(""));
    }
    Ok(if failed.is_empty() { 0 } else { 1 })
}

fn seg(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
}

/// One admin call (the SDK has no node administration): JSON body back, errors mapped like the SDK's.
async fn call(conn: &Conn, method: Method, path: &str) -> soulbox::Result<serde_json::Value> {
    let config = conn.connection()?;
    let url = format!("{}{path}", config.api_url.trim_end_matches('/'));
    // reqwest is built without a crypto provider of its own: ring is the process default (Err: already set).
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut request = reqwest::Client::new().request(method, &url);
    if let Some(key) = &config.api_key {
        request = request.header("X-API-Key", key);
    }
    let response = request.send().await.map_err(|e| Error::Other(format!("{url}: {e}")))?;
    let status = response.status();
    let text = response.text().await.map_err(|e| Error::Other(format!("{url}: {e}")))?;
    let body: serde_json::Value = if text.trim().is_empty() {
        serde_json::Value::Null
    } else {
        serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text))
    };
    if status.is_success() {
        return Ok(body);
    }
    let message = body.get("message").and_then(|m| m.as_str()).map(str::to_owned).unwrap_or_else(|| body.to_string());
    Err(match status.as_u16() {
        401 | 403 => Error::Auth(message),
        404 => Error::NotFound(message),
        400 | 409 | 422 => Error::Invalid(message),
        _ => Error::Other(format!("{status}: {message}")),
    })
}
