//! Project memory through the worker API: passages retrieved for the Director (shown under
//! `Memories invoked:`) and the completion summary indexed at the end of a ticket.

use terarchitect_worker_api::{MemoryRetrieveRequest, WorkerApiClient};
use uuid::Uuid;

use crate::prompts::MEMORIES_HEADER;
use crate::redact::Redactor;

/// Passages per query.
pub const PASSAGES_PER_QUERY: u32 = 5;

/// Memory access for one project.
#[derive(Clone, Debug)]
pub struct Memory {
    client: WorkerApiClient,
    project_id: Uuid,
    redactor: Redactor,
}

/// `"Memories invoked:\n<passages>\n\n"`, or `""` when there are none.
pub fn memory_block(passages: &[String]) -> String {
    if passages.is_empty() {
        String::new()
    } else {
        format!("{MEMORIES_HEADER}\n{}\n\n", passages.join("\n"))
    }
}

/// Appends the passages of `more` that `into` does not hold yet.
pub fn merge_passages(into: &mut Vec<String>, more: impl IntoIterator<Item = String>) {
    for p in more {
        if !into.contains(&p) {
            into.push(p);
        }
    }
}

/// The per-turn query: the start of the last prompt and of the last answer.
pub fn turn_query(last_prompt: &str, last_output: &str) -> String {
    format!(
        "{}\n{}",
        crate::api::truncate_chars(last_prompt, 500),
        crate::api::truncate_chars(last_output, 500)
    )
    .trim()
    .to_owned()
}

impl Memory {
    /// Memory of `project_id`.
    pub fn new(client: WorkerApiClient, project_id: Uuid, redactor: Redactor) -> Self {
        Self {
            client,
            project_id,
            redactor,
        }
    }

    /// The passages for `queries`, flattened and de-duplicated in order; `[]` on errors.
    pub async fn retrieve(&self, queries: &[String]) -> Vec<String> {
        let queries: Vec<String> = queries
            .iter()
            .map(|q| self.redactor.redact(q.trim()))
            .filter(|q| !q.is_empty())
            .collect();
        if queries.is_empty() {
            return Vec::new();
        }
        let req = MemoryRetrieveRequest {
            queries,
            num_to_retrieve: Some(PASSAGES_PER_QUERY),
        };
        match self.client.memory_retrieve(self.project_id, &req).await {
            Ok(resp) => {
                let mut out = Vec::new();
                merge_passages(
                    &mut out,
                    resp.results.into_iter().flat_map(|r| r.docs.into_iter()),
                );
                out
            }
            Err(e) => {
                tracing::warn!(error = %e, "memory retrieve failed");
                Vec::new()
            }
        }
    }

    /// Indexes the completion of a ticket; returns whether the API accepted it.
    pub async fn index_completion(&self, title: &str, description: &str, summary: &str) -> bool {
        if summary.trim().is_empty() {
            return false;
        }
        let doc = if description.trim().is_empty() {
            format!("Ticket: {title}. {summary}")
        } else {
            format!("Ticket: {title}. {description}. {summary}")
        };
        match self
            .client
            .memory_index(self.project_id, vec![self.redactor.redact(&doc)])
            .await
        {
            Ok(_) => true,
            Err(e) => {
                tracing::warn!(error = %e, "memory index failed");
                false
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_and_merging() {
        assert_eq!(memory_block(&[]), "");
        assert_eq!(
            memory_block(&["a".into(), "b".into()]),
            "Memories invoked:\na\nb\n\n"
        );
        let mut v = vec!["a".to_owned()];
        merge_passages(&mut v, ["b".to_owned(), "a".to_owned()]);
        assert_eq!(v, ["a", "b"]);
        assert_eq!(turn_query(" p", "o "), "p\no");
    }
}
