-- JWT credentials of consumers (issue 12): tokens from `issuer`, signed with one key, whose
-- `claim` names the consumer.
--
-- Exactly one key source per row. An HS256 secret is stored as given, unlike API keys: HMAC
-- needs the secret itself to check a signature, so a hash would not do. The database file is
-- therefore readable by its owner only (see `store::restrict_permissions`). `algorithm` is
-- 'HS256', 'RS256', 'ES256' or 'EdDSA', NULL for a JWKS URL (its keys carry their own).
-- `audiences` is a JSON array of strings, read and written whole; `kid` NULL: any kid.
CREATE TABLE jwt_credentials (
    id             TEXT PRIMARY KEY NOT NULL,
    consumer       TEXT NOT NULL REFERENCES consumers (name) ON DELETE CASCADE,
    issuer         TEXT NOT NULL,
    algorithm      TEXT,
    hs256_secret   BLOB,
    public_key_pem TEXT,
    jwks_url       TEXT,
    audiences      TEXT NOT NULL,
    claim          TEXT NOT NULL,
    kid            TEXT,
    created_at     INTEGER NOT NULL,
    CHECK ((hs256_secret IS NOT NULL) + (public_key_pem IS NOT NULL) + (jwks_url IS NOT NULL) = 1)
);
CREATE INDEX jwt_credentials_by_consumer ON jwt_credentials (consumer);
