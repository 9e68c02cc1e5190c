-- Issue 22 item 1: private notes (agent-only messages, never sent to a provider) and the
-- @-mentions of agents in them.
ALTER TABLE messages ADD COLUMN is_private BOOLEAN NOT NULL DEFAULT FALSE;

CREATE TABLE mentions (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    company_id BIGINT NOT NULL REFERENCES companies(id),
    user_id BIGINT NOT NULL REFERENCES users(id),
    conversation_id BIGINT NOT NULL REFERENCES conversations(id),
    message_id TEXT NOT NULL REFERENCES messages(id),
    by_id BIGINT NOT NULL REFERENCES users(id),
    created_at TIMESTAMP NOT NULL,
    UNIQUE (message_id, user_id)
);
CREATE INDEX mentions_user ON mentions(user_id, id);
