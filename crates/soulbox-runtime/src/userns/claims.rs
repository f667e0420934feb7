//! Host-wide claims of user namespace id ranges (`userns.rs` module docs).
//!
//! One file per claimed range in `RuntimeConfig::userns_claims_dir`, named by the range's first host id in
//! hex, written under a host-wide flock (`.lock`):
//!
//! - **a sandbox's range** (per-sandbox mode): one line, the sandbox dir holding it. Stale (free again) once
//!   that dir no longer has a `userns.json` naming the range.
//! - **the shared range** (shared mode): `shared`, then one line per `sandboxes/` dir of the runtime
//!   instances using it. Stale once none of those dirs exists: a range is never handed to one sandbox of a
//!   per-sandbox runtime while any runtime on the host may run sandboxes of the shared mode in it.
use super::{IdRange, RANGE_SIZE, create_private_dir, validate};
use crate::error::{Error, IoCtx, Result};
use crate::util;
use std::collections::BTreeSet;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

const SHARED_MARK: &str = "shared";

/// What a claim file says.
#[derive(Debug, PartialEq, Eq)]
enum Claim {
    /// Held by one sandbox (per-sandbox mode).
    Sandbox(PathBuf),
    /// The shared range of the runtimes whose `sandboxes/` dirs are listed.
    Shared(Vec<PathBuf>),
}

impl Claim {
    fn parse(text: &str) -> Claim {
        let mut lines = text.lines();
        match lines.next() {
            Some(SHARED_MARK) => Claim::Shared(lines.filter(|l| !l.is_empty()).map(PathBuf::from).collect()),
            first => Claim::Sandbox(PathBuf::from(first.unwrap_or_default())),
        }
    }

    fn render(&self) -> String {
        match self {
            Claim::Sandbox(dir) => format!("{}\n", dir.display()),
            Claim::Shared(dirs) => {
                let mut s = format!("{SHARED_MARK}\n");
                for d in dirs {
                    s.push_str(&format!("{}\n", d.display()));
                }
                s
            }
        }
    }

    /// Who holds `base` through this claim now: None when the claim is stale.
    fn holder(self, base: u32) -> Option<PathBuf> {
        match self {
            Claim::Sandbox(dir) => (IdRange::load(&dir).map(|r| r.host_base) == Some(base)).then_some(dir),
            Claim::Shared(dirs) => dirs.into_iter().find(|d| d.is_dir()),
        }
    }
}

fn claim_file(claims_dir: &Path, base: u32) -> PathBuf {
    claims_dir.join(format!("{base:08x}"))
}

fn read_claim(claims_dir: &Path, base: u32) -> Option<Claim> {
    std::fs::read_to_string(claim_file(claims_dir, base)).ok().map(|t| Claim::parse(&t))
}

fn write_claim(claims_dir: &Path, base: u32, claim: &Claim) -> Result<()> {
    let p = claim_file(claims_dir, base);
    let tmp = p.with_extension("tmp");
    let mut f = std::fs::File::create(&tmp).ctx(&tmp)?;
    f.write_all(claim.render().as_bytes()).ctx(&tmp)?;
    drop(f);
    std::fs::rename(&tmp, &p).ctx(&p)
}

/// The host-wide lock every claim is made under.
fn host_lock(claims_dir: &Path) -> Result<std::fs::File> {
    let p = claims_dir.join(".lock");
    let f = std::fs::OpenOptions::new().create(true).truncate(false).write(true).open(&p).ctx(&p)?;
    rustix::fs::flock(&f, rustix::fs::FlockOperation::LockExclusive)
        .map_err(|e| Error::Io { path: p, source: e.into() })?;
    Ok(f)
}

/// The allocator of one runtime instance over the host-wide claims (per-sandbox mode).
pub struct IdRanges {
    base: u32,
    count: u32,
    claims_dir: PathBuf,
    /// Bases this instance holds (a cache of its claims).
    held: Mutex<BTreeSet<u32>>,
}

impl IdRanges {
    pub fn new(base: u32, count: u32, claims_dir: &Path) -> Result<IdRanges> {
        validate(base, count)?;
        create_private_dir(claims_dir)?;
        Ok(IdRanges { base, count, claims_dir: claims_dir.to_path_buf(), held: Default::default() })
    }

    /// The first range of this instance's space (the open-time probe maps it; nothing runs in it).
    pub fn first(&self) -> IdRange {
        IdRange::at(self.base)
    }

    pub fn base(&self) -> u32 {
        self.base
    }

    pub fn count(&self) -> u32 {
        self.count
    }

    pub fn held(&self) -> usize {
        self.held.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// Who holds `base` according to its claim: None (free, or a stale claim), or the sandbox dir (the
    /// `sandboxes/` dir of a runtime for the shared range).
    fn claimant(&self, base: u32) -> Option<PathBuf> {
        read_claim(&self.claims_dir, base)?.holder(base)
    }

    /// The sandbox's range: the one its `userns.json` names when that is still its own, else a
    /// new one (claimed host-wide, then recorded in the sandbox dir).
    pub fn acquire(&self, sandbox_dir: &Path) -> Result<IdRange> {
        let _lock = host_lock(&self.claims_dir)?;
        if let Some(r) = IdRange::load(sandbox_dir)
            && self.keep_locked(sandbox_dir, r)?
        {
            return Ok(r);
        }
        let mut held = self.held.lock().unwrap_or_else(|e| e.into_inner());
        for i in 0..self.count {
            let base = self.base + i * RANGE_SIZE;
            if held.contains(&base) || self.claimant(base).is_some() {
                continue;
            }
            // Claim first: a crash before `userns.json` leaves a claim naming a dir that does not
            // name the range, i.e. a stale one.
            write_claim(&self.claims_dir, base, &Claim::Sandbox(sandbox_dir.to_path_buf()))?;
            let range = IdRange::at(base);
            util::write_json(&IdRange::file(sandbox_dir), &range)?;
            held.insert(base);
            return Ok(range);
        }
        Err(Error::Invalid(format!("all {} user namespace id ranges are in use", self.count)))
    }

    /// Re-adopt a sandbox's recorded range (reconcile, start). `Ok(false)`: it is held by another
    /// sandbox now (claims were lost with a reboot); the caller's sandbox must not use it.
    pub fn keep(&self, sandbox_dir: &Path, range: IdRange) -> Result<bool> {
        let _lock = host_lock(&self.claims_dir)?;
        self.keep_locked(sandbox_dir, range)
    }

    fn keep_locked(&self, sandbox_dir: &Path, range: IdRange) -> Result<bool> {
        let in_space = !range.shared
            && range.size == RANGE_SIZE
            && range.host_base >= self.base
            && (range.host_base - self.base).is_multiple_of(RANGE_SIZE)
            && (range.host_base - self.base) / RANGE_SIZE < self.count;
        match self.claimant(range.host_base) {
            Some(dir) if dir != sandbox_dir => return Ok(false),
            Some(_) => {}
            // Outside this instance's space (configuration changed): fine while running, but a
            // new claim is only made inside the space.
            None if !in_space => return Ok(false),
            None => write_claim(&self.claims_dir, range.host_base, &Claim::Sandbox(sandbox_dir.to_path_buf()))?,
        }
        self.held.lock().unwrap_or_else(|e| e.into_inner()).insert(range.host_base);
        Ok(true)
    }

    /// Reconcile: remove stale claims naming a directory below `sandboxes_dir` (a crash between
    /// the claim and `userns.json`, or a directory removed while the runtime was down).
    pub fn collect_stale(&self, sandboxes_dir: &Path) -> Result<()> {
        let _lock = host_lock(&self.claims_dir)?;
        let entries = std::fs::read_dir(&self.claims_dir).ctx(&self.claims_dir)?;
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let Ok(base) = u32::from_str_radix(&name, 16) else {
                continue;
            };
            let Some(Claim::Sandbox(dir)) = read_claim(&self.claims_dir, base) else {
                continue;
            };
            if dir.parent() == Some(sandboxes_dir) && self.claimant(base).is_none() {
                tracing::info!(
                    base,
                    dir = %dir.display(),
                    "removing a stale user namespace range claim"
                );
                util::remove_file_idem(&e.path())?;
                self.held.lock().unwrap_or_else(|e| e.into_inner()).remove(&base);
            }
        }
        Ok(())
    }

    /// The sandbox dir is gone (or never named the range): give the range back.
    pub fn release(&self, sandbox_dir: &Path, range: IdRange) -> Result<()> {
        let _lock = host_lock(&self.claims_dir)?;
        if read_claim(&self.claims_dir, range.host_base) == Some(Claim::Sandbox(sandbox_dir.to_path_buf()))
            && IdRange::load(sandbox_dir) != Some(range)
        {
            util::remove_file_idem(&claim_file(&self.claims_dir, range.host_base))?;
        }
        self.held.lock().unwrap_or_else(|e| e.into_inner()).remove(&range.host_base);
        Ok(())
    }
}

/// The one range every sandbox of a shared-mode runtime runs in, claimed host-wide for the runtime's
/// `sandboxes/` dir (module docs).
pub struct SharedRange {
    range: IdRange,
}

impl SharedRange {
    /// Claim `[base, base + 65536)` as the shared range of the runtime whose sandboxes live in
    /// `sandboxes_dir` (several shared-mode runtimes with the same base share it). Fails while one sandbox
    /// of a per-sandbox runtime holds it.
    pub fn claim(base: u32, claims_dir: &Path, sandboxes_dir: &Path) -> Result<SharedRange> {
        validate(base, 1)?;
        create_private_dir(claims_dir)?;
        let _lock = host_lock(claims_dir)?;
        let mut dirs = match read_claim(claims_dir, base) {
            Some(Claim::Sandbox(dir)) if IdRange::load(&dir).map(|r| r.host_base) == Some(base) => {
                return Err(Error::Invalid(format!(
                    "the shared user namespace range {base:#x} (userns_base) is held by sandbox {} of a runtime in \
                     per-sandbox mode on this host: give one of the two runtimes another userns_base",
                    dir.display()
                )));
            }
            Some(Claim::Shared(dirs)) => dirs.into_iter().filter(|d| d.is_dir()).collect(),
            _ => Vec::new(),
        };
        if !dirs.iter().any(|d| d == sandboxes_dir) {
            dirs.push(sandboxes_dir.to_path_buf());
        }
        write_claim(claims_dir, base, &Claim::Shared(dirs))?;
        Ok(SharedRange { range: IdRange::shared_at(base) })
    }

    pub fn range(&self) -> IdRange {
        self.range
    }

    /// Record the shared range in the sandbox dir (before anything uses it).
    pub fn acquire(&self, sandbox_dir: &Path) -> Result<IdRange> {
        if IdRange::load(sandbox_dir) != Some(self.range) {
            util::write_json(&IdRange::file(sandbox_dir), &self.range)?;
        }
        Ok(self.range)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmp(name: &str) -> PathBuf {
        let p = std::env::temp_dir().join(format!("soulbox-userns-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        p
    }

    #[test]
    fn claims_are_host_wide_and_survive_until_the_dir_forgets_them() {
        let root = tmp("claims");
        let claims = root.join("claims");
        let (a, b) = (IdRanges::new(0x2000_0000, 3, &claims).unwrap(), IdRanges::new(0x2000_0000, 3, &claims).unwrap());
        let dirs: Vec<PathBuf> = (0..4).map(|i| root.join(format!("s{i}"))).collect();
        for d in &dirs {
            std::fs::create_dir_all(d).unwrap();
        }
        // two instances on one claims dir never hand out the same range
        let r0 = a.acquire(&dirs[0]).unwrap();
        let r1 = b.acquire(&dirs[1]).unwrap();
        let r2 = a.acquire(&dirs[2]).unwrap();
        assert_eq!(BTreeSet::from([r0.host_base, r1.host_base, r2.host_base]).len(), 3);
        assert!(b.acquire(&dirs[3]).is_err(), "space exhausted");
        // acquiring again for the same dir keeps its range
        assert_eq!(a.acquire(&dirs[0]).unwrap(), r0);
        // a stopped sandbox (dir kept) still holds its range after its instance is gone
        drop(a);
        let c = IdRanges::new(0x2000_0000, 3, &claims).unwrap();
        assert!(c.acquire(&dirs[3]).is_err(), "a range named by a sandbox dir was handed out");
        // the other instance cannot re-adopt a range another dir holds
        assert!(!c.keep(&dirs[3], r0).unwrap());
        assert!(c.keep(&dirs[0], r0).unwrap());
        // the dir goes: the range is free again
        std::fs::remove_dir_all(&dirs[0]).unwrap();
        c.release(&dirs[0], r0).unwrap();
        assert_eq!(c.acquire(&dirs[3]).unwrap(), r0);
        // a stale claim (its dir no longer names the range) is taken over
        std::fs::remove_file(IdRange::file(&dirs[2])).unwrap();
        let d4 = root.join("s4");
        std::fs::create_dir_all(&d4).unwrap();
        assert_eq!(c.acquire(&d4).unwrap(), r2);
        // a crash between the claim and userns.json: the claim is collected at reconcile, others stay
        std::fs::remove_file(IdRange::file(&d4)).unwrap();
        c.collect_stale(&root).unwrap();
        assert!(!claim_file(&claims, r2.host_base).exists(), "stale claim kept");
        assert!(claim_file(&claims, r1.host_base).exists(), "a live claim was collected");
        let _ = std::fs::remove_dir_all(&root);
    }

    #[test]
    fn the_shared_range_is_never_one_sandboxs_and_outlives_no_runtime() {
        let root = tmp("shared");
        let claims = root.join("claims");
        let base = 0x2100_0000;
        let (sandboxes_a, sandboxes_b) = (root.join("a/sandboxes"), root.join("b/sandboxes"));
        for d in [&sandboxes_a, &sandboxes_b] {
            std::fs::create_dir_all(d).unwrap();
        }
        // two shared-mode runtimes with one base agree on the range; both are listed in the claim
        let shared_a = SharedRange::claim(base, &claims, &sandboxes_a).unwrap();
        let shared_b = SharedRange::claim(base, &claims, &sandboxes_b).unwrap();
        assert_eq!(shared_a.range(), shared_b.range());
        assert!(shared_a.range().shared && shared_a.range().host_base == base);
        assert_eq!(read_claim(&claims, base), Some(Claim::Shared(vec![sandboxes_a.clone(), sandboxes_b.clone()])));
        let s1 = sandboxes_a.join("s1");
        std::fs::create_dir_all(&s1).unwrap();
        assert_eq!(shared_a.acquire(&s1).unwrap(), shared_a.range());
        assert_eq!(IdRange::load(&s1), Some(shared_a.range()));
        // a per-sandbox runtime on the same space skips it
        let per = IdRanges::new(base, 2, &claims).unwrap();
        let p1 = root.join("p1");
        std::fs::create_dir_all(&p1).unwrap();
        assert_eq!(per.acquire(&p1).unwrap().host_base, base + RANGE_SIZE);
        assert!(per.acquire(&root.join("p2")).is_err(), "the shared range was handed to one sandbox");
        // and cannot adopt it, nor does its reconcile or release touch the claim
        assert!(!per.keep(&s1, shared_a.range()).unwrap());
        per.collect_stale(&sandboxes_a).unwrap();
        per.release(&s1, shared_a.range()).unwrap();
        assert!(claim_file(&claims, base).exists(), "the shared claim was removed");
        // once no runtime dir it names exists, the range is free for one sandbox again
        std::fs::remove_dir_all(root.join("a")).unwrap();
        std::fs::remove_dir_all(root.join("b")).unwrap();
        let p2 = root.join("p2");
        std::fs::create_dir_all(&p2).unwrap();
        assert_eq!(per.acquire(&p2).unwrap().host_base, base);
        // ... and a shared-mode runtime cannot claim it while that sandbox holds it, naming it
        std::fs::create_dir_all(&sandboxes_a).unwrap();
        let err = SharedRange::claim(base, &claims, &sandboxes_a).err().expect("claimed a held range");
        assert!(err.to_string().contains("p2") && err.to_string().contains("userns_base"), "{err}");
        let _ = std::fs::remove_dir_all(&root);
    }
}
