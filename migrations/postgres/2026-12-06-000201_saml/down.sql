DROP TABLE saml_assertions;
ALTER TABLE auth_clients DROP COLUMN saml;
