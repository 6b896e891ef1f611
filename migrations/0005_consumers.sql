-- Consumers and their API keys (issue 12).
--
-- An API key is stored as the SHA-256 of the key, never the key: keys are 192 random bits,
-- so a fast hash is as good as a slow one (nobody can enumerate 2^192 candidates), and the
-- data planes can check a key with one hash. `groups` is a JSON array of names, read and
-- written whole.
CREATE TABLE consumers (
    name            TEXT PRIMARY KEY NOT NULL,
    groups          TEXT NOT NULL,
    updated_version INTEGER NOT NULL
);

CREATE TABLE api_keys (
    id         TEXT PRIMARY KEY NOT NULL,
    consumer   TEXT NOT NULL REFERENCES consumers (name) ON DELETE CASCADE,
    hash       BLOB NOT NULL UNIQUE CHECK (length(hash) = 32),
    last4      TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    expires_at INTEGER
);
CREATE INDEX api_keys_by_consumer ON api_keys (consumer);

-- Who may call a service: JSON {"methods": [...], "allowed_groups": [...], "key_sources":
-- [...]}, or '' for anyone (every service stored before this column existed).
ALTER TABLE services ADD COLUMN auth TEXT NOT NULL DEFAULT '';

-- Policies scoped to one consumer or one group of consumers (NULL: not scoped). A policy's
-- key_kind may now also be 'consumer'.
ALTER TABLE policies ADD COLUMN consumer TEXT;
ALTER TABLE policies ADD COLUMN consumer_group TEXT;
