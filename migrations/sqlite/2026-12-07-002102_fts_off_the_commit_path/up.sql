-- Issues 20 and 21: the full-text index is no longer written in the transaction of each
-- message. FTS5 writes a new index segment per transaction (a third of the WAL pages of a
-- one-message commit); the messages past `indexed_pk` are indexed together, in one write,
-- a few times a second and before every search (messaging::service::index_messages),
-- so a search still finds every message whose ack was returned. Edits and deletions keep
-- the index exact for the rows it holds; the rest are indexed as they are when their turn
-- comes.
CREATE TABLE messages_fts_cursor (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    indexed_pk INTEGER NOT NULL
);
INSERT INTO messages_fts_cursor (id, indexed_pk) SELECT 1, coalesce(max(pk), 0) FROM messages;
DROP TRIGGER messages_fts_insert;
DROP TRIGGER messages_fts_delete;
DROP TRIGGER messages_fts_update;
CREATE TRIGGER messages_fts_delete AFTER DELETE ON messages
WHEN old.pk <= (SELECT indexed_pk FROM messages_fts_cursor) BEGIN
    INSERT INTO messages_fts(messages_fts, rowid, content) VALUES ('delete', old.pk, old.content);
END;
CREATE TRIGGER messages_fts_update AFTER UPDATE OF content ON messages
WHEN old.pk <= (SELECT indexed_pk FROM messages_fts_cursor) BEGIN
    INSERT INTO messages_fts(messages_fts, rowid, content) VALUES ('delete', old.pk, old.content);
    INSERT INTO messages_fts(rowid, content) VALUES (new.pk, new.content);
END;
