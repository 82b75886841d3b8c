//! The one JSON-API request `gcloud-storage` cannot send: a rewrite with a destination
//! precondition (`ifGenerationMatch=0`, create-only), which makes a content-addressed copy one
//! request instead of a lookup and a copy. Sent on the crate's own HTTP client and token source
//! (built together in `client`), so it shares their connections, credentials and settings; the
//! answer and the errors are the crate's types, mapped like every other call.

use std::sync::Arc;

use gcloud_storage::http::Error as GcsError;
use gcloud_storage::http::error::ErrorResponse;
use gcloud_storage::http::objects::rewrite::RewriteObjectResponse;
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use reqwest_middleware::ClientWithMiddleware;
use token_source::TokenSource;

/// What a path segment (bucket or object name) keeps unescaped: what the crate keeps, so our
/// URLs name objects exactly as its requests do.
const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC.remove(b'*').remove(b'-').remove(b'.').remove(b'_');

/// An error body is read up to this many bytes into a message.
const ERROR_BODY_LIMIT: usize = 2048;

/// Requests of our own to the JSON API, authenticated like the crate's.
#[derive(Clone)]
pub(super) struct JsonApi {
    http: ClientWithMiddleware,
    token: Option<Arc<dyn TokenSource>>,
    /// `…/storage/v1`.
    v1: String,
}

impl std::fmt::Debug for JsonApi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JsonApi").field("v1", &self.v1).field("authenticated", &self.token.is_some()).finish()
    }
}

/// One call of a create-only rewrite.
#[derive(Debug, Clone)]
pub(super) struct CreateOnlyRewrite<'a> {
    pub source_bucket: &'a str,
    pub source_object: &'a str,
    /// How the listed generation of the source is held to, if one is given.
    pub source: SourceGuard,
    pub destination_bucket: &'a str,
    pub destination_object: &'a str,
    /// `maxBytesRewrittenPerCall`.
    pub max_bytes_per_call: Option<i64>,
    /// The token of the previous call of this copy.
    pub rewrite_token: Option<&'a str>,
}

/// How a create-only rewrite holds to the source generation the caller listed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum SourceGuard {
    /// Copy the live object, whatever its generation.
    None,
    /// Copy the live object only while it is this generation (`ifSourceGenerationMatch`); else 412,
    /// the same answer as a taken destination.
    Precondition(i64),
    /// Copy exactly this generation (`sourceGeneration`), live or not; "not found" once it is gone.
    Pin(i64),
}

impl CreateOnlyRewrite<'_> {
    fn url(&self, v1: &str) -> String {
        let seg = |s: &str| utf8_percent_encode(s, SEGMENT).to_string();
        format!(
            "{v1}/b/{}/o/{}/rewriteTo/b/{}/o/{}",
            seg(self.source_bucket),
            seg(self.source_object),
            seg(self.destination_bucket),
            seg(self.destination_object)
        )
    }

    fn query(&self) -> Vec<(&'static str, String)> {
        // The destination must not exist: a 412 says it does.
        let mut q = vec![("ifGenerationMatch", "0".to_owned())];
        match self.source {
            SourceGuard::None => {}
            SourceGuard::Precondition(g) => q.push(("ifSourceGenerationMatch", g.to_string())),
            SourceGuard::Pin(g) => q.push(("sourceGeneration", g.to_string())),
        }
        if let Some(b) = self.max_bytes_per_call {
            q.push(("maxBytesRewrittenPerCall", b.to_string()));
        }
        if let Some(t) = self.rewrite_token {
            q.push(("rewriteToken", t.to_owned()));
        }
        q
    }
}

impl JsonApi {
    /// `endpoint`: as given to the crate (`https://storage.googleapis.com`, or an emulator's).
    pub(super) fn new(http: ClientWithMiddleware, token: Option<Arc<dyn TokenSource>>, endpoint: &str) -> Self {
        Self { http, token, v1: format!("{}/storage/v1", endpoint.trim_end_matches('/')) }
    }

    /// One call of a create-only rewrite. No body: the destination keeps the source's metadata.
    pub(super) async fn rewrite_create_only(
        &self,
        call: &CreateOnlyRewrite<'_>,
    ) -> Result<RewriteObjectResponse, GcsError> {
        let mut request = self
            .http
            .post(call.url(&self.v1))
            .query(&call.query())
            .header("X-Goog-Api-Client", "rust")
            .header(reqwest_middleware::reqwest::header::CONTENT_LENGTH, "0");
        if let Some(ts) = &self.token {
            request = request.header(
                reqwest_middleware::reqwest::header::AUTHORIZATION,
                ts.token().await.map_err(GcsError::TokenSource)?,
            );
        }
        let response = request.send().await?;
        let status = response.status();
        if status.is_success() {
            return Ok(response.json::<RewriteObjectResponse>().await?);
        }
        let body = response.bytes().await.unwrap_or_default();
        Err(GcsError::Response(error_response(status.as_u16(), &body)))
    }
}

/// The service's error (`{"error": {...}}`), or one made of the status and the body's first
/// bytes when the body is not that (an emulator, a proxy in between).
fn error_response(code: u16, body: &[u8]) -> ErrorResponse {
    #[derive(serde::Deserialize)]
    struct Wrapper {
        error: ErrorResponse,
    }
    if let Ok(w) = serde_json::from_slice::<Wrapper>(body) {
        return w.error;
    }
    let text = String::from_utf8_lossy(&body[..body.len().min(ERROR_BODY_LIMIT)]);
    let message = serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v["error"]["message"].as_str().map(str::to_owned))
        .unwrap_or_else(|| if text.trim().is_empty() { format!("HTTP {code}") } else { text.trim().to_owned() });
    ErrorResponse { code, errors: Vec::new(), message }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call<'a>(token: Option<&'a str>) -> CreateOnlyRewrite<'a> {
        CreateOnlyRewrite {
            source_bucket: "src",
            source_object: "a dir/ü#?%.txt",
            source: SourceGuard::Precondition(17),
            destination_bucket: "dst",
            destination_object: "storage/src/blobs/abc-5",
            max_bytes_per_call: None,
            rewrite_token: token,
        }
    }

    #[test]
    fn the_request_is_create_only_and_guards_the_source_generation() {
        let c = call(None);
        assert_eq!(
            c.url("http://h/storage/v1"),
            "http://h/storage/v1/b/src/o/a%20dir%2F%C3%BC%23%3F%25.txt/rewriteTo/b/dst/o/storage%2Fsrc%2Fblobs%2Fabc-5"
        );
        assert_eq!(c.query(), [("ifGenerationMatch", "0".to_owned()), ("ifSourceGenerationMatch", "17".to_owned())]);
        let pinned = CreateOnlyRewrite { source: SourceGuard::Pin(17), ..call(None) };
        assert_eq!(pinned.query(), [("ifGenerationMatch", "0".to_owned()), ("sourceGeneration", "17".to_owned())]);
        let live = CreateOnlyRewrite { source: SourceGuard::None, ..call(None) };
        assert_eq!(live.query(), [("ifGenerationMatch", "0".to_owned())]);
        let next = CreateOnlyRewrite { max_bytes_per_call: Some(1 << 20), ..call(Some("tok")) };
        let q = next.query();
        assert_eq!(q[0], ("ifGenerationMatch", "0".to_owned()), "every call of the loop keeps the precondition");
        assert!(q.contains(&("rewriteToken", "tok".to_owned())));
        assert!(q.contains(&("maxBytesRewrittenPerCall", "1048576".to_owned())));
    }

    #[test]
    fn error_bodies_become_error_responses() {
        let gcs = br#"{"error":{"code":412,"message":"At least one of the pre-conditions you specified did not hold.","errors":[{"domain":"global","reason":"conditionNotMet","message":"x"}]}}"#;
        let e = error_response(412, gcs);
        assert_eq!((e.code, e.errors.len()), (412, 1));
        assert!(e.message.starts_with("At least one"));
        let bare = error_response(404, br#"{"error":{"code":404,"message":"Not Found"}}"#);
        assert_eq!((bare.code, bare.message.as_str()), (404, "Not Found"));
        assert_eq!(error_response(503, b"").message, "HTTP 503");
        assert_eq!(error_response(502, b"bad gateway\n").message, "bad gateway");
    }
}
