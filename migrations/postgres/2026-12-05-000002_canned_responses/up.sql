-- Issue 22 item 2: canned responses, inserted in the console by typing /shortCode.
CREATE TABLE canned_responses (
    id BIGSERIAL PRIMARY KEY,
    company_id BIGINT NOT NULL REFERENCES companies(id),
    short_code TEXT NOT NULL,
    content TEXT NOT NULL,
    created_at TIMESTAMP(3) NOT NULL,
    updated_at TIMESTAMP(3) NOT NULL,
    UNIQUE (company_id, short_code)
);
