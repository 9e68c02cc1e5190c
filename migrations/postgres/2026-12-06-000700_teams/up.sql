-- Issue 22 item 6: teams of agents per company, a conversation's team (given by its channel's
-- default team when it opens, or set by an agent), round-robin auto-assignment to the team's
-- online agents, and where an agent is online (agent_presence: one row per agent and node
-- with a live WebSocket, refreshed by the node's heartbeat; rows of a node that stopped
-- heartbeating are ignored once seen_at is older than the presence timeout).
CREATE TABLE teams (
    id BIGSERIAL PRIMARY KEY,
    company_id BIGINT NOT NULL REFERENCES companies(id),
    name TEXT NOT NULL,
    auto_assign BOOLEAN NOT NULL DEFAULT FALSE,
    max_open_per_agent INTEGER,
    created_at TIMESTAMP(3) NOT NULL,
    updated_at TIMESTAMP(3) NOT NULL,
    UNIQUE (company_id, name)
);
CREATE TABLE team_members (
    team_id BIGINT NOT NULL REFERENCES teams(id),
    user_id BIGINT NOT NULL REFERENCES users(id),
    company_id BIGINT NOT NULL REFERENCES companies(id),
    last_assigned_at TIMESTAMP(3),
    PRIMARY KEY (team_id, user_id)
);
ALTER TABLE conversations ADD COLUMN team_id BIGINT REFERENCES teams(id);
CREATE INDEX conversations_company_team ON conversations(company_id, team_id);
CREATE INDEX conversations_company_assignee ON conversations(company_id, assignee_id, status);
ALTER TABLE channels ADD COLUMN team_id BIGINT REFERENCES teams(id);
CREATE TABLE agent_presence (
    user_id BIGINT NOT NULL REFERENCES users(id),
    node TEXT NOT NULL,
    company_id BIGINT NOT NULL REFERENCES companies(id),
    seen_at TIMESTAMP(3) NOT NULL,
    PRIMARY KEY (user_id, node)
);
