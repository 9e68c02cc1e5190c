-- Issue 22 item 8: a message scheduled for send_at (status SCHEDULED) waits for an outbox job
-- of kind scheduled_send due then; if the 24-hour window has closed by then it goes out as
-- fallback_template_id (with the message's params) instead, else it fails window_closed.
ALTER TABLE messages ADD COLUMN send_at TIMESTAMP(3);
ALTER TABLE messages ADD COLUMN fallback_template_id BIGINT;
