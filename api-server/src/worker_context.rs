//! Builds the worker-context document (reference §2.6): the project, the current ticket with
//! its labelled associations, the graph with edge labels, the part of the graph relevant to the
//! ticket, notes, recent tickets per column and the agent settings.

use std::collections::{BTreeMap, HashMap, HashSet};

use serde_json::Value;
use terarchitect_worker_api::{
    ContextNote, CurrentTicket, GraphView, TicketSummary, WorkerContext,
};

use crate::db::{NoteRow, ProjectRow, TicketRow, TicketSummaryRow};

/// The "all nodes / all edges" marker of an association list.
pub const ALL_MARKER: &str = "*";
/// How many backlog tickets the context lists.
pub const BACKLOG_LIMIT: usize = 10;
/// How many in-progress and done tickets the context lists.
pub const OTHER_COLUMN_LIMIT: usize = 5;
/// How many rows to read per column (one more than listed, as the original does).
pub const COLUMN_QUERY_LIMIT: i64 = 6;

/// Everything the builder needs, loaded by the caller.
pub struct ContextInputs<'a> {
    pub project: &'a ProjectRow,
    pub ticket: &'a TicketRow,
    /// The graph's nodes and edges, or None when the project has no graph row.
    pub graph: Option<(&'a Value, &'a Value)>,
    pub notes: &'a [NoteRow],
    /// Most recently updated first.
    pub backlog: Vec<TicketSummaryRow>,
    /// Most recently updated first; up to [`COLUMN_QUERY_LIMIT`].
    pub in_progress: Vec<TicketSummaryRow>,
    /// Most recently updated first.
    pub done: Vec<TicketSummaryRow>,
    pub agent_settings: BTreeMap<String, String>,
}

fn as_id(v: Option<&Value>) -> Option<String> {
    match v? {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

fn field<'v>(item: &'v Value, key: &str) -> Option<&'v Value> {
    item.get(key)
        .filter(|v| !v.is_null())
        .or_else(|| item.get("data")?.get(key).filter(|v| !v.is_null()))
}

/// A node's or edge's id: `id`, else `data.id`.
fn item_id(item: &Value) -> Option<String> {
    as_id(field(item, "id"))
}

/// A node's label: `data.label`, else `label`.
fn node_label(node: &Value) -> Option<String> {
    let data_label = node.get("data").and_then(|d| d.get("label"));
    as_id(
        data_label
            .filter(|v| !v.is_null())
            .or_else(|| node.get("label")),
    )
}

fn edge_end(edge: &Value, key: &str) -> Option<String> {
    as_id(field(edge, key))
}

/// A list of ids from a stored JSON value; anything that is not a list reads as empty.
fn id_list(v: Option<&Value>) -> Vec<String> {
    match v {
        Some(Value::Array(items)) => items.iter().filter_map(|i| as_id(Some(i))).collect(),
        _ => Vec::new(),
    }
}

/// Replaces a list that is exactly `["*"]` by every id of `items`.
fn expand(ids: Vec<String>, items: &[Value]) -> Vec<String> {
    if ids.len() == 1 && ids[0] == ALL_MARKER {
        items.iter().filter_map(item_id).collect()
    } else {
        ids
    }
}

/// Labels of nodes by id: the node's label, falling back to its id.
fn labels_by_id<'a>(nodes: impl Iterator<Item = &'a Value>) -> HashMap<String, String> {
    nodes
        .filter_map(|n| {
            let id = item_id(n)?;
            let label = node_label(n).unwrap_or_else(|| id.clone());
            Some((id, label))
        })
        .collect()
}

/// Copies an edge and adds `source_label`/`target_label` from `labels` (raw id when absent).
fn with_end_labels(edge: &Value, labels: &HashMap<String, String>) -> (Value, String, String) {
    let label_of = |key: &str| {
        let raw = edge_end(edge, key).unwrap_or_default();
        labels.get(&raw).cloned().unwrap_or(raw)
    };
    let (source, target) = (label_of("source"), label_of("target"));
    let mut copy = edge.clone();
    if let Value::Object(obj) = &mut copy {
        obj.insert("source_label".into(), Value::String(source.clone()));
        obj.insert("target_label".into(), Value::String(target.clone()));
    }
    (copy, source, target)
}

fn summary(row: &TicketSummaryRow) -> TicketSummary {
    TicketSummary {
        id: row.id,
        title: row.title.clone(),
        description: row.description.clone(),
        priority: row.priority.clone(),
        column_id: row.column_id.clone(),
        status: row.status.clone(),
        current_ticket: None,
        associated_node_ids: None,
    }
}

/// Builds the worker context.
pub fn build(inputs: ContextInputs<'_>) -> WorkerContext {
    let ContextInputs {
        project,
        ticket,
        graph,
        notes,
        backlog,
        in_progress,
        done,
        agent_settings,
    } = inputs;
    let empty = Vec::new();
    let (nodes, edges): (&[Value], &[Value]) = match graph {
        Some((n, e)) => (
            n.as_array().unwrap_or(&empty),
            e.as_array().unwrap_or(&empty),
        ),
        None => (&[], &[]),
    };

    // The whole graph, every edge with labels from the whole graph.
    let full_labels = labels_by_id(nodes.iter());
    let full_edges: Vec<(Value, String, String)> = edges
        .iter()
        .map(|e| with_end_labels(e, &full_labels))
        .collect();

    // Expansion of the "*" marker, independently for nodes and edges.
    let stored_node_ids = ticket.associated_node_ids.as_ref().map(|j| &j.0);
    let node_ids = expand(id_list(stored_node_ids), nodes);
    let edge_ids = expand(
        id_list(ticket.associated_edge_ids.as_ref().map(|j| &j.0)),
        edges,
    );

    // Selection and enrichment of the relevant part, labelled from the relevant nodes only.
    let relevant = if node_ids.is_empty() && edge_ids.is_empty() {
        GraphView::default()
    } else {
        let node_set: HashSet<&str> = node_ids.iter().map(String::as_str).collect();
        let edge_set: HashSet<&str> = edge_ids.iter().map(String::as_str).collect();
        let relevant_nodes: Vec<&Value> = nodes
            .iter()
            .filter(|n| item_id(n).is_some_and(|id| node_set.contains(id.as_str())))
            .collect();
        let relevant_labels = labels_by_id(relevant_nodes.iter().copied());
        let out_nodes = relevant_nodes
            .iter()
            .map(|n| {
                let id = item_id(n).unwrap_or_default();
                let label = node_label(n).unwrap_or_else(|| id.clone());
                let mut copy = (*n).clone();
                if let Value::Object(obj) = &mut copy {
                    obj.insert(
                        "label_and_id".into(),
                        Value::String(format!("{label}: {id}")),
                    );
                }
                copy
            })
            .collect();
        let out_edges = edges
            .iter()
            .filter(|e| {
                let hit = |v: Option<String>, set: &HashSet<&str>| {
                    v.is_some_and(|s| set.contains(s.as_str()))
                };
                hit(item_id(e), &edge_set)
                    || hit(edge_end(e, "source"), &node_set)
                    || hit(edge_end(e, "target"), &node_set)
            })
            .map(|e| {
                let (mut copy, source, target) = with_end_labels(e, &relevant_labels);
                let id = item_id(e).unwrap_or_default();
                if let Value::Object(obj) = &mut copy {
                    obj.insert(
                        "label_and_id".into(),
                        Value::String(format!("{source} \u{2192} {target}: {id}")),
                    );
                }
                copy
            })
            .collect();
        GraphView {
            nodes: out_nodes,
            edges: out_edges,
        }
    };

    // Labelled association lists, from the expanded ids and the whole graph.
    let nodes_labeled = node_ids
        .iter()
        .map(|id| format!("{}: {id}", full_labels.get(id).unwrap_or(id)))
        .collect();
    let edge_labels: HashMap<String, (&str, &str)> = edges
        .iter()
        .zip(&full_edges)
        .filter_map(|(raw, (_, s, t))| Some((item_id(raw)?, (s.as_str(), t.as_str()))))
        .collect();
    let edges_labeled = edge_ids
        .iter()
        .map(|id| match edge_labels.get(id) {
            Some((s, t)) => format!("{s} \u{2192} {t}: {id}"),
            None => format!("{id}: {id}"),
        })
        .collect();

    let raw_node_ids = stored_node_ids
        .cloned()
        .unwrap_or_else(|| Value::Array(Vec::new()));
    let current_ticket = CurrentTicket {
        id: ticket.id,
        title: ticket.title.clone(),
        description: ticket.description.clone(),
        priority: ticket.priority.clone(),
        column_id: ticket.column_id.clone(),
        status: ticket.status.clone(),
        current_ticket: true,
        associated_node_ids: raw_node_ids.clone(),
        associated_nodes_labeled: nodes_labeled,
        associated_edges_labeled: edges_labeled,
    };

    // In progress: the current ticket first when it is among the most recent, then the rest.
    let mut in_progress_list: Vec<TicketSummary> = Vec::with_capacity(COLUMN_QUERY_LIMIT as usize);
    if in_progress.iter().any(|t| t.id == ticket.id) {
        let mut first = summary(&TicketSummaryRow {
            id: ticket.id,
            title: ticket.title.clone(),
            description: ticket.description.clone(),
            priority: ticket.priority.clone(),
            column_id: ticket.column_id.clone(),
            status: ticket.status.clone(),
            associated_node_ids: None,
        });
        first.current_ticket = Some(true);
        first.associated_node_ids = Some(raw_node_ids);
        in_progress_list.push(first);
    }
    in_progress_list.extend(
        in_progress
            .iter()
            .filter(|t| t.id != ticket.id)
            .map(summary),
    );
    in_progress_list.truncate(OTHER_COLUMN_LIMIT);

    let full_graph = graph.map(|_| GraphView {
        nodes: nodes.to_vec(),
        edges: full_edges.into_iter().map(|(e, _, _)| e).collect(),
    });

    WorkerContext {
        project_name: project.name.clone(),
        project_description: project.description.clone(),
        github_url: project.github_url.clone(),
        current_ticket,
        graph: full_graph,
        graph_relevant_to_current_ticket: relevant,
        notes: notes
            .iter()
            .map(|n| ContextNote {
                title: n.title.clone(),
                content: n.content.clone(),
                node_id: n.node_id.clone(),
            })
            .collect(),
        backlog_tickets: backlog.iter().take(BACKLOG_LIMIT).map(summary).collect(),
        in_progress_tickets: in_progress_list,
        done_tickets: done.iter().take(OTHER_COLUMN_LIMIT).map(summary).collect(),
        repo_url: project.github_url.clone().unwrap_or_default(),
        project_id: project.id.to_string(),
        agent_settings,
    }
}

/// Empties every secret value of `agent_settings` (for servers configured to keep secrets out of
/// worker-context; agents then take them from their environment).
pub fn redact_secrets(settings: &mut BTreeMap<String, String>) {
    for (key, value) in settings.iter_mut() {
        if crate::settings::keys::is_sensitive(key) {
            value.clear();
        }
    }
}

/// Splits a list given as JSON array or comma-separated string into trimmed, de-duplicated
/// ids in first-seen order (the notes' id-list rule).
pub fn normalise_id_list(v: &Value) -> Option<Vec<String>> {
    let parts: Vec<String> = match v {
        Value::Null => Vec::new(),
        Value::String(s) => s.split(',').map(str::to_owned).collect(),
        Value::Array(items) => items
            .iter()
            .map(|i| match i {
                Value::String(s) => Some(s.clone()),
                Value::Number(n) => Some(n.to_string()),
                _ => None,
            })
            .collect::<Option<_>>()?,
        _ => return None,
    };
    let mut seen = HashSet::new();
    Some(
        parts
            .into_iter()
            .map(|p| p.trim().to_owned())
            .filter(|p| !p.is_empty() && seen.insert(p.clone()))
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Utc;
    use serde_json::json;
    use sqlx::types::Json;
    use uuid::Uuid;

    fn project() -> ProjectRow {
        ProjectRow {
            id: Uuid::new_v4(),
            name: "P".into(),
            description: Some("d".into()),
            project_path: None,
            github_url: Some("https://github.com/o/r".into()),
            execution_mode: "docker".into(),
            revision: 0,
            created_at: Utc::now(),
            updated_at: Utc::now(),
        }
    }

    fn ticket(nodes: Value, edges: Value) -> TicketRow {
        TicketRow {
            id: Uuid::new_v4(),
            project_id: Uuid::nil(),
            column_id: "in_progress".into(),
            title: "T".into(),
            description: None,
            associated_node_ids: Some(Json(nodes)),
            associated_edge_ids: Some(Json(edges)),
            priority: Some("medium".into()),
            status: Some("todo".into()),
            cancel_requested: false,
            created_at: Utc::now(),
            updated_at: Utc::now(),
            pr_url: None,
            pr_number: None,
        }
    }

    fn graph() -> (Value, Value) {
        (
            json!([
                {"id": "a", "type": "service", "data": {"label": "API"}},
                {"id": "b", "data": {"label": "DB"}},
                {"id": "c", "label": "Cache"}
            ]),
            json!([
                {"id": "e1", "source": "a", "target": "b", "data": {"label": "reads"}},
                {"id": "e2", "source": "b", "target": "c"},
                {"id": "e3", "data": {"source": "c", "target": "zz"}}
            ]),
        )
    }

    fn build_for(t: &TicketRow, g: Option<(&Value, &Value)>) -> WorkerContext {
        let p = project();
        build(ContextInputs {
            project: &p,
            ticket: t,
            graph: g,
            notes: &[],
            backlog: vec![],
            in_progress: vec![],
            done: vec![],
            agent_settings: BTreeMap::new(),
        })
    }

    #[test]
    fn relevant_graph_uses_relevant_labels_and_full_labels_elsewhere() {
        let (n, e) = graph();
        let t = ticket(json!(["a"]), json!([]));
        let ctx = build_for(&t, Some((&n, &e)));
        let rel = &ctx.graph_relevant_to_current_ticket;
        assert_eq!(rel.nodes.len(), 1);
        assert_eq!(rel.nodes[0]["label_and_id"], "API: a");
        // e1 touches a; its target b is outside the relevant set, so it shows the raw id.
        assert_eq!(rel.edges.len(), 1);
        assert_eq!(rel.edges[0]["source_label"], "API");
        assert_eq!(rel.edges[0]["target_label"], "b");
        assert_eq!(rel.edges[0]["label_and_id"], "API \u{2192} b: e1");
        assert_eq!(ctx.current_ticket.associated_nodes_labeled, vec!["API: a"]);
        // The full graph labels every edge from the whole graph.
        let full = ctx.graph.unwrap();
        assert_eq!(full.edges[0]["target_label"], "DB");
        assert_eq!(full.edges[2]["source_label"], "Cache");
        assert_eq!(full.edges[2]["target_label"], "zz");
        assert!(full.nodes[0].get("label_and_id").is_none());
    }

    #[test]
    fn star_marker_expands_independently() {
        let (n, e) = graph();
        let t = ticket(json!(["*"]), json!(["e2", "missing"]));
        let ctx = build_for(&t, Some((&n, &e)));
        assert_eq!(
            ctx.current_ticket.associated_nodes_labeled,
            vec!["API: a", "DB: b", "Cache: c"]
        );
        assert_eq!(
            ctx.current_ticket.associated_edges_labeled,
            vec!["DB \u{2192} Cache: e2", "missing: missing"]
        );
        assert_eq!(ctx.graph_relevant_to_current_ticket.nodes.len(), 3);
        assert_eq!(ctx.graph_relevant_to_current_ticket.edges.len(), 3);
        assert_eq!(ctx.current_ticket.associated_node_ids, json!(["*"]));
        // "*" among other ids is a literal id.
        let t2 = ticket(json!(["*", "a"]), json!([]));
        let ctx2 = build_for(&t2, Some((&n, &e)));
        assert_eq!(
            ctx2.current_ticket.associated_nodes_labeled,
            vec!["*: *", "API: a"]
        );
    }

    #[test]
    fn no_associations_or_no_graph_give_empty_relevant_part() {
        let (n, e) = graph();
        let t = ticket(json!([]), json!([]));
        let ctx = build_for(&t, Some((&n, &e)));
        assert!(ctx.graph_relevant_to_current_ticket.nodes.is_empty());
        assert!(ctx.graph_relevant_to_current_ticket.edges.is_empty());
        let ctx = build_for(&ticket(json!(["a"]), json!([])), None);
        assert!(ctx.graph.is_none());
        assert_eq!(ctx.current_ticket.associated_nodes_labeled, vec!["a: a"]);
        let v = serde_json::to_value(&ctx).unwrap();
        assert_eq!(v["graph"], Value::Null);
        assert_eq!(v["current_ticket"]["_current_ticket"], true);
    }

    #[test]
    fn in_progress_puts_current_first_and_truncates() {
        let (n, e) = graph();
        let p = project();
        let t = ticket(json!(["a"]), json!([]));
        let mk = |id: Uuid| TicketSummaryRow {
            id,
            title: "x".into(),
            description: None,
            priority: None,
            column_id: "in_progress".into(),
            status: None,
            associated_node_ids: None,
        };
        let mut rows: Vec<_> = (0..5).map(|_| mk(Uuid::new_v4())).collect();
        rows.push(mk(t.id));
        let ctx = build(ContextInputs {
            project: &p,
            ticket: &t,
            graph: Some((&n, &e)),
            notes: &[],
            backlog: (0..12).map(|_| mk(Uuid::new_v4())).collect(),
            in_progress: rows,
            done: vec![],
            agent_settings: BTreeMap::new(),
        });
        assert_eq!(ctx.in_progress_tickets.len(), 5);
        assert_eq!(ctx.in_progress_tickets[0].id, t.id);
        assert_eq!(ctx.in_progress_tickets[0].current_ticket, Some(true));
        assert_eq!(
            ctx.in_progress_tickets[0].associated_node_ids,
            Some(json!(["a"]))
        );
        assert_eq!(ctx.in_progress_tickets[1].current_ticket, None);
        assert_eq!(ctx.backlog_tickets.len(), 10);
        let v = serde_json::to_value(&ctx.in_progress_tickets[1]).unwrap();
        assert!(v.get("_current_ticket").is_none());
    }

    #[test]
    fn id_lists_normalise() {
        assert_eq!(
            normalise_id_list(&json!(" a, b,a,,c ")).unwrap(),
            vec!["a", "b", "c"]
        );
        assert_eq!(
            normalise_id_list(&json!(["x", " y", "x"])).unwrap(),
            vec!["x", "y"]
        );
        assert_eq!(
            normalise_id_list(&Value::Null).unwrap(),
            Vec::<String>::new()
        );
        assert!(normalise_id_list(&json!(5)).is_none());
        assert!(normalise_id_list(&json!([{"a": 1}])).is_none());
    }
}
