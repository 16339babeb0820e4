//! Scripted agent pods: what each Job's container does, decided per ticket, with counters of
//! how many run at once.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::batch::v1::Job;
use kube::ResourceExt;
use terarchitect_fake_apiserver::{ContainerRun, JobOutcome, JobPolicy};
use tokio::sync::watch;

/// What an agent pod does.
#[derive(Debug, Clone)]
pub enum Behaviour {
    /// Run for `after`, write `message` to the termination log, exit with `code`.
    Exit {
        code: i32,
        message: Option<String>,
        after: Duration,
    },
    /// Run until released through [`Agents::release`] (or killed).
    Hold,
    /// A pod-level outcome of the fake Job controller (image pull errors, OOM...).
    Pod(JobOutcome),
}

impl Behaviour {
    /// Exit 0 after `after`.
    pub fn succeed_after(after: Duration) -> Self {
        Self::Exit {
            code: 0,
            message: None,
            after,
        }
    }
}

#[derive(Default)]
struct State {
    default: Option<Behaviour>,
    per_ticket: HashMap<String, Behaviour>,
    /// Per ticket, the container environment of every run.
    envs: HashMap<String, Vec<std::collections::BTreeMap<String, String>>>,
}

/// The scripted agents of a test.
#[derive(Clone)]
pub struct Agents {
    state: Arc<Mutex<State>>,
    released: watch::Sender<HashMap<String, (i32, String)>>,
    running: Arc<AtomicUsize>,
    max_running: Arc<AtomicUsize>,
    runs: Arc<AtomicUsize>,
}

impl Default for Agents {
    fn default() -> Self {
        Self {
            state: Arc::default(),
            released: watch::channel(HashMap::new()).0,
            running: Arc::default(),
            max_running: Arc::default(),
            runs: Arc::default(),
        }
    }
}

impl Agents {
    /// What every ticket without its own behaviour does (default: succeed after 100 ms).
    pub fn set_default(&self, behaviour: Behaviour) {
        self.state.lock().unwrap().default = Some(behaviour);
    }

    /// What the pods of `ticket` do.
    pub fn set(&self, ticket: uuid::Uuid, behaviour: Behaviour) {
        self.state
            .lock()
            .unwrap()
            .per_ticket
            .insert(ticket.to_string(), behaviour);
    }

    /// Lets a held agent of `ticket` exit with `code` and termination message `message`.
    pub fn release(&self, ticket: uuid::Uuid, code: i32, message: &str) {
        self.released.send_modify(|m| {
            m.insert(ticket.to_string(), (code, message.to_owned()));
        });
    }

    /// Agent containers running now.
    pub fn running(&self) -> usize {
        self.running.load(Ordering::SeqCst)
    }

    /// The most agent containers that ever ran at once.
    pub fn max_running(&self) -> usize {
        self.max_running.load(Ordering::SeqCst)
    }

    /// Agent containers started so far.
    pub fn runs(&self) -> usize {
        self.runs.load(Ordering::SeqCst)
    }

    /// The resolved container environment of each run of `ticket`'s pods.
    pub fn envs(&self, ticket: uuid::Uuid) -> Vec<std::collections::BTreeMap<String, String>> {
        self.state
            .lock()
            .unwrap()
            .envs
            .get(&ticket.to_string())
            .cloned()
            .unwrap_or_default()
    }

    fn behaviour(&self, ticket: &str) -> Behaviour {
        let state = self.state.lock().unwrap();
        state
            .per_ticket
            .get(ticket)
            .or(state.default.as_ref())
            .cloned()
            .unwrap_or_else(|| Behaviour::succeed_after(Duration::from_millis(100)))
    }

    /// The fake Job controller's policy: each pod follows its ticket's behaviour.
    pub fn policy(&self) -> JobPolicy {
        let agents = self.clone();
        JobPolicy::from_fn(move |job: &Job| {
            let ticket = job
                .labels()
                .get(terarchitect_operator::job_builder::LABEL_TICKET)
                .cloned()
                .unwrap_or_default();
            match agents.behaviour(&ticket) {
                Behaviour::Pod(outcome) => outcome,
                behaviour => {
                    let agents = agents.clone();
                    JobOutcome::command(move |run: ContainerRun| {
                        let (agents, behaviour, ticket) =
                            (agents.clone(), behaviour.clone(), ticket.clone());
                        async move { agents.run(run, &ticket, behaviour).await }
                    })
                }
            }
        })
    }

    async fn run(&self, run: ContainerRun, ticket: &str, behaviour: Behaviour) -> i32 {
        self.state
            .lock()
            .unwrap()
            .envs
            .entry(ticket.to_owned())
            .or_default()
            .push(run.env.clone());
        self.runs.fetch_add(1, Ordering::SeqCst);
        let now = self.running.fetch_add(1, Ordering::SeqCst) + 1;
        self.max_running.fetch_max(now, Ordering::SeqCst);
        let (code, message) = match behaviour {
            Behaviour::Exit {
                code,
                message,
                after,
            } => {
                tokio::select! {
                    _ = tokio::time::sleep(after) => (code, message),
                    _ = run.cancel.cancelled() => (137, None),
                }
            }
            Behaviour::Hold => {
                let mut rx = self.released.subscribe();
                tokio::select! {
                    got = rx.wait_for(|m| m.contains_key(ticket)) => match got {
                        Ok(m) => {
                            let (code, message) = m[ticket].clone();
                            (code, Some(message))
                        }
                        Err(_) => (137, None),
                    },
                    _ = run.cancel.cancelled() => (137, None),
                }
            }
            Behaviour::Pod(_) => unreachable!("pod outcomes do not run a command"),
        };
        if let Some(message) = message.filter(|m| !m.is_empty()) {
            let _ = std::fs::write(&run.termination_message_path, message);
        }
        self.running.fetch_sub(1, Ordering::SeqCst);
        code
    }
}
