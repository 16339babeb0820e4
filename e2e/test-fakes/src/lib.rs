//! Test doubles shared by the agent's tests (`agent/tests/`) and the end-to-end tests (`e2e/`):
//!
//! - [`FakeLlm`]: an OpenAI-compatible chat-completions server standing in for the Director LLM,
//!   scripted globally (one queue of answers, for a single agent), per ticket (answers chosen by
//!   a key found in the request, for many concurrent agents), or answering on its own from the
//!   request content ([`FakeLlm::set_auto`]);
//! - [`FakeOpenCode`]: a fake `opencode serve` that makes file changes in the directory the agent
//!   names, and can hold messages (per key, or from an index on) until released or aborted;
//! - [`FakeGitHub`]: the pull-request, review and comment endpoints of the GitHub REST API, with
//!   pagination, ETags and rate limits;
//! - [`GitRemote`]: a local bare repository with one commit on `main`, cloned over `file://`;
//! - [`ScriptedModel`]: a scripted OpenAI-compatible model for the worker (OpenCode's provider),
//!   streaming, with tool calls that drive OpenCode's real tools.
//!
//! Every server binds `127.0.0.1` and lives as long as the Tokio runtime that started it.

mod git;
mod github;
mod llm;
mod opencode;
mod scripted_model;

use std::net::SocketAddr;

use axum::Router;

pub use git::{GitRemote, git};
pub use github::{BOT_LOGIN, FakeGitHub, GhState, Limited, SeenRequest, gh_time, pull_json};
pub use llm::{FakeLlm, LlmKind, LlmState, answers};
pub use opencode::{FakeOpenCode, OcBehaviour, OcState, StartOptions, api_error, fake_work};
pub use scripted_model::{
    ModelCall, ModelKind, ModelState, Reply, Rule, ScriptedModel, content_text,
};

/// Serves `app` on 127.0.0.1 (a fixed port when not 0); returns the base URL.
///
/// # Panics
/// When the port cannot be bound.
pub async fn serve(app: Router, port: u16) -> String {
    let listener = tokio::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], port)))
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("bound address");
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    format!("http://{addr}")
}

/// A port nothing listens on (bound once, then released).
pub fn closed_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("bound address").port()
}
