-- Issue 23: signed outgoing webhooks and agent bots.

-- A company's subscriptions; `secrets` is the sealed JSON list of signing secrets with their
-- expiry (rotation keeps the old one valid for 24 h). `bot_id`: the subscription is a bot's
-- `webhookUrl` and gets only the events of conversations assigned to that bot.
CREATE TABLE webhook_subscriptions (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    company_id BIGINT NOT NULL REFERENCES companies(id),
    url TEXT NOT NULL,
    events TEXT NOT NULL,
    active BOOLEAN NOT NULL DEFAULT 1,
    secrets TEXT NOT NULL,
    bot_id BIGINT REFERENCES users(id),
    created_at TIMESTAMP NOT NULL,
    updated_at TIMESTAMP NOT NULL
);
CREATE INDEX webhook_subscriptions_company ON webhook_subscriptions(company_id);

-- One event for one subscription: the exact body sent on every attempt.
CREATE TABLE webhook_deliveries (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    company_id BIGINT NOT NULL,
    subscription_id BIGINT NOT NULL REFERENCES webhook_subscriptions(id) ON DELETE CASCADE,
    event_id TEXT NOT NULL,
    event_type TEXT NOT NULL,
    conversation_id BIGINT NOT NULL,
    seq BIGINT,
    body TEXT NOT NULL,
    status TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    last_code INTEGER,
    last_error TEXT,
    created_at TIMESTAMP NOT NULL,
    delivered_at TIMESTAMP
);
CREATE INDEX webhook_deliveries_subscription ON webhook_deliveries(subscription_id, id);

CREATE TABLE webhook_attempts (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    delivery_id BIGINT NOT NULL REFERENCES webhook_deliveries(id) ON DELETE CASCADE,
    status TEXT NOT NULL,
    code INTEGER,
    duration_ms BIGINT NOT NULL,
    error TEXT,
    at TIMESTAMP NOT NULL
);
CREATE INDEX webhook_attempts_delivery ON webhook_attempts(delivery_id);

-- Jobs with the same key run one at a time in id order (webhook deliveries: per subscription
-- and conversation).
ALTER TABLE outbox ADD COLUMN ordering_key TEXT;
CREATE INDEX outbox_ordering ON outbox(ordering_key, id);

-- A channel's bot gets every new conversation of the channel first.
ALTER TABLE channels ADD COLUMN bot_id BIGINT;
