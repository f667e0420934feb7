//! Tables and JSON for the client commands.

use serde::Serialize;

pub fn print_json<T: Serialize + ?Sized>(value: &T) {
    match serde_json::to_string_pretty(value) {
        Ok(s) => println!("{s}"),
        Err(e) => eprintln!("error: {e}"),
    }
}

/// A left-aligned table with a header row; widths fit the widest cell.
pub fn table(headers: &[&str], rows: Vec<Vec<String>>) {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for r in &rows {
        for (i, c) in r.iter().enumerate() {
            if i < widths.len() {
                widths[i] = widths[i].max(c.chars().count());
            }
        }
    }
    let line = |cells: Vec<&str>| {
        let mut out = String::new();
        for (i, c) in cells.iter().enumerate() {
            if i + 1 == cells.len() {
                out.push_str(c);
            } else {
                out.push_str(&format!("{c:<w$}  ", w = widths[i]));
            }
        }
        println!("{}", out.trim_end());
    };
    line(headers.to_vec());
    for r in &rows {
        line(r.iter().map(String::as_str).collect());
    }
}

/// A log line as E2B shapes it (a JSON object with `level` and `message`) as `LEVEL message`; other text as is.
pub fn readable_log_line(line: &str) -> String {
    let parsed: Option<serde_json::Map<String, serde_json::Value>> = serde_json::from_str(line).ok();
    match parsed {
        Some(o) => {
            let field = |k: &str| o.get(k).and_then(|v| v.as_str()).unwrap_or_default().to_owned();
            format!("{:<5} {}", field("level").to_uppercase(), field("message"))
        }
        None => line.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::readable_log_line;

    #[test]
    fn e2b_shaped_log_lines_read_as_level_and_message() {
        let line = r#"{"level":"warn","logger":"soulbox_envd","message":"disk almost full"}"#;
        assert_eq!(readable_log_line(line), "WARN  disk almost full");
        assert_eq!(readable_log_line("plain text"), "plain text");
    }
}
