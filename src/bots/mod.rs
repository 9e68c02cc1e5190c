//! Agent bots (issue 23 item 2, README "Agent bots"): a bot is a user of role `bot` with an API
//! token (`cfbot_…`, stored only as the id of the session it opens,
//! `core::auth::session::bot_session_id`). It works conversations like an agent — assigned by
//! `assigneeId` or first on every new conversation of a channel whose `botId` it is — through
//! the same messaging service functions, and receives their events over `/ws` or, when it has
//! a `webhookUrl`, as signed outgoing webhooks (a `hooks` subscription limited to the
//! conversations assigned to it).

pub mod routes;
pub mod service;
