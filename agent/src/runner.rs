//! One job from start to end: inputs → worker context → settings → workspace and branch →
//! worker → Director → finalize, with a final log entry and an [`AgentOutcome`] for every way
//! it can end.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::time::Duration;

use secrecy::SecretString;
use terarchitect_worker_api::{AgentOutcome, JobKind, LogEntry, WorkerApiClient, WorkerContext};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::api::{Reporter, load_context};
use crate::config::{Env, JobInputs, Settings};
use crate::control::RunControl;
use crate::director::{Director, DirectorParts};
use crate::error::{Failure, RunResult};
use crate::finalize::{self, FinalizeInput};
use crate::git::{GitAuth, Identity, Repo};
use crate::github::{GitHub, repo_slug};
use crate::memory::Memory;
use crate::redact::Redactor;
use crate::trace::Trace;
use crate::worker::{Worker, WorkerEndpoint};

/// Paths that never land in a pull request (plan and trace files).
pub const EXCLUDED_PATHS: [&str; 2] = ["plan/", ".terarchitect/"];

/// A hook that prepares the worker once the settings are known and the repository is ready
/// (the entrypoint starts `opencode serve` here). It returns what it prepared (an OpenCode
/// server URL to use instead of the configured one, its log).
pub trait WorkerSetup {
    /// Prepares the worker.
    fn prepare(
        &mut self,
        settings: &Settings,
        repo_dir: &Path,
        control: &RunControl,
    ) -> impl Future<Output = Result<WorkerEndpoint, Failure>> + Send;

    /// Stops what `prepare` started, once the worker is no longer needed (before anything is
    /// pushed: a process the worker left behind must not be running while git holds the token).
    fn release(&mut self) -> impl Future<Output = ()> + Send;
}

/// No preparation: the worker is expected to be running already (`OPENCODE_SERVER_URL`) or to be
/// the Claude Code CLI.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoSetup;

impl WorkerSetup for NoSetup {
    async fn prepare(
        &mut self,
        _settings: &Settings,
        _repo_dir: &Path,
        _control: &RunControl,
    ) -> Result<WorkerEndpoint, Failure> {
        Ok(WorkerEndpoint::default())
    }

    async fn release(&mut self) {
        crate::reaper::sweep_leftovers(&[]).await;
    }
}

/// Runs a job to its end. Never panics on bad input; every ending is a [`RunResult`].
pub async fn run<S: WorkerSetup>(
    kind: JobKind,
    env: &Env,
    stop: CancellationToken,
    setup: &mut S,
) -> RunResult {
    let inputs = match JobInputs::from_env(kind, env) {
        Ok(i) => i,
        Err(e) => {
            let failure = Failure::misconfigured(e.to_string());
            early_log(env, &failure).await;
            return failure.into();
        }
    };
    let redactor = Redactor::from_env(env);
    let token = inputs
        .worker_api_key
        .as_ref()
        .map(|k| SecretString::from(k.expose().to_owned()));
    let client = match WorkerApiClient::new(&inputs.api_url, token) {
        Ok(c) => c.with_timeout(Duration::from_secs(60)),
        Err(e) => return Failure::misconfigured(e.to_string()).into(),
    };
    let backoff = env
        .get("AGENT_RETRY_BACKOFF_MS")
        .and_then(|v| v.parse().ok())
        .map(Duration::from_millis)
        .unwrap_or(Duration::from_secs(1));
    let ctx = match load_context(&client, inputs.project_id, inputs.ticket_id, 3, backoff).await {
        Ok(c) => c,
        Err(f) => {
            early_log(env, &f).await;
            return f.into();
        }
    };
    let redactor = redactor.with_settings(&ctx.agent_settings);
    let session_id = Uuid::new_v4().to_string();
    let resolved = Settings::resolve(env, &ctx.agent_settings);
    let trace = match &resolved {
        Ok(s) => Trace::new(s.debug, &s.trace_dir, &session_id, redactor.clone()),
        Err(_) => Trace::default(),
    };
    let reporter = Reporter::new(
        client,
        inputs.project_id,
        inputs.ticket_id,
        session_id.clone(),
        redactor,
        trace,
    );
    let started = match kind {
        JobKind::Ticket => "session_started",
        JobKind::Review => "review_started",
    };
    reporter
        .log(
            started,
            &format!("Started worker session {session_id} ({kind} job)"),
            None,
        )
        .await;
    if let Some(err) = env.get("TERARCHITECT_DOCKER_RUN_ERROR") {
        reporter
            .log(
                "docker_run_fallback",
                "Docker run failed; coordinator ran agent on host",
                Some(err),
            )
            .await;
    }
    let settings = match resolved.and_then(|s| s.validate().map(|()| s)) {
        Ok(s) => s,
        Err(e) => {
            let f = Failure::misconfigured(e.to_string());
            reporter.log_failure(f.step(), &f.message, None).await;
            return f.into();
        }
    };
    reporter
        .log(
            "context_loaded",
            &format!(
                "Context loaded: {} / {} (Director {}, worker {})",
                ctx.project_name,
                ctx.current_ticket.title,
                settings.agent_model,
                settings.worker_mode.as_str()
            ),
            None,
        )
        .await;
    let control = RunControl::new(
        stop,
        settings.limits.time_limit,
        settings.limits.cancel_poll,
        reporter.clone(),
    );
    match execute(env, &inputs, &settings, ctx, &reporter, &control, setup).await {
        Ok(result) => result,
        Err(f) => {
            reporter
                .log_failure(f.step(), &f.message, f.detail.as_deref())
                .await;
            let mut result = RunResult::from(f);
            result.message = reporter.redactor().redact(&result.message);
            result
        }
    }
}

/// Best-effort log entry for failures before a session exists.
async fn early_log(env: &Env, failure: &Failure) {
    let (Some(api), Some(p), Some(t)) = (
        env.get("TERARCHITECT_API_URL"),
        env.get("PROJECT_ID").and_then(|v| v.parse::<Uuid>().ok()),
        env.get("TICKET_ID").and_then(|v| v.parse::<Uuid>().ok()),
    ) else {
        return;
    };
    let token = env
        .get("TERARCHITECT_WORKER_API_KEY")
        .map(|k| SecretString::from(k.to_owned()));
    let Ok(client) = WorkerApiClient::new(api, token) else {
        return;
    };
    let redactor = Redactor::from_env(env);
    let entry = LogEntry {
        session_id: Uuid::new_v4().to_string(),
        step: Some(failure.step().to_owned()),
        summary: Some(redactor.redact(&failure.message)),
        raw_output: None,
        success: Some(false),
    };
    let post = client
        .with_timeout(Duration::from_secs(5))
        .post_log(p, t, &entry)
        .await;
    if let Err(e) = post {
        tracing::warn!(error = %e, "could not post the final log entry");
    }
}

/// The work directory of a run; a temporary one is removed when this is dropped.
#[derive(Debug)]
struct Workspace {
    repo: Repo,
    _temp: Option<tempfile::TempDir>,
}

async fn prepare_workspace(
    inputs: &JobInputs,
    settings: &Settings,
    redactor: &Redactor,
) -> Result<Workspace, Failure> {
    let identity = Identity {
        name: settings.git_user_name.clone(),
        email: settings.git_user_email.clone(),
    };
    let repo_url = inputs.repo_url.clone().unwrap_or_default();
    let auth = GitAuth::new(&repo_url, settings.github_token.as_ref());
    let clone_failed = |e: crate::git::GitError| {
        Failure::new(
            AgentOutcome::CloneFailed,
            redactor.redact(&format!("could not prepare the repository: {e}")),
        )
    };
    if inputs.workspace_in_place {
        let dir = inputs.workspace.clone().unwrap_or_default();
        let repo = Repo::open(&dir, auth, identity, redactor.clone())
            .await
            .map_err(clone_failed)?;
        return Ok(Workspace { repo, _temp: None });
    }
    let (dir, temp): (PathBuf, Option<tempfile::TempDir>) = match &inputs.workspace {
        Some(ws) if !ws.exists() || is_empty_dir(ws) => {
            std::fs::create_dir_all(ws).map_err(|e| {
                Failure::new(
                    AgentOutcome::CloneFailed,
                    format!("cannot create AGENT_WORKSPACE {}: {e}", ws.display()),
                )
            })?;
            (ws.clone(), None)
        }
        Some(ws) => {
            let t = tempfile::Builder::new()
                .prefix("terarchitect_runner_")
                .tempdir_in(ws)
                .map_err(|e| Failure::new(AgentOutcome::CloneFailed, e.to_string()))?;
            (t.keep(), None)
        }
        None => {
            let t = tempfile::Builder::new()
                .prefix("terarchitect_runner_")
                .tempdir()
                .map_err(|e| Failure::new(AgentOutcome::CloneFailed, e.to_string()))?;
            (t.path().join("repo"), Some(t))
        }
    };
    let repo = Repo::clone_into(&repo_url, &dir, auth, identity, redactor.clone())
        .await
        .map_err(clone_failed)?;
    Ok(Workspace { repo, _temp: temp })
}

fn is_empty_dir(p: &Path) -> bool {
    std::fs::read_dir(p).is_ok_and(|mut d| d.next().is_none())
}

/// Checks out `ticket-<id>`: the remote branch when an earlier run pushed one (so the push is a
/// fast-forward and an open pull request is reused), otherwise a new branch from the default
/// branch. Returns the base branch.
async fn ticket_branch(repo: &Repo, branch: &str, in_place: bool) -> Result<String, Failure> {
    let fail = |e: crate::git::GitError| {
        Failure::new(
            AgentOutcome::CloneFailed,
            format!("could not check out {branch}: {e}"),
        )
    };
    let base = repo.default_branch().await.map_err(fail)?;
    if in_place {
        repo.checkout_or_create(branch).await.map_err(fail)?;
        return Ok(base);
    }
    if repo.remote_branch_exists(branch).await.map_err(fail)? {
        repo.fetch_branch(branch).await.map_err(fail)?;
        repo.checkout_at(branch, &format!("origin/{branch}"))
            .await
            .map_err(fail)?;
    } else {
        repo.checkout_at(branch, "HEAD").await.map_err(fail)?;
    }
    Ok(base)
}

/// Checks out the pull request's own head branch (the original cut a new branch from the
/// default branch, defect 23). Returns (head branch, base branch).
async fn review_branch(
    repo: &Repo,
    github: &GitHub,
    pr_number: u64,
    fallback: &str,
) -> Result<(String, String), Failure> {
    let fail = |m: String| Failure::new(AgentOutcome::CloneFailed, m).with_step("checkout_failed");
    let (head, base) = match github.pull(pr_number).await {
        Ok(pr) => {
            if let Some(full) = &pr.head_repo
                && !full.eq_ignore_ascii_case(github.slug())
            {
                return Err(fail(format!(
                    "pull request #{pr_number} comes from the fork {full}; the agent can only push to {}",
                    github.slug()
                )));
            }
            (pr.head_ref, pr.base_ref)
        }
        Err(e) => {
            tracing::warn!(error = %e, "could not read the pull request; trying the ticket branch");
            (
                fallback.to_owned(),
                repo.default_branch().await.unwrap_or_default(),
            )
        }
    };
    let exists = repo
        .remote_branch_exists(&head)
        .await
        .map_err(|e| fail(e.to_string()))?;
    if !exists {
        return Err(fail(format!(
            "the branch {head} of pull request #{pr_number} does not exist on the remote"
        )));
    }
    repo.fetch_branch(&head)
        .await
        .map_err(|e| fail(e.to_string()))?;
    repo.checkout_at(&head, &format!("origin/{head}"))
        .await
        .map_err(|e| fail(e.to_string()))?;
    Ok((head, base))
}

async fn execute<S: WorkerSetup>(
    env: &Env,
    inputs: &JobInputs,
    settings: &Settings,
    ctx: WorkerContext,
    reporter: &Reporter,
    control: &RunControl,
    setup: &mut S,
) -> Result<RunResult, Failure> {
    control.check("before the first worker turn").await?;
    let redactor = reporter.redactor();
    let slug = settings
        .github_repository
        .clone()
        .or_else(|| inputs.repo_url.as_deref().and_then(repo_slug))
        .or_else(|| repo_slug(&ctx.repo_url))
        .ok_or_else(|| {
            Failure::misconfigured(
                "cannot tell the GitHub repository from REPO_URL; set GITHUB_REPOSITORY=owner/name",
            )
        })?;
    let github = GitHub::new(
        &settings.github_api_url,
        &slug,
        settings.github_token.clone(),
    );

    let workspace = control
        .guard(
            "while cloning",
            prepare_workspace(inputs, settings, redactor),
        )
        .await??;
    let repo = workspace.repo.clone();
    if let Err(e) = repo.exclude(&EXCLUDED_PATHS).await {
        tracing::warn!(error = %e, "could not write .git/info/exclude");
    }
    let ticket_branch_name = inputs.ticket_branch();
    let (branch, base) = match &inputs.review {
        None => {
            let base = control
                .guard(
                    "while preparing the branch",
                    ticket_branch(&repo, &ticket_branch_name, inputs.workspace_in_place),
                )
                .await??;
            reporter
                .log(
                    "branch_created",
                    &format!("Branch {ticket_branch_name} checked out"),
                    None,
                )
                .await;
            (ticket_branch_name.clone(), base)
        }
        Some(review) => {
            let (head, base) = control
                .guard(
                    "while checking out the pull request",
                    review_branch(&repo, &github, review.pr_number, &ticket_branch_name),
                )
                .await??;
            reporter
                .log(
                    "branch_checked_out",
                    &format!(
                        "Branch {head} of pull request #{} checked out",
                        review.pr_number
                    ),
                    None,
                )
                .await;
            (head, base)
        }
    };

    let mut endpoint = setup.prepare(settings, repo.dir(), control).await?;
    endpoint.env = env.clone();
    let worker = Worker::new(settings, repo.dir(), reporter.session_id(), &endpoint);
    let memory = Memory::new(
        reporter.client().clone(),
        reporter.project_id(),
        redactor.clone(),
    );
    let mut director = Director::new(DirectorParts {
        settings: settings.clone(),
        reporter: reporter.clone(),
        control: control.clone(),
        memory,
        worker,
        repo: repo.clone(),
        context: ctx,
        review_comment: inputs.review.as_ref().map(|r| r.comment_body.clone()),
    });
    director.check_worker().await?;

    let outcome = match &inputs.review {
        None => director.run_ticket().await,
        Some(_) => director.run_review().await,
    };
    // The worker's part is over: stop it (and what it left running) before git uses the token.
    director.release_worker().await;
    setup.release().await;
    let summary = match outcome {
        Ok(s) => s,
        Err(f) => {
            if matches!(f.outcome, AgentOutcome::TurnLimit | AgentOutcome::TimeLimit) {
                finalize::preserve_work(&repo, reporter, &branch, f.outcome.reason()).await;
            }
            return Err(f);
        }
    };
    let ticket = director.ticket().clone();
    let input = FinalizeInput {
        repo: &repo,
        github: &github,
        reporter,
        branch: &branch,
        base: &base,
        title: &ticket.title,
        description: &ticket.description,
    };
    match &inputs.review {
        None => {
            let accomplished = director
                .pr_description(&summary)
                .await
                .unwrap_or_else(|| summary.clone());
            finalize::finalize_ticket(input, &summary, &accomplished).await
        }
        Some(review) => {
            let reply = director.review_reply(&summary).await;
            finalize::finalize_review(input, review.pr_number, &summary, &reply).await
        }
    }
}
