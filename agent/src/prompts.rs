//! The prompts, kept as data files under `agent/prompts/` and embedded at build time, and the
//! magic strings other components match on (behaviour reference, Appendix B).

/// Closing line of every execution-phase Director message. Its lower-case form in a worker
/// prompt also disables the "work slowly" prefix.
pub const ASSESS_LINE: &str = "Assess: Is the ticket complete? Respond in JSON only.";
/// Header of the block of retrieved memory passages.
pub const MEMORIES_HEADER: &str = "Memories invoked:";
/// Marker of a summarised (compacted) part of the Director conversation.
pub const COMPACTION_MARKER: &str = "Previous conversation (summarized):";
/// Signature appended to every pull-request comment the agent posts.
pub const BOT_SIGNATURE: &str = "<!-- terarchitect-bot -->";
/// Heading of the pull-request body section the api-server parses.
pub const ACCOMPLISHED_HEADING: &str = "## What was accomplished";
/// Title (case-insensitive, trimmed) of the project setup ticket.
pub const SETUP_TICKET_TITLE: &str = "project setup";
/// OpenCode provider id used when `OPENCODE_PROVIDER_ID` is not set.
pub const DEFAULT_PROVIDER_ID: &str = "terarchitect-proxy";

/// The Director's persona and answer format.
pub const DIRECTOR_SYSTEM: &str = include_str!("../prompts/director_system.md");
/// Appended to the system prompt during plan review.
pub const PLAN_REVIEW_INSTRUCTIONS: &str = include_str!("../prompts/plan_review_instructions.md");
/// Closing request of a plan-review message.
pub const PLAN_REVIEW_REQUEST: &str = include_str!("../prompts/plan_review_request.md");
/// Director hint for the setup ticket.
pub const SETUP_HINT: &str = include_str!("../prompts/setup_hint.md");
/// Director hint for review jobs.
pub const REVIEW_HINT: &str = include_str!("../prompts/review_hint.md");
/// The approved-plan block (`{plan}`).
pub const PLAN_BLOCK: &str = include_str!("../prompts/plan_block.md");
/// Re-ask after an unusable Director answer (`{error}`).
pub const JSON_RETRY: &str = include_str!("../prompts/json_retry.md");
/// Worker: the setup ticket.
pub const WORKER_SETUP: &str = include_str!("../prompts/worker_setup.md");
/// Worker: research.
pub const WORKER_RESEARCH: &str = include_str!("../prompts/worker_research.md");
/// Worker: write the plan (`{task_plan_path}`).
pub const WORKER_PLAN: &str = include_str!("../prompts/worker_plan.md");
/// Worker: checklist of the approved plan when the plan file is missing.
pub const WORKER_CHECKLIST: &str = include_str!("../prompts/worker_checklist.md");
/// Worker: the first execution turn when the Director gives no instruction.
pub const WORKER_FIRST_EXECUTION: &str = include_str!("../prompts/worker_first_execution.md");
/// Worker: the "work slowly" prefix.
pub const WORKER_SLOWLY: &str = include_str!("../prompts/worker_slowly.md");
/// Worker: address a review comment.
pub const WORKER_REVIEW: &str = include_str!("../prompts/worker_review.md");
/// Commit-message writer.
pub const COMMIT_MESSAGE_SYSTEM: &str = include_str!("../prompts/commit_message_system.md");
/// Conversation summariser.
pub const SUMMARIZER_SYSTEM: &str = include_str!("../prompts/summarizer_system.md");
/// Pull-request description writer (system).
pub const PR_DESCRIPTION_SYSTEM: &str = include_str!("../prompts/pr_description_system.md");
/// Pull-request description request (`{title}`, `{description}`, `{summary}`).
pub const PR_DESCRIPTION_USER: &str = include_str!("../prompts/pr_description_user.md");
/// Review reply request (`{comment}`, `{summary}`).
pub const REVIEW_REPLY: &str = include_str!("../prompts/review_reply.md");

/// Fills `{name}` placeholders of a template.
pub fn fill(template: &str, values: &[(&str, &str)]) -> String {
    let mut out = template.trim().to_owned();
    for (name, value) in values {
        out = out.replace(&format!("{{{name}}}"), value);
    }
    out
}

/// The plan file path, relative to the repository root: `plan/<ticket_id>_task_plan.md`.
pub fn plan_file_relative(ticket_id: &uuid::Uuid) -> String {
    format!("plan/{ticket_id}_task_plan.md")
}

/// Prepends the "work slowly" instruction unless the prompt already asks for it.
pub fn with_slowly_prefix(prompt: &str) -> String {
    let lower = prompt.to_lowercase();
    if lower.contains("assess: is the ticket complete")
        || lower.contains("one file at a time")
        || lower.contains("slowly")
    {
        prompt.to_owned()
    } else {
        format!("{}\n\n{}", WORKER_SLOWLY.trim(), prompt)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prompts_are_present_and_placeholders_fill() {
        for p in [
            DIRECTOR_SYSTEM,
            PLAN_REVIEW_INSTRUCTIONS,
            WORKER_RESEARCH,
            WORKER_REVIEW,
            WORKER_SLOWLY,
        ] {
            assert!(!p.trim().is_empty());
        }
        assert!(WORKER_PLAN.contains("{task_plan_path}"));
        let filled = fill(WORKER_PLAN, &[("task_plan_path", "/r/plan/x_task_plan.md")]);
        assert!(filled.contains("/r/plan/x_task_plan.md") && !filled.contains('{'));
        assert!(DIRECTOR_SYSTEM.contains(MEMORIES_HEADER));
    }

    #[test]
    fn slowly_prefix_rule() {
        let p = with_slowly_prefix("Add the test");
        assert!(p.starts_with(WORKER_SLOWLY.trim()) && p.ends_with("Add the test"));
        assert_eq!(with_slowly_prefix("Go SLOWLY"), "Go SLOWLY");
        assert_eq!(
            with_slowly_prefix("x assess: is the ticket complete y"),
            "x assess: is the ticket complete y"
        );
        assert_eq!(with_slowly_prefix(&p), p);
    }
}
