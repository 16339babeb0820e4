//! Storage of project memory: passages, their inverted index and optional embeddings.

use std::collections::BTreeMap;

use sqlx::AssertSqlSafe;
use uuid::Uuid;

use super::{Db, DbResult, WritePool, now, placeholders, with_db};

/// A passage to store, already tokenised.
#[derive(Debug, Clone)]
pub struct NewMemoryDoc {
    pub content: String,
    pub content_hash: String,
    /// Term frequencies.
    pub terms: BTreeMap<String, i32>,
    /// Number of tokens.
    pub length: i32,
    /// Embedding and the model that made it, when an embedding service is configured.
    pub embedding: Option<(Vec<u8>, String)>,
}

/// A stored passage.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct MemoryDoc {
    pub id: Uuid,
    pub content: String,
    pub embedding: Option<Vec<u8>>,
    pub embedding_model: Option<String>,
}

/// One entry of the inverted index.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Posting {
    pub term: String,
    pub doc_id: Uuid,
    pub tf: i32,
    pub length: i32,
}

impl Db {
    /// Stores the passages that are not stored yet (by content hash). Returns how many were new.
    pub async fn insert_memory_docs(
        &self,
        project_id: Uuid,
        docs: &[NewMemoryDoc],
    ) -> DbResult<u64> {
        let ts = now();
        with_db!(self, pool => {
            let mut tx = pool.begin_write().await?;
            let mut inserted = 0;
            for doc in docs {
                let id = Uuid::new_v4();
                let (embedding, model) = match &doc.embedding {
                    Some((bytes, model)) => (Some(bytes.clone()), Some(model.clone())),
                    None => (None, None),
                };
                let done = sqlx::query(
                    "INSERT INTO memory_docs (id, project_id, content, content_hash, length, embedding, \
                       embedding_model, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) \
                     ON CONFLICT (project_id, content_hash) DO NOTHING",
                )
                .bind(id)
                .bind(project_id)
                .bind(&doc.content)
                .bind(&doc.content_hash)
                .bind(doc.length)
                .bind(embedding)
                .bind(model)
                .bind(ts)
                .execute(&mut *tx)
                .await?;
                if done.rows_affected() == 0 {
                    continue;
                }
                inserted += 1;
                for (term, tf) in &doc.terms {
                    sqlx::query("INSERT INTO memory_terms (project_id, term, doc_id, tf) VALUES ($1, $2, $3, $4)")
                        .bind(project_id)
                        .bind(term)
                        .bind(id)
                        .bind(*tf)
                        .execute(&mut *tx)
                        .await?;
                }
            }
            tx.commit().await?;
            Ok(inserted)
        })
    }

    /// Deletes passages by content hash. Returns how many existed.
    pub async fn delete_memory_docs(&self, project_id: Uuid, hashes: &[String]) -> DbResult<u64> {
        if hashes.is_empty() {
            return Ok(0);
        }
        let sql = format!(
            "DELETE FROM memory_docs WHERE project_id = $1 AND content_hash IN ({})",
            placeholders(2, hashes.len())
        );
        with_db!(self, pool => {
            let mut q = sqlx::query(AssertSqlSafe(sql.as_str())).bind(project_id);
            for h in hashes {
                q = q.bind(h);
            }
            Ok(q.execute(pool).await?.rows_affected())
        })
    }

    /// Number of passages and their mean length in tokens.
    pub async fn memory_stats(&self, project_id: Uuid) -> DbResult<(i64, f64)> {
        with_db!(self, pool => {
            let (count, total): (i64, Option<i64>) = sqlx::query_as(
                "SELECT COUNT(*), CAST(SUM(length) AS BIGINT) FROM memory_docs WHERE project_id = $1",
            )
            .bind(project_id)
            .fetch_one(pool)
            .await?;
            let avg = if count > 0 { total.unwrap_or(0) as f64 / count as f64 } else { 0.0 };
            Ok((count, avg))
        })
    }

    /// Inverted-index entries of `terms` in the project.
    pub async fn memory_postings(
        &self,
        project_id: Uuid,
        terms: &[String],
    ) -> DbResult<Vec<Posting>> {
        if terms.is_empty() {
            return Ok(Vec::new());
        }
        let sql = format!(
            "SELECT t.term, t.doc_id, t.tf, d.length FROM memory_terms t \
             JOIN memory_docs d ON d.id = t.doc_id \
             WHERE t.project_id = $1 AND t.term IN ({})",
            placeholders(2, terms.len())
        );
        with_db!(self, pool => {
            let mut q = sqlx::query_as(AssertSqlSafe(sql.as_str())).bind(project_id);
            for t in terms {
                q = q.bind(t);
            }
            Ok(q.fetch_all(pool).await?)
        })
    }

    /// Passages by id (any order).
    pub async fn memory_docs_by_id(&self, ids: &[Uuid]) -> DbResult<Vec<MemoryDoc>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let sql = format!(
            "SELECT id, content, embedding, embedding_model FROM memory_docs WHERE id IN ({})",
            placeholders(1, ids.len())
        );
        with_db!(self, pool => {
            let mut q = sqlx::query_as(AssertSqlSafe(sql.as_str()));
            for id in ids {
                q = q.bind(*id);
            }
            Ok(q.fetch_all(pool).await?)
        })
    }

    /// Every passage of the project with its embedding.
    pub async fn memory_docs_with_embeddings(&self, project_id: Uuid) -> DbResult<Vec<MemoryDoc>> {
        with_db!(self, pool => {
            Ok(sqlx::query_as(
                "SELECT id, content, embedding, embedding_model FROM memory_docs WHERE project_id = $1 \
                 ORDER BY created_at, id",
            )
            .bind(project_id)
            .fetch_all(pool)
            .await?)
        })
    }

    /// Stores the embedding of one passage.
    pub async fn set_memory_embedding(
        &self,
        doc_id: Uuid,
        embedding: &[u8],
        model: &str,
    ) -> DbResult<()> {
        with_db!(self, pool => {
            sqlx::query("UPDATE memory_docs SET embedding = $2, embedding_model = $3 WHERE id = $1")
                .bind(doc_id)
                .bind(embedding)
                .bind(model)
                .execute(pool)
                .await?;
            Ok(())
        })
    }
}
