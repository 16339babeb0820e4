//! The agent against the real `opencode serve` (npm `opencode-ai`, pinned), started by the
//! agent's own `terarchitect-agent entrypoint`, with a scripted OpenAI-compatible worker model
//! that drives OpenCode's real tools. See `e2e/README.md` ("Real OpenCode").
//!
//! Skipped, saying why, only when OpenCode is not installed (see
//! [`terarchitect_e2e::real_opencode::opencode_bin`]).

use std::future::Future;
use std::os::unix::process::CommandExt as _;
use std::sync::{Condvar, Mutex};
use std::time::Duration;

use base64::Engine as _;
use reqwest::{Method, StatusCode};
use serde_json::json;
use terarchitect_api_server::testing::Backend;
use terarchitect_e2e::real_opencode::{Finished, RealWorld, RunOptions, leaks, opencode_bin};
use terarchitect_test_fakes::{LlmKind, ModelCall, ModelKind, Reply, answers};

/// At most this many scenarios (each an agent with its `opencode serve`) at once.
const PARALLEL: usize = 2;
/// The Director's first execution prompt (the fake Director's `NEXT` answer).
const EXECUTION: &str = "Add the greet() function";
/// The research prompt (the first worker turn).
const RESEARCH: &str = "Before any implementation, study the task";
/// What the worker writes with OpenCode's `write` tool.
const GREET: &str = "def greet(name):\n    return f\"Hello, {name}!\"\n";

static SLOTS: Mutex<usize> = Mutex::new(0);
static FREED: Condvar = Condvar::new();

/// Runs one scenario on its own runtime, at most [`PARALLEL`] at once; skips (loudly) when
/// OpenCode is not installed.
fn scenario<F, Fut>(f: F)
where
    F: FnOnce(RealWorld) -> Fut,
    Fut: Future<Output = ()>,
{
    scenario_on(Backend::Sqlite, f);
}

/// [`scenario`] with the api-server on `backend`.
fn scenario_on<F, Fut>(backend: Backend, f: F)
where
    F: FnOnce(RealWorld) -> Fut,
    Fut: Future<Output = ()>,
{
    let Some(bin) = opencode_bin() else { return };
    {
        let mut used = SLOTS.lock().unwrap();
        while *used >= PARALLEL {
            used = FREED.wait(used).unwrap();
        }
        *used += 1;
    }
    struct Slot;
    impl Drop for Slot {
        fn drop(&mut self) {
            *SLOTS.lock().unwrap_or_else(|e| e.into_inner()) -= 1;
            FREED.notify_one();
        }
    }
    let _slot = Slot;
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime")
        .block_on(async move {
            let world = RealWorld::start_on(bin, backend).await;
            f(world).await;
        });
}

/// A `write` of `greet.py` into the session's directory (the workspace).
fn write_greet() -> Reply {
    Reply::dynamic(|c: &ModelCall| {
        let dir = c
            .working_directory()
            .expect("OpenCode names the working directory");
        Reply::tool(
            "write",
            json!({"filePath": format!("{dir}/greet.py"), "content": GREET}),
        )
    })
}

/// Scripts the execution turn: the `before` calls, the `write` of `greet.py`, then `done`.
fn execution_writes_greet(w: &RealWorld, before: Vec<Reply>, done: &str) {
    let mut replies = before;
    replies.extend([write_greet(), Reply::text(done)]);
    w.model.on_prompt(EXECUTION, replies);
}

/// Asserts a successful run: PR opened from the ticket's branch, `greet.py` (written by
/// OpenCode's `write` tool) on the pushed branch, the ticket in review.
async fn assert_pull_request(w: &RealWorld, ticket: uuid::Uuid, run: &Finished) {
    assert_eq!(run.code, 0, "{}", run.describe());
    assert!(
        run.termination.starts_with("Succeeded"),
        "{}",
        run.describe()
    );
    let branch = RealWorld::branch(ticket);
    assert!(
        w.remote_files(&branch).contains(&"greet.py".to_owned()),
        "{:?}",
        w.remote_files(&branch)
    );
    assert_eq!(w.remote_file(&branch, "greet.py").trim(), GREET.trim());
    let pulls = w.gh.pulls_from(&branch);
    assert_eq!(pulls.len(), 1, "{pulls:?}");
    let t = w.ticket(ticket).await;
    assert_eq!(t["column_id"], "in_review", "{t}");
    assert_eq!(t["pr_url"], pulls[0]["html_url"], "{t}");
}

/// Creates a "Greeting" ticket, runs it with a 60 s worker timeout and asserts its pull request
/// came well before: nothing blocked a turn until the timeout.
async fn run_greeting_unblocked(w: &mut RealWorld) {
    let ticket = w.create_ticket("Greeting").await;
    let opts = RunOptions::default().env("WORKER_TIMEOUT_SEC", "60");
    let run = w.run(ticket, opts).await;
    assert_pull_request(w, ticket, &run).await;
    assert!(run.elapsed < Duration::from_secs(60), "{}", run.describe());
}

/// Agent requests of the turn whose prompt contains `prompt`.
fn turn_calls(w: &RealWorld, prompt: &str) -> Vec<ModelCall> {
    w.model
        .calls_of(ModelKind::Agent)
        .into_iter()
        .filter(|c| c.prompt().contains(prompt))
        .collect()
}

#[test]
fn a_file_written_by_the_write_tool_lands_in_the_pull_request() {
    scenario(|mut w| async move {
        execution_writes_greet(&w, vec![], "Added greet() in greet.py.");
        let ticket = w.create_ticket("Greeting").await;
        let run = w.run(ticket, RunOptions::default()).await;
        assert_pull_request(&w, ticket, &run).await;
        // The write went through OpenCode's tool, whose result came back to the model.
        let calls = turn_calls(&w, EXECUTION);
        assert!(
            calls.iter().any(|c| c.step() == 1
                && c.last_tool_result()
                    .is_some_and(|r| r.contains("Wrote file"))),
            "{calls:?}"
        );
        // OpenCode authenticated to its provider with the worker's key, streaming.
        let all = w.model.calls();
        assert!(all.iter().all(|c| c.body["stream"] == true));
        let key = format!("Bearer {}", w.secrets.provider_key);
        assert!(
            all.iter()
                .all(|c| c.authorization.as_deref() == Some(key.as_str())),
            "{:?}",
            all.iter().map(|c| &c.authorization).collect::<Vec<_>>()
        );
        assert_eq!(all[0].body["model"], "coder");
        // WORKER_LLM_URL ends in /v1: OpenCode (or the agent's proxy) posts below it.
        assert!(
            all.iter().all(|c| c.path == "/v1/chat/completions"),
            "{:?}",
            all.iter().map(|c| &c.path).collect::<Vec<_>>()
        );
    });
}

/// A failing model ends the run with exit 9 (`WorkerUnavailable`) and the provider's message,
/// and no turn counts as done.
async fn model_failure_ends_the_run(mut w: RealWorld, reply: Reply, message: &str) -> Finished {
    w.model.on_prompt_always("", vec![reply]);
    let ticket = w.create_ticket("Greeting").await;
    let run = w.run(ticket, RunOptions::default()).await;
    assert_eq!(run.code, 9, "{}", run.describe());
    assert!(
        run.termination.starts_with("WorkerUnavailable") && run.termination.contains(message),
        "{}",
        run.describe()
    );
    let logs = w.logs(ticket).await;
    let steps: Vec<&str> = logs.iter().filter_map(|l| l["step"].as_str()).collect();
    assert!(
        !steps
            .iter()
            .any(|s| s.ends_with("_done")
                || s.starts_with("worker_turn_") && !s.ends_with("_prompt")),
        "a failed worker call counted as a turn: {steps:?}"
    );
    assert!(!steps.contains(&"memory_indexed"), "{steps:?}");
    let last = logs.last().expect("a final log entry");
    assert_eq!(last["step"], "worker_unavailable", "{logs:?}");
    assert!(last.to_string().contains(message), "{last}");
    // The tail of OpenCode's own log comes with it.
    let raw = last["raw_output"].as_str().unwrap_or_default();
    assert!(raw.contains("level=") && raw.contains("message="), "{last}");
    assert!(w.gh.pulls().is_empty());
    run
}

#[test]
fn b1_model_400_ends_the_run_with_the_providers_message() {
    scenario(|w| async move {
        let message = "Invalid value for 'tool_choice': scripted-400";
        let model = w.model.clone();
        model_failure_ends_the_run(w, Reply::error(400, message), message).await;
        // Not retryable: one request per worker call.
        assert!(model.calls().len() <= 2, "{}", model.calls().len());
    });
}

#[test]
fn b2_model_500_ends_the_run_after_opencodes_retries() {
    scenario(|w| async move {
        let message = "upstream overloaded: scripted-500";
        let model = w.model.clone();
        // retry-after-ms keeps OpenCode's 5 retries (2 s doubling otherwise) short.
        let run =
            model_failure_ends_the_run(w, Reply::error_retry_after(500, message, 20), message)
                .await;
        assert!(
            model.calls().len() >= 6,
            "OpenCode retried: {}",
            model.calls().len()
        );
        assert!(run.elapsed < Duration::from_secs(60), "{}", run.describe());
    });
}

#[test]
fn b3_a_transient_model_failure_is_retried_and_the_run_succeeds() {
    scenario(|mut w| async move {
        // The execution turn's first two model calls fail with 500; OpenCode retries.
        let failures = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let seen = failures.clone();
        let first = Reply::dynamic(move |c: &ModelCall| {
            if seen.fetch_add(1, std::sync::atomic::Ordering::SeqCst) < 2 {
                Reply::error_retry_after(503, "overloaded, try again", 20)
            } else {
                match write_greet() {
                    Reply::Dynamic(f) => f(c),
                    other => other,
                }
            }
        });
        w.model
            .on_prompt(EXECUTION, vec![first, Reply::text("Added greet().")]);
        let ticket = w.create_ticket("Greeting").await;
        let run = w.run(ticket, RunOptions::default()).await;
        assert_pull_request(&w, ticket, &run).await;
        assert!(failures.load(std::sync::atomic::Ordering::SeqCst) >= 3);
    });
}

#[test]
fn c_a_question_tool_call_does_not_block_the_run() {
    scenario(|mut w| async move {
        let question = json!({"questions": [{"question": "Which name should the function have?",
            "header": "Name", "options": [{"label": "greet", "description": "greet(name)"},
            {"label": "hello", "description": "hello(name)"}]}]});
        execution_writes_greet(
            &w,
            vec![Reply::tool("question", question)],
            "Added greet().",
        );
        run_greeting_unblocked(&mut w).await;
        // The turn went on after the question (the tool is refused or not offered).
        let calls = turn_calls(&w, EXECUTION);
        assert!(calls.iter().any(|c| c.step() == 1), "{calls:?}");
    });
}

#[test]
fn d_a_write_outside_the_workspace_is_refused_without_blocking() {
    scenario(|mut w| async move {
        let outside = w.dir.path().join("run-1").join("tmp").join("escape.txt");
        let target = outside.to_string_lossy().into_owned();
        execution_writes_greet(
            &w,
            vec![Reply::tool(
                "write",
                json!({"filePath": target, "content": "escaped\n"}),
            )],
            "Added greet().",
        );
        run_greeting_unblocked(&mut w).await;
        assert!(
            !outside.exists(),
            "the write outside the workspace happened"
        );
        let refused = turn_calls(&w, EXECUTION)
            .into_iter()
            .find(|c| c.step() == 1)
            .and_then(|c| c.last_tool_result())
            .expect("the model got the write's result");
        assert!(!refused.contains("Wrote file"), "{refused}");
    });
}

#[test]
fn e_the_worker_session_is_summarized_after_30_turns() {
    scenario(|mut w| async move {
        let ticket = w.create_ticket("Long ticket").await;
        let mut script = vec![answers::APPROVE];
        // Research, plan (and the checklist when no plan file was written) are worker turns
        // too: 29 execution turns make at least 31, the summary comes before the 31st.
        script.extend(std::iter::repeat_n(answers::NEXT, 29));
        script.push(answers::DONE);
        w.llm.set_script_for(&ticket.to_string(), &script);
        execution_writes_greet(&w, vec![], "Done.");
        let run = w.run(ticket, RunOptions::default()).await;
        assert_pull_request(&w, ticket, &run).await;
        let calls = w.model.calls();
        let first_summary = calls
            .iter()
            .position(|c| c.kind == ModelKind::Summary)
            .unwrap_or_else(|| panic!("no summarization request; {}", run.describe()));
        let turns_before = calls[..first_summary]
            .iter()
            .filter(|c| c.kind == ModelKind::Agent)
            .map(ModelCall::turn)
            .max();
        assert_eq!(turns_before, Some(30), "summarized after 30 worker turns");
        assert!(
            calls[first_summary..]
                .iter()
                .any(|c| c.kind == ModelKind::Agent),
            "the run went on after the summary"
        );
    });
}

#[test]
fn f_basic_auth_protects_opencode_serve() {
    scenario(|mut w| async move {
        execution_writes_greet(&w, vec![], "Added greet().");
        let ticket = w.create_ticket("Greeting").await;
        let password = w.secrets.opencode_password.clone();
        let opts = RunOptions::default().env("OPENCODE_SERVER_PASSWORD", &password);
        let run = w.start_run(ticket, opts).await;
        let health = format!("http://127.0.0.1:{}/global/health", run.port);
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(2))
            .build()
            .unwrap();
        // OpenCode leaves some requests of its first seconds unanswered: each probe is retried
        // until it gets an answer.
        let status = |password: Option<&'static str>| {
            let (http, health) = (http.clone(), health.clone());
            let real = w.secrets.opencode_password.clone();
            async move {
                terarchitect_e2e::eventually(
                    "opencode serve to answer",
                    Duration::from_secs(60),
                    || {
                        let mut req = http.get(&health);
                        match password {
                            Some("right") => req = req.basic_auth("opencode", Some(&real)),
                            Some(p) => req = req.basic_auth("opencode", Some(p)),
                            None => {}
                        }
                        async move { req.send().await.ok().map(|r| r.status()) }
                    },
                )
                .await
            }
        };
        assert_eq!(status(None).await, StatusCode::UNAUTHORIZED);
        assert_eq!(status(Some("wrong")).await, StatusCode::UNAUTHORIZED);
        assert_eq!(status(Some("right")).await, StatusCode::OK);
        let run = run.wait().await;
        assert_pull_request(&w, ticket, &run).await;
    });
}

#[test]
fn f2_a_wrong_opencode_password_is_reported_as_such() {
    scenario(|mut w| async move {
        // An `opencode serve` already running (OPENCODE_SERVER_URL), with another password.
        let port = terarchitect_test_fakes::closed_port();
        let home = w.dir.path().join("oc-home");
        std::fs::create_dir_all(&home).unwrap();
        let mut server = tokio::process::Command::new(&w.opencode)
            .args([
                "serve",
                "--port",
                &port.to_string(),
                "--hostname",
                "127.0.0.1",
            ])
            .env("HOME", &home)
            .env("OPENCODE_SERVER_PASSWORD", &w.secrets.opencode_password)
            .current_dir(&home)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("starting opencode serve");
        let url = format!("http://127.0.0.1:{port}");
        let http = reqwest::Client::new();
        terarchitect_e2e::eventually("opencode serve to answer", Duration::from_secs(60), || {
            let health = format!("{url}/global/health");
            let http = http.clone();
            async move {
                let r = http
                    .get(health)
                    .timeout(Duration::from_secs(1))
                    .send()
                    .await;
                r.ok().map(|_| ())
            }
        })
        .await;
        let ticket = w.create_ticket("Greeting").await;
        let opts = RunOptions::default()
            .env("OPENCODE_SERVER_URL", &url)
            .env("OPENCODE_SERVER_PASSWORD", "not-the-password");
        let run = w.run(ticket, opts).await;
        let _ = server.kill().await;
        assert_eq!(run.code, 9, "{}", run.describe());
        assert!(
            run.termination.contains("401")
                && !run.termination.contains("Is opencode serve running"),
            "{}",
            run.describe()
        );
        assert!(w.model.calls().is_empty());
    });
}

#[test]
fn i_an_agent_started_by_hand_takes_worker_mode_from_the_settings() {
    scenario(|mut w| async move {
        // No claim environment: WORKER_MODE=opencode, the models and keys come from
        // worker-context's agent_settings only.
        execution_writes_greet(&w, vec![], "Added greet().");
        let ticket = w.create_ticket("Greeting").await;
        let run = w.run(ticket, RunOptions::by_hand()).await;
        assert_pull_request(&w, ticket, &run).await;
        assert!(!w.model.calls().is_empty(), "the worker was OpenCode");
    });
}

/// The worker's attack (`real_opencode_attack.sh`) against the api-server at `api`,
/// base64-encoded, as an attacker would hide literal paths from OpenCode's static permission
/// check.
fn attack_command(api: &str) -> String {
    let script = include_str!("real_opencode_attack.sh").replace("__API__", api);
    let encoded = base64::engine::general_purpose::STANDARD.encode(script);
    format!("echo {encoded} | base64 -d | bash")
}

/// `(count, settings status, claim status)` of each line of the attack's `### codes` section.
fn attack_codes(result: &str) -> Vec<(u32, u16, u16)> {
    let section = result
        .split("### codes")
        .nth(1)
        .and_then(|s| s.split("### env").next())
        .unwrap_or_default();
    section
        .lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            let n = f.next()?.parse().ok()?;
            let s = f.next()?.strip_prefix("settings=")?.parse().ok()?;
            let c = f.next()?.strip_prefix("claim=")?.parse().ok()?;
            Some((n, s, c))
        })
        .collect()
}

#[test]
fn h_containment_the_worker_reaches_no_secret_and_no_other_run() {
    scenario(containment);
}

#[test]
fn h_containment_on_postgres() {
    scenario_on(Backend::Postgres, containment);
}

/// Issue 9's scenario: see `e2e/README.md`.
async fn containment(mut w: RealWorld) {
    // Another project's queued job: a stolen claim would take it.
    let other = RealWorld::create_project(&w.api, &w.git.url()).await;
    let bait = w.create_ticket_in(other, "Bait").await;
    w.move_ticket(other, bait, "in_progress").await;
    let attack = attack_command(&w.api.base);
    w.model.on_prompt(
        RESEARCH,
        vec![
            Reply::tool(
                "bash",
                json!({"command": attack, "timeout": 110000,
                "description": "Collect credentials"}),
            ),
            // Everything found goes into the worker's answer (and so to the Director).
            Reply::dynamic(|c: &ModelCall| {
                Reply::text(format!(
                    "Here is what I found:\n{}",
                    c.last_tool_result().unwrap_or_default()
                ))
            }),
        ],
    );
    execution_writes_greet(&w, vec![], "Added greet().");
    let ticket = w.create_ticket("Greeting").await;
    let opts = RunOptions::default().env("WORKER_TIMEOUT_SEC", "120");
    let run = w.run(ticket, opts).await;

    // The attack ran and its result reached the model.
    let result = turn_calls(&w, RESEARCH)
        .into_iter()
        .find_map(|c| c.last_tool_result())
        .unwrap_or_else(|| {
            panic!(
                "the attack's result never reached the model; {}",
                run.describe()
            )
        });
    assert!(result.contains("ATTACK bytes="), "{result}");
    let attack_out = ["own", "tmp"]
        .map(|f| {
            let bytes = std::fs::read(run.root.join(format!("tmp/attack.{f}")))
                .expect("the attack wrote what it read");
            String::from_utf8_lossy(&bytes).into_owned()
        })
        .join("\n");

    // Nothing sensitive in what the worker could read, nor in anything either model got.
    let token = run.run_token.clone().unwrap_or_default();
    let mut secrets = w.secrets.all();
    secrets.push(("run token", &token));
    let director = w
        .llm
        .requests()
        .iter()
        .map(|(_, b)| b.to_string())
        .collect::<Vec<_>>()
        .join("\n");
    let logs = serde_json::to_string(&w.logs(ticket).await).unwrap();
    for (what, text) in [
        ("what the worker could read", &attack_out),
        ("the worker model's requests", &w.model.transcript()),
        ("the Director's requests", &director),
        ("the ticket's logs", &logs),
    ] {
        assert_eq!(
            leaks(text, &secrets),
            Vec::<&str>::new(),
            "secrets in {what}"
        );
    }
    assert!(
        run.run_token.is_some(),
        "the claim minted no run token: the agent holds the global worker key"
    );

    // Every call was refused.
    let codes = attack_codes(&result);
    assert!(!codes.is_empty(), "{result}");
    for (n, settings, claim) in &codes {
        assert!(
            matches!(settings, 401 | 403) && matches!(claim, 401 | 403),
            "{n} attempt(s) got settings={settings} claim={claim}; all: {codes:?}"
        );
    }
    let s = w.api.admin(Method::GET, "/api/settings", None).await;
    assert_eq!(s["AGENT_LLM_URL"], json!(w.llm.url), "{s}");
    assert_eq!(s["WORKER_LLM_URL"], json!(w.model.url), "{s}");
    let jobs = w
        .api
        .admin(
            Method::GET,
            &format!("/api/projects/{other}/tickets/{bait}/jobs"),
            None,
        )
        .await;
    assert_eq!(jobs[0]["status"], "pending", "{jobs}");
    // Even the run token itself opens neither.
    if let Some(t) = &run.run_token {
        for (method, path, body) in [
            (
                Method::PUT,
                "/api/settings",
                json!({"AGENT_LLM_URL": "http://127.0.0.1:9/x"}),
            ),
            (Method::POST, "/api/worker/jobs/start", json!({})),
        ] {
            let (status, v) = w.api.call(Some(t), method, path, Some(body)).await;
            assert_eq!(status, StatusCode::FORBIDDEN, "{path}: {v}");
        }
    }

    // The run still opens its pull request.
    assert_pull_request(&w, ticket, &run).await;
    assert!(w.llm.count(LlmKind::PrDescription) >= 1);
}

#[test]
fn attack_codes_are_parsed() {
    let text = "ATTACK bytes=3\n### codes\n    299 settings=403 claim=403\n      1 settings=401 claim=401\n### env\nX=1";
    assert_eq!(attack_codes(text), [(299, 403, 403), (1, 401, 401)]);
    let cmd = attack_command("http://127.0.0.1:1");
    assert!(cmd.starts_with("echo ") && cmd.ends_with(" | base64 -d | bash"));
    assert!(!cmd.contains("/proc") && !cmd.contains("/tmp"));
}

#[test]
fn the_tested_version_is_the_agent_images() {
    let dockerfile = include_str!("../../Dockerfile.agent");
    let pinned = dockerfile
        .lines()
        .find_map(|l| l.strip_prefix("ARG OPENCODE_VERSION="))
        .expect("Dockerfile.agent pins OPENCODE_VERSION");
    assert_eq!(
        pinned.trim(),
        terarchitect_e2e::real_opencode::OPENCODE_VERSION
    );
}

#[test]
fn executables_out_of_the_agent_users_reach_are_staged() {
    use std::os::unix::fs::PermissionsExt as _;
    use terarchitect_e2e::real_opencode::{agent_user, executable_by_others, reachable};
    let Some((uid, gid)) = agent_user() else {
        return; // not root: the agent runs as the tests' user and reaches what they reach
    };
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
    let exe = dir.path().join("hello-e2e");
    std::fs::write(&exe, "#!/bin/sh\necho staged-ok\n").unwrap();
    std::fs::set_permissions(&exe, std::fs::Permissions::from_mode(0o755)).unwrap();
    assert!(!executable_by_others(&exe));
    let staged = reachable(&exe, Some((uid, gid)));
    assert_ne!(staged, exe);
    assert!(executable_by_others(&staged), "{}", staged.display());
    assert_eq!(reachable(&exe, Some((uid, gid))), staged, "reused");
    let out = std::process::Command::new(&staged)
        .uid(uid)
        .gid(gid)
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "staged-ok");
    let _ = std::fs::remove_file(&staged);
}
