-- Cluster mode (issue 7): node agents register and heartbeat into this table, so every API replica sees the same
-- set of nodes. A node's status is derived when read (heartbeat age, `confirmed`, `draining`, `trouble`), so no
-- replica has to run a timer to mark a node unhealthy.
CREATE TABLE nodes (
    id                   TEXT PRIMARY KEY,
    address              TEXT NOT NULL,
    api_secret           TEXT NOT NULL,
    region               TEXT NOT NULL,
    version              TEXT NOT NULL,
    cpu_count            INTEGER NOT NULL,
    memory_mb            BIGINT NOT NULL,
    cpu_available_milli  BIGINT NOT NULL,
    memory_available_mb  BIGINT NOT NULL,
    sandbox_count        INTEGER NOT NULL,
    trouble              TEXT,
    confirmed            INTEGER NOT NULL,
    draining             INTEGER NOT NULL,
    registered_at        BIGINT NOT NULL,
    last_heartbeat       BIGINT NOT NULL,
    last_health_check    BIGINT NOT NULL
);

CREATE INDEX sandboxes_node_id ON sandboxes (node_id);
