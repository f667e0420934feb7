//! Cutting a sandbox's live streams. Whoever proxies traffic to a sandbox (the control plane's proxy, a node
//! agent's proxy) holds a token per sandbox and ends every open stream when it is cancelled; whoever stops a
//! sandbox (the lifecycle on kill, pause and timeout, a node agent on its node's kill and pause) cancels it.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;

use tokio_util::sync::CancellationToken;

/// The live streams of every sandbox, and which sandboxes are being stopped.
#[derive(Debug, Default)]
pub struct StreamCuts {
    live: Mutex<HashMap<String, CancellationToken>>,
    /// Sandboxes being killed or paused: from the moment their streams are cut until the operation ends, they
    /// get no new streams (their record still says running, but envd is going away).
    stopping: Mutex<HashSet<String>>,
}

impl StreamCuts {
    /// A token cancelled when the sandbox's streams are cut.
    pub fn token(&self, id: &str) -> CancellationToken {
        self.live.lock().unwrap_or_else(|p| p.into_inner()).entry(id.to_owned()).or_default().clone()
    }

    /// The token for a new stream to the sandbox, or `None` while it is being stopped.
    pub fn serving(&self, id: &str) -> Option<CancellationToken> {
        // Token first, then the check: `stop` marks before it cancels, so a token handed out here is either
        // cancelled by it or refused by the check.
        let token = self.token(id);
        let stopping = self.stopping.lock().unwrap_or_else(|p| p.into_inner()).contains(id);
        (!stopping).then_some(token)
    }

    /// Cuts the sandbox's open streams (later ones get a fresh token).
    pub fn cut(&self, id: &str) {
        if let Some(token) = self.live.lock().unwrap_or_else(|p| p.into_inner()).remove(id) {
            token.cancel();
        }
    }

    /// Marks the sandbox as stopping and cuts its open streams. Undo with [`StreamCuts::done_stopping`].
    pub fn stop(&self, id: &str) {
        self.stopping.lock().unwrap_or_else(|p| p.into_inner()).insert(id.to_owned());
        self.cut(id);
    }

    pub fn done_stopping(&self, id: &str) {
        self.stopping.lock().unwrap_or_else(|p| p.into_inner()).remove(id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stopping_cuts_streams_and_refuses_new_ones_until_done() {
        let cuts = StreamCuts::default();
        let open = cuts.serving("a").unwrap();
        let other = cuts.serving("b").unwrap();
        cuts.stop("a");
        assert!(open.is_cancelled() && !other.is_cancelled());
        assert!(cuts.serving("a").is_none(), "no new stream while stopping");
        cuts.done_stopping("a");
        let fresh = cuts.serving("a").unwrap();
        assert!(!fresh.is_cancelled());
        cuts.cut("a");
        assert!(fresh.is_cancelled() && cuts.serving("a").is_some(), "a cut alone does not refuse new streams");
    }
}
