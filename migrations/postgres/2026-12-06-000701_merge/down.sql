ALTER TABLE conversations DROP COLUMN merged_into;
