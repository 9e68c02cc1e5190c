-- Issue 22 item 5: a snoozed conversation reopens by itself at snoozed_until (an outbox job of
-- kind `unsnooze` due then claims it with UPDATE ... WHERE status = 'snoozed' AND
-- snoozed_until <= now) or at the customer's next message.
ALTER TABLE conversations ADD COLUMN snoozed_until TIMESTAMP;
