//! Group commit: concurrent writers hand their work to a committer, which runs a batch of
//! them in ONE transaction (one fsync) and then answers every writer. Each item of a batch of
//! several runs inside its own SAVEPOINT (a nested diesel transaction), so an item that fails is
//! rolled back alone and answered with its own error; the others commit. An item alone in its
//! batch is the transaction itself (two statements fewer).
//!
//! Batching policy per backend (measured, bench/README.md "Ingest"):
//! - SQLite has one writer at a time, so writers queue anyway: there the first writer to find
//!   the queue idle becomes the leader and drains the queue on a blocking thread, one
//!   transaction per turn over everything queued (at most [`MAX_BATCH`]), until it is empty.
//! - PostgreSQL already merges the WAL flushes of concurrent commits, while one batch applies
//!   its items one statement round trip after another: serialising writers behind one batch
//!   halved the throughput there. So on PostgreSQL every item is its own batch of one, on its
//!   own connection, concurrently (the same path, savepoint included).
//!
//! The blocking thread runs to completion even when the request that started it goes away, so
//! no queued item is left unanswered, and an item is acknowledged only after the commit that
//! holds it.

use std::{
    panic::AssertUnwindSafe,
    sync::{
        Mutex,
        atomic::{AtomicU64, Ordering},
    },
};

use anyhow::anyhow;
use diesel::Connection;

use super::{Backend, Db, Pool};
use crate::core::error::{ApiError, ApiResult};

/// The most items one transaction takes; the rest wait for the next one.
const MAX_BATCH: usize = 256;

/// Called after the batch ended: `None` when it committed, else why it did not.
type Completion = Box<dyn FnOnce(Option<&str>) + Send>;
/// Applies one item inside the batch transaction and returns how to answer it and whether it
/// applied. An item alone in its batch runs without a savepoint of its own (two statements
/// fewer: most deliveries on PostgreSQL, and on SQLite whenever there is no queue); its failure
/// then rolls the whole transaction back.
/// The `bool` argument says whether the item is alone in its batch.
type Job = Box<dyn FnOnce(&mut Db, bool) -> (Completion, bool) + Send>;

#[derive(Default)]
pub struct Committer {
    queue: Mutex<Queue>,
    batches: AtomicU64,
    items: AtomicU64,
}

#[derive(Default)]
struct Queue {
    jobs: Vec<Job>,
    leading: bool,
}

/// Committed transactions and the items they held, since start (for tests and the bench).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GroupStats {
    pub batches: u64,
    pub items: u64,
}

impl Pool {
    /// Runs `f` inside a shared write transaction (in its own savepoint when the transaction
    /// holds other items) and returns its result
    /// once that transaction has committed. `on_commit` runs right after the commit, exactly
    /// once, even if the caller has gone away (publish events there); on SQLite in the order
    /// the writes were submitted.
    pub async fn write_grouped<T, F, C>(&self, f: F, on_commit: C) -> ApiResult<T>
    where
        F: FnOnce(&mut Db) -> ApiResult<T> + Send + 'static,
        C: FnOnce(&mut T) + Send + 'static,
        T: Send + 'static,
    {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let job: Job = Box::new(move |c: &mut Db, alone: bool| {
            let applied = if alone { f(c) } else { c.transaction(f) };
            let ok = applied.is_ok();
            let answer: Completion = Box::new(move |commit_failed: Option<&str>| {
                let answer = match (applied, commit_failed) {
                    (Ok(mut value), None) => {
                        on_commit(&mut value);
                        Ok(value)
                    }
                    (Ok(_), Some(why)) => Err(ApiError::Internal(anyhow!("group commit failed: {why}"))),
                    (Err(e), _) => Err(e),
                };
                let _ = tx.send(answer);
            });
            (answer, ok)
        });
        match self.backend {
            Backend::Sqlite => {
                let lead = {
                    let mut q = self.committer.queue.lock().unwrap_or_else(|p| p.into_inner());
                    q.jobs.push(job);
                    !std::mem::replace(&mut q.leading, true)
                };
                if lead {
                    let this = self.clone();
                    actix_web::rt::task::spawn_blocking(move || this.drain());
                }
            }
            Backend::Postgres => {
                let this = self.clone();
                actix_web::rt::task::spawn_blocking(move || this.commit(vec![job]));
            }
        }
        rx.await.map_err(|_| ApiError::Internal(anyhow!("the group commit holding this write panicked")))?
    }

    pub fn group_stats(&self) -> GroupStats {
        GroupStats {
            batches: self.committer.batches.load(Ordering::Relaxed),
            items: self.committer.items.load(Ordering::Relaxed),
        }
    }

    /// The SQLite leader's loop: one transaction per turn over everything queued, until none is.
    fn drain(&self) {
        loop {
            let jobs = {
                let mut guard = self.committer.queue.lock().unwrap_or_else(|p| p.into_inner());
                let q = &mut *guard;
                if q.jobs.is_empty() {
                    q.leading = false;
                    return;
                }
                let take = q.jobs.len().min(MAX_BATCH);
                let rest = q.jobs.split_off(take);
                std::mem::replace(&mut q.jobs, rest)
            };
            self.commit(jobs);
        }
    }

    /// One transaction over `jobs`, then every answer, in order.
    fn commit(&self, jobs: Vec<Job>) {
        let n = jobs.len() as u64;
        let mut answers: Vec<Completion> = Vec::with_capacity(jobs.len());
        // A panicking item drops its own answer and those not yet applied (their callers get an
        // error); the transaction is not committed.
        let alone = jobs.len() == 1;
        let mut alone_failed = false;
        let outcome = std::panic::catch_unwind(AssertUnwindSafe(|| {
            self.write_blocking(|c| {
                for job in jobs {
                    let (answer, ok) = job(c, alone);
                    answers.push(answer);
                    if !ok && alone {
                        // Its own error answers it; the transaction must not keep its half.
                        alone_failed = true;
                        return Err(ApiError::Internal(anyhow!("the only item failed")));
                    }
                }
                Ok(())
            })
        }));
        let failed = match outcome {
            Ok(Ok(())) => {
                self.committer.batches.fetch_add(1, Ordering::Relaxed);
                self.committer.items.fetch_add(n, Ordering::Relaxed);
                None
            }
            Ok(Err(_)) if alone_failed => Some("rolled back".to_owned()),
            Ok(Err(e)) => {
                tracing::error!(error = %e, items = n, "group commit failed");
                Some(e.to_string())
            }
            Err(_) => Some("an item panicked".to_owned()),
        };
        for answer in answers {
            answer(failed.as_deref());
        }
    }
}
