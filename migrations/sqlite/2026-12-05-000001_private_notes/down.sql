DROP TABLE mentions;
ALTER TABLE messages DROP COLUMN is_private;
