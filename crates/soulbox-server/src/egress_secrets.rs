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

/// A node agent's: it asks its control plane (`POST /cluster/secret` with the node token) for every request, so
/// no secret is kept on the node.
pub struct RemoteSecrets {
    pub http: reqwest::Client,
    pub server_url: String,
    pub token: String,
    pub node_id: String,
}

impl RemoteSecrets {
    async fn ask(&self, sandbox: &str, name: &str) -> Result<Option<String>, String> {
        use crate::cluster::wire::{SECRET_PATH, SecretRequest, SecretResponse};
        let url = format!("{}{SECRET_PATH}", self.server_url.trim_end_matches('/'));
        let body = SecretRequest { node_id: self.node_id.clone(), sandbox_id: sandbox.into(), name: name.into() };
        let response = self
            .http
            .post(&url)
            .bearer_auth(&self.token)
            .json(&body)
            .timeout(std::time::Duration::from_secs(10))
            .send()
            .await
            .map_err(|e| format!("asking the control plane: {e}"))?;
        if !response.status().is_success() {
            return Err(format!("the control plane answered {}", response.status()));
        }
        let answer: SecretResponse = response.json().await.map_err(|e| format!("the control plane's answer: {e}"))?;
        Ok(answer.value)
    }
}

impl EgressSecrets for RemoteSecrets {
    fn secret<'a>(&'a self, sandbox: &'a str, name: &'a str) -> SecretFuture<'a> {
        Box::pin(self.ask(sandbox, name))
    }
}

/// The installation's egress CA from the control plane (`GET /cluster/egress-ca`), retried for `patience` while
/// the control plane is not reachable yet.
pub async fn fetch_egress_ca(
    http: &reqwest::Client,
    server_url: &str,
    token: &str,
    patience: std::time::Duration,
) -> Result<soulbox_runtime::egress_ca::CaPem, String> {
    let url = format!("{}{}", server_url.trim_end_matches('/'), crate::cluster::wire::EGRESS_CA_PATH);
    let deadline = std::time::Instant::now() + patience;
    loop {
        let attempt = async {
            let response = http
                .get(&url)
                .bearer_auth(token)
                .timeout(std::time::Duration::from_secs(10))
                .send()
                .await
                .map_err(|e| format!("{url}: {e}"))?;
            if !response.status().is_success() {
                return Err(format!("{url} answered {}", response.status()));
            }
            response.json::<soulbox_runtime::egress_ca::CaPem>().await.map_err(|e| format!("{url}: {e}"))
        };
        match attempt.await {
            Ok(ca) => return Ok(ca),
            Err(e) if std::time::Instant::now() >= deadline => return Err(e),
            Err(e) => {
                tracing::info!(error = %e, "waiting for the control plane to hand out the egress CA");
                tokio::time::sleep(std::time::Duration::from_secs(1)).await;
            }
        }
    }
}
