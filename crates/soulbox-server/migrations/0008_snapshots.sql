-- Snapshots (issue 13): a sandbox captured into a template its team owns (its `templates` row, so names stay
-- unique across teams and `Sandbox.create(<snapshot>)` and `DELETE /templates/<snapshot>` work as for any
-- template). The template's layers live on `node_id`, where sandboxes from it are placed. `named` = the caller
-- chose the name; `memory` = it holds the sandbox's memory too (else files only: its sandboxes boot cold).
CREATE TABLE snapshots (
    template_id   TEXT PRIMARY KEY,
    team_id       TEXT NOT NULL,
    sandbox_id    TEXT NOT NULL,
    node_id       TEXT NOT NULL,
    named         INTEGER NOT NULL,
    memory        INTEGER NOT NULL,
    cpu_count     INTEGER NOT NULL,
    memory_mb     INTEGER NOT NULL,
    disk_size_mb  INTEGER NOT NULL,
    created_at    BIGINT NOT NULL
);
CREATE INDEX snapshots_team_id ON snapshots (team_id);

-- Paused sandboxes are kept for a retention (`paused_retention_days`, 30 by default) and then deleted: a paused
-- record's `end_at` is now the end of its retention. Sandboxes paused before this kept their timeout's end
-- (about when they were paused): they get the default retention from there.
UPDATE sandboxes SET end_at = end_at + 2592000000 WHERE state = 'paused';
