//! Plain request/response values for program routes, so programs never touch hyper's types.

use bytes::Bytes;
use http::{HeaderMap, Method, StatusCode};

use super::auth::Caller;

/// A request as a program route sees it (body already read, size-limited).
#[derive(Debug, Clone)]
pub struct HttpRequest {
    /// Method.
    pub method: Method,
    /// Path without the query.
    pub path: String,
    /// Raw query string.
    pub query: Option<String>,
    /// Headers.
    pub headers: HeaderMap,
    /// Body.
    pub body: Bytes,
    /// Who called, as admitted by the server before the body was read.
    pub caller: Caller,
}

impl HttpRequest {
    /// The value of a query parameter (no percent-decoding beyond `+`).
    pub fn query_param(&self, name: &str) -> Option<String> {
        self.query.as_deref()?.split('&').find_map(|kv| {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            (k == name).then(|| v.replace('+', " "))
        })
    }
}

/// A response.
#[derive(Debug, Clone)]
pub struct HttpResponse {
    /// Status.
    pub status: StatusCode,
    /// Content type.
    pub content_type: &'static str,
    /// Extra headers.
    pub headers: Vec<(&'static str, String)>,
    /// Body.
    pub body: Bytes,
}

impl HttpResponse {
    /// A JSON response.
    pub fn json(status: StatusCode, value: &serde_json::Value) -> Self {
        Self { status, content_type: "application/json", headers: Vec::new(), body: Bytes::from(value.to_string()) }
    }

    /// A JSON error: `{"error": reason}`.
    pub fn error(status: StatusCode, reason: impl std::fmt::Display) -> Self {
        Self::json(status, &serde_json::json!({ "error": reason.to_string() }))
    }

    /// An HTML page.
    pub fn html(status: StatusCode, body: String) -> Self {
        Self { status, content_type: "text/html; charset=utf-8", headers: Vec::new(), body: Bytes::from(body) }
    }
}
