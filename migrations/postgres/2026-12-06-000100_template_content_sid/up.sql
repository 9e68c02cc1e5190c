-- Issue 18 item 4: a template may name a Twilio Content template (HX…), sent as ContentSid.
ALTER TABLE templates ADD COLUMN content_sid TEXT;
