-- Node-local volumes (cluster mode without a shared volumes directory, `volumes_shared = false`): the node that
-- holds a volume's files. Sandboxes mounting the volume are placed there and its content API is forwarded there.
-- NULL: the files are in the control plane's volumes directory (one machine, or a shared filesystem that every
-- node mounts at the same path).
ALTER TABLE volumes ADD COLUMN node_id TEXT;
CREATE INDEX volumes_node ON volumes (node_id);
