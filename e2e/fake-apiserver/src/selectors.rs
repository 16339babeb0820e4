//! Label and field selectors, parsed from their query-string form.

use serde_json::Value;

use crate::{error::ApiError, meta, registry::ResourceType};

#[derive(Debug, Clone, PartialEq)]
enum LabelReq {
    Exists(String),
    NotExists(String),
    Equals(String, String),
    NotEquals(String, String),
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
    Greater(String, i64),
    Less(String, i64),
}

/// A parsed `labelSelector` (all requirements must hold).
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct LabelSelector(Vec<LabelReq>);

impl LabelSelector {
    /// Parse `app=x,tier in (a,b),!legacy`.
    pub fn parse(text: &str) -> Result<Self, ApiError> {
        let mut reqs = Vec::new();
        for term in split_top_level(text) {
            let term = term.trim();
            if term.is_empty() {
                continue;
            }
            reqs.push(parse_label_term(term).ok_or_else(|| {
                ApiError::bad_request(format!(
                    "unable to parse requirement: found '{term}', expected a label selector requirement"
                ))
            })?);
        }
        Ok(Self(reqs))
    }

    pub fn matches(&self, obj: &Value) -> bool {
        self.0.iter().all(|req| {
            let get = |key: &str| meta::label(obj, key);
            match req {
                LabelReq::Exists(k) => get(k).is_some(),
                LabelReq::NotExists(k) => get(k).is_none(),
                LabelReq::Equals(k, v) => get(k) == Some(v.as_str()),
                LabelReq::NotEquals(k, v) => get(k) != Some(v.as_str()),
                LabelReq::In(k, vs) => get(k).is_some_and(|x| vs.iter().any(|v| v == x)),
                LabelReq::NotIn(k, vs) => !get(k).is_some_and(|x| vs.iter().any(|v| v == x)),
                LabelReq::Greater(k, n) => get(k)
                    .and_then(|x| x.parse::<i64>().ok())
                    .is_some_and(|x| x > *n),
                LabelReq::Less(k, n) => get(k)
                    .and_then(|x| x.parse::<i64>().ok())
                    .is_some_and(|x| x < *n),
            }
        })
    }
}

/// Split on commas that are not inside parentheses.
fn split_top_level(text: &str) -> Vec<&str> {
    let mut parts = Vec::new();
    let (mut depth, mut start) = (0i32, 0usize);
    for (i, c) in text.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                parts.push(&text[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&text[start..]);
    parts
}

fn valid_key(key: &str) -> bool {
    !key.is_empty()
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '/'))
}

fn parse_label_term(term: &str) -> Option<LabelReq> {
    if let Some(key) = term.strip_prefix('!') {
        let key = key.trim();
        return valid_key(key).then(|| LabelReq::NotExists(key.into()));
    }
    // Set-based: `key in (a,b)` / `key notin (a,b)`.
    if let Some((key, rest)) = term.split_once(char::is_whitespace) {
        let rest = rest.trim_start();
        let set_op = rest
            .strip_prefix("notin")
            .map(|set| (true, set))
            .or_else(|| rest.strip_prefix("in").map(|set| (false, set)));
        if let Some((negated, set)) = set_op {
            let inner = set.trim().strip_prefix('(')?.strip_suffix(')')?;
            let values: Vec<String> = inner
                .split(',')
                .map(|v| v.trim().to_string())
                .filter(|v| !v.is_empty())
                .collect();
            if !valid_key(key) {
                return None;
            }
            return Some(if negated {
                LabelReq::NotIn(key.into(), values)
            } else {
                LabelReq::In(key.into(), values)
            });
        }
    }
    for (op, len) in [("!=", 2), ("==", 2), ("=", 1), (">", 1), ("<", 1)] {
        if let Some(pos) = term.find(op) {
            let key = term[..pos].trim();
            let value = term[pos + len..].trim();
            if !valid_key(key) {
                return None;
            }
            return Some(match op {
                "!=" => LabelReq::NotEquals(key.into(), value.into()),
                "==" | "=" => LabelReq::Equals(key.into(), value.into()),
                ">" => LabelReq::Greater(key.into(), value.parse().ok()?),
                _ => LabelReq::Less(key.into(), value.parse().ok()?),
            });
        }
    }
    valid_key(term).then(|| LabelReq::Exists(term.into()))
}

/// A parsed `fieldSelector` (`field=value`, `field==value`, `field!=value`, comma-separated).
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct FieldSelector(Vec<(String, bool, String)>);

impl FieldSelector {
    /// Parse and check every field is selectable for `rt`, as a real server does.
    pub fn parse(text: &str, rt: &ResourceType) -> Result<Self, ApiError> {
        let mut reqs = Vec::new();
        for term in text.split(',').map(str::trim).filter(|t| !t.is_empty()) {
            let (field, equal, value) = if let Some((f, v)) = term.split_once("!=") {
                (f, false, v)
            } else if let Some((f, v)) = term.split_once("==") {
                (f, true, v)
            } else if let Some((f, v)) = term.split_once('=') {
                (f, true, v)
            } else {
                return Err(ApiError::bad_request(format!(
                    "invalid selector: '{text}'; can't understand '{term}'"
                )));
            };
            let field = field.trim();
            let supported = matches!(field, "metadata.name" | "metadata.namespace")
                || rt.selectable_fields.iter().any(|f| f == field);
            if !supported {
                return Err(ApiError::bad_request(format!(
                    "field label not supported: {field}"
                )));
            }
            reqs.push((field.to_string(), equal, value.trim().to_string()));
        }
        Ok(Self(reqs))
    }

    pub fn matches(&self, obj: &Value) -> bool {
        self.0.iter().all(|(field, equal, value)| {
            let pointer = format!("/{}", field.replace('.', "/"));
            let actual = match obj.pointer(&pointer) {
                None | Some(Value::Null) => String::new(),
                Some(Value::String(s)) => s.clone(),
                Some(other) => other.to_string(),
            };
            (actual == *value) == *equal
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn obj(labels: Value) -> Value {
        json!({"metadata": {"name": "x", "labels": labels}})
    }

    #[test]
    fn label_selectors() {
        let o = obj(json!({"app": "x", "tier": "a", "n": "5"}));
        let yes = |s: &str| LabelSelector::parse(s).unwrap().matches(&o);
        assert!(yes("app=x"));
        assert!(yes("app==x,tier in (a, b),!legacy"));
        assert!(!yes("app!=x"));
        assert!(yes("other!=x"));
        assert!(yes("tier notin (b,c)"));
        assert!(!yes("tier notin (a)"));
        assert!(yes("app"));
        assert!(!yes("legacy"));
        assert!(yes("n>4"));
        assert!(!yes("n<5"));
        assert!(yes(""));
        assert!(LabelSelector::parse("a in b").is_err());
    }

    #[test]
    fn field_selectors() {
        let rt = crate::registry::Registry::builtin()
            .find("", "v1", "pods")
            .unwrap();
        let pod =
            json!({"metadata": {"name": "p", "namespace": "ns"}, "status": {"phase": "Running"}});
        let yes = |s: &str| FieldSelector::parse(s, &rt).unwrap().matches(&pod);
        assert!(yes("metadata.name=p,status.phase==Running"));
        assert!(yes("status.phase!=Pending"));
        assert!(yes("spec.nodeName="));
        assert!(!yes("metadata.namespace=other"));
        assert!(FieldSelector::parse("spec.foo=x", &rt).is_err());
    }
}
