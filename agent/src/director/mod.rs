//! The Director: it drives the worker through research → plan → plan review → execution (or the
//! review flow), judging every worker turn with its own LLM through the assessment contract
//! ([`assess`]), and posts a log entry for every step.
//!
//! Fixes over the original: the plan review really loops until the plan is approved (or the
//! pass limit), `complete` must be a JSON boolean, malformed answers are re-asked, transient
//! LLM errors are retried, the settings (secrets) never reach the model, cancellation is polled
//! during long worker calls, and cancellation or limits never lead to a finalize.

pub mod assess;
pub mod history;
pub mod llm;

use std::path::PathBuf;
use std::time::Duration;

use serde_json::{Value, json};
use terarchitect_worker_api::{AgentOutcome, WorkerContext};

use crate::api::{Reporter, truncate_chars};
use crate::config::Settings;
use crate::control::RunControl;
use crate::error::Failure;
use crate::git::Repo;
use crate::memory::{Memory, memory_block, merge_passages, turn_query};
use crate::prompts::{self, ASSESS_LINE, COMPACTION_MARKER, fill, with_slowly_prefix};
use crate::redact::Redactor;
use crate::trace::Trace;
use crate::worker::{Worker, WorkerError};

use assess::{Assessment, Phase, parse_assessment};
use history::{Conversation, estimate_messages, estimate_tokens, format_for_summary};
use llm::{ChatClient, ChatMessage};

/// Conversations longer than this (tokens) are summarised in the first plan-review message.
const FIRST_PLAN_REVIEW_TOKENS: usize = 12_000;

/// The ticket being worked on.
#[derive(Debug, Clone)]
pub struct TicketInfo {
    /// Ticket id.
    pub id: uuid::Uuid,
    /// Title.
    pub title: String,
    /// Description (may be empty).
    pub description: String,
}

impl TicketInfo {
    /// The ticket of a worker context.
    pub fn from_context(ctx: &WorkerContext) -> Self {
        Self {
            id: ctx.current_ticket.id,
            title: ctx.current_ticket.title.clone(),
            description: ctx.current_ticket.description.clone().unwrap_or_default(),
        }
    }

    /// Whether this is the project setup ticket.
    pub fn is_setup(&self) -> bool {
        self.title.trim().to_lowercase() == prompts::SETUP_TICKET_TITLE
    }
}

/// What the Director works with.
#[derive(Debug)]
pub struct DirectorParts {
    /// Resolved settings.
    pub settings: Settings,
    /// Log and API access.
    pub reporter: Reporter,
    /// Cancellation and time limits.
    pub control: RunControl,
    /// Project memory.
    pub memory: Memory,
    /// The worker.
    pub worker: Worker,
    /// The repository (for per-turn commits).
    pub repo: Repo,
    /// The worker context from the API.
    pub context: WorkerContext,
    /// Review jobs: the reviewer comment.
    pub review_comment: Option<String>,
}

/// The Director of one run.
#[derive(Debug)]
pub struct Director {
    llm: ChatClient,
    settings: Settings,
    reporter: Reporter,
    control: RunControl,
    memory: Memory,
    worker: Worker,
    repo: Repo,
    ticket: TicketInfo,
    redactor: Redactor,
    trace: Trace,
    /// Context shown to the Director: the worker context without `agent_settings`.
    director_context: String,
    /// `"\nContext:\n" + JSON` shown to the worker.
    worker_context: String,
    messages: Vec<ChatMessage>,
    conversation: Conversation,
    start_passages: Vec<String>,
    review_comment: Option<String>,
}

impl Director {
    /// A Director for a run.
    pub fn new(parts: DirectorParts) -> Self {
        let redactor = parts.reporter.redactor().clone();
        let trace = parts.reporter.trace().clone();
        let ticket = TicketInfo::from_context(&parts.context);
        let mut full = serde_json::to_value(&parts.context).unwrap_or(Value::Null);
        if let Some(obj) = full.as_object_mut() {
            // The settings carry every secret; the Director never sees them (defect 15).
            obj.remove("agent_settings");
            if let Some(c) = &parts.review_comment {
                obj.insert("pr_review_comment".into(), json!(c));
            }
        }
        let director_context =
            serde_json::to_string_pretty(&redactor.redact_json(&full)).unwrap_or_default();
        let mut worker_ctx = json!({
            "project_name": parts.context.project_name,
            "project_path": parts.repo.dir().to_string_lossy(),
            "current_ticket": parts.context.current_ticket,
            "graph_relevant_to_current_ticket": parts.context.graph_relevant_to_current_ticket,
        });
        if let Some(c) = &parts.review_comment {
            worker_ctx["pr_review_comment"] = json!(c);
        }
        let worker_context = format!(
            "\nContext:\n{}",
            serde_json::to_string_pretty(&redactor.redact_json(&worker_ctx)).unwrap_or_default()
        );
        Self {
            llm: ChatClient::new(&parts.settings, redactor.clone()),
            settings: parts.settings,
            reporter: parts.reporter,
            control: parts.control,
            memory: parts.memory,
            worker: parts.worker,
            repo: parts.repo,
            ticket,
            redactor,
            trace,
            director_context,
            worker_context,
            messages: Vec::new(),
            conversation: Conversation::default(),
            start_passages: Vec::new(),
            review_comment: parts.review_comment,
        }
    }

    /// The ticket.
    pub fn ticket(&self) -> &TicketInfo {
        &self.ticket
    }

    /// The repository.
    pub fn repo(&self) -> &Repo {
        &self.repo
    }

    /// Stops the worker's leftover processes (see [`Worker::release`]).
    pub async fn release_worker(&mut self) {
        self.worker.release().await;
    }

    /// Checks that the worker is reachable.
    pub async fn check_worker(&self) -> Result<(), Failure> {
        self.control
            .guard("while checking the worker", self.worker.check())
            .await?
            .map_err(Failure::from)
    }

    // ---- helpers -------------------------------------------------------------------------

    async fn log(&self, step: &str, summary: &str, raw: Option<&str>) {
        self.reporter.log(step, summary, raw).await;
    }

    /// One worker turn, interrupted (and the worker session aborted) on cancellation, time
    /// limit or worker timeout.
    async fn worker_turn(
        &mut self,
        prompt: &str,
        resume: bool,
        during: &str,
    ) -> Result<String, Failure> {
        let prompt = self.redactor.redact(prompt);
        let result = self
            .control
            .guard(during, self.worker.send(&prompt, resume))
            .await;
        let rejected = self.worker.take_rejected();
        if !rejected.is_empty() {
            self.log(
                "worker_request_rejected",
                &format!(
                    "Rejected {} worker request(s) that would have blocked the turn (policy: nothing outside the repository, no questions)",
                    rejected.len()
                ),
                Some(&rejected.join("\n")),
            )
            .await;
        }
        match result {
            Ok(Ok(out)) => Ok(out),
            Ok(Err(e)) => {
                if matches!(e, WorkerError::Timeout(_)) {
                    self.worker.abort().await;
                }
                Err(e.into())
            }
            Err(f) => {
                self.worker.abort().await;
                Err(f)
            }
        }
    }

    async fn director_call(
        &self,
        messages: &[ChatMessage],
        opts: llm::CallOptions,
    ) -> Result<Result<String, llm::LlmError>, Failure> {
        self.control
            .guard(
                "while waiting for the Director",
                self.llm.chat(messages, opts),
            )
            .await
    }

    async fn retrieve(&self, queries: &[String]) -> Vec<String> {
        self.memory.retrieve(queries).await
    }

    async fn turn_passages(&self, include_start: bool) -> Vec<String> {
        let q = turn_query(
            self.conversation.last_prompt(),
            self.conversation.last_output(),
        );
        let fresh = self.retrieve(&[q]).await;
        let mut out = if include_start {
            self.start_passages.clone()
        } else {
            Vec::new()
        };
        merge_passages(&mut out, fresh);
        out
    }

    async fn summarize(&self, chunk: &[ChatMessage]) -> Result<String, Failure> {
        let text = format_for_summary(chunk);
        let msgs = [
            ChatMessage::system(prompts::SUMMARIZER_SYSTEM.trim()),
            ChatMessage::user(text.clone()),
        ];
        let opts = self.llm.aux_options(2048, 0.2, Duration::from_secs(120));
        match self.director_call(&msgs, opts).await? {
            Ok(s) if !s.trim().is_empty() => Ok(s.trim().to_owned()),
            other => {
                if let Err(e) = other {
                    tracing::warn!(error = %e, "summariser failed; keeping truncated text");
                }
                Ok(format!(
                    "{}[... truncated ...]",
                    truncate_chars(&text, 4000)
                ))
            }
        }
    }

    /// Replaces the oldest Director messages by summaries while the next request is too long.
    async fn compact(
        &mut self,
        system: &ChatMessage,
        user: &ChatMessage,
        phase: Phase,
    ) -> Result<(), Failure> {
        let limit = match phase {
            Phase::PlanReview => self.settings.limits.plan_review_context_tokens,
            Phase::Execution => self.settings.limits.context_tokens,
        };
        let size = |msgs: &[ChatMessage]| {
            estimate_messages(msgs)
                + estimate_messages(std::slice::from_ref(system))
                + estimate_messages(std::slice::from_ref(user))
        };
        while size(&self.messages) > limit && self.messages.len() >= 4 {
            let chunk: Vec<ChatMessage> = self.messages.drain(..4).collect();
            let summary = self.summarize(&chunk).await?;
            self.messages.insert(
                0,
                ChatMessage::user(format!("{COMPACTION_MARKER}\n\n{summary}")),
            );
            self.log("director_compacted", "Compacted the Director history", None)
                .await;
        }
        Ok(())
    }

    /// Asks the Director to assess; re-asks (bounded) when the answer breaks the contract.
    async fn assess(&mut self, phase: Phase, user: String) -> Result<Assessment, Failure> {
        let system = match phase {
            Phase::PlanReview => ChatMessage::system(format!(
                "{}\n\n{}",
                prompts::DIRECTOR_SYSTEM.trim(),
                prompts::PLAN_REVIEW_INSTRUCTIONS.trim()
            )),
            Phase::Execution => ChatMessage::system(prompts::DIRECTOR_SYSTEM.trim()),
        };
        let user = ChatMessage::user(user);
        self.compact(&system, &user, phase).await?;
        let mut msgs = Vec::with_capacity(self.messages.len() + 4);
        msgs.push(system);
        msgs.extend(self.messages.iter().cloned());
        msgs.push(user.clone());
        let opts = self.llm.assessment_options();
        let mut retries = 0;
        loop {
            self.trace.write(
                "Director request (last message)",
                &msgs.last().map(|m| m.content.clone()).unwrap_or_default(),
            );
            let content = self.director_call(&msgs, opts).await?.map_err(|e| {
                Failure::new(
                    AgentOutcome::DirectorFailed,
                    self.redactor.redact(&e.to_string()),
                )
            })?;
            self.trace.write("Director answer", &content);
            match parse_assessment(&content, phase) {
                Ok(a) => {
                    self.messages.push(user);
                    self.messages
                        .push(ChatMessage::assistant(a.json_text.clone()));
                    return Ok(a);
                }
                Err(e) if retries < self.settings.limits.json_retries => {
                    retries += 1;
                    self.log(
                        "director_invalid_answer",
                        &format!("Director answer rejected ({e}); asking again ({retries})"),
                        Some(&content),
                    )
                    .await;
                    msgs.push(ChatMessage::assistant(content));
                    msgs.push(ChatMessage::user(fill(
                        prompts::JSON_RETRY,
                        &[("error", &e.0)],
                    )));
                }
                Err(e) => {
                    return Err(Failure::new(
                        AgentOutcome::DirectorFailed,
                        format!(
                            "the Director's answer broke the JSON contract {} times: {e}",
                            retries + 1
                        ),
                    ));
                }
            }
        }
    }

    fn plan_path(&self) -> PathBuf {
        self.repo
            .dir()
            .join(prompts::plan_file_relative(&self.ticket.id))
    }

    fn read_plan_file(&self) -> String {
        std::fs::read_to_string(self.plan_path())
            .map(|s| s.trim().to_owned())
            .unwrap_or_default()
    }

    /// Commits the turn's changes with a Director-written message (new files included).
    async fn commit_turn(&self, turn: usize) -> Result<(), Failure> {
        let fallback = format!("Agent: step {turn}");
        let diff = async {
            self.repo.stage_all().await?;
            self.repo.staged_diff().await
        }
        .await;
        let diff = match diff {
            Ok(d) => d,
            Err(e) => {
                tracing::warn!(error = %e, "could not stage the turn's changes");
                return Ok(());
            }
        };
        if diff.trim().is_empty() {
            return Ok(());
        }
        let mut shown = truncate_chars(&diff, 6000);
        if shown.len() < diff.len() {
            shown.push_str("\n... (truncated)");
        }
        let msgs = [
            ChatMessage::system(prompts::COMMIT_MESSAGE_SYSTEM.trim()),
            ChatMessage::user(format!("Diff:\n{shown}")),
        ];
        let opts = self.llm.aux_options(80, 0.2, Duration::from_secs(30));
        let message = match self.director_call(&msgs, opts).await? {
            Ok(m) => {
                let line = m
                    .lines()
                    .map(|l| l.trim().trim_matches(['"', '\'', '`']).trim())
                    .find(|l| !l.is_empty())
                    .unwrap_or_default()
                    .to_owned();
                if line.is_empty() {
                    fallback
                } else {
                    truncate_chars(&line, 200)
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "commit message generation failed");
                fallback
            }
        };
        if let Err(e) = self.repo.commit(&message).await {
            tracing::warn!(error = %e, "per-turn commit failed");
        }
        Ok(())
    }

    fn execution_message(
        &self,
        first: bool,
        setup: bool,
        plan: &str,
        passages: &[String],
    ) -> String {
        let mut m = String::new();
        if setup {
            m.push_str(prompts::SETUP_HINT.trim());
            m.push_str("\n\n");
        }
        if self.review_comment.is_some() {
            m.push_str(prompts::REVIEW_HINT.trim());
            m.push_str("\n\n");
        }
        if !plan.is_empty() {
            m.push_str(&fill(prompts::PLAN_BLOCK, &[("plan", plan)]));
            m.push_str("\n\n");
        }
        if first {
            m.push_str(&format!("Context:\n{}\n\n", self.director_context));
        }
        m.push_str(&memory_block(passages));
        if first {
            m.push_str("Full conversation with Worker:\n");
            m.push_str(&self.conversation.format_all());
        } else {
            m.push_str(&self.conversation.format_latest());
        }
        m.push_str("\n\n");
        m.push_str(ASSESS_LINE);
        m
    }

    async fn plan_review_message(
        &self,
        first: bool,
        passages: &[String],
    ) -> Result<String, Failure> {
        let mut m = String::new();
        if first {
            m.push_str(&format!("Context:\n{}\n\n", self.director_context));
        }
        m.push_str(&memory_block(passages));
        if first {
            let all = self.conversation.format_all();
            let n = self.conversation.len();
            let conv = if estimate_tokens(&all) > FIRST_PLAN_REVIEW_TOKENS && n > 2 {
                let older = self.conversation.format_range(1, n - 2);
                let summary = self.summarize(&[ChatMessage::user(older)]).await?;
                format!(
                    "{COMPACTION_MARKER}\n\n{summary}\n\n---\n\n{}",
                    self.conversation.format_range(n - 1, n)
                )
            } else {
                all
            };
            m.push_str("Full conversation with Worker:\n");
            m.push_str(&conv);
        } else {
            m.push_str(&self.conversation.format_latest());
        }
        m.push_str("\n\n");
        m.push_str(prompts::PLAN_REVIEW_REQUEST.trim());
        Ok(m)
    }

    // ---- ticket flow ---------------------------------------------------------------------

    /// Runs the ticket flow; returns the completion summary.
    pub async fn run_ticket(&mut self) -> Result<String, Failure> {
        let t = &self.ticket;
        let queries = [
            format!("{}. {}", t.title, t.description),
            "What has been done in this project? Completed work and summaries.".to_owned(),
        ];
        self.start_passages = self.retrieve(&queries).await;
        if self.ticket.is_setup() {
            self.run_setup().await
        } else {
            self.run_normal().await
        }
    }

    async fn run_setup(&mut self) -> Result<String, Failure> {
        self.log(
            "project_setup_flow",
            "Project setup ticket: structure and configuration only",
            None,
        )
        .await;
        let prompt = format!(
            "{}\n\nTicket: {}\n\nDescription:\n{}\n{}",
            prompts::WORKER_SETUP.trim(),
            self.ticket.title,
            self.ticket.description,
            self.worker_context
        );
        self.log(
            "worker_setup_prompt",
            "Setup prompt sent to the worker",
            Some(&prompt),
        )
        .await;
        let out = self
            .worker_turn(&prompt, false, "during the setup turn")
            .await?;
        self.conversation.push(&prompt, &out);
        self.log("worker_setup_done", "Setup turn completed", Some(&out))
            .await;
        self.commit_turn(0).await?;
        self.execution_loop(String::new(), true).await
    }

    async fn run_normal(&mut self) -> Result<String, Failure> {
        // Research.
        let prompt = format!(
            "{}\n{}",
            prompts::WORKER_RESEARCH.trim(),
            self.worker_context
        );
        self.log(
            "worker_research_prompt",
            "Research prompt sent to the worker",
            Some(&prompt),
        )
        .await;
        let out = self.worker_turn(&prompt, false, "during research").await?;
        self.conversation.push(&prompt, &out);
        self.log("worker_research_done", "Research completed", Some(&out))
            .await;
        self.control.check("before planning").await?;

        // Plan.
        let plan_path = self.plan_path();
        let prompt = format!(
            "{}\n{}",
            fill(
                prompts::WORKER_PLAN,
                &[("task_plan_path", &plan_path.to_string_lossy())]
            ),
            self.worker_context
        );
        self.log(
            "worker_plan_prompt",
            "Plan prompt sent to the worker",
            Some(&prompt),
        )
        .await;
        let out = self.worker_turn(&prompt, true, "during planning").await?;
        self.conversation.push(&prompt, &out);
        self.log("worker_plan_done", "Plan written", Some(&out))
            .await;

        let plan = self.plan_review().await?;
        // The Director starts execution with a fresh history; the worker keeps its session.
        self.messages.clear();
        self.execution_loop(plan, false).await
    }

    /// Reviews the plan until the Director approves it or the pass limit is reached; returns
    /// the plan text execution follows.
    async fn plan_review(&mut self) -> Result<String, Failure> {
        let max = self.settings.limits.max_plan_reviews;
        let mut last_director_text = String::new();
        for pass in 1..=max {
            self.control.check("during plan review").await?;
            let passages = self.turn_passages(pass == 1).await;
            let first = self.messages.is_empty();
            let user = self.plan_review_message(first, &passages).await?;
            let a = self.assess(Phase::PlanReview, user).await?;
            if !a.approved_plan_text.is_empty() {
                last_director_text = a.approved_plan_text.clone();
            }
            if a.plan_approved {
                let mut text = self.read_plan_file();
                if text.is_empty() {
                    let prompt = prompts::WORKER_CHECKLIST.trim().to_owned();
                    let out = self
                        .worker_turn(&prompt, true, "during plan review")
                        .await?;
                    self.conversation.push(&prompt, &out);
                    text = out.trim().to_owned();
                }
                if text.is_empty() {
                    text = a.approved_plan_text.clone();
                }
                if text.is_empty() {
                    text = truncate_chars(self.conversation.last_output(), 8000);
                }
                self.log(
                    "plan_approved",
                    &format!("Plan approved after {pass} review pass(es)"),
                    Some(&text),
                )
                .await;
                return Ok(text);
            }
            if pass == max {
                break;
            }
            let prompt = a.next_prompt.clone();
            self.log(
                &format!("worker_plan_review_{pass}_prompt"),
                &format!("Plan review {pass}: revision requested"),
                Some(&prompt),
            )
            .await;
            let out = self
                .worker_turn(&prompt, true, "during plan review")
                .await?;
            self.conversation.push(&prompt, &out);
            self.log(
                &format!("worker_plan_review_{pass}"),
                &format!("Plan revision {pass} completed"),
                Some(&out),
            )
            .await;
        }
        let mut text = self.read_plan_file();
        if text.is_empty() {
            text = last_director_text;
        }
        if text.is_empty() {
            text = truncate_chars(self.conversation.last_output(), 8000);
        }
        self.log(
            "plan_review_exhausted",
            &format!("Plan not approved after {max} review pass(es); executing the latest plan"),
            Some(&text),
        )
        .await;
        Ok(text)
    }

    async fn execution_loop(&mut self, plan: String, setup: bool) -> Result<String, Failure> {
        let max = self.settings.limits.max_turns;
        for turn in 0..max as usize {
            self.control.check(&format!("during turn {turn}")).await?;
            let passages = self.turn_passages(turn == 0).await;
            let first = self.messages.is_empty();
            let user = self.execution_message(first, setup, &plan, &passages);
            let a = self.assess(Phase::Execution, user).await?;
            // After plan approval nothing is implemented yet: the first turn always works.
            let must_work = turn == 0 && !setup;
            if a.complete && !must_work {
                let summary = if a.summary.is_empty() {
                    "Task completed".to_owned()
                } else {
                    a.summary.clone()
                };
                let indexed = self
                    .memory
                    .index_completion(&self.ticket.title, &self.ticket.description, &summary)
                    .await;
                if indexed {
                    self.log(
                        "memory_indexed",
                        "Completion indexed in project memory",
                        None,
                    )
                    .await;
                } else {
                    self.log(
                        "memory_index_failed",
                        "Could not index the completion in memory",
                        None,
                    )
                    .await;
                }
                self.log("task_complete", &summary, None).await;
                return Ok(summary);
            }
            let mut next = a.next_prompt.clone();
            if must_work && (a.complete || next.is_empty()) {
                next = prompts::WORKER_FIRST_EXECUTION.trim().to_owned();
            }
            let prompt = with_slowly_prefix(&next);
            let n = turn + 1;
            self.log(
                &format!("worker_turn_{n}_prompt"),
                &format!("Director prompt (turn {n})"),
                Some(&prompt),
            )
            .await;
            let out = self
                .worker_turn(&prompt, true, &format!("during turn {n}"))
                .await?;
            self.conversation.push(&prompt, &out);
            self.log(
                &format!("worker_turn_{n}"),
                &format!("Turn {n} completed"),
                Some(&out),
            )
            .await;
            self.commit_turn(n).await?;
        }
        Err(Failure::new(
            AgentOutcome::TurnLimit,
            format!("the ticket was not complete after {max} turns (AGENT_MAX_TURNS)"),
        ))
    }

    // ---- review flow ---------------------------------------------------------------------

    /// Runs the review flow; returns the work summary.
    pub async fn run_review(&mut self) -> Result<String, Failure> {
        let comment = self.review_comment.clone().unwrap_or_default();
        let prompt = format!(
            "{}\n\nReview comment:\n{}\n{}",
            prompts::WORKER_REVIEW.trim(),
            comment,
            self.worker_context
        );
        self.start_passages = self
            .retrieve(&[format!("PR review: {}", truncate_chars(&comment, 200))])
            .await;
        self.log(
            "worker_turn_0_prompt",
            "Review prompt sent to the worker",
            Some(&prompt),
        )
        .await;
        let out = self
            .worker_turn(&prompt, false, "during the first review turn")
            .await?;
        self.conversation.push(&prompt, &out);
        self.log("worker_turn_0", "Turn 0 completed", Some(&out))
            .await;
        let max = self.settings.limits.max_review_turns;
        for turn in 1..=max as usize {
            self.control
                .check(&format!("during review turn {turn}"))
                .await?;
            let passages = self.turn_passages(true).await;
            let first = self.messages.is_empty();
            let user = self.execution_message(first, false, "", &passages);
            let a = self.assess(Phase::Execution, user).await?;
            if a.complete {
                let summary = if a.summary.is_empty() {
                    "Addressed review feedback.".to_owned()
                } else {
                    a.summary.clone()
                };
                self.log("review_complete", &summary, None).await;
                return Ok(summary);
            }
            let prompt = with_slowly_prefix(&a.next_prompt);
            self.log(
                &format!("worker_turn_{turn}_prompt"),
                &format!("Director prompt (turn {turn})"),
                Some(&prompt),
            )
            .await;
            let out = self
                .worker_turn(&prompt, true, &format!("during review turn {turn}"))
                .await?;
            self.conversation.push(&prompt, &out);
            self.log(&format!("worker_turn_{turn}"), "Turn completed", Some(&out))
                .await;
        }
        Err(Failure::new(
            AgentOutcome::TurnLimit,
            format!("the review was not complete after {max} turns (AGENT_MAX_REVIEW_TURNS)"),
        ))
    }

    // ---- texts for finalize --------------------------------------------------------------

    /// A pull-request description paragraph for the summary (None on failure).
    pub async fn pr_description(&self, summary: &str) -> Option<String> {
        if summary.trim().is_empty() {
            return None;
        }
        let user = fill(
            prompts::PR_DESCRIPTION_USER,
            &[
                ("title", &self.ticket.title),
                ("description", &self.ticket.description),
                ("summary", summary),
            ],
        );
        let msgs = [
            ChatMessage::system(prompts::PR_DESCRIPTION_SYSTEM.trim()),
            ChatMessage::user(user),
        ];
        let opts = self.llm.aux_options(512, 0.3, Duration::from_secs(60));
        match self.llm.chat(&msgs, opts).await {
            Ok(t) if !t.trim().is_empty() => Some(t.trim().to_owned()),
            Ok(_) => None,
            Err(e) => {
                tracing::warn!(error = %e, "PR description generation failed");
                None
            }
        }
    }

    /// The reply to the reviewer (falls back to the summary).
    pub async fn review_reply(&self, summary: &str) -> String {
        let comment = self.review_comment.clone().unwrap_or_default();
        let fallback = if summary.trim().is_empty() {
            "Addressed review feedback.".to_owned()
        } else {
            summary.trim().to_owned()
        };
        let summary_text = if summary.trim().is_empty() {
            "(No summary)"
        } else {
            summary
        };
        let msgs = [ChatMessage::user(fill(
            prompts::REVIEW_REPLY,
            &[("comment", &comment), ("summary", summary_text)],
        ))];
        let opts = self.llm.aux_options(512, 0.2, Duration::from_secs(60));
        match self.llm.chat(&msgs, opts).await {
            Ok(t) if !t.trim().is_empty() => t.trim().to_owned(),
            Ok(_) => fallback,
            Err(e) => {
                tracing::warn!(error = %e, "review reply generation failed");
                fallback
            }
        }
    }
}
