-- SAML 2.0 service-provider login (issue 18, README "Authentication service"): an auth
-- client's IdP (metadata, SP entity id) as JSON, and the assertion ids already consumed (one
-- use each, kept until the assertion expires). The SAML request records are oauth_states
-- rows with provider 'saml' (state = RelayState, nonce = the AuthnRequest ID).
ALTER TABLE auth_clients ADD COLUMN saml TEXT;
CREATE TABLE saml_assertions (
    assertion_key TEXT PRIMARY KEY NOT NULL,
    expires_at TIMESTAMP(3) NOT NULL,
    created_at TIMESTAMP(3) NOT NULL
);
