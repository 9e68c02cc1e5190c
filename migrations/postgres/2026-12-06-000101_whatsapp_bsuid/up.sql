-- Issue 18 item 4: WhatsApp users known only by their business-scoped user id (BSUID).
ALTER TABLE users ADD COLUMN wa_bsuid TEXT;
CREATE UNIQUE INDEX users_wa_bsuid ON users (company_id, wa_bsuid) WHERE wa_bsuid IS NOT NULL;
