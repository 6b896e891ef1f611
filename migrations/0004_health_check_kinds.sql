-- Active health checks become opt-in per service (issue 13).
--
-- From this version an empty health_path means "TCP connect check" (an endpoint that accepts
-- connections is healthy) instead of "GET /health", and health_disabled = 1 turns active
-- checks off. Every service stored before this migration was written with the old default
-- filled in, so its health_path is '/health' (or the path its operator chose) and it keeps
-- exactly the HTTP check it had; the UPDATE below makes that explicit for any row that
-- might still hold an empty path.
ALTER TABLE services ADD COLUMN health_disabled INTEGER NOT NULL DEFAULT 0;
UPDATE services SET health_path = '/health' WHERE health_path = '';
