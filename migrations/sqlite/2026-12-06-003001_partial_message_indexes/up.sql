-- Issue 21: the two idempotency indexes of messages hold only the rows they check. A customer's
-- message has no clientId and an agent's send has no provider id until the provider answers, so
-- each message used to write an entry (keyed on NULL) into an index that can never match it.
-- Lookups name the column with `=`, which implies IS NOT NULL, so both planners use these.
DROP INDEX messages_provider_id;
DROP INDEX messages_client_id;
CREATE UNIQUE INDEX messages_provider_id ON messages(channel_id, provider_message_id)
    WHERE provider_message_id IS NOT NULL;
CREATE UNIQUE INDEX messages_client_id ON messages(sender_id, client_id) WHERE client_id IS NOT NULL;
