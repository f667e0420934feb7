//! Directory watchers (inotify), streamed (`WatchDir`) or polled (`CreateWatcher`/`GetWatcherEvents`).
//!
//! Each watcher owns a non-blocking inotify instance. Kernel events are moved into the watcher's queue by
//! one synchronous routine, [`Watcher::drain`], which reads until `EAGAIN` under the watcher's mutex and
//! never awaits. Two callers use it: a small task per watcher woken by the runtime when the inotify fd
//! becomes readable (`AsyncFd`), and [`WatchRegistry::sync`], which the upload handler calls after writing
//! so the events of a completed write are queued before its response returns. Because every read of the fd
//! happens inside the same mutex and appends to the queue before releasing it, both paths together see
//! each kernel event exactly once and in kernel order.
//!
//! Mapping of inotify masks to events is fsnotify's (which E2B envd uses): `IN_CREATE`/`IN_MOVED_TO` →
//! CREATE, `IN_MOVED_FROM`/`IN_MOVE_SELF` → RENAME, `IN_ATTRIB` → CHMOD, `IN_MODIFY` → WRITE,
//! `IN_DELETE`/`IN_DELETE_SELF` → REMOVE; one event per op bit, in that order.

use std::collections::{HashMap, HashSet, VecDeque};
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use inotify::{EventMask, Inotify, WatchDescriptor, WatchMask};
use rand::Rng;
use soulbox_protocol::connect::RpcError;
use soulbox_protocol::filesystem::{EntryInfo, EventType, FilesystemEvent};
use tokio::io::Interest;
use tokio::io::unix::AsyncFd;
use tokio::sync::Notify;
use tokio::task::JoinHandle;

use crate::entry::EntryBuilder;

/// Events buffered per watcher before the oldest are dropped (a polled watcher nobody polls, or a stream
/// whose client reads slower than the filesystem changes, must not grow without bound).
pub const MAX_BUFFERED_EVENTS: usize = 10_000;

/// Size of the buffer one `read` of the inotify fd fills (room for hundreds of events per syscall).
const READ_BUFFER_BYTES: usize = 64 * 1024;

/// Everything fsnotify watches for.
fn watch_mask() -> WatchMask {
    WatchMask::CREATE
        | WatchMask::MOVED_TO
        | WatchMask::MOVED_FROM
        | WatchMask::ATTRIB
        | WatchMask::MODIFY
        | WatchMask::MOVE_SELF
        | WatchMask::DELETE
        | WatchMask::DELETE_SELF
}

/// What to watch and how to report it.
#[derive(Debug, Clone)]
pub struct WatchOptions {
    /// Absolute, existing directory.
    pub root: PathBuf,
    pub recursive: bool,
    pub include_entry: bool,
}

/// All live watchers, streamed and polled, by id.
#[derive(Default)]
pub struct WatchRegistry {
    watchers: Mutex<HashMap<String, Registered>>,
}

struct Registered {
    watcher: Arc<Watcher>,
    /// Reads the fd whenever it becomes readable; aborted when the watcher is removed.
    pump: JoinHandle<()>,
}

/// How a watcher's events leave it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    /// Buffered until `GetWatcherEvents`.
    Polled,
    /// Sent on a `WatchDir` stream.
    Streamed,
}

impl WatchRegistry {
    /// Moves every inotify event the kernel has already queued into the watchers' buffers and streams, so
    /// that events caused by a completed write are visible before the write's response returns.
    pub fn sync(&self) {
        let watchers: Vec<Arc<Watcher>> = self.lock().values().map(|r| r.watcher.clone()).collect();
        for watcher in watchers {
            watcher.drain_now();
        }
    }

    /// Starts watching. Must be called inside the Tokio runtime (the fd is registered with its reactor).
    pub fn create(&self, options: WatchOptions, delivery: Delivery) -> Result<(String, Arc<Watcher>), RpcError> {
        let watcher = Arc::new(Watcher::new(options, delivery)?);
        let id = new_watcher_id();
        let pump = tokio::spawn(pump(watcher.clone()));
        self.lock().insert(id.clone(), Registered { watcher: watcher.clone(), pump });
        Ok((id, watcher))
    }

    /// A polled watcher by id (streamed watchers are not reachable through `GetWatcherEvents`).
    pub fn polled(&self, id: &str) -> Option<Arc<Watcher>> {
        self.lock().get(id).filter(|r| r.watcher.delivery == Delivery::Polled).map(|r| r.watcher.clone())
    }

    /// Stops and forgets a watcher; false if there was none with this id.
    pub fn remove(&self, id: &str) -> bool {
        let removed = self.lock().remove(id);
        match removed {
            Some(r) => {
                r.pump.abort();
                true
            }
            None => false,
        }
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<String, Registered>> {
        self.watchers.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Opaque watcher ids, `w` + random letters like envd's.
fn new_watcher_id() -> String {
    let suffix: String = rand::rng().sample_iter(rand::distr::Alphanumeric).take(20).map(char::from).collect();
    format!("w{suffix}")
}

/// Waits for the inotify fd to become readable and drains it, until the watcher is removed (task aborted)
/// or reading fails.
async fn pump(watcher: Arc<Watcher>) {
    loop {
        let mut ready = match watcher.readable.readable().await {
            Ok(guard) => guard,
            Err(e) => {
                watcher.fail(format!("watching the inotify fd failed: {e}"));
                return;
            }
        };
        // `try_io` clears the readiness only when the drain ends in EAGAIN, so an event arriving while we
        // drain wakes us again.
        if let Ok(Err(e)) = ready.try_io(|_| watcher.drain()) {
            watcher.fail(format!("reading inotify events failed: {e}"));
            return;
        }
    }
}

/// One directory watch, with its queue of events not yet delivered.
pub struct Watcher {
    /// A duplicate of the inotify fd registered with the reactor, only used to learn of readiness.
    readable: AsyncFd<OwnedFd>,
    options: WatchOptions,
    delivery: Delivery,
    state: Mutex<WatchState>,
    /// Wakes the stream that delivers this watcher's events (single consumer: `notify_one` keeps a permit).
    queued: Notify,
}

struct WatchState {
    inotify: Inotify,
    buffer: Box<[u8]>,
    /// Watched directories by watch descriptor id: the descriptor and the path relative to the root ("" is
    /// the root itself).
    dirs: HashMap<i32, (WatchDescriptor, PathBuf)>,
    /// Entries a scan of a new directory reported as created whose own kernel CREATE may still be queued
    /// (made after the directory's watch was added but before it was listed). Such a CREATE is dropped
    /// once; the set is emptied whenever the kernel queue has been read to the end, because every event
    /// older than the scan has been seen by then.
    announced: HashSet<PathBuf>,
    queue: VecDeque<QueuedEvent>,
    dropped: u64,
    failure: Option<String>,
}

/// An event waiting for delivery; its entry is looked up at delivery time, outside the lock.
#[derive(Debug, Clone)]
struct QueuedEvent {
    /// Relative to the watched directory.
    name: PathBuf,
    op: EventType,
}

impl Watcher {
    fn new(options: WatchOptions, delivery: Delivery) -> Result<Watcher, RpcError> {
        let inotify = Inotify::init().map_err(|e| RpcError::internal(format!("error creating watcher: {e}")))?;
        // The reactor gets its own duplicate of the fd (same open file description, so the same readiness),
        // which keeps the registration valid for exactly as long as the `AsyncFd` lives.
        let fd = inotify
            .as_fd()
            .try_clone_to_owned()
            .map_err(|e| RpcError::internal(format!("error creating watcher: {e}")))?;
        let mut state = WatchState {
            inotify,
            buffer: vec![0u8; READ_BUFFER_BYTES].into_boxed_slice(),
            dirs: HashMap::new(),
            announced: HashSet::new(),
            queue: VecDeque::new(),
            dropped: 0,
            failure: None,
        };
        // The root may be a symlink to a directory (already checked by the caller), so it is followed.
        let wd =
            state.inotify.watches().add(&options.root, watch_mask() | WatchMask::ONLYDIR).map_err(|e| {
                RpcError::internal(format!("error adding path {} to watcher: {e}", options.root.display()))
            })?;
        state.dirs.insert(wd.get_watch_descriptor_id(), (wd, PathBuf::new()));
        if options.recursive {
            let root = options.root.clone();
            // Existing subdirectories: no events for what is already there.
            state.watch_tree(&root, Path::new(""), None);
        }
        // SAFETY: `fd` is an open descriptor owned by the `AsyncFd` for its whole life; `OwnedFd::as_raw_fd`
        // always returns that same descriptor.
        let readable = unsafe { AsyncFd::register_with_interest(fd, Interest::READABLE) }
            .map_err(|e| RpcError::internal(format!("error registering watcher: {e}")))?;
        Ok(Watcher { readable, options, delivery, state: Mutex::new(state), queued: Notify::new() })
    }

    fn lock(&self) -> MutexGuard<'_, WatchState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Reads every event the kernel has queued, translating and queueing them. Returns `WouldBlock` once
    /// the fd is empty (what `AsyncFd::try_io` needs), any other error if reading fails.
    fn drain(&self) -> io::Result<()> {
        let mut state = self.lock();
        let before = state.queue.len() + state.dropped as usize;
        let result = state.read_all(&self.options);
        let appended = state.queue.len() + state.dropped as usize != before;
        drop(state);
        if appended {
            self.queued.notify_one();
        }
        result
    }

    /// [`Self::drain`] for callers that just want the queue up to date.
    fn drain_now(&self) {
        match self.drain() {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) => self.fail(format!("reading inotify events failed: {e}")),
        }
    }

    fn fail(&self, message: String) {
        tracing::warn!(root = %self.options.root.display(), %message, "directory watcher failed");
        self.lock().failure.get_or_insert(message);
        self.queued.notify_one();
    }

    /// Drains the kernel queue, then hands out everything buffered, with entries looked up now.
    pub fn take_events(&self) -> Result<Vec<FilesystemEvent>, RpcError> {
        self.drain_now();
        let queued: Vec<QueuedEvent> = {
            let mut state = self.lock();
            if state.queue.is_empty()
                && let Some(failure) = &state.failure
            {
                return Err(RpcError::internal(format!("watcher error: {failure}")));
            }
            state.queue.drain(..).collect()
        };
        Ok(self.materialize(queued))
    }

    /// Waits until events (or a failure) are queued, then takes them all. Cancel-safe.
    pub async fn next_events(&self) -> Result<Vec<FilesystemEvent>, RpcError> {
        loop {
            let events = self.take_events()?;
            if !events.is_empty() {
                return Ok(events);
            }
            self.queued.notified().await;
        }
    }

    fn materialize(&self, queued: Vec<QueuedEvent>) -> Vec<FilesystemEvent> {
        let wants_entries = self.options.include_entry && queued.iter().any(|e| op_carries_entry(e.op));
        let builder = wants_entries.then(EntryBuilder::new);
        queued
            .into_iter()
            .map(|e| {
                let entry =
                    builder.as_ref().filter(|_| op_carries_entry(e.op)).and_then(|b| self.entry_for(b, &e.name));
                FilesystemEvent { name: display_name(&e.name), r#type: e.op as i32, entry }
            })
            .collect()
    }

    /// The entry of an event's path if it still exists (a vanished path is a benign race, not an error).
    fn entry_for(&self, builder: &EntryBuilder, name: &Path) -> Option<EntryInfo> {
        let path = if name.as_os_str().is_empty() { self.options.root.clone() } else { self.options.root.join(name) };
        match builder.entry(&path) {
            Ok(entry) => Some(entry),
            Err(e) if e.kind() == io::ErrorKind::NotFound => None,
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "no entry info for filesystem event");
                None
            }
        }
    }
}

/// Only these events say something about the path's current state (a stat after a remove or rename could
/// describe an unrelated file that took its place).
fn op_carries_entry(op: EventType) -> bool {
    matches!(op, EventType::Create | EventType::Write | EventType::Chmod)
}

/// Go's `filepath.Rel(root, root)` is ".".
fn display_name(name: &Path) -> String {
    if name.as_os_str().is_empty() { ".".to_owned() } else { name.to_string_lossy().into_owned() }
}

impl WatchState {
    fn read_all(&mut self, options: &WatchOptions) -> io::Result<()> {
        loop {
            // Copy the raw events out so the buffer borrow ends before the state is updated.
            let mut batch: Vec<(i32, EventMask, Option<std::ffi::OsString>)> = Vec::new();
            match self.inotify.read_events(&mut self.buffer) {
                Ok(events) => {
                    for event in events {
                        batch.push((event.wd.get_watch_descriptor_id(), event.mask, event.name.map(|n| n.to_owned())));
                    }
                }
                Err(e) => {
                    if e.kind() == io::ErrorKind::WouldBlock {
                        self.announced.clear();
                    }
                    return Err(e);
                }
            }
            for (wd, mask, name) in batch {
                self.handle(options, wd, mask, name);
            }
        }
    }

    fn handle(&mut self, options: &WatchOptions, wd: i32, mask: EventMask, name: Option<std::ffi::OsString>) {
        if mask.contains(EventMask::Q_OVERFLOW) {
            tracing::warn!(root = %options.root.display(), "inotify queue overflowed; some filesystem events were lost");
            return;
        }
        let Some((_, dir)) = self.dirs.get(&wd) else { return };
        let dir = dir.clone();
        let is_root = dir.as_os_str().is_empty();
        if mask.contains(EventMask::IGNORED) {
            self.dirs.remove(&wd);
            return;
        }
        let rel = match &name {
            Some(n) => dir.join(n),
            None => dir.clone(),
        };
        // A watched subdirectory's own removal or move is already reported by its parent's watch
        // (IN_DELETE / IN_MOVED_FROM); only the root's own events are reported from its watch.
        let self_event = name.is_none() && mask.intersects(EventMask::DELETE_SELF | EventMask::MOVE_SELF);
        if self_event && !is_root {
            if mask.contains(EventMask::MOVE_SELF) {
                self.forget_subtree(&dir);
            }
            return;
        }
        if !self.announced.is_empty() && name.is_some() {
            if mask.contains(EventMask::CREATE) && self.announced.remove(&rel) {
                // Already reported (and, for a directory, already watched) by the scan that found it.
                return;
            }
            if mask.intersects(EventMask::DELETE | EventMask::MOVED_FROM) {
                self.announced.remove(&rel);
            }
        }
        for op in ops_of(mask) {
            self.push(options, QueuedEvent { name: rel.clone(), op });
        }
        if options.recursive && mask.contains(EventMask::ISDIR) {
            if mask.contains(EventMask::MOVED_FROM) {
                // The directory left this place; its watches now describe paths that no longer exist.
                self.forget_subtree(&rel);
            }
            if mask.intersects(EventMask::CREATE | EventMask::MOVED_TO) {
                // Only a freshly created directory can have gained content the kernel did not report to us
                // (created before its watch existed); a directory moved in brings content that was not
                // created now, so it is watched silently.
                let announce = mask.contains(EventMask::CREATE).then_some(options);
                let absolute = options.root.join(&rel);
                self.watch_tree(&absolute, &rel, announce);
            }
        }
    }

    /// Adds watches for the directory `absolute` (relative name `rel`) and every directory below it. With
    /// `announce`, entries found inside are reported as CREATE events: they appeared before the new
    /// directory's watch existed, so the kernel reported nothing for them (one created in the narrow window
    /// between adding the watch and listing is reported by both; `announced` drops the kernel's copy).
    fn watch_tree(&mut self, absolute: &Path, rel: &Path, announce: Option<&WatchOptions>) {
        if !rel.as_os_str().is_empty() {
            match self.inotify.watches().add(absolute, watch_mask() | WatchMask::ONLYDIR | WatchMask::DONT_FOLLOW) {
                Ok(wd) => {
                    self.dirs.insert(wd.get_watch_descriptor_id(), (wd, rel.to_path_buf()));
                }
                Err(e) => {
                    // Vanished already, or not a directory any more: nothing to watch.
                    tracing::debug!(path = %absolute.display(), error = %e, "could not watch subdirectory");
                    return;
                }
            }
        }
        let Ok(read) = std::fs::read_dir(absolute) else { return };
        let mut children: Vec<(std::ffi::OsString, bool)> =
            read.flatten().map(|e| (e.file_name(), e.file_type().map(|t| t.is_dir()).unwrap_or(false))).collect();
        children.sort_unstable_by(|a, b| a.0.as_encoded_bytes().cmp(b.0.as_encoded_bytes()));
        for (child, is_dir) in children {
            let child_rel = rel.join(&child);
            if let Some(options) = announce {
                self.announced.insert(child_rel.clone());
                self.push(options, QueuedEvent { name: child_rel.clone(), op: EventType::Create });
            }
            if is_dir {
                self.watch_tree(&absolute.join(&child), &child_rel, announce);
            }
        }
    }

    /// Stops watching `rel` and everything below it.
    fn forget_subtree(&mut self, rel: &Path) {
        let stale: Vec<i32> = self
            .dirs
            .iter()
            .filter(|(_, (_, dir))| dir.starts_with(rel) && !dir.as_os_str().is_empty())
            .map(|(id, _)| *id)
            .collect();
        for id in stale {
            if let Some((wd, _)) = self.dirs.remove(&id) {
                // Fails harmlessly if the kernel already dropped the watch.
                let _ = self.inotify.watches().remove(wd);
            }
        }
    }

    fn push(&mut self, options: &WatchOptions, event: QueuedEvent) {
        if self.queue.len() >= MAX_BUFFERED_EVENTS {
            self.queue.pop_front();
            self.dropped += 1;
            if self.dropped == 1 || self.dropped.is_multiple_of(1000) {
                tracing::warn!(
                    root = %options.root.display(),
                    dropped = self.dropped,
                    "watcher buffer full ({MAX_BUFFERED_EVENTS} events); dropping the oldest"
                );
            }
        }
        self.queue.push_back(event);
    }
}

/// The events one inotify mask stands for, in envd's order: CREATE, RENAME, CHMOD, WRITE, REMOVE.
fn ops_of(mask: EventMask) -> impl Iterator<Item = EventType> {
    [
        (EventType::Create, EventMask::CREATE | EventMask::MOVED_TO),
        (EventType::Rename, EventMask::MOVED_FROM | EventMask::MOVE_SELF),
        (EventType::Chmod, EventMask::ATTRIB),
        (EventType::Write, EventMask::MODIFY),
        (EventType::Remove, EventMask::DELETE | EventMask::DELETE_SELF),
    ]
    .into_iter()
    .filter(move |(_, bits)| mask.intersects(*bits))
    .map(|(op, _)| op)
}

#[cfg(test)]
mod tests;
