//! The review page's view of a pull request (`GET …/tickets/<tid>/review`): the summary from
//! the PR body, short commits, test files with the test names found in their patches, and the
//! conversation.

use std::collections::HashSet;

use serde_json::{Value, json};

/// The heading whose section is the summary.
pub const ACCOMPLISHED_HEADING: &str = "## What was accomplished";
/// Longest test name taken from a `it|test|describe("…")` call.
const MAX_TEST_NAME: usize = 200;

/// The summary: the text after the last `## What was accomplished`, cut at the first `---`;
/// else the whole body, or `No description.` when it is empty.
pub fn summary(body: Option<&str>) -> String {
    let body = body.unwrap_or_default();
    if let Some(idx) = body.rfind(ACCOMPLISHED_HEADING) {
        let rest = &body[idx + ACCOMPLISHED_HEADING.len()..];
        let cut = rest.find("---").map_or(rest, |i| &rest[..i]);
        return cut.trim().to_owned();
    }
    if body.trim().is_empty() {
        "No description.".to_owned()
    } else {
        body.trim().to_owned()
    }
}

/// `{sha (7 characters), message (first line)}` of a commit.
pub fn commit(c: &Value) -> Value {
    let sha: String = c
        .get("sha")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .chars()
        .take(7)
        .collect();
    let message = c
        .pointer("/commit/message")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .lines()
        .next()
        .unwrap_or_default();
    json!({"sha": sha, "message": message})
}

/// `{author (login or "unknown"), body, created_at}` of a comment.
pub fn comment(c: &Value) -> Value {
    json!({
        "author": c.pointer("/user/login").and_then(Value::as_str).unwrap_or("unknown"),
        "body": c.get("body").and_then(Value::as_str).unwrap_or_default(),
        "created_at": c.get("created_at").cloned().unwrap_or(Value::Null),
    })
}

/// Whether a path looks like a test file (the original's heuristics).
pub fn is_test_file(path: &str) -> bool {
    let p = path.to_ascii_lowercase();
    let name = p.rsplit('/').next().unwrap_or(&p);
    if name == "__init__.py" {
        return false;
    }
    p.contains("__tests__")
        || p.contains("/tests/")
        || p.starts_with("tests/")
        || name.ends_with("_test.py")
        || (name.starts_with("test_") && name.ends_with(".py"))
        || name.ends_with("_test.go")
        || name.ends_with("_test.js")
        || name.contains(".test.")
        || name.contains(".spec.")
}

/// Test names in a patch: quoted names of `it(`, `test(` and `describe(` calls, then added
/// `def test_xxx(` lines (reported with spaces for underscores); each name once.
pub fn test_names(patch: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut seen = HashSet::new();
    let mut push = |n: String| {
        if seen.insert(n.clone()) {
            names.push(n);
        }
    };
    for n in call_names(patch) {
        push(n);
    }
    for line in patch.lines() {
        let Some(rest) = line.strip_prefix('+') else {
            continue;
        };
        let rest = rest.trim_start();
        let Some(after) = rest.strip_prefix("def") else {
            continue;
        };
        if !after.starts_with(char::is_whitespace) {
            continue;
        }
        let after = after.trim_start();
        let ident: String = after
            .chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_')
            .collect();
        let tail = after[ident.len()..].trim_start();
        if ident.starts_with("test_") && tail.starts_with('(') {
            push(ident.replace('_', " "));
        }
    }
    names
}

/// Names of `it("…")`, `test('…')`, `describe(`…`)` calls.
fn call_names(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    for word in ["it", "test", "describe"] {
        let mut from = 0;
        while let Some(pos) = text[from..].find(word) {
            let start = from + pos;
            from = start + word.len();
            let before_ok = text[..start]
                .chars()
                .next_back()
                .is_none_or(|c| !(c.is_alphanumeric() || c == '_' || c == '.'));
            if !before_ok {
                continue;
            }
            let rest = text[from..].trim_start_matches([' ', '\t']);
            let Some(rest) = rest.strip_prefix('(') else {
                continue;
            };
            let rest = rest.trim_start_matches([' ', '\t']);
            let Some(quote) = rest
                .chars()
                .next()
                .filter(|c| matches!(c, '"' | '\'' | '`'))
            else {
                continue;
            };
            let body = &rest[1..];
            if let Some(end) = body.find(quote) {
                let name = &body[..end];
                if !name.is_empty()
                    && name.chars().count() <= MAX_TEST_NAME
                    && !name.contains(['\n', '"', '\''])
                {
                    out.push((start, name.to_owned()));
                }
            }
        }
    }
    out.sort_by_key(|(pos, _)| *pos);
    out.into_iter().map(|(_, n)| n).collect()
}

/// `[{path, test_names}]` of the test files among a pull request's files, sorted by lower-cased
/// path.
pub fn test_files(files: &[Value]) -> Vec<Value> {
    let mut tests: Vec<(String, Vec<String>)> = files
        .iter()
        .filter_map(|f| {
            let path = f.get("filename").and_then(Value::as_str)?;
            is_test_file(path).then(|| {
                let patch = f.get("patch").and_then(Value::as_str).unwrap_or_default();
                (path.to_owned(), test_names(patch))
            })
        })
        .collect();
    tests.sort_by_key(|(p, _)| p.to_lowercase());
    tests
        .into_iter()
        .map(|(path, names)| json!({"path": path, "test_names": names}))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summaries() {
        assert_eq!(summary(None), "No description.");
        assert_eq!(summary(Some("  ")), "No description.");
        assert_eq!(summary(Some("Just text")), "Just text");
        assert_eq!(
            summary(Some(
                "Intro\n## What was accomplished\nold\n## What was accomplished\nAdded greet.\n---\nfooter"
            )),
            "Added greet."
        );
    }

    #[test]
    fn test_file_heuristics() {
        for p in [
            "src/__tests__/a.js",
            "pkg/tests/x.rs",
            "a_test.py",
            "test_a.py",
            "x_test.go",
            "y_test.js",
            "b.test.ts",
            "c.spec.js",
        ] {
            assert!(is_test_file(p), "{p}");
        }
        for p in [
            "src/main.rs",
            "tests/__init__.py",
            "testing.py",
            "contest.py",
        ] {
            assert!(!is_test_file(p), "{p}");
        }
    }

    #[test]
    fn names_from_patches() {
        let patch = "+describe('greeter', () => {\n+  it(\"says hi\", () => {});\n+  test(`says bye`, () => {});\n+  split('x');\n+def test_greets_by_name():\n+def helper():\n def test_old_one():\n+  it(\"says hi\", () => {});";
        assert_eq!(
            test_names(patch),
            ["greeter", "says hi", "says bye", "test greets by name"]
        );
    }

    #[test]
    fn commits_and_files() {
        let c = commit(&json!({"sha": "abcdef1234", "commit": {"message": "First line\n\nbody"}}));
        assert_eq!(c, json!({"sha": "abcdef1", "message": "First line"}));
        let files = test_files(&[
            json!({"filename": "src/lib.rs", "patch": ""}),
            json!({"filename": "Tests/b_test.py", "patch": "+def test_b():"}),
            json!({"filename": "a.spec.js", "patch": "+it('a', f)"}),
        ]);
        assert_eq!(
            files,
            [
                json!({"path": "a.spec.js", "test_names": ["a"]}),
                json!({"path": "Tests/b_test.py", "test_names": ["test b"]}),
            ]
        );
    }
}
