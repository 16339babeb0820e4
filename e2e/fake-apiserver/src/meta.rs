//! Small helpers for reading and writing `metadata` of objects held as JSON.

use serde_json::{Map, Value, json};

/// The object's `metadata` map (created if missing or not a map).
pub(crate) fn meta_mut(obj: &mut Value) -> &mut Map<String, Value> {
    if !obj.is_object() {
        *obj = json!({});
    }
    let map = obj.as_object_mut().expect("object");
    let meta = map.entry("metadata").or_insert_with(|| json!({}));
    if !meta.is_object() {
        *meta = json!({});
    }
    meta.as_object_mut().expect("object")
}

/// A string field of `metadata`, or "" when absent.
pub(crate) fn meta_str<'a>(obj: &'a Value, field: &str) -> &'a str {
    obj.pointer(&format!("/metadata/{field}"))
        .and_then(Value::as_str)
        .unwrap_or("")
}

pub(crate) fn name(obj: &Value) -> &str {
    meta_str(obj, "name")
}

pub(crate) fn namespace(obj: &Value) -> &str {
    meta_str(obj, "namespace")
}

pub(crate) fn uid(obj: &Value) -> &str {
    meta_str(obj, "uid")
}

pub(crate) fn resource_version(obj: &Value) -> &str {
    meta_str(obj, "resourceVersion")
}

pub(crate) fn is_deleting(obj: &Value) -> bool {
    obj.pointer("/metadata/deletionTimestamp")
        .is_some_and(|v| !v.is_null())
}

pub(crate) fn generation(obj: &Value) -> i64 {
    obj.pointer("/metadata/generation")
        .and_then(Value::as_i64)
        .unwrap_or(0)
}

pub(crate) fn label<'a>(obj: &'a Value, key: &str) -> Option<&'a str> {
    obj.pointer("/metadata/labels")
        .and_then(|labels| labels.get(key))
        .and_then(Value::as_str)
}

pub(crate) fn finalizers(obj: &Value) -> Vec<String> {
    string_list(obj.pointer("/metadata/finalizers"))
}

pub(crate) fn set_finalizers(obj: &mut Value, finalizers: Vec<String>) {
    let meta = meta_mut(obj);
    if finalizers.is_empty() {
        meta.remove("finalizers");
    } else {
        meta.insert("finalizers".into(), json!(finalizers));
    }
}

pub(crate) fn string_list(value: Option<&Value>) -> Vec<String> {
    value
        .and_then(Value::as_array)
        .map(|items| {
            items
                .iter()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

pub(crate) fn owner_references(obj: &Value) -> Vec<Value> {
    obj.pointer("/metadata/ownerReferences")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default()
}

/// The current time as a Kubernetes `Time` (RFC 3339, second precision, UTC).
pub(crate) fn now_time() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// `n` random characters from the alphabet Kubernetes uses for generated names.
pub(crate) fn random_suffix(n: usize) -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let mut out = String::with_capacity(n);
    while out.len() < n {
        for byte in uuid::Uuid::new_v4().into_bytes() {
            if out.len() == n {
                break;
            }
            out.push(ALPHABET[usize::from(byte) % ALPHABET.len()] as char);
        }
    }
    out
}

/// Whether `name` is a valid DNS-1123 subdomain (what most object names must be).
pub(crate) fn is_dns_subdomain(name: &str) -> bool {
    !name.is_empty() && name.len() <= 253 && name.split('.').all(is_dns_label_part)
}

/// Whether `name` is a valid DNS-1123 label (namespace names).
pub(crate) fn is_dns_label(name: &str) -> bool {
    name.len() <= 63 && is_dns_label_part(name)
}

fn is_dns_label_part(part: &str) -> bool {
    let bytes = part.as_bytes();
    !bytes.is_empty()
        && bytes
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-')
        && bytes[0] != b'-'
        && bytes[bytes.len() - 1] != b'-'
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert!(is_dns_subdomain("a.b-c.d1"));
        assert!(!is_dns_subdomain("A"));
        assert!(!is_dns_subdomain("a..b"));
        assert!(is_dns_label("default"));
        assert!(!is_dns_label("a.b"));
        assert_eq!(random_suffix(5).len(), 5);
    }
}
