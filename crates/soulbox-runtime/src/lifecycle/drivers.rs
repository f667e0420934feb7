//! The OCI runtimes one runtime instance drives: its default (`runtime_bin`) and the extra ones templates may
//! ask for by name (`RuntimeConfig::extra_runtimes`, `TemplateMeta::runtime`). A sandbox's runtime follows from
//! its record (its spec's `runtime`, else its template's), so every later verb — pause, stop, delete, reconcile
//! after a crash — finds the same one without anything new being recorded.
use crate::config::RuntimeConfig;
use crate::driver::Driver;
use crate::error::{Error, Result};
use crate::record::Record;
use std::path::{Path, PathBuf};

pub(crate) struct Drivers {
    default: Driver,
    /// (name, driver, state root) of each extra runtime.
    extra: Vec<(String, Driver, PathBuf)>,
}

impl Drivers {
    /// Checks every configured runtime binary (`--version` names its kind) and gives each its state root.
    pub async fn open(cfg: &RuntimeConfig) -> Result<Drivers> {
        let kind = crate::driver::check_runtime_binary(&cfg.runtime_bin).await?;
        let default = Driver::with_kind(&cfg.runtime_bin, kind, &cfg.runtime_args, &cfg.runtime_root());
        let mut extra: Vec<(String, Driver, PathBuf)> = Vec::new();
        for bin in &cfg.extra_runtimes {
            let kind = crate::driver::check_runtime_binary(bin).await?;
            let name = kind.name(bin);
            if name == default.kind().name(default.bin()) || extra.iter().any(|(n, _, _)| *n == name) {
                return Err(Error::Invalid(format!("the runtime {name:?} ({bin}) is configured twice")));
            }
            if kind.supports_user_namespaces() && !default.kind().supports_user_namespaces() {
                // Its sandboxes would run without our user namespaces: root inside would be root on the host.
                return Err(Error::Invalid(format!(
                    "the extra runtime {name:?} needs user namespaces, which the default runtime {:?} does not use: \
                     make {name:?} the default and the other an extra runtime",
                    default.kind().name(default.bin())
                )));
            }
            let root = cfg.runtime_root_of(&name);
            std::fs::create_dir_all(&root).map_err(|source| Error::Io { path: root.clone(), source })?;
            crate::perms::set_mode(&root, 0o700)?;
            extra.push((name, Driver::with_kind(bin, kind, &[], &root), root));
        }
        Ok(Drivers { default, extra })
    }

    pub fn default(&self) -> &Driver {
        &self.default
    }

    /// Every runtime, the default first.
    pub fn all(&self) -> impl Iterator<Item = &Driver> {
        std::iter::once(&self.default).chain(self.extra.iter().map(|(_, d, _)| d))
    }

    /// Every runtime's state root (`--root`), the default's first.
    pub fn roots(&self, cfg: &RuntimeConfig) -> Vec<PathBuf> {
        std::iter::once(cfg.runtime_root()).chain(self.extra.iter().map(|(_, _, r)| r.clone())).collect()
    }

    /// The runtime called `name` (`runc`, `runsc`); `None`: the default.
    pub fn named(&self, name: Option<&str>) -> Result<&Driver> {
        let Some(name) = name else { return Ok(&self.default) };
        if self.default.kind().name(self.default.bin()) == name {
            return Ok(&self.default);
        }
        self.extra.iter().find(|(n, _, _)| n == name).map(|(_, d, _)| d).ok_or_else(|| {
            let have: Vec<String> = self.all().map(|d| d.kind().name(d.bin())).collect();
            Error::Invalid(format!(
                "the runtime {name:?} is not available on this node (it runs: {}; see extra_runtimes)",
                have.join(", ")
            ))
        })
    }

    /// The runtime a sandbox runs on: its spec's choice, else its template's, else the default.
    pub fn for_record(&self, rec: &Record) -> Result<&Driver> {
        let chosen = rec.spec.as_ref().and_then(|s| s.runtime.as_deref());
        self.named(chosen.or(rec.template.as_ref().and_then(|t| t.runtime.as_deref())))
    }

    /// The runtimes that may hold a container of the sandbox in `dir`: the one its record names, or all of them
    /// when the record is missing or unreadable (a crash mid-create).
    pub fn candidates(&self, dir: &Path) -> Vec<&Driver> {
        match Record::load(dir).ok().as_ref().map(|rec| self.for_record(rec)) {
            Some(Ok(d)) => vec![d],
            _ => self.all().collect(),
        }
    }
}
