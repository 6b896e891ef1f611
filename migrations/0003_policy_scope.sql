-- Rate-limit policies get a scope (issue 11): 'node' (each data plane counts alone, as every
-- policy did before) or 'global' (one budget for the fleet, counted in Redis), and what a
-- global policy does while its data plane cannot reach Redis. Existing policies stay 'node'.
ALTER TABLE policies ADD COLUMN scope TEXT NOT NULL DEFAULT 'node';
ALTER TABLE policies ADD COLUMN on_store_error TEXT NOT NULL DEFAULT 'local-share';
