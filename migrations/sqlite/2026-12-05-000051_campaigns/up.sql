-- Issue 23 item 3: template campaigns.
CREATE TABLE campaigns (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    company_id BIGINT NOT NULL REFERENCES companies(id),
    name TEXT NOT NULL,
    channel_id BIGINT NOT NULL,
    template_id BIGINT NOT NULL,
    params TEXT NOT NULL,
    status TEXT NOT NULL,
    start_at TIMESTAMP,
    rate_per_second INTEGER NOT NULL,
    created_by BIGINT NOT NULL,
    lease_owner TEXT,
    lease_until TIMESTAMP,
    created_at TIMESTAMP NOT NULL,
    updated_at TIMESTAMP NOT NULL,
    finished_at TIMESTAMP
);
CREATE INDEX campaigns_company ON campaigns(company_id, id);
CREATE INDEX campaigns_status ON campaigns(status);

-- One row per phone and campaign (duplicates are dropped on insert). `status`: queued, sent
-- (its message exists: delivery is the message's status), skipped (opted out), failed.
CREATE TABLE campaign_recipients (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    campaign_id BIGINT NOT NULL REFERENCES campaigns(id),
    company_id BIGINT NOT NULL,
    phone TEXT NOT NULL,
    params TEXT,
    status TEXT NOT NULL,
    message_id TEXT,
    error TEXT,
    created_at TIMESTAMP NOT NULL,
    sent_at TIMESTAMP
);
CREATE UNIQUE INDEX campaign_recipients_phone ON campaign_recipients(campaign_id, phone);
CREATE INDEX campaign_recipients_status ON campaign_recipients(campaign_id, status, id);

-- A customer who sent STOP gets no campaign messages (START undoes it).
ALTER TABLE users ADD COLUMN opted_out BOOLEAN NOT NULL DEFAULT 0;
