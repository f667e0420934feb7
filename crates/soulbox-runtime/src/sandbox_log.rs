//! The sandbox log: envd's stdout/stderr, kept on the host capped and rotated, read in ranges.
//!
//! A sandbox's stdout/stderr used to be a host file in its directory — writable from inside through
//! `/proc/1/fd/2`, so root inside could grow it without limit outside its disk. Now they are the write end of a
//! FIFO (`sandbox.log.fifo`, 0600) that the runtime drains:
//! - each line is stamped with the host's time (the sandbox cannot forge when something was logged) and
//!   appended to `sandbox.log`; once that would pass `max_bytes` it becomes `sandbox.log.1` (one rotation), so
//!   the host holds at most twice the cap per sandbox;
//! - host disk writes are paced to `bytes_per_sec` per sandbox: past the budget the drainer stops reading
//!   until the next second, the FIFO fills, and writers wait — envd's own descriptor is non-blocking, so envd
//!   drops a log line instead of stalling;
//! - a FIFO has a name, so a restarted runtime opens it again and keeps draining re-adopted sandboxes (while no
//!   runtime runs, envd's writes fail with EPIPE and are lost; envd ignores SIGPIPE).
//!
//! File format: `<unix ms> <line>\n`; lines longer than [`MAX_LINE`] are split. Readers skip the stamp.
use crate::error::{Error, IoCtx, Result};
use std::io::{BufRead, Read, Seek, SeekFrom, Write};
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use tokio::sync::{mpsc, oneshot};

pub const LOG_FILE: &str = "sandbox.log";
pub const ROTATED_FILE: &str = "sandbox.log.1";
pub const FIFO_FILE: &str = "sandbox.log.fifo";
/// Lines longer than this are split (a stamp per piece).
pub const MAX_LINE: usize = 16 * 1024;
/// The smallest cap honoured (a few lines must fit).
pub const MIN_MAX_BYTES: u64 = 64 * 1024;

// The config's type (`RuntimeConfig::sandbox_log_limits`); here under its old path.
pub use crate::config::LogLimits;

/// One line of the sandbox log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogLine {
    /// When the host read it (0 for lines of an old-format log without stamps).
    pub unix_ms: i64,
    pub line: String,
}

fn io_err(path: &Path, e: rustix::io::Errno) -> Error {
    Error::Io { path: path.into(), source: e.into() }
}

/// Creates the FIFO if needed and opens it: (read end for the drainer, write end for the container). The write
/// end is non-blocking: that open file description becomes envd's stdout/stderr, whose writes must never wait.
pub fn open_fifo(dir: &Path) -> Result<(OwnedFd, OwnedFd)> {
    use rustix::fs::{FileType, Mode, OFlags};
    let path = dir.join(FIFO_FILE);
    match rustix::fs::mknodat(rustix::fs::CWD, &path, FileType::Fifo, Mode::from_raw_mode(0o600), 0) {
        Ok(()) | Err(rustix::io::Errno::EXIST) => {}
        Err(e) => return Err(io_err(&path, e)),
    }
    let reader = open_reader_at(&path)?.ok_or_else(|| Error::Invalid(format!("{} is not a FIFO", path.display())))?;
    let writer =
        rustix::fs::open(&path, OFlags::WRONLY | OFlags::NONBLOCK | OFlags::CLOEXEC | OFlags::NOFOLLOW, Mode::empty())
            .map_err(|e| io_err(&path, e))?;
    Ok((reader, writer))
}

/// The read end of an existing FIFO (re-adoption after a runtime restart); None when the sandbox has none (it
/// was started by a runtime that wrote the log directly) or the name is not a FIFO.
pub fn open_reader(dir: &Path) -> Result<Option<OwnedFd>> {
    let path = dir.join(FIFO_FILE);
    if !path.exists() {
        return Ok(None);
    }
    open_reader_at(&path)
}

fn open_reader_at(path: &Path) -> Result<Option<OwnedFd>> {
    use rustix::fs::{Mode, OFlags};
    let fd =
        rustix::fs::open(path, OFlags::RDONLY | OFlags::NONBLOCK | OFlags::CLOEXEC | OFlags::NOFOLLOW, Mode::empty())
            .map_err(|e| io_err(path, e))?;
    let st = rustix::fs::fstat(&fd).map_err(|e| io_err(path, e))?;
    Ok((rustix::fs::FileType::from_raw_mode(st.st_mode) == rustix::fs::FileType::Fifo).then_some(fd))
}

/// The drainers of one runtime instance's sandboxes, by sandbox id.
pub struct Logs {
    limits: LogLimits,
    drainers: std::sync::Mutex<std::collections::HashMap<String, Drainer>>,
}

impl Logs {
    pub fn new(limits: LogLimits) -> Logs {
        Logs { limits, drainers: Default::default() }
    }

    /// Before a container starts: the FIFO is opened and drained; returns the end the container gets as
    /// stdout/stderr. A drainer left from an earlier boot of the sandbox is replaced.
    pub fn attach(&self, id: &str, dir: &Path) -> Result<OwnedFd> {
        let (reader, writer) = open_fifo(dir)?;
        let drainer = Drainer::spawn(dir, reader, self.limits)?;
        self.drainers.lock().unwrap_or_else(|e| e.into_inner()).insert(id.to_string(), drainer);
        Ok(writer)
    }

    /// A sandbox re-adopted after a restart of the runtime: drain its FIFO again. False when it has none (a
    /// sandbox started by an older runtime, which still writes its log file directly until it restarts).
    pub fn reattach(&self, id: &str, dir: &Path) -> Result<bool> {
        let Some(reader) = open_reader(dir)? else {
            return Ok(false);
        };
        let drainer = Drainer::spawn(dir, reader, self.limits)?;
        self.drainers.lock().unwrap_or_else(|e| e.into_inner()).insert(id.to_string(), drainer);
        Ok(true)
    }

    /// Waits until what the sandbox wrote so far is in its log file.
    pub async fn flush(&self, id: &str) {
        let sender = self.drainers.lock().unwrap_or_else(|e| e.into_inner()).get(id).map(|d| d.flush.clone());
        if let Some(sender) = sender {
            flush_via(&sender).await;
        }
    }

    /// The sandbox's processes are gone (stop, delete): write what is left and stop draining.
    pub async fn detach(&self, id: &str) {
        let drainer = self.drainers.lock().unwrap_or_else(|e| e.into_inner()).remove(id);
        if let Some(d) = drainer {
            d.finish().await;
        }
    }
}

/// Best effort, bounded: a drainer that cannot answer (it should always) costs a log tail, never a caller.
async fn flush_via(sender: &mpsc::Sender<oneshot::Sender<()>>) {
    let flushed = async {
        let (done, wait) = oneshot::channel();
        if sender.send(done).await.is_ok() {
            // An error means the drainer ended, after writing everything up to the end of the FIFO.
            let _ = wait.await;
        }
    };
    if tokio::time::timeout(FLUSH_DEADLINE, flushed).await.is_err() {
        tracing::warn!("a sandbox log drainer did not answer a flush");
    }
}

const FLUSH_DEADLINE: std::time::Duration = std::time::Duration::from_secs(10);

/// Drains one sandbox's FIFO into its capped file (a task on the runtime's tokio runtime).
pub struct Drainer {
    flush: mpsc::Sender<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drainer {
    pub fn spawn(dir: &Path, reader: OwnedFd, limits: LogLimits) -> Result<Drainer> {
        let rx = tokio::net::unix::pipe::Receiver::from_owned_fd(reader).ctx(dir.join(FIFO_FILE))?;
        let mut sink = Sink::open(dir, limits)?;
        let (flush, mut requests) = mpsc::channel::<oneshot::Sender<()>>(4);
        let task = tokio::spawn(async move {
            let mut buf = vec![0u8; 64 * 1024];
            loop {
                let pause = sink.over_budget();
                tokio::select! {
                    // Past this second's budget: stop reading until it is over.
                    _ = tokio::time::sleep(pause.unwrap_or_default()), if pause.is_some() => {}
                    ready = rx.readable(), if pause.is_none() => {
                        if ready.is_err() {
                            return;
                        }
                        match rx.try_read(&mut buf) {
                            Ok(n) if n > 0 => sink.push(&buf[..n]),
                            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                            // End of file: every writer is gone (the container is).
                            _ => {
                                sink.end_partial();
                                return;
                            }
                        }
                    }
                    req = requests.recv() => {
                        // None: the Drainer was dropped (and this task aborted with it).
                        let Some(done) = req else { return };
                        let eof = drain_now(&rx, &mut buf, &mut sink);
                        let _ = done.send(());
                        if eof {
                            return;
                        }
                    }
                }
            }
        });
        Ok(Drainer { flush, task })
    }

    /// Returns once everything written to the FIFO so far is in the file (e.g. before reading the tail of a
    /// container that died): the drainer reads until the FIFO is empty, past its pace.
    pub async fn flush(&self) {
        flush_via(&self.flush).await;
    }
}

impl Drainer {
    /// Flushes, then ends the drainer; its read end of the FIFO is closed when this returns.
    pub async fn finish(mut self) {
        self.flush().await;
        self.task.abort();
        let _ = (&mut self.task).await;
    }
}

impl Drop for Drainer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Reads what the FIFO holds right now into the sink (at most a few MiB, so a writer that never stops cannot
/// keep the drainer here). Returns true at end of file (no writer left).
fn drain_now(rx: &tokio::net::unix::pipe::Receiver, buf: &mut [u8], sink: &mut Sink) -> bool {
    let mut budget = 4usize << 20;
    loop {
        if budget == 0 {
            sink.end_partial();
            return false;
        }
        // read(2) itself, not `try_read`: that answers WouldBlock without reading while tokio has not yet seen
        // the descriptor's readiness, and a flush must take what the FIFO holds now.
        match rustix::io::read(rx, &mut *buf) {
            Ok(0) => {
                sink.end_partial();
                return true;
            }
            Ok(n) => {
                sink.push(&buf[..n]);
                budget = budget.saturating_sub(n);
            }
            Err(rustix::io::Errno::AGAIN) => {
                sink.end_partial();
                return false;
            }
            Err(rustix::io::Errno::INTR) => {}
            Err(_) => return true,
        }
    }
}

/// The capped file and the pacing state.
struct Sink {
    dir: PathBuf,
    file: Option<std::fs::File>,
    size: u64,
    limits: LogLimits,
    partial: Vec<u8>,
    window: tokio::time::Instant,
    window_bytes: u64,
}

impl Sink {
    fn open(dir: &Path, limits: LogLimits) -> Result<Sink> {
        let limits =
            LogLimits { max_bytes: limits.max_bytes.max(MIN_MAX_BYTES), bytes_per_sec: limits.bytes_per_sec.max(1) };
        let mut sink = Sink {
            dir: dir.to_path_buf(),
            file: None,
            size: 0,
            limits,
            partial: Vec::new(),
            window: tokio::time::Instant::now(),
            window_bytes: 0,
        };
        sink.reopen()?;
        Ok(sink)
    }

    fn reopen(&mut self) -> Result<()> {
        use std::os::unix::fs::OpenOptionsExt;
        let path = self.dir.join(LOG_FILE);
        let f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&path)
            .ctx(&path)?;
        self.size = f.metadata().ctx(&path)?.len();
        self.file = Some(f);
        Ok(())
    }

    /// How long to stop reading when this second's budget is spent.
    fn over_budget(&mut self) -> Option<std::time::Duration> {
        let now = tokio::time::Instant::now();
        if now.duration_since(self.window) >= std::time::Duration::from_secs(1) {
            self.window = now;
            self.window_bytes = 0;
            return None;
        }
        (self.window_bytes >= self.limits.bytes_per_sec)
            .then(|| (self.window + std::time::Duration::from_secs(1)) - now)
    }

    fn push(&mut self, mut data: &[u8]) {
        while let Some(nl) = data.iter().position(|b| *b == b'\n') {
            let (line, rest) = data.split_at(nl);
            if self.partial.is_empty() {
                self.write_line(line);
            } else {
                let mut whole = std::mem::take(&mut self.partial);
                whole.extend_from_slice(line);
                self.write_line(&whole);
            }
            data = &rest[1..];
        }
        self.partial.extend_from_slice(data);
        while self.partial.len() >= MAX_LINE {
            let piece: Vec<u8> = self.partial.drain(..MAX_LINE).collect();
            self.write_line(&piece);
        }
    }

    /// A line without its newline yet (the writer is gone, or someone waits for the file).
    fn end_partial(&mut self) {
        if !self.partial.is_empty() {
            let piece = std::mem::take(&mut self.partial);
            self.write_line(&piece);
        }
    }

    fn write_line(&mut self, line: &[u8]) {
        // (an empty line is a line too: `chunks` of an empty slice yields nothing)
        let empty: &[u8] = &[];
        let pieces = line.chunks(MAX_LINE);
        for piece in pieces.chain(line.is_empty().then_some(empty)) {
            let mut rec = format!("{} ", now_ms()).into_bytes();
            rec.extend_from_slice(piece);
            rec.push(b'\n');
            if self.size + rec.len() as u64 > self.limits.max_bytes
                && let Err(e) = self.rotate()
            {
                tracing::warn!(dir = %self.dir.display(), error = %e, "rotating the sandbox log failed; dropping a line");
                return;
            }
            let Some(f) = self.file.as_mut() else { return };
            if let Err(e) = f.write_all(&rec) {
                tracing::warn!(dir = %self.dir.display(), error = %e, "writing the sandbox log failed");
                return;
            }
            self.size += rec.len() as u64;
            self.window_bytes += rec.len() as u64;
        }
    }

    fn rotate(&mut self) -> Result<()> {
        self.file = None;
        let (cur, old) = (self.dir.join(LOG_FILE), self.dir.join(ROTATED_FILE));
        std::fs::rename(&cur, &old).ctx(&old)?;
        self.reopen()
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

/// Splits a stored record into (stamp, text); a line without a stamp (old format) gets 0.
fn parse(record: &[u8]) -> LogLine {
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    if let Some(sp) = record.iter().position(|b| *b == b' ')
        && sp > 0
        && sp <= 16
        && record[..sp].iter().all(u8::is_ascii_digit)
        && let Ok(ms) = std::str::from_utf8(&record[..sp]).unwrap_or("x").parse::<i64>()
    {
        return LogLine { unix_ms: ms, line: text(&record[sp + 1..]) };
    }
    LogLine { unix_ms: 0, line: text(record) }
}

/// Calls `f` for every stored line, oldest first (rotated file, then the current one). Reads at most the last
/// `2 × MAX_FILE_READ` bytes of each file, whatever is on disk, so memory stays bounded. Stops when `f` says so.
fn for_each_line(dir: &Path, mut f: impl FnMut(LogLine) -> bool) -> Result<()> {
    const MAX_FILE_READ: u64 = 16 << 20;
    for name in [ROTATED_FILE, LOG_FILE] {
        let path = dir.join(name);
        let mut file = match std::fs::File::open(&path) {
            Ok(file) => file,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e).ctx(&path),
        };
        let len = file.metadata().ctx(&path)?.len();
        let skip_partial = len > MAX_FILE_READ;
        if skip_partial {
            file.seek(SeekFrom::Start(len - MAX_FILE_READ)).ctx(&path)?;
        }
        let mut reader = std::io::BufReader::new(file);
        let mut first = true;
        let mut record = Vec::new();
        loop {
            record.clear();
            let n = (&mut reader).take(MAX_LINE as u64 + 32).read_until(b'\n', &mut record).ctx(&path)?;
            if n == 0 {
                break;
            }
            if std::mem::take(&mut first) && skip_partial {
                continue; // the seek landed inside a line
            }
            while record.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
                record.pop();
            }
            if !f(parse(&record)) {
                return Ok(());
            }
        }
    }
    Ok(())
}

/// Lines stamped at or after `start_ms`, oldest first, at most `limit`.
pub fn read(dir: &Path, start_ms: i64, limit: usize) -> Result<Vec<LogLine>> {
    let mut out = Vec::new();
    if limit == 0 {
        return Ok(out);
    }
    for_each_line(dir, |l| {
        if l.unix_ms >= start_ms {
            out.push(l);
        }
        out.len() < limit
    })?;
    Ok(out)
}

/// The last `max_bytes` of log text (without stamps), for error messages.
pub fn tail(dir: &Path, max_bytes: usize) -> String {
    let mut lines: std::collections::VecDeque<String> = Default::default();
    let mut size = 0usize;
    let _ = for_each_line(dir, |l| {
        size += l.line.len() + 1;
        lines.push_back(l.line);
        while size > max_bytes && lines.len() > 1 {
            size -= lines.pop_front().map(|s| s.len() + 1).unwrap_or(0);
        }
        true
    });
    let mut text: String = lines.into_iter().map(|l| l + "\n").collect();
    if text.len() > max_bytes {
        let mut cut = text.len() - max_bytes;
        while !text.is_char_boundary(cut) {
            cut += 1;
        }
        text.drain(..cut);
    }
    text
}

impl crate::Runtime {
    /// The sandbox's log lines stamped at or after `start_ms`, oldest first, at most `limit` (E2B's `start` and
    /// `limit` of `GET /sandboxes/{id}/logs`). Works for stopped sandboxes too; memory stays bounded by the cap.
    pub async fn logs(&self, id: &str, start_ms: i64, limit: usize) -> Result<Vec<LogLine>> {
        crate::config::check_id(id)?;
        if !self.inner.sandboxes.lock().unwrap_or_else(|e| e.into_inner()).contains_key(id) {
            return Err(Error::NotFound(id.into()));
        }
        let dir = self.inner.dir(id);
        tokio::task::spawn_blocking(move || read(&dir, start_ms, limit))
            .await
            .map_err(|e| Error::Invalid(e.to_string()))?
    }
}

#[cfg(test)]
#[path = "sandbox_log_tests.rs"]
mod tests;
