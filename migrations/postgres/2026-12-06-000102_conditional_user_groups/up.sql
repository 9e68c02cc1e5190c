-- Issue 18 item 4: conditional (rule-based) Fynd user groups: a JSON array of
-- {user_attribute_definition_id, type, value}; empty for groups with listed members.
ALTER TABLE user_groups ADD COLUMN conditions TEXT NOT NULL DEFAULT '[]';
