//! A sandbox's log lines in E2B's shapes. envd writes `tracing`'s text format (`<time> <LEVEL> <target>:
//! <message>`, coloured when ANSI is on); E2B's agent writes one JSON object per line, and its clients rely on
//! that: the official CLI's `e2b sandbox logs` runs `JSON.parse` on every `line` and reads its `level` and
//! `logger`. So each line (ANSI colour already stripped by the node) is parsed here into level, logger and
//! message, and shown as E2B shows it: the
//! deprecated `logs[].line` is a JSON object `{"level","logger","message"}`, `logEntries`/v2 entries carry the
//! level and `fields.logger`. A line that already is a JSON object keeps its fields. Anything else is an `info`
//! line whose message is the text as written.

use std::collections::BTreeMap;

use soulbox_protocol::api::SandboxLogEntry;

use crate::node::LogLine;
use crate::time::rfc3339;

/// A log line's severity, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    Debug,
    Info,
    Warn,
    Error,
}

impl Level {
    /// E2B's `LogLevel` names (`debug`, `info`, `warn`, `error`); tracing's `trace` counts as `debug`.
    pub fn parse(raw: &str) -> Option<Level> {
        match raw.to_ascii_lowercase().as_str() {
            "trace" | "debug" => Some(Level::Debug),
            "info" => Some(Level::Info),
            "warn" | "warning" => Some(Level::Warn),
            "error" | "fatal" | "panic" => Some(Level::Error),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Level::Debug => "debug",
            Level::Info => "info",
            Level::Warn => "warn",
            Level::Error => "error",
        }
    }
}

/// One parsed line.
#[derive(Debug, Clone, PartialEq)]
pub struct Parsed {
    pub unix_ms: i64,
    pub level: Level,
    pub message: String,
    /// `logger` (the writer's module) and, for JSON lines, their other string fields.
    pub fields: BTreeMap<String, String>,
}

impl Parsed {
    pub fn of(line: &LogLine) -> Parsed {
        let text = line.line.as_str();
        let (level, message, fields) = json_line(text)
            .or_else(|| tracing_line(text))
            .unwrap_or_else(|| (Level::Info, text.to_owned(), BTreeMap::from([("logger".to_owned(), String::new())])));
        Parsed { unix_ms: line.unix_ms, level, message, fields }
    }

    /// E2B's structured entry (`logEntries`, v2 `logs`).
    pub fn entry(&self) -> SandboxLogEntry {
        SandboxLogEntry {
            fields: self.fields.clone(),
            level: self.level.as_str().to_owned(),
            message: self.message.clone(),
            timestamp: rfc3339(self.unix_ms),
        }
    }

    /// E2B's deprecated `line`: the entry as one JSON object.
    pub fn json_line(&self) -> String {
        let mut object = serde_json::Map::new();
        for (k, v) in &self.fields {
            object.insert(k.clone(), serde_json::Value::String(v.clone()));
        }
        object.insert("level".into(), self.level.as_str().into());
        object.insert("message".into(), self.message.clone().into());
        object.entry("logger").or_insert_with(|| "".into());
        serde_json::Value::Object(object).to_string()
    }
}

/// A line that is a JSON object with a level.
fn json_line(text: &str) -> Option<(Level, String, BTreeMap<String, String>)> {
    let serde_json::Value::Object(object) = serde_json::from_str(text.trim()).ok()? else { return None };
    let level = object.get("level").and_then(|l| l.as_str()).and_then(Level::parse)?;
    let message = ["message", "msg"].iter().find_map(|k| object.get(*k).and_then(|m| m.as_str())).unwrap_or("");
    let fields = object
        .iter()
        .filter(|(k, _)| !matches!(k.as_str(), "level" | "message" | "msg" | "timestamp" | "time"))
        .map(|(k, v)| (k.clone(), v.as_str().map_or_else(|| v.to_string(), str::to_owned)))
        .collect();
    Some((level, message.to_owned(), fields))
}

/// tracing's text format: `<time> <LEVEL> [spans: ]<target>: <message>`.
fn tracing_line(text: &str) -> Option<(Level, String, BTreeMap<String, String>)> {
    let mut words = text.trim_start().splitn(2, char::is_whitespace);
    let stamp = words.next()?;
    crate::time::parse_rfc3339_ms(stamp)?;
    let rest = words.next()?.trim_start();
    let (level_word, rest) = rest.split_once(char::is_whitespace).unwrap_or((rest, ""));
    let level = Level::parse(level_word)?;
    let rest = rest.trim_start();
    // The target is the last `word:` before the message (spans come first, each also ending in `:`).
    let mut logger = String::new();
    let mut message = rest;
    while let Some((head, tail)) = message.split_once(": ") {
        if head.is_empty() || head.contains(char::is_whitespace) && !head.contains('{') {
            break;
        }
        logger = head.to_owned();
        message = tail;
        if !head.ends_with('}') {
            break;
        }
    }
    Some((level, message.to_owned(), BTreeMap::from([("logger".to_owned(), logger)])))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Parsed {
        Parsed::of(&LogLine { unix_ms: 1_700_000_000_000, line: text.into() })
    }

    #[test]
    fn tracing_text_lines() {
        let plain = parse("2026-12-07T00:27:19.123456Z  WARN soulbox_envd::process: process exited code=1");
        assert_eq!((plain.level, plain.message.as_str()), (Level::Warn, "process exited code=1"));
        assert_eq!(plain.fields["logger"], "soulbox_envd::process");
        let colon = parse("2026-12-07T00:27:19Z  INFO soulbox_envd: listening on: 49983");
        assert_eq!((colon.message.as_str(), colon.fields["logger"].as_str()), ("listening on: 49983", "soulbox_envd"));
        let spans = parse("2026-12-07T00:27:19Z DEBUG start{pid=3}: soulbox_envd::rpc: sent");
        assert_eq!(
            (spans.level, spans.message.as_str(), spans.fields["logger"].as_str()),
            (Level::Debug, "sent", "soulbox_envd::rpc")
        );
    }

    #[test]
    fn json_and_free_text_lines() {
        let json = parse(r#"{"level":"error","logger":"processSvc","msg":"boom","pid":3}"#);
        assert_eq!((json.level, json.message.as_str()), (Level::Error, "boom"));
        assert_eq!((json.fields["logger"].as_str(), json.fields["pid"].as_str()), ("processSvc", "3"));
        let free = parse("envd listening");
        assert_eq!((free.level, free.message.as_str()), (Level::Info, "envd listening"));
        // The deprecated `line` is JSON the official CLI can parse, with `level` and `logger`.
        let line: serde_json::Value = serde_json::from_str(&free.json_line()).unwrap();
        assert_eq!(line, serde_json::json!({"level": "info", "logger": "", "message": "envd listening"}));
        assert_eq!(free.entry().timestamp, "2023-11-14T22:13:20.000Z");
        assert!(
            Level::Warn > Level::Info && Level::parse("TRACE") == Some(Level::Debug) && Level::parse("x").is_none()
        );
    }
}
