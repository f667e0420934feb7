//! Where a build's base filesystem comes from, and how the config rewrites image references to local sources.
//!
//! A base is written as one string (a recipe's `fromImage`, a Dockerfile's `FROM`, or a rewrite target):
//!
//! | form | source |
//! |---|---|
//! | `template:<name>` | a local template |
//! | `oci-archive:<path>` | an OCI image layout, as a tar file or a directory (air-gapped hosts) |
//! | `rootfs:<path>` | a root filesystem tarball (`.tar`, `.tar.gz`) |
//! | `bootstrap:<distro>:<suite>[:<pkg>,…]` | a Debian/Ubuntu bootstrap from the distribution's package mirror, with packages beyond the default set |
//! | anything else | an OCI registry reference, `[host[:port]/]repo[:tag][@digest]` (Docker Hub defaults) |
//!
//! Rewrites map a reference to another base string before it is parsed: an exact reference (`e2bdev/base`
//! → `template:base`), or a registry host to a mirror (`docker.io` → `127.0.0.1:5000`).

use std::collections::BTreeMap;
use std::path::PathBuf;

pub const DOCKER_HUB: &str = "docker.io";

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SourceError {
    #[error("invalid image reference {0:?}: {1}")]
    InvalidReference(String, &'static str),
    #[error("image rewrites loop at {0:?}")]
    RewriteLoop(String),
}

/// A registry image reference, normalized (`ubuntu` → `docker.io/library/ubuntu:latest`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageRef {
    pub registry: String,
    pub repository: String,
    pub tag: Option<String>,
    pub digest: Option<String>,
}

impl ImageRef {
    pub fn parse(raw: &str) -> Result<ImageRef, SourceError> {
        let bad = |why| SourceError::InvalidReference(raw.to_string(), why);
        if raw.is_empty() || raw.chars().any(|c| c.is_whitespace()) {
            return Err(bad("empty or contains whitespace"));
        }
        let (rest, digest) = match raw.split_once('@') {
            Some((r, d)) if d.starts_with("sha256:") && d.len() == 71 => (r, Some(d.to_string())),
            Some(_) => return Err(bad("a digest must be sha256:<64 hex>")),
            None => (raw, None),
        };
        // The first component is a registry host when it has a dot or a port, or is `localhost`.
        let (registry, path) = match rest.split_once('/') {
            Some((first, path)) if first.contains('.') || first.contains(':') || first == "localhost" => {
                (first.to_string(), path.to_string())
            }
            _ => (DOCKER_HUB.to_string(), rest.to_string()),
        };
        let (repository, tag) = match path.rsplit_once(':') {
            Some((repo, tag)) if !tag.contains('/') => (repo.to_string(), Some(tag.to_string())),
            _ => (path, None),
        };
        if repository.is_empty()
            || !repository.split('/').all(|c| {
                !c.is_empty()
                    && c.chars().all(|ch| ch.is_ascii_lowercase() || ch.is_ascii_digit() || "._-".contains(ch))
            })
        {
            return Err(bad("the repository must be lowercase [a-z0-9._-] components"));
        }
        if tag.as_deref().is_some_and(|t| t.is_empty() || t.len() > 128) {
            return Err(bad("a tag is 1-128 characters"));
        }
        let repository = if registry == DOCKER_HUB && !repository.contains('/') {
            format!("library/{repository}")
        } else {
            repository
        };
        let tag = if tag.is_none() && digest.is_none() { Some("latest".to_string()) } else { tag };
        Ok(ImageRef { registry, repository, tag, digest })
    }

    /// The forms a user may have written this reference in, most specific first (rewrite keys match any).
    fn spellings(&self) -> Vec<String> {
        let mut out = vec![self.to_string()];
        let short_repo = self.repository.strip_prefix("library/").filter(|_| self.registry == DOCKER_HUB);
        let mut add = |s: String| {
            if !out.contains(&s) {
                out.push(s);
            }
        };
        let suffix = match (&self.tag, &self.digest) {
            (_, Some(d)) => format!("@{d}"),
            (Some(t), None) => format!(":{t}"),
            (None, None) => String::new(),
        };
        for repo in [Some(self.repository.as_str()), short_repo].into_iter().flatten() {
            if self.registry == DOCKER_HUB {
                add(format!("{repo}{suffix}"));
                if self.tag.as_deref() == Some("latest") && self.digest.is_none() {
                    add(repo.to_string());
                }
            }
            add(format!("{}/{repo}{suffix}", self.registry));
            if self.tag.as_deref() == Some("latest") && self.digest.is_none() {
                add(format!("{}/{repo}", self.registry));
            }
        }
        out
    }
}

impl std::fmt::Display for ImageRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.registry, self.repository)?;
        if let Some(t) = &self.tag {
            write!(f, ":{t}")?;
        }
        if let Some(d) = &self.digest {
            write!(f, "@{d}")?;
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Distro {
    Debian,
    Ubuntu,
}

/// Who wrote a host path: the caller (restricted to `[templates] host_source_dirs`) or the administrator's config
/// (an `image_rewrites` target, trusted).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    Caller,
    Config,
}

/// A base read from a host path (`oci-archive:`, `rootfs:`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostSource {
    pub path: PathBuf,
    pub origin: Origin,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BaseSource {
    Template(String),
    Registry(ImageRef),
    OciArchive(HostSource),
    RootfsTarball(HostSource),
    /// `packages`: installed on top of the bootstrap's default set (sorted, no duplicates).
    Bootstrap {
        distro: Distro,
        suite: String,
        packages: Vec<String>,
    },
}

/// Image reference rewrites from the config: exact references and registry hosts.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Rewrites {
    /// Key: an image reference in any spelling the user may write (`e2bdev/base`, `debian:bookworm`), or a
    /// registry host (`docker.io`, `ghcr.io`). Value: a base string (see the module doc) or, for a host key,
    /// the mirror host.
    pub map: BTreeMap<String, String>,
}

impl Rewrites {
    /// SoulBox's defaults: `e2bdev/base` (what E2B's `from_base_image()` asks for) is the local `base` template.
    pub fn with_defaults() -> Rewrites {
        let mut map = BTreeMap::new();
        map.insert("e2bdev/base".to_string(), "template:base".to_string());
        Rewrites { map }
    }

    /// Parses `raw` after applying rewrites (a rewrite target may itself be rewritten, up to a small depth). A
    /// host path in `raw` itself is the caller's ([`Origin::Caller`]); one reached through a rewrite is the
    /// config's ([`Origin::Config`]): rewrite keys and targets are only ever written by the administrator.
    pub fn resolve(&self, raw: &str) -> Result<BaseSource, SourceError> {
        let mut current = raw.trim().to_string();
        let mut origin = Origin::Caller;
        for _ in 0..8 {
            if let Some(source) = parse_scheme(&current, origin)? {
                return Ok(source);
            }
            let image = ImageRef::parse(&current)?;
            if let Some(target) = image.spellings().iter().find_map(|s| self.map.get(s)) {
                current = target.clone();
                origin = Origin::Config;
                continue;
            }
            if let Some(mirror) = self.map.get(&image.registry) {
                return Ok(BaseSource::Registry(ImageRef { registry: mirror.clone(), ..image }));
            }
            return Ok(BaseSource::Registry(image));
        }
        Err(SourceError::RewriteLoop(raw.to_string()))
    }
}

fn parse_scheme(raw: &str, origin: Origin) -> Result<Option<BaseSource>, SourceError> {
    let bad = |why| SourceError::InvalidReference(raw.to_string(), why);
    let Some((scheme, rest)) = raw.split_once(':') else { return Ok(None) };
    let source = match scheme {
        "template" => {
            let name = rest.strip_suffix(":default").unwrap_or(rest);
            if name.is_empty() {
                return Err(bad("template: needs a template name"));
            }
            BaseSource::Template(name.to_string())
        }
        "oci-archive" | "rootfs" => {
            if !rest.starts_with('/') {
                return Err(bad("a local image path must be absolute"));
            }
            let host = HostSource { path: PathBuf::from(rest), origin };
            if scheme == "rootfs" { BaseSource::RootfsTarball(host) } else { BaseSource::OciArchive(host) }
        }
        "bootstrap" => {
            let (distro, rest) = rest.split_once(':').ok_or_else(|| bad("bootstrap:<debian|ubuntu>:<suite>"))?;
            let distro = match distro {
                "debian" => Distro::Debian,
                "ubuntu" => Distro::Ubuntu,
                _ => return Err(bad("bootstrap supports debian and ubuntu")),
            };
            let (suite, packages) = rest.split_once(':').unwrap_or((rest, ""));
            if suite.is_empty() || !suite.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') {
                return Err(bad("a suite name is [a-z0-9-]"));
            }
            let mut packages: Vec<String> = packages.split(',').filter(|p| !p.is_empty()).map(str::to_string).collect();
            // Debian policy's package names; nothing else may reach mmdebstrap's --include.
            let valid = |p: &String| {
                p.len() >= 2
                    && p.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
                    && p.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "+-.".contains(c))
            };
            if !packages.iter().all(valid) {
                return Err(bad("bootstrap packages are Debian package names, comma-separated"));
            }
            packages.sort();
            packages.dedup();
            BaseSource::Bootstrap { distro, suite: suite.to_string(), packages }
        }
        _ => return Ok(None),
    };
    Ok(Some(source))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reg(s: &str) -> BaseSource {
        BaseSource::Registry(ImageRef::parse(s).unwrap())
    }

    #[test]
    fn references_normalize_like_docker() {
        let r = ImageRef::parse("ubuntu").unwrap();
        assert_eq!(r.to_string(), "docker.io/library/ubuntu:latest");
        let r = ImageRef::parse("127.0.0.1:5000/test/img:1").unwrap();
        assert_eq!(
            (r.registry.as_str(), r.repository.as_str(), r.tag.as_deref()),
            ("127.0.0.1:5000", "test/img", Some("1"))
        );
        let d = format!("sha256:{}", "a".repeat(64));
        let r = ImageRef::parse(&format!("ghcr.io/o/r@{d}")).unwrap();
        assert_eq!((r.tag, r.digest), (None, Some(d)));
        assert!(ImageRef::parse("Bad/Name").is_err());
        assert!(ImageRef::parse("x@sha256:short").is_err());
        assert!(ImageRef::parse("").is_err());
    }

    #[test]
    fn schemes_and_rewrites() {
        let mut rw = Rewrites::with_defaults();
        rw.map.insert("debian:bookworm".into(), "bootstrap:debian:bookworm".into());
        rw.map.insert("ghcr.io".into(), "127.0.0.1:5000".into());
        rw.map.insert("alias/of-base".into(), "e2bdev/base".into());
        for spelling in ["e2bdev/base", "e2bdev/base:latest", "docker.io/e2bdev/base", "alias/of-base"] {
            assert_eq!(rw.resolve(spelling).unwrap(), BaseSource::Template("base".into()), "{spelling}");
        }
        assert_eq!(
            rw.resolve("docker.io/library/debian:bookworm").unwrap(),
            BaseSource::Bootstrap { distro: Distro::Debian, suite: "bookworm".into(), packages: vec![] }
        );
        assert_eq!(
            rw.resolve("bootstrap:debian:bookworm:npm,g++,npm,gh").unwrap(),
            BaseSource::Bootstrap {
                distro: Distro::Debian,
                suite: "bookworm".into(),
                packages: vec!["g++".into(), "gh".into(), "npm".into()]
            }
        );
        for bad in
            ["bootstrap:debian:bookworm:--option", "bootstrap:debian:bookworm:a b", "bootstrap:debian:bookworm:Pkg"]
        {
            assert!(rw.resolve(bad).is_err(), "{bad}");
        }
        assert_eq!(rw.resolve("ghcr.io/o/r:2").unwrap(), reg("127.0.0.1:5000/o/r:2"));
        assert_eq!(rw.resolve("debian:trixie").unwrap(), reg("debian:trixie"));
        assert_eq!(rw.resolve("template:mine:default").unwrap(), BaseSource::Template("mine".into()));
        let caller = |p: &str| HostSource { path: p.into(), origin: Origin::Caller };
        assert_eq!(rw.resolve("rootfs:/srv/r.tar.gz").unwrap(), BaseSource::RootfsTarball(caller("/srv/r.tar.gz")));
        // A host path reached through the config's rewrites is the administrator's, even two hops away.
        rw.map.insert("python:3.12".into(), "oci-archive:/srv/py.tar".into());
        rw.map.insert("py".into(), "python:3.12".into());
        let config = HostSource { path: "/srv/py.tar".into(), origin: Origin::Config };
        assert_eq!(rw.resolve("py").unwrap(), BaseSource::OciArchive(config.clone()));
        assert_eq!(rw.resolve("docker.io/library/python:3.12").unwrap(), BaseSource::OciArchive(config));
        assert_eq!(rw.resolve("oci-archive:/srv/py.tar").unwrap(), BaseSource::OciArchive(caller("/srv/py.tar")));
        assert!(rw.resolve("oci-archive:relative.tar").is_err());
        assert!(rw.resolve("bootstrap:arch:latest").is_err());
        rw.map.insert("a/x".into(), "a/y".into());
        rw.map.insert("a/y".into(), "a/x".into());
        assert_eq!(rw.resolve("a/x"), Err(SourceError::RewriteLoop("a/x".into())));
    }
}
