//! A client for an OpenAI-compatible `/embeddings` endpoint.

use std::time::Duration;

use serde::Deserialize;
use serde_json::json;

use crate::settings::Resolved;

/// Default embedding model, as in the original.
pub const DEFAULT_MODEL: &str = "text-embedding-3-small";

/// Where and how to embed, when an embedding service is configured.
#[derive(Clone)]
pub struct EmbeddingConfig {
    /// Base URL without a trailing slash (e.g. `http://host/v1`).
    pub base_url: String,
    /// Model name.
    pub model: String,
    api_key: Option<String>,
}

impl std::fmt::Debug for EmbeddingConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmbeddingConfig")
            .field("base_url", &self.base_url)
            .field("model", &self.model)
            .field("api_key", &self.api_key.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

impl EmbeddingConfig {
    /// The configured service: `MEMORY_EMBEDDING_BASE_URL`, else `EMBEDDING_SERVICE_URL`; None
    /// when neither is set (memory then ranks with BM25 alone).
    pub fn from_settings(s: &Resolved) -> Option<Self> {
        let base = s
            .get("MEMORY_EMBEDDING_BASE_URL")
            .or_else(|| s.get("EMBEDDING_SERVICE_URL"))
            .map(|u| u.trim().trim_end_matches('/').to_owned())
            .filter(|u| !u.is_empty())?;
        let model = s
            .get("MEMORY_EMBEDDING_MODEL")
            .unwrap_or(DEFAULT_MODEL)
            .trim()
            .to_owned();
        let api_key = ["EMBEDDING_API_KEY", "openai_api_key", "MEMORY_LLM_API_KEY"]
            .iter()
            .find_map(|k| s.get(k))
            .map(|k| k.trim().to_owned());
        Some(Self {
            base_url: base,
            model,
            api_key,
        })
    }
}

/// Errors talking to the embedding service. Messages never include the API key.
#[derive(Debug, thiserror::Error)]
pub enum EmbeddingError {
    /// The request failed.
    #[error("embedding request failed: {0}")]
    Http(#[from] reqwest::Error),
    /// The answer was not the expected shape.
    #[error("embedding service answered unexpectedly: {0}")]
    Shape(String),
}

#[derive(Deserialize)]
struct EmbeddingResponse {
    data: Vec<EmbeddingItem>,
}

#[derive(Deserialize)]
struct EmbeddingItem {
    embedding: Vec<f32>,
    #[serde(default)]
    index: Option<usize>,
}

/// Embeds `inputs`, returning vectors in input order.
pub async fn embed(
    http: &reqwest::Client,
    cfg: &EmbeddingConfig,
    inputs: &[String],
) -> Result<Vec<Vec<f32>>, EmbeddingError> {
    if inputs.is_empty() {
        return Ok(Vec::new());
    }
    let mut req = http
        .post(format!("{}/embeddings", cfg.base_url))
        .timeout(Duration::from_secs(60))
        .json(&json!({"input": inputs, "model": cfg.model}));
    if let Some(key) = &cfg.api_key {
        req = req.bearer_auth(key);
    }
    let resp: EmbeddingResponse = req.send().await?.error_for_status()?.json().await?;
    if resp.data.len() != inputs.len() {
        return Err(EmbeddingError::Shape(format!(
            "{} vectors for {} inputs",
            resp.data.len(),
            inputs.len()
        )));
    }
    let mut items: Vec<(usize, Vec<f32>)> = resp
        .data
        .into_iter()
        .enumerate()
        .map(|(i, item)| (item.index.unwrap_or(i), item.embedding))
        .collect();
    items.sort_by_key(|(i, _)| *i);
    Ok(items.into_iter().map(|(_, v)| v).collect())
}

/// Little-endian f32 bytes of a vector, for storage.
pub fn to_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// The vector stored by [`to_bytes`].
pub fn from_bytes(b: &[u8]) -> Vec<f32> {
    b.chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

/// Cosine similarity; 0 for mismatched or zero vectors.
pub fn cosine(a: &[f32], b: &[f32]) -> f64 {
    if a.len() != b.len() || a.is_empty() {
        return 0.0;
    }
    let (mut dot, mut na, mut nb) = (0f64, 0f64, 0f64);
    for (x, y) in a.iter().zip(b) {
        dot += f64::from(*x) * f64::from(*y);
        na += f64::from(*x) * f64::from(*x);
        nb += f64::from(*y) * f64::from(*y);
    }
    if na == 0.0 || nb == 0.0 {
        0.0
    } else {
        dot / (na.sqrt() * nb.sqrt())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_round_trip_and_cosine() {
        let v = vec![1.0f32, -2.5, 3.25];
        assert_eq!(from_bytes(&to_bytes(&v)), v);
        assert!((cosine(&[1.0, 0.0], &[2.0, 0.0]) - 1.0).abs() < 1e-9);
        assert!(cosine(&[1.0, 0.0], &[0.0, 1.0]).abs() < 1e-9);
        assert_eq!(cosine(&[1.0], &[1.0, 2.0]), 0.0);
    }
}
