-- Issue 22 item 3: reactions on messages, one per person and message: the customer's (from
-- WhatsApp reaction notices; by_customer) or an agent's (POST /message/{id}/reaction, sent to
-- WhatsApp through an outbox job of kind reaction). An empty emoji removes the row.
CREATE TABLE message_reactions (
    id BIGSERIAL PRIMARY KEY,
    company_id BIGINT NOT NULL REFERENCES companies(id),
    message_id TEXT NOT NULL,
    by_id BIGINT NOT NULL,
    by_customer BOOLEAN NOT NULL,
    emoji TEXT NOT NULL,
    updated_at TIMESTAMP(3) NOT NULL,
    UNIQUE (message_id, by_id)
);
