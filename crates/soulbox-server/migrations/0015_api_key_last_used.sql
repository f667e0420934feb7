-- When each API key last authenticated (E2B's `TeamAPIKey.lastUsed`), unix milliseconds; NULL until first used.
-- Written at most once a minute per key (store/api_key_use.rs), so a busy key does not cost a write per request.
ALTER TABLE api_keys ADD COLUMN last_used_at BIGINT;
