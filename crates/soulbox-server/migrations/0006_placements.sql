-- Placement holds (issue 7): a replica that picks a node for a new sandbox first holds the sandbox's vCPUs and memory
-- on that node here, taken while it holds the node row's lock (`UPDATE nodes SET placement_seq = ...` in the same
-- transaction), so replicas placing at the same moment never overfill a node. The hold is dropped once the
-- sandbox's own row exists (that row counts from then on) or the create failed; a replica that dies mid-create
-- holds the capacity only until `expires_at` (unix ms).
CREATE TABLE placements (
    id          TEXT PRIMARY KEY,
    node_id     TEXT NOT NULL,
    cpu_count   INTEGER NOT NULL,
    memory_mb   INTEGER NOT NULL,
    expires_at  BIGINT NOT NULL
);
CREATE INDEX placements_node_id ON placements (node_id);
ALTER TABLE nodes ADD COLUMN placement_seq BIGINT NOT NULL DEFAULT 0;
