ALTER TABLE users DROP COLUMN opted_out;
DROP TABLE campaign_recipients;
DROP TABLE campaigns;
