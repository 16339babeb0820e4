//! Terarchitect agent: runner, Director and OpenCode worker that turn a ticket into a pull request.
//!
//! The binary `terarchitect-agent` has three sub-commands:
//! * `ticket`: implement a ticket (research → plan → plan review → execution) and open a pull
//!   request;
//! * `review`: address a reviewer comment on the ticket's pull request and reply to it;
//! * `entrypoint`: the container start-up (optional `dockerd`, `opencode serve`), then the job
//!   named by `JOB_KIND`.
//!
//! Everything the agent tells the platform goes through the worker API
//! ([`terarchitect_worker_api::WorkerApiClient`]); how a run ends is an
//! [`terarchitect_worker_api::AgentOutcome`] (exit code and reason), written last to the
//! termination-message file by [`termination`].

pub mod api;
pub mod config;
pub mod control;
pub mod director;
pub mod entrypoint;
pub mod error;
pub mod finalize;
pub mod git;
pub mod github;
pub mod memory;
pub mod prompts;
pub mod reaper;
pub mod redact;
pub mod runner;
pub mod sandbox;
pub mod termination;
pub mod trace;
pub mod worker;

pub use error::{Failure, RunResult};
