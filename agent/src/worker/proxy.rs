//! The key-holding provider proxy: a loopback HTTP server inside the agent process that
//! forwards the worker's model requests to the real provider, adding the real key. OpenCode's
//! provider `baseURL` points here with a dummy key, so the provider key never enters the
//! worker's environment, config or files. Responses (SSE included) are streamed through
//! chunk by chunk.

use std::net::SocketAddr;

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderName, StatusCode};
use axum::response::{IntoResponse, Response};

use crate::config::Secret;

/// Largest request body forwarded (a model request with a long conversation).
const MAX_REQUEST_BYTES: usize = 64 * 1024 * 1024;

/// How the real key is attached upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyStyle {
    /// `Authorization: Bearer <key>` (OpenAI-compatible providers).
    Bearer,
    /// `x-api-key: <key>` (Anthropic).
    XApiKey,
}

#[derive(Clone)]
struct ProxyState {
    http: reqwest::Client,
    upstream: String,
    key: Secret,
    style: KeyStyle,
}

/// A running key proxy; stopped when dropped.
#[derive(Debug)]
pub struct KeyProxy {
    url: String,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for KeyProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Request headers never forwarded (hop-by-hop, and the worker's own credentials).
fn dropped_request_header(name: &HeaderName) -> bool {
    matches!(
        name.as_str(),
        "host"
            | "authorization"
            | "x-api-key"
            | "api-key"
            | "content-length"
            | "connection"
            | "proxy-authorization"
            | "transfer-encoding"
            | "keep-alive"
            | "te"
            | "upgrade"
    )
}

fn dropped_response_header(name: &HeaderName) -> bool {
    matches!(
        name.as_str(),
        "content-length" | "connection" | "transfer-encoding" | "keep-alive"
    )
}

async fn forward(State(st): State<ProxyState>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let path = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str())
        .unwrap_or("/");
    let url = format!("{}{}", st.upstream, path);
    let body = match axum::body::to_bytes(body, MAX_REQUEST_BYTES).await {
        Ok(b) => b,
        Err(e) => return (StatusCode::PAYLOAD_TOO_LARGE, e.to_string()).into_response(),
    };
    let mut headers = HeaderMap::new();
    for (k, v) in &parts.headers {
        if !dropped_request_header(k) {
            headers.append(k.clone(), v.clone());
        }
    }
    let mut upstream = st
        .http
        .request(parts.method.clone(), url)
        .headers(headers)
        .body(body);
    upstream = match st.style {
        KeyStyle::Bearer => upstream.bearer_auth(st.key.expose()),
        KeyStyle::XApiKey => upstream.header("x-api-key", st.key.expose()),
    };
    let resp = match upstream.send().await {
        Ok(r) => r,
        Err(e) => {
            let msg = format!(
                "{{\"error\":{{\"message\":\"the agent's provider proxy could not reach the provider: {}\"}}}}",
                e.without_url().to_string().replace('"', "'")
            );
            return (
                StatusCode::BAD_GATEWAY,
                [("content-type", "application/json")],
                msg,
            )
                .into_response();
        }
    };
    let mut out = Response::builder().status(resp.status());
    for (k, v) in resp.headers() {
        if !dropped_response_header(k) {
            out = out.header(k, v);
        }
    }
    let stream = futures::stream::unfold(Some(resp), |resp| async move {
        let mut resp = resp?;
        match resp.chunk().await {
            Ok(Some(chunk)) => Some((Ok::<_, reqwest::Error>(chunk), Some(resp))),
            Ok(None) => None,
            Err(e) => Some((Err(e), None)),
        }
    });
    out.body(Body::from_stream(stream))
        .unwrap_or_else(|e| (StatusCode::BAD_GATEWAY, e.to_string()).into_response())
}

impl KeyProxy {
    /// Starts a proxy on a random loopback port forwarding to `upstream` (a base URL such as
    /// `https://api.example.com/v1`; the request path is appended) with `key`.
    pub async fn start(upstream: &str, key: Secret, style: KeyStyle) -> std::io::Result<Self> {
        terarchitect_worker_api::ensure_crypto_provider();
        let state = ProxyState {
            http: reqwest::Client::builder()
                .connect_timeout(std::time::Duration::from_secs(30))
                .build()
                .map_err(std::io::Error::other)?,
            upstream: upstream.trim_end_matches('/').to_owned(),
            key,
            style,
        };
        let app = Router::new().fallback(forward).with_state(state);
        let listener = tokio::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0))).await?;
        let addr = listener.local_addr()?;
        let task = tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, app).await {
                tracing::warn!(error = %e, "the provider proxy stopped");
            }
        });
        Ok(Self {
            url: format!("http://{addr}"),
            task,
        })
    }

    /// The proxy's base URL (`http://127.0.0.1:<port>`).
    pub fn url(&self) -> &str {
        &self.url
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::routing::post;
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    #[tokio::test]
    async fn adds_the_key_and_streams_the_answer() {
        let seen: Arc<Mutex<Vec<(String, String, String)>>> = Arc::default();
        let s2 = seen.clone();
        let upstream = Router::new().route(
            "/v1/chat/completions",
            post(move |headers: HeaderMap, body: String| {
                let seen = s2.clone();
                async move {
                    let h = |n: &str| {
                        headers
                            .get(n)
                            .and_then(|v| v.to_str().ok())
                            .unwrap_or_default()
                            .to_owned()
                    };
                    seen.lock()
                        .unwrap()
                        .push((h("authorization"), h("x-api-key"), body));
                    // An SSE answer whose second event arrives later: it must be streamed.
                    let events = futures::stream::unfold(0, |i| async move {
                        match i {
                            0 => Some((Ok::<_, std::io::Error>("data: one\n\n".to_owned()), 1)),
                            1 => {
                                tokio::time::sleep(Duration::from_millis(300)).await;
                                Some((Ok("data: [DONE]\n\n".to_owned()), 2))
                            }
                            _ => None,
                        }
                    });
                    (
                        [("content-type", "text/event-stream")],
                        Body::from_stream(events),
                    )
                }
            }),
        );
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}/v1", l.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(l, upstream).await });

        let proxy = KeyProxy::start(&base, Secret::new("sk-real-key-123"), KeyStyle::Bearer)
            .await
            .unwrap();
        let http = reqwest::Client::new();
        let mut resp = http
            .post(format!("{}/chat/completions", proxy.url()))
            .bearer_auth("dummy")
            .body("{\"stream\":true}")
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.headers()["content-type"], "text/event-stream");
        let first = resp.chunk().await.unwrap().unwrap();
        assert_eq!(
            &first[..],
            b"data: one\n\n",
            "the first event arrives on its own"
        );
        let rest = resp.chunk().await.unwrap().unwrap();
        assert_eq!(&rest[..], b"data: [DONE]\n\n");
        let (auth, xkey, body) = seen.lock().unwrap()[0].clone();
        assert_eq!(auth, "Bearer sk-real-key-123");
        assert_eq!((xkey.as_str(), body.as_str()), ("", "{\"stream\":true}"));

        let anthropic = KeyProxy::start(&base, Secret::new("sk-ant-xyz"), KeyStyle::XApiKey)
            .await
            .unwrap();
        let r = http
            .post(format!("{}/chat/completions", anthropic.url()))
            .header("x-api-key", "dummy")
            .body("{}")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let (auth, xkey, _) = seen.lock().unwrap()[1].clone();
        assert_eq!((auth.as_str(), xkey.as_str()), ("", "sk-ant-xyz"));

        // Upstream down: a JSON 502, never a hang.
        drop(anthropic);
        let dead = KeyProxy::start(
            "http://127.0.0.1:9/v1",
            Secret::new("k-123456"),
            KeyStyle::Bearer,
        )
        .await
        .unwrap();
        let r = http
            .post(format!("{}/chat/completions", dead.url()))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 502);
        assert!(!r.text().await.unwrap().contains("k-123456"));
    }
}
