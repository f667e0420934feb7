//! The tar side of `soulbox cp -r`: packing a local directory, and unpacking what a sandbox sent — which a
//! hostile sandbox controls entirely (its `tar` can be replaced), so unpacking trusts nothing in the archive:
//! absolute paths and `..` abort the copy, no entry is written through a symlink (links are made last, and only
//! those that stay inside the destination), hard links and device files are skipped, set-id bits are dropped.

use std::io::{Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

/// What an unpack wrote, and what it left out (shown to the user).
#[derive(Debug, Default)]
pub struct Unpacked {
    pub files: u64,
    pub dirs: u64,
    pub links: u64,
    pub bytes: u64,
    pub skipped: Vec<String>,
}

fn refuse(path: &str, why: &str) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, format!("refusing archive entry {path:?}: {why}"))
}

/// Packs directory `src` as entries under `top/`; symlinks are stored as links, never followed.
pub fn pack(src: &Path, top: &str, out: impl Write) -> std::io::Result<()> {
    let mut b = tar::Builder::new(out);
    b.follow_symlinks(false);
    b.mode(tar::HeaderMode::Complete);
    b.append_dir_all(top, src)?;
    b.into_inner()?.flush()
}

/// The entry's path as plain names (no root, no `..`), with the first one dropped when `strip_top`.
fn relative(raw: &Path, shown: &str, strip_top: bool) -> std::io::Result<PathBuf> {
    let mut out = PathBuf::new();
    for c in raw.components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::CurDir => {}
            Component::RootDir | Component::Prefix(_) => return Err(refuse(shown, "absolute path")),
            Component::ParentDir => return Err(refuse(shown, "`..` in the path")),
        }
    }
    if strip_top {
        out = out.components().skip(1).collect();
    }
    Ok(out)
}

/// Creates `dst/rel` as directories, refusing to pass through anything but real directories (a symlink planted
/// by this or an earlier archive must not lead out of `dst`).
fn safe_dir(dst: &Path, rel: &Path, shown: &str) -> std::io::Result<PathBuf> {
    let mut at = dst.to_path_buf();
    for c in rel.components() {
        at.push(c);
        match std::fs::symlink_metadata(&at) {
            Ok(m) if m.is_dir() => {}
            Ok(m) if m.file_type().is_symlink() => return Err(refuse(shown, "its path goes through a symlink")),
            Ok(_) => return Err(refuse(shown, "its path goes through a file")),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => std::fs::create_dir(&at)?,
            Err(e) => return Err(e),
        }
    }
    Ok(at)
}

/// Whether a link at `rel` pointing to `target` stays inside the destination, judged by its text alone. That
/// is sound only when every name the text walks through is a real directory, so `..` may only lead the
/// target: after a name, which may be another link of the archive (`a -> .`, then `b -> a/..` climbs out of the
/// destination although its text never leaves it), `..` is refused. The leading `..`s walk the link's own
/// parents, which [`safe_dir`] made as real directories.
fn link_stays_inside(rel: &Path, target: &Path) -> bool {
    if target.is_absolute() {
        return false;
    }
    let mut depth = rel.components().count() as i64 - 1;
    let mut named = false;
    for c in target.components() {
        match c {
            Component::Normal(_) => {
                named = true;
                depth += 1;
            }
            Component::ParentDir if !named => depth -= 1,
            Component::CurDir => {}
            _ => return false,
        }
        if depth < 0 {
            return false;
        }
    }
    true
}

/// Unpacks `input` into the existing directory `dst`.
pub fn unpack(input: impl Read, dst: &Path, strip_top: bool) -> std::io::Result<Unpacked> {
    let mut done = Unpacked::default();
    let mut links = Vec::new();
    let mut archive = tar::Archive::new(input);
    for entry in archive.entries()? {
        let mut entry = entry?;
        let raw = entry.path()?.into_owned();
        let shown = raw.to_string_lossy().into_owned();
        let rel = relative(&raw, &shown, strip_top)?;
        let kind = entry.header().entry_type();
        if rel.as_os_str().is_empty() {
            continue; // the top directory itself: `dst` stands for it
        }
        let parent = rel.parent().unwrap_or(Path::new(""));
        match kind {
            tar::EntryType::Directory => {
                safe_dir(dst, &rel, &shown)?;
                done.dirs += 1;
            }
            tar::EntryType::Regular | tar::EntryType::Continuous | tar::EntryType::GNUSparse => {
                let path = safe_dir(dst, parent, &shown)?.join(rel.file_name().unwrap_or_default());
                // O_NOFOLLOW: an existing symlink at the name is an error, never a redirect.
                let mut f = std::fs::OpenOptions::new()
                    .write(true)
                    .create(true)
                    .truncate(true)
                    .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
                    .mode(0o600)
                    .open(&path)
                    .map_err(|e| std::io::Error::new(e.kind(), format!("{}: {e}", path.display())))?;
                done.bytes += std::io::copy(&mut entry, &mut f)?;
                let mode = entry.header().mode().unwrap_or(0o644) & 0o777;
                f.set_permissions(std::fs::Permissions::from_mode(mode))?;
                done.files += 1;
            }
            tar::EntryType::Symlink => match entry.link_name()? {
                Some(target) if link_stays_inside(&rel, &target) => links.push((rel, target.into_owned(), shown)),
                Some(target) => done.skipped.push(format!("{shown} (symlink to {} leaves the copy)", target.display())),
                None => done.skipped.push(format!("{shown} (symlink without a target)")),
            },
            other => done.skipped.push(format!("{shown} ({other:?} entries are not copied)")),
        }
    }
    // Last, so no entry of this archive can be written through them.
    for (rel, target, shown) in links {
        let parent = safe_dir(dst, rel.parent().unwrap_or(Path::new("")), &shown)?;
        std::os::unix::fs::symlink(&target, parent.join(rel.file_name().unwrap_or_default()))?;
        done.links += 1;
    }
    Ok(done)
}

#[cfg(test)]
mod tests {
    use super::*;
    use soulbox_layer::testing::Tar;

    fn tmp(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("soulbox-archive-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(d.join("dst")).unwrap();
        std::fs::create_dir_all(d.join("outside")).unwrap();
        d
    }

    #[test]
    fn round_trip_keeps_names_with_spaces_links_and_modes() {
        let d = tmp("rt");
        let src = d.join("my dir");
        std::fs::create_dir_all(src.join("sub dir")).unwrap();
        std::fs::write(src.join("sub dir/a file.txt"), "hello").unwrap();
        std::fs::write(src.join("run.sh"), "#!/bin/sh").unwrap();
        std::fs::set_permissions(src.join("run.sh"), std::fs::Permissions::from_mode(0o755)).unwrap();
        std::os::unix::fs::symlink("sub dir/a file.txt", src.join("link")).unwrap();
        let mut buf = Vec::new();
        pack(&src, "my dir", &mut buf).unwrap();
        let got = unpack(&buf[..], &d.join("dst"), true).unwrap();
        assert_eq!((got.files, got.dirs, got.links), (2, 1, 1), "{got:?}");
        assert_eq!(std::fs::read_to_string(d.join("dst/link")).unwrap(), "hello");
        let mode = std::fs::metadata(d.join("dst/run.sh")).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o755);
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn hostile_archives_stay_inside_the_destination() {
        let d = tmp("hostile");
        let dst = d.join("dst");
        for (name, why) in [("top/../../escape.txt", "`..`"), ("/tmp/soulbox-abs-test.txt", "absolute")] {
            let buf = Tar::new().file(name, b"pwned").bytes();
            let err = unpack(&buf[..], &dst, false).unwrap_err().to_string();
            assert!(err.contains("refusing") && err.contains(why), "{err}");
        }
        assert!(!d.join("escape.txt").exists() && !Path::new("/tmp/soulbox-abs-test.txt").exists());

        // A link out of the destination, then a file written "through" it: the link is never made, so the file
        // lands in a real directory inside.
        let outside = d.join("outside");
        let buf = Tar::new()
            .symlink("link", outside.to_str().unwrap())
            .file("link/pwned", b"pwned")
            .symlink("rel", "../outside")
            .hardlink("hard", "/etc/passwd")
            .bytes();
        let got = unpack(&buf[..], &dst, false).unwrap();
        assert_eq!(got.skipped.len(), 3, "{got:?}");
        assert!(std::fs::read_dir(&outside).unwrap().next().is_none(), "nothing written outside");
        assert!(!std::fs::symlink_metadata(dst.join("link")).unwrap().file_type().is_symlink());
        assert!(!dst.join("hard").exists() && !dst.join("rel").exists());

        // Links whose text stays inside but which climb out through another link of the archive.
        let chained = d.join("chained");
        std::fs::create_dir_all(&chained).unwrap();
        let buf = Tar::new().symlink("dot", ".").symlink("up", "dot/..").symlink("deep/up2", "../dot/dot/..").bytes();
        let got = unpack(&buf[..], &chained, false).unwrap();
        assert_eq!((got.links, got.skipped.len()), (1, 2), "only `dot` is made: {got:?}");
        assert!(!chained.join("up").exists() && std::fs::symlink_metadata(chained.join("deep/up2")).is_err());

        // A symlink already in the destination is never followed either.
        std::os::unix::fs::symlink(&outside, dst.join("planted")).unwrap();
        let buf = Tar::new().file("planted/x", b"pwned").bytes();
        assert!(unpack(&buf[..], &dst, false).unwrap_err().to_string().contains("symlink"));
        let buf = Tar::new().file("planted", b"pwned").bytes();
        assert!(unpack(&buf[..], &dst, false).is_err(), "O_NOFOLLOW on the file itself");
        assert!(std::fs::read_dir(&outside).unwrap().next().is_none(), "nothing written outside");
        std::fs::remove_dir_all(&d).unwrap();
    }
}
