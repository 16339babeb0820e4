//! Text to index terms: lower-case words, English stop words removed, Snowball-stemmed.

use std::collections::BTreeMap;
use std::sync::LazyLock;

use rust_stemmers::{Algorithm, Stemmer};

static STEMMER: LazyLock<Stemmer> = LazyLock::new(|| Stemmer::create(Algorithm::English));

/// Longest term kept (longer tokens are noise such as hashes or base64).
pub const MAX_TERM_LEN: usize = 64;

const STOP_WORDS: &[&str] = &[
    "a", "an", "and", "are", "as", "at", "be", "been", "but", "by", "can", "do", "does", "for",
    "from", "had", "has", "have", "he", "her", "his", "i", "if", "in", "into", "is", "it", "its",
    "me", "my", "no", "not", "of", "on", "or", "our", "she", "so", "such", "than", "that", "the",
    "their", "them", "then", "there", "these", "they", "this", "those", "to", "too", "us", "was",
    "we", "were", "what", "when", "where", "which", "while", "who", "will", "with", "you", "your",
];

/// The terms of `text`, in order, with repeats.
pub fn terms(text: &str) -> Vec<String> {
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(str::to_lowercase)
        .filter(|w| !STOP_WORDS.contains(&w.as_str()))
        .map(|w| STEMMER.stem(&w).into_owned())
        .filter(|t| !t.is_empty() && t.len() <= MAX_TERM_LEN)
        .collect()
}

/// Term frequencies of `text` and its length in terms.
pub fn term_frequencies(text: &str) -> (BTreeMap<String, i32>, i32) {
    let all = terms(text);
    let len = i32::try_from(all.len()).unwrap_or(i32::MAX);
    let mut tf = BTreeMap::new();
    for t in all {
        *tf.entry(t).or_insert(0) += 1;
    }
    (tf, len)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stems_and_drops_stop_words() {
        assert_eq!(
            terms("The Tests are RUNNING; testing ran!"),
            vec!["test", "run", "test", "ran"]
        );
        let (tf, len) = term_frequencies("cache caches CACHING of the api");
        assert_eq!(len, 4);
        assert_eq!(tf["cach"], 3);
        assert_eq!(tf["api"], 1);
    }

    #[test]
    fn handles_unicode_and_long_tokens() {
        assert_eq!(terms("Ünïcode naïve"), vec!["ünïcode", "naïv"]);
        assert!(terms(&"x".repeat(100)).is_empty());
    }
}
