//! The query of a signed `/files` URL — what envd checks a signature against and what the proxy routes by —
//! decoded the way Go's `url.Values.Get` does (E2B's envd): first value wins, `+` is a space, unknown keys are
//! ignored.

use percent_encoding::percent_decode_str;

use super::{Claims, Operation};

/// The parameter SoulBox's SDK adds to the URLs it signs so the proxy can route them without a search (E2B's
/// SDKs name no sandbox there). It only routes: envd checks the signature against its own token.
pub const SANDBOX_ID_PARAM: &str = "sandbox_id";

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct SignedQuery {
    pub path: Option<String>,
    pub username: Option<String>,
    pub signature: Option<String>,
    pub signature_expiration: Option<String>,
    pub sandbox_id: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QueryError {
    /// The paths and names envd deals in are strings.
    #[error("query value '{0}' is not valid UTF-8")]
    NotUtf8(String),
    #[error("invalid signature_expiration '{0}': not an integer")]
    BadExpiration(String),
}

impl SignedQuery {
    pub fn parse(raw: Option<&str>) -> Result<SignedQuery, QueryError> {
        let mut query = SignedQuery::default();
        for pair in raw.unwrap_or_default().split('&').filter(|p| !p.is_empty()) {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            let slot = match decode(key)?.as_str() {
                "path" => &mut query.path,
                "username" => &mut query.username,
                "signature" => &mut query.signature,
                "signature_expiration" => &mut query.signature_expiration,
                SANDBOX_ID_PARAM => &mut query.sandbox_id,
                _ => continue,
            };
            if slot.is_none() {
                *slot = Some(decode(value)?);
            }
        }
        Ok(query)
    }

    /// The expiry in unix seconds; `None` when the URL has none.
    pub fn expiration(&self) -> Result<Option<i64>, QueryError> {
        self.signature_expiration
            .as_deref()
            .map(|raw| raw.parse::<i64>().map_err(|_| QueryError::BadExpiration(raw.to_string())))
            .transpose()
    }

    /// What this URL's signature must cover for `operation` (absent path and user are empty, as E2B signs them).
    pub fn claims(&self, operation: Operation) -> Result<Claims<'_>, QueryError> {
        Ok(Claims {
            path: self.path.as_deref().unwrap_or_default(),
            operation,
            user: self.username.as_deref().unwrap_or_default(),
            expiration: self.expiration()?,
        })
    }
}

fn decode(raw: &str) -> Result<String, QueryError> {
    let spaced = raw.replace('+', " ");
    percent_decode_str(&spaced).decode_utf8().map(|s| s.into_owned()).map_err(|_| QueryError::NotUtf8(raw.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_like_go() {
        let q =
            SignedQuery::parse(Some("path=%2Fa%20b+c&path=ignored&username=&signature=v1_a%2Bb&x=1&sandbox_id=iabc"))
                .unwrap();
        assert_eq!(q.path.as_deref(), Some("/a b c"));
        assert_eq!(q.username.as_deref(), Some(""));
        assert_eq!(q.signature.as_deref(), Some("v1_a+b"));
        assert_eq!(q.sandbox_id.as_deref(), Some("iabc"));
        assert_eq!(q.signature_expiration, None);
        assert_eq!(SignedQuery::parse(Some("path=%ff")), Err(QueryError::NotUtf8("%ff".into())));
        assert!(SignedQuery::parse(None).unwrap().path.is_none());
    }

    #[test]
    fn claims_carry_the_expiry_and_refuse_a_bad_one() {
        let q = SignedQuery::parse(Some("path=a&username=user&signature_expiration=170")).unwrap();
        let c = q.claims(Operation::Write).unwrap();
        assert_eq!((c.path, c.user, c.expiration, c.operation), ("a", "user", Some(170), Operation::Write));
        let bad = SignedQuery::parse(Some("signature_expiration=soon")).unwrap();
        assert_eq!(bad.expiration(), Err(QueryError::BadExpiration("soon".into())));
    }
}
