ALTER TABLE messages DROP COLUMN fallback_template_id;
ALTER TABLE messages DROP COLUMN send_at;
