-- Persistent volumes (E2B's `/volumes`): a team's named directories that sandboxes mount. `name` is unique per
-- team (sandboxes name volumes in `volumeMounts`). `token` is the volume's content-API bearer token, sealed with
-- the server's secrets key (team, volume id, version 0 as associated data), so it can be shown again by
-- `GET /volumes/{id}` and is never stored in clear. The files live in the volumes directory (`soulbox-volumes`).
CREATE TABLE volumes (
    id          TEXT PRIMARY KEY,
    team_id     TEXT NOT NULL,
    name        TEXT NOT NULL,
    token       TEXT NOT NULL,
    created_at  BIGINT NOT NULL
);
CREATE UNIQUE INDEX volumes_team_name ON volumes (team_id, name);

-- Which sandbox mounts which volume where: shown in the sandbox's detail, copied by forks, and checked before a
-- volume is deleted. Rows of sandboxes that are gone are ignored (joined with `sandboxes`) and removed then.
CREATE TABLE sandbox_volume_mounts (
    sandbox_id  TEXT NOT NULL,
    volume_id   TEXT NOT NULL,
    name        TEXT NOT NULL,
    path        TEXT NOT NULL,
    PRIMARY KEY (sandbox_id, path)
);
CREATE INDEX sandbox_volume_mounts_volume ON sandbox_volume_mounts (volume_id);
