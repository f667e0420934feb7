//! `soulbox template build|list|delete`: builds from a Dockerfile through the SDK, following the live build log
//! (a spinner per step on a terminal, plain lines otherwise).

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::path::PathBuf;
use std::time::Duration;

use clap::Subcommand;
use futures::StreamExt;
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use soulbox::{BuildLogEntry, BuildOptions, Error, LogLevel, Template};

use super::output::{print_json, table};
use super::{Conn, parse_kv};

#[derive(Subcommand, Debug)]
pub enum TemplateCommand {
    /// Build a template from a Dockerfile, showing the live build log; exits non-zero naming the failing step.
    #[command(
        after_help = "Examples:\n  soulbox template build -f Dockerfile . --name my-app\n  soulbox template build -f app/Dockerfile app --name my-app:v2 --tag stable --cpu 2 --memory-mb 2048\n  soulbox template build -f Dockerfile --name tools --build-arg VERSION=1.2 --no-cache --json\n\nThen: soulbox sandbox create my-app:v2\nExit codes: 0 built; 8 invalid Dockerfile or request; 9 the build failed (the error names the step)."
    )]
    Build {
        /// The Dockerfile (FROM, RUN, COPY/ADD, ENV, ARG, WORKDIR, USER, CMD/ENTRYPOINT).
        #[arg(short = 'f', long = "file", default_value = "Dockerfile")]
        file: PathBuf,
        /// The directory COPY sources are relative to.
        #[arg(default_value = ".")]
        context: PathBuf,
        /// Template name, optionally with a tag: NAME or NAME:TAG.
        #[arg(long)]
        name: String,
        /// More tags for the build (repeatable).
        #[arg(long = "tag")]
        tags: Vec<String>,
        /// CPUs of the build sandbox and the template's sandboxes.
        #[arg(long)]
        cpu: Option<u32>,
        /// Memory (MiB) of the build sandbox and the template's sandboxes.
        #[arg(long)]
        memory_mb: Option<u32>,
        /// Dockerfile `ARG` value `KEY=value` (repeatable).
        #[arg(long = "build-arg", value_parser = parse_kv)]
        build_args: Vec<(String, String)>,
        /// Run every step even when cached.
        #[arg(long)]
        no_cache: bool,
        #[command(flatten)]
        conn: Conn,
    },
    /// Build a template SoulBox ships (code-interpreter-v1) now instead of at the first create naming it,
    /// showing the live build log; cached steps are reused, so a prepared template takes a second.
    #[command(
        after_help = "Examples:\n  soulbox template prepare code-interpreter-v1\n  soulbox template prepare code-interpreter-v1 --json\n\nExit codes: 0 ready; 3 not a template SoulBox ships; 8 a team's own template has the name; 9 the build failed (the error names the step)."
    )]
    Prepare {
        /// The shipped template's name.
        name: String,
        #[command(flatten)]
        conn: Conn,
    },
    /// Templates sandboxes can start from.
    #[command(
        after_help = "Examples:\n  soulbox template list\n  soulbox template list --json | jq -r '.[].templateID'"
    )]
    List {
        /// Print only the ids, one per line (for scripts: `xargs soulbox template delete`).
        #[arg(short, long)]
        quiet: bool,
        #[command(flatten)]
        conn: Conn,
    },
    /// Delete templates with their builds and tags (layers shared with others stay).
    #[command(after_help = "Example:\n  soulbox template delete my-app")]
    Delete {
        #[arg(required = true)]
        names: Vec<String>,
        #[command(flatten)]
        conn: Conn,
    },
}

pub async fn run(cmd: TemplateCommand) -> soulbox::Result<i32> {
    match cmd {
        TemplateCommand::Build { file, context, name, tags, cpu, memory_mb, build_args, no_cache, conn } => {
            let text = std::fs::read_to_string(&file)
                .map_err(|e| Error::Invalid(format!("reading {}: {e}", file.display())))?;
            let args: BTreeMap<String, String> = build_args.into_iter().collect();
            let mut template = Template::from_dockerfile(&text, &args)
                .map_err(|e| Error::Invalid(format!("{}: {e}", file.display())))?
                .context(context);
            template.recipe.force = template.recipe.force || no_cache;
            let mut options = BuildOptions::new(&name);
            options.tags = tags;
            options.cpu_count = cpu;
            options.memory_mb = memory_mb;
            let client = conn.client()?;
            let build = client.build_template(&template, options).await?;
            let total = template.recipe.steps.len();
            let mut display =
                if std::io::stderr().is_terminal() && !conn.json { Display::progress(total) } else { Display::Plain };
            if !conn.json {
                display.line(&format!("Building {name} (template {}, build {})", build.template_id, build.build_id));
            }
            let mut logs = std::pin::pin!(build.logs());
            let mut failure = None;
            while let Some(item) = logs.next().await {
                match item {
                    Ok(entry) => display.entry(&entry, conn.json),
                    Err(e) => failure = Some(e),
                }
            }
            display.finish(failure.is_none());
            if let Some(e) = failure {
                return Err(e);
            }
            if conn.json {
                print_json(&serde_json::json!({
                    "templateID": build.template_id, "buildID": build.build_id, "tags": build.tags, "status": "ready",
                }));
            } else {
                println!("Built {name}: soulbox sandbox create {name}");
            }
            Ok(0)
        }
        TemplateCommand::Prepare { name, conn } => {
            let client = conn.client()?;
            if !conn.json {
                println!("Preparing {name} (the server builds it; cached steps are reused)");
            }
            let mut logs = std::pin::pin!(client.prepare_template(&name).await?);
            let mut display = Display::Plain;
            let mut failure = None;
            while let Some(item) = logs.next().await {
                match item {
                    Ok(entry) => display.entry(&entry, conn.json),
                    Err(e) => failure = Some(e),
                }
            }
            if let Some(e) = failure {
                return Err(e);
            }
            if conn.json {
                print_json(&serde_json::json!({"templateID": name, "status": "ready"}));
            } else {
                println!("{name} is ready: soulbox sandbox create {name}");
            }
            Ok(0)
        }
        TemplateCommand::List { quiet, conn } => {
            let list = conn.client()?.list_templates().await?;
            if quiet {
                list.iter().for_each(|t| println!("{}", t.template_id));
            } else if conn.json {
                print_json(&list);
            } else {
                table(
                    &["TEMPLATE", "ALIASES", "CPU", "MEMORY MB", "DISK MB", "ENVD"],
                    list.iter()
                        .map(|t| {
                            vec![
                                t.template_id.clone(),
                                t.aliases.join(","),
                                t.cpu_count.to_string(),
                                t.memory_mb.to_string(),
                                t.disk_size_mb.to_string(),
                                t.envd_version.clone(),
                            ]
                        })
                        .collect(),
                );
            }
            Ok(0)
        }
        TemplateCommand::Delete { names, conn } => {
            let client = conn.client()?;
            let mut missing = Vec::new();
            for n in &names {
                if client.delete_template(n).await? {
                    if !conn.json {
                        println!("deleted {n}");
                    }
                } else {
                    missing.push(n.clone());
                }
            }
            if conn.json {
                print_json(
                    &serde_json::json!({"deleted": names.iter().filter(|n| !missing.contains(n)).collect::<Vec<_>>(), "notFound": missing}),
                );
            }
            if missing.is_empty() { Ok(0) } else { Err(Error::NotFound(format!("template(s) {}", missing.join(", ")))) }
        }
    }
}

/// How the build log is shown.
enum Display {
    /// One line per entry (`[step] message`) on stdout; for pipes, files and `--json` (then on stderr).
    Plain,
    /// A spinner per step with the step's title, finished with a check mark; every output line above them.
    Progress { multi: MultiProgress, current: Option<(String, ProgressBar)>, total: usize },
}

impl Display {
    fn progress(total: usize) -> Display {
        Display::Progress { multi: MultiProgress::with_draw_target(ProgressDrawTarget::stderr()), current: None, total }
    }

    fn line(&self, text: &str) {
        match self {
            Display::Plain => println!("{text}"),
            Display::Progress { multi, .. } => {
                let _ = multi.println(text);
            }
        }
    }

    fn entry(&mut self, e: &BuildLogEntry, json: bool) {
        let step = e.step.clone().unwrap_or_else(|| "-".into());
        match self {
            Display::Plain => {
                let level =
                    if e.level == LogLevel::Info { String::new() } else { format!("{:?}: ", e.level).to_lowercase() };
                let text = format!("[{step}] {level}{}", e.message);
                if json { eprintln!("{text}") } else { println!("{text}") }
            }
            Display::Progress { multi, current, total } => {
                if current.as_ref().is_none_or(|(s, _)| *s != step) {
                    if let Some((_, bar)) = current.take() {
                        bar.finish_with_message(format!("✓ {}", bar.message()));
                    }
                    let bar = multi.add(ProgressBar::new_spinner());
                    bar.set_style(
                        ProgressStyle::with_template("{spinner} {msg} [{elapsed}]")
                            .unwrap_or_else(|_| ProgressStyle::default_spinner()),
                    );
                    bar.enable_steady_tick(Duration::from_millis(120));
                    let title = match step.parse::<usize>() {
                        Ok(n) => format!(
                            "step {n}/{total}: {}",
                            e.message.split_once("] ").map_or(e.message.as_str(), |(_, t)| t)
                        ),
                        Err(_) => format!("{step}: {}", e.message),
                    };
                    bar.set_message(title);
                    *current = Some((step.clone(), bar));
                } else {
                    let _ = multi.println(format!("  {}", e.message));
                }
            }
        }
    }

    fn finish(&mut self, ok: bool) {
        if let Display::Progress { current, .. } = self
            && let Some((_, bar)) = current.take()
        {
            let mark = if ok { "✓" } else { "✗" };
            bar.finish_with_message(format!("{mark} {}", bar.message()));
        }
    }
}
