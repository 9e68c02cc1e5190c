-- Provider API URLs are the operator's (CONFAB_WHATSAPP_API_URL, CONFAB_TWILIO_API_URL), not a
-- tenant's: a channel's own base URL let a tenant point the server at internal hosts (SSRF).
ALTER TABLE channels DROP COLUMN api_base_url;
