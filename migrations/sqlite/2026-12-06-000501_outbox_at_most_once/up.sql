-- Issue 23: a job that must never run twice (a campaign's send) is marked `at_most_once`; its
-- worker writes `attempt_started_at` before it calls the provider, so a process killed during
-- the call leaves a trace, and the next claimer records "outcome unknown" instead of sending
-- the message a second time.
ALTER TABLE outbox ADD COLUMN at_most_once BOOLEAN NOT NULL DEFAULT 0;
ALTER TABLE outbox ADD COLUMN attempt_started_at TIMESTAMP;
