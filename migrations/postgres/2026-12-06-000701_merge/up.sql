-- Issue 22 item 7: a conversation merged into another of the same customer keeps its row
-- (resolved, its events) and points at the conversation that now holds its messages.
ALTER TABLE conversations ADD COLUMN merged_into BIGINT REFERENCES conversations(id);
