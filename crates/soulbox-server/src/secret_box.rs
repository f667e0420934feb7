//! Secret values at rest (E2B's `/secrets`): XChaCha20-Poly1305 under one 32-byte server key.
//!
//! Each encryption takes a fresh random 24-byte nonce (random nonces of this size never collide in practice,
//! so no counter has to survive restarts or be shared by replicas) and binds the row it is written for — team,
//! secret id, version — as associated data: a ciphertext copied into another secret's or version's row fails to
//! decrypt instead of yielding the other value. Stored form: base64 of nonce || ciphertext || tag.
//!
//! The key comes from `SOULBOX_SECRETS_KEY` (base64 of 32 bytes; replicas sharing a database need the same
//! one), else from `<data_dir>/secrets.key`, made on the first start. Values are [`SecretValue`]s: never
//! printed by `Debug`, wiped from memory when dropped.

use std::fs::File;
use std::io::{Read, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use chacha20poly1305::aead::{Aead, Payload};
use chacha20poly1305::{KeyInit, XChaCha20Poly1305, XNonce};
use rand::Rng;
use zeroize::Zeroizing;

/// The environment variable that holds the key (base64 of 32 bytes).
pub const KEY_ENV: &str = "SOULBOX_SECRETS_KEY";
/// The key file in the data dir when the variable is not set.
pub const KEY_FILE: &str = "secrets.key";
const KEY_LEN: usize = 32;
const NONCE_LEN: usize = 24;
const TAG_LEN: usize = 16;
/// Prefixes the associated data, so these ciphertexts mean nothing to any other use of the key.
const AAD_CONTEXT: &[u8] = b"soulbox secret v1\0";

/// A secret's value: `Debug` prints `<redacted>`, and the memory is zeroed on drop.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretValue(Zeroizing<String>);

impl SecretValue {
    pub fn new(value: String) -> SecretValue {
        SecretValue(Zeroizing::new(value))
    }

    /// The plaintext, for the few places that must use it (encryption, the egress gateway).
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for SecretValue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

/// Why a stored value could not be sealed or opened. No variant carries a value.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SealError {
    #[error("no secrets key is configured")]
    NoKey,
    /// The wrong key, or a ciphertext moved to another row, or tampered with: the AEAD cannot tell these apart.
    #[error("a stored secret does not decrypt under this server's secrets key")]
    Open,
    #[error("a stored secret is malformed")]
    Malformed,
    #[error("a secret value could not be encrypted")]
    Seal,
}

/// Why the key could not be had at startup. Never carries key material.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("{KEY_ENV} must be base64 of {KEY_LEN} random bytes (e.g. `head -c 32 /dev/urandom | base64`)")]
    BadEnv,
    #[error("{}: {reason}", path.display())]
    BadFile { path: PathBuf, reason: String },
    #[error("{}: {source}", path.display())]
    Io { path: PathBuf, source: std::io::Error },
}

/// Where the key came from (the server logs it; a new file should be backed up).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeySource {
    Env,
    File(PathBuf),
    Created(PathBuf),
}

/// The server's secrets cipher.
pub struct SecretBox {
    cipher: XChaCha20Poly1305,
}

impl std::fmt::Debug for SecretBox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretBox(<key redacted>)")
    }
}

impl SecretBox {
    pub fn new(key: &[u8; KEY_LEN]) -> SecretBox {
        SecretBox { cipher: XChaCha20Poly1305::new(key.into()) }
    }

    /// A box with a fresh random key (tests, and the key file's first start).
    pub fn random() -> SecretBox {
        SecretBox::new(&random_key())
    }

    /// The server's key: `env` (the value of [`KEY_ENV`]) when set, else `<data_dir>/secrets.key`, created
    /// (0600) when absent. A bad variable, or a file with group/other permissions, another owner or a wrong
    /// length, is an error: the server must not start with a key it cannot trust.
    pub fn load(env: Option<&std::ffi::OsStr>, data_dir: &Path) -> Result<(SecretBox, KeySource), KeyError> {
        if let Some(raw) = env {
            let key = decode_key(raw.to_str().ok_or(KeyError::BadEnv)?).ok_or(KeyError::BadEnv)?;
            return Ok((SecretBox::new(&key), KeySource::Env));
        }
        let path = data_dir.join(KEY_FILE);
        // Two processes may race to create it; the loser reads the winner's.
        for _ in 0..2 {
            match read_key_file(&path) {
                Ok(key) => return Ok((SecretBox::new(&key), KeySource::File(path))),
                Err(KeyError::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
            match create_key_file(&path) {
                Ok(key) => return Ok((SecretBox::new(&key), KeySource::Created(path))),
                Err(KeyError::Io { source, .. }) if source.kind() == std::io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(e),
            }
        }
        Err(KeyError::BadFile { path, reason: "appeared and vanished while being created".into() })
    }

    /// Encrypts `value` for the row (`team_id`, `secret_id`, `version`).
    pub fn seal(&self, team_id: &str, secret_id: &str, version: i64, value: &SecretValue) -> Result<String, SealError> {
        let mut nonce = [0u8; NONCE_LEN];
        rand::rng().fill(&mut nonce);
        let aad = associated_data(team_id, secret_id, version);
        let payload = Payload { msg: value.expose().as_bytes(), aad: &aad };
        let sealed = self.cipher.encrypt(&XNonce::from(nonce), payload).map_err(|_| SealError::Seal)?;
        let mut out = Vec::with_capacity(NONCE_LEN + sealed.len());
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&sealed);
        Ok(STANDARD.encode(out))
    }

    /// Decrypts what [`SecretBox::seal`] made for the same row.
    pub fn open(&self, team_id: &str, secret_id: &str, version: i64, stored: &str) -> Result<SecretValue, SealError> {
        let raw = STANDARD.decode(stored).map_err(|_| SealError::Malformed)?;
        if raw.len() < NONCE_LEN + TAG_LEN {
            return Err(SealError::Malformed);
        }
        let (nonce, sealed) = raw.split_at(NONCE_LEN);
        let nonce: [u8; NONCE_LEN] = nonce.try_into().map_err(|_| SealError::Malformed)?;
        let aad = associated_data(team_id, secret_id, version);
        let plain = Zeroizing::new(
            self.cipher
                .decrypt(&XNonce::from(nonce), Payload { msg: sealed, aad: &aad })
                .map_err(|_| SealError::Open)?,
        );
        let text = std::str::from_utf8(&plain).map_err(|_| SealError::Malformed)?;
        Ok(SecretValue::new(text.to_owned()))
    }
}

/// Context, team, secret id and version, unambiguously joined (ids and team ids hold no NUL).
fn associated_data(team_id: &str, secret_id: &str, version: i64) -> Vec<u8> {
    let mut aad = Vec::with_capacity(AAD_CONTEXT.len() + team_id.len() + secret_id.len() + 10);
    aad.extend_from_slice(AAD_CONTEXT);
    aad.extend_from_slice(team_id.as_bytes());
    aad.push(0);
    aad.extend_from_slice(secret_id.as_bytes());
    aad.push(0);
    aad.extend_from_slice(&version.to_be_bytes());
    aad
}

fn random_key() -> Zeroizing<[u8; KEY_LEN]> {
    let mut key = Zeroizing::new([0u8; KEY_LEN]);
    rand::rng().fill(&mut key[..]);
    key
}

fn decode_key(text: &str) -> Option<Zeroizing<[u8; KEY_LEN]>> {
    let bytes = Zeroizing::new(STANDARD.decode(text.trim()).ok()?);
    let mut key = Zeroizing::new([0u8; KEY_LEN]);
    if bytes.len() != KEY_LEN {
        return None;
    }
    key.copy_from_slice(&bytes);
    Some(key)
}

fn read_key_file(path: &Path) -> Result<Zeroizing<[u8; KEY_LEN]>, KeyError> {
    let io = |source| KeyError::Io { path: path.to_owned(), source };
    let bad = |reason: String| KeyError::BadFile { path: path.to_owned(), reason };
    // O_NOFOLLOW: a symlink planted in the data dir must not choose the key.
    let mut file = std::fs::OpenOptions::new().read(true).custom_flags(libc::O_NOFOLLOW).open(path).map_err(io)?;
    let meta = file.metadata().map_err(io)?;
    if !meta.is_file() {
        return Err(bad("is not a regular file".into()));
    }
    if meta.mode() & 0o077 != 0 {
        return Err(bad(format!(
            "has mode {:o}: the secrets key must be readable by its owner only (chmod 600 it)",
            meta.mode() & 0o777
        )));
    }
    let me = rustix::process::geteuid().as_raw();
    if meta.uid() != me {
        return Err(bad(format!("is owned by uid {}, not by this server's user (uid {me})", meta.uid())));
    }
    let mut text = Zeroizing::new(String::new());
    // A key file is ~45 bytes; reading a bounded amount keeps a wrong file from being read whole.
    (&mut file).take(1024).read_to_string(&mut text).map_err(io)?;
    decode_key(&text).ok_or_else(|| bad(format!("does not hold base64 of {KEY_LEN} bytes")))
}

fn create_key_file(path: &Path) -> Result<Zeroizing<[u8; KEY_LEN]>, KeyError> {
    let io = |source| KeyError::Io { path: path.to_owned(), source };
    let key = random_key();
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
        .map_err(io)?;
    let text = Zeroizing::new(format!("{}\n", STANDARD.encode(&key[..])));
    file.write_all(text.as_bytes()).map_err(io)?;
    // On disk before anything is encrypted with it: a crash must not lose the key of stored secrets.
    file.sync_all().map_err(io)?;
    if let Some(dir) = path.parent() {
        File::open(dir).and_then(|d| d.sync_all()).map_err(|source| KeyError::Io { path: dir.to_owned(), source })?;
    }
    Ok(key)
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    fn value(s: &str) -> SecretValue {
        SecretValue::new(s.into())
    }

    #[test]
    fn values_round_trip_and_are_bound_to_their_row() {
        let b = SecretBox::random();
        let sealed = b.seal("team_a", "sec_1", 1, &value("hunter2")).unwrap();
        assert_eq!(b.open("team_a", "sec_1", 1, &sealed).unwrap().expose(), "hunter2");
        assert!(!sealed.contains("hunter2"));
        assert_ne!(sealed, b.seal("team_a", "sec_1", 1, &value("hunter2")).unwrap(), "a fresh nonce each time");
        // Another row, version or team: the ciphertext does not decrypt there.
        for (team, id, version) in [("team_a", "sec_2", 1), ("team_a", "sec_1", 2), ("team_b", "sec_1", 1)] {
            assert_eq!(b.open(team, id, version, &sealed), Err(SealError::Open), "{team} {id} {version}");
        }
        // Another key, or a flipped bit.
        assert_eq!(SecretBox::random().open("team_a", "sec_1", 1, &sealed), Err(SealError::Open));
        let mut raw = STANDARD.decode(&sealed).unwrap();
        raw[NONCE_LEN] ^= 1;
        assert_eq!(b.open("team_a", "sec_1", 1, &STANDARD.encode(&raw)), Err(SealError::Open));
        assert_eq!(b.open("team_a", "sec_1", 1, "not base64!"), Err(SealError::Malformed));
        assert_eq!(b.open("team_a", "sec_1", 1, &STANDARD.encode([0u8; 30])), Err(SealError::Malformed));
        // The empty value is a value.
        let empty = b.seal("t", "s", 1, &value("")).unwrap();
        assert_eq!(b.open("t", "s", 1, &empty).unwrap().expose(), "");
    }

    #[test]
    fn debug_never_prints_a_value_or_the_key() {
        assert_eq!(format!("{:?}", value("hunter2")), "<redacted>");
        assert_eq!(format!("{:?}", Some(value("hunter2"))), "Some(<redacted>)");
        assert!(!format!("{:?}", SecretBox::random()).contains("key:"));
    }

    #[test]
    fn the_key_file_is_made_once_owner_only_and_reused() {
        let dir = tempfile::tempdir().unwrap();
        let (first, source) = SecretBox::load(None, dir.path()).unwrap();
        let path = dir.path().join(KEY_FILE);
        assert_eq!(source, KeySource::Created(path.clone()));
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        let (again, source) = SecretBox::load(None, dir.path()).unwrap();
        assert_eq!(source, KeySource::File(path.clone()));
        let sealed = first.seal("t", "s", 1, &value("v")).unwrap();
        assert_eq!(again.open("t", "s", 1, &sealed).unwrap().expose(), "v", "the same key after a restart");
        // The file's text works as the variable (how replicas get the same key).
        let text = std::fs::read_to_string(&path).unwrap();
        let (from_env, source) = SecretBox::load(Some(text.trim().as_ref()), dir.path()).unwrap();
        assert_eq!(source, KeySource::Env);
        assert_eq!(from_env.open("t", "s", 1, &sealed).unwrap().expose(), "v");
    }

    #[test]
    fn bad_keys_stop_the_start() {
        let dir = tempfile::tempdir().unwrap();
        for bad in ["", "not base64", "c2hvcnQ=", &STANDARD.encode([7u8; 33])] {
            assert!(matches!(SecretBox::load(Some(bad.as_ref()), dir.path()), Err(KeyError::BadEnv)), "{bad:?}");
        }
        assert!(!dir.path().join(KEY_FILE).exists(), "a bad variable never falls back to a new file");
        let good = STANDARD.encode([7u8; 32]);
        assert!(SecretBox::load(Some(good.as_ref()), dir.path()).is_ok());

        let path = dir.path().join(KEY_FILE);
        SecretBox::load(None, dir.path()).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).unwrap();
        let err = SecretBox::load(None, dir.path()).unwrap_err().to_string();
        assert!(err.contains("chmod 600"), "{err}");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        std::fs::write(&path, STANDARD.encode([1u8; 16])).unwrap();
        let err = SecretBox::load(None, dir.path()).unwrap_err().to_string();
        assert!(err.contains("base64 of 32 bytes"), "{err}");
        std::fs::remove_file(&path).unwrap();
        std::os::unix::fs::symlink("/dev/null", &path).unwrap();
        assert!(SecretBox::load(None, dir.path()).is_err(), "a symlink is refused");
    }
}
