DROP INDEX messages_provider_id;
DROP INDEX messages_client_id;
CREATE UNIQUE INDEX messages_provider_id ON messages(channel_id, provider_message_id);
CREATE UNIQUE INDEX messages_client_id ON messages(sender_id, client_id);
