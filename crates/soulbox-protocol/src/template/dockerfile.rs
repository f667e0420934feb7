//! The Dockerfile front end: a Dockerfile becomes the same recipe E2B's `Template()` builder sends
//! (`fromImage`/`fromTemplate` + `TemplateStep`s + start command).
//!
//! Supported: `FROM` (one stage), `RUN` (shell and exec form), `COPY`/`ADD` of local files
//! (`--chown`, `--chmod`), `ENV`, `ARG`, `WORKDIR`, `USER`, `CMD`/`ENTRYPOINT` (→ start command),
//! line continuations and comments. `EXPOSE`, `LABEL` and `MAINTAINER` are accepted and ignored.
//! Everything else is refused with an error naming the line.

use std::collections::BTreeMap;

use super::{Recipe, TemplateStep};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("Dockerfile line {line}: {message}")]
pub struct DockerfileError {
    pub line: usize,
    pub message: String,
}

fn err(line: usize, message: impl Into<String>) -> DockerfileError {
    DockerfileError { line, message: message.into() }
}

/// One logical instruction: its first physical line number and the joined text.
fn logical_lines(text: &str) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    let mut current: Option<(usize, String)> = None;
    for (i, raw) in text.lines().enumerate() {
        let n = i + 1;
        let trimmed = raw.trim_start();
        // Comment lines (also inside a continuation) and parser directives are dropped.
        if trimmed.starts_with('#') {
            continue;
        }
        if current.is_none() && trimmed.trim().is_empty() {
            continue;
        }
        let (body, continues) = match raw.trim_end().strip_suffix('\\') {
            Some(b) => (b.to_string(), true),
            None => (raw.to_string(), false),
        };
        match current.as_mut() {
            Some((_, acc)) => {
                if !trimmed.trim().is_empty() {
                    acc.push(' ');
                    acc.push_str(body.trim());
                }
            }
            None => current = Some((n, body.trim().to_string())),
        }
        if !continues && let Some(c) = current.take() {
            out.push(c);
        }
    }
    if let Some(c) = current.take() {
        out.push(c);
    }
    out
}

/// `$NAME` / `${NAME}` / `${NAME:-default}` from `vars`; unknown names become empty (Docker's rule).
fn substitute(s: &str, vars: &BTreeMap<String, String>) -> String {
    let chars: Vec<char> = s.chars().collect();
    let mut out = String::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c == '\\' && i + 1 < chars.len() && chars[i + 1] == '$' {
            out.push('$');
            i += 2;
            continue;
        }
        if c != '$' || i + 1 >= chars.len() {
            out.push(c);
            i += 1;
            continue;
        }
        if chars[i + 1] == '{' {
            if let Some(end) = chars[i + 2..].iter().position(|&c| c == '}') {
                let inner: String = chars[i + 2..i + 2 + end].iter().collect();
                let (name, default) = match inner.split_once(":-") {
                    Some((n, d)) => (n.to_string(), Some(d.to_string())),
                    None => (inner.clone(), None),
                };
                let v = vars.get(&name).filter(|v| !v.is_empty()).cloned().or(default).unwrap_or_default();
                out.push_str(&v);
                i += 3 + end;
                continue;
            }
        } else if chars[i + 1] == '_' || chars[i + 1].is_ascii_alphabetic() {
            let mut j = i + 1;
            while j < chars.len() && (chars[j] == '_' || chars[j].is_ascii_alphanumeric()) {
                j += 1;
            }
            let name: String = chars[i + 1..j].iter().collect();
            out.push_str(vars.get(&name).map(String::as_str).unwrap_or(""));
            i = j;
            continue;
        }
        out.push(c);
        i += 1;
    }
    out
}

/// Single-quote a word for `sh`.
pub fn shell_quote(s: &str) -> String {
    if !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || "-_./=:,+@%".contains(c)) {
        return s.to_string();
    }
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// A JSON array (exec form) or None (shell form).
fn exec_form(rest: &str, line: usize) -> Result<Option<Vec<String>>, DockerfileError> {
    let t = rest.trim();
    if !t.starts_with('[') {
        return Ok(None);
    }
    serde_json::from_str::<Vec<String>>(t)
        .map(Some)
        .map_err(|e| err(line, format!("exec form must be a JSON array of strings: {e}")))
}

fn command_of(rest: &str, line: usize) -> Result<String, DockerfileError> {
    Ok(match exec_form(rest, line)? {
        Some(argv) => argv.iter().map(|a| shell_quote(a)).collect::<Vec<_>>().join(" "),
        None => rest.trim().to_string(),
    })
}

/// Split on unquoted whitespace, honouring "double" and 'single' quotes and backslash escapes.
fn words(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut has = false;
    let mut quote: Option<char> = None;
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (None, '"') | (None, '\'') => {
                quote = Some(c);
                has = true;
            }
            (q, '\\') if q != Some('\'') => {
                if let Some(n) = chars.next() {
                    cur.push(n);
                    has = true;
                }
            }
            (None, c) if c.is_whitespace() => {
                if has {
                    out.push(std::mem::take(&mut cur));
                    has = false;
                }
            }
            (_, c) => {
                cur.push(c);
                has = true;
            }
        }
    }
    if has {
        out.push(cur);
    }
    out
}

/// `ENV a=b c=d` or the legacy `ENV a b c`.
fn env_pairs(rest: &str, line: usize) -> Result<Vec<(String, String)>, DockerfileError> {
    let ws = words(rest);
    if ws.is_empty() {
        return Err(err(line, "ENV needs at least one variable"));
    }
    if !ws[0].contains('=') {
        let (k, v) = rest.trim().split_once(char::is_whitespace).ok_or_else(|| err(line, "ENV needs a value"))?;
        return Ok(vec![(k.to_string(), words(v).join(" "))]);
    }
    ws.into_iter()
        .map(|w| match w.split_once('=') {
            Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
            _ => Err(err(line, format!("ENV expects NAME=value, got {w:?}"))),
        })
        .collect()
}

/// Parse a Dockerfile. `build_args` override `ARG` defaults.
pub fn parse(text: &str, build_args: &BTreeMap<String, String>) -> Result<Recipe, DockerfileError> {
    let mut recipe = Recipe::default();
    let mut seen_from = false;
    let mut args: BTreeMap<String, String> = BTreeMap::new();
    let mut envs: BTreeMap<String, String> = BTreeMap::new();
    let mut entrypoint: Option<String> = None;
    let mut cmd: Option<String> = None;
    let (mut user_set, mut workdir_set) = (false, false);
    for (line, text) in logical_lines(text) {
        let (instr, rest) = match text.split_once(char::is_whitespace) {
            Some((i, r)) => (i.to_ascii_uppercase(), r.trim().to_string()),
            None => (text.to_ascii_uppercase(), String::new()),
        };
        if rest.contains("<<") && matches!(instr.as_str(), "RUN" | "COPY" | "ADD") && rest.contains("<<EOF") {
            return Err(err(line, "heredocs are not supported"));
        }
        let vars = || {
            let mut v = args.clone();
            v.extend(envs.clone());
            v
        };
        if !seen_from && !matches!(instr.as_str(), "FROM" | "ARG") {
            return Err(err(line, format!("{instr} before FROM")));
        }
        match instr.as_str() {
            "FROM" => {
                if seen_from {
                    return Err(err(line, "multi-stage builds (a second FROM) are not supported"));
                }
                let mut ws = words(&substitute(&rest, &args));
                ws.retain(|w| !w.starts_with("--platform=linux/amd64"));
                if let Some(flag) = ws.iter().find(|w| w.starts_with("--")) {
                    return Err(err(line, format!("FROM option {flag} is not supported")));
                }
                match ws.as_slice() {
                    [image] => recipe.from_image = Some(image.clone()),
                    [image, as_kw, _] if as_kw.eq_ignore_ascii_case("as") => recipe.from_image = Some(image.clone()),
                    _ => return Err(err(line, "FROM expects an image reference")),
                }
                if recipe.from_image.as_deref() == Some("scratch") {
                    return Err(err(line, "FROM scratch is not supported"));
                }
                seen_from = true;
                // Args declared before FROM are only visible in FROM (Docker's rule).
                args.clear();
                // Docker's defaults for the instructions that follow, whatever the base's own user and workdir
                // (what E2B's SDKs send for a Dockerfile).
                recipe.steps.push(TemplateStep::new("USER", vec!["root".into()]));
                recipe.steps.push(TemplateStep::new("WORKDIR", vec!["/".into()]));
            }
            "ARG" => {
                for w in words(&rest) {
                    let (k, default) = match w.split_once('=') {
                        Some((k, v)) => (k.to_string(), Some(v.to_string())),
                        None => (w.clone(), None),
                    };
                    let v = build_args.get(&k).cloned().or(default).unwrap_or_default();
                    args.insert(k, v);
                }
            }
            "RUN" => {
                if rest.starts_with("--") {
                    return Err(err(
                        line,
                        format!("RUN option {} is not supported", rest.split_whitespace().next().unwrap_or("")),
                    ));
                }
                let mut c = command_of(&rest, line)?;
                if c.is_empty() {
                    return Err(err(line, "RUN needs a command"));
                }
                // ARGs are environment variables of the RUN commands (not of the image).
                let exported: Vec<String> = args
                    .iter()
                    .filter(|(k, _)| !envs.contains_key(*k))
                    .map(|(k, v)| format!("{k}={}", shell_quote(v)))
                    .collect();
                if !exported.is_empty() {
                    c = format!("export {}; {c}", exported.join(" "));
                }
                recipe.steps.push(TemplateStep::new("RUN", vec![c]));
            }
            "COPY" | "ADD" => {
                let mut ws = words(&substitute(&rest, &vars()));
                let mut user = String::new();
                let mut mode = String::new();
                while ws.first().is_some_and(|w| w.starts_with("--")) {
                    let flag = ws.remove(0);
                    if let Some(v) = flag.strip_prefix("--chown=") {
                        user = v.split(':').next().unwrap_or_default().to_string();
                    } else if let Some(v) = flag.strip_prefix("--chmod=") {
                        let m = u32::from_str_radix(v, 8)
                            .map_err(|_| err(line, format!("--chmod={v} is not an octal mode")))?;
                        mode = format!("{m:04o}");
                    } else {
                        return Err(err(line, format!("{instr} option {flag} is not supported")));
                    }
                }
                if rest.trim_start().starts_with('[') {
                    ws = exec_form(&substitute(&rest, &vars()), line)?.unwrap_or_default();
                }
                if ws.len() < 2 {
                    return Err(err(line, format!("{instr} expects at least one source and a destination")));
                }
                let dest = ws.pop().unwrap_or_default();
                if ws.len() > 1 && !dest.ends_with('/') {
                    return Err(err(line, format!("{instr} with several sources needs a destination ending in /")));
                }
                for src in ws {
                    if instr == "ADD" && (src.contains("://") || src.starts_with("git@")) {
                        return Err(err(line, "ADD from a URL is not supported (only local files)"));
                    }
                    if instr == "ADD"
                        && [".tar", ".tar.gz", ".tgz", ".tar.xz", ".tar.bz2"].iter().any(|e| src.ends_with(e))
                    {
                        return Err(err(
                            line,
                            "ADD of a local archive (auto-extraction) is not supported; COPY it and RUN tar",
                        ));
                    }
                    recipe.steps.push(TemplateStep::new("COPY", vec![src, dest.clone(), user.clone(), mode.clone()]));
                }
            }
            "ENV" => {
                let pairs = env_pairs(&substitute(&rest, &vars()), line)?;
                let mut a = Vec::new();
                for (k, v) in pairs {
                    envs.insert(k.clone(), v.clone());
                    a.push(k);
                    a.push(v);
                }
                recipe.steps.push(TemplateStep::new("ENV", a));
            }
            "WORKDIR" => {
                let p = substitute(&rest, &vars());
                if p.is_empty() {
                    return Err(err(line, "WORKDIR needs a path"));
                }
                recipe.steps.push(TemplateStep::new("WORKDIR", vec![p]));
                workdir_set = true;
            }
            "USER" => {
                let u = substitute(&rest, &vars());
                let u = u.split(':').next().unwrap_or_default().trim().to_string();
                if u.is_empty() {
                    return Err(err(line, "USER needs a user name"));
                }
                recipe.steps.push(TemplateStep::new("USER", vec![u]));
                user_set = true;
            }
            "CMD" => cmd = Some(command_of(&rest, line)?),
            "ENTRYPOINT" => entrypoint = Some(command_of(&rest, line)?),
            "EXPOSE" | "LABEL" | "MAINTAINER" => {}
            other => return Err(err(line, format!("instruction {other} is not supported"))),
        }
    }
    if !seen_from {
        return Err(err(1, "no FROM instruction"));
    }
    // E2B's rule: a sandbox of the template runs as `user` in /home/user unless the Dockerfile said otherwise.
    if !user_set {
        recipe.steps.push(TemplateStep::new("USER", vec!["user".into()]));
    }
    if !workdir_set {
        recipe.steps.push(TemplateStep::new("WORKDIR", vec!["/home/user".into()]));
    }
    recipe.start_cmd = match (entrypoint, cmd) {
        (Some(e), Some(c)) => Some(format!("{e} {c}")),
        (Some(e), None) => Some(e),
        (None, c) => c,
    };
    Ok(recipe)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Result<Recipe, DockerfileError> {
        parse(s, &BTreeMap::new())
    }

    fn step(t: &str, args: &[&str]) -> TemplateStep {
        TemplateStep::new(t, args.iter().map(|s| s.to_string()).collect())
    }

    #[test]
    fn every_supported_instruction() {
        let r = p(r#"
# syntax=docker/dockerfile:1
ARG BASE=e2bdev/base
FROM ${BASE} AS build
ARG VERSION=1.2
ENV APP_HOME=/app \
    # a comment inside a continuation
    MODE=prod
ENV LEGACY spaced value
WORKDIR $APP_HOME
USER root:root
RUN apt-get update && \
    apt-get install -y curl
RUN ["echo", "hello world", "it's"]
COPY --chown=user:user --chmod=755 run.sh lib/ /app/
ADD data.txt ${APP_HOME}/data.txt
EXPOSE 8080
LABEL a=b
ENTRYPOINT ["python3", "-m"]
CMD ["http.server", "8080"]
"#)
        .unwrap();
        assert_eq!(r.from_image.as_deref(), Some("e2bdev/base"));
        assert_eq!(
            r.steps,
            vec![
                step("USER", &["root"]),
                step("WORKDIR", &["/"]),
                step("ENV", &["APP_HOME", "/app", "MODE", "prod"]),
                step("ENV", &["LEGACY", "spaced value"]),
                step("WORKDIR", &["/app"]),
                step("USER", &["root"]),
                step("RUN", &["export VERSION=1.2; apt-get update && apt-get install -y curl"]),
                step("RUN", &["export VERSION=1.2; echo 'hello world' 'it'\\''s'"]),
                step("COPY", &["run.sh", "/app/", "user", "0755"]),
                step("COPY", &["lib/", "/app/", "user", "0755"]),
                step("COPY", &["data.txt", "/app/data.txt", "", ""]),
            ]
        );
        assert_eq!(r.start_cmd.as_deref(), Some("python3 -m http.server 8080"));
    }

    #[test]
    fn build_args_override_defaults() {
        let mut a = BTreeMap::new();
        a.insert("IMG".to_string(), "base".to_string());
        let r = parse("ARG IMG=ubuntu\nFROM $IMG\nCMD sleep infinity\n", &a).unwrap();
        assert_eq!(r.from_image.as_deref(), Some("base"));
        assert_eq!(r.start_cmd.as_deref(), Some("sleep infinity"));
        assert_eq!(
            r.steps,
            vec![
                step("USER", &["root"]),
                step("WORKDIR", &["/"]),
                step("USER", &["user"]),
                step("WORKDIR", &["/home/user"])
            ]
        );
    }

    /// Docker's rule for the build (root in `/` until USER/WORKDIR, whatever the base's), E2B's for the
    /// sandboxes afterwards (`user` in /home/user unless the Dockerfile set them), each on its own.
    #[test]
    fn builds_run_as_root_until_user_and_sandboxes_default_to_user() {
        let r = p("FROM base\nRUN echo x > /built.txt\n").unwrap();
        assert_eq!(
            r.steps,
            vec![
                step("USER", &["root"]),
                step("WORKDIR", &["/"]),
                step("RUN", &["echo x > /built.txt"]),
                step("USER", &["user"]),
                step("WORKDIR", &["/home/user"])
            ]
        );
        let r = p("FROM base\nUSER nobody\nRUN id\n").unwrap();
        assert_eq!(r.steps[2..], [step("USER", &["nobody"]), step("RUN", &["id"]), step("WORKDIR", &["/home/user"])]);
        let r = p("FROM base\nWORKDIR /app\n").unwrap();
        assert_eq!(r.steps[2..], [step("WORKDIR", &["/app"]), step("USER", &["user"])]);
    }

    #[test]
    fn unsupported_things_name_their_line() {
        let cases = [
            ("FROM a\nFROM b\n", 2, "multi-stage"),
            ("FROM a\n\nHEALTHCHECK CMD true\n", 3, "HEALTHCHECK"),
            ("FROM a\nCOPY --from=x /a /b\n", 2, "--from=x"),
            ("FROM a\nADD https://x/y /y\n", 2, "URL"),
            ("FROM a\nADD x.tar.gz /y\n", 2, "archive"),
            ("RUN true\n", 1, "before FROM"),
            ("FROM a\nRUN [\"unterminated\n", 2, "JSON"),
            ("FROM a\nRUN --mount=type=cache,target=/x true\n", 2, "--mount"),
            ("FROM a\nCOPY a b c\n", 2, "ending in /"),
            ("FROM a\nRUN cat <<EOF\n", 2, "heredoc"),
            ("# only a comment\n", 1, "no FROM"),
        ];
        for (text, line, needle) in cases {
            let e = p(text).unwrap_err();
            assert_eq!(e.line, line, "{text:?}: {e}");
            assert!(e.to_string().contains(needle), "{text:?}: {e}");
            assert!(e.to_string().starts_with(&format!("Dockerfile line {line}:")));
        }
    }

    #[test]
    fn continuation_line_numbers_point_at_the_start() {
        let e = p("FROM a\nRUN echo \\\n  one \\\n  two\nSTOPSIGNAL 9\n").unwrap_err();
        assert_eq!(e.line, 5);
        let r = p("FROM a\nRUN echo \\\n  one \\\n  two\n").unwrap();
        assert_eq!(r.steps[2], step("RUN", &["echo one two"]));
    }

    #[test]
    fn substitution_rules() {
        let mut v = BTreeMap::new();
        v.insert("A".to_string(), "x".to_string());
        assert_eq!(substitute("$A/${A}/${B:-d}/\\$A/$", &v), "x/x/d/$A/$");
        assert_eq!(shell_quote("a b"), "'a b'");
        assert_eq!(shell_quote("/usr/bin"), "/usr/bin");
    }
}
