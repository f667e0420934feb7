use super::*;

const WIDE_OPEN: LogLimits = LogLimits { max_bytes: 64 * 1024, bytes_per_sec: u64::MAX };

/// A second, blocking writer on the FIFO — what `open("/proc/1/fd/2")` inside the sandbox gets.
fn reopen_writer(dir: &Path) -> std::fs::File {
    std::fs::OpenOptions::new().write(true).open(dir.join(FIFO_FILE)).unwrap()
}

#[test]
fn the_containers_write_end_never_blocks() {
    let dir = tempfile::tempdir().unwrap();
    let (_reader, writer) = open_fifo(dir.path()).unwrap();
    let mut writer = std::fs::File::from(writer);
    // Nobody drains: the pipe fills, and the next write fails instead of waiting.
    let chunk = vec![b'x'; 4096];
    let mut written = 0usize;
    let err = loop {
        match writer.write(&chunk) {
            Ok(n) => written += n,
            Err(e) => break e,
        }
        assert!(written < 64 << 20, "the FIFO never filled up");
    };
    assert_eq!(err.kind(), std::io::ErrorKind::WouldBlock, "after {written} bytes: {err}");
    let mode = std::fs::symlink_metadata(dir.path().join(FIFO_FILE)).unwrap();
    use std::os::unix::fs::{FileTypeExt, PermissionsExt};
    assert!(mode.file_type().is_fifo());
    assert_eq!(mode.permissions().mode() & 0o777, 0o600);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_stays_within_twice_the_cap_and_keeps_the_newest_lines() {
    let dir = tempfile::tempdir().unwrap();
    let (reader, writer) = open_fifo(dir.path()).unwrap();
    let drainer = Drainer::spawn(dir.path(), reader, WIDE_OPEN).unwrap();
    let path = dir.path().to_path_buf();
    // 4 MiB of numbered lines through a blocking writer, as root inside would write to /proc/1/fd/2.
    tokio::task::spawn_blocking(move || {
        let mut w = std::io::BufWriter::new(reopen_writer(&path));
        for i in 0..40_000 {
            writeln!(w, "line {i:06} {}", "y".repeat(90)).unwrap();
        }
    })
    .await
    .unwrap();
    drop(writer);
    drainer.flush().await;
    let size = |name: &str| std::fs::metadata(dir.path().join(name)).map(|m| m.len()).unwrap_or(0);
    assert!(
        size(LOG_FILE) <= 64 * 1024 && size(ROTATED_FILE) <= 64 * 1024,
        "{} + {}",
        size(LOG_FILE),
        size(ROTATED_FILE)
    );
    let lines = read(dir.path(), 0, usize::MAX).unwrap();
    assert!(lines.len() > 500, "{} lines kept", lines.len());
    assert!(lines.last().unwrap().line.starts_with("line 039999 "), "{:?}", lines.last());
    let numbers: Vec<u32> = lines.iter().map(|l| l.line[5..11].parse().unwrap()).collect();
    assert!(numbers.windows(2).all(|w| w[1] == w[0] + 1), "lines kept out of order or with gaps");
    let now = now_ms();
    assert!(lines.iter().all(|l| (now - 60_000..=now).contains(&l.unix_ms)), "host stamps");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_lines_are_split_and_an_unfinished_line_is_kept_at_the_end() {
    let dir = tempfile::tempdir().unwrap();
    let (reader, writer) = open_fifo(dir.path()).unwrap();
    let drainer = Drainer::spawn(dir.path(), reader, WIDE_OPEN).unwrap();
    let mut w = reopen_writer(dir.path());
    w.write_all(&vec![b'a'; MAX_LINE + 10]).unwrap();
    w.write_all(b"\n\nno newline").unwrap();
    drop(w);
    drop(writer);
    drainer.flush().await;
    let lines = read(dir.path(), 0, 10).unwrap();
    let lens: Vec<usize> = lines.iter().map(|l| l.line.len()).collect();
    assert_eq!(lens, vec![MAX_LINE, 10, 0, 10], "{lines:?}");
    assert_eq!(lines[3].line, "no newline");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_runtime_drains_the_same_fifo_again() {
    let dir = tempfile::tempdir().unwrap();
    let (reader, writer) = open_fifo(dir.path()).unwrap();
    let mut envd = std::fs::File::from(writer); // what the container keeps
    let first = Drainer::spawn(dir.path(), reader, WIDE_OPEN).unwrap();
    envd.write_all(b"before the restart\n").unwrap();
    first.finish().await; // the runtime goes away: no reader
    assert_eq!(envd.write(b"while nobody reads\n").unwrap_err().raw_os_error(), Some(libc::EPIPE));
    let reader = open_reader(dir.path()).unwrap().expect("the FIFO is still there");
    let second = Drainer::spawn(dir.path(), reader, WIDE_OPEN).unwrap();
    envd.write_all(b"after the restart\n").unwrap();
    second.flush().await;
    let lines: Vec<String> = read(dir.path(), 0, 10).unwrap().into_iter().map(|l| l.line).collect();
    assert_eq!(lines, ["before the restart", "after the restart"]);
    assert!(open_reader(&dir.path().join("missing")).unwrap().is_none());
}

#[test]
fn read_filters_by_start_and_limit_and_tolerates_old_lines() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join(ROTATED_FILE), "100 a\n200 b\n").unwrap();
    std::fs::write(dir.path().join(LOG_FILE), "300 c\n2026-12-06T03:00:00Z old format\n400 d\n").unwrap();
    let got = |start, limit| {
        read(dir.path(), start, limit).unwrap().into_iter().map(|l| (l.unix_ms, l.line)).collect::<Vec<_>>()
    };
    assert_eq!(got(150, 2), [(200, "b".to_string()), (300, "c".to_string())]);
    assert_eq!(got(0, 100).len(), 5);
    assert_eq!(got(0, 100)[3], (0, "2026-12-06T03:00:00Z old format".to_string()));
    assert_eq!(got(350, 100), [(400, "d".to_string())]);
    assert!(got(0, 0).is_empty());
    assert_eq!(tail(dir.path(), 6), "d\n");
    assert_eq!(tail(dir.path(), 1000), "a\nb\nc\n2026-12-06T03:00:00Z old format\nd\n");
}

#[tokio::test(start_paused = true)]
async fn host_writes_are_paced_per_second() {
    let dir = tempfile::tempdir().unwrap();
    let mut sink = Sink::open(dir.path(), LogLimits { max_bytes: 1 << 20, bytes_per_sec: 100 }).unwrap();
    assert_eq!(sink.over_budget(), None);
    sink.push(&[b'z'; 150]);
    sink.push(b"\n");
    let wait = sink.over_budget().expect("150 bytes spend a budget of 100");
    assert!(wait <= std::time::Duration::from_secs(1));
    tokio::time::advance(wait).await;
    assert_eq!(sink.over_budget(), None, "a new second, a new budget");
}
