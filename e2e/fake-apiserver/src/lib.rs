//! An in-process fake Kubernetes API server for testing kube-rs clients.
//!
//! [`FakeApiServer`] speaks the real HTTP protocol (JSON over plain HTTP on `127.0.0.1`, or
//! in-process through a tower `Service`) closely enough that unchanged kube-rs code — a
//! kube-runtime `Controller` with `.owns()`, reflectors and watchers, `kube::runtime::finalizer`,
//! the events `Recorder`, kube-lease-manager leader election — runs against it.
//!
//! ```no_run
//! # async fn example() -> Result<(), Box<dyn std::error::Error>> {
//! use k8s_openapi::api::batch::v1::Job;
//! use terarchitect_fake_apiserver::{FakeApiServer, JobOutcome, RequestMatcher, Verb};
//!
//! let server = FakeApiServer::start().await?;
//! let client = server.client().await; // or server.in_process_client()
//! server.write_kubeconfig("/tmp/kubeconfig")?; // for a child process's KUBECONFIG
//!
//! // Pods of every Job succeed after 100 ms.
//! server.start_job_controller(JobOutcome::succeed_after(std::time::Duration::from_millis(100)));
//! // The next Job creation fails with a 500 Status.
//! server.fail_next(RequestMatcher::new(Verb::Create, "jobs"), 500, 1);
//! // ... run the code under test with `client`, then assert on the store:
//! let jobs: Vec<Job> = server.list::<Job>("default");
//! # let _ = (client, jobs); Ok(()) }
//! ```
//!
//! # Semantics
//! - A global, monotonically increasing `resourceVersion`; every object has `resourceVersion`,
//!   `uid`, `creationTimestamp`, `generation` and `managedFields`; `generateName` is honoured.
//! - Namespaces `default`, `kube-system`, `kube-public` and `kube-node-lease` exist at start.
//!   Objects may be created in any other namespace without creating it first (namespaces exist
//!   implicitly); a Namespace object that exists and is being deleted refuses new content, and
//!   deleting a Namespace deletes its content first.
//! - Writes follow the API server's rules: 409 on a stale `resourceVersion`, `/status` writes only
//!   change `.status`, main-resource writes ignore `.status` when the kind has a status
//!   subresource, `metadata.generation` increases only when non-metadata/non-status content changes,
//!   no-op writes do not bump the `resourceVersion`.
//! - Deletion honours finalizers, preconditions and propagation policies; owner references are
//!   garbage-collected synchronously after each write (see the `gc` module notes).
//! - Watches stream from an event history, with bookmarks, selectors, streaming lists and 410 Gone.
//! - A stand-in Job controller ([`Cluster::start_job_controller`]) creates and drives Pods.
//!
//! # Known gaps versus a real API server
//! - No authentication, authorization, admission webhooks, OpenAPI schema validation, pruning or
//!   defaulting of custom resources, CRD version conversion (objects are stored once and served at
//!   any served version), or Table / protobuf / CBOR encodings.
//! - Lists always reflect the current state (`resourceVersionMatch=Exact` with an older version is
//!   not honoured); continue tokens page through the current state.
//! - Server-side apply tracks field ownership per leaf field with lists treated as atomic (no
//!   merge keys), so conflicts on list items are coarser than on a real server.
//! - Strategic merge patch knows the merge keys of common lists only (containers, env, volumes,
//!   ports, conditions, ownerReferences, finalizers...).
//! - Garbage collection and namespace termination run synchronously after each write, and pods are
//!   removed at once (no graceful termination period).
//! - `v1` Events and `events.k8s.io/v1` Events are stored separately.
//! - The built-in kinds served are namespaces, pods, secrets, configmaps, serviceaccounts, events
//!   (core and events.k8s.io), batch jobs, leases and CRDs; anything else is 404 unless registered
//!   through a CRD.
//! - The Job controller runs one pod at a time (parallelism/completions above 1, indexed jobs and
//!   pod failure policies are not modelled) and treats `restartPolicy: OnFailure` like `Never`.

#![warn(missing_docs)]

mod api;
mod cluster;
mod defaults;
mod discovery;
mod error;
mod faults;
mod gc;
mod job_controller;
mod kueue;
mod managed_fields;
mod meta;
mod patch;
mod registry;
mod routing;
mod selectors;
mod server;
mod store;
mod watch;

pub use cluster::{Cluster, DIRECT_MANAGER};
pub use error::{ApiError, Error};
pub use faults::{RecordedRequest, RequestMatcher, Verb};
pub use job_controller::{
    CommandFn, ContainerRun, JobController, JobControllerConfig, JobOutcome, JobPolicy, Node,
};
pub use kueue::{Kueue, QUEUE_NAME_LABEL};
pub use server::{FakeApiServer, FakeApiServerBuilder};
pub use store::{DeleteOptions, Propagation};
