//! The first admin key of a fresh store: printed on a terminal, otherwise written to `<data-dir>/admin-key`.
//!
//! Under systemd (or any redirect) stdout goes to a journal or log file that more people read than should hold
//! an admin key, so off a terminal only the file's path is printed. The file is created with mode 0600 and
//! `O_EXCL` from its first byte (never world-readable, not even between create and chmod) and then renamed over
//! any earlier one, so a reader sees either the old file or the whole new key.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// The file's name in the data dir.
pub const FILE_NAME: &str = "admin-key";

/// Writes `key` to `<data_dir>/admin-key` (mode 0600) and returns the path.
pub fn write(data_dir: &Path, key: &str) -> std::io::Result<PathBuf> {
    let path = data_dir.join(FILE_NAME);
    let partial = data_dir.join(format!(".{FILE_NAME}.partial"));
    // A partial file of a start that died mid-write: ours to replace (it is 0600 too).
    match std::fs::remove_file(&partial) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    let mut file = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&partial)?;
    file.write_all(format!("{key}\n").as_bytes())?;
    file.sync_all()?;
    std::fs::rename(&partial, &path)?;
    Ok(path)
}

/// The line announcing the first admin key: the key itself on a terminal, else the file it was written to. Both
/// start with `export E2B_API_KEY=` (scripts wait for that line as the server's "ready").
pub fn announce(data_dir: &Path, key: &str, on_terminal: bool) -> std::io::Result<String> {
    if on_terminal {
        return Ok(format!("export E2B_API_KEY={key}    # shown once; manage keys with `soulbox keys`"));
    }
    let path = write(data_dir, key)?;
    Ok(format!(
        "export E2B_API_KEY=\"$(cat {})\"    # the first admin key, in that root-only file (not printed off a \
         terminal); manage keys with `soulbox keys`",
        path.display()
    ))
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    #[test]
    fn the_key_file_is_0600_and_replaces_an_old_one() {
        let dir = tempfile::tempdir().unwrap();
        // An earlier file, world-readable: the new key must not end up in it with its mode.
        std::fs::write(dir.path().join(FILE_NAME), "old").unwrap();
        std::fs::set_permissions(dir.path().join(FILE_NAME), std::fs::Permissions::from_mode(0o644)).unwrap();
        let line = announce(dir.path(), "e2b_secret", false).unwrap();
        let path = dir.path().join(FILE_NAME);
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "e2b_secret\n");
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        assert!(!line.contains("e2b_secret"), "off a terminal the key is not printed: {line}");
        assert!(line.starts_with("export E2B_API_KEY=") && line.contains(&path.display().to_string()));
        assert!(!dir.path().join(format!(".{FILE_NAME}.partial")).exists());
    }

    #[test]
    fn on_a_terminal_the_key_is_printed_and_no_file_written() {
        let dir = tempfile::tempdir().unwrap();
        let line = announce(dir.path(), "e2b_secret", true).unwrap();
        assert!(line.starts_with("export E2B_API_KEY=e2b_secret "));
        assert!(!dir.path().join(FILE_NAME).exists());
    }
}
