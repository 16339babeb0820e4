//! End-to-end tests of the agent against a real api-server (SQLite), a scripted fake Director
//! LLM, a fake OpenCode server, a fake GitHub API and a local bare repository as the remote.
//! The main scenarios run the binary as a child process; the others run in-process.

mod support;

use std::time::Duration;

use serde_json::Value;
use support::*;
use terarchitect_worker_api::{AgentOutcome, JobKind};
use tokio_util::sync::CancellationToken;

const APPROVE: &str = r#"{"plan_approved": true, "approved_plan_text": "1. test 2. code"}"#;
const NEXT: &str =
    r#"{"complete": false, "next_prompt": "Add the greet() function and its unit test."}"#;
const DONE: &str =
    r#"{"complete": true, "summary": "Added greet() with unit tests; all tests pass."}"#;

fn assert_in_order(steps: &[String], expected: &[&str]) {
    let mut last = 0;
    for e in expected {
        let i = steps[last..]
            .iter()
            .position(|s| s == e)
            .unwrap_or_else(|| panic!("{e} missing (after position {last}) in {steps:?}"));
        last += i + 1;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ticket_flow_opens_a_pull_request() {
    let h = Harness::new(
        "Add greeting",
        &[
            // Plan review, pass 1: prose instead of JSON (re-asked), then a rejection.
            "The plan looks mostly fine to me.",
            r#"{"plan_approved": false, "next_prompt": "Add a test for an empty name."}"#,
            // Pass 2: approved, in a fenced block.
            "```json\n{\"plan_approved\": true, \"approved_plan_text\": \"1. test 2. code\"}\n```",
            // Execution turn 0: a premature "complete" is overridden (nothing implemented yet).
            r#"{"complete": true, "summary": "premature"}"#,
            // Transient server error, retried.
            "HTTP500",
            NEXT,
            DONE,
        ],
    )
    .await;
    let (code, stderr) = h.run_binary(&["ticket"]).await;
    assert_eq!(code, 0, "{stderr}");
    let term = h.termination();
    assert!(
        term.starts_with("Succeeded: pull request #100 opened"),
        "{term}"
    );
    assert_eq!(stderr.trim_end().lines().last().unwrap(), term.trim_end());

    // The branch is pushed with the worker's changes, without plan or trace files.
    let branch = h.branch();
    let files = h.remote_files(&branch);
    assert!(
        files.contains(&"src/greeting_1.txt".to_owned()),
        "{files:?}"
    );
    assert!(
        files.contains(&"src/greeting_3.txt".to_owned()),
        "{files:?}"
    );
    assert!(
        files
            .iter()
            .all(|f| !f.starts_with("plan/") && !f.starts_with(".terarchitect/")),
        "{files:?}"
    );
    let log = h.remote_log(&branch);
    assert!(log.contains(&"Add greeting feature".to_owned()), "{log:?}");
    assert_eq!(log.last().unwrap(), "Initial commit");

    // The pull request.
    let pulls = h.gh.pulls();
    assert_eq!(pulls.len(), 1);
    assert_eq!(pulls[0]["head"]["ref"], branch.as_str());
    assert_eq!(pulls[0]["base"]["ref"], "main");
    assert_eq!(pulls[0]["title"], "Add greeting");
    let body = pulls[0]["body"].as_str().unwrap();
    assert!(
        body.contains("## What was accomplished\n\nThis pull request adds a greeting"),
        "{body}"
    );
    let auth = h.gh.state.lock().unwrap().auth.clone();
    assert!(
        auth.iter().all(|a| a == &format!("Bearer {GH_TOKEN}")),
        "{auth:?}"
    );

    // The api-server saw the completion and every step.
    let t = h.ticket().await;
    assert_eq!(t["column_id"], "in_review");
    assert_eq!(t["pr_number"], 100);
    assert_eq!(t["pr_url"], "https://github.example/acme/shop/pull/100");
    let steps = h.steps().await;
    assert_in_order(
        &steps,
        &[
            "session_started",
            "context_loaded",
            "branch_created",
            "worker_research_prompt",
            "worker_research_done",
            "worker_plan_prompt",
            "worker_plan_done",
            "director_invalid_answer",
            "worker_plan_review_1_prompt",
            "worker_plan_review_1",
            "plan_approved",
            "worker_turn_1_prompt",
            "worker_turn_1",
            "worker_turn_2_prompt",
            "worker_turn_2",
            "memory_indexed",
            "task_complete",
            "finalize",
            "branch_pushed",
            "pr_opened",
        ],
    );
    assert!(!steps.contains(&"worker_turn_3_prompt".to_owned()));
    let logs = h.logs().await;
    assert!(
        logs.iter().all(|l| l["success"] == true),
        "a successful run logs no failed entry: {logs:?}"
    );

    // The Director's contract and the worker calls.
    assert!(h.llm.count(LlmKind::CommitMessage) >= 2);
    let first_turn = &h.oc.prompts()[3];
    assert!(
        first_turn.contains("Start implementing the approved plan"),
        "{first_turn}"
    );
    let sessions = h.oc.state.lock().unwrap().sessions.clone();
    let trace = std::fs::read_dir(h.dir.path().join("trace"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap();
    let trace_name = trace.file_name().into_string().unwrap();
    let session_id = trace_name
        .strip_prefix("director_")
        .unwrap()
        .strip_suffix(".log")
        .unwrap();
    assert_eq!(sessions[0]["title"], format!("terarchitect-{session_id}"));
    let msgs = h.oc.state.lock().unwrap().messages.clone();
    assert_eq!(msgs[0].2["model"]["providerID"], "terarchitect-proxy");
    assert_eq!(msgs[0].2["model"]["modelID"], "coder");
    assert_eq!(msgs[0].1.as_deref(), Some(h.workspace().to_str().unwrap()));
    let assessments: Vec<Value> = h
        .llm
        .requests()
        .into_iter()
        .filter(|(k, _)| *k == LlmKind::Assessment)
        .map(|(_, b)| b)
        .collect();
    assert_eq!(assessments[0]["model"], "director-model");
    let first_user = assessments[0]["messages"][1]["content"].as_str().unwrap();
    assert!(
        first_user.contains("Memories invoked:\nProject: Shop. A small shop"),
        "{first_user}"
    );
    let last = assessments.last().unwrap()["messages"]
        .as_array()
        .unwrap()
        .clone();
    let last_user = last.last().unwrap()["content"].as_str().unwrap();
    assert!(last_user.ends_with("Assess: Is the ticket complete? Respond in JSON only."));
    assert!(
        last_user.contains("Approved plan"),
        "the plan is re-sent every turn"
    );
    assert!(
        std::fs::read_dir(h.dir.path().join("trace"))
            .unwrap()
            .count()
            == 1,
        "one trace file, outside the repository"
    );
    h.assert_no_secret_leaked().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ticket_rerun_continues_the_branch_and_reuses_the_open_pull_request() {
    let h = Harness::new("Add greeting", &[APPROVE, NEXT, DONE]).await;
    h.push_branch(&h.branch(), "earlier.txt");
    h.gh.add_pull(7, &h.branch());
    let result = h.run_ticket().await;
    assert_eq!(result.outcome, AgentOutcome::Succeeded, "{result:?}");
    assert!(result.message.contains("#7 reused"), "{result:?}");
    assert_eq!(h.gh.state.lock().unwrap().created, 0);
    let files = h.remote_files(&h.branch());
    assert!(
        files.contains(&"earlier.txt".to_owned())
            && files.contains(&"src/greeting_1.txt".to_owned()),
        "{files:?}"
    );
    let t = h.ticket().await;
    assert_eq!(
        (t["column_id"].as_str(), t["pr_number"].as_i64()),
        (Some("in_review"), Some(7))
    );
    assert!(h.steps().await.contains(&"pr_reused".to_owned()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn setup_ticket_may_finish_on_its_first_assessment() {
    let h = Harness::new("Project setup", &[DONE]).await;
    let result = h.run_ticket().await;
    assert_eq!(result.outcome, AgentOutcome::Succeeded, "{result:?}");
    let steps = h.steps().await;
    assert_in_order(
        &steps,
        &[
            "project_setup_flow",
            "worker_setup_prompt",
            "worker_setup_done",
            "task_complete",
            "pr_opened",
        ],
    );
    assert!(
        !steps.contains(&"worker_turn_1_prompt".to_owned()),
        "{steps:?}"
    );
    let setup_msg = h.llm.requests()[1].1["messages"][1]["content"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(setup_msg.contains("project setup ticket"), "{setup_msg}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn review_flow_works_on_the_pull_request_branch_and_replies() {
    let mut h = Harness::new(
        "Add greeting",
        &[
            r#"{"complete": false, "next_prompt": "Rename greet to welcome everywhere."}"#,
            r#"{"complete": true, "summary": "Renamed greet to welcome."}"#,
        ],
    )
    .await;
    // The PR's head branch is not ticket-<id>: the agent must use the PR's own branch.
    h.push_branch("feature/greeting", "greet.txt");
    h.gh.add_pull(12, "feature/greeting");
    h.set_env("PR_NUMBER", "12");
    h.set_env("COMMENT_BODY", "Please rename greet to welcome.");
    h.set_env("GITHUB_COMMENT_ID", "555");
    let (code, stderr) = h.run_binary(&["review"]).await;
    assert_eq!(code, 0, "{stderr}");
    assert!(
        h.termination()
            .starts_with("Succeeded: reply posted on pull request #12")
    );

    let files = h.remote_files("feature/greeting");
    assert!(
        files.contains(&"greet.txt".to_owned()) && files.contains(&"src/greeting_2.txt".to_owned()),
        "{files:?}"
    );
    assert_eq!(
        h.remote_log("feature/greeting")[1],
        "Earlier work",
        "a fast-forward of the PR branch"
    );
    assert!(
        h.remote_files(&h.branch()).is_empty(),
        "no ticket branch was created"
    );
    let comments = h.gh.comments();
    assert_eq!(comments.len(), 1);
    assert_eq!(comments[0].0, 12);
    assert_eq!(
        comments[0].1,
        "Renamed greet to welcome and updated the tests.\n\n<!-- terarchitect-bot -->"
    );
    assert_eq!(h.gh.state.lock().unwrap().created, 0);
    let steps = h.steps().await;
    assert_in_order(
        &steps,
        &[
            "review_started",
            "context_loaded",
            "branch_checked_out",
            "worker_turn_0_prompt",
            "worker_turn_0",
            "worker_turn_1_prompt",
            "worker_turn_1",
            "review_complete",
            "finalize",
            "branch_pushed",
            "pr_comment_posted",
        ],
    );
    let first_prompt = &h.oc.prompts()[0];
    assert!(first_prompt.contains("Review comment:\nPlease rename greet to welcome."));
    let director = h.llm.requests()[0].1.to_string();
    assert!(director.contains("pr_review_comment"));
    assert_eq!(h.ticket().await["column_id"], "in_review");
    h.assert_no_secret_leaked().await;
}

/// Checks the common shape of a failed run: exit code, termination line, final log entry, no
/// pull request and no completion.
/// The final entry of a failed run says `success: false`; every entry before it `true`.
async fn assert_only_the_last_entry_failed(h: &Harness) {
    let logs = h.logs().await;
    let flags: Vec<(&str, bool)> = logs
        .iter()
        .map(|l| {
            let ok = l["success"].as_bool().expect("every entry has success");
            (l["step"].as_str().unwrap_or_default(), ok)
        })
        .collect();
    let (last, before) = flags.split_last().expect("a final entry");
    assert!(!last.1, "the final entry of a failure: {flags:?}");
    assert!(before.iter().all(|(_, ok)| *ok), "{flags:?}");
}

async fn assert_failed(h: &Harness, code: i32, outcome: AgentOutcome, step: &str) {
    assert_eq!(code, outcome.exit_code(), "{}", h.termination());
    let term = h.termination();
    assert!(
        term.starts_with(&format!("{}: ", outcome.reason())),
        "{term}"
    );
    let steps = h.steps().await;
    assert_eq!(steps.last().map(String::as_str), Some(step), "{steps:?}");
    assert_only_the_last_entry_failed(h).await;
    assert!(h.gh.pulls().is_empty(), "no pull request after a failure");
    assert_ne!(h.ticket().await["column_id"], "in_review");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn director_llm_down_fails_with_director_failed() {
    let mut h = Harness::new("Add greeting", &[]).await;
    h.set_env(
        "AGENT_LLM_URL",
        &format!("http://127.0.0.1:{}", closed_port()),
    );
    h.set_env("AGENT_LLM_RETRIES", "2");
    let (code, _) = h.run_binary(&["ticket"]).await;
    assert_failed(&h, code, AgentOutcome::DirectorFailed, "director_failed").await;
    assert!(
        h.termination().contains("Director LLM unreachable"),
        "{}",
        h.termination()
    );
    assert!(h.remote_files(&h.branch()).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_director_answers_exhaust_the_retries() {
    let h = Harness::new("Add greeting", &[]).await;
    h.llm.set_fallback(r#"{"plan_approved": "yes please"}"#);
    let (code, _) = h.run_binary(&["ticket"]).await;
    assert_failed(&h, code, AgentOutcome::DirectorFailed, "director_failed").await;
    assert!(
        h.termination().contains("broke the JSON contract 3 times"),
        "{}",
        h.termination()
    );
    let steps = h.steps().await;
    assert_eq!(
        steps
            .iter()
            .filter(|s| *s == "director_invalid_answer")
            .count(),
        2
    );
    assert_eq!(h.llm.count(LlmKind::Assessment), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_server_down_fails_with_api_unavailable() {
    let mut h = Harness::new("Add greeting", &[]).await;
    h.set_env(
        "TERARCHITECT_API_URL",
        &format!("http://127.0.0.1:{}", closed_port()),
    );
    let (code, _) = h.run_binary(&["ticket"]).await;
    assert_eq!(code, AgentOutcome::ApiUnavailable.exit_code());
    assert!(
        h.termination()
            .starts_with("ApiUnavailable: could not load the worker context"),
        "{}",
        h.termination()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_pull_request_fails_with_pull_request_failed() {
    let h = Harness::new("Add greeting", &[APPROVE, NEXT, DONE]).await;
    h.gh.state.lock().unwrap().refuse_create = true;
    let result = h.run_ticket().await;
    assert_eq!(
        result.outcome,
        AgentOutcome::PullRequestFailed,
        "{result:?}"
    );
    assert!(
        result.message.contains("Resource not accessible"),
        "{result:?}"
    );
    assert_eq!(h.steps().await.last().unwrap(), "pr_failed");
    assert_ne!(h.ticket().await["column_id"], "in_review");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn opencode_down_fails_with_worker_unavailable() {
    let mut h = Harness::new("Add greeting", &[]).await;
    h.set_env(
        "OPENCODE_SERVER_URL",
        &format!("http://127.0.0.1:{}", closed_port()),
    );
    let (code, _) = h.run_binary(&["ticket"]).await;
    assert_failed(
        &h,
        code,
        AgentOutcome::WorkerUnavailable,
        "worker_unavailable",
    )
    .await;
    assert!(
        h.termination().contains("OpenCode server unreachable"),
        "{}",
        h.termination()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rejected_push_fails_with_push_failed() {
    let h = Harness::new("Add greeting", &[APPROVE, NEXT, DONE]).await;
    let hook = h.remote.join("hooks/pre-receive");
    std::fs::write(
        &hook,
        "#!/bin/sh\necho 'protected: pushes are not allowed' >&2\nexit 1\n",
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&hook, std::fs::Permissions::from_mode(0o755)).unwrap();
    let (code, _) = h.run_binary(&["ticket"]).await;
    assert_failed(&h, code, AgentOutcome::PushFailed, "push_failed").await;
    assert!(
        h.termination().contains("pushes are not allowed"),
        "{}",
        h.termination()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancellation_during_a_slow_worker_call_aborts_without_finalizing() {
    let h = Harness::new("Add greeting", &[APPROVE, NEXT, DONE]).await;
    // Research and plan answer; the first execution turn hangs.
    h.oc.set_slow_from(2);
    let stop = CancellationToken::new();
    let run = h.run_in_process(JobKind::Ticket, stop);
    let cancel = async {
        h.oc.slow_started.notified().await;
        h.cancel().await;
    };
    let (result, ()) =
        tokio::time::timeout(Duration::from_secs(30), async { tokio::join!(run, cancel) })
            .await
            .expect("the run stopped soon after the cancellation");
    assert_eq!(result.outcome, AgentOutcome::Cancelled, "{result:?}");
    assert_eq!(
        h.oc.aborted(),
        ["ses_1"],
        "the OpenCode session was aborted"
    );
    let steps = h.steps().await;
    assert_eq!(steps.last().unwrap(), "cancelled");
    assert!(!steps.contains(&"finalize".to_owned()), "{steps:?}");
    assert!(h.gh.pulls().is_empty());
    assert!(h.remote_files(&h.branch()).is_empty(), "nothing was pushed");
    assert_ne!(h.ticket().await["column_id"], "in_review");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancellation_requested_before_the_run_exits_cancelled() {
    let h = Harness::new("Add greeting", &[]).await;
    h.cancel().await;
    let (code, _) = h.run_binary(&["ticket"]).await;
    assert_failed(&h, code, AgentOutcome::Cancelled, "cancelled").await;
    assert!(h.oc.prompts().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_during_a_worker_call_cancels_the_run() {
    let h = Harness::new("Add greeting", &[]).await;
    h.oc.set_slow_from(0);
    let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_terarchitect-agent"))
        .arg("ticket")
        .env_clear()
        .envs(h.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    tokio::time::timeout(Duration::from_secs(30), h.oc.slow_started.notified())
        .await
        .expect("the worker call started");
    // SAFETY: signalling our own child.
    unsafe {
        libc::kill(child.id().unwrap() as i32, libc::SIGTERM);
    }
    let out = tokio::time::timeout(Duration::from_secs(30), child.wait_with_output())
        .await
        .expect("the agent stopped")
        .unwrap();
    assert_failed(
        &h,
        out.status.code().unwrap(),
        AgentOutcome::Cancelled,
        "cancelled",
    )
    .await;
    assert!(h.termination().contains("termination signal"));
    assert_eq!(h.oc.aborted(), ["ses_1"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_time_limit_stops_a_slow_worker() {
    let mut h = Harness::new("Add greeting", &[APPROVE]).await;
    h.oc.set_slow_from(2);
    h.set_env("AGENT_TIME_LIMIT_SEC", "4");
    let (code, _) = h.run_binary(&["ticket"]).await;
    assert_failed(&h, code, AgentOutcome::TimeLimit, "time_limit").await;
    assert!(h.termination().contains("AGENT_TIME_LIMIT_SEC"));
    assert!(h.steps().await.contains(&"work_preserved".to_owned()));
    assert_eq!(h.oc.aborted(), ["ses_1"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn worker_call_timeout_is_a_time_limit() {
    let mut h = Harness::new("Add greeting", &[]).await;
    h.oc.set_slow_from(0);
    h.set_env("WORKER_TIMEOUT_SEC", "1");
    let result = h.run_ticket().await;
    assert_eq!(result.outcome, AgentOutcome::TimeLimit, "{result:?}");
    assert!(result.message.contains("WORKER_TIMEOUT_SEC"), "{result:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn turn_limit_preserves_the_work_without_a_pull_request() {
    let mut h = Harness::new("Add greeting", &[APPROVE]).await;
    h.llm.set_fallback(NEXT);
    h.set_env("AGENT_MAX_TURNS", "2");
    let (code, _) = h.run_binary(&["ticket"]).await;
    assert_failed(&h, code, AgentOutcome::TurnLimit, "turn_limit").await;
    let files = h.remote_files(&h.branch());
    assert!(
        files.contains(&"src/greeting_2.txt".to_owned()),
        "work preserved: {files:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_runs_summarize_the_worker_session_and_compact_the_director_history() {
    let mut h = Harness::new("Add greeting", &[APPROVE]).await;
    h.llm.set_fallback(NEXT);
    // 2 planning turns + 29 execution turns: the 31st message follows a summarize.
    h.set_env("AGENT_MAX_TURNS", "29");
    h.set_env("AGENT_CONTEXT_TOKENS", "3000");
    h.set_env("OPENCODE_SERVER_PASSWORD", "oc-password-123");
    let result = h.run_ticket().await;
    assert_eq!(result.outcome, AgentOutcome::TurnLimit, "{result:?}");
    assert_eq!(h.oc.state.lock().unwrap().summarized, 1);
    let auth = h.oc.state.lock().unwrap().auth.clone();
    // base64("opencode:oc-password-123")
    assert!(
        auth.iter()
            .all(|a| a == "Basic b3BlbmNvZGU6b2MtcGFzc3dvcmQtMTIz"),
        "{auth:?}"
    );
    assert!(h.llm.count(LlmKind::Summary) >= 1);
    let compacted = h.llm.requests().iter().any(|(k, b)| {
        *k == LlmKind::Assessment
            && b.to_string()
                .contains("Previous conversation (summarized):")
    });
    assert!(compacted, "the Director history was compacted");
    assert!(h.steps().await.contains(&"director_compacted".to_owned()));
    h.assert_no_secret_leaked().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_input_and_settings_are_misconfigured() {
    let mut h = Harness::new("Add greeting", &[]).await;
    h.unset_env("TICKET_ID");
    let (code, stderr) = h.run_binary(&["ticket"]).await;
    assert_eq!(code, 2, "{stderr}");
    assert_eq!(
        h.termination().trim(),
        "Misconfigured: TICKET_ID is required"
    );

    let mut h = Harness::new("Add greeting", &[]).await;
    h.set_env("WORKER_MODE", "claude-code");
    h.set_env("AGENT_PROVIDER", "vllm");
    h.set_env("AGENT_LLM_URL", "");
    let result = h.run_ticket().await;
    assert_eq!(result.outcome, AgentOutcome::Misconfigured, "{result:?}");
    assert!(
        result.message.contains("AGENT_LLM_URL is required"),
        "{result:?}"
    );
    assert_eq!(h.steps().await.last().unwrap(), "misconfigured");
    assert_only_the_last_entry_failed(&h).await;

    let (code, _) = h.run_binary(&["bogus"]).await;
    assert_eq!(code, 2);
    let (code, _) = h.run_binary(&["--help"]).await;
    assert_eq!(code, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claude_code_worker_mode_runs_the_cli() {
    let mut h = Harness::new("Project setup", &[DONE]).await;
    let bin = h.dir.path().join("claude");
    let leftover = h.dir.path().join("claude-leftover.txt");
    // A fake CLI: creates a file in its working directory and answers in JSON.
    std::fs::write(
        &bin,
        format!("#!/bin/sh\n[ \"$1\" = --version ] && exit 0\nmkdir -p src && echo hi > src/setup.txt\nsleep 300 >/dev/null 2>&1 &\necho $! > '{}'\necho '{{\"session_id\":\"c1\",\"result\":\"created src/setup.txt\"}}'\n", leftover.display()),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).unwrap();
    h.set_env("WORKER_MODE", "claude-code");
    h.set_env("CLAUDE_BIN", bin.to_str().unwrap());
    let result = h.run_ticket().await;
    assert_eq!(result.outcome, AgentOutcome::Succeeded, "{result:?}");
    assert!(
        h.remote_files(&h.branch())
            .contains(&"src/setup.txt".to_owned())
    );
    // What its tools left running was killed once the worker was done.
    let pid = std::fs::read_to_string(&leftover).unwrap();
    let pid = pid.trim();
    assert!(
        !std::path::Path::new(&format!("/proc/{pid}")).exists()
            || std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .is_ok_and(|s| s.contains(") Z ")),
        "the leftover process {pid} still runs"
    );
}

/// Not a test: the body of the fake `opencode` executable used by the entrypoint test (the
/// script runs this test binary with `FAKE_OPENCODE_PORT` set).
#[tokio::test]
#[ignore = "helper process for entrypoint_starts_opencode_and_runs_the_job"]
async fn fake_opencode_process() {
    let Ok(port) = std::env::var("FAKE_OPENCODE_PORT") else {
        return;
    };
    if let Ok(record) = std::env::var("FAKE_OPENCODE_RECORD") {
        std::fs::write(
            record,
            std::env::var("OPENCODE_CONFIG_CONTENT").unwrap_or_default(),
        )
        .unwrap();
    }
    let started = std::time::SystemTime::now();
    let env_var = |k: &str| std::env::var(k).ok();
    if let Some(file) = env_var("FAKE_OPENCODE_PID") {
        std::fs::write(file, std::process::id().to_string()).unwrap();
    }
    if let Some(dump) = env_var("FAKE_OPENCODE_ENV_DUMP") {
        let env: String = std::env::vars()
            .map(|(k, v)| format!("{k}={v}\n"))
            .collect();
        std::fs::write(dump, env).unwrap();
    }
    let blackhole = env_var("FAKE_OPENCODE_BLACKHOLE_MS")
        .and_then(|v| v.parse().ok())
        .map(Duration::from_millis);
    let oc = FakeOpenCode::start_with(
        port.parse().unwrap(),
        StartOptions {
            blackhole,
            ..Default::default()
        },
    )
    .await;
    eprintln!("fake opencode: listening on {}", oc.url);
    if let Some(file) = env_var("FAKE_OPENCODE_LEFTOVER") {
        // A process a tool left running in the background (same process group).
        let out = std::process::Command::new("sh")
            .args(["-c", "sleep 300 >/dev/null 2>&1 & echo $!"])
            .output()
            .unwrap();
        std::fs::write(file, String::from_utf8_lossy(&out.stdout).trim()).unwrap();
    }
    if let Some(file) = env_var("FAKE_OPENCODE_DETACHED") {
        // A process a tool detached (own session; its parent shell exits, so it is orphaned).
        let out = std::process::Command::new("sh")
            .args(["-c", "setsid sleep 300 >/dev/null 2>&1 & echo $!"])
            .output()
            .unwrap();
        std::fs::write(file, String::from_utf8_lossy(&out.stdout).trim()).unwrap();
    }
    if env_var("FAKE_OPENCODE_BEHAVIOUR").as_deref() == Some("unknown-model") {
        oc.push(OcBehaviour::UnknownError);
        eprintln!(
            "timestamp=x level=ERROR message=failed ref=err_fake0001 error=\"ProviderModelNotFoundError: Model not found: terarchitect-proxy/coder.\" cause=..."
        );
    }
    if let Some(times) = env_var("FAKE_OPENCODE_TIMES") {
        // Process start and first session, in ms since the epoch.
        let ms =
            |t: std::time::SystemTime| t.duration_since(std::time::UNIX_EPOCH).unwrap().as_millis();
        while oc.state.lock().unwrap().sessions.is_empty() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let first = std::time::SystemTime::now();
        std::fs::write(times, format!("{} {}", ms(started), ms(first))).unwrap();
    }
    tokio::time::sleep(Duration::from_secs(120)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn entrypoint_starts_opencode_and_runs_the_job() {
    let mut h = Harness::new("Add greeting", &[APPROVE, NEXT, DONE]).await;
    let record = h.dir.path().join("opencode-config.json");
    let port = entrypoint_starts_fake_opencode(
        &mut h,
        &[("FAKE_OPENCODE_RECORD", record.to_str().unwrap())],
    );
    h.set_env("WORKER_LLM_URL", "http://llm.internal:8000/v1");
    let (code, stderr) = h.run_binary(&["entrypoint"]).await;
    assert_eq!(code, 0, "{stderr}");
    let config: Value = serde_json::from_str(&std::fs::read_to_string(&record).unwrap()).unwrap();
    assert_eq!(config["model"], "terarchitect-proxy/coder");
    assert!(
        config["provider"]["terarchitect-proxy"]["options"]["baseURL"]
            .as_str()
            .unwrap()
            .starts_with("http://127.0.0.1:")
    );
    // The provider key stays in the agent (its key proxy); OpenCode gets a dummy.
    assert_eq!(
        config["provider"]["terarchitect-proxy"]["options"]["apiKey"],
        "dummy"
    );
    assert!(!config.to_string().contains(WORKER_KEY));
    assert_eq!(h.gh.pulls().len(), 1);
    // The OpenCode child was stopped with the run.
    assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_err());
}

// ---- the real OpenCode's awkward behaviour, reproduced by the fake ----------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_error_inside_a_200_answer_ends_the_run_with_the_providers_message() {
    let h = Harness::new("Add greeting", &[APPROVE, NEXT, DONE]).await;
    // The provider's message echoes the key: it must arrive redacted.
    h.oc.push(OcBehaviour::ErrorAnswer(api_error(
        &format!("Incorrect API key provided: {WORKER_KEY}"),
        401,
        false,
    )));
    let (code, _) = h.run_binary(&["ticket"]).await;
    assert_failed(
        &h,
        code,
        AgentOutcome::WorkerUnavailable,
        "worker_unavailable",
    )
    .await;
    let term = h.termination();
    assert!(
        term.contains("Incorrect API key provided: [REDACTED]")
            && term.contains("APIError")
            && term.contains("401"),
        "{term}"
    );
    let steps = h.steps().await;
    for never in [
        "worker_research_done",
        "worker_plan_done",
        "memory_indexed",
        "task_complete",
    ] {
        assert!(
            !steps.contains(&never.to_owned()),
            "{never} logged: {steps:?}"
        );
    }
    assert_eq!(h.oc.prompts().len(), 1, "not retried: not retryable");
    assert!(h.llm.requests().is_empty(), "the Director never judged it");
    h.assert_no_secret_leaked().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retryable_error_answer_is_retried_then_gives_up() {
    let h = Harness::new("Add greeting", &[APPROVE, NEXT, DONE]).await;
    h.oc.push(OcBehaviour::ErrorAnswer(api_error("overloaded", 429, true)));
    let result = h.run_ticket().await;
    assert_eq!(result.outcome, AgentOutcome::Succeeded, "{result:?}");
    let prompts = h.oc.prompts();
    assert_eq!(prompts[0], prompts[1], "the research prompt was sent again");

    let h = Harness::new("Add greeting", &[APPROVE, NEXT, DONE]).await;
    for _ in 0..3 {
        h.oc.push(OcBehaviour::ErrorAnswer(api_error("overloaded", 503, true)));
    }
    let result = h.run_ticket().await;
    assert_eq!(
        result.outcome,
        AgentOutcome::WorkerUnavailable,
        "{result:?}"
    );
    assert!(
        result.message.contains("after 3 attempts") && result.message.contains("overloaded"),
        "{result:?}"
    );
    assert_eq!(h.oc.prompts().len(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_question_tool_is_turned_off_so_it_never_blocks_a_turn() {
    let mut h = Harness::new("Add greeting", &[APPROVE, NEXT, DONE]).await;
    h.oc.push(OcBehaviour::Question);
    h.set_env("WORKER_TIMEOUT_SEC", "5");
    let result = h.run_ticket().await;
    assert_eq!(result.outcome, AgentOutcome::Succeeded, "{result:?}");
    assert_eq!(h.oc.question_offered(), 0);
    let state = h.oc.state.lock().unwrap();
    assert!(
        state
            .messages
            .iter()
            .all(|(_, _, b)| b["tools"]["question"] == false)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pending_permission_request_is_rejected_so_the_turn_goes_on() {
    let mut h = Harness::new("Add greeting", &[APPROVE, NEXT, DONE]).await;
    h.oc.push(OcBehaviour::Permission("/tmp/*".into()));
    h.set_env("WORKER_TIMEOUT_SEC", "5");
    let result = h.run_ticket().await;
    assert_eq!(result.outcome, AgentOutcome::Succeeded, "{result:?}");
    let replies = h.oc.replies();
    assert_eq!(replies.len(), 1, "{replies:?}");
    assert_eq!(replies[0].1["reply"], "reject");
    assert!(
        replies[0].1["message"]
            .as_str()
            .unwrap()
            .contains("inside the repository")
    );
    let logs = h.logs().await;
    let entry = logs
        .iter()
        .find(|l| l["step"] == "worker_request_rejected")
        .expect("the rejection is logged");
    assert!(
        entry["raw_output"]
            .as_str()
            .unwrap()
            .contains("permission external_directory /tmp/*"),
        "{entry}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn opencode_errors_say_what_happened() {
    // An unknown provider/model: HTTP 500 UnknownError with a reference only.
    let h = Harness::new("Add greeting", &[]).await;
    h.oc.push(OcBehaviour::UnknownError);
    let result = h.run_ticket().await;
    assert_eq!(
        result.outcome,
        AgentOutcome::WorkerUnavailable,
        "{result:?}"
    );
    for part in [
        "UnknownError",
        "\"terarchitect-proxy\"",
        "\"coder\"",
        "WORKER_MODEL",
    ] {
        assert!(result.message.contains(part), "{part}: {result:?}");
    }
    assert!(!result.message.contains("Is opencode serve running"));

    // A wrong server password: 401, named as such.
    let mut h = Harness::new("Add greeting", &[]).await;
    h.oc = FakeOpenCode::start_with(
        0,
        StartOptions {
            password: Some("right-password".into()),
            ..Default::default()
        },
    )
    .await;
    h.set_env("OPENCODE_SERVER_URL", &h.oc.url.clone());
    h.set_env("OPENCODE_SERVER_PASSWORD", "wrong-password");
    let result = h.run_ticket().await;
    assert_eq!(
        result.outcome,
        AgentOutcome::WorkerUnavailable,
        "{result:?}"
    );
    assert!(
        result.message.contains("HTTP 401") && result.message.contains("OPENCODE_SERVER_PASSWORD"),
        "{result:?}"
    );
    assert!(!result.message.contains("wrong-password"));
}

/// An agent that is killed outright (SIGKILL, OOM) takes `opencode serve` with it: no orphan
/// keeps running with the workspace.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_agent_leaves_no_opencode_behind() {
    let mut h = Harness::new("Add greeting", &[APPROVE, NEXT, DONE]).await;
    let pid_file = h.dir.path().join("opencode-pid.txt");
    entrypoint_starts_fake_opencode(&mut h, &[("FAKE_OPENCODE_PID", pid_file.to_str().unwrap())]);
    let mut agent = tokio::process::Command::new(env!("CARGO_BIN_EXE_terarchitect-agent"))
        .arg("entrypoint")
        .env_clear()
        .envs(h.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut opencode = None;
    for _ in 0..3000 {
        opencode = std::fs::read_to_string(&pid_file)
            .ok()
            .and_then(|s| s.trim().parse::<i32>().ok());
        if opencode.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let opencode = opencode.expect("the agent started opencode");
    let alive = |pid: i32| {
        std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
            s.rsplit_once(')')
                .is_some_and(|(_, r)| !r.trim_start().starts_with('Z'))
        })
    };
    assert!(alive(opencode));
    agent.kill().await.unwrap();
    let mut gone = false;
    for _ in 0..300 {
        if !alive(opencode) {
            gone = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    if !gone {
        // SAFETY: the fake OpenCode this test started (through the agent).
        unsafe {
            libc::kill(opencode, libc::SIGKILL);
        }
    }
    assert!(gone, "opencode ({opencode}) outlived the killed agent");
}

/// Writes the `opencode` script the entrypoint tests start: it runs this test binary's
/// [`fake_opencode_process`] on the port it is given with the `FAKE_OPENCODE_*` settings
/// `vars` (written into the script: the worker's environment is an allowlist), keeping its
/// stderr (OpenCode's log).
fn fake_opencode_script(h: &Harness, vars: &[(&str, &str)]) -> std::path::PathBuf {
    let script = h.dir.path().join("opencode-fake");
    let vars: String = vars.iter().map(|(k, v)| format!("{k}='{v}' ")).collect();
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\n# called as: opencode serve --port P --hostname H --print-logs\n{vars}FAKE_OPENCODE_PORT=\"$3\" exec '{}' --exact fake_opencode_process --ignored --nocapture\n",
            std::env::current_exe().unwrap().display()
        ),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    script
}

/// Sets up a ticket job whose entrypoint starts [`fake_opencode_script`] (with `vars`) on a
/// free port instead of a running OpenCode server; returns that port.
fn entrypoint_starts_fake_opencode(h: &mut Harness, vars: &[(&str, &str)]) -> u16 {
    let script = fake_opencode_script(h, vars);
    let port = closed_port();
    h.unset_env("OPENCODE_SERVER_URL");
    h.set_env("OPENCODE_BIN", script.to_str().unwrap());
    h.set_env("OPENCODE_SERVER_PORT", &port.to_string());
    h.set_env("JOB_KIND", "ticket");
    port
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn entrypoint_start_up_survives_the_unanswered_window_and_hides_the_secrets() {
    let mut h = Harness::new("Add greeting", &[APPROVE, NEXT, DONE]).await;
    let record = h.dir.path().join("opencode-config.json");
    let env_dump = h.dir.path().join("opencode-env.txt");
    let times = h.dir.path().join("opencode-times.txt");
    let leftover = h.dir.path().join("opencode-leftover.txt");
    let detached = h.dir.path().join("opencode-detached.txt");
    entrypoint_starts_fake_opencode(
        &mut h,
        &[
            ("FAKE_OPENCODE_DETACHED", detached.to_str().unwrap()),
            ("FAKE_OPENCODE_RECORD", record.to_str().unwrap()),
            ("FAKE_OPENCODE_ENV_DUMP", env_dump.to_str().unwrap()),
            ("FAKE_OPENCODE_TIMES", times.to_str().unwrap()),
            ("FAKE_OPENCODE_LEFTOVER", leftover.to_str().unwrap()),
            // The real server never answers requests of its first ~0.3 s; the fake: its first
            // second.
            ("FAKE_OPENCODE_BLACKHOLE_MS", "1000"),
        ],
    );
    h.set_env("AGENT_API_KEY", AGENT_KEY);
    h.set_env("WORKER_API_KEY", WORKER_KEY);
    let tmp = h.dir.path().join("tmp");
    std::fs::create_dir_all(&tmp).unwrap();
    h.set_env("TMPDIR", tmp.to_str().unwrap());
    let (code, stderr) = h.run_binary(&["entrypoint"]).await;
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(h.gh.pulls().len(), 1);

    // Nothing secret was written under $HOME or $TMPDIR (git credentials, OpenCode's config
    // and log, traces, the work tree).
    let mut files = vec![h.dir.path().to_owned()];
    let mut scanned = 0;
    while let Some(p) = files.pop() {
        if p.is_dir() {
            files.extend(std::fs::read_dir(&p).unwrap().flatten().map(|e| e.path()));
        } else if let Ok(bytes) = std::fs::read(&p) {
            scanned += 1;
            let text = String::from_utf8_lossy(&bytes);
            for s in SECRETS {
                assert!(!text.contains(s), "{s} written to {}", p.display());
            }
        }
    }
    assert!(scanned > 10, "{scanned} files scanned");
    // OpenCode's log (in $TMPDIR) is gone with the run.
    let left: Vec<_> = std::fs::read_dir(&tmp)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("terarchitect-opencode"))
        .collect();
    assert!(left.is_empty(), "{left:?}");

    // What the worker left running is gone (its process group was killed before the push),
    // and so is what it detached with setsid (adopted by the agent, swept before the push).
    for file in [&leftover, &detached] {
        let pid = std::fs::read_to_string(file).unwrap();
        let gone = !std::path::Path::new(&format!("/proc/{pid}")).exists()
            || std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .is_ok_and(|s| s.contains(") Z "));
        if !gone && let Ok(pid) = pid.trim().parse::<i32>() {
            // SAFETY: the test's own leftover (started by the fake OpenCode it spawned).
            unsafe {
                libc::kill(pid, libc::SIGKILL);
            }
        }
        assert!(
            gone,
            "the leftover process {pid} ({}) still runs",
            file.display()
        );
    }

    // Start-up: from the process start to the first session, not 10 s per unanswered probe.
    let t = std::fs::read_to_string(&times).unwrap();
    let t: Vec<u128> = t.split_whitespace().map(|v| v.parse().unwrap()).collect();
    let startup = Duration::from_millis((t[1] - t[0]) as u64);
    assert!(
        startup < Duration::from_secs(3),
        "start-up took {startup:?}"
    );

    // The worker's environment holds no secret, and its config not the provider key: OpenCode
    // talks to the agent's loopback key proxy with a dummy key.
    let env = std::fs::read_to_string(&env_dump).unwrap();
    for s in SECRETS {
        assert!(!env.contains(s), "{s} reached the worker: {env}");
    }
    for line in env.lines() {
        let name = line.split('=').next().unwrap();
        assert!(
            !terarchitect_agent::redact::is_secret_key(name) && !name.starts_with("GIT_CONFIG"),
            "{name} reached the worker"
        );
    }
    let config: Value = serde_json::from_str(&std::fs::read_to_string(&record).unwrap()).unwrap();
    let options = &config["provider"]["terarchitect-proxy"]["options"];
    assert_eq!(options["apiKey"], "dummy");
    assert!(
        options["baseURL"]
            .as_str()
            .unwrap()
            .starts_with("http://127.0.0.1:"),
        "{config}"
    );
    assert_eq!(config["permission"]["external_directory"], "deny");
    assert_eq!(config["tools"]["question"], false);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn entrypoint_failure_names_the_model_and_logs_the_opencode_log_tail() {
    let mut h = Harness::new("Add greeting", &[]).await;
    entrypoint_starts_fake_opencode(&mut h, &[("FAKE_OPENCODE_BEHAVIOUR", "unknown-model")]);
    let (code, stderr) = h.run_binary(&["entrypoint"]).await;
    assert_failed(
        &h,
        code,
        AgentOutcome::WorkerUnavailable,
        "worker_unavailable",
    )
    .await;
    let term = h.termination();
    assert!(
        term.contains("OpenCode logged: ProviderModelNotFoundError: Model not found: terarchitect-proxy/coder."),
        "{term}\n{stderr}"
    );
    let logs = h.logs().await;
    let last = logs.last().unwrap();
    let raw = last["raw_output"].as_str().unwrap_or_default();
    assert!(
        raw.contains("Tail of the opencode serve log") && raw.contains("fake opencode: listening"),
        "{last}"
    );
    assert!(!raw.contains(WORKER_KEY));
}
