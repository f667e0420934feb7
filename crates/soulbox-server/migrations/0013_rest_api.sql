-- The rest of E2B's API (issue 15 item 2).
--
-- Sandboxes started from each template (E2B's `spawnCount`, `lastSpawnedAt`); a table of its own because the
-- server's own templates (`base`) have no `templates` row.
CREATE TABLE template_spawns (
    template_id      TEXT PRIMARY KEY,
    spawn_count      BIGINT NOT NULL,
    last_spawned_at  BIGINT NOT NULL
);

-- The key that first built an API template (E2B's `createdBy`: SoulBox has keys, not users).
ALTER TABLE templates ADD COLUMN created_by TEXT;

-- Each stretch of a sandbox's life while it runs (team metrics: concurrent sandboxes and start rate at any time
-- in the past). A row opens when a sandbox is created (`resumed` 0) or resumed (1), and closes when it is paused
-- or gone. Closed rows older than the retention (30 days) are pruned as new ones are written.
CREATE TABLE sandbox_runs (
    sandbox_id  TEXT NOT NULL,
    team_id     TEXT NOT NULL,
    started_at  BIGINT NOT NULL,
    ended_at    BIGINT,
    resumed     INTEGER NOT NULL,
    PRIMARY KEY (sandbox_id, started_at)
);
CREATE INDEX sandbox_runs_team ON sandbox_runs (team_id, started_at);

-- Access tokens (E2B's `/access-tokens`, `Authorization: Bearer`): like API keys, only the hash is kept. A
-- token acts for its team with a member's rights on E2B's access-token routes (`/teams`, `/api-keys`,
-- templates); deleting it is final.
CREATE TABLE access_tokens (
    id            TEXT PRIMARY KEY,
    name          TEXT NOT NULL,
    token_hash    TEXT NOT NULL UNIQUE,
    token_prefix  TEXT NOT NULL,
    created_at    BIGINT NOT NULL,
    team_id       TEXT NOT NULL,
    created_by    TEXT
);
CREATE INDEX access_tokens_team ON access_tokens (team_id);
