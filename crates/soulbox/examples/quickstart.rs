//! Create a sandbox, run commands, move files, kill it.
//!
//! `E2B_API_URL=http://127.0.0.1:3000 E2B_SANDBOX_URL=http://127.0.0.1:3000 E2B_API_KEY=… cargo run -p soulbox --example quickstart`

use std::time::Duration;

use soulbox::{CommandOptions, Error, Sandbox};

#[tokio::main]
async fn main() -> soulbox::Result<()> {
    let sbx =
        Sandbox::builder("base").timeout(Duration::from_secs(120)).metadata("example", "quickstart").create().await?;
    println!("sandbox {} (agent {})", sbx.id(), sbx.envd_version());

    let out = sbx.commands().run("uname -a").await?;
    print!("{}", out.stdout);

    // Streaming output through callbacks.
    let opts = CommandOptions::default().on_stdout(|chunk| print!("[live] {chunk}"));
    sbx.commands().run_with("for i in 1 2 3; do echo $i; sleep 0.2; done", opts).await?;

    // A failing command is an error that carries its output.
    match sbx.commands().run("echo oops >&2; exit 4").await {
        Err(Error::CommandExit { exit_code, stderr, .. }) => println!("exit {exit_code}: {stderr}"),
        other => println!("unexpected: {other:?}"),
    }

    sbx.files().write("/tmp/hello.txt", "hello from Rust\n").await?;
    println!("{}", sbx.files().read_text("/tmp/hello.txt").await?);
    for entry in sbx.files().list("/tmp", 1).await? {
        println!("{:?} {}", entry.entry_type, entry.path);
    }

    sbx.kill().await?;
    Ok(())
}
