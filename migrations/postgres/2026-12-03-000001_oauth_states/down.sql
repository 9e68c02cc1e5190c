ALTER TABLE oauth_states DROP COLUMN code_challenge;
ALTER TABLE oauth_states DROP COLUMN used_at;
