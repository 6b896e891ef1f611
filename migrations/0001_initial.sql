-- Initial schema of the gw control plane.
--
-- Migrations are append-only: sqlx checksums every applied file, so never edit this one;
-- add 0002_*.sql instead.

-- The single, monotonically increasing config version. Every write transaction bumps it,
-- so a restart never hands out a version a data plane has already seen.
CREATE TABLE config_version (
    id      INTEGER PRIMARY KEY CHECK (id = 1),
    version INTEGER NOT NULL CHECK (version >= 0)
);
INSERT INTO config_version (id, version) VALUES (1, 0);

-- Backend services. Lists (hosts, endpoints) are JSON arrays of strings: they are always
-- read and written whole, never queried into.
CREATE TABLE services (
    name                   TEXT PRIMARY KEY NOT NULL,
    path_prefix            TEXT NOT NULL,
    hosts                  TEXT NOT NULL,
    strip_prefix           INTEGER NOT NULL,
    endpoints              TEXT NOT NULL,
    health_path            TEXT NOT NULL,
    health_interval_ms     INTEGER NOT NULL,
    health_timeout_ms      INTEGER NOT NULL,
    unhealthy_threshold    INTEGER NOT NULL,
    healthy_threshold      INTEGER NOT NULL,
    connect_timeout_ms     INTEGER NOT NULL,
    request_timeout_ms     INTEGER NOT NULL,
    load_balancing         TEXT NOT NULL,
    created_version        INTEGER NOT NULL,
    updated_version        INTEGER NOT NULL
);

-- Rate-limit policies. `service` NULL means "every service". The foreign key is a backstop:
-- the control plane checks references itself to produce messages that name the culprits.
CREATE TABLE policies (
    name            TEXT PRIMARY KEY NOT NULL,
    service         TEXT REFERENCES services (name) ON DELETE RESTRICT,
    key_kind        TEXT NOT NULL,   -- 'client_ip' or 'header'
    key_header      TEXT,            -- the header name when key_kind = 'header'
    rate_limit      INTEGER NOT NULL,
    period_ms       INTEGER NOT NULL,
    burst           INTEGER NOT NULL,
    mode            TEXT NOT NULL,
    updated_version INTEGER NOT NULL
);
CREATE INDEX policies_by_service ON policies (service);
