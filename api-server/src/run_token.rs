//! Run credentials: each successful claim mints a run token that lets the claimed run reach
//! its own ticket, project and job and nothing else (see `http::run_scope`).
//!
//! Format: [`PREFIX`] followed by 64 lower-case hex characters (32 bytes from the thread-local
//! CSPRNG, 256 bits). The server keeps only the SHA-256 of the whole token, as lower-case hex,
//! in `agent_jobs.run_token_hash`, next to the attempt it was minted for
//! (`agent_jobs.run_token_attempt`). A token is valid while its job is running under that
//! attempt and its lease has not run out.

use chrono::{DateTime, Utc};
use rand::RngCore;
use sha2::{Digest, Sha256};
use uuid::Uuid;

/// Prefix of every run token, so secret scanners and log redaction can spot one.
pub const PREFIX: &str = "tart_";

/// Random bytes in a token.
const TOKEN_BYTES: usize = 32;

/// A freshly minted token and the hash to store.
pub struct Minted {
    /// The token, handed to the claimer once and never stored.
    pub token: String,
    /// SHA-256 of the token, lower-case hex.
    pub hash: String,
}

impl std::fmt::Debug for Minted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Minted")
            .field("token", &"<redacted>")
            .finish()
    }
}

/// Mints a new token.
pub fn mint() -> Minted {
    let mut bytes = [0u8; TOKEN_BYTES];
    rand::rng().fill_bytes(&mut bytes);
    let token = format!("{PREFIX}{}", hex::encode(bytes));
    let hash = hash(&token);
    Minted { token, hash }
}

/// The stored form of a token: SHA-256, lower-case hex.
pub fn hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// Whether a presented bearer has the shape of a run token (cheap; no lookup).
pub fn looks_like(token: &str) -> bool {
    token.strip_prefix(PREFIX).is_some_and(|rest| {
        rest.len() == 2 * TOKEN_BYTES && rest.bytes().all(|b| b.is_ascii_hexdigit())
    })
}

/// What a stored run token is bound to, and the state of its job.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct RunGrant {
    /// The job the token was minted for.
    pub job_id: Uuid,
    /// The job's ticket.
    pub ticket_id: Uuid,
    /// The job's project.
    pub project_id: Uuid,
    /// The job's current attempt.
    pub attempt: i32,
    /// The attempt the token was minted for.
    pub run_token_attempt: Option<i32>,
    /// The job's status.
    pub status: String,
    /// When the job's lease runs out.
    pub lease_expires_at: Option<DateTime<Utc>>,
    /// The stored hash (compared again in constant time after the indexed lookup).
    pub run_token_hash: Option<String>,
}

impl RunGrant {
    /// Whether the token still works at `now`: its job is running under the attempt the token
    /// was minted for, and the lease has not run out.
    pub fn is_live(&self, now: DateTime<Utc>) -> bool {
        self.status == "running"
            && self.run_token_attempt == Some(self.attempt)
            && self.lease_expires_at.is_some_and(|t| t > now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minted_tokens_have_the_documented_shape() {
        let a = mint();
        let b = mint();
        assert!(a.token.starts_with(PREFIX));
        assert_eq!(a.token.len(), PREFIX.len() + 64);
        assert!(looks_like(&a.token));
        assert_ne!(a.token, b.token);
        assert_eq!(a.hash, hash(&a.token));
        assert_eq!(a.hash.len(), 64);
        assert!(!format!("{a:?}").contains(&a.token));
    }

    #[test]
    fn only_well_formed_tokens_look_like_run_tokens() {
        assert!(!looks_like("tart_"));
        assert!(!looks_like("tart_xyz"));
        assert!(!looks_like(&format!("tart_{}", "g".repeat(64))));
        assert!(!looks_like(&"a".repeat(69)));
        assert!(looks_like(&format!("tart_{}", "0".repeat(64))));
    }

    #[test]
    fn a_grant_is_live_only_while_its_attempt_runs() {
        let now = Utc::now();
        let grant = RunGrant {
            job_id: Uuid::new_v4(),
            ticket_id: Uuid::new_v4(),
            project_id: Uuid::new_v4(),
            attempt: 2,
            run_token_attempt: Some(2),
            status: "running".into(),
            lease_expires_at: Some(now + chrono::Duration::seconds(5)),
            run_token_hash: None,
        };
        assert!(grant.is_live(now));
        let older = RunGrant {
            run_token_attempt: Some(1),
            ..grant.clone()
        };
        assert!(!older.is_live(now));
        let finished = RunGrant {
            status: "completed".into(),
            ..grant.clone()
        };
        assert!(!finished.is_live(now));
        assert!(!grant.is_live(now + chrono::Duration::seconds(6)));
    }
}
