-- Issue 21: only webhook deliveries have an ordering key (`hooks`); agents' sends, media
-- fetches and timers have none. The full index took an entry for every job of every kind, kept
-- it after the job was done, and had every batch of sends write an index page for it. The
-- claim's look-up names keys (`ordering_key IN (…)`), which implies `IS NOT NULL`, so both
-- planners use the partial index as they used the full one.
DROP INDEX outbox_ordering;
CREATE INDEX outbox_ordering ON outbox(ordering_key, id) WHERE ordering_key IS NOT NULL;
