//! Which agents are online, for every node to see (issue 22 item 6: auto-assignment goes to a
//! team's online agents). Online means: the agent has a live WebSocket on some node.
//!
//! Each node records its own agents in the database (`agent_presence`, one row per agent and
//! node): a row is written when an agent's first socket on the node opens and deleted when the
//! last one closes, and the node's heartbeat refreshes `seen_at` of all its rows every
//! [`HEARTBEAT`]. A row whose `seen_at` is older than [`TIMEOUT`] belongs to a node that died
//! without closing its sockets and counts as offline. The database rather than Redis because
//! the assignment reads it in the transaction that assigns (so it works on one SQLite node,
//! on PostgreSQL nodes with or without Redis, and a crashed node's agents drop out by
//! themselves); the writes are one per agent coming or going per node, batched, plus one
//! UPDATE per heartbeat while the node has agents online.

use std::{collections::HashMap, time::Duration};

use diesel::prelude::*;
use tokio::sync::mpsc;

use crate::core::{
    auth::session::Principal,
    db::{Db, Pool, schema::agent_presence},
    error::ApiResult,
    types::now,
};

/// How often a node refreshes its agents' rows.
pub const HEARTBEAT: Duration = Duration::from_secs(10);
/// A row older than this is a dead node's: three missed heartbeats.
pub const TIMEOUT: chrono::Duration = chrono::Duration::seconds(30);

enum Change {
    Open { user_id: i64, company_id: i64 },
    Close { user_id: i64 },
}

/// This node's presence recorder: sessions report their sockets, one task writes.
#[derive(Clone)]
pub struct Presence {
    tx: mpsc::UnboundedSender<Change>,
}

impl Presence {
    /// Starts the node's writer task (needs a running actix/tokio system).
    pub fn start(db: Pool) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        let node = crate::core::crypto::random_hex_id();
        actix_web::rt::spawn(run(db, node, rx));
        Self { tx }
    }

    /// A WebSocket of `p` opened on this node (staff only: customers and bots are not assigned
    /// by teams).
    pub fn opened(&self, p: &Principal) {
        if p.role.is_staff() {
            let _ = self.tx.send(Change::Open { user_id: p.user_id, company_id: p.company_id });
        }
    }

    pub fn closed(&self, p: &Principal) {
        if p.role.is_staff() {
            let _ = self.tx.send(Change::Close { user_id: p.user_id });
        }
    }
}

/// The writer: applies socket changes in order (all queued ones in one transaction) and
/// refreshes this node's rows on every heartbeat; a heartbeat that finds the rows differ from
/// what the node knows (a failed write) rewrites them.
async fn run(db: Pool, node: String, mut rx: mpsc::UnboundedReceiver<Change>) {
    // user → (company, open sockets on this node)
    let mut open: HashMap<i64, (i64, usize)> = HashMap::new();
    let mut tick = tokio::time::interval(HEARTBEAT);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            change = rx.recv() => {
                let Some(first) = change else { break };
                let mut changes = vec![first];
                while let Ok(more) = rx.try_recv() {
                    changes.push(more);
                }
                // Per user, whether a row must appear (Some(company)) or go (None).
                let mut writes: Vec<(i64, Option<i64>)> = Vec::new();
                for change in changes {
                    let (user_id, row) = match change {
                        Change::Open { user_id, company_id } => {
                            let n = open.entry(user_id).or_insert((company_id, 0));
                            n.1 += 1;
                            (user_id, (n.1 == 1).then_some(Some(company_id)))
                        }
                        Change::Close { user_id } => {
                            let gone = match open.get_mut(&user_id) {
                                Some(n) => {
                                    n.1 = n.1.saturating_sub(1);
                                    n.1 == 0
                                }
                                None => false,
                            };
                            if gone {
                                open.remove(&user_id);
                            }
                            (user_id, gone.then_some(None))
                        }
                    };
                    if let Some(row) = row {
                        writes.retain(|(u, _)| *u != user_id);
                        writes.push((user_id, row));
                    }
                }
                if writes.is_empty() {
                    continue;
                }
                let node = node.clone();
                if let Err(e) = db.write(move |c| apply(c, &node, &writes)).await {
                    tracing::warn!(error = ?e, "recording agent presence; the next heartbeat repairs it");
                }
            }
            _ = tick.tick() => {
                if open.is_empty() {
                    continue;
                }
                let (node, rows) = (node.clone(), open.iter().map(|(u, (co, _))| (*u, *co)).collect::<Vec<_>>());
                if let Err(e) = db.write(move |c| heartbeat(c, &node, &rows)).await {
                    tracing::warn!(error = ?e, "agent presence heartbeat");
                }
            }
        }
    }
}

fn apply(c: &mut Db, node: &str, writes: &[(i64, Option<i64>)]) -> ApiResult<()> {
    let t = now();
    for &(user_id, row) in writes {
        diesel::delete(agent_presence::table.find((user_id, node))).execute(c)?;
        if let Some(company_id) = row {
            diesel::insert_into(agent_presence::table)
                .values((
                    agent_presence::user_id.eq(user_id),
                    agent_presence::node.eq(node),
                    agent_presence::company_id.eq(company_id),
                    agent_presence::seen_at.eq(t),
                ))
                .execute(c)?;
        }
    }
    Ok(())
}

fn heartbeat(c: &mut Db, node: &str, rows: &[(i64, i64)]) -> ApiResult<()> {
    let t = now();
    let refreshed = diesel::update(agent_presence::table.filter(agent_presence::node.eq(node)))
        .set(agent_presence::seen_at.eq(t))
        .execute(c)?;
    if refreshed != rows.len() {
        diesel::delete(agent_presence::table.filter(agent_presence::node.eq(node))).execute(c)?;
        let writes: Vec<(i64, Option<i64>)> = rows.iter().map(|(u, co)| (*u, Some(*co))).collect();
        apply(c, node, &writes)?;
    }
    // Dead nodes' rows, long expired: nobody reads them any more.
    diesel::delete(agent_presence::table.filter(agent_presence::seen_at.lt(t - TIMEOUT * 10))).execute(c)?;
    Ok(())
}

/// Which of these staff members of the company are online on any node.
pub fn online_among(c: &mut Db, company_id: i64, user_ids: &[i64]) -> ApiResult<Vec<i64>> {
    if user_ids.is_empty() {
        return Ok(Vec::new());
    }
    let mut ids: Vec<i64> = agent_presence::table
        .filter(agent_presence::company_id.eq(company_id))
        .filter(agent_presence::user_id.eq_any(user_ids))
        .filter(agent_presence::seen_at.gt(now() - TIMEOUT))
        .select(agent_presence::user_id)
        .load(c)?;
    ids.sort_unstable();
    ids.dedup();
    Ok(ids)
}
