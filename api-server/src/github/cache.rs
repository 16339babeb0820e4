//! The answers of conditional reads, by URL: a 304 Not Modified is answered from here (GitHub
//! does not count 304s against the rate limit).

use std::collections::HashMap;
use std::sync::Mutex;

use serde_json::Value;

/// Most cached pages; the cache starts over when full (a cold cache only costs full reads).
const MAX_ENTRIES: usize = 20_000;

/// One cached page.
#[derive(Debug, Clone)]
pub struct CachedPage {
    /// The `ETag` GitHub sent.
    pub etag: String,
    /// The page's JSON.
    pub value: Value,
    /// Its `rel="next"` link.
    pub next: Option<String>,
}

/// Cached pages by URL.
#[derive(Debug, Default)]
pub struct EtagCache {
    pages: Mutex<HashMap<String, CachedPage>>,
}

impl EtagCache {
    /// The cached page of `url`.
    pub fn get(&self, url: &str) -> Option<CachedPage> {
        self.pages.lock().expect("etag cache").get(url).cloned()
    }

    /// Stores a page.
    pub fn put(&self, url: &str, etag: &str, value: &Value, next: Option<&str>) {
        let mut pages = self.pages.lock().expect("etag cache");
        if pages.len() >= MAX_ENTRIES && !pages.contains_key(url) {
            pages.clear();
        }
        pages.insert(
            url.to_owned(),
            CachedPage {
                etag: etag.to_owned(),
                value: value.clone(),
                next: next.map(str::to_owned),
            },
        );
    }

    /// Number of cached pages.
    pub fn len(&self) -> usize {
        self.pages.lock().expect("etag cache").len()
    }

    /// Whether nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
