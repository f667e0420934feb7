//! Moving layers between nodes' stores (cluster mode: a paused sandbox or a snapshot goes where it can run). A
//! layer travels as an OCI layer tar ([`soulbox_layer::pack`]) and is applied on the receiving node by the same
//! unpacker as any image layer — so a tree from elsewhere can neither escape its directory nor bring a device —
//! keeping the privileges its files had (it is a layer a SoulBox node made, not an image), and is committed only
//! when its content digest is the one it was sent as. Layers are moved as the sandboxes see them (root = 0): a
//! shifted store (`userns_mode = shared` without idmapped mounts) digests its layers shifted, so it neither sends
//! nor takes any.
use super::{Store, digest_tree};
use crate::error::{Error, Result};
use crate::util;
use std::io::{Read, Write};

impl Store {
    /// Whether `digest` names a layer (64 lowercase hex digits): a digest that comes over the wire never becomes a
    /// path otherwise.
    pub fn is_layer_digest(digest: &str) -> bool {
        digest.len() == 64 && digest.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    }

    pub fn has_layer(&self, digest: &str) -> bool {
        Store::is_layer_digest(digest) && self.layer_dir(digest).is_dir()
    }

    fn transferable(&self, digest: &str) -> Result<()> {
        if !Store::is_layer_digest(digest) {
            return Err(Error::Invalid(format!("{digest:?} is not a layer digest")));
        }
        if self.id_shift.is_some() {
            return Err(Error::Invalid(
                "this node stores layers shifted for its shared user namespace (no idmapped mounts): they cannot \
                 move between nodes"
                    .into(),
            ));
        }
        Ok(())
    }

    /// Writes layer `digest` to `out` as an uncompressed OCI layer tar.
    pub fn export_layer(&self, digest: &str, out: impl Write) -> Result<()> {
        self.transferable(digest)?;
        if !self.has_layer(digest) {
            return Err(Error::NotFound(format!("layer {digest}")));
        }
        soulbox_layer::pack(&self.layer_dir(digest), out)
            .map(|_| ())
            .map_err(|e| Error::Invalid(format!("packing layer {digest}: {e}")))
    }

    /// Applies the tar `from` (what [`Store::export_layer`] wrote on another node) as layer `digest`: unpacked into
    /// a temp dir, committed only if its content has that digest. Already present: `from` is not read.
    pub fn import_layer(&self, digest: &str, from: impl Read) -> Result<()> {
        self.transferable(digest)?;
        if self.has_layer(digest) {
            return Ok(());
        }
        let tmp = self.temp_layer()?;
        let res = (|| {
            let opts = soulbox_layer::UnpackOptions { id_shift: None, keep_privileges: true };
            soulbox_layer::unpack_with(from, &tmp, &opts)
                .map_err(|e| Error::Invalid(format!("unpacking layer {digest}: {e}")))?;
            let got = digest_tree(&tmp)?;
            if got != digest {
                return Err(Error::Invalid(format!("layer {digest} arrived with the content of {got}")));
            }
            self.commit_layer(&tmp).map(|_| ())
        })();
        if res.is_err() {
            let _ = util::remove_dir_all_idem(&tmp);
        }
        res
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_layer_moves_between_stores_only_under_its_own_digest() {
        let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let (from, to) = (Store::new(a.path()).unwrap(), Store::new(b.path()).unwrap());
        let tmp = from.temp_layer().unwrap();
        std::fs::create_dir_all(tmp.join("home/user")).unwrap();
        std::fs::write(tmp.join("home/user/file"), b"moved").unwrap();
        let digest = from.commit_layer(&tmp).unwrap();
        let mut tar = Vec::new();
        from.export_layer(&digest, &mut tar).unwrap();
        // Sent under another layer's name: refused, nothing committed, no temp dir left.
        let other = "0".repeat(64);
        let err = to.import_layer(&other, tar.as_slice()).unwrap_err();
        assert!(err.to_string().contains("arrived with the content of"), "{err}");
        assert!(!to.has_layer(&other));
        let leftovers: Vec<_> = std::fs::read_dir(b.path().join("layers")).unwrap().flatten().collect();
        assert!(leftovers.is_empty(), "{leftovers:?}");
        to.import_layer(&digest, tar.as_slice()).unwrap();
        assert_eq!(std::fs::read(to.layer_dir(&digest).join("home/user/file")).unwrap(), b"moved");
        assert_eq!(digest_tree(&to.layer_dir(&digest)).unwrap(), digest);
        // A name that is not a digest never becomes a path.
        for bad in ["../../etc", "ABC", &"g".repeat(64)] {
            assert!(to.import_layer(bad, tar.as_slice()).is_err(), "{bad}");
            assert!(from.export_layer(bad, std::io::sink()).is_err(), "{bad}");
        }
    }
}
