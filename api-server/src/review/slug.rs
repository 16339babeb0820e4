//! The `owner/name` of a project's repository URL.
//!
//! Accepted: `https://github.com/owner/name[.git][/...]` and any other HTTP(S) host (GitHub
//! Enterprise; the first two path segments, as the original), `git@host:owner/name.git`,
//! `ssh://git@host/owner/name.git`, and `file://…/owner/name.git` (the last two segments: local
//! mirrors in tests). Unlike the original, a trailing `.git` is removed and segments must be
//! valid GitHub names.

/// The repository slug, or None when the URL names no repository.
pub fn repo_slug(github_url: &str) -> Option<String> {
    let url = github_url.trim().trim_end_matches('/');
    if url.is_empty() {
        return None;
    }
    let segments: Vec<&str> = if let Some(rest) = url.strip_prefix("file://") {
        let all: Vec<&str> = rest.split('/').filter(|s| !s.is_empty()).collect();
        all[all.len().saturating_sub(2)..].to_vec()
    } else if let Some((_, rest)) = url.split_once("://") {
        let path = rest.split_once('/').map_or("", |(_, p)| p);
        let path = path.split(['?', '#']).next().unwrap_or_default();
        path.split('/').filter(|s| !s.is_empty()).take(2).collect()
    } else if let Some((host, path)) = url.split_once(':') {
        // scp-like `git@github.com:owner/name.git`
        if !host.contains('@') && !host.contains('.') {
            return None;
        }
        path.split('/').filter(|s| !s.is_empty()).take(2).collect()
    } else if let Some(idx) = url.find("github.com/") {
        // `github.com/owner/name` without a scheme
        url[idx + "github.com/".len()..]
            .split('/')
            .filter(|s| !s.is_empty())
            .take(2)
            .collect()
    } else {
        return None;
    };
    let [owner, name] = segments.as_slice() else {
        return None;
    };
    let name = name.strip_suffix(".git").unwrap_or(name);
    (valid(owner) && valid(name)).then(|| format!("{owner}/{name}"))
}

fn valid(segment: &str) -> bool {
    !segment.is_empty()
        && segment != "."
        && segment != ".."
        && segment
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

#[cfg(test)]
mod tests {
    use super::repo_slug;

    #[test]
    fn slugs() {
        for (url, slug) in [
            ("https://github.com/acme/shop", Some("acme/shop")),
            ("https://github.com/acme/shop.git", Some("acme/shop")),
            (
                "https://github.com/acme/shop/tree/main/src",
                Some("acme/shop"),
            ),
            (" https://github.com/acme/shop/ ", Some("acme/shop")),
            ("https://ghe.example.com/acme/shop", Some("acme/shop")),
            ("git@github.com:acme/shop.git", Some("acme/shop")),
            ("ssh://git@github.com/acme/shop.git", Some("acme/shop")),
            ("github.com/acme/shop", Some("acme/shop")),
            ("file:///srv/git/remotes/acme/shop.git", Some("acme/shop")),
            ("https://github.com/acme", None),
            ("https://github.com/", None),
            ("", None),
            ("not a url", None),
            ("https://github.com/acme/sh op", None),
        ] {
            assert_eq!(repo_slug(url).as_deref(), slug, "{url}");
        }
    }
}
