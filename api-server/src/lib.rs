//! Terarchitect api-server: projects, graph, kanban, tickets, notes, settings, the agent job
//! queue, memory and the worker API, served over HTTP (axum) on PostgreSQL or SQLite (sqlx).
//!
//! The worker API follows the original Terarchitect contract exactly; the queue adds leases,
//! heartbeats, attempts, failure reasons and long polling in a backward-compatible way.

pub mod config;
pub mod context_cache;
pub mod db;
pub mod env_file;
pub mod github;
pub mod http;
pub mod log_writer;
pub mod memory;
pub mod metrics;
pub mod queue;
pub mod review;
pub mod run_token;
pub mod server;
pub mod settings;
pub mod state;
pub mod testing;
pub mod worker_context;

pub use config::Config;
pub use server::{RunningServer, StartError, start, start_with_db};
