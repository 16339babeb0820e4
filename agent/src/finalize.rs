//! Finalize: commit, push, open (or reuse) the pull request, or post the review reply, then
//! complete the ticket. Every failure is reported with its own exit code; nothing is completed
//! after a failed push or pull request (the original ignored those failures).

use std::time::Duration;

use terarchitect_worker_api::{AgentOutcome, CompleteTicketRequest};

use crate::api::{Reporter, truncate_chars};
use crate::error::{Failure, RunResult};
use crate::git::Repo;
use crate::github::{GitHub, GitHubError};
use crate::prompts::{ACCOMPLISHED_HEADING, BOT_SIGNATURE};

/// Largest pull-request body or comment (characters).
pub const MAX_BODY: usize = 60_000;

/// The final commit message: the summary, else the title, else `Implementation`, at most 200
/// characters.
pub fn commit_message(summary: &str, title: &str) -> String {
    let msg = [summary, title, "Implementation"]
        .into_iter()
        .map(str::trim)
        .find(|s| !s.is_empty())
        .unwrap_or("Implementation");
    if msg.chars().count() > 200 {
        format!("{}...", truncate_chars(msg, 197))
    } else {
        msg.to_owned()
    }
}

/// The pull-request body: the ticket, then the `## What was accomplished` section.
pub fn pr_body(title: &str, description: &str, accomplished: &str) -> String {
    let mut body = format!(
        "Ticket: {title}\n\n{}",
        truncate_chars(description.trim(), 500)
    );
    if !accomplished.trim().is_empty() {
        body.push_str(&format!(
            "\n\n---\n\n{ACCOMPLISHED_HEADING}\n\n{}",
            accomplished.trim()
        ));
    }
    truncate_chars(&body, MAX_BODY)
}

/// The review reply with the bot signature, at most [`MAX_BODY`] characters.
pub fn reply_body(reply: &str) -> String {
    let text = if reply.trim().is_empty() {
        "Addressed review feedback."
    } else {
        reply.trim()
    };
    let body = format!("{text}\n\n{BOT_SIGNATURE}");
    if body.chars().count() > MAX_BODY {
        let keep = MAX_BODY - 3 - BOT_SIGNATURE.len() - 2;
        format!("{}...\n\n{BOT_SIGNATURE}", truncate_chars(text, keep))
    } else {
        body
    }
}

/// What finalize works on.
#[derive(Debug)]
pub struct FinalizeInput<'a> {
    /// The repository.
    pub repo: &'a Repo,
    /// GitHub.
    pub github: &'a GitHub,
    /// API access and logs.
    pub reporter: &'a Reporter,
    /// Branch to push.
    pub branch: &'a str,
    /// Base branch of a new pull request.
    pub base: &'a str,
    /// Ticket title.
    pub title: &'a str,
    /// Ticket description.
    pub description: &'a str,
}

async fn commit(input: &FinalizeInput<'_>, summary: &str) -> Result<(), Failure> {
    input
        .repo
        .commit_all(&commit_message(summary, input.title))
        .await
        .map(drop)
        .map_err(|e| Failure::new(AgentOutcome::Failed, format!("final commit failed: {e}")))
}

async fn push(input: &FinalizeInput<'_>) -> Result<(), Failure> {
    input.repo.push(input.branch).await.map_err(|e| {
        Failure::new(
            AgentOutcome::PushFailed,
            format!("pushing branch {} failed: {e}", input.branch),
        )
    })?;
    input
        .reporter
        .log(
            "branch_pushed",
            &format!("Pushed branch {}", input.branch),
            None,
        )
        .await;
    Ok(())
}

fn pr_failure(context: &str, e: &GitHubError) -> Failure {
    Failure::new(AgentOutcome::PullRequestFailed, format!("{context}: {e}"))
}

/// Ticket finalize: commit, push, open or reuse the pull request, complete the ticket.
/// `accomplished` is the PR description (or the summary).
pub async fn finalize_ticket(
    input: FinalizeInput<'_>,
    summary: &str,
    accomplished: &str,
) -> Result<RunResult, Failure> {
    let reporter = input.reporter;
    reporter
        .log(
            "finalize",
            "Finalizing: commit, push, PR creation, move to In Review",
            None,
        )
        .await;
    commit(&input, summary).await?;
    let existing = input.github.find_open_pull(input.branch).await;
    if matches!(existing, Ok(None)) {
        let ahead = input
            .repo
            .commits_ahead(&format!("origin/{}", input.base))
            .await
            .unwrap_or(1);
        if ahead == 0 {
            return Err(Failure::new(
                AgentOutcome::PullRequestFailed,
                format!(
                    "branch {} has no commits beyond {}: the worker changed nothing, so there is no pull request to open",
                    input.branch, input.base
                ),
            ));
        }
    }
    push(&input).await?;
    let redactor = reporter.redactor();
    let (pr, reused) = match existing {
        Ok(Some(pr)) => (pr, true),
        other => {
            if let Err(e) = &other {
                tracing::warn!(error = %e, "could not list pull requests; trying to open one");
            }
            let title = {
                let t = truncate_chars(input.title.trim(), 256);
                if t.is_empty() {
                    "Implementation".to_owned()
                } else {
                    t
                }
            };
            let body = redactor.redact(&pr_body(input.title, input.description, accomplished));
            match input
                .github
                .create_pull(&title, &body, input.branch, input.base)
                .await
            {
                Ok(pr) => (pr, false),
                Err(e @ GitHubError::Status { status: 422, .. }) => {
                    // Someone (or an earlier run) opened it meanwhile.
                    match input.github.find_open_pull(input.branch).await {
                        Ok(Some(pr)) => (pr, true),
                        _ => return Err(pr_failure("opening the pull request failed", &e)),
                    }
                }
                Err(e) => return Err(pr_failure("opening the pull request failed", &e)),
            }
        }
    };
    let verb = if reused { "reused" } else { "opened" };
    reporter
        .log(
            if reused { "pr_reused" } else { "pr_opened" },
            &format!("Pull request #{} {verb}: {}", pr.number, pr.html_url),
            None,
        )
        .await;
    reporter
        .complete(CompleteTicketRequest {
            pr_url: Some(pr.html_url.clone()),
            pr_number: i64::try_from(pr.number).ok(),
            summary: Some(truncate_chars(&commit_message(summary, input.title), 500)),
            review_comment_body: None,
        })
        .await?;
    Ok(RunResult::succeeded(format!(
        "pull request #{} {verb}: {}",
        pr.number, pr.html_url
    )))
}

/// Review finalize: commit, push to the pull request's branch, post the reply, complete.
pub async fn finalize_review(
    input: FinalizeInput<'_>,
    pr_number: u64,
    summary: &str,
    reply: &str,
) -> Result<RunResult, Failure> {
    let reporter = input.reporter;
    reporter
        .log("finalize", "Finalizing: commit, push, PR comment", None)
        .await;
    commit(&input, summary).await?;
    push(&input).await?;
    let body = reporter.redactor().redact(&reply_body(reply));
    let url = input.github.comment(pr_number, &body).await.map_err(|e| {
        pr_failure(
            &format!("posting the reply on pull request #{pr_number} failed"),
            &e,
        )
    })?;
    reporter
        .log(
            "pr_comment_posted",
            &format!(
                "Reply posted on pull request #{pr_number}{}",
                url.map(|u| format!(": {u}")).unwrap_or_default()
            ),
            None,
        )
        .await;
    let summary = if summary.trim().is_empty() {
        "Addressed review feedback."
    } else {
        summary
    };
    reporter
        .complete(CompleteTicketRequest {
            pr_url: None,
            pr_number: None,
            summary: Some(truncate_chars(summary, 500)),
            review_comment_body: Some(body),
        })
        .await?;
    Ok(RunResult::succeeded(format!(
        "reply posted on pull request #{pr_number}"
    )))
}

/// After a turn or time limit: commit and push the work so far to the branch (best effort, no
/// pull request, no completion), so a later run can continue from it.
pub async fn preserve_work(repo: &Repo, reporter: &Reporter, branch: &str, reason: &str) {
    let work = async {
        repo.commit_all(&format!("Agent: work in progress ({reason})"))
            .await?;
        repo.push(branch).await
    };
    match tokio::time::timeout(Duration::from_secs(120), work).await {
        Ok(Ok(())) => {
            reporter
                .log(
                    "work_preserved",
                    &format!("Work so far pushed to branch {branch} (no pull request)"),
                    None,
                )
                .await;
        }
        Ok(Err(e)) => tracing::warn!(error = %e, "could not preserve the work"),
        Err(_) => tracing::warn!("preserving the work timed out"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn texts() {
        assert_eq!(commit_message(" ", " T "), "T");
        assert_eq!(commit_message("", ""), "Implementation");
        let long = "x".repeat(300);
        assert_eq!(commit_message(&long, "").chars().count(), 200);
        let body = pr_body("T", "D", "did it");
        assert_eq!(
            body,
            "Ticket: T\n\nD\n\n---\n\n## What was accomplished\n\ndid it"
        );
        assert!(reply_body("ok").ends_with("\n\n<!-- terarchitect-bot -->"));
        let r = reply_body(&"y".repeat(70_000));
        assert!(r.chars().count() <= MAX_BODY && r.ends_with(BOT_SIGNATURE));
    }
}
