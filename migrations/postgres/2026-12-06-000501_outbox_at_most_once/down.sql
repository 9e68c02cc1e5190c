ALTER TABLE outbox DROP COLUMN attempt_started_at;
ALTER TABLE outbox DROP COLUMN at_most_once;
