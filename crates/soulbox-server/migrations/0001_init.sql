-- Portable between SQLite and PostgreSQL (used through sqlx's Any driver): times are unix milliseconds,
-- JSON documents are TEXT, booleans are INTEGER 0/1 (sqlx Any cannot decode SQLite BOOLEAN).
CREATE TABLE api_keys (
    id          TEXT PRIMARY KEY,
    name        TEXT NOT NULL,
    key_hash    TEXT NOT NULL UNIQUE,
    key_prefix  TEXT NOT NULL,
    created_at  BIGINT NOT NULL,
    revoked_at  BIGINT
);

CREATE TABLE sandboxes (
    id                  TEXT PRIMARY KEY,
    template_id         TEXT NOT NULL,
    alias               TEXT,
    node_id             TEXT NOT NULL,
    state               TEXT NOT NULL,
    started_at          BIGINT NOT NULL,
    end_at              BIGINT NOT NULL,
    cpu_count           INTEGER NOT NULL,
    memory_mb           INTEGER NOT NULL,
    disk_size_mb        INTEGER NOT NULL,
    envd_version        TEXT NOT NULL,
    envd_access_token   TEXT,
    metadata            TEXT NOT NULL,
    env_vars            TEXT NOT NULL,
    auto_pause          INTEGER NOT NULL,
    auto_pause_grace_s  INTEGER NOT NULL,
    auto_resume         INTEGER NOT NULL,
    allow_internet      INTEGER NOT NULL,
    network             TEXT NOT NULL,
    auto_pause_memory   INTEGER NOT NULL,
    address             TEXT
);

CREATE INDEX sandboxes_end_at ON sandboxes (end_at);
CREATE INDEX sandboxes_started_at ON sandboxes (started_at);
