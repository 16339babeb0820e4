//! Request extractors whose rejections are JSON errors: path ids, JSON bodies (required or
//! optional), with 400 for malformed JSON or wrong field types, 413 for oversized bodies and
//! 415 for a wrong content type.

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection};
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::header::CONTENT_TYPE;
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode};
use serde::de::DeserializeOwned;

use super::error::ApiError;

/// Path parameters; a malformed id answers 404 as an unknown route would.
pub struct PathParams<T>(pub T);

impl<S, T> FromRequestParts<S> for PathParams<T>
where
    T: DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match axum::extract::Path::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Path(v)) => Ok(PathParams(v)),
            Err(PathRejection::FailedToDeserializePathParams(e)) => {
                Err(ApiError::not_found(format!("Not found: {}", e.body_text())))
            }
            Err(e) => Err(ApiError::Internal(e.body_text())),
        }
    }
}

fn is_json(headers: &HeaderMap) -> bool {
    headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(|m| {
            let m = m.trim().to_ascii_lowercase();
            m == "application/json" || (m.starts_with("application/") && m.ends_with("+json"))
        })
        .unwrap_or(false)
}

fn body_error(rej: BytesRejection) -> ApiError {
    if rej.status() == StatusCode::PAYLOAD_TOO_LARGE {
        ApiError::PayloadTooLarge("Request body is too large".into())
    } else {
        ApiError::bad_request(format!(
            "Could not read the request body: {}",
            rej.body_text()
        ))
    }
}

/// Parses JSON with a field path in type errors (`name: invalid type: ...`).
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let value: serde_json::Value = serde_json::from_slice(bytes)
        .map_err(|e| ApiError::bad_request(format!("Invalid JSON body: {e}")))?;
    if !value.is_object() {
        return Err(ApiError::bad_request("JSON body must be an object"));
    }
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        if path == "." {
            ApiError::bad_request(format!("Invalid request body: {inner}"))
        } else {
            ApiError::bad_request(format!("Invalid value for {path}: {inner}"))
        }
    })
}

/// A required JSON object body (`Content-Type: application/json`).
pub struct JsonBody<T>(pub T);

impl<S, T> FromRequest<S> for JsonBody<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        if !is_json(req.headers()) {
            return Err(ApiError::UnsupportedMediaType(
                "Content-Type must be application/json".into(),
            ));
        }
        let bytes = Bytes::from_request(req, state).await.map_err(body_error)?;
        parse_json(&bytes).map(JsonBody)
    }
}

/// An optional JSON object body: an empty body reads as `T::default()` whatever the content
/// type (the original coordinator posts job outcomes with no body at all); a body of blanks is
/// not JSON (400).
pub struct OptionalJsonBody<T>(pub T);

impl<S, T> FromRequest<S> for OptionalJsonBody<T>
where
    T: DeserializeOwned + Default,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let json = is_json(req.headers());
        let bytes = Bytes::from_request(req, state).await.map_err(body_error)?;
        if bytes.is_empty() {
            return Ok(OptionalJsonBody(T::default()));
        }
        if !json {
            return Err(ApiError::UnsupportedMediaType(
                "Content-Type must be application/json".into(),
            ));
        }
        if bytes.trim_ascii() == b"null" {
            return Ok(OptionalJsonBody(T::default()));
        }
        parse_json(&bytes).map(OptionalJsonBody)
    }
}

/// Deserialises a field that distinguishes absent (`None`) from null (`Some(None)`).
pub fn double_option<'de, D, T>(d: D) -> Result<Option<Option<T>>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: serde::Deserialize<'de>,
{
    serde::Deserialize::deserialize(d).map(Some)
}

/// An integer as JSON Schema reads one: `7`, or an integral number such as `7.0`.
pub fn json_integer(v: &serde_json::Value) -> Option<i64> {
    if let Some(n) = v.as_i64() {
        return Some(n);
    }
    let f = v.as_f64()?;
    // ±2^63 (what i64::MIN/MAX become as f64) are left out: a number that rounds to them may
    // lie outside the range.
    let bound = i64::MAX as f64;
    (f.fract() == 0.0 && f > -bound && f < bound).then_some(f as i64)
}

/// Deserialises an optional integer field the way [`json_integer`] reads integers (null or
/// absent is `None`; anything else that is not an integer in `T`'s range is an error).
pub fn optional_integer<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: TryFrom<i64>,
{
    let v: Option<serde_json::Value> = serde::Deserialize::deserialize(d)?;
    match v {
        None | Some(serde_json::Value::Null) => Ok(None),
        Some(v) => json_integer(&v)
            .and_then(|n| T::try_from(n).ok())
            .map(Some)
            .ok_or_else(|| {
                serde::de::Error::custom(format!("expected an integer in range, got {v}"))
            }),
    }
}

#[cfg(test)]
mod tests {
    use super::json_integer;
    use serde_json::json;

    #[test]
    fn integral_numbers_are_integers() {
        assert_eq!(json_integer(&json!(7)), Some(7));
        assert_eq!(json_integer(&json!(-3)), Some(-3));
        assert_eq!(json_integer(&json!(21.0)), Some(21));
        assert_eq!(json_integer(&json!(21.5)), None);
        assert_eq!(json_integer(&json!(1e300)), None);
        assert_eq!(json_integer(&json!(u64::MAX)), None);
        assert_eq!(json_integer(&json!(i64::MIN)), Some(i64::MIN));
        let below_min: serde_json::Value = serde_json::from_str("-9223372036854775809").unwrap();
        assert_eq!(json_integer(&below_min), None);
        assert_eq!(json_integer(&json!("7")), None);
        assert_eq!(json_integer(&json!(null)), None);
    }
}
