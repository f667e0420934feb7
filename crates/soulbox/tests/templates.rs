//! Template builds through the SDK against a real `soulbox server` (root: the test reaches into the build
//! sandbox through `/proc/<pid>/root`). Skipped unless `SOULBOX_TEST_API_URL` / `SOULBOX_TEST_API_KEY` are set
//! (`crates/soulbox/tests/run.sh` sets them).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures::StreamExt;
use soulbox::{BuildOptions, BuildStatus, Client, ConnectionConfig, Error, LogLevel, Sandbox, Template};

fn config() -> Option<ConnectionConfig> {
    let api_url = std::env::var("SOULBOX_TEST_API_URL").ok()?;
    let key = std::env::var("SOULBOX_TEST_API_KEY").ok()?;
    let sandbox_url = std::env::var("SOULBOX_TEST_SANDBOX_URL").unwrap_or_else(|_| api_url.clone());
    Some(ConnectionConfig::default().with_api_url(&api_url).with_sandbox_url(&sandbox_url).with_api_key(&key))
}

macro_rules! live {
    () => {
        match config() {
            Some(c) => c,
            None => {
                eprintln!(
                    "skipped: set SOULBOX_TEST_API_URL and SOULBOX_TEST_API_KEY (crates/soulbox/tests/run.sh does)"
                );
                return;
            }
        }
    };
}

fn unique() -> String {
    let t = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
    format!("{}{}", t.as_secs(), t.subsec_nanos() % 100_000)
}

/// Deletes the template when the test ends, also on panic.
struct TemplateGuard(ConnectionConfig, String);
impl Drop for TemplateGuard {
    fn drop(&mut self) {
        let (config, name) = (self.0.clone(), self.1.clone());
        let _ = std::thread::spawn(move || {
            tokio::runtime::Runtime::new().unwrap().block_on(async move {
                let _ = Client::new(config).unwrap().delete_template(&name).await;
            })
        })
        .join();
    }
}

/// The pid of the process whose command line contains `token` (the build step's shell).
fn pid_with(token: &str) -> Option<u32> {
    std::fs::read_dir("/proc").ok()?.flatten().find_map(|e| {
        let pid: u32 = e.file_name().to_str()?.parse().ok()?;
        let cmdline = std::fs::read(e.path().join("cmdline")).ok()?;
        (pid != std::process::id()
            && String::from_utf8_lossy(&cmdline).contains(token)
            && !String::from_utf8_lossy(&cmdline).contains("cargo"))
        .then_some(pid)
    })
}

/// Creates `gate` inside the build sandbox of process `pid`. Host root can write there directly only without
/// a user namespace; with one (the default) host uid 0 has no id inside and the kernel refuses to create a file
/// it could not own (EOVERFLOW), so the file is made as the sandbox's root, from within its namespaces.
fn release_gate(pid: u32, gate: &str) {
    if std::fs::write(format!("/proc/{pid}/root{gate}"), "").is_ok() {
        return;
    }
    let status = std::process::Command::new("nsenter")
        .args(["--target", &pid.to_string(), "--user", "--mount", "--", "touch", gate])
        .status()
        .expect("nsenter runs");
    assert!(status.success(), "could not create {gate} inside the build sandbox");
}

/// The log of step 1 arrives while step 1 is still running: the step blocks until a file exists that the test
/// creates only after it received that line. Then COPY, ENV, WORKDIR and tags are checked on a sandbox.
#[tokio::test]
async fn streamed_build_log_arrives_before_the_build_ends() {
    let config = live!();
    let client = Client::new(config.clone()).unwrap();
    let id = unique();
    let name = format!("sdk-tpl-{id}");
    let _guard = TemplateGuard(config.clone(), name.clone());
    let context = tempfile::tempdir().unwrap();
    std::fs::create_dir(context.path().join("app")).unwrap();
    std::fs::write(context.path().join("app/hello.txt"), "hello from the context\n").unwrap();

    let token = format!("gate{id}");
    let gate = format!("/tmp/{token}");
    let recipe = Template::from_template("base")
        .context(context.path())
        .run_cmd(format!("echo waiting-{token}; until [ -f {gate} ]; do sleep 0.05; done; echo released-{token}"))
        .copy("app", "/opt/app")
        .env("GREETING", "hi")
        .workdir("/opt/app");
    let build = client
        .build_template(&recipe, BuildOptions::new(format!("{name}:v1")).tag("stable").cpu_count(1).memory_mb(512))
        .await
        .unwrap();
    assert_eq!(build.tags, ["v1", "stable"]);

    let followed = async {
        let mut logs = std::pin::pin!(build.logs());
        let mut entries = Vec::new();
        let mut released = false;
        while let Some(entry) = logs.next().await {
            let entry = entry.expect("the build succeeds");
            // The exact line the command prints (the step title also contains the command text).
            if entry.message == format!("waiting-{token}") && !released {
                // Seen live: the step cannot have finished, it waits for the file we have not created yet.
                assert_eq!(entry.step.as_deref(), Some("1"), "{entry:?}");
                assert_eq!(build.status(0).await.unwrap().status, BuildStatus::Building);
                let pid = pid_with(&token).expect("the build step's shell runs on this host");
                release_gate(pid, &gate);
                released = true;
            }
            entries.push(entry);
        }
        (entries, released)
    };
    let (entries, released) = tokio::time::timeout(Duration::from_secs(900), followed).await.expect("the build ends");
    assert!(released, "never saw the step's first line: {entries:#?}");
    let pos = |line: &str| {
        entries.iter().position(|e| e.message == line).unwrap_or_else(|| panic!("no '{line}' in {entries:#?}"))
    };
    assert!(pos(&format!("waiting-{token}")) < pos(&format!("released-{token}")));
    assert!(entries.last().unwrap().step.as_deref() == Some("finalize"), "{entries:#?}");
    assert!(entries.iter().all(|e| e.level != LogLevel::Error));

    // The polling fallback reads the same finished build.
    build.wait_polling().await.unwrap();
    build.wait().await.unwrap();

    assert!(client.template_exists(&format!("{name}:v1")).await.unwrap());
    assert!(!client.template_exists(&format!("{name}:nope")).await.unwrap());
    let tags = client.template_tags(&name).await.unwrap();
    assert_eq!(tags.iter().map(|t| t.tag.as_str()).collect::<Vec<_>>(), ["stable", "v1"]);
    assert!(tags.iter().all(|t| t.build_id == build.build_id));
    let assigned = client.assign_template_tags(&format!("{name}:v1"), &["prod"]).await.unwrap();
    assert_eq!(assigned.build_id, build.build_id);

    let sbx = Sandbox::builder(format!("{name}:prod"))
        .client(client.clone())
        .timeout(Duration::from_secs(120))
        .create()
        .await
        .unwrap();
    let out = sbx.commands().run("cat hello.txt; echo $GREETING; pwd").await;
    let _ = sbx.kill().await;
    assert_eq!(out.unwrap().stdout, "hello from the context\nhi\n/opt/app\n");

    client.remove_template_tags(&name, &["prod"]).await.unwrap();
    assert!(matches!(
        Sandbox::builder(format!("{name}:prod")).client(client.clone()).create().await,
        Err(Error::NotFound(_))
    ));
    assert!(client.delete_template(&name).await.unwrap());
    assert!(!client.delete_template(&name).await.unwrap());
    assert!(!client.template_exists(&format!("{name}:v1")).await.unwrap());
}

/// A failing RUN ends the log stream with `Error::Build` naming its step and carrying the last lines.
#[tokio::test]
async fn failed_build_names_its_step() {
    let config = live!();
    let client = Client::new(config.clone()).unwrap();
    let name = format!("sdk-fail-{}", unique());
    let _guard = TemplateGuard(config, name.clone());
    let recipe = Template::from_template("base").env("A", "1").run_cmd("echo about-to-fail; exit 3");
    let build = client.build_template(&recipe, BuildOptions::new(&name).cpu_count(1).memory_mb(512)).await.unwrap();
    let mut logs = std::pin::pin!(build.logs());
    let mut last = None;
    while let Some(item) = tokio::time::timeout(Duration::from_secs(600), logs.next()).await.expect("the build ends") {
        last = Some(item);
    }
    match last {
        Some(Err(Error::Build { step, message, last_logs, build_id, .. })) => {
            assert_eq!(step.as_deref(), Some("2"), "{message}");
            assert_eq!(build_id, build.build_id);
            assert!(message.contains("code 3"), "{message}");
            assert!(last_logs.iter().any(|l| l.contains("about-to-fail")), "{last_logs:?}");
        }
        other => panic!("expected Error::Build, got {other:?}"),
    }
    assert!(matches!(build.wait_polling().await, Err(Error::Build { .. })));
    assert!(!client.template_exists(&name).await.unwrap(), "a failed build registers nothing");
    assert!(client.list_templates().await.unwrap().iter().any(|t| t.template_id == "base"));
}
