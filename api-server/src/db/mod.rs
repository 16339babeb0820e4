//! Storage: one SQL layer over PostgreSQL (production) and SQLite (the embedded default).
//!
//! Queries are written once with `$N` placeholders and portable SQL; [`with_db!`] expands a
//! body for each backend so the compiler checks both. The few statements that differ (row
//! locking in the claim) ask [`Dialect`].

mod jobs;
mod logs;
mod memory;
mod notes;
mod projects;
mod run_tokens;
mod settings;
mod tickets;

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, SubsecRound, Utc};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{PgPool, Postgres, Sqlite, SqlitePool, Transaction};

pub use jobs::{ClaimFilter, ExpiryPass, JobRow, NewReviewJob, TransitionOutcome};
pub use logs::{LogRow, NewLog};
pub use memory::{MemoryDoc, NewMemoryDoc, Posting};
pub use notes::{NoteChanges, NoteRow};
pub use projects::{
    DefaultTicket, GraphRow, KanbanRow, NewProject, ProjectChanges, ProjectRow,
    default_kanban_columns,
};
pub use settings::SettingRow;
pub use tickets::{
    IN_PROGRESS, NewTicket, TicketChanges, TicketRow, TicketSummaryRow, TicketUpdate,
};

/// Errors of the storage layer.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    /// The database reported an error.
    #[error("database error: {0}")]
    Sqlx(#[from] sqlx::Error),
    /// A migration failed.
    #[error("migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// A referenced row does not exist.
    #[error("{0} not found")]
    NotFound(&'static str),
    /// A uniqueness rule was violated.
    #[error("{0}")]
    Conflict(String),
}

impl DbError {
    /// Whether this is a unique-constraint violation reported by the database.
    pub fn is_unique_violation(&self) -> bool {
        matches!(self, DbError::Sqlx(sqlx::Error::Database(e)) if e.is_unique_violation())
    }
}

/// Result alias of the storage layer.
pub type DbResult<T> = Result<T, DbError>;

/// Which SQL dialect a pool speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    /// PostgreSQL.
    Postgres,
    /// SQLite.
    Sqlite,
}

/// A connection pool to either backend.
#[derive(Clone, Debug)]
pub enum Db {
    /// PostgreSQL (production).
    Postgres(PgPool),
    /// SQLite file (embedded default).
    Sqlite(SqlitePool),
}

/// Expands `$body` once per backend with `$pool` bound to the concrete pool.
macro_rules! with_db {
    ($db:expr, $pool:ident => $body:expr) => {
        match $db {
            $crate::db::Db::Postgres($pool) => $body,
            $crate::db::Db::Sqlite($pool) => $body,
        }
    };
}
pub(crate) use with_db;

/// Starting a write transaction the right way for each backend.
pub(crate) trait WritePool {
    type Database: sqlx::Database;
    /// Begins a transaction that will write. On SQLite this takes the write lock up front
    /// (`BEGIN IMMEDIATE`), so concurrent writers queue on the busy timeout instead of failing
    /// with a lock-upgrade deadlock.
    fn begin_write(
        &self,
    ) -> impl Future<Output = Result<Transaction<'static, Self::Database>, sqlx::Error>> + Send;
}

impl WritePool for PgPool {
    type Database = Postgres;
    async fn begin_write(&self) -> Result<Transaction<'static, Postgres>, sqlx::Error> {
        self.begin().await
    }
}

impl WritePool for SqlitePool {
    type Database = Sqlite;
    async fn begin_write(&self) -> Result<Transaction<'static, Sqlite>, sqlx::Error> {
        self.begin_with("BEGIN IMMEDIATE").await
    }
}

/// The current time, truncated to microseconds (PostgreSQL's precision) so values round-trip
/// identically on both backends.
pub fn now() -> DateTime<Utc> {
    Utc::now().trunc_subsecs(6)
}

/// Options for opening the database.
#[derive(Debug, Clone)]
pub struct DbOptions {
    /// Maximum pool size.
    pub max_connections: u32,
    /// How long to wait for a free connection.
    pub acquire_timeout: Duration,
}

impl Default for DbOptions {
    fn default() -> Self {
        Self {
            max_connections: 20,
            acquire_timeout: Duration::from_secs(10),
        }
    }
}

impl Db {
    /// Opens a `postgres://` or `sqlite:` URL.
    pub async fn connect(url: &str, opts: &DbOptions) -> DbResult<Self> {
        if url.starts_with("sqlite:") {
            let options = SqliteConnectOptions::from_str(url)?;
            Self::open_sqlite(options.create_if_missing(true), opts).await
        } else {
            let options = PgConnectOptions::from_str(url)?;
            let pool = PgPoolOptions::new()
                .max_connections(opts.max_connections)
                .acquire_timeout(opts.acquire_timeout)
                .test_before_acquire(true)
                .connect_with(options)
                .await?;
            Ok(Db::Postgres(pool))
        }
    }

    /// Opens (creating if needed) an SQLite database file.
    pub async fn open_sqlite_file(path: &Path, opts: &DbOptions) -> DbResult<Self> {
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(|e| {
                DbError::Sqlx(sqlx::Error::Configuration(
                    format!("cannot create {}: {e}", parent.display()).into(),
                ))
            })?;
        }
        let options = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true);
        Self::open_sqlite(options, opts).await
    }

    async fn open_sqlite(options: SqliteConnectOptions, opts: &DbOptions) -> DbResult<Self> {
        let options = options
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(30));
        let pool = SqlitePoolOptions::new()
            .max_connections(opts.max_connections.clamp(1, 8))
            .acquire_timeout(opts.acquire_timeout)
            .connect_with(options)
            .await?;
        Ok(Db::Sqlite(pool))
    }

    /// Applies pending migrations.
    pub async fn migrate(&self) -> DbResult<()> {
        match self {
            Db::Postgres(pool) => sqlx::migrate!("./migrations/postgres").run(pool).await?,
            Db::Sqlite(pool) => sqlx::migrate!("./migrations/sqlite").run(pool).await?,
        }
        Ok(())
    }

    /// The backend's dialect.
    pub fn dialect(&self) -> Dialect {
        match self {
            Db::Postgres(_) => Dialect::Postgres,
            Db::Sqlite(_) => Dialect::Sqlite,
        }
    }

    /// A short name for logs and metrics.
    pub fn backend_name(&self) -> &'static str {
        match self.dialect() {
            Dialect::Postgres => "postgres",
            Dialect::Sqlite => "sqlite",
        }
    }

    /// Checks that the database answers.
    pub async fn ping(&self) -> DbResult<()> {
        with_db!(self, pool => {
            sqlx::query("SELECT 1").execute(pool).await?;
        });
        Ok(())
    }

    /// Closes every connection.
    pub async fn close(&self) {
        with_db!(self, pool => pool.close().await)
    }
}

/// Builds `$first, $first+1, …` placeholders for an `IN (…)` list of `n` values.
pub(crate) fn placeholders(first: usize, n: usize) -> String {
    (first..first + n)
        .map(|i| format!("${i}"))
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_are_numbered_from_first() {
        assert_eq!(placeholders(2, 3), "$2, $3, $4");
        assert_eq!(placeholders(1, 0), "");
    }

    #[test]
    fn now_is_microsecond_precision() {
        let t = now();
        assert_eq!(t.timestamp_subsec_nanos() % 1000, 0);
    }
}
