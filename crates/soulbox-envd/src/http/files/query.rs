//! The `/files` query string, decoded the way Go's `url.Values.Get` does (first value wins, `+` is a space).

use percent_encoding::percent_decode_str;

#[derive(Debug, Default, Clone)]
pub struct FilesQuery {
    pub path: Option<String>,
    pub username: Option<String>,
    pub signature: Option<String>,
    pub signature_expiration: Option<String>,
}

impl FilesQuery {
    /// Parses `raw`; a value that is not valid UTF-8 after percent-decoding is an error (the paths and names
    /// envd deals in are strings).
    pub fn parse(raw: Option<&str>) -> Result<FilesQuery, String> {
        let mut query = FilesQuery::default();
        for pair in raw.unwrap_or_default().split('&').filter(|p| !p.is_empty()) {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            let key = decode(key)?;
            let slot = match key.as_str() {
                "path" => &mut query.path,
                "username" => &mut query.username,
                "signature" => &mut query.signature,
                "signature_expiration" => &mut query.signature_expiration,
                _ => continue,
            };
            if slot.is_none() {
                *slot = Some(decode(value)?);
            }
        }
        Ok(query)
    }
}

fn decode(raw: &str) -> Result<String, String> {
    let spaced = raw.replace('+', " ");
    percent_decode_str(&spaced)
        .decode_utf8()
        .map(|s| s.into_owned())
        .map_err(|_| format!("query value '{raw}' is not valid UTF-8"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_like_go() {
        let q = FilesQuery::parse(Some("path=%2Fa%20b+c&path=ignored&username=&signature=v1_a%2Bb&x=1")).unwrap();
        assert_eq!(q.path.as_deref(), Some("/a b c"));
        assert_eq!(q.username.as_deref(), Some(""));
        assert_eq!(q.signature.as_deref(), Some("v1_a+b"));
        assert_eq!(q.signature_expiration, None);
        assert!(FilesQuery::parse(Some("path=%ff")).is_err());
        assert!(FilesQuery::parse(None).unwrap().path.is_none());
    }
}
