//! `terarchitect-agent`: turns a ticket into a pull request (`ticket`), addresses a review
//! comment (`review`), or starts the agent container (`entrypoint`). The exit code is the run's
//! [`AgentOutcome`]; the last line on stderr (and in the termination-message file) names it.

use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use terarchitect_agent::config::Env;
use terarchitect_agent::{RunResult, entrypoint, runner, termination};
use terarchitect_worker_api::{AgentOutcome, JobKind};
use tokio_util::sync::CancellationToken;

/// Terarchitect agent: the runner, Director and worker that turn a ticket into a pull request.
///
/// Inputs come from the environment (TICKET_ID, PROJECT_ID, TERARCHITECT_API_URL, REPO_URL,
/// GITHUB_TOKEN, TERARCHITECT_WORKER_API_KEY, AGENT_*, WORKER_*, OPENCODE_*, …; see
/// agent/README.md). Exit codes: 0 succeeded, 1 failed, 2 misconfigured, 3 cancelled, 4 turn
/// limit, 5 time limit, 6 clone failed, 7 push failed, 8 pull request failed, 9 worker
/// unavailable, 10 Director failed, 11 API unavailable.
#[derive(Debug, Parser)]
#[command(name = "terarchitect-agent", version, about, long_about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Implement the ticket (research, plan, plan review, execution) and open a pull request.
    Ticket,
    /// Address the review comment (PR_NUMBER, COMMENT_BODY) on the pull request's branch and
    /// reply to it.
    Review,
    /// Container start-up: optional dockerd (AGENT_DOCKER_MODE=dind), opencode serve, then the
    /// job named by JOB_KIND (ticket or review).
    Entrypoint,
}

fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false)
        .try_init();
}

/// Cancels `stop` on SIGTERM or SIGINT.
fn forward_signals(stop: CancellationToken) -> anyhow::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    tokio::spawn(async move {
        tokio::select! {
            _ = term.recv() => tracing::warn!("SIGTERM received; stopping the run"),
            _ = int.recv() => tracing::warn!("SIGINT received; stopping the run"),
        }
        stop.cancel();
    });
    Ok(())
}

fn run(command: Command, env: &Env) -> anyhow::Result<RunResult> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("building the async runtime")?;
    let result = runtime.block_on(async {
        let stop = CancellationToken::new();
        forward_signals(stop.clone())?;
        let result = match command {
            Command::Ticket => runner::run(JobKind::Ticket, env, stop, &mut runner::NoSetup).await,
            Command::Review => runner::run(JobKind::Review, env, stop, &mut runner::NoSetup).await,
            Command::Entrypoint => entrypoint::run_entrypoint(env, stop).await,
        };
        anyhow::Ok(result)
    });
    runtime.shutdown_timeout(std::time::Duration::from_secs(2));
    result
}

fn main() -> ExitCode {
    let env = Env::from_process();
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let code = e.exit_code();
            let _ = e.print();
            if code == 0 {
                return ExitCode::SUCCESS;
            }
            let result = RunResult {
                outcome: AgentOutcome::Misconfigured,
                message: "invalid command line (expected ticket, review or entrypoint)".into(),
            };
            termination::finish(&env, &result);
            return ExitCode::from(result.exit_code() as u8);
        }
    };
    init_tracing();
    // The worker runs as the same uid: keep it out of /proc/<pid>/environ and our memory.
    terarchitect_agent::sandbox::harden_process();
    // What the worker detaches comes back to us, to be killed before the push.
    terarchitect_agent::reaper::adopt_orphans();
    terarchitect_worker_api::ensure_crypto_provider();
    let result = match run(cli.command, &env) {
        Ok(r) => r,
        Err(e) => RunResult {
            outcome: AgentOutcome::Failed,
            message: format!("{e:#}"),
        },
    };
    // The very last act: the termination message (file and stderr).
    termination::finish(&env, &result);
    ExitCode::from(u8::try_from(result.exit_code()).unwrap_or(1))
}
