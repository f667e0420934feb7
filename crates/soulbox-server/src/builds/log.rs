//! A build's log, bounded: what a RUN step prints is not the server's to keep without limit.
//!
//! Every line is cut at [`MAX_LINE_BYTES`] (with a note of how much was cut). A build stores at most
//! [`MAX_LINES`] lines and [`MAX_BYTES`] bytes; when it reaches either, one visible marker line says so, later
//! lines are only counted, and the last [`TAIL_LINES`] of them are kept in memory and stored at the end of the
//! build after a second marker saying how many lines were left out — so how the build ended (the last output,
//! "Build finished" or the failure) is always in the log. Memory per build is bounded by the same limits.

use std::collections::VecDeque;

use soulbox_templates::LogLevel;

pub const MAX_LINE_BYTES: usize = 8 * 1024;
pub const MAX_LINES: usize = 10_000;
pub const MAX_BYTES: usize = 8 << 20;
pub const TAIL_LINES: usize = 50;

/// One line of a build log, as it will be stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Line {
    pub unix_ms: i64,
    pub level: LogLevel,
    pub message: String,
    pub step: Option<String>,
}

/// The limits, so tests can use small ones.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub line_bytes: usize,
    pub lines: usize,
    pub bytes: usize,
    pub tail: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits { line_bytes: MAX_LINE_BYTES, lines: MAX_LINES, bytes: MAX_BYTES, tail: TAIL_LINES }
    }
}

/// Decides which lines of one build are stored.
#[derive(Debug)]
pub struct BoundedLog {
    limits: Limits,
    stored_lines: usize,
    stored_bytes: usize,
    /// Lines not stored since the limit was reached (the tail ones included).
    skipped_lines: usize,
    skipped_bytes: usize,
    tail: VecDeque<Line>,
    full: bool,
}

/// `s` cut to at most `max` bytes on a character boundary, with a note of what was cut.
pub fn cut_line(s: String, max: usize) -> String {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}… [line truncated: {} more bytes]", &s[..end], s.len() - end)
}

impl BoundedLog {
    pub fn new(limits: Limits) -> BoundedLog {
        BoundedLog {
            limits,
            stored_lines: 0,
            stored_bytes: 0,
            skipped_lines: 0,
            skipped_bytes: 0,
            tail: VecDeque::new(),
            full: false,
        }
    }

    /// The lines to store now for `line` (none once the log is full; the marker with the line that fills it).
    pub fn push(&mut self, mut line: Line) -> Vec<Line> {
        line.message = cut_line(line.message, self.limits.line_bytes);
        let size = line.message.len();
        if !self.full && self.stored_lines < self.limits.lines && self.stored_bytes + size <= self.limits.bytes {
            self.stored_lines += 1;
            self.stored_bytes += size;
            return vec![line];
        }
        let mut out = Vec::new();
        if !self.full {
            self.full = true;
            out.push(Line {
                unix_ms: line.unix_ms,
                level: LogLevel::Warn,
                message: format!(
                    "[log truncated: a build stores at most {} lines / {} MiB; later lines are counted and the last {} are stored when the build ends]",
                    self.limits.lines,
                    self.limits.bytes >> 20,
                    self.limits.tail
                ),
                step: line.step.clone(),
            });
        }
        self.skipped_lines += 1;
        self.skipped_bytes += size;
        if self.tail.len() == self.limits.tail {
            self.tail.pop_front();
        }
        if self.limits.tail > 0 {
            self.tail.push_back(line);
        }
        out
    }

    /// At the end of the build: how much was left out, then the last lines.
    pub fn finish(&mut self, unix_ms: i64) -> Vec<Line> {
        if !self.full {
            return Vec::new();
        }
        let omitted = self.skipped_lines - self.tail.len();
        let omitted_bytes = self.skipped_bytes - self.tail.iter().map(|l| l.message.len()).sum::<usize>();
        let mut out = vec![Line {
            unix_ms,
            level: LogLevel::Warn,
            message: format!(
                "[log truncated: {omitted} lines ({omitted_bytes} bytes) were not stored; the last {} lines follow]",
                self.tail.len()
            ),
            step: self.tail.front().and_then(|l| l.step.clone()),
        }];
        out.extend(self.tail.drain(..));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(i: usize) -> Line {
        Line { unix_ms: i as i64, level: LogLevel::Info, message: format!("line {i}"), step: Some("1".into()) }
    }

    #[test]
    fn lines_past_the_limit_are_counted_and_the_tail_is_kept() {
        let mut log = BoundedLog::new(Limits { line_bytes: 100, lines: 10, bytes: 1 << 20, tail: 3 });
        let mut stored: Vec<String> = Vec::new();
        for i in 0..1000 {
            stored.extend(log.push(line(i)).into_iter().map(|l| l.message));
        }
        assert_eq!(stored.len(), 11, "10 lines and the marker");
        assert!(stored[10].starts_with("[log truncated: a build stores at most 10 lines"), "{}", stored[10]);
        let end: Vec<String> = log.finish(0).into_iter().map(|l| l.message).collect();
        assert!(end[0].starts_with("[log truncated: 987 lines"), "{end:?}");
        assert_eq!(&end[1..], ["line 997", "line 998", "line 999"]);
    }

    #[test]
    fn bytes_are_bounded_too_and_long_lines_are_cut() {
        let mut log = BoundedLog::new(Limits { line_bytes: 10, lines: 1000, bytes: 60, tail: 1 });
        let long = Line { message: "é".repeat(100), ..line(0) };
        let first = log.push(long);
        assert_eq!(first[0].message, "ééééé… [line truncated: 190 more bytes]");
        assert_eq!(first[0].message.len(), 46);
        assert_eq!(log.push(line(1)).len(), 1);
        assert_eq!(log.push(line(2)).len(), 1);
        let full = log.push(line(3));
        assert!(
            full.len() == 1 && full[0].message.starts_with("[log truncated"),
            "46 + 6 + 6 + 6 bytes > 60: {full:?}"
        );
        assert_eq!(log.finish(0).len(), 2);
        let mut quiet = BoundedLog::new(Limits::default());
        assert_eq!(quiet.push(line(0)).len(), 1);
        assert!(quiet.finish(0).is_empty(), "nothing to add when nothing was left out");
    }
}
