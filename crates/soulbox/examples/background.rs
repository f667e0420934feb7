//! A background command whose output is read while it runs (seed feature 5), and a recursive watch.

use std::time::Duration;

use futures::StreamExt;
use soulbox::Sandbox;

#[tokio::main]
async fn main() -> soulbox::Result<()> {
    let sbx = Sandbox::create("base").await?;

    let handle = sbx.commands().spawn("for i in $(seq 5); do echo tick $i; sleep 0.5; done").await?;
    while !handle.is_finished() {
        println!("so far: {:?} (exit code {:?})", handle.stdout(), handle.exit_code());
        tokio::time::sleep(Duration::from_millis(700)).await;
    }
    println!("result: {:?}", handle.wait().await?);

    let mut events = Box::pin(sbx.files().watch("/tmp", true).await?);
    sbx.files().write("/tmp/a/b/c.txt", "x").await?;
    if let Ok(Some(ev)) = tokio::time::timeout(Duration::from_secs(2), events.next()).await {
        println!("event: {:?}", ev?);
    }

    sbx.kill().await?;
    Ok(())
}
