//! What a node agent keeps in its data dir to come back as itself after a restart: its id (so its sandboxes are
//! reconciled, not orphaned) and its secret (so the control plane's calls keep working the moment it serves
//! again, instead of being refused until its first heartbeat brings a new one — as Nomad keeps its client's
//! secret id). Deleting `node-secret` rotates the secret at the next start; the heartbeat always carries it.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use anyhow::Context;

const ID_FILE: &str = "node-id";
const SECRET_FILE: &str = "node-secret";

/// The node's id: `--node-id`, else the one saved in the data dir, else a new random one saved there.
pub fn node_id(data_dir: &Path, wanted: Option<String>) -> anyhow::Result<String> {
    if let Some(id) = wanted {
        anyhow::ensure!(
            crate::cluster::wire::valid_node_id(&id),
            "invalid node id {id:?}: use [a-z0-9-], at most 63 characters"
        );
        return Ok(id);
    }
    match std::fs::read_to_string(data_dir.join(ID_FILE)) {
        Ok(id) if crate::cluster::wire::valid_node_id(id.trim()) => Ok(id.trim().to_owned()),
        _ => {
            let id = format!("node-{}", &crate::ids::access_token()[..8]);
            save(data_dir, ID_FILE, &id, 0o644)?;
            Ok(id)
        }
    }
}

/// The secret the control plane presents to this agent: the one saved in the data dir (readable by its owner
/// only), else a new random one saved there. A saved file that is not a secret we made is replaced.
pub fn node_secret(data_dir: &Path) -> anyhow::Result<String> {
    if let Ok(saved) = std::fs::read_to_string(data_dir.join(SECRET_FILE)) {
        let saved = saved.trim();
        if saved.len() == 64 && saved.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Ok(saved.to_owned());
        }
        tracing::warn!(file = SECRET_FILE, "the saved node secret is malformed; making a new one");
    }
    let secret = crate::ids::access_token();
    save(data_dir, SECRET_FILE, &secret, 0o600)?;
    Ok(secret)
}

/// Writes `name` whole or not at all (a temporary file renamed over it), created with `mode`.
fn save(data_dir: &Path, name: &str, text: &str, mode: u32) -> anyhow::Result<()> {
    std::fs::create_dir_all(data_dir).with_context(|| format!("creating {}", data_dir.display()))?;
    let path = data_dir.join(name);
    let temporary = data_dir.join(format!(".{name}.new"));
    // A leftover from a crash between create and rename would make create_new fail.
    let _ = std::fs::remove_file(&temporary);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&temporary)
        .with_context(|| format!("creating {}", temporary.display()))?;
    file.write_all(text.as_bytes())
        .and_then(|()| file.sync_all())
        .with_context(|| format!("writing {}", temporary.display()))?;
    std::fs::rename(&temporary, &path).with_context(|| format!("saving {}", path.display()))
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    #[test]
    fn a_restarted_agent_keeps_its_secret_and_only_its_owner_can_read_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let first = node_secret(dir.path()).expect("first start");
        assert_eq!(first.len(), 64);
        assert_eq!(node_secret(dir.path()).expect("restart"), first);
        let mode = std::fs::metadata(dir.path().join(SECRET_FILE)).expect("saved").permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "the secret file must not be readable by others");
    }

    #[test]
    fn a_deleted_or_malformed_secret_is_replaced() {
        let dir = tempfile::tempdir().expect("tempdir");
        let first = node_secret(dir.path()).expect("first start");
        std::fs::remove_file(dir.path().join(SECRET_FILE)).expect("delete");
        let second = node_secret(dir.path()).expect("after delete");
        assert_ne!(second, first, "deleting the file rotates the secret");
        std::fs::write(dir.path().join(SECRET_FILE), "short").expect("garble");
        let third = node_secret(dir.path()).expect("after garbling");
        assert!(third != "short" && third.len() == 64);
        assert_eq!(node_secret(dir.path()).expect("again"), third);
    }

    #[test]
    fn a_node_id_is_saved_once_and_a_wanted_one_is_checked() {
        let dir = tempfile::tempdir().expect("tempdir");
        let made = node_id(dir.path(), None).expect("made");
        assert!(made.starts_with("node-"));
        assert_eq!(node_id(dir.path(), None).expect("again"), made);
        assert_eq!(node_id(dir.path(), Some("edge-1".into())).expect("wanted"), "edge-1");
        assert!(node_id(dir.path(), Some("Bad Id".into())).is_err());
    }
}
