//! Secrets: `POST /secrets`, `GET /secrets`, `GET|POST|DELETE /secrets/{secretID}` (E2B's `NewSecret`,
//! `SecretUpdate`, `Secret`). Values are write-only: requests carry one, no answer does.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// A secret's value on the wire: `Debug` prints `<redacted>`, so a request logged by accident shows none.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct SecretText(String);

impl SecretText {
    pub fn new(value: impl Into<String>) -> SecretText {
        SecretText(value.into())
    }

    pub fn into_inner(self) -> String {
        self.0
    }
}

impl std::fmt::Debug for SecretText {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

/// Body of `POST /secrets`. The server lower-cases `name`; `sec_` is reserved for ids.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NewSecret {
    pub name: String,
    pub value: SecretText,
    /// Absent (or null): none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<BTreeMap<String, String>>,
}

/// Body of `POST /secrets/{secretID}`: the value becomes the secret's next version.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SecretUpdate {
    pub value: SecretText,
    /// When present, replaces the stored metadata; absent keeps it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<BTreeMap<String, String>>,
}

/// A secret as every route answers it: never its value.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Secret {
    /// `sec_…`; `/secrets/{secretID}` takes it or the name.
    #[serde(rename = "secretID")]
    pub secret_id: String,
    pub name: String,
    pub current_version: i64,
    pub metadata: BTreeMap<String, String>,
    pub created_at: String,
    pub updated_at: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shapes_match_e2b() {
        // As the Python SDK sends them (`NewSecret.to_dict`, `SecretUpdate.to_dict`).
        let new: NewSecret = serde_json::from_str(r#"{"name":"k","value":"v","metadata":{"a":"b"}}"#).unwrap();
        assert_eq!((new.name.as_str(), new.value.clone().into_inner()), ("k", "v".to_owned()));
        assert_eq!(new.metadata.unwrap()["a"], "b");
        let bare: NewSecret = serde_json::from_str(r#"{"name":"k","value":"v"}"#).unwrap();
        assert_eq!(bare.metadata, None);
        let update: SecretUpdate = serde_json::from_str(r#"{"value":"v2"}"#).unwrap();
        assert_eq!(update.value, SecretText::new("v2"));
        assert!(serde_json::from_str::<SecretUpdate>(r#"{"metadata":{}}"#).is_err(), "value is required");

        let secret = Secret {
            secret_id: "sec_1".into(),
            name: "k".into(),
            current_version: 2,
            metadata: BTreeMap::new(),
            created_at: "2026-01-01T00:00:00.000Z".into(),
            updated_at: "2026-01-01T00:00:01.000Z".into(),
        };
        let json = serde_json::to_value(&secret).unwrap();
        let mut keys: Vec<&str> = json.as_object().unwrap().keys().map(String::as_str).collect();
        keys.sort_unstable();
        assert_eq!(keys, ["createdAt", "currentVersion", "metadata", "name", "secretID", "updatedAt"]);
    }

    #[test]
    fn debug_redacts_values() {
        let new = NewSecret { name: "k".into(), value: SecretText::new("hunter2"), metadata: None };
        let update = SecretUpdate { value: SecretText::new("hunter2"), metadata: None };
        for printed in [format!("{new:?}"), format!("{update:?}"), format!("{:#?}", new.value)] {
            assert!(!printed.contains("hunter2") && printed.contains("<redacted>"), "{printed}");
        }
    }
}
