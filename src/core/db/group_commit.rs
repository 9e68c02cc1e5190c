//! Group commit: concurrent writers hand their work to a committer, which runs a batch of
//! them in ONE transaction (one fsync) and then answers every writer.
//!
//! Two kinds of work:
//! - [`Pool::write_grouped`]: a closure. Each closure of a batch of several runs inside its own
//!   SAVEPOINT (a nested diesel transaction), so one that fails is rolled back alone and
//!   answered with its own error; the others commit. A closure alone in its batch is the
//!   transaction itself (two statements fewer).
//! - [`Pool::write_batched`]: an item of a [`Batched`] type. Every queued item of one type is
//!   handed to [`Batched::apply`] at once, which writes them with set-based statements (one
//!   multi-row INSERT for all their rows rather than one per item). When that fails, each item
//!   is applied again alone in its own savepoint, so an item's failure stays its own.
//!
//! Batching policy per backend (measured, bench/README.md "Ingest"):
//! - SQLite has one writer at a time, so writers queue anyway: there the first writer to find
//!   the queue idle becomes the leader and drains the queue on a blocking thread, one
//!   transaction per turn over everything queued (at most [`MAX_BATCH`]), until it is empty
//!   and stays so for [`LINGER`].
//! - PostgreSQL already merges the WAL flushes of concurrent commits, while a batch of closures
//!   applies its items one statement round trip after another: serialising closures behind one
//!   batch halved the throughput there. So on PostgreSQL every closure is its own batch of one,
//!   on its own connection, concurrently (the same path, savepoint included). [`Batched`]
//!   items, whose batch costs a few round trips whatever its size, queue behind one leader as
//!   on SQLite.
//! - Under open-loop load (writes arriving one by one, each finding the queue empty) the leader
//!   may wait a little for company before a transaction ([`Pacing`]).
//!
//! The blocking thread runs to completion even when the request that started it goes away, so
//! no queued item is left unanswered, and an item is acknowledged only after the commit that
//! holds it.

use std::{
    any::{Any, TypeId},
    panic::AssertUnwindSafe,
    sync::{Condvar, Mutex, MutexGuard},
    time::{Duration, Instant},
};

use anyhow::anyhow;
use diesel::{Connection, r2d2::R2D2Connection};
use prometheus::{Counter, CounterVec, IntCounter, Opts, Registry};

use super::{Backend, Db, Manager, Pool};
use crate::core::error::{ApiError, ApiResult};

/// The most items one transaction takes; the rest wait for the next one.
const MAX_BATCH: usize = 256;
/// A leader that gathers ([`Pacing`]) stops waiting once this many items are queued: their
/// transaction's fixed cost is then shared enough.
const GATHER: usize = 8;
/// How long a leader that emptied the queue waits for the next item before it retires.
const LINGER: Duration = Duration::from_millis(50);
/// How long after its last fruitless wait a leader waits once more, to learn whether waiting
/// would now gather anything ([`Pacing`]).
const PROBE_EVERY: Duration = Duration::from_millis(250);

/// Called after the batch ended with `None` when it committed, else why it did not: runs the
/// item's after-commit work and gives back its [`Reply`].
type Completion = Box<dyn FnOnce(Option<&str>) -> Reply + Send>;
/// The connection a leader keeps from one of its transactions to the next.
type Held = Option<diesel::r2d2::PooledConnection<Manager>>;

/// Hands an item's result to its writer (wakes the task that waits for it), on its runtime.
struct Reply {
    home: Home,
    send: Handover,
}

/// The part of a [`Reply`] that hands the result over.
type Handover = Box<dyn FnOnce() + Send>;

/// The runtime (and thread) a writer waits on.
struct Home(Option<(std::thread::ThreadId, tokio::runtime::Handle)>);

impl Home {
    fn here() -> Self {
        Self(tokio::runtime::Handle::try_current().ok().map(|h| (std::thread::current().id(), h)))
    }

    fn is(&self, other: &Self) -> bool {
        match (&self.0, &other.0) {
            (Some((a, _)), Some((b, _))) => a == b,
            _ => false,
        }
    }
}

/// A writer waiting for its item's result.
struct Waiter<T> {
    tx: tokio::sync::oneshot::Sender<ApiResult<T>>,
    home: Home,
}

impl<T> Waiter<T> {
    fn new() -> (Self, tokio::sync::oneshot::Receiver<ApiResult<T>>) {
        let (tx, rx) = tokio::sync::oneshot::channel();
        (Self { tx, home: Home::here() }, rx)
    }
}

/// Work left for the end of the after-commit hooks a thread is running ([`later`]).
type Later = Vec<Box<dyn FnOnce()>>;

thread_local! {
    static LATER: std::cell::RefCell<Option<Later>> = const { std::cell::RefCell::new(None) };
}

/// True while this thread runs a commit's after-commit hooks (`on_commit`): work handed to
/// [`later`] then runs once they all have, before any writer is answered.
pub fn in_after_commit() -> bool {
    LATER.with_borrow(Option::is_some)
}

/// Runs `f` when the after-commit hooks this thread is running have all run (at once when it
/// runs none). The broker uses it to hand a commit's events to the hub in one message.
pub fn later(f: impl FnOnce() + 'static) {
    let queued = LATER.with_borrow_mut(|later| match later {
        Some(later) => {
            later.push(Box::new(f));
            None
        }
        None => Some(f),
    });
    if let Some(f) = queued {
        f();
    }
}

/// Runs the hooks in `f`, then what they left for [`later`] (also when `f` panics: what the
/// hooks did before was committed).
pub fn after_commit<R>(f: impl FnOnce() -> R) -> R {
    if in_after_commit() {
        return f();
    }
    LATER.set(Some(Vec::new()));
    struct RunLater;
    impl Drop for RunLater {
        fn drop(&mut self) {
            for f in LATER.take().unwrap_or_default() {
                f();
            }
        }
    }
    let _run_later = RunLater;
    f()
}

/// Answers the writers: those of one thread together, by one task spawned there, so the thread
/// is woken once for all of them (a writer woken from here was woken, and on a busy core
/// switched to, once per item; bench/README.md, issue 21).
fn reply_all(replies: Vec<Reply>) {
    let mut homes: Vec<(Home, Vec<Handover>)> = Vec::new();
    for Reply { home, send } in replies {
        match homes.iter_mut().find(|(h, _)| h.is(&home)) {
            Some((_, sends)) => sends.push(send),
            None => homes.push((home, vec![send])),
        }
    }
    for (home, sends) in homes {
        match home.0 {
            Some((_, runtime)) if sends.len() > 1 => {
                // A runtime shut down drops the task and with it the answers: their writers
                // are gone with it.
                runtime.spawn(async move { sends.into_iter().for_each(|send| send()) });
            }
            _ => sends.into_iter().for_each(|send| send()),
        }
    }
}
/// Applies one item inside the batch transaction and returns how to answer it and whether it
/// applied. An item alone in its batch runs without a savepoint of its own (two statements
/// fewer: most deliveries on PostgreSQL, and on SQLite whenever there is no queue); its failure
/// then rolls the whole transaction back.
/// The `bool` argument says whether the item is alone in its batch.
type Job = Box<dyn FnOnce(&mut Db, bool) -> (Completion, bool) + Send>;
/// Applies every queued item of one [`Batched`] type (type-erased [`Pending`]s); returns their
/// answers in order and whether the transaction may commit. The `bool` argument says whether
/// they are alone in the batch (then one item, without a savepoint).
type RunBatch = fn(&mut Db, Vec<Box<dyn Any + Send>>, bool) -> (Vec<Completion>, bool);

/// Work that is applied together with the other queued work of its type: the committer hands
/// every queued item of the type to [`Batched::apply`] in one call, inside the shared
/// transaction.
pub trait Batched: Send + Sized + 'static {
    type Out: Send + 'static;

    /// Applies `items` (in arrival order) and returns one output per item, in the same order.
    /// An error fails them all; the committer then applies each item alone, in its own
    /// savepoint, so only the item at fault answers with the error.
    fn apply(c: &mut Db, items: &[Self]) -> ApiResult<Vec<Self::Out>>;
}

/// One queued [`Batched`] item with its answer channel and its after-commit hook.
struct Pending<B: Batched> {
    item: B,
    waiter: Waiter<B::Out>,
    on_commit: OnCommit<B>,
}

/// What runs after the commit that holds an item, with its output.
type OnCommit<B> = Box<dyn FnOnce(&mut <B as Batched>::Out) + Send>;

enum Entry {
    Single(Job),
    Batched { kind: TypeId, payload: Box<dyn Any + Send>, run: RunBatch },
}

#[derive(Default)]
pub struct Committer {
    queue: Mutex<Queue>,
    /// Wakes a leader that gathers ([`Pacing`]) when [`GATHER`] items are queued, and one that
    /// lingers on an empty queue when an item arrives.
    arrived: Condvar,
    stats: CommitStats,
    /// Leaders started, that is drains begun on a blocking thread.
    #[cfg(test)]
    leaders: std::sync::atomic::AtomicU64,
}

/// What the committer did since start, as Prometheus counters (`GET /metrics`, registered by
/// [`Pool::register_metrics`]): committed transactions, the items they held, and where the
/// time of every transaction went, by phase ([`Phases`]).
#[derive(Clone)]
struct CommitStats {
    batches: IntCounter,
    items: IntCounter,
    seconds: CounterVec,
    /// `seconds` of each phase, in [`PHASES`] order, looked up once rather than per transaction.
    phases: [Counter; 4],
}

/// The phases of a transaction, as [`Phases`] and the `phase` label name them.
const PHASES: [&str; 4] = ["wait", "apply", "commit", "after"];

impl Default for CommitStats {
    fn default() -> Self {
        const NAMES: &str = "the group commit's metric names are valid";
        let seconds = CounterVec::new(
            Opts::new(
                "group_commit_seconds_total",
                "Time of the group commit's transactions by phase: wait (a connection, on SQLite \
                 the write lock, and BEGIN), apply (the writes), commit (COMMIT), after (the \
                 after-commit work with the writers' answers)",
            ),
            &["phase"],
        )
        .expect(NAMES);
        Self {
            batches: IntCounter::new("group_commit_batches_total", "Transactions the group commit committed")
                .expect(NAMES),
            items: IntCounter::new("group_commit_items_total", "Writes those transactions held").expect(NAMES),
            phases: PHASES.map(|phase| seconds.with_label_values(&[phase])),
            seconds,
        }
    }
}

/// How long one transaction of the committer spent in each phase ([`CommitStats::seconds`]).
#[derive(Default)]
struct Phases {
    wait: Duration,
    apply: Duration,
    commit: Duration,
}

#[derive(Default)]
struct Queue {
    jobs: Vec<Entry>,
    leading: bool,
    /// When the oldest of `jobs` was queued (about: when `jobs` last became non-empty).
    oldest: Option<Instant>,
    /// When the last item was queued.
    newest: Option<Instant>,
    /// True while the leader waits for more items ([`Pacing`]).
    gathering: bool,
    /// True while the leader waits for any item on an empty queue ([`LINGER`]).
    lingering: bool,
    pacing: Pacing,
}

/// Whether the leader waits a little for more items before a transaction, as PostgreSQL's
/// `commit_delay` and MySQL's `binlog_group_commit_sync_delay` do.
///
/// Under closed-loop load (writers that wait for their answer before writing again) the queue
/// fills while a transaction commits, and waiting would only slow everyone. Under open-loop
/// load (webhooks arriving at their own pace, say 1,000 a second) each item tends to find the
/// queue empty and pays a transaction of its own: its `fsync`, the WAL pages it shares with its
/// neighbours, the wake-ups. There, waiting up to `delay` after the oldest queued item gathers
/// the next arrivals into the same transaction, at the price of that much latency
/// (bench/README.md, issue 20).
///
/// The leader tells the two apart by what waiting gained: it waits while its recent waits
/// gathered at least half an item each on average (`gain`, a moving average), and otherwise
/// once every [`PROBE_EVERY`] to find out whether that changed. It never waits when
/// [`GATHER`] items are already queued, and stops waiting as soon as they are, or as soon as
/// arrivals pause for twice their usual gap ([`Pacing::until`]).
#[derive(Default)]
struct Pacing {
    /// The longest the oldest queued item waits for company; zero turns waiting off.
    delay: Duration,
    /// Moving average of the items one wait gathered.
    gain: f32,
    /// Moving average of the time between two items' arrivals (each counted up to `delay`).
    gap: Duration,
    last_probe: Option<Instant>,
}

impl Pacing {
    /// Notes an item's arrival, `gap` after the one before it.
    fn arrived(&mut self, gap: Duration) {
        self.gap = self.gap.mul_f32(0.875) + gap.min(self.delay).mul_f32(0.125);
    }

    /// Whether a leader that finds `queued` items at `now` waits for more.
    fn waits(&self, queued: usize, now: Instant) -> bool {
        !self.delay.is_zero() && queued < GATHER && (self.gain >= 0.5 || self.probes(now))
    }

    /// Whether a wait at `now` is a probe: recent waits gathered too little to wait for their
    /// own sake, and the last probe is [`PROBE_EVERY`] old.
    fn probes(&self, now: Instant) -> bool {
        self.gain < 0.5 && self.last_probe.is_none_or(|at| now - at >= PROBE_EVERY)
    }

    /// When a wait ends (unless [`GATHER`] items are queued before): `delay` after the oldest
    /// queued item, or earlier when arrivals stop for twice their usual gap: writers that wait
    /// for their answers before writing again have then all come back.
    fn until(&self, oldest: Instant, newest: Instant) -> Instant {
        (oldest + self.delay).min(newest + 2 * self.gap)
    }

    /// Notes what a wait that began at `began` (a probe or not) gathered.
    fn waited(&mut self, began: Instant, gathered: usize, now: Instant) {
        if self.probes(began) {
            self.last_probe = Some(now);
        }
        self.gain = 0.75 * self.gain + 0.25 * gathered as f32;
    }
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
        let (waiter, rx) = Waiter::new();
        let job: Job = Box::new(move |c: &mut Db, alone: bool| {
            let applied = if alone { f(c) } else { c.transaction(f) };
            let ok = applied.is_ok();
            (completion(applied, on_commit, waiter), ok)
        });
        match self.backend {
            Backend::Sqlite => self.enqueue(Entry::Single(job)),
            Backend::Postgres => {
                let this = self.clone();
                actix_web::rt::task::spawn_blocking(move || this.commit(vec![Entry::Single(job)], &mut None));
            }
        }
        rx.await.map_err(|_| ApiError::Internal(anyhow!("the group commit holding this write panicked")))?
    }

    /// Queues `item` for the committer, which applies it with every other queued item of its
    /// type ([`Batched::apply`]) in one transaction, and returns its output once that
    /// transaction has committed. `on_commit` runs right after the commit, exactly once, even
    /// if the caller has gone away (publish events there), in the order the items were queued.
    pub async fn write_batched<B, C>(&self, item: B, on_commit: C) -> ApiResult<B::Out>
    where
        B: Batched,
        C: FnOnce(&mut B::Out) + Send + 'static,
    {
        let (waiter, rx) = Waiter::new();
        let pending = Pending { item, waiter, on_commit: Box::new(on_commit) };
        self.enqueue(Entry::Batched { kind: TypeId::of::<B>(), payload: Box::new(pending), run: run_batched::<B> });
        rx.await.map_err(|_| ApiError::Internal(anyhow!("the group commit holding this write panicked")))?
    }

    /// Sets how long the leader may wait to gather more items into a transaction ([`Pacing`];
    /// zero: never). Default: none; the server uses `CONFAB_COMMIT_DELAY_US`.
    pub fn with_commit_delay(self, delay: Duration) -> Self {
        self.committer.queue.lock().unwrap_or_else(|p| p.into_inner()).pacing.delay = delay;
        self
    }

    /// Queues an entry for the leader, becoming the leader when there is none.
    fn enqueue(&self, entry: Entry) {
        let lead = {
            let mut q = self.committer.queue.lock().unwrap_or_else(|p| p.into_inner());
            q.jobs.push(entry);
            let now = Instant::now();
            if let Some(newest) = q.newest.replace(now) {
                q.pacing.arrived(now - newest);
            }
            if q.jobs.len() == 1 {
                q.oldest = Some(now);
            }
            if q.lingering || (q.gathering && q.jobs.len() == GATHER) {
                self.committer.arrived.notify_one();
            }
            !std::mem::replace(&mut q.leading, true)
        };
        if lead {
            #[cfg(test)]
            self.committer.leaders.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let this = self.clone();
            actix_web::rt::task::spawn_blocking(move || this.drain());
        }
    }

    pub fn group_stats(&self) -> GroupStats {
        GroupStats { batches: self.committer.stats.batches.get(), items: self.committer.stats.items.get() }
    }

    /// Publishes the group commit's counters ([`CommitStats`]) in `registry`.
    pub fn register_metrics(&self, registry: &Registry) -> prometheus::Result<()> {
        let stats = self.committer.stats.clone();
        registry.register(Box::new(stats.batches))?;
        registry.register(Box::new(stats.items))?;
        registry.register(Box::new(stats.seconds))
    }

    /// [`Pool::write_blocking`] on the `held` connection (checked out first when there is
    /// none; given back to the pool after a failed transaction, which may have broken it),
    /// also telling where its time went.
    fn write_timed<T, F>(&self, held: &mut Held, f: F) -> (ApiResult<T>, Phases)
    where
        F: FnOnce(&mut Db) -> ApiResult<T>,
    {
        let start = Instant::now();
        if held.as_mut().is_some_and(|conn| conn.is_broken()) {
            *held = None;
        }
        let conn = match held {
            Some(conn) => conn,
            None => match self.pool.get() {
                Ok(conn) => held.insert(conn),
                Err(e) => return (Err(e.into()), Phases { wait: start.elapsed(), ..Phases::default() }),
            },
        };
        let (mut began, mut applied) = (None, None);
        let result = self.write_on(conn, |c| {
            began = Some(Instant::now());
            let r = f(c);
            applied = Some(Instant::now());
            r
        });
        let end = Instant::now();
        // The connection, the SQLite write lock and BEGIN come before `f`; COMMIT (or
        // ROLLBACK) after it.
        let phases = match (began, applied) {
            (Some(b), Some(a)) => Phases { wait: b - start, apply: a - b, commit: end - a },
            _ => Phases { wait: end - start, ..Phases::default() },
        };
        if result.is_err() {
            *held = None;
        }
        (result, phases)
    }

    /// The leader's loop: one transaction per turn over everything queued, until none is,
    /// all on one connection (checked out, and on PostgreSQL pinged, once per drain rather than
    /// once per transaction).
    fn drain(&self) {
        let mut held: Held = None;
        loop {
            let jobs = {
                let mut guard = self.committer.queue.lock().unwrap_or_else(|p| p.into_inner());
                if guard.jobs.is_empty() {
                    // The connection goes back while the leader lingers: a small pool may need it.
                    held = None;
                    guard = self.linger(guard);
                }
                if guard.jobs.is_empty() {
                    guard.leading = false;
                    return;
                }
                let mut guard = self.gather(guard);
                let q = &mut *guard;
                let take = q.jobs.len().min(MAX_BATCH);
                let rest = q.jobs.split_off(take);
                q.oldest = (!rest.is_empty()).then(Instant::now);
                std::mem::replace(&mut q.jobs, rest)
            };
            self.commit(jobs, &mut held);
        }
    }

    /// Waits up to [`LINGER`] for the next item on an empty queue before the leader retires,
    /// so that under a steady trickle of writes one warm thread stays the leader, woken through
    /// `arrived`, rather than every write starting a new one on whichever of the runtime's
    /// blocking threads is idle.
    fn linger<'a>(&self, mut q: MutexGuard<'a, Queue>) -> MutexGuard<'a, Queue> {
        q.lingering = true;
        let (mut q, _) = match self.committer.arrived.wait_timeout_while(q, LINGER, |q| q.jobs.is_empty()) {
            Ok(woken) => woken,
            Err(poisoned) => poisoned.into_inner(),
        };
        q.lingering = false;
        q
    }

    /// Waits for more items before the next transaction when [`Pacing`] says it pays.
    fn gather<'a>(&self, mut q: MutexGuard<'a, Queue>) -> MutexGuard<'a, Queue> {
        let began = Instant::now();
        if !q.pacing.waits(q.jobs.len(), began) {
            return q;
        }
        let before = q.jobs.len();
        q.gathering = true;
        while q.jobs.len() < GATHER {
            let until = q.pacing.until(q.oldest.unwrap_or(began), q.newest.unwrap_or(began));
            let Some(left) = until.checked_duration_since(Instant::now()).filter(|d| !d.is_zero()) else { break };
            q = self.committer.arrived.wait_timeout(q, left).unwrap_or_else(|p| p.into_inner()).0;
        }
        q.gathering = false;
        let gathered = q.jobs.len() - before;
        q.pacing.waited(began, gathered, Instant::now());
        q
    }

    /// One transaction over `jobs`, then every answer, in the order the jobs were queued.
    /// Consecutive or not, the [`Batched`] entries of one type are applied in one call.
    /// `held`: the connection to run it on, if the caller keeps one ([`Pool::write_timed`]).
    fn commit(&self, jobs: Vec<Entry>, held: &mut Held) {
        let n = jobs.len() as u64;
        // Singles keep their place; batched items join the group of their type, placed where
        // the type's first item was queued.
        let mut groups: Vec<Group> = Vec::new();
        for (i, job) in jobs.into_iter().enumerate() {
            match job {
                Entry::Single(job) => groups.push(Group::Single(i, job)),
                Entry::Batched { kind, payload, run } => {
                    match groups.iter_mut().find_map(|g| match g {
                        Group::Batched { kind: k, at, payloads, .. } if *k == kind => Some((at, payloads)),
                        _ => None,
                    }) {
                        Some((at, payloads)) => {
                            at.push(i);
                            payloads.push(payload);
                        }
                        None => groups.push(Group::Batched { kind, run, at: vec![i], payloads: vec![payload] }),
                    }
                }
            }
        }
        let mut answers: Vec<(usize, Completion)> = Vec::with_capacity(n as usize);
        let mut phases = Phases::default();
        // A panicking item drops its own answer and those not yet applied (their callers get an
        // error); the transaction is not committed.
        let alone = n == 1;
        let mut alone_failed = false;
        let outcome = std::panic::catch_unwind(AssertUnwindSafe(|| {
            let (result, took) = self.write_timed(held, |c| {
                for group in groups {
                    let (at, (done, ok)) = match group {
                        Group::Single(i, job) => {
                            let (answer, ok) = job(c, alone);
                            (vec![i], (vec![answer], ok))
                        }
                        Group::Batched { run, at, payloads, .. } => (at, run(c, payloads, alone)),
                    };
                    answers.extend(at.into_iter().zip(done));
                    if !ok && alone {
                        // Its own error answers it; the transaction must not keep its half.
                        alone_failed = true;
                        return Err(ApiError::Internal(anyhow!("the only item failed")));
                    }
                }
                Ok(())
            });
            phases = took;
            result
        }));
        let stats = &self.committer.stats;
        let failed = match outcome {
            Ok(Ok(())) => {
                stats.batches.inc();
                stats.items.inc_by(n);
                None
            }
            Ok(Err(_)) if alone_failed => Some("rolled back".to_owned()),
            Ok(Err(e)) => {
                tracing::error!(error = %e, items = n, "group commit failed");
                Some(e.to_string())
            }
            Err(_) => {
                // The transaction never ended: that connection must not be used again.
                *held = None;
                Some("an item panicked".to_owned())
            }
        };
        answers.sort_by_key(|(i, _)| *i);
        // Every item's after-commit work first, in order (what it leaves for [`later`], such as
        // handing its events to the hub, runs once for all of them); then the writers' answers.
        // Answered one by one between the events, a writer's thread and the hub's were woken
        // (and on a busy core switched to) once per item.
        let after = Instant::now();
        let replies: Vec<Reply> =
            after_commit(|| answers.into_iter().map(|(_, answer)| answer(failed.as_deref())).collect());
        reply_all(replies);
        let took = [phases.wait, phases.apply, phases.commit, after.elapsed()];
        for (counter, took) in stats.phases.iter().zip(took) {
            counter.inc_by(took.as_secs_f64());
        }
    }
}

enum Group {
    Single(usize, Job),
    Batched { kind: TypeId, run: RunBatch, at: Vec<usize>, payloads: Vec<Box<dyn Any + Send>> },
}

/// [`RunBatch`] of a [`Batched`] type: all its items in one [`Batched::apply`] (in a savepoint
/// unless alone); when that fails, each item alone in its own savepoint.
fn run_batched<B: Batched>(c: &mut Db, payloads: Vec<Box<dyn Any + Send>>, alone: bool) -> (Vec<Completion>, bool) {
    let mut items = Vec::with_capacity(payloads.len());
    let mut hooks = Vec::with_capacity(payloads.len());
    for p in payloads {
        let p = p.downcast::<Pending<B>>().expect("a batch group holds one type");
        let Pending { item, waiter, on_commit } = *p;
        items.push(item);
        hooks.push((waiter, on_commit));
    }
    let all = |c: &mut Db, items: &[B]| -> ApiResult<Vec<B::Out>> {
        let outs = B::apply(c, items)?;
        if outs.len() != items.len() {
            return Err(ApiError::Internal(anyhow!("a batch gave {} outputs for {} items", outs.len(), items.len())));
        }
        Ok(outs)
    };
    let outcomes: Vec<ApiResult<B::Out>> = if alone {
        match all(c, &items) {
            Ok(outs) => outs.into_iter().map(Ok).collect(),
            Err(e) => vec![Err(e)],
        }
    } else {
        match c.transaction(|c| all(c, &items)) {
            Ok(outs) => outs.into_iter().map(Ok).collect(),
            Err(e) if items.len() == 1 => vec![Err(e)],
            Err(_) => items
                .iter()
                .map(|item| c.transaction(|c| all(c, std::slice::from_ref(item))).map(|mut v| v.remove(0)))
                .collect(),
        }
    };
    let ok = !(alone && outcomes.iter().any(Result::is_err));
    let answers = hooks
        .into_iter()
        .zip(outcomes)
        .map(|((waiter, on_commit), applied)| completion(applied, on_commit, waiter))
        .collect();
    (answers, ok)
}

/// An item's [`Completion`]: once committed, `on_commit` with its value, then the value for
/// the writer; else the failure.
fn completion<T: Send + 'static>(
    applied: ApiResult<T>,
    on_commit: impl FnOnce(&mut T) + Send + 'static,
    waiter: Waiter<T>,
) -> Completion {
    Box::new(move |commit_failed: Option<&str>| -> Reply {
        let answer = match (applied, commit_failed) {
            (Ok(mut value), None) => {
                on_commit(&mut value);
                Ok(value)
            }
            (Ok(_), Some(why)) => Err(ApiError::Internal(anyhow!("group commit failed: {why}"))),
            (Err(e), _) => Err(e),
        };
        let Waiter { tx, home } = waiter;
        Reply {
            home,
            send: Box::new(move || {
                let _ = tx.send(answer);
            }),
        }
    })
}

#[cfg(test)]
mod tests {
    use diesel::connection::SimpleConnection;

    use super::*;

    fn pool(delay: Duration) -> (tempfile::TempDir, Pool) {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("paced.db").display());
        let pool = Pool::connect(&url, 4).unwrap().with_commit_delay(delay);
        pool.write_blocking(|c| Ok(c.batch_execute("CREATE TABLE t (x INTEGER)")?)).unwrap();
        (dir, pool)
    }

    async fn insert(pool: &Pool, x: i64) -> ApiResult<()> {
        pool.write_grouped(move |c| Ok(c.batch_execute(&format!("INSERT INTO t VALUES ({x})"))?), |_| {}).await
    }

    /// Writes arriving one by one while the first waits share its transaction, which commits
    /// as soon as [`GATHER`] are queued, long before the delay is out.
    #[actix_web::test]
    async fn writes_arriving_one_by_one_share_the_transaction_of_the_first() {
        let (_dir, pool) = pool(Duration::from_secs(5));
        // A first write, then none for a while: the next one is the leader's probe, and the
        // gap since the first sets how long a pause in arrivals may be.
        insert(&pool, 0).await.unwrap();
        actix_web::rt::time::sleep(PROBE_EVERY + Duration::from_millis(50)).await;
        let start = Instant::now();
        let mut writes = Vec::new();
        for x in 1..=GATHER as i64 {
            let pool = pool.clone();
            writes.push(actix_web::rt::spawn(async move { insert(&pool, x).await }));
            actix_web::rt::time::sleep(Duration::from_millis(5)).await;
        }
        for w in writes {
            w.await.unwrap().unwrap();
        }
        assert_eq!(pool.group_stats(), GroupStats { batches: 2, items: 1 + GATHER as u64 });
        assert!(start.elapsed() < Duration::from_secs(4), "the transaction waited out the delay");
    }

    /// A leader that empties the queue waits [`LINGER`] for the next write before it retires:
    /// writes that trickle in a few milliseconds apart are led by one thread, not one each.
    #[actix_web::test]
    async fn a_trickle_of_writes_keeps_its_leader() {
        let (_dir, pool) = pool(Duration::ZERO);
        for x in 0..10 {
            insert(&pool, x).await.unwrap();
            actix_web::rt::time::sleep(Duration::from_millis(2)).await;
        }
        assert_eq!(pool.group_stats(), GroupStats { batches: 10, items: 10 });
        // One, unless this machine stalled for longer than LINGER between two writes.
        let leaders = pool.committer.leaders.load(std::sync::atomic::Ordering::Relaxed);
        assert!(leaders <= 3, "{leaders} leaders for 10 writes 2 ms apart");
    }

    fn pacing() -> Pacing {
        Pacing { delay: Duration::from_millis(2), ..Pacing::default() }
    }

    /// A writer that waits for its answer before writing again is held up by one probe every
    /// [`PROBE_EVERY`], not at every write.
    #[test]
    fn waits_that_gather_nothing_stop_but_for_a_probe_now_and_then() {
        let mut p = pacing();
        let t0 = Instant::now();
        assert!(p.waits(1, t0), "the first wait is a probe");
        p.waited(t0, 0, t0);
        let mut probes = Vec::new();
        for i in 1..1000 {
            let now = t0 + Duration::from_micros(700 * i);
            if p.waits(1, now) {
                probes.push(i);
                p.waited(now, 0, now);
            }
        }
        assert_eq!(probes, [358, 716], "a turn every 0.7 ms for 0.7 s: one probe every 250 ms");
    }

    /// Open-loop arrivals: waits that gather keep the leader waiting; once they stop
    /// gathering, it stops.
    #[test]
    fn waits_that_gather_go_on_until_they_do_not() {
        let mut p = pacing();
        let t0 = Instant::now();
        p.waited(t0, 2, t0);
        for i in 1..=20 {
            let now = t0 + Duration::from_millis(2 * i);
            assert!(p.waits(1, now));
            p.waited(now, 1, now);
        }
        let mut now = t0 + Duration::from_millis(50);
        let mut turns = 0;
        while p.waits(1, now) {
            p.waited(now, 0, now);
            now += Duration::from_millis(1);
            turns += 1;
        }
        assert!((1..=5).contains(&turns), "waited {turns} more times");
        assert!(!p.waits(GATHER, t0), "never with GATHER queued");
        assert!(!Pacing::default().waits(1, t0), "never with no delay");
    }

    /// A wait ends `delay` after the oldest item, or when arrivals pause for twice their gap.
    #[test]
    fn a_wait_ends_at_the_delay_or_when_arrivals_pause() {
        let mut p = pacing();
        let t0 = Instant::now();
        assert_eq!(p.until(t0, t0), t0, "no gap seen yet: arrivals are not known to come");
        for _ in 0..100 {
            p.arrived(Duration::from_micros(100));
        }
        let after = p.until(t0, t0 + Duration::from_micros(500)).duration_since(t0);
        assert!(after.abs_diff(Duration::from_micros(700)) < Duration::from_micros(5), "{after:?}");
        for _ in 0..100 {
            p.arrived(Duration::from_secs(1));
        }
        assert_eq!(p.until(t0, t0 + Duration::from_millis(1)), t0 + p.delay, "gaps count up to the delay");
    }
}
