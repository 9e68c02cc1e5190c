//! Storage: one diesel `MultiConnection` over PostgreSQL and SQLite behind one r2d2 pool.
//! The backend is chosen from the URL scheme, never by trying to connect (SQLite accepts any
//! string as a file name). Queries are written once; the few that differ live in [`dialect`].

pub mod dialect;
mod group_commit;
pub mod schema;

pub use group_commit::{Batched, GroupStats, after_commit, in_after_commit, later};

use std::{
    path::Path,
    sync::{Arc, Mutex},
    time::Duration,
};

use actix_web::web;
use anyhow::{Context, anyhow};
use diesel::{
    Connection,
    connection::{AnsiTransactionManager, SimpleConnection, TransactionManager},
    pg::PgConnection,
    r2d2::{self, ManageConnection, R2D2Connection},
    sqlite::SqliteConnection,
};
use diesel_migrations::{EmbeddedMigrations, MigrationHarness, embed_migrations};

use crate::core::error::ApiResult;

/// How often the SQLite WAL is checkpointed in the background ([`Pool::spawn_checkpointer`]).
pub const CHECKPOINT_EVERY: Duration = Duration::from_secs(1);

const SQLITE_MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations/sqlite");
const PG_MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations/postgres");

#[derive(diesel::MultiConnection)]
pub enum Db {
    Pg(PgConnection),
    Sqlite(SqliteConnection),
}

/// Runs `$body` with `$conn` bound to the concrete connection inside a [`Db`] (the body is
/// compiled once per backend). Through the `MultiConnection`, diesel renders a statement's SQL
/// again on every execution, bind collection included; on the concrete connection a cached
/// statement is found by its type. Used for the statements of the hot write path (webhook
/// ingest), where the rendering was 15 % of the server's CPU (bench/README.md, "Ingest").
#[macro_export]
macro_rules! on_backend {
    ($c:expr, |$conn:ident| $body:expr) => {
        match $c {
            $crate::core::db::Db::Pg($conn) => $body,
            $crate::core::db::Db::Sqlite($conn) => $body,
        }
    };
}

/// A statement diesel would prepare again on every execution, kept in the connection's
/// prepared-statement cache under its SQL text instead.
///
/// diesel caches a statement by its Rust type when the SQL follows from the type alone; raw
/// SQL (`sql_query`), `eq_any` lists on SQLite and multi-row INSERTs are marked "unsafe to
/// cache" because their SQL text varies with the input. Keyed by the text itself (diesel's
/// `StatementCacheKey::Sql`, with the bind types), each distinct text is prepared once per
/// connection. On the write path of every webhook this parse-and-plan was 12 % of the server's
/// CPU (bench/README.md, issue 21). Use it only where the text takes a bounded number of forms
/// ([`CacheBySql::up_to`]): every form stays prepared for the connection's life.
#[derive(Debug, Clone, Copy)]
pub struct CacheBySql<Q> {
    query: Q,
    cache: bool,
}

impl<Q> CacheBySql<Q> {
    /// Caches `query`.
    pub fn new(query: Q) -> Self {
        Self { query, cache: true }
    }

    /// Caches `query` when its list or batch holds at most [`CACHED_FORMS`] items (`n`); a
    /// longer one is prepared for the one execution, as diesel would (its preparation is
    /// shared by as many rows).
    pub fn up_to(n: usize, query: Q) -> Self {
        Self { query, cache: n <= CACHED_FORMS }
    }
}

/// Forms of one list or batch statement kept prepared (one per length, 1..=this).
pub const CACHED_FORMS: usize = 32;

impl<Q> diesel::query_builder::QueryId for CacheBySql<Q> {
    type QueryId = ();
    const HAS_STATIC_QUERY_ID: bool = false;
}

impl<Q: diesel::query_builder::Query> diesel::query_builder::Query for CacheBySql<Q> {
    type SqlType = Q::SqlType;
}

impl<Q, DB> diesel::query_builder::QueryFragment<DB> for CacheBySql<Q>
where
    DB: diesel::backend::Backend,
    Q: diesel::query_builder::QueryFragment<DB>,
{
    fn walk_ast<'b>(&'b self, pass: diesel::query_builder::AstPass<'_, 'b, DB>) -> diesel::QueryResult<()> {
        self.query.walk_ast(pass)
    }

    fn is_safe_to_cache_prepared(&self, _backend: &DB) -> diesel::QueryResult<bool> {
        Ok(self.cache)
    }
}

impl<Q, C> diesel::RunQueryDsl<C> for CacheBySql<Q> {}

/// Inserts a batch of rows into `table`. PostgreSQL, and SQLite batches of more than
/// [`CACHED_FORMS`] rows: one multi-row INSERT (one round trip). A smaller batch on SQLite: one
/// cached single-row INSERT per row, because diesel prepares a multi-row INSERT again on every
/// execution (its text varies with the row count), which cost more than the rows for the small
/// batches of a moderate load (bench/README.md, issue 21).
pub fn insert_batch<T, V>(c: &mut Db, table: T, rows: Vec<V>) -> ApiResult<()>
where
    T: diesel::Table + Copy,
    V: diesel::Insertable<T>,
    Vec<V>: diesel::Insertable<T>,
    diesel::query_builder::InsertStatement<T, V::Values>: diesel::query_dsl::methods::ExecuteDsl<SqliteConnection>,
    diesel::query_builder::InsertStatement<T, <Vec<V> as diesel::Insertable<T>>::Values>:
        diesel::query_dsl::methods::ExecuteDsl<SqliteConnection> + diesel::query_dsl::methods::ExecuteDsl<PgConnection>,
{
    use diesel::RunQueryDsl;
    if rows.is_empty() {
        return Ok(());
    }
    match c {
        Db::Sqlite(c) if rows.len() <= CACHED_FORMS => {
            for row in rows {
                diesel::insert_into(table).values(row).execute(c)?;
            }
        }
        Db::Sqlite(c) => {
            diesel::insert_into(table).values(rows).execute(c)?;
        }
        Db::Pg(c) => {
            diesel::insert_into(table).values(rows).execute(c)?;
        }
    }
    Ok(())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Postgres,
    Sqlite,
}

impl Db {
    pub fn backend(&self) -> Backend {
        match self {
            Db::Pg(_) => Backend::Postgres,
            Db::Sqlite(_) => Backend::Sqlite,
        }
    }
}

/// Connects by scheme and prepares each SQLite connection: WAL so readers never block the
/// writer, a busy timeout, foreign keys, and `synchronous=FULL` so an acknowledged message
/// survives power loss (ARCHITECTURE "Storage").
#[derive(Debug, Clone)]
pub struct Manager {
    backend: Backend,
    url: String,
}

impl Manager {
    pub fn new(url: &str) -> anyhow::Result<Self> {
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Ok(Self { backend: Backend::Postgres, url: url.to_owned() })
        } else if let Some(path) = url.strip_prefix("sqlite://").or_else(|| url.strip_prefix("sqlite:")) {
            Ok(Self { backend: Backend::Sqlite, url: path.to_owned() })
        } else {
            Err(anyhow!("unsupported database URL: expected sqlite://path or postgres://…"))
        }
    }
}

impl ManageConnection for Manager {
    type Connection = Db;
    type Error = r2d2::Error;

    fn connect(&self) -> Result<Db, r2d2::Error> {
        match self.backend {
            Backend::Postgres => PgConnection::establish(&self.url).map(Db::Pg).map_err(r2d2::Error::ConnectionError),
            Backend::Sqlite => {
                let mut c = SqliteConnection::establish(&self.url).map_err(r2d2::Error::ConnectionError)?;
                // Checkpoints run in the background (`Pool::spawn_checkpointer`); the automatic
                // one, which runs inside a commit and holds up every writer queued behind it, is
                // only a backstop for a WAL that grows past 40 MB.
                // `temp_store = MEMORY` keeps statement journals (the copies of pages a
                // statement or savepoint changes, kept so it can be rolled back alone) in
                // memory: by default SQLite spills one past 64 KiB to a temporary file, and the
                // group commit's batches wrote every page they touched there once more (a fifth
                // of the server's CPU at 16 senders, bench/README.md). The rollback journal
                // proper is the WAL, which stays on disk.
                c.batch_execute(
                    "PRAGMA busy_timeout = 10000; PRAGMA journal_mode = WAL; \
                     PRAGMA foreign_keys = ON; PRAGMA synchronous = FULL; \
                     PRAGMA wal_autocheckpoint = 10000; PRAGMA temp_store = MEMORY;",
                )
                .map_err(r2d2::Error::QueryError)?;
                Ok(Db::Sqlite(c))
            }
        }
    }

    fn is_valid(&self, conn: &mut Db) -> Result<(), r2d2::Error> {
        conn.ping().map_err(r2d2::Error::QueryError)
    }

    fn has_broken(&self, conn: &mut Db) -> bool {
        conn.is_broken()
    }
}

/// The pool plus, on SQLite, the single-writer lock: SQLite allows one writer at a time, and a
/// deferred transaction that upgrades from read to write can fail with SQLITE_BUSY at once
/// instead of waiting. Taking the lock before `BEGIN` serialises writers in this process.
#[derive(Clone)]
pub struct Pool {
    pool: r2d2::Pool<Manager>,
    backend: Backend,
    write_lock: Arc<Mutex<()>>,
    committer: Arc<group_commit::Committer>,
}

impl Pool {
    pub fn connect(url: &str, size: u32) -> anyhow::Result<Self> {
        let manager = Manager::new(url)?;
        let backend = manager.backend;
        if backend == Backend::Sqlite
            && let Some(dir) = Path::new(&manager.url).parent()
            && !dir.as_os_str().is_empty()
        {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        let pool = r2d2::Pool::builder()
            .max_size(size)
            // A SQLite connection is a file handle that cannot go stale; checking each one out
            // with a `SELECT 1` cost a statement per request (bench/README.md, issue 21).
            // PostgreSQL's are checked: the server may have closed them.
            .test_on_check_out(backend == Backend::Postgres)
            .connection_timeout(Duration::from_secs(10))
            .build(manager)
            .context("connecting to the database")?;
        Ok(Self { pool, backend, write_lock: Arc::new(Mutex::new(())), committer: Default::default() })
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Runs the embedded migrations of this backend.
    pub fn migrate(&self) -> anyhow::Result<()> {
        let mut conn = self.pool.get()?;
        let migrations = match self.backend {
            Backend::Postgres => PG_MIGRATIONS,
            Backend::Sqlite => SQLITE_MIGRATIONS,
        };
        conn.run_pending_migrations(migrations).map_err(|e| anyhow!("running migrations: {e}"))?;
        Ok(())
    }

    /// Runs `f` on the blocking pool with a pooled connection (reads, or single statements).
    pub async fn run<T, F>(&self, f: F) -> ApiResult<T>
    where
        F: FnOnce(&mut Db) -> ApiResult<T> + Send + 'static,
        T: Send + 'static,
    {
        let pool = self.pool.clone();
        web::block(move || {
            let mut conn = pool.get()?;
            f(&mut conn)
        })
        .await?
    }

    /// Runs `f` in one write transaction on the blocking pool; commits when it returns `Ok`.
    pub async fn write<T, F>(&self, f: F) -> ApiResult<T>
    where
        F: FnOnce(&mut Db) -> ApiResult<T> + Send + 'static,
        T: Send + 'static,
    {
        let this = self.clone();
        web::block(move || this.write_blocking(f)).await?
    }

    /// [`Pool::write`] for code already on a blocking thread (start-up, CLI).
    pub fn write_blocking<T, F>(&self, f: F) -> ApiResult<T>
    where
        F: FnOnce(&mut Db) -> ApiResult<T>,
    {
        let mut conn = self.pool.get()?;
        self.write_on(&mut conn, f)
    }

    /// [`Pool::write_blocking`] on a connection the caller holds.
    ///
    /// On SQLite the transaction begins `IMMEDIATE`, taking the database's write lock before
    /// its first read. The process's `write_lock` orders this pool's writers, but not those of
    /// another process on the same file (a second node, the `confab` CLI): a deferred
    /// transaction that read before such a writer committed cannot upgrade to a write, and
    /// SQLite fails it at once with "database is locked" (SQLITE_BUSY_SNAPSHOT) instead of
    /// waiting out the busy timeout. Begun `IMMEDIATE`, it waits for the lock like any writer.
    fn write_on<T, F>(&self, conn: &mut Db, f: F) -> ApiResult<T>
    where
        F: FnOnce(&mut Db) -> ApiResult<T>,
    {
        type Tx = <Db as Connection>::TransactionManager;
        let _guard = match conn {
            Db::Sqlite(c) => {
                let guard = self.write_lock.lock().unwrap_or_else(|p| p.into_inner());
                AnsiTransactionManager::begin_transaction_sql(c, "BEGIN IMMEDIATE")?;
                Some(guard)
            }
            Db::Pg(_) => {
                Tx::begin_transaction(conn)?;
                None
            }
        };
        match f(conn) {
            Ok(value) => {
                Tx::commit_transaction(conn)?;
                Ok(value)
            }
            Err(e) => {
                Tx::rollback_transaction(conn)?;
                Err(e)
            }
        }
    }

    /// SQLite: copies the WAL back into the database every [`CHECKPOINT_EVERY`], off the
    /// commit path (a PASSIVE checkpoint waits for no one and blocks no writer). Left to SQLite's
    /// automatic checkpoint, the commit that crossed 1,000 pages did it, and every delivery
    /// queued behind that commit waited (bench/README.md, "Fan-out"). No-op on PostgreSQL.
    pub fn spawn_checkpointer(&self) {
        if self.backend != Backend::Sqlite {
            return;
        }
        let pool = self.clone();
        actix_web::rt::spawn(async move {
            let mut tick = tokio::time::interval(CHECKPOINT_EVERY);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let pool = pool.clone();
                let done = web::block(move || pool.checkpoint()).await;
                if let Ok(Err(e)) = done {
                    tracing::warn!(error = %e, "WAL checkpoint failed");
                }
            }
        });
    }

    /// One background checkpoint (SQLite), in two steps. The first copies what was committed
    /// so far while writers go on. A checkpoint that writers outrun never completes, though:
    /// under a steady stream of commits the WAL then never starts over, and every commit
    /// appended to a file that only grew (9 MB/s at 200 webhooks/s; each `fdatasync` then also
    /// wrote the file's new block map and size, bench/README.md 2026-12-08). So the second
    /// step holds this pool's writers back while it copies the few frames committed during the
    /// first: it completes, and the next commit writes the WAL from its start again. A reader
    /// still on an old snapshot keeps either step from completing, harmlessly (the next tick
    /// tries again).
    pub fn checkpoint(&self) -> anyhow::Result<()> {
        let mut c = self.pool.get()?;
        c.batch_execute("PRAGMA wal_checkpoint(PASSIVE)")?;
        let _writers = self.write_lock.lock().unwrap_or_else(|p| p.into_inner());
        c.batch_execute("PRAGMA wal_checkpoint(PASSIVE)")?;
        Ok(())
    }

    /// Readiness probe: a connection can be had within `timeout` and answers.
    pub async fn ping(&self, timeout: Duration) -> anyhow::Result<()> {
        let pool = self.pool.clone();
        web::block(move || -> anyhow::Result<()> {
            let mut conn = pool.get_timeout(timeout)?;
            conn.ping()?;
            Ok(())
        })
        .await
        .map_err(|e| anyhow!("{e}"))?
    }
}

#[cfg(test)]
mod tests {
    use diesel::{QueryableByName, RunQueryDsl, sql_types::Text};

    use super::*;

    #[derive(QueryableByName)]
    struct CompileOption {
        #[diesel(sql_type = Text)]
        compile_options: String,
    }

    #[derive(QueryableByName)]
    struct Count {
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        n: i64,
    }

    fn count(c: &mut Db) -> ApiResult<i64> {
        Ok(diesel::sql_query("SELECT COUNT(*) AS n FROM t").get_result::<Count>(c)?.n)
    }

    /// Two pools on one SQLite file (two nodes, or the CLI beside the server) do not share the
    /// in-process write lock. A write transaction of one that reads first, while the other
    /// commits a write, must wait for the lock rather than fail with "database is locked"
    /// (SQLITE_BUSY_SNAPSHOT): the flake of `teams::auto_assignment_…::sqlite`, whose second
    /// node wrote presence while the first ingested a webhook.
    #[test]
    fn a_write_transaction_waits_for_a_writer_of_another_pool_on_the_same_file() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("two.db").display());
        let (a, b) = (Pool::connect(&url, 2).unwrap(), Pool::connect(&url, 2).unwrap());
        a.write_blocking(|c| Ok(c.batch_execute("CREATE TABLE t (x INTEGER)")?)).unwrap();
        let (read_tx, read_rx) = std::sync::mpsc::channel();
        let other = std::thread::spawn(move || {
            read_rx.recv().unwrap();
            b.write_blocking(|c| Ok(c.batch_execute("INSERT INTO t VALUES (2)")?))
        });
        let mine = a.write_blocking(|c| {
            let before = count(c)?;
            read_tx.send(()).unwrap();
            // Long enough for the other pool's write to commit, had it not had to wait.
            std::thread::sleep(Duration::from_millis(300));
            c.batch_execute("INSERT INTO t VALUES (1)")?;
            Ok(before)
        });
        assert_eq!(mine.map_err(|e| format!("{e:#}")), Ok(0));
        assert_eq!(other.join().unwrap().map_err(|e| format!("{e:#}")), Ok(()));
        assert_eq!(a.write_blocking(count).unwrap(), 2);
    }

    #[derive(QueryableByName)]
    struct Checkpointed {
        #[diesel(sql_type = diesel::sql_types::Integer)]
        log: i32,
    }

    /// Frames in the WAL now (`log` of a checkpoint that copies them all).
    fn wal_frames(pool: &Pool) -> i32 {
        let mut c = pool.pool.get().unwrap();
        diesel::sql_query("PRAGMA wal_checkpoint(PASSIVE)").get_result::<Checkpointed>(&mut c).unwrap().log
    }

    /// A background checkpoint taken while another thread commits without pause still lets
    /// the WAL start over: the commits after it write from the WAL's start, not after the
    /// frames of everything committed before.
    #[test]
    fn a_checkpoint_amid_steady_commits_lets_the_wal_start_over() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("wal.db").display());
        let pool = Pool::connect(&url, 3).unwrap();
        pool.write_blocking(|c| Ok(c.batch_execute("CREATE TABLE t (x INTEGER)")?)).unwrap();
        for x in 0..500 {
            pool.write_blocking(|c| Ok(c.batch_execute(&format!("INSERT INTO t VALUES ({x})"))?)).unwrap();
        }
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let writer = {
            let (pool, stop) = (pool.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut n = 0;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    pool.write_blocking(|c| Ok(c.batch_execute("INSERT INTO t VALUES (-1)")?)).unwrap();
                    n += 1;
                }
                n
            })
        };
        // The writer commits all along: the checkpoint does not find the WAL still.
        std::thread::sleep(Duration::from_millis(50));
        pool.checkpoint().unwrap();
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let commits = writer.join().unwrap();
        assert!(commits > 0, "the writer never committed");
        // The first commit after a complete checkpoint starts the WAL over. Each commit here
        // writes a frame or two, and the writer stopped within a commit or two of the
        // checkpoint; 500 and more frames were in the WAL before.
        pool.write_blocking(|c| Ok(c.batch_execute("INSERT INTO t VALUES (-2)")?)).unwrap();
        let frames = wal_frames(&pool);
        assert!(frames < 250, "{frames} frames in the WAL: it never started over");
    }

    /// `.cargo/config.toml` builds the bundled SQLite with the query planner stability guarantee:
    /// without it every query with a LIMIT is parsed again on each execution.
    #[test]
    fn bundled_sqlite_has_the_planner_stability_guarantee() {
        let mut c = SqliteConnection::establish(":memory:").unwrap();
        let options: Vec<CompileOption> = diesel::sql_query("PRAGMA compile_options").load(&mut c).unwrap();
        assert!(options.iter().any(|o| o.compile_options == "ENABLE_QPSG"), "SQLite was built without ENABLE_QPSG");
    }
}
