-- Issue 22 item 4: agents edit their messages (15 minutes) and delete private notes and
-- unsent messages; customers' WhatsApp edit/revoke notices apply to the stored message.
ALTER TABLE messages ADD COLUMN edited_at TIMESTAMP;
ALTER TABLE messages ADD COLUMN deleted_at TIMESTAMP;
