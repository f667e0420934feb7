//! Builds a template from a recipe and prints its log live, then starts a sandbox from it.
//!
//! `cargo run -p soulbox --example template_build` with `E2B_API_URL`, `E2B_SANDBOX_URL`, `E2B_API_KEY` set.

use futures::StreamExt;
use soulbox::{BuildOptions, Client, Error, Sandbox, Template};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let client = Client::from_env()?;
    let context = std::env::temp_dir().join(format!("soulbox-example-{}", std::process::id()));
    std::fs::create_dir_all(&context)?;
    std::fs::write(context.join("hello.txt"), "hello from the build context\n")?;
    let recipe = Template::from_template("base")
        .context(&context)
        .copy("hello.txt", "/opt/hello.txt")
        .run_cmd("echo building; sleep 1; echo done")
        .env("GREETING", "hi")
        .workdir("/opt");
    let build = client.build_template(&recipe, BuildOptions::new("example-template:v1")).await?;
    println!("build {} of {}", build.build_id, build.template_id);
    let mut logs = std::pin::pin!(build.logs());
    while let Some(entry) = logs.next().await {
        match entry {
            Ok(e) => println!("{} [{}] {}", e.timestamp, e.step.as_deref().unwrap_or("-"), e.message),
            Err(Error::Build { step, message, last_logs, .. }) => {
                anyhow::bail!("build failed at step {step:?}: {message}\nlast lines:\n{}", last_logs.join("\n"))
            }
            Err(e) => return Err(e.into()),
        }
    }
    let sbx = Sandbox::builder("example-template:v1").client(client.clone()).create().await?;
    println!("{}", sbx.commands().run("cat hello.txt; echo $GREETING").await?.stdout);
    sbx.kill().await?;
    client.delete_template("example-template").await?;
    std::fs::remove_dir_all(&context)?;
    Ok(())
}
