//! Project memory: passages the agent indexes and retrieves.
//!
//! Retrieval needs no external service: passages are tokenised into an inverted index stored in
//! the database, and queries are ranked with Okapi BM25 (identically on PostgreSQL and SQLite).
//! When an OpenAI-compatible embedding service is configured, passages are embedded too and
//! queries are ranked by cosine similarity; if that service fails, BM25 answers instead.
//! Unlike the original, a passage indexed after a retrieval is visible to the next one.

pub mod embeddings;
pub mod tokenize;

use std::collections::HashMap;

use sha2::{Digest, Sha256};
use terarchitect_worker_api::MemoryQueryResult;
use uuid::Uuid;

use crate::db::{Db, DbError, NewMemoryDoc};
use crate::settings::Resolved;
use embeddings::EmbeddingConfig;

/// BM25 term-frequency saturation.
const K1: f64 = 1.2;
/// BM25 length normalisation.
const B: f64 = 0.75;
/// Passages per query when the request does not say (the original's HippoRAG default).
pub const DEFAULT_TOP_K: usize = 200;

/// Memory operations for one server.
#[derive(Clone, Debug)]
pub struct Memory {
    db: Db,
    http: reqwest::Client,
}

/// The hash that identifies a passage within a project.
pub fn content_hash(text: &str) -> String {
    hex::encode(Sha256::digest(text.as_bytes()))
}

/// The document indexed for a new project and before a retry of an empty retrieval.
pub fn bootstrap_doc(name: &str, description: Option<&str>) -> String {
    let name = if name.trim().is_empty() {
        "Untitled"
    } else {
        name
    };
    match description.map(str::trim).filter(|d| !d.is_empty()) {
        Some(d) => format!("Project: {name}. {d}"),
        None => format!("Project: {name}. No description."),
    }
}

impl Memory {
    /// Memory over `db`, embedding through `http` when configured.
    pub fn new(db: Db, http: reqwest::Client) -> Self {
        Self { db, http }
    }

    /// Indexes passages (idempotent per exact text). Returns how many were new.
    pub async fn index(
        &self,
        project_id: Uuid,
        docs: &[String],
        settings: &Resolved,
    ) -> Result<u64, DbError> {
        let mut seen = std::collections::HashSet::new();
        let unique: Vec<&String> = docs.iter().filter(|d| seen.insert(d.as_str())).collect();
        let embedded = match EmbeddingConfig::from_settings(settings) {
            Some(cfg) => {
                let texts: Vec<String> = unique.iter().map(|d| (*d).clone()).collect();
                match embeddings::embed(&self.http, &cfg, &texts).await {
                    Ok(vectors) => Some((vectors, cfg.model)),
                    Err(e) => {
                        tracing::warn!(error = %e, "embedding service failed; indexing for BM25 only");
                        None
                    }
                }
            }
            None => None,
        };
        let new_docs: Vec<NewMemoryDoc> = unique
            .iter()
            .enumerate()
            .map(|(i, text)| {
                let (terms, length) = tokenize::term_frequencies(text);
                NewMemoryDoc {
                    content: (*text).clone(),
                    content_hash: content_hash(text),
                    terms,
                    length,
                    embedding: embedded
                        .as_ref()
                        .map(|(vectors, model)| (embeddings::to_bytes(&vectors[i]), model.clone())),
                }
            })
            .collect();
        self.db.insert_memory_docs(project_id, &new_docs).await
    }

    /// Deletes passages by exact text. Returns how many existed.
    pub async fn delete(&self, project_id: Uuid, docs: &[String]) -> Result<u64, DbError> {
        let hashes: Vec<String> = docs.iter().map(|d| content_hash(d)).collect();
        self.db.delete_memory_docs(project_id, &hashes).await
    }

    /// Ranks passages for each query; one result per query, in order.
    pub async fn retrieve(
        &self,
        project_id: Uuid,
        queries: &[String],
        top_k: usize,
        settings: &Resolved,
    ) -> Result<Vec<MemoryQueryResult>, DbError> {
        if let Some(cfg) = EmbeddingConfig::from_settings(settings) {
            match self
                .retrieve_by_embedding(project_id, queries, top_k, &cfg)
                .await
            {
                Ok(Some(results)) => return Ok(results),
                Ok(None) => {}
                Err(RetrieveError::Db(e)) => return Err(e),
                Err(RetrieveError::Embedding(e)) => {
                    tracing::warn!(error = %e, "embedding service failed; ranking memory with BM25");
                }
            }
        }
        let mut results = Vec::with_capacity(queries.len());
        for q in queries {
            results.push(self.bm25(project_id, q, top_k).await?);
        }
        Ok(results)
    }

    async fn bm25(
        &self,
        project_id: Uuid,
        query: &str,
        top_k: usize,
    ) -> Result<MemoryQueryResult, DbError> {
        let mut query_terms = tokenize::terms(query);
        query_terms.sort();
        query_terms.dedup();
        let empty = MemoryQueryResult {
            question: query.to_owned(),
            docs: Vec::new(),
            doc_scores: Vec::new(),
        };
        if query_terms.is_empty() || top_k == 0 {
            return Ok(empty);
        }
        let (n_docs, avg_len) = self.db.memory_stats(project_id).await?;
        if n_docs == 0 {
            return Ok(empty);
        }
        let postings = self.db.memory_postings(project_id, &query_terms).await?;
        let mut df: HashMap<&str, f64> = HashMap::new();
        for p in &postings {
            *df.entry(p.term.as_str()).or_default() += 1.0;
        }
        let n = n_docs as f64;
        let mut scores: HashMap<Uuid, f64> = HashMap::new();
        for p in &postings {
            let df = df[p.term.as_str()];
            let idf = (1.0 + (n - df + 0.5) / (df + 0.5)).ln();
            let tf = f64::from(p.tf);
            let norm = 1.0 - B + B * f64::from(p.length) / avg_len.max(1.0);
            *scores.entry(p.doc_id).or_default() += idf * tf * (K1 + 1.0) / (tf + K1 * norm);
        }
        let mut ranked: Vec<(Uuid, f64)> = scores.into_iter().collect();
        ranked.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        ranked.truncate(top_k);
        let ids: Vec<Uuid> = ranked.iter().map(|(id, _)| *id).collect();
        let contents: HashMap<Uuid, String> = self
            .db
            .memory_docs_by_id(&ids)
            .await?
            .into_iter()
            .map(|d| (d.id, d.content))
            .collect();
        let (docs, doc_scores) = ranked
            .into_iter()
            .filter_map(|(id, score)| contents.get(&id).map(|c| (c.clone(), score)))
            .unzip();
        Ok(MemoryQueryResult {
            question: query.to_owned(),
            docs,
            doc_scores,
        })
    }

    /// Cosine ranking over embeddings; embeds passages that lack an embedding of the configured
    /// model first. None when the project has no passages.
    async fn retrieve_by_embedding(
        &self,
        project_id: Uuid,
        queries: &[String],
        top_k: usize,
        cfg: &EmbeddingConfig,
    ) -> Result<Option<Vec<MemoryQueryResult>>, RetrieveError> {
        let mut docs = self.db.memory_docs_with_embeddings(project_id).await?;
        if docs.is_empty() {
            return Ok(None);
        }
        let stale: Vec<usize> = (0..docs.len())
            .filter(|i| {
                docs[*i].embedding.is_none()
                    || docs[*i].embedding_model.as_deref() != Some(cfg.model.as_str())
            })
            .collect();
        if !stale.is_empty() {
            let texts: Vec<String> = stale.iter().map(|i| docs[*i].content.clone()).collect();
            let vectors = embeddings::embed(&self.http, cfg, &texts).await?;
            for (i, v) in stale.into_iter().zip(vectors) {
                let bytes = embeddings::to_bytes(&v);
                self.db
                    .set_memory_embedding(docs[i].id, &bytes, &cfg.model)
                    .await?;
                docs[i].embedding = Some(bytes);
            }
        }
        let doc_vectors: Vec<Vec<f32>> = docs
            .iter()
            .map(|d| {
                d.embedding
                    .as_deref()
                    .map(embeddings::from_bytes)
                    .unwrap_or_default()
            })
            .collect();
        let query_vectors = embeddings::embed(&self.http, cfg, queries).await?;
        let results = queries
            .iter()
            .zip(query_vectors)
            .map(|(q, qv)| {
                let mut ranked: Vec<(usize, f64)> = doc_vectors
                    .iter()
                    .enumerate()
                    .map(|(i, dv)| (i, embeddings::cosine(&qv, dv)))
                    .collect();
                ranked.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
                ranked.truncate(top_k);
                MemoryQueryResult {
                    question: q.clone(),
                    docs: ranked
                        .iter()
                        .map(|(i, _)| docs[*i].content.clone())
                        .collect(),
                    doc_scores: ranked.iter().map(|(_, s)| *s).collect(),
                }
            })
            .collect();
        Ok(Some(results))
    }
}

#[derive(Debug, thiserror::Error)]
enum RetrieveError {
    #[error(transparent)]
    Db(#[from] DbError),
    #[error(transparent)]
    Embedding(#[from] embeddings::EmbeddingError),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bootstrap_doc_matches_the_original_format() {
        assert_eq!(
            bootstrap_doc("Shop", Some("An online shop")),
            "Project: Shop. An online shop"
        );
        assert_eq!(
            bootstrap_doc("Shop", None),
            "Project: Shop. No description."
        );
        assert_eq!(
            bootstrap_doc("", Some(" ")),
            "Project: Untitled. No description."
        );
    }

    #[test]
    fn content_hash_is_stable() {
        assert_eq!(content_hash("a"), content_hash("a"));
        assert_ne!(content_hash("a"), content_hash("b"));
        assert_eq!(content_hash("a").len(), 64);
    }
}
