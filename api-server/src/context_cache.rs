//! A cache of serialised worker-context documents.
//!
//! A document depends on its project's data (whose `revision` every write bumps, in the same
//! transaction) and on the settings (whose generation changes with their values). An entry is
//! served only while both still match, so a cached document is never older than the data it
//! was validated against. Memory is bounded by a byte budget, evicting the oldest entries.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

use bytes::Bytes;
use uuid::Uuid;

/// What a cached document was built from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ContextVersion {
    /// The project's revision read before the document's data.
    pub project_revision: i64,
    /// The settings generation the document's agent settings came from.
    pub settings_generation: u64,
    /// Whether the document's agent settings had their secrets blanked.
    pub secrets_redacted: bool,
}

struct Entry {
    version: ContextVersion,
    body: Bytes,
}

#[derive(Default)]
struct Inner {
    entries: HashMap<Uuid, Entry>,
    order: VecDeque<Uuid>,
    bytes: usize,
}

/// Serialised worker-context documents by ticket id.
pub struct ContextCache {
    budget: usize,
    inner: Mutex<Inner>,
}

impl std::fmt::Debug for ContextCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ContextCache")
            .field("budget", &self.budget)
            .finish_non_exhaustive()
    }
}

impl ContextCache {
    /// A cache holding at most `budget` bytes of documents.
    pub fn new(budget: usize) -> Self {
        Self {
            budget,
            inner: Mutex::new(Inner::default()),
        }
    }

    /// The cached document of `ticket` if it was built from `version`.
    pub fn get(&self, ticket: Uuid, version: ContextVersion) -> Option<Bytes> {
        let inner = self.inner.lock().expect("context cache poisoned");
        inner
            .entries
            .get(&ticket)
            .filter(|e| e.version == version)
            .map(|e| e.body.clone())
    }

    /// Stores a document, evicting the oldest ones beyond the budget.
    pub fn put(&self, ticket: Uuid, version: ContextVersion, body: Bytes) {
        if body.len() > self.budget {
            return;
        }
        let mut inner = self.inner.lock().expect("context cache poisoned");
        let len = body.len();
        if let Some(old) = inner.entries.insert(ticket, Entry { version, body }) {
            inner.bytes -= old.body.len();
            inner.order.retain(|t| *t != ticket);
        }
        inner.order.push_back(ticket);
        inner.bytes += len;
        while inner.bytes > self.budget {
            let Some(oldest) = inner.order.pop_front() else {
                break;
            };
            if let Some(e) = inner.entries.remove(&oldest) {
                inner.bytes -= e.body.len();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const V1: ContextVersion = ContextVersion {
        project_revision: 1,
        settings_generation: 1,
        secrets_redacted: false,
    };
    const V2: ContextVersion = ContextVersion {
        project_revision: 2,
        settings_generation: 1,
        secrets_redacted: false,
    };

    #[test]
    fn serves_only_matching_versions_and_respects_the_budget() {
        let cache = ContextCache::new(10);
        let (a, b, c) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
        cache.put(a, V1, Bytes::from_static(b"aaaa"));
        assert_eq!(cache.get(a, V1).as_deref(), Some(&b"aaaa"[..]));
        assert_eq!(cache.get(a, V2), None, "a newer revision misses");
        cache.put(b, V1, Bytes::from_static(b"bbbb"));
        cache.put(c, V1, Bytes::from_static(b"cccc"));
        assert_eq!(cache.get(a, V1), None, "the oldest entry was evicted");
        assert!(cache.get(b, V1).is_some() && cache.get(c, V1).is_some());
        cache.put(b, V2, Bytes::from_static(b"bb"));
        assert_eq!(cache.get(b, V2).as_deref(), Some(&b"bb"[..]));
        cache.put(a, V1, Bytes::from(vec![0; 11]));
        assert_eq!(cache.get(a, V1), None, "larger than the budget: not cached");
    }
}
