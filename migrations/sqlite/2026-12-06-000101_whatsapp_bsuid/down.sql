DROP INDEX users_wa_bsuid;
ALTER TABLE users DROP COLUMN wa_bsuid;
