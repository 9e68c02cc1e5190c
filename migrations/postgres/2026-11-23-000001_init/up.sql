-- confab schema, PostgreSQL flavour. The SQLite folder holds the same logical schema;
-- tests/api/ops.rs compares the two. Timestamps are UTC (diesel Timestamp), JSON is TEXT.

CREATE TABLE instance (
    id BIGINT PRIMARY KEY CHECK (id = 1),
    bootstrapped_at TIMESTAMP(3) NOT NULL
);

CREATE TABLE companies (
    id BIGSERIAL PRIMARY KEY,
    name TEXT NOT NULL,
    created_at TIMESTAMP(3) NOT NULL
);

CREATE TABLE applications (
    id BIGSERIAL PRIMARY KEY,
    company_id BIGINT NOT NULL REFERENCES companies(id),
    name TEXT NOT NULL,
    domain TEXT NOT NULL,
    token_hash TEXT NOT NULL,
    platform_config TEXT NOT NULL DEFAULT '{}',
    created_at TIMESTAMP(3) NOT NULL
);
CREATE INDEX applications_company ON applications(company_id);

CREATE TABLE users (
    id BIGSERIAL PRIMARY KEY,
    company_id BIGINT NOT NULL REFERENCES companies(id),
    application_id BIGINT REFERENCES applications(id),
    role TEXT NOT NULL,
    first_name TEXT NOT NULL DEFAULT '',
    last_name TEXT NOT NULL DEFAULT '',
    username TEXT,
    gender TEXT,
    dob TEXT,
    password_hash TEXT,
    status TEXT NOT NULL DEFAULT 'active',
    external_id TEXT,
    meta TEXT NOT NULL DEFAULT '{}',
    attributes TEXT NOT NULL DEFAULT '{}',
    profile_pic_url TEXT,
    created_at TIMESTAMP(3) NOT NULL,
    updated_at TIMESTAMP(3) NOT NULL,
    deleted_at TIMESTAMP(3)
);
CREATE INDEX users_company_role ON users(company_id, role, id);

CREATE TABLE user_emails (
    id BIGSERIAL PRIMARY KEY,
    user_id BIGINT NOT NULL REFERENCES users(id),
    company_id BIGINT NOT NULL REFERENCES companies(id),
    email TEXT NOT NULL,
    is_primary BOOLEAN NOT NULL DEFAULT FALSE,
    verified BOOLEAN NOT NULL DEFAULT FALSE,
    active BOOLEAN NOT NULL DEFAULT TRUE,
    created_at TIMESTAMP(3) NOT NULL
);
CREATE UNIQUE INDEX user_emails_company_email ON user_emails(company_id, email) WHERE active;
CREATE INDEX user_emails_email ON user_emails(email);
CREATE INDEX user_emails_user ON user_emails(user_id);

CREATE TABLE user_phones (
    id BIGSERIAL PRIMARY KEY,
    user_id BIGINT NOT NULL REFERENCES users(id),
    company_id BIGINT NOT NULL REFERENCES companies(id),
    e164 TEXT NOT NULL,
    country_code INTEGER NOT NULL,
    is_primary BOOLEAN NOT NULL DEFAULT FALSE,
    verified BOOLEAN NOT NULL DEFAULT FALSE,
    active BOOLEAN NOT NULL DEFAULT TRUE,
    created_at TIMESTAMP(3) NOT NULL
);
CREATE UNIQUE INDEX user_phones_company_e164 ON user_phones(company_id, e164) WHERE active;
CREATE INDEX user_phones_user ON user_phones(user_id);

CREATE TABLE user_groups (
    id BIGSERIAL PRIMARY KEY,
    company_id BIGINT NOT NULL REFERENCES companies(id),
    application_id BIGINT NOT NULL REFERENCES applications(id),
    name TEXT NOT NULL,
    description TEXT NOT NULL DEFAULT '',
    file_url TEXT,
    status TEXT NOT NULL DEFAULT 'active',
    kind TEXT NOT NULL DEFAULT 'basic',
    created_at TIMESTAMP(3) NOT NULL,
    updated_at TIMESTAMP(3) NOT NULL
);

CREATE TABLE user_group_members (
    group_id BIGINT NOT NULL REFERENCES user_groups(id),
    user_id BIGINT NOT NULL REFERENCES users(id),
    created_at TIMESTAMP(3) NOT NULL,
    PRIMARY KEY (group_id, user_id)
);

CREATE TABLE invites (
    id BIGSERIAL PRIMARY KEY,
    token_hash TEXT NOT NULL UNIQUE,
    company_id BIGINT NOT NULL REFERENCES companies(id),
    role TEXT NOT NULL,
    email TEXT NOT NULL,
    invited_by BIGINT REFERENCES users(id),
    expires_at TIMESTAMP(3) NOT NULL,
    used_at TIMESTAMP(3),
    created_at TIMESTAMP(3) NOT NULL
);

CREATE TABLE sessions (
    id TEXT PRIMARY KEY NOT NULL,
    user_id BIGINT NOT NULL REFERENCES users(id),
    company_id BIGINT NOT NULL REFERENCES companies(id),
    kind TEXT NOT NULL,
    client_id TEXT,
    application_id BIGINT,
    ip TEXT NOT NULL DEFAULT '',
    user_agent TEXT NOT NULL DEFAULT '',
    domain TEXT,
    created_at TIMESTAMP(3) NOT NULL,
    last_seen_at TIMESTAMP(3) NOT NULL,
    expires_at TIMESTAMP(3) NOT NULL,
    revoked_at TIMESTAMP(3),
    revoke_reason TEXT
);
CREATE INDEX sessions_user ON sessions(user_id);

CREATE TABLE refresh_tokens (
    token_hash TEXT PRIMARY KEY NOT NULL,
    session_id TEXT NOT NULL REFERENCES sessions(id),
    parent_hash TEXT,
    created_at TIMESTAMP(3) NOT NULL,
    used_at TIMESTAMP(3),
    expires_at TIMESTAMP(3) NOT NULL
);
CREATE INDEX refresh_tokens_session ON refresh_tokens(session_id);

CREATE TABLE auth_clients (
    id BIGSERIAL PRIMARY KEY,
    company_id BIGINT NOT NULL REFERENCES companies(id),
    client_id TEXT NOT NULL UNIQUE,
    secret_hash TEXT,
    redirect_urls TEXT NOT NULL DEFAULT '[]',
    grants TEXT NOT NULL DEFAULT '[]',
    access_token_ttl BIGINT NOT NULL,
    refresh_token_ttl BIGINT NOT NULL,
    auth_code_ttl BIGINT NOT NULL,
    oidc TEXT NOT NULL DEFAULT '{}',
    created_at TIMESTAMP(3) NOT NULL,
    updated_at TIMESTAMP(3) NOT NULL
);

CREATE TABLE auth_codes (
    code_hash TEXT PRIMARY KEY NOT NULL,
    client_id TEXT NOT NULL,
    user_id BIGINT NOT NULL REFERENCES users(id),
    code_challenge TEXT,
    challenge_method TEXT,
    issued_session_id TEXT,
    expires_at TIMESTAMP(3) NOT NULL,
    used_at TIMESTAMP(3),
    created_at TIMESTAMP(3) NOT NULL
);

CREATE TABLE otp_challenges (
    request_id TEXT PRIMARY KEY NOT NULL,
    company_id BIGINT,
    user_id BIGINT,
    channel TEXT NOT NULL,
    destination TEXT NOT NULL,
    purpose TEXT NOT NULL,
    code_hash TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    expires_at TIMESTAMP(3) NOT NULL,
    resend_after TIMESTAMP(3) NOT NULL,
    consumed_at TIMESTAMP(3),
    created_at TIMESTAMP(3) NOT NULL
);
CREATE INDEX otp_challenges_destination ON otp_challenges(destination, created_at);

CREATE TABLE totp_secrets (
    user_id BIGINT PRIMARY KEY NOT NULL REFERENCES users(id),
    secret TEXT NOT NULL,
    confirmed_at TIMESTAMP(3),
    last_step BIGINT,
    created_at TIMESTAMP(3) NOT NULL
);

CREATE TABLE recovery_codes (
    id BIGSERIAL PRIMARY KEY,
    user_id BIGINT NOT NULL REFERENCES users(id),
    code_hash TEXT NOT NULL,
    used_at TIMESTAMP(3)
);
CREATE INDEX recovery_codes_user ON recovery_codes(user_id);

CREATE TABLE login_failures (
    key TEXT PRIMARY KEY NOT NULL,
    count INTEGER NOT NULL DEFAULT 0,
    lock_count INTEGER NOT NULL DEFAULT 0,
    locked_until TIMESTAMP(3),
    updated_at TIMESTAMP(3) NOT NULL
);

CREATE TABLE oauth_states (
    state_hash TEXT PRIMARY KEY NOT NULL,
    client_id TEXT,
    provider TEXT NOT NULL,
    pkce_verifier TEXT NOT NULL,
    nonce TEXT,
    redirect_uri TEXT,
    expires_at TIMESTAMP(3) NOT NULL,
    created_at TIMESTAMP(3) NOT NULL
);

CREATE TABLE oauth_identities (
    id BIGSERIAL PRIMARY KEY,
    provider TEXT NOT NULL,
    subject TEXT NOT NULL,
    user_id BIGINT NOT NULL REFERENCES users(id),
    created_at TIMESTAMP(3) NOT NULL,
    UNIQUE (provider, subject)
);

CREATE TABLE signing_keys (
    kid TEXT PRIMARY KEY NOT NULL,
    algorithm TEXT NOT NULL,
    private_key TEXT NOT NULL,
    public_key TEXT NOT NULL,
    created_at TIMESTAMP(3) NOT NULL,
    retired_at TIMESTAMP(3)
);

CREATE TABLE audit_log (
    id BIGSERIAL PRIMARY KEY,
    company_id BIGINT,
    user_id BIGINT,
    kind TEXT NOT NULL,
    ip TEXT NOT NULL DEFAULT '',
    detail TEXT NOT NULL DEFAULT '{}',
    at TIMESTAMP(3) NOT NULL
);
CREATE INDEX audit_log_company ON audit_log(company_id, id);

CREATE TABLE channels (
    id BIGSERIAL PRIMARY KEY,
    company_id BIGINT NOT NULL REFERENCES companies(id),
    provider TEXT NOT NULL,
    phone_e164 TEXT NOT NULL,
    phone_number_id TEXT,
    display_name TEXT NOT NULL,
    api_base_url TEXT,
    secrets TEXT NOT NULL,
    is_default BOOLEAN NOT NULL DEFAULT FALSE,
    created_at TIMESTAMP(3) NOT NULL,
    updated_at TIMESTAMP(3) NOT NULL,
    deleted_at TIMESTAMP(3)
);
CREATE UNIQUE INDEX channels_provider_number ON channels(provider, phone_number_id);
CREATE INDEX channels_company ON channels(company_id);

CREATE TABLE conversations (
    id BIGSERIAL PRIMARY KEY,
    company_id BIGINT NOT NULL REFERENCES companies(id),
    channel_id BIGINT NOT NULL REFERENCES channels(id),
    customer_id BIGINT NOT NULL REFERENCES users(id),
    status TEXT NOT NULL DEFAULT 'open',
    assignee_id BIGINT REFERENCES users(id),
    labels TEXT NOT NULL DEFAULT '[]',
    last_seq BIGINT NOT NULL DEFAULT 0,
    message_count BIGINT NOT NULL DEFAULT 0,
    unread_count BIGINT NOT NULL DEFAULT 0,
    last_read_seq BIGINT NOT NULL DEFAULT 0,
    last_message_id TEXT,
    last_update_time TIMESTAMP(3) NOT NULL,
    last_free_message_time TIMESTAMP(3),
    created_at TIMESTAMP(3) NOT NULL,
    UNIQUE (channel_id, customer_id)
);
CREATE INDEX conversations_company_updated ON conversations(company_id, last_update_time DESC, id DESC);

CREATE TABLE messages (
    -- pk orders a conversation's messages (keyset paging) and keys the FTS index;
    -- id is the public 32-hex UUIDv7 messageId.
    pk BIGSERIAL PRIMARY KEY,
    id TEXT NOT NULL UNIQUE,
    conversation_id BIGINT NOT NULL REFERENCES conversations(id),
    company_id BIGINT NOT NULL REFERENCES companies(id),
    channel_id BIGINT NOT NULL REFERENCES channels(id),
    direction TEXT NOT NULL,
    kind TEXT NOT NULL,
    content TEXT,
    template_id BIGINT,
    params TEXT NOT NULL DEFAULT '[]',
    status TEXT NOT NULL,
    status_rank INTEGER NOT NULL,
    provider_message_id TEXT,
    client_id TEXT,
    sender_id BIGINT REFERENCES users(id),
    error_code TEXT,
    -- seq of the message.created event (the `ack` of a replayed send names it)
    seq BIGINT NOT NULL DEFAULT 0,
    created_at TIMESTAMP(3) NOT NULL,
    updated_at TIMESTAMP(3) NOT NULL
);
CREATE INDEX messages_conversation_pk ON messages(conversation_id, pk);
CREATE UNIQUE INDEX messages_provider_id ON messages(channel_id, provider_message_id);
CREATE UNIQUE INDEX messages_client_id ON messages(sender_id, client_id);

-- Full-text search over message content (CONTRACT §3 message-search); SQLite uses an FTS5
-- table instead. db::dialect::search_messages hides the difference.
ALTER TABLE messages ADD COLUMN content_tsv tsvector
    GENERATED ALWAYS AS (to_tsvector('simple', coalesce(content, ''))) STORED;
CREATE INDEX messages_content_tsv ON messages USING GIN (content_tsv);

CREATE TABLE pending_statuses (
    id BIGSERIAL PRIMARY KEY,
    channel_id BIGINT NOT NULL REFERENCES channels(id),
    provider_message_id TEXT NOT NULL,
    status TEXT NOT NULL,
    error_code TEXT,
    at TIMESTAMP(3) NOT NULL,
    UNIQUE (channel_id, provider_message_id, status)
);

CREATE TABLE events (
    conversation_id BIGINT NOT NULL REFERENCES conversations(id),
    seq BIGINT NOT NULL,
    company_id BIGINT NOT NULL,
    kind TEXT NOT NULL,
    payload TEXT NOT NULL,
    created_at TIMESTAMP(3) NOT NULL,
    PRIMARY KEY (conversation_id, seq)
);

CREATE TABLE attachments (
    id BIGSERIAL PRIMARY KEY,
    company_id BIGINT NOT NULL REFERENCES companies(id),
    message_id TEXT REFERENCES messages(id),
    ord INTEGER,
    kind TEXT NOT NULL,
    filename TEXT NOT NULL,
    filesize BIGINT NOT NULL DEFAULT 0,
    content_type TEXT NOT NULL DEFAULT 'application/octet-stream',
    sha256 TEXT,
    storage_key TEXT,
    state TEXT NOT NULL,
    provider_media_id TEXT,
    uploaded_by BIGINT,
    created_at TIMESTAMP(3) NOT NULL
);
CREATE INDEX attachments_message ON attachments(message_id);
CREATE INDEX attachments_unattached ON attachments(created_at) WHERE message_id IS NULL;

CREATE TABLE templates (
    id BIGSERIAL PRIMARY KEY,
    company_id BIGINT NOT NULL REFERENCES companies(id),
    name TEXT NOT NULL,
    language TEXT NOT NULL,
    category TEXT NOT NULL,
    content TEXT NOT NULL,
    param_count INTEGER NOT NULL,
    created_at TIMESTAMP(3) NOT NULL,
    updated_at TIMESTAMP(3) NOT NULL,
    UNIQUE (company_id, name, language)
);

CREATE TABLE outbox (
    id BIGSERIAL PRIMARY KEY,
    kind TEXT NOT NULL,
    ref_id TEXT NOT NULL,
    company_id BIGINT NOT NULL,
    channel_id BIGINT,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_at TIMESTAMP(3) NOT NULL,
    lease_owner TEXT,
    lease_until TIMESTAMP(3),
    last_error TEXT,
    done_at TIMESTAMP(3),
    created_at TIMESTAMP(3) NOT NULL
);
CREATE INDEX outbox_due ON outbox(done_at, next_attempt_at);

CREATE TABLE webhook_receipts (
    provider TEXT NOT NULL,
    key TEXT NOT NULL,
    received_at TIMESTAMP(3) NOT NULL,
    PRIMARY KEY (provider, key)
);
