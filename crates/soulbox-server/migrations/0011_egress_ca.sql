-- The installation's egress CA (issue 14): one row, made by the first control plane to need it, read by every
-- replica and handed to every node, so all of an installation's egress gateways sign with the same CA. The key is
-- sealed like a secret's value (`secret_box.rs`, associated data: the empty team, `egress-ca`, version 1).
CREATE TABLE egress_ca (
    id          INTEGER PRIMARY KEY,
    cert_pem    TEXT NOT NULL,
    key_sealed  TEXT NOT NULL,
    created_at  BIGINT NOT NULL
);
