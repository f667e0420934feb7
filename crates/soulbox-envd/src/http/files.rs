//! `GET /files` (download) and `POST /files` (upload), E2B envd's plain-HTTP file transfer (spec §2.7, §3).
//!
//! Both stream: a download is read from disk in bounded chunks, an upload is written as it arrives, so a
//! transfer's memory use does not depend on the file's size.
//!
//! Permissions: envd runs as root, but a `/files` request acts for a user (`username`, else the default user).
//! Every path-touching system call (stat/open/mkdir) runs on a short-lived thread that has taken on that user's
//! uid, gid and groups (Linux credentials are per thread), so the kernel applies exactly the checks it would
//! apply to a command run as that user (modes, ACLs, search permission on every parent). See [`as_user`].

// Errors here are finished E2B error responses (`json_error`), built on the cold path and returned as is;
// boxing them would buy nothing.
#![allow(clippy::result_large_err)]

mod access;
pub(crate) mod as_user;
mod download;
mod drain;
mod metadata;
pub(crate) mod parents;
mod upload;

#[cfg(test)]
mod tests;

pub use download::download;
pub use upload::upload;
