ALTER TABLE channels DROP COLUMN bot_id;
DROP INDEX outbox_ordering;
ALTER TABLE outbox DROP COLUMN ordering_key;
DROP TABLE webhook_attempts;
DROP TABLE webhook_deliveries;
DROP TABLE webhook_subscriptions;
