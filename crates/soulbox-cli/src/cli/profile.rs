//! Named connection profiles, like docker contexts: `~/.config/soulbox/profiles.toml` holds API URL, key and
//! domain per name; `--profile NAME` (or `SOULBOX_PROFILE`) picks one, else the file's `current`. The
//! environment (`SOULBOX_*`/`E2B_*`) overrides a profile's values and flags override both.

use std::collections::BTreeMap;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::PathBuf;

use clap::Subcommand;
use serde::{Deserialize, Serialize};
use soulbox::Error;

use super::output::{print_json, table};

#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Profiles {
    /// The profile used when neither `--profile` nor `SOULBOX_PROFILE` names one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current: Option<String>,
    #[serde(default)]
    pub profiles: BTreeMap<String, Profile>,
}

#[derive(Debug, Default, Clone, Serialize, Deserialize)]
pub struct Profile {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_key: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub domain: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sandbox_url: Option<String>,
}

/// `$XDG_CONFIG_HOME/soulbox/profiles.toml`, else `~/.config/soulbox/profiles.toml`.
pub fn path() -> PathBuf {
    let base = std::env::var_os("XDG_CONFIG_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".config"));
    base.join("soulbox").join("profiles.toml")
}

pub fn load() -> soulbox::Result<Profiles> {
    let p = path();
    match std::fs::read_to_string(&p) {
        Ok(text) => toml::from_str(&text).map_err(|e| Error::Invalid(format!("{}: {e}", p.display()))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Profiles::default()),
        Err(e) => Err(Error::Other(format!("{}: {e}", p.display()))),
    }
}

/// Written whole to a temporary file and renamed, owner-only: the file holds API keys.
fn save(profiles: &Profiles) -> soulbox::Result<()> {
    let p = path();
    let io = |e: std::io::Error| Error::Other(format!("{}: {e}", p.display()));
    if let Some(dir) = p.parent() {
        std::fs::create_dir_all(dir).map_err(io)?;
    }
    let text = toml::to_string_pretty(profiles).map_err(|e| Error::Other(e.to_string()))?;
    let tmp = p.with_extension("toml.tmp");
    let mut f =
        std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(&tmp).map_err(io)?;
    f.set_permissions(std::fs::Permissions::from_mode(0o600)).map_err(io)?;
    f.write_all(text.as_bytes()).map_err(io)?;
    f.sync_all().map_err(io)?;
    std::fs::rename(&tmp, &p).map_err(io)
}

/// The profile in effect: the one named (flag or `SOULBOX_PROFILE`), else `current`, else none.
pub fn selected(named: Option<&str>) -> soulbox::Result<Option<Profile>> {
    let env = std::env::var("SOULBOX_PROFILE").ok().filter(|v| !v.is_empty());
    let name = named.map(str::to_owned).or(env);
    let profiles = load()?;
    match name.or(profiles.current.clone()) {
        Some(n) => {
            profiles.profiles.get(&n).cloned().map(Some).ok_or_else(|| {
                Error::NotFound(format!("no profile {n:?} in {} (soulbox profile list)", path().display()))
            })
        }
        None => Ok(None),
    }
}

#[derive(Subcommand, Debug)]
pub enum ProfileCommand {
    /// Add or replace a profile.
    #[command(
        after_help = "Example:\n  soulbox profile add prod --api-url https://api.sb.example.com --domain sb.example.com --api-key \"$KEY\" --use"
    )]
    Add {
        name: String,
        #[arg(long)]
        api_url: Option<String>,
        #[arg(long)]
        api_key: Option<String>,
        /// Domain of sandbox URLs (`<port>-<id>.<domain>`).
        #[arg(long)]
        domain: Option<String>,
        #[arg(long)]
        sandbox_url: Option<String>,
        /// Make it the current profile (the first profile added always is).
        #[arg(long = "use")]
        make_current: bool,
    },
    /// List profiles (keys masked); `*` marks the current one.
    List {
        #[arg(long)]
        json: bool,
    },
    /// Make a profile the current one.
    Use { name: String },
    /// Remove a profile.
    Remove { name: String },
}

fn mask(key: &Option<String>) -> String {
    match key {
        Some(k) if k.chars().count() > 8 => format!("{}…", k.chars().take(8).collect::<String>()),
        Some(_) => "set".into(),
        None => "-".into(),
    }
}

pub fn run(cmd: ProfileCommand) -> soulbox::Result<i32> {
    let mut profiles = load()?;
    match cmd {
        ProfileCommand::Add { name, api_url, api_key, domain, sandbox_url, make_current } => {
            if name.is_empty() {
                return Err(Error::Invalid("a profile needs a name".into()));
            }
            profiles.profiles.insert(name.clone(), Profile { api_url, api_key, domain, sandbox_url });
            if make_current || profiles.current.is_none() {
                profiles.current = Some(name.clone());
            }
            save(&profiles)?;
            eprintln!("profile {name} saved in {}", path().display());
        }
        ProfileCommand::List { json } => {
            let current = profiles.current.clone().unwrap_or_default();
            if json {
                let list: Vec<_> = profiles
                    .profiles
                    .iter()
                    .map(|(n, p)| {
                        serde_json::json!({
                            "name": n, "current": *n == current, "apiUrl": p.api_url, "domain": p.domain,
                            "sandboxUrl": p.sandbox_url, "apiKey": mask(&p.api_key),
                        })
                    })
                    .collect();
                print_json(&list);
            } else {
                let rows = profiles
                    .profiles
                    .iter()
                    .map(|(n, p)| {
                        vec![
                            if *n == current { format!("{n} *") } else { n.clone() },
                            p.api_url.clone().unwrap_or_else(|| "-".into()),
                            p.domain.clone().unwrap_or_else(|| "-".into()),
                            mask(&p.api_key),
                        ]
                    })
                    .collect();
                table(&["NAME", "API URL", "DOMAIN", "API KEY"], rows);
            }
        }
        ProfileCommand::Use { name } => {
            if !profiles.profiles.contains_key(&name) {
                return Err(Error::NotFound(format!("no profile {name:?}")));
            }
            profiles.current = Some(name.clone());
            save(&profiles)?;
            eprintln!("using profile {name}");
        }
        ProfileCommand::Remove { name } => {
            if profiles.profiles.remove(&name).is_none() {
                return Err(Error::NotFound(format!("no profile {name:?}")));
            }
            if profiles.current.as_deref() == Some(name.as_str()) {
                profiles.current = None;
            }
            save(&profiles)?;
            eprintln!("removed profile {name}");
        }
    }
    Ok(0)
}
