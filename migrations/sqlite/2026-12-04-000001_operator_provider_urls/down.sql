ALTER TABLE channels ADD COLUMN api_base_url TEXT;
