//! The Worker conversation as the Director sees it, and token estimates for compaction.

use super::llm::ChatMessage;

/// Prompts sent to the worker and its answers, in order.
#[derive(Debug, Clone, Default)]
pub struct Conversation {
    /// Prompts.
    pub prompts: Vec<String>,
    /// Answers.
    pub outputs: Vec<String>,
}

impl Conversation {
    /// Records one worker turn.
    pub fn push(&mut self, prompt: &str, output: &str) {
        self.prompts.push(prompt.to_owned());
        self.outputs.push(output.to_owned());
    }

    /// Number of turns.
    pub fn len(&self) -> usize {
        self.prompts.len().max(self.outputs.len())
    }

    /// Whether no turn happened.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The last prompt.
    pub fn last_prompt(&self) -> &str {
        self.prompts.last().map(String::as_str).unwrap_or_default()
    }

    /// The last answer.
    pub fn last_output(&self) -> &str {
        self.outputs.last().map(String::as_str).unwrap_or_default()
    }

    /// Turn `i` (1-based) formatted for the Director.
    pub fn format_turn(&self, i: usize) -> String {
        let prompt = self
            .prompts
            .get(i - 1)
            .map(String::as_str)
            .unwrap_or_default();
        let output = self
            .outputs
            .get(i - 1)
            .map(String::as_str)
            .unwrap_or_default();
        format!(
            "### Turn {i} - Prompt to Worker:\n{prompt}\n\n### Turn {i} - Worker response:\n{output}"
        )
    }

    /// Turns `from..=to` (1-based) joined by separators.
    pub fn format_range(&self, from: usize, to: usize) -> String {
        (from..=to)
            .map(|i| self.format_turn(i))
            .collect::<Vec<_>>()
            .join("\n\n---\n\n")
    }

    /// Every turn.
    pub fn format_all(&self) -> String {
        if self.is_empty() {
            String::new()
        } else {
            self.format_range(1, self.len())
        }
    }

    /// The newest turn only.
    pub fn format_latest(&self) -> String {
        if self.is_empty() {
            String::new()
        } else {
            self.format_turn(self.len())
        }
    }
}

/// A rough token count (characters / 4; no tokenizer download needed offline).
pub fn estimate_tokens(text: &str) -> usize {
    text.chars().count().div_ceil(4)
}

/// Tokens of a message list.
pub fn estimate_messages(messages: &[ChatMessage]) -> usize {
    messages
        .iter()
        .map(|m| estimate_tokens(&m.content) + 4)
        .sum()
}

/// A chunk of messages as text for the summariser: `**role**:\ncontent` blocks.
pub fn format_for_summary(messages: &[ChatMessage]) -> String {
    messages
        .iter()
        .map(|m| format!("**{}**:\n{}", m.role, m.content))
        .collect::<Vec<_>>()
        .join("\n\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_turns() {
        let mut c = Conversation::default();
        assert_eq!(c.format_all(), "");
        c.push("p1", "o1");
        c.push("p2", "o2");
        assert_eq!(
            c.format_latest(),
            "### Turn 2 - Prompt to Worker:\np2\n\n### Turn 2 - Worker response:\no2"
        );
        assert!(c.format_all().contains("o1\n\n---\n\n### Turn 2"));
        assert_eq!(estimate_tokens("abcdefgh"), 2);
        assert_eq!(
            format_for_summary(&[ChatMessage::user("hi")]),
            "**user**:\nhi"
        );
    }
}
