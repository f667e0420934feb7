//! Directory watchers (inotify), streamed (`WatchDir`) or polled (`CreateWatcher`/`GetWatcherEvents`).

#[derive(Default)]
pub struct WatchRegistry {}

impl WatchRegistry {
    /// Moves every inotify event the kernel has already queued into the watchers' buffers and streams, so
    /// that events caused by a completed write are visible before the write's response returns.
    pub fn sync(&self) {}
}
