//! Loop devices for filesystem images: attach with autoclear, find devices by backing file.
//!
//! Attach uses `LOOP_CONFIGURE` (one atomic ioctl, Linux ≥ 5.8) with `LO_FLAGS_AUTOCLEAR`: the
//! device is released by the kernel when its last user goes — the mount made on it, or, if we
//! crash between attach and mount, our own fd. So a loop device of ours never outlives its mount
//! and nothing needs to detach it explicitly (older kernels: `LOOP_SET_FD` + `LOOP_SET_STATUS64`,
//! where a crash between the two can leave a bound device; [`devices_backed_under`] finds those).
use crate::error::{Error, IoCtx, Result};
use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

const LOOP_SET_FD: libc::c_ulong = 0x4C00;
const LOOP_CLR_FD: libc::c_ulong = 0x4C01;
const LOOP_SET_STATUS64: libc::c_ulong = 0x4C04;
const LOOP_CONFIGURE: libc::c_ulong = 0x4C0A;
const LOOP_CTL_GET_FREE: libc::c_ulong = 0x4C82;
const LO_FLAGS_AUTOCLEAR: u32 = 4;

#[repr(C)]
struct LoopInfo64 {
    lo_device: u64,
    lo_inode: u64,
    lo_rdevice: u64,
    lo_offset: u64,
    lo_sizelimit: u64,
    lo_number: u32,
    lo_encrypt_type: u32,
    lo_encrypt_key_size: u32,
    lo_flags: u32,
    lo_file_name: [u8; 64],
    lo_crypt_name: [u8; 64],
    lo_encrypt_key: [u8; 32],
    lo_init: [u64; 2],
}

#[repr(C)]
struct LoopConfig {
    fd: u32,
    block_size: u32,
    info: LoopInfo64,
    reserved: [u64; 8],
}

/// An attached loop device. Keep it open until the filesystem on it is mounted: with autoclear,
/// dropping it before (e.g. when the mount failed) releases the device.
pub struct Attached {
    pub path: String,
    _dev: File,
}

/// Attach `image` read-write to a free loop device, with autoclear.
pub fn attach(image: &Path) -> Result<Attached> {
    let io = |what: &str, e: std::io::Error| Error::Io { path: PathBuf::from(what), source: e };
    let img = std::fs::OpenOptions::new().read(true).write(true).open(image).ctx(image)?;
    let ctl = std::fs::OpenOptions::new().read(true).write(true).open("/dev/loop-control").ctx("/dev/loop-control")?;
    let mut last_err = None;
    for _ in 0..16 {
        // SAFETY: LOOP_CTL_GET_FREE takes no argument and returns a device number.
        let n = unsafe { libc::ioctl(ctl.as_raw_fd(), LOOP_CTL_GET_FREE) };
        if n < 0 {
            return Err(io("/dev/loop-control", std::io::Error::last_os_error()));
        }
        let devpath = format!("/dev/loop{n}");
        let dev = match std::fs::OpenOptions::new().read(true).write(true).open(&devpath) {
            Ok(d) => d,
            Err(e) => {
                last_err = Some(io(&devpath, e));
                continue;
            }
        };
        // SAFETY: all-zero is a valid LoopConfig.
        let mut cfg: LoopConfig = unsafe { std::mem::zeroed() };
        cfg.fd = img.as_raw_fd() as u32;
        cfg.info.lo_flags = LO_FLAGS_AUTOCLEAR;
        let name = image.to_string_lossy();
        let nb = name.as_bytes();
        let k = nb.len().min(63);
        cfg.info.lo_file_name[..k].copy_from_slice(&nb[..k]);
        // SAFETY: cfg is a properly laid out struct loop_config that outlives the call.
        let mut r = unsafe { libc::ioctl(dev.as_raw_fd(), LOOP_CONFIGURE, &cfg as *const LoopConfig) };
        if r < 0 && std::io::Error::last_os_error().raw_os_error() == Some(libc::EINVAL) {
            // Kernels before 5.8: LOOP_SET_FD + LOOP_SET_STATUS64.
            // SAFETY: plain fd argument / pointer to a loop_info64 that outlives the call.
            r = unsafe { libc::ioctl(dev.as_raw_fd(), LOOP_SET_FD, img.as_raw_fd() as libc::c_ulong) };
            if r == 0 && unsafe { libc::ioctl(dev.as_raw_fd(), LOOP_SET_STATUS64, &cfg.info as *const LoopInfo64) } < 0
            {
                let e = std::io::Error::last_os_error();
                // SAFETY: LOOP_CLR_FD takes no argument.
                unsafe { libc::ioctl(dev.as_raw_fd(), LOOP_CLR_FD, 0) };
                return Err(io(&devpath, e));
            }
        }
        if r < 0 {
            let e = std::io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::EBUSY) {
                last_err = Some(io(&devpath, e));
                continue; // raced with someone else for the free device
            }
            return Err(io(&devpath, e));
        }
        return Ok(Attached { path: devpath, _dev: dev });
    }
    Err(last_err.unwrap_or_else(|| Error::Invalid("no free loop device".into())))
}

/// Detach a loop device (only for devices bound to one of our own images).
pub fn detach(dev: &str) {
    if let Ok(f) = std::fs::OpenOptions::new().read(true).open(format!("/dev/{dev}")) {
        // SAFETY: LOOP_CLR_FD takes no argument.
        unsafe { libc::ioctl(f.as_raw_fd(), LOOP_CLR_FD, 0) };
    }
}

/// Backing file of `loopN` (None when unbound).
pub fn backing_file(dev: &str) -> Option<PathBuf> {
    let s = std::fs::read_to_string(format!("/sys/block/{dev}/loop/backing_file")).ok()?;
    Some(PathBuf::from(s.trim_end_matches('\n').trim_end_matches(" (deleted)")))
}

/// Whether `loopN` releases itself when its last user goes (false for an unbound device or one a
/// pre-5.8 attach left without the flag).
pub fn autoclear(dev: &str) -> bool {
    std::fs::read_to_string(format!("/sys/block/{dev}/loop/autoclear")).is_ok_and(|s| s.trim() == "1")
}

/// Bound loop devices as (`loopN`, backing file).
pub fn bound() -> Vec<(String, PathBuf)> {
    let Ok(rd) = std::fs::read_dir("/sys/block") else { return vec![] };
    rd.flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("loop"))
        .filter_map(|n| backing_file(&n).map(|b| (n, b)))
        .collect()
}

/// Loop devices (`loopN`) whose backing file is `image` (what `losetup -j` shows).
pub fn devices_for(image: &Path) -> Vec<String> {
    let Ok(want) = std::fs::canonicalize(image) else { return vec![] };
    bound().into_iter().filter(|(_, b)| *b == want).map(|(n, _)| n).collect()
}

/// Loop devices whose backing file lies below `dir` (also when the file was deleted already).
pub fn devices_backed_under(dir: &Path) -> Vec<(String, PathBuf)> {
    let dir = std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf());
    bound().into_iter().filter(|(_, b)| b.starts_with(&dir)).collect()
}
