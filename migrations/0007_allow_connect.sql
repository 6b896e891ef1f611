-- Per-service CONNECT opt-in (issue 9). 0: CONNECT gets 405, as for every service stored
-- before this column existed.
ALTER TABLE services ADD COLUMN allow_connect INTEGER NOT NULL DEFAULT 0;
