-- Secrets (E2B's `/secrets`): a team's named values, write-only through the API. `name` is the canonical
-- lower-case name, unique per team; `metadata` a JSON object of strings. Every value is a row of
-- `secret_versions` (an update adds one and bumps `current_version`; the current one is what the egress gateway
-- reads). `ciphertext` is base64 of nonce || XChaCha20-Poly1305 ciphertext under the server's secrets key, with
-- the team, the secret's id and the version as associated data (`secret_box.rs`): no plaintext is stored, and a
-- ciphertext copied to another row does not decrypt. Versions are deleted with their secret (no foreign key:
-- the store deletes both in one transaction, as for the other tables).
CREATE TABLE secrets (
    id               TEXT PRIMARY KEY,
    team_id          TEXT NOT NULL,
    name             TEXT NOT NULL,
    current_version  BIGINT NOT NULL,
    metadata         TEXT NOT NULL,
    created_at       BIGINT NOT NULL,
    updated_at       BIGINT NOT NULL
);
CREATE UNIQUE INDEX secrets_team_name ON secrets (team_id, name);

CREATE TABLE secret_versions (
    secret_id   TEXT NOT NULL,
    version     BIGINT NOT NULL,
    ciphertext  TEXT NOT NULL,
    created_at  BIGINT NOT NULL,
    PRIMARY KEY (secret_id, version)
);
