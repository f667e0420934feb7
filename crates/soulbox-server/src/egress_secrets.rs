//! The values of `${e2b.secrets.NAME}` for the egress gateway's header rules (`soulbox_runtime::egress_secrets`):
//! the secret of that name of the team that owns the sandbox, read from the store when the request leaves.

use crate::store::Store;
use soulbox_runtime::egress_secrets::{EgressSecrets, SecretFuture};

/// The control plane's own store (one machine: the runtime runs in-process).
pub struct StoreSecrets {
    pub store: Store,
}

impl StoreSecrets {
    /// The value for `sandbox`'s team, `None` when the team has no such secret.
    pub async fn lookup(store: &Store, sandbox: &str, name: &str) -> Result<Option<String>, String> {
        let record = store.get_sandbox(sandbox).await.map_err(|e| format!("the sandbox's record: {e}"))?;
        let value = store.secret_value(&record.team_id, name).await.map_err(|e| format!("reading the secret: {e}"))?;
        Ok(value.map(|v| v.expose().to_owned()))
    }
}

impl EgressSecrets for StoreSecrets {
    fn secret<'a>(&'a self, sandbox: &'a str, name: &'a str) -> SecretFuture<'a> {
        Box::pin(Self::lookup(&self.store, sandbox, name))
    }
}
