-- Per-service body idle timeouts (issue 9). NULL: the data plane's own default
-- (--request-body-timeout, --response-body-timeout).
ALTER TABLE services ADD COLUMN request_body_timeout_ms INTEGER;
ALTER TABLE services ADD COLUMN response_body_timeout_ms INTEGER;
