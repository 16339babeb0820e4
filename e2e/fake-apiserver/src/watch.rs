//! Watch streams: newline-delimited JSON events served from the store's event history.

use std::io;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use bytes::Bytes;
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::api::present;
use crate::registry::ResourceType;
use crate::selectors::{FieldSelector, LabelSelector};
use crate::server::Shared;
use crate::store::{Change, ChangeKind};

/// Where a watch starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum WatchStart {
    /// Events after this resourceVersion (410 Gone if it is older than the retained history).
    Since(u64),
    /// Synthetic ADDED events for the current objects first; with `initial_events_end`, followed by the
    /// `k8s.io/initial-events-end` bookmark (streaming lists).
    Snapshot { initial_events_end: bool },
}

/// A parsed watch request.
pub(crate) struct WatchRequest {
    pub rt: Arc<ResourceType>,
    pub version: String,
    pub namespace: Option<String>,
    pub labels: LabelSelector,
    pub fields: FieldSelector,
    pub start: WatchStart,
    pub timeout: Option<Duration>,
    pub bookmarks: bool,
    pub metadata_only: bool,
}

impl WatchRequest {
    fn selects(&self, obj: &Value) -> bool {
        self.labels.matches(obj) && self.fields.matches(obj)
    }

    /// The event this watcher sees for `change`, if any. An object entering the selection is ADDED,
    /// one leaving it is DELETED, as on a real server.
    fn translate<'a>(&self, change: &'a Change) -> Option<(&'static str, &'a Value)> {
        let key = &change.key;
        if key.group != self.rt.group
            || key.plural != self.rt.plural
            || self
                .namespace
                .as_ref()
                .is_some_and(|ns| *ns != key.namespace)
        {
            return None;
        }
        let now = self.selects(&change.object);
        let kind = match change.kind {
            ChangeKind::Added => now.then_some("ADDED"),
            ChangeKind::Deleted => now.then_some("DELETED"),
            ChangeKind::Modified => {
                let before = change.prev.as_ref().is_some_and(|p| self.selects(p));
                match (before, now) {
                    (true, true) => Some("MODIFIED"),
                    (false, true) => Some("ADDED"),
                    (true, false) => Some("DELETED"),
                    (false, false) => None,
                }
            }
        };
        kind.map(|k| (k, &change.object))
    }

    fn event(&self, kind: &str, obj: &Value) -> Value {
        json!({"type": kind, "object": present(obj, &self.rt, &self.version, self.metadata_only)})
    }

    fn bookmark(&self, rv: u64, initial_events_end: bool) -> Value {
        let (api_version, kind) = if self.metadata_only {
            (
                "meta.k8s.io/v1".to_string(),
                "PartialObjectMetadata".to_string(),
            )
        } else {
            (self.rt.api_version(&self.version), self.rt.kind.clone())
        };
        let mut metadata = json!({"resourceVersion": rv.to_string()});
        if initial_events_end {
            metadata["annotations"] = json!({"k8s.io/initial-events-end": "true"});
        }
        json!({"type": "BOOKMARK", "object": {"apiVersion": api_version, "kind": kind, "metadata": metadata}})
    }
}

fn gone(requested: u64, oldest: u64) -> Value {
    json!({"type": "ERROR", "object": {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": format!("too old resource version: {requested} ({oldest})"),
        "reason": "Expired",
        "code": 410,
    }})
}

/// Start a watch; the returned body streams events until timeout, shutdown or `drop_watches()`.
pub(crate) fn stream(shared: Arc<Shared>, request: WatchRequest) -> Body {
    let (tx, rx) = mpsc::channel::<Result<Bytes, io::Error>>(64);
    tokio::spawn(run(shared, request, tx));
    Body::from_stream(futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    }))
}

type Sender = mpsc::Sender<Result<Bytes, io::Error>>;

/// Send one event line; false when the client has gone away.
async fn send(tx: &Sender, event: &Value) -> bool {
    let mut line = serde_json::to_vec(event).unwrap_or_default();
    line.push(b'\n');
    tx.send(Ok(Bytes::from(line))).await.is_ok()
}

enum Step {
    Events(Vec<Arc<Change>>, u64),
    Gone(u64, u64),
    Dropped,
}

async fn run(shared: Arc<Shared>, request: WatchRequest, tx: Sender) {
    let mut changes = shared.store.subscribe();
    changes.borrow_and_update();
    let (start, epoch, initial) = shared.store.read(|s| {
        let initial: Vec<Value> = match request.start {
            WatchStart::Since(_) => Vec::new(),
            WatchStart::Snapshot { .. } => s
                .list(&request.rt, request.namespace.as_deref())
                .filter(|(_, o)| request.selects(o))
                .map(|(_, o)| o.clone())
                .collect(),
        };
        let start = match request.start {
            WatchStart::Since(rv) if rv < s.compacted_rv => Err((rv, s.compacted_rv)),
            WatchStart::Since(rv) => Ok(rv),
            WatchStart::Snapshot { .. } => Ok(s.rv),
        };
        (start, s.watch_epoch, initial)
    });
    let mut cursor = match start {
        Ok(rv) => rv,
        Err((requested, oldest)) => {
            send(&tx, &gone(requested, oldest)).await;
            return;
        }
    };
    for obj in &initial {
        if !send(&tx, &request.event("ADDED", obj)).await {
            return;
        }
    }
    if let WatchStart::Snapshot {
        initial_events_end: true,
    } = request.start
        && !send(&tx, &request.bookmark(cursor, true)).await
    {
        return;
    }
    let deadline = request.timeout.map(|t| Instant::now() + t);
    let mut ticker = tokio::time::interval(shared.config.bookmark_interval);
    ticker.tick().await;
    let mut want_bookmark = false;
    loop {
        let step = shared.store.read(|s| {
            if s.watch_epoch != epoch {
                return Step::Dropped;
            }
            match s.changes_since(cursor) {
                Some(list) => Step::Events(list, s.rv),
                None => Step::Gone(cursor, s.compacted_rv),
            }
        });
        match step {
            Step::Dropped => {
                let _ = tx
                    .send(Err(io::Error::new(
                        io::ErrorKind::ConnectionReset,
                        "watch dropped by the fake API server",
                    )))
                    .await;
                return;
            }
            Step::Gone(requested, oldest) => {
                send(&tx, &gone(requested, oldest)).await;
                return;
            }
            Step::Events(list, now) => {
                for change in &list {
                    if let Some((kind, obj)) = request.translate(change)
                        && !send(&tx, &request.event(kind, obj)).await
                    {
                        return;
                    }
                }
                // Every change up to `now` was in `list`, so the watch is current at `now`.
                cursor = now;
                if want_bookmark && request.bookmarks {
                    if !send(&tx, &request.bookmark(cursor, false)).await {
                        return;
                    }
                    want_bookmark = false;
                }
            }
        }
        let timeout = async {
            match deadline {
                Some(deadline) => tokio::time::sleep_until(deadline).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            changed = changes.changed() => {
                if changed.is_err() {
                    return;
                }
            }
            _ = ticker.tick(), if request.bookmarks => want_bookmark = true,
            _ = timeout => return,
            _ = shared.shutdown.cancelled() => return,
            _ = tx.closed() => return,
        }
    }
}
