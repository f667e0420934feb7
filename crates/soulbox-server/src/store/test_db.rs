//! Test databases for both store backends: a SQLite file in a temp dir, or a throwaway PostgreSQL cluster.
//!
//! The PostgreSQL cluster is private to the test: `initdb` in a temp dir (as the `postgres` user when the test
//! runs as root: the server refuses root), the postmaster listening on a unix socket in that dir only (no TCP,
//! so ports never collide with other tests or a system PostgreSQL), stopped and deleted when the handle drops,
//! even on a panic. The postmaster also gets `PR_SET_PDEATHSIG`, so a test process killed outright takes its
//! database with it.
//!
//! Without PostgreSQL binaries the PostgreSQL variant of a test is skipped with a message, unless
//! `SOULBOX_REQUIRE_POSTGRES=1` (CI sets it) makes that a failure. `SOULBOX_PG_BIN` points at a bin dir with
//! `initdb` and `postgres` when they are not in `/usr/lib/postgresql/<version>/bin`.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::Store;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// A database that exists as long as this value does.
pub struct TestDatabase {
    url: String,
    _sqlite_dir: Option<tempfile::TempDir>,
    _postgres: Option<PgCluster>,
}

impl TestDatabase {
    /// A fresh, empty database; `None` when the backend is unavailable here (and not required).
    pub fn create(backend: Backend) -> Option<TestDatabase> {
        match backend {
            Backend::Sqlite => {
                let dir = tempfile::tempdir().expect("temp dir");
                let url = Store::sqlite_url(&dir.path().join("soulbox.db"));
                Some(TestDatabase { url, _sqlite_dir: Some(dir), _postgres: None })
            }
            Backend::Postgres => {
                let Some(bin) = postgres_bin_dir() else {
                    if std::env::var("SOULBOX_REQUIRE_POSTGRES").is_ok_and(|v| v == "1") {
                        panic!("SOULBOX_REQUIRE_POSTGRES=1 but no PostgreSQL binaries (install Debian's `postgresql`)");
                    }
                    eprintln!(
                        "SKIPPED: PostgreSQL binaries not found (install Debian's `postgresql` or set SOULBOX_PG_BIN)"
                    );
                    return None;
                };
                let cluster = PgCluster::start(&bin);
                Some(TestDatabase { url: cluster.url.clone(), _sqlite_dir: None, _postgres: Some(cluster) })
            }
        }
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    pub async fn open(&self) -> Store {
        Store::open(&self.url).await.expect("open the test store")
    }
}

/// Runs an async store test once per backend, each as its own `#[tokio::test]` (`<name>::sqlite`,
/// `<name>::postgres`); the body gets a `TestDatabase`.
macro_rules! store_test {
    ($name:ident, |$db:ident| $body:block) => {
        mod $name {
            #[allow(unused_imports)]
            use super::*;
            async fn run($db: $crate::store::test_db::TestDatabase) $body

            #[tokio::test]
            async fn sqlite() {
                let db = $crate::store::test_db::TestDatabase::create($crate::store::test_db::Backend::Sqlite).unwrap();
                run(db).await
            }

            #[tokio::test]
            async fn postgres() {
                if let Some(db) = $crate::store::test_db::TestDatabase::create($crate::store::test_db::Backend::Postgres) {
                    run(db).await
                }
            }
        }
    };
}
pub(crate) use store_test;

fn postgres_bin_dir() -> Option<PathBuf> {
    let has_tools = |dir: &Path| dir.join("initdb").is_file() && dir.join("postgres").is_file();
    if let Some(dir) = std::env::var_os("SOULBOX_PG_BIN").map(PathBuf::from) {
        return has_tools(&dir).then_some(dir);
    }
    // Debian: /usr/lib/postgresql/<major>/bin; take the newest major version installed.
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|e| e.ok())
        .filter_map(|e| Some((e.file_name().to_str()?.parse().ok()?, e.path().join("bin"))))
        .filter(|(_, bin)| has_tools(bin))
        .collect();
    versions.sort();
    versions.pop().map(|(_, bin)| bin)
}

/// A running private PostgreSQL cluster.
struct PgCluster {
    url: String,
    postmaster: Child,
    // Declared last: removed after the postmaster stopped.
    dir: tempfile::TempDir,
}

/// The account PostgreSQL runs as: `postgres` when we are root, ourselves otherwise.
fn server_account() -> Option<(u32, u32)> {
    if rustix::process::geteuid().is_root() {
        let name = std::ffi::CString::new("postgres").expect("no NUL");
        // SAFETY: getpwnam returns a pointer into static storage or null; read it immediately.
        let pw = unsafe { libc::getpwnam(name.as_ptr()) };
        assert!(!pw.is_null(), "running as root needs the `postgres` account (Debian's postgresql package creates it)");
        // SAFETY: non-null result of getpwnam.
        let (uid, gid) = unsafe { ((*pw).pw_uid, (*pw).pw_gid) };
        Some((uid, gid))
    } else {
        None
    }
}

fn as_account(command: &mut Command, account: Option<(u32, u32)>) -> &mut Command {
    use std::os::unix::process::CommandExt;
    if let Some((uid, gid)) = account {
        command.uid(uid).gid(gid); // std drops supplementary groups when root sets a uid
    }
    command
}

impl PgCluster {
    fn start(bin: &Path) -> PgCluster {
        let dir = tempfile::Builder::new().prefix("soulbox-pgtest-").tempdir().expect("temp dir");
        let account = server_account();
        if let Some((uid, gid)) = account {
            std::os::unix::fs::chown(dir.path(), Some(uid), Some(gid)).expect("chown the cluster dir");
        }
        let data = dir.path().join("data");
        let log = dir.path().join("postgres.log");
        let initdb = as_account(&mut Command::new(bin.join("initdb")), account)
            .args(["--no-sync", "--auth=trust", "--username=postgres", "--encoding=UTF8", "--locale=C", "-D"])
            .arg(&data)
            .stdout(Stdio::null())
            .output()
            .expect("run initdb");
        assert!(initdb.status.success(), "initdb failed: {}", String::from_utf8_lossy(&initdb.stderr));

        let log_file = std::fs::File::create(&log).expect("postgres log file");
        if let Some((uid, gid)) = account {
            std::os::unix::fs::chown(&log, Some(uid), Some(gid)).expect("chown the log");
        }
        let mut command = Command::new(bin.join("postgres"));
        as_account(&mut command, account)
            .arg("-D")
            .arg(&data)
            .arg("-k")
            .arg(dir.path())
            .args(["-c", "listen_addresses=", "-p", "5432", "-F"])
            .args(["-c", "shared_buffers=16MB", "-c", "max_connections=100", "-c", "log_min_messages=warning"])
            .stdin(Stdio::null())
            .stdout(log_file.try_clone().expect("dup log"))
            .stderr(log_file);
        // SAFETY: prctl is async-signal-safe; the closure touches no shared state.
        unsafe {
            use std::os::unix::process::CommandExt;
            command.pre_exec(|| {
                // Fast shutdown when the test process dies without dropping us.
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGINT) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let postmaster = command.spawn().expect("start postgres");
        let socket_dir = dir.path().to_str().expect("utf-8 temp path").to_owned();
        let url = format!("postgres://postgres@localhost:5432/postgres?host={socket_dir}");
        let mut cluster = PgCluster { url, postmaster, dir };
        cluster.wait_ready(&log);
        cluster
    }

    /// The socket appears once the postmaster accepts connections (it is created after startup checks).
    fn wait_ready(&mut self, log: &Path) {
        let socket = self.dir.path().join(".s.PGSQL.5432");
        let lock = self.dir.path().join("data/postmaster.pid");
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(Some(status)) = self.postmaster.try_wait() {
                panic!("postgres exited ({status}): {}", std::fs::read_to_string(log).unwrap_or_default());
            }
            // postmaster.pid's 8th line is the status; "ready" once it accepts connections.
            let ready =
                std::fs::read_to_string(&lock).is_ok_and(|pid| pid.lines().nth(7).is_some_and(|l| l.trim() == "ready"));
            if ready && socket.exists() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "postgres did not start: {}",
                std::fs::read_to_string(log).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        let pid = rustix::process::Pid::from_raw(self.postmaster.id() as i32);
        if let Some(pid) = pid {
            // SIGINT: fast shutdown (disconnect clients, stop cleanly, release shared memory).
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::INT);
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            match self.postmaster.try_wait() {
                Ok(Some(_)) | Err(_) => return,
                Ok(None) => std::thread::sleep(Duration::from_millis(20)),
            }
        }
        let _ = self.postmaster.kill();
        let _ = self.postmaster.wait();
    }
}
