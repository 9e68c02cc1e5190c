-- OAuth/OIDC logins (CONTRACT §5): a state record is claimed once (used_at) and carries the
-- PKCE challenge the confab auth client sent, for the confab code issued at the end.
ALTER TABLE oauth_states ADD COLUMN used_at TIMESTAMP(3);
ALTER TABLE oauth_states ADD COLUMN code_challenge TEXT;
