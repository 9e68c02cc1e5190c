ALTER TABLE user_groups DROP COLUMN conditions;
