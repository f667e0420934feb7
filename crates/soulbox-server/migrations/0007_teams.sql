-- Teams (issue 11): API keys belong to a team, and so do sandboxes and API-built templates; another team's
-- resources answer 404. A key is an `admin` (manages nodes and keys) or a `member`. Existing databases migrate
-- into the team `default`, and their oldest active key becomes its admin.
--
-- Per-team limits: NULL = the server's default (`[teams]` in its config). Admissions lock the team's row
-- (`UPDATE teams SET limit_seq = ...`) and count in the same transaction, so API replicas on one database never
-- let a team past a limit together.
CREATE TABLE teams (
    id             TEXT PRIMARY KEY,
    name           TEXT NOT NULL UNIQUE,
    created_at     BIGINT NOT NULL,
    max_sandboxes  BIGINT,
    max_vcpus      BIGINT,
    max_memory_mb  BIGINT,
    max_builds     BIGINT,
    limit_seq      BIGINT NOT NULL DEFAULT 0
);
INSERT INTO teams (id, name, created_at) VALUES ('team_default', 'default', 0);

ALTER TABLE api_keys ADD COLUMN team_id TEXT NOT NULL DEFAULT 'team_default';
ALTER TABLE api_keys ADD COLUMN role TEXT NOT NULL DEFAULT 'member';
UPDATE api_keys SET role = 'admin'
 WHERE id = (SELECT id FROM api_keys WHERE revoked_at IS NULL ORDER BY created_at, id LIMIT 1);

ALTER TABLE sandboxes ADD COLUMN team_id TEXT NOT NULL DEFAULT 'team_default';
CREATE INDEX sandboxes_team_id ON sandboxes (team_id);

ALTER TABLE templates ADD COLUMN team_id TEXT NOT NULL DEFAULT 'team_default';

-- A team's capacity held for a sandbox being created or resumed, from the admission until its record counts
-- (dropped in the same transaction as the insert or the paused → running transition); `expires_at` (unix ms)
-- frees it when a replica dies mid-create. INTEGER like `sandboxes`' columns: PostgreSQL sums INTEGERs to BIGINT
-- (a BIGINT sum would be NUMERIC, which the Any driver cannot decode).
CREATE TABLE team_holds (
    id          TEXT PRIMARY KEY,
    team_id     TEXT NOT NULL,
    cpu_count   INTEGER NOT NULL,
    memory_mb   INTEGER NOT NULL,
    expires_at  BIGINT NOT NULL
);
CREATE INDEX team_holds_team_id ON team_holds (team_id);
