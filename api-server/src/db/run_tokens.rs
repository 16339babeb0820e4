//! Run-token lookups: what a stored token hash is bound to.

use super::{Db, DbResult, with_db};
use crate::run_token::RunGrant;

impl Db {
    /// The job a run-token hash was minted for (one indexed row), whatever its state.
    pub async fn run_grant(&self, token_hash: &str) -> DbResult<Option<RunGrant>> {
        with_db!(self, pool => Ok(sqlx::query_as(
            "SELECT id AS job_id, ticket_id, project_id, attempt, run_token_attempt, status, \
               lease_expires_at, run_token_hash FROM agent_jobs WHERE run_token_hash = $1",
        )
        .bind(token_hash)
        .fetch_optional(pool)
        .await?))
    }
}
