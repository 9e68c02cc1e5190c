-- Issue 21: the provider's answer to a send (its message id and the statuses it reported with
-- it), committed by the delivery worker before its next provider call. The job is finished,
-- and the message marked SENT, by a later write shared with other work (the group commit);
-- a job found answered but unfinished after a crash is finished from this answer, never sent
-- again.
ALTER TABLE outbox ADD COLUMN answer TEXT;
