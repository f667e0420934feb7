//! Wipes a variable's value from this process's initial environment block.
//!
//! `/proc/<pid>/environ` shows the memory the kernel put the environment in at exec, not the process's current
//! variables: `remove_var` only unlinks the entry. Being non-dumpable keeps that file unreadable for root inside
//! a runc sandbox (reading it needs CAP_SYS_PTRACE), but gVisor (runsc) lets root inside read it anyway. So the
//! boot configuration's bytes (node secret, access token) are overwritten in place as soon as they are read.

use std::ffi::{CStr, c_char};

unsafe extern "C" {
    /// The C library's process environment (POSIX `environ`): a NULL-terminated array of `NAME=value` strings,
    /// at start those the kernel wrote for exec.
    static mut environ: *mut *mut c_char;
}

/// Overwrites the entry `name=value` in the environment with zero bytes, name included (nothing in
/// `/proc/<pid>/environ` then says the variable was there; the entry becomes an empty string, which no lookup
/// matches, so the variable is gone from the environment too). Returns whether it was there. Call while the
/// process is single-threaded (at start): nothing may read or change the environment meanwhile.
pub fn wipe(name: &str) -> bool {
    let prefix = format!("{name}=");
    // SAFETY: single-threaded (the caller's contract); `environ` is the C library's NULL-terminated array of
    // NUL-terminated strings, which this process owns and may write; each write stays inside one string.
    unsafe {
        let mut entry = environ;
        if entry.is_null() {
            return false;
        }
        while !(*entry).is_null() {
            let bytes = CStr::from_ptr(*entry).to_bytes();
            if bytes.starts_with(prefix.as_bytes()) {
                std::ptr::write_bytes(*entry, 0, bytes.len());
                return true;
            }
            entry = entry.add(1);
        }
    }
    false
}

#[cfg(test)]
mod tests {
    const CHILD: &str = "SOULBOX_ENV_SCRUB_CHILD";
    const SECRET_VAR: &str = "SOULBOX_TEST_SECRET";
    const SECRET: &str = "s3cr3t-value-that-must-vanish";

    /// Runs in a fresh process (this test binary, re-executed), whose initial environment holds the secret: after
    /// `wipe`, `/proc/self/environ` no longer shows it.
    #[test]
    fn a_wiped_value_is_gone_from_proc_environ() {
        if std::env::var_os(CHILD).is_some() {
            let before = std::fs::read("/proc/self/environ").unwrap();
            assert!(contains(&before, SECRET.as_bytes()), "the child's initial environment has the secret");
            assert!(super::wipe(SECRET_VAR));
            assert!(!super::wipe("SOULBOX_NO_SUCH_VARIABLE"));
            let after = std::fs::read("/proc/self/environ").unwrap();
            assert!(!contains(&after, SECRET.as_bytes()), "the secret is still in /proc/self/environ");
            assert!(!contains(&after, SECRET_VAR.as_bytes()), "its name is still in /proc/self/environ");
            assert_eq!(before.len(), after.len(), "the block keeps its size");
            assert!(std::env::var_os(SECRET_VAR).is_none(), "the variable is gone from the environment");
            assert!(std::env::var_os(CHILD).is_some(), "the other variables stay");
            return;
        }
        let out = std::process::Command::new(std::env::current_exe().unwrap())
            .args(["--exact", "env_scrub::tests::a_wiped_value_is_gone_from_proc_environ", "--nocapture"])
            .env(CHILD, "1")
            .env(SECRET_VAR, SECRET)
            .output()
            .unwrap();
        assert!(out.status.success(), "child: {}", String::from_utf8_lossy(&out.stderr));
        assert!(String::from_utf8_lossy(&out.stdout).contains("1 passed"), "the child ran the test");
    }

    fn contains(haystack: &[u8], needle: &[u8]) -> bool {
        haystack.windows(needle.len()).any(|w| w == needle)
    }
}
