ALTER TABLE templates DROP COLUMN content_sid;
