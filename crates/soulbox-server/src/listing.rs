//! `GET /v2/sandboxes` query semantics (spec §1.6): the doubly-encoded metadata filter, comma-joined states,
//! and opaque pagination tokens.

use std::collections::BTreeMap;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use soulbox_protocol::api::SandboxState;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ListQueryError {
    #[error("invalid metadata filter: {0}")]
    Metadata(String),
    #[error("invalid state {0:?}: expected running or paused")]
    State(String),
    #[error("invalid nextToken")]
    Token,
    #[error("limit must be between 1 and {MAX_PAGE}")]
    Limit,
}

/// The largest page (and the default).
pub const MAX_PAGE: usize = 100;

/// A page request of the listing routes: `limit` (1..=100, default 100) and where `nextToken` left off.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PageParams {
    pub limit: usize,
    pub after: Option<PageCursor>,
}

/// `limit` and `nextToken` as given (an empty token is none).
pub fn page_params(limit: Option<&str>, next_token: Option<&str>) -> Result<PageParams, ListQueryError> {
    let limit = match limit.map(str::parse::<usize>) {
        None => MAX_PAGE,
        Some(Ok(n)) if (1..=MAX_PAGE).contains(&n) => n,
        Some(_) => return Err(ListQueryError::Limit),
    };
    let after = next_token.filter(|t| !t.is_empty()).map(PageCursor::decode).transpose()?;
    Ok(PageParams { limit, after })
}

/// Cuts `items` (in page order, already past the cursor) to `limit`; the token of the next page when some were
/// cut, made from the last item kept (`cursor_of`).
pub fn take_page<T>(items: &mut Vec<T>, limit: usize, cursor_of: impl Fn(&T) -> PageCursor) -> Option<String> {
    let has_more = items.len() > limit;
    items.truncate(limit);
    items.last().filter(|_| has_more).map(|last| cursor_of(last).encode())
}

/// Parses the `metadata` parameter (already URL-decoded once by the query parser): unescape it again, split on
/// `&`, each part on `=` (exactly two parts), unescape key and value. Matches E2B's `parseFilters`.
pub fn parse_metadata_filter(raw: &str) -> Result<BTreeMap<String, String>, ListQueryError> {
    let unescaped = query_unescape(raw)?;
    let mut out = BTreeMap::new();
    for pair in unescaped.split('&').filter(|p| !p.is_empty()) {
        let parts: Vec<&str> = pair.split('=').collect();
        if parts.len() != 2 {
            return Err(ListQueryError::Metadata(format!("{pair:?} is not key=value")));
        }
        out.insert(query_unescape(parts[0])?, query_unescape(parts[1])?);
    }
    Ok(out)
}

/// Parses `state=running,paused`; absent means both.
pub fn parse_states(raw: Option<&str>) -> Result<Vec<SandboxState>, ListQueryError> {
    let Some(raw) = raw.filter(|r| !r.is_empty()) else {
        return Ok(vec![SandboxState::Running, SandboxState::Paused]);
    };
    raw.split(',')
        .map(|s| match s.trim() {
            "running" => Ok(SandboxState::Running),
            "paused" => Ok(SandboxState::Paused),
            other => Err(ListQueryError::State(other.to_owned())),
        })
        .collect()
}

/// Position after the last item of a page: its start (or creation) time (unix ms) and id (ties broken by id).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PageCursor {
    pub started_at_ms: i64,
    pub sandbox_id: String,
}

impl PageCursor {
    pub fn encode(&self) -> String {
        URL_SAFE_NO_PAD.encode(format!("{}__{}", self.started_at_ms, self.sandbox_id))
    }

    pub fn decode(token: &str) -> Result<PageCursor, ListQueryError> {
        let raw = URL_SAFE_NO_PAD.decode(token.trim_end_matches('=')).map_err(|_| ListQueryError::Token)?;
        let text = String::from_utf8(raw).map_err(|_| ListQueryError::Token)?;
        let (ms, id) = text.split_once("__").ok_or(ListQueryError::Token)?;
        let started_at_ms = ms.parse().map_err(|_| ListQueryError::Token)?;
        // Sandbox ids, and template names for the snapshot listing.
        if id.is_empty() || !id.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b)) {
            return Err(ListQueryError::Token);
        }
        Ok(PageCursor { started_at_ms, sandbox_id: id.to_owned() })
    }
}

/// Go's `url.QueryUnescape`: `+` is a space, `%XX` a byte; the result must be UTF-8.
fn query_unescape(s: &str) -> Result<String, ListQueryError> {
    let plus_as_space = s.replace('+', " ");
    let bytes: Vec<u8> = percent_encoding::percent_decode_str(&plus_as_space).collect();
    if s.split('%').skip(1).any(|chunk| chunk.len() < 2 || !chunk.as_bytes()[..2].iter().all(u8::is_ascii_hexdigit)) {
        return Err(ListQueryError::Metadata(format!("bad escape in {s:?}")));
    }
    String::from_utf8(bytes).map_err(|_| ListQueryError::Metadata(format!("{s:?} is not UTF-8")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_of_at_most_a_hundred_with_a_token_when_more_remain() {
        assert_eq!(page_params(None, None), Ok(PageParams { limit: 100, after: None }));
        assert_eq!(page_params(Some("7"), Some("")), Ok(PageParams { limit: 7, after: None }));
        for bad in ["0", "101", "-1", "x"] {
            assert_eq!(page_params(Some(bad), None), Err(ListQueryError::Limit), "{bad}");
        }
        assert_eq!(page_params(None, Some("not a token")), Err(ListQueryError::Token));
        let cursor = |n: &i64| PageCursor { started_at_ms: *n, sandbox_id: format!("s{n}") };
        let mut items: Vec<i64> = (1..=5).collect();
        let token = take_page(&mut items, 2, cursor).expect("more remain");
        assert_eq!(items, [1, 2]);
        assert_eq!(page_params(None, Some(&token)).unwrap().after, Some(cursor(&2)));
        let mut last: Vec<i64> = vec![4, 5];
        assert_eq!(take_page(&mut last, 2, cursor), None, "a full last page has no token");
    }

    #[test]
    fn metadata_filter_as_the_python_sdk_encodes_it() {
        // Python: urlencode({quote("user id"): quote("a&b=c"), "x": "1"}) → "user%2520id=a%2526b%253Dc&x=1",
        // which is what remains after the query parser undid the HTTP client's own encoding.
        let parsed = parse_metadata_filter("user%2520id=a%2526b%253Dc&x=1").unwrap();
        assert_eq!(parsed.get("user id").map(String::as_str), Some("a&b=c"));
        assert_eq!(parsed.get("x").map(String::as_str), Some("1"));
        assert!(parse_metadata_filter("novalue").is_err());
        assert!(parse_metadata_filter("a=b=c").is_err());
        assert!(parse_metadata_filter("").unwrap().is_empty());
    }

    #[test]
    fn states_and_tokens() {
        assert_eq!(parse_states(None).unwrap().len(), 2);
        assert_eq!(parse_states(Some("paused")).unwrap(), vec![SandboxState::Paused]);
        assert!(parse_states(Some("running,dead")).is_err());
        let c = PageCursor { started_at_ms: 1700000000123, sandbox_id: "iabc123".into() };
        assert_eq!(PageCursor::decode(&c.encode()).unwrap(), c);
        assert_eq!(PageCursor::decode("!!"), Err(ListQueryError::Token));
        let snapshot = PageCursor { started_at_ms: 1, sandbox_id: "My-snap_1.2".into() };
        assert_eq!(PageCursor::decode(&snapshot.encode()).unwrap(), snapshot);
        let bad = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode("1__a/b");
        assert_eq!(PageCursor::decode(&bad), Err(ListQueryError::Token));
    }
}
