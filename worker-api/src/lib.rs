//! The Terarchitect worker API contract.
//!
//! [`types`] holds the request and response bodies shared by the api-server (which serves them),
//! the operator and the agent (which call them through [`WorkerApiClient`]).

pub mod client;
pub mod outcome;
pub mod types;

pub use client::{
    ClaimOutcome, EXTENSIONS_HEADER, EXTENSIONS_VERSION, HeartbeatOutcome, JobReport,
    ReleaseOutcome, WorkerApiClient, WorkerApiError, ensure_crypto_provider,
};
pub use outcome::AgentOutcome;
pub use types::*;
