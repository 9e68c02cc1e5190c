DROP INDEX outbox_ordering;
CREATE INDEX outbox_ordering ON outbox(ordering_key, id);
