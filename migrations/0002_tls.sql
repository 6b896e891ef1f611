-- TLS (issue 10): certificates for the data planes' HTTPS listener, and per-service HTTPS
-- settings. Append-only, like every migration.

-- Certificates and their private keys. The database file holds keys from here on, so the
-- control plane keeps it readable by its owner only (0600).
CREATE TABLE certificates (
    name             TEXT PRIMARY KEY NOT NULL,
    cert_chain_pem   TEXT NOT NULL,
    private_key_pem  TEXT NOT NULL,
    updated_version  INTEGER NOT NULL
);

-- Redirect plain HTTP to HTTPS (308), and how https:// endpoints are verified.
ALTER TABLE services ADD COLUMN https_redirect INTEGER NOT NULL DEFAULT 0;
ALTER TABLE services ADD COLUMN upstream_ca_pem TEXT NOT NULL DEFAULT '';
ALTER TABLE services ADD COLUMN upstream_tls_insecure INTEGER NOT NULL DEFAULT 0;
