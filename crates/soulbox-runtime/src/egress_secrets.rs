//! Where the egress gateway gets the values of `${e2b.secrets.NAME}` in a sandbox's header rules. The runtime knows
//! no teams or stores: whoever runs it (the control plane in-process, or a node agent that asks its control plane)
//! answers for a sandbox by id, at the moment a request leaves, so a secret changed or deleted is seen at once and
//! no value is kept on the node.

use std::future::Future;
use std::pin::Pin;

pub type SecretFuture<'a> = Pin<Box<dyn Future<Output = Result<Option<String>, String>> + Send + 'a>>;

pub trait EgressSecrets: Send + Sync {
    /// The current value of the secret `name` of the team that owns `sandbox`: `Ok(None)` when there is none,
    /// `Err` when it cannot be known now.
    fn secret<'a>(&'a self, sandbox: &'a str, name: &'a str) -> SecretFuture<'a>;
}
