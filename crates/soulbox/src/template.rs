//! Templates: build a sandbox image from a recipe, follow its build log live, list, delete and tag templates.
//!
//! A [`Template`] is E2B's recipe (`Template()` in the Python/JS SDKs): a base (another template or an image),
//! then steps (RUN, COPY, ENV, WORKDIR, USER) and a start/ready command. [`Client::build_template`] speaks E2B's
//! build protocol (`POST /v3/templates`, COPY context uploads through `GET /templates/{id}/files/{hash}`,
//! `POST /v2/templates/{id}/builds/{build}`) and returns a [`BuildHandle`]; its [`BuildHandle::logs`] is a
//! [`Stream`] of log entries delivered while the build runs (SoulBox's NDJSON stream
//! `GET /templates/{id}/builds/{build}/logs/stream`; against a server without it, the SDK falls back to polling
//! E2B's status endpoint).
//!
//! ```no_run
//! # async fn demo() -> soulbox::Result<()> {
//! use futures::StreamExt;
//! use soulbox::{BuildOptions, Client, Template};
//!
//! let client = Client::from_env()?;
//! let recipe = Template::from_template("base")
//!     .context("./app")
//!     .copy("src", "/app")
//!     .run_cmd_as("apt-get install -y jq", "root")
//!     .env("MODE", "prod")
//!     .workdir("/app")
//!     .start_cmd("python3 -m http.server 8000", "curl -sf localhost:8000");
//! let build = client.build_template(&recipe, BuildOptions::new("my-app:v1")).await?;
//! let mut logs = std::pin::pin!(build.logs());
//! while let Some(entry) = logs.next().await {
//!     let entry = entry?; // the last item is Err(Error::Build { .. }) when the build failed
//!     println!("[{}] {}", entry.step.as_deref().unwrap_or("-"), entry.message);
//! }
//! # Ok(()) }
//! ```

use std::path::{Path, PathBuf};
use std::time::Duration;

use reqwest::Method;
use serde::{Deserialize, Serialize};

use crate::client::{Client, api_error, seg};
use crate::error::{Error, Result};

mod build_log;
mod context;
mod prepare;

pub use context::files_hash;
use context::tar_gz;

/// The image E2B's `Template().from_base_image()` asks for (SoulBox maps it to its `base` template).
pub const BASE_IMAGE: &str = "e2bdev/base";

/// The recipe types shared with the server through `soulbox-protocol` (E2B's JSON).
pub use soulbox_protocol::template::{Recipe, TemplateStep};

/// A recipe being built up (base + steps + start/ready command) and the local directory COPY sources are
/// relative to.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Template {
    /// What is sent to the server.
    #[serde(flatten)]
    pub recipe: Recipe,
    /// Where COPY sources are read from (default: the current directory). Not sent.
    #[serde(skip)]
    pub context: Option<PathBuf>,
    /// `skip_cache()` after some steps: the next step is forced.
    #[serde(skip)]
    force_next: bool,
}

impl Template {
    fn from_recipe(recipe: Recipe) -> Template {
        Template { recipe, ..Template::default() }
    }

    /// Starts from another template (`name` or `name:tag`).
    pub fn from_template(name: impl Into<String>) -> Template {
        Template::from_recipe(Recipe { from_template: Some(name.into()), ..Recipe::default() })
    }

    /// Starts from an image reference (the server maps it to a local source or pulls it).
    pub fn from_image(image: impl Into<String>) -> Template {
        Template::from_recipe(Recipe { from_image: Some(image.into()), ..Recipe::default() })
    }

    /// Starts from E2B's base image ([`BASE_IMAGE`]).
    pub fn from_base_image() -> Template {
        Template::from_image(BASE_IMAGE)
    }

    /// A recipe from E2B's `TemplateBuildStartV2` JSON (e.g. the output of a Dockerfile front end); COPY steps
    /// without `filesHash` get it computed from [`Template::context`] at build time.
    pub fn from_json(value: serde_json::Value) -> Result<Template> {
        serde_json::from_value(value).map_err(|e| Error::Invalid(format!("not a template recipe: {e}")))
    }

    /// A recipe from a Dockerfile (one stage: FROM, RUN, COPY/ADD of local files, ENV, ARG, WORKDIR, USER,
    /// CMD/ENTRYPOINT as the start command), parsed by the same front end the server and CLI use. `build_args`
    /// fill `ARG`s. COPY sources are read from [`Template::context`] (default: the current directory).
    ///
    /// ```
    /// let t = soulbox::Template::from_dockerfile("FROM base\nRUN echo hi > /hi\n", &Default::default()).unwrap();
    /// // The RUN, between Docker's defaults (USER root, WORKDIR /) and E2B's (USER user, WORKDIR /home/user).
    /// let kinds: Vec<&str> = t.recipe.steps.iter().map(|s| s.kind.as_str()).collect();
    /// assert_eq!(kinds, ["USER", "WORKDIR", "RUN", "USER", "WORKDIR"]);
    /// ```
    pub fn from_dockerfile(text: &str, build_args: &std::collections::BTreeMap<String, String>) -> Result<Template> {
        let recipe = soulbox_protocol::template::dockerfile::parse(text, build_args)
            .map_err(|e| Error::Invalid(e.to_string()))?;
        Ok(Template::from_recipe(recipe))
    }

    /// The directory COPY sources are relative to.
    pub fn context(mut self, dir: impl Into<PathBuf>) -> Template {
        self.context = Some(dir.into());
        self
    }

    fn step(mut self, kind: &str, args: Vec<String>) -> Template {
        // The server re-runs a forced step and every later one.
        let force = std::mem::take(&mut self.force_next).then_some(true);
        self.recipe.steps.push(TemplateStep { kind: kind.into(), args, force, files_hash: None });
        self
    }

    /// `RUN cmd` as the current user.
    pub fn run_cmd(self, cmd: impl Into<String>) -> Template {
        self.step("RUN", vec![cmd.into()])
    }

    /// `RUN cmd` as `user`.
    pub fn run_cmd_as(self, cmd: impl Into<String>, user: impl Into<String>) -> Template {
        self.step("RUN", vec![cmd.into(), user.into()])
    }

    /// Copies `src` (a file or directory under the context) to `dest` in the image.
    pub fn copy(self, src: impl Into<String>, dest: impl Into<String>) -> Template {
        self.copy_with(src, dest, None, None)
    }

    /// [`Template::copy`] with an owner and a mode (e.g. `0o755`) for the copied entries.
    pub fn copy_with(
        self,
        src: impl Into<String>,
        dest: impl Into<String>,
        user: Option<&str>,
        mode: Option<u32>,
    ) -> Template {
        let mode = mode.map(|m| format!("{m:04o}")).unwrap_or_default();
        self.step("COPY", vec![src.into(), dest.into(), user.unwrap_or_default().to_string(), mode])
    }

    /// `ENV key=value`.
    pub fn env(self, key: impl Into<String>, value: impl Into<String>) -> Template {
        self.step("ENV", vec![key.into(), value.into()])
    }

    /// `WORKDIR dir` (created when missing); also the sandboxes' default working directory if it is the last.
    pub fn workdir(self, dir: impl Into<String>) -> Template {
        self.step("WORKDIR", vec![dir.into()])
    }

    /// `USER name`; also the sandboxes' default user if it is the last.
    pub fn user(self, user: impl Into<String>) -> Template {
        self.step("USER", vec![user.into()])
    }

    /// The command started when a sandbox of this template starts, and the check that says it is ready
    /// (create returns once it exits 0).
    pub fn start_cmd(mut self, cmd: impl Into<String>, ready_cmd: impl Into<String>) -> Template {
        self.recipe.start_cmd = Some(cmd.into());
        self.recipe.ready_cmd = Some(ready_cmd.into());
        self
    }

    /// Only a ready check.
    pub fn ready_cmd(mut self, cmd: impl Into<String>) -> Template {
        self.recipe.ready_cmd = Some(cmd.into());
        self
    }

    /// Re-runs every step after this point even when cached (before any step: the whole build).
    pub fn skip_cache(mut self) -> Template {
        if self.recipe.steps.is_empty() {
            self.recipe.force = true;
        } else {
            self.force_next = true;
        }
        self
    }
}

/// What to build as: `name` or `name:tag`, extra tags, resources.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuildOptions {
    pub name: String,
    pub tags: Vec<String>,
    pub cpu_count: Option<u32>,
    pub memory_mb: Option<u32>,
}

impl BuildOptions {
    /// `name` or `name:tag` (no tag: the `default` tag, which is what `Sandbox.create("name")` starts).
    pub fn new(name: impl Into<String>) -> BuildOptions {
        BuildOptions { name: name.into(), tags: Vec::new(), cpu_count: None, memory_mb: None }
    }
    pub fn tag(mut self, tag: impl Into<String>) -> BuildOptions {
        self.tags.push(tag.into());
        self
    }
    pub fn cpu_count(mut self, cpus: u32) -> BuildOptions {
        self.cpu_count = Some(cpus);
        self
    }
    pub fn memory_mb(mut self, mb: u32) -> BuildOptions {
        self.memory_mb = Some(mb);
        self
    }
}

pub use soulbox_protocol::api::{AssignedTags, BuildLogEntry, BuildReason, BuildStatus, LogLevel, TemplateTag};
/// One answer of the status endpoint: the status and a page of the log from `logsOffset`.
pub type BuildStatusPage = soulbox_protocol::api::TemplateBuildInfo;

/// A template as `GET /templates` lists it (the wire shape, from soulbox-protocol).
pub use soulbox_protocol::api::TemplateListEntry as TemplateSummary;

/// A started build: follow its log ([`BuildHandle::logs`]), wait for it, or poll its status.
#[derive(Debug, Clone)]
pub struct BuildHandle {
    client: Client,
    pub template_id: String,
    pub build_id: String,
    /// The tags the build gets when it succeeds.
    pub tags: Vec<String>,
}

impl Client {
    /// Builds `template` as `options.name`: requests the build, uploads every COPY context the server does not
    /// have yet, starts the build and returns at once (the build runs on the server).
    pub async fn build_template(&self, template: &Template, options: BuildOptions) -> Result<BuildHandle> {
        let mut body = serde_json::json!({ "name": options.name, "tags": options.tags });
        if let Some(c) = options.cpu_count {
            body["cpuCount"] = c.into();
        }
        if let Some(m) = options.memory_mb {
            body["memoryMB"] = m.into();
        }
        let requested: soulbox_protocol::api::TemplateBuildRequested =
            self.api_json(Method::POST, "/v3/templates", &[], Some(body)).await?;
        let mut recipe = template.clone();
        let context = template.context.clone().unwrap_or_else(|| PathBuf::from("."));
        for step in recipe.recipe.steps.iter_mut().filter(|s| s.kind == "COPY") {
            let src = step.args.first().cloned().unwrap_or_default();
            let dest = step.args.get(1).cloned().unwrap_or_default();
            let hash = match &step.files_hash {
                Some(h) => h.clone(),
                None => {
                    let (ctx, s, d) = (context.clone(), src.clone(), dest.clone());
                    let h = blocking(move || files_hash(&ctx, &s, &d)).await?;
                    step.files_hash = Some(h.clone());
                    h
                }
            };
            self.upload_context(&requested.template_id, &hash, &context, &src).await?;
        }
        let path = format!("/v2/templates/{}/builds/{}", seg(&requested.template_id), seg(&requested.build_id));
        let start = serde_json::to_value(&recipe).map_err(|e| Error::Other(format!("encoding the recipe: {e}")))?;
        self.api_send(Method::POST, &path, &[], Some(start)).await?;
        Ok(BuildHandle {
            client: self.clone(),
            template_id: requested.template_id,
            build_id: requested.build_id,
            tags: requested.tags,
        })
    }

    /// E2B's upload: ask whether the files are there; if not, `PUT` a tar.gz of them to the URL given.
    async fn upload_context(&self, template_id: &str, hash: &str, context: &Path, src: &str) -> Result<()> {
        let link: soulbox_protocol::api::TemplateFilesLink =
            self.api_json(Method::GET, &format!("/templates/{}/files/{hash}", seg(template_id)), &[], None).await?;
        let (false, Some(url)) = (link.present, link.url) else { return Ok(()) };
        let (ctx, s) = (context.to_path_buf(), src.to_string());
        let archive = blocking(move || tar_gz(&ctx, &s)).await?;
        let len = archive.metadata().map_err(|e| Error::Other(format!("reading the COPY archive: {e}")))?.len();
        let file = tokio::fs::File::from_std(archive);
        let body = reqwest::Body::wrap_stream(tokio_util::io::ReaderStream::new(file));
        let mut rb = self
            .http()
            .put(url)
            .header(http::header::CONTENT_LENGTH, len)
            .timeout(Duration::from_secs(3600))
            .body(body);
        for (k, v) in link.headers.unwrap_or_default() {
            rb = rb.header(k, v);
        }
        let resp = rb.send().await.map_err(Error::transport)?;
        if !resp.status().is_success() {
            return Err(api_error(resp).await);
        }
        Ok(())
    }

    /// Whether a template (`name` or `name:tag`) exists.
    pub async fn template_exists(&self, name: &str) -> Result<bool> {
        match self.api_send(Method::GET, &format!("/templates/aliases/{}", seg(name)), &[], None).await {
            Ok(_) => Ok(true),
            // E2B: 403 = exists but belongs to another team.
            Err(Error::Auth(m)) if !m.contains("API key") => Ok(true),
            Err(Error::NotFound(_)) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// The templates sandboxes can start from.
    pub async fn list_templates(&self) -> Result<Vec<TemplateSummary>> {
        self.api_json(Method::GET, "/templates", &[], None).await
    }

    /// Deletes a template with its builds and tags; `Ok(false)` when there was none.
    pub async fn delete_template(&self, name: &str) -> Result<bool> {
        match self.api_send(Method::DELETE, &format!("/templates/{}", seg(name)), &[], None).await {
            Ok(_) => Ok(true),
            Err(Error::NotFound(_)) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Points `tags` at the build `target` (`name:tag`; `name` alone is `name:default`) names.
    pub async fn assign_template_tags(&self, target: &str, tags: &[&str]) -> Result<AssignedTags> {
        self.api_json(Method::POST, "/templates/tags", &[], Some(serde_json::json!({"target": target, "tags": tags})))
            .await
    }

    /// Removes tags of a template (removing `default` makes the plain name unstartable).
    pub async fn remove_template_tags(&self, name: &str, tags: &[&str]) -> Result<()> {
        self.api_send(Method::DELETE, "/templates/tags", &[], Some(serde_json::json!({"name": name, "tags": tags})))
            .await?;
        Ok(())
    }

    /// A template's tags.
    pub async fn template_tags(&self, name: &str) -> Result<Vec<TemplateTag>> {
        self.api_json(Method::GET, &format!("/templates/{}/tags", seg(name)), &[], None).await
    }
}

impl BuildHandle {
    /// A handle for a build started elsewhere.
    pub fn new(client: Client, template_id: impl Into<String>, build_id: impl Into<String>) -> BuildHandle {
        BuildHandle { client, template_id: template_id.into(), build_id: build_id.into(), tags: Vec::new() }
    }

    /// One status poll: the status and up to 100 log entries from `logs_offset`.
    pub async fn status(&self, logs_offset: usize) -> Result<BuildStatusPage> {
        let path = format!("/templates/{}/builds/{}/status", seg(&self.template_id), seg(&self.build_id));
        self.client.api_json(Method::GET, &path, &[("logsOffset", logs_offset.to_string())], None).await
    }
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f).await.map_err(|e| Error::Other(format!("a blocking task failed: {e}")))?
}

#[cfg(test)]
mod tests {
    use super::*;
    use soulbox_protocol::api::BuildStreamLine as StreamLine;

    #[test]
    fn builder_produces_e2b_steps() {
        let t = Template::from_template("base")
            .run_cmd("echo a")
            .run_cmd_as("apt-get update", "root")
            .copy_with("app", "/app", Some("user"), Some(0o755))
            .env("A", "1")
            .workdir("/app")
            .user("user")
            .start_cmd("serve", "check");
        let v = serde_json::to_value(&t).unwrap();
        assert_eq!(v["fromTemplate"], "base");
        assert_eq!(v["steps"][1], serde_json::json!({"type": "RUN", "args": ["apt-get update", "root"]}));
        assert_eq!(v["steps"][2]["args"], serde_json::json!(["app", "/app", "user", "0755"]));
        assert_eq!(v["steps"][3]["args"], serde_json::json!(["A", "1"]));
        assert_eq!((v["startCmd"].as_str(), v["readyCmd"].as_str()), (Some("serve"), Some("check")));
        assert!(v.get("context").is_none());
        assert!(Template::from_template("base").skip_cache().recipe.force);
        let t = Template::from_template("base").run_cmd("a").skip_cache().run_cmd("b").run_cmd("c");
        assert_eq!(t.recipe.steps.iter().map(|s| s.force).collect::<Vec<_>>(), [None, Some(true), None]);
    }

    #[test]
    fn files_hash_follows_content_and_names() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("d")).unwrap();
        std::fs::write(dir.path().join("d/a"), "one").unwrap();
        let h1 = files_hash(dir.path(), "d", "/x").unwrap();
        assert_eq!(h1, files_hash(dir.path(), "d", "/x").unwrap());
        assert_ne!(h1, files_hash(dir.path(), "d", "/y").unwrap(), "dest matters");
        std::fs::write(dir.path().join("d/a"), "two").unwrap();
        assert_ne!(h1, files_hash(dir.path(), "d", "/x").unwrap(), "content matters");
        assert!(matches!(files_hash(dir.path(), "../etc", "/x"), Err(Error::Invalid(_))));
        assert!(matches!(files_hash(dir.path(), "missing", "/x"), Err(Error::Invalid(_))));
        let archive = tar_gz(dir.path(), "d").unwrap();
        let mut names: Vec<String> = tar::Archive::new(flate2::read::GzDecoder::new(archive))
            .entries()
            .unwrap()
            .map(|e| e.unwrap().path().unwrap().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(names, ["d", "d/a"]);
    }

    #[test]
    fn stream_lines_parse() {
        let e: StreamLine =
            serde_json::from_str(r#"{"timestamp":"2026-01-01T00:00:00Z","level":"warn","message":"m","step":"2"}"#)
                .unwrap();
        assert!(matches!(e, StreamLine::Entry(BuildLogEntry { level: LogLevel::Warn, .. })));
        let end: StreamLine =
            serde_json::from_str(r#"{"status":"error","reason":{"message":"boom","step":"3"}}"#).unwrap();
        assert!(
            matches!(end, StreamLine::End(e) if e.status == BuildStatus::Error && e.reason.as_ref().is_some_and(|r| r.step.is_some()))
        );
    }
}
