//! The in-process node's side of moving templates between nodes (`Node::export_template` and the rest; the
//! control plane's side is `lifecycle::moves`): the runtime's store packs and applies layers
//! (`soulbox_runtime::template` transfer rules), here they become byte streams. Packing and unpacking are
//! blocking file work, done on the blocking pool while the bytes stream.

use std::io::{self, Write};

use bytes::Bytes;
use futures::StreamExt;
use soulbox_runtime::{Error as RuntimeError, Store, TemplateMeta};
use tokio::sync::mpsc;
use tokio_util::io::{StreamReader, SyncIoBridge};

use crate::local_node::LocalNode;
use crate::node::{ByteStream, NodeError};

/// Chunks of a layer's tar in flight between the packer and the stream (64 KiB each).
const CHUNK: usize = 64 << 10;
const CHUNKS_IN_FLIGHT: usize = 8;

fn transfer_error(e: RuntimeError) -> NodeError {
    match e {
        RuntimeError::TemplateNotFound(t) => NodeError::TemplateNotFound(t),
        RuntimeError::Invalid(m) => NodeError::Invalid(m),
        other => NodeError::Failed(other.to_string()),
    }
}

impl LocalNode {
    pub(crate) fn template_for_export(&self, name: &str) -> Result<TemplateMeta, NodeError> {
        self.runtime().store().get(name).map_err(transfer_error)
    }

    pub(crate) fn layers_missing(&self, layers: &[String]) -> Result<Vec<String>, NodeError> {
        if let Some(bad) = layers.iter().find(|l| !Store::is_layer_digest(l)) {
            return Err(NodeError::Invalid(format!("{bad:?} is not a layer digest")));
        }
        Ok(layers.iter().filter(|l| !self.runtime().store().has_layer(l)).cloned().collect())
    }

    /// The layer's tar as it is packed; a failure mid-way ends the stream with the error.
    pub(crate) fn layer_stream(&self, digest: &str) -> Result<ByteStream, NodeError> {
        if !self.runtime().store().has_layer(digest) {
            return Err(NodeError::Invalid(format!("layer {digest:?} is not on this node")));
        }
        let (tx, rx) = mpsc::channel::<io::Result<Bytes>>(CHUNKS_IN_FLIGHT);
        let (store, digest) = (self.runtime().store().clone(), digest.to_owned());
        tokio::task::spawn_blocking(move || {
            let mut out = ChannelWriter { tx: tx.clone(), buf: Vec::with_capacity(CHUNK) };
            let packed = store
                .export_layer(&digest, &mut out)
                .and_then(|()| out.flush().map_err(|source| RuntimeError::Io { path: "layer stream".into(), source }));
            if let Err(e) = packed {
                tracing::warn!(layer = %digest, error = %e, "sending a layer failed");
                let _ = tx.blocking_send(Err(io::Error::other(e.to_string())));
            }
        });
        Ok(futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|chunk| (chunk, rx)) }).boxed())
    }

    pub(crate) async fn layer_import(&self, digest: &str, tar: ByteStream) -> Result<(), NodeError> {
        let (store, digest) = (self.runtime().store().clone(), digest.to_owned());
        let reader = SyncIoBridge::new(StreamReader::new(tar));
        tokio::task::spawn_blocking(move || store.import_layer(&digest, reader))
            .await
            .map_err(|e| NodeError::Failed(format!("receiving a layer: {e}")))?
            .map_err(transfer_error)
    }

    pub(crate) fn template_import(&self, template: TemplateMeta) -> Result<(), NodeError> {
        soulbox_runtime::template::check_name(&template.name).map_err(transfer_error)?;
        let store = self.runtime().store();
        if let Some(missing) = template.layers.iter().find(|l| !store.has_layer(l)) {
            return Err(NodeError::Invalid(format!("template {}: layer {missing} is not on this node", template.name)));
        }
        store.put(&template).map_err(transfer_error)
    }
}

/// A blocking writer feeding the stream: each full chunk is sent (waiting while the receiver is behind).
struct ChannelWriter {
    tx: mpsc::Sender<io::Result<Bytes>>,
    buf: Vec<u8>,
}

impl Write for ChannelWriter {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let n = data.len().min(CHUNK - self.buf.len());
        self.buf.extend_from_slice(&data[..n]);
        if self.buf.len() == CHUNK {
            self.flush()?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = Bytes::from(std::mem::replace(&mut self.buf, Vec::with_capacity(CHUNK)));
        self.tx.blocking_send(Ok(chunk)).map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "the receiver is gone"))
    }
}
