//! `soulbox sandbox logs -f`: follows a sandbox's log by polling the logs API with a cursor, like E2B CLI's
//! `sandbox logs --follow`, until the sandbox is gone or the user interrupts.

use std::collections::HashSet;
use std::time::Duration;

use soulbox::{Client, Error};

use super::output::readable_log_line;

/// How often the API is asked for new lines (the log itself is written as the sandbox produces it).
const POLL: Duration = Duration::from_millis(1000);

/// The logs API returns lines stamped at or after `start`, so the cursor is the last timestamp seen and the
/// lines already printed at exactly that millisecond are remembered to print each line once.
#[derive(Default)]
struct Cursor {
    ms: i64,
    at_ms: HashSet<String>,
}

impl Cursor {
    /// Whether a line is new; advances the cursor.
    fn admit(&mut self, ms: i64, line: &str) -> bool {
        if ms < self.ms {
            return false;
        }
        if ms > self.ms {
            self.ms = ms;
            self.at_ms.clear();
        }
        self.at_ms.insert(line.to_owned())
    }
}

fn unix_ms(rfc3339: &str) -> Option<i64> {
    chrono::DateTime::parse_from_rfc3339(rfc3339).ok().map(|t| t.timestamp_millis())
}

pub async fn logs(client: &Client, id: &str, json: bool) -> soulbox::Result<i32> {
    let mut cursor = Cursor::default();
    loop {
        // Checked before reading so the lines a sandbox wrote just before it ended are still printed once.
        let gone = matches!(client.get_info(id).await, Err(Error::NotFound(_)));
        loop {
            let lines = match client.logs(id, Some(cursor.ms), None).await {
                Ok(lines) => lines,
                Err(Error::NotFound(_)) if cursor.ms > 0 || gone => Vec::new(),
                Err(e) => return Err(e),
            };
            let mut fresh = 0;
            for l in &lines {
                let Some(ms) = unix_ms(&l.timestamp) else { continue };
                if !cursor.admit(ms, &l.line) {
                    continue;
                }
                fresh += 1;
                if json {
                    // One JSON object per line (NDJSON), so a follower can be piped into `jq -c`.
                    println!("{}", serde_json::json!({ "timestamp": l.timestamp, "line": l.line }));
                } else {
                    println!("{} {}", l.timestamp, readable_log_line(&l.line));
                }
            }
            // A full page may have more behind it: read on at once.
            if fresh == 0 || lines.len() < 1000 {
                break;
            }
        }
        if gone {
            eprintln!("sandbox {id} is gone");
            return Ok(0);
        }
        tokio::time::sleep(POLL).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cursor_prints_each_line_once() {
        let mut c = Cursor::default();
        assert!(c.admit(10, "a"));
        assert!(c.admit(10, "b"));
        assert!(!c.admit(10, "a"), "same ms, seen");
        assert!(!c.admit(9, "old"));
        assert!(c.admit(11, "a"), "a later line with the same text is new");
        assert_eq!(unix_ms("1970-01-01T00:00:01.5Z"), Some(1500));
    }
}
