DROP TABLE agent_presence;
ALTER TABLE channels DROP COLUMN team_id;
DROP INDEX conversations_company_assignee;
DROP INDEX conversations_company_team;
ALTER TABLE conversations DROP COLUMN team_id;
DROP TABLE team_members;
DROP TABLE teams;
