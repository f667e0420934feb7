//! `soulbox`: the SoulBox command. Today: `soulbox keys create|list|revoke` on a data dir's store.
//! `soulbox server` arrives with issue 4.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};
use soulbox_server::store::Store;

#[derive(Parser)]
#[command(name = "soulbox", version, about = "SoulBox: self-hosted E2B-compatible sandboxes")]
struct Cli {
    /// Where SoulBox keeps its database, templates and sandboxes.
    #[arg(long, global = true, env = "SOULBOX_DATA_DIR", default_value = "/var/lib/soulbox")]
    data_dir: PathBuf,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Manage API keys.
    #[command(subcommand)]
    Keys(KeysCommand),
}

#[derive(Subcommand)]
enum KeysCommand {
    /// Create a key and print it once.
    Create {
        #[arg(long, default_value = "default")]
        name: String,
    },
    /// List keys (never the secrets).
    List,
    /// Revoke a key by id.
    Revoke { id: String },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    std::fs::create_dir_all(&cli.data_dir).with_context(|| format!("creating data dir {}", cli.data_dir.display()))?;
    let store = Store::open(&Store::sqlite_url(&cli.data_dir.join("soulbox.db"))).await.context("opening the store")?;
    match cli.command {
        Command::Keys(KeysCommand::Create { name }) => {
            let (record, key) = store.create_api_key(&name).await?;
            println!("created key {} ({})", record.id, record.name);
            println!("export E2B_API_KEY={}", key.secret);
        }
        Command::Keys(KeysCommand::List) => {
            println!("{:<20} {:<16} {:<12} STATUS", "ID", "NAME", "PREFIX");
            for k in store.list_api_keys().await? {
                let status = if k.revoked_at_ms.is_some() { "revoked" } else { "active" };
                println!("{:<20} {:<16} {:<12} {status}", k.id, k.name, k.key_prefix);
            }
        }
        Command::Keys(KeysCommand::Revoke { id }) => {
            store.revoke_api_key(&id).await.with_context(|| format!("revoking {id}"))?;
            println!("revoked {id}");
        }
    }
    Ok(())
}
