-- Templates built through the API (issue 5). Portable like 0001: unix-ms BIGINT times, TEXT JSON, INTEGER booleans.
-- The template's id is its name (the runtime's template name); the node's template store holds its layers.
CREATE TABLE templates (
    id              TEXT PRIMARY KEY,
    public          INTEGER NOT NULL,
    cpu_count       INTEGER NOT NULL,
    memory_mb       INTEGER NOT NULL,
    created_at      BIGINT NOT NULL,
    updated_at      BIGINT NOT NULL,
    latest_build_id TEXT
);

CREATE TABLE template_builds (
    id          TEXT PRIMARY KEY,
    template_id TEXT NOT NULL,
    status      TEXT NOT NULL,
    recipe      TEXT,
    reason      TEXT,
    reason_step TEXT,
    cpu_count   INTEGER NOT NULL,
    memory_mb   INTEGER NOT NULL,
    created_at  BIGINT NOT NULL,
    finished_at BIGINT
);

CREATE INDEX template_builds_template ON template_builds (template_id);

CREATE TABLE template_build_logs (
    build_id TEXT NOT NULL,
    seq      INTEGER NOT NULL,
    ts       BIGINT NOT NULL,
    level    TEXT NOT NULL,
    message  TEXT NOT NULL,
    step     TEXT,
    PRIMARY KEY (build_id, seq)
);
