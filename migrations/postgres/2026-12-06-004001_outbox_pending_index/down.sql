DROP INDEX outbox_pending;
CREATE INDEX outbox_due ON outbox(done_at, next_attempt_at);
