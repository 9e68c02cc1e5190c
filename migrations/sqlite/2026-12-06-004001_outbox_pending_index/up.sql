-- Issue 21: the claim looks for due jobs of ONE kind among the unfinished ones. The old index,
-- (done_at, next_attempt_at), made every kind's claim walk all unfinished jobs of every kind in
-- time order: with 77,000 agents' sends queued, each look for a media fetch or a snooze read
-- all 77,000 (5 ms per claim on PostgreSQL, the write path's costliest statement). This index
-- holds only unfinished jobs, by kind, in due order: a claim reads the jobs it takes. Every
-- query on the outbox names `done_at IS NULL`, so both planners use it.
DROP INDEX outbox_due;
CREATE INDEX outbox_pending ON outbox(kind, next_attempt_at) WHERE done_at IS NULL;
