DROP TABLE webhook_receipts; DROP TABLE outbox; DROP TABLE templates; DROP TABLE attachments;
DROP TABLE events; DROP TABLE pending_statuses;
DROP TRIGGER messages_fts_update; DROP TRIGGER messages_fts_delete; DROP TRIGGER messages_fts_insert;
DROP TABLE messages_fts; DROP TABLE messages; DROP TABLE conversations; DROP TABLE channels;
DROP TABLE audit_log; DROP TABLE signing_keys; DROP TABLE oauth_identities; DROP TABLE oauth_states;
DROP TABLE login_failures; DROP TABLE recovery_codes; DROP TABLE totp_secrets; DROP TABLE otp_challenges;
DROP TABLE auth_codes; DROP TABLE auth_clients; DROP TABLE refresh_tokens; DROP TABLE sessions;
DROP TABLE invites; DROP TABLE user_group_members; DROP TABLE user_groups; DROP TABLE user_phones;
DROP TABLE user_emails; DROP TABLE users; DROP TABLE applications; DROP TABLE companies; DROP TABLE instance;
