//! The `gcloud-storage` errors, mapped into [`StoreError`] by HTTP status (or by what failed when
//! there is no answer), so callers decide on the kind and never on the service's words.

use gcloud_storage::http::Error as GcsError;

use crate::store::{Location, StoreError};

/// The reason GCS gives when a retention policy or an object hold refuses a delete or an
/// overwrite (HTTP 403).
const RETENTION_REASON: &str = "retentionPolicyNotMet";

/// Maps `e`, from `operation` on `key`. `create_only`: a failed precondition means the name is
/// taken (`ifGenerationMatch=0`), not that the object changed.
pub(super) fn map_error(
    location: &Location,
    e: GcsError,
    operation: &'static str,
    key: &str,
    create_only: bool,
) -> StoreError {
    let location = location.to_string();
    let key = key.to_owned();
    match e {
        // 403 with this reason: the bucket's retention policy (or a hold) protects the object.
        GcsError::Response(r) if r.code == 403 && r.errors.iter().any(|e| e.reason == RETENTION_REASON) => {
            StoreError::Retained { location, key, message: r.message }
        }
        GcsError::Response(r) => by_status(r.code, r.message, location, operation, key, create_only),
        GcsError::HttpClient(e) | GcsError::RawResponse(e, _) => match e.status() {
            Some(s) => by_status(s.as_u16(), e.to_string(), location, operation, key, create_only),
            None if e.is_timeout() => StoreError::Transient {
                location,
                key,
                message: format!(
                    "{}: timed out (no connection within LIFEBOAT_CONNECT_TIMEOUT, or no progress within LIFEBOAT_STALL_TIMEOUT)",
                    e
                ),
            },
            None if e.is_connect() || e.is_request() || e.is_body() => {
                StoreError::Transient { location, key, message: with_causes(&e) }
            }
            None => StoreError::Other { location, operation, key, message: e.to_string() },
        },
        other => StoreError::Other { location, operation, key, message: other.to_string() },
    }
}

/// `e` and its causes, `: `-separated (reqwest's own text leaves out why a request failed).
fn with_causes(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let part = c.to_string();
        if !text.contains(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        cause = c.source();
    }
    text
}

fn by_status(
    code: u16,
    message: String,
    location: String,
    operation: &'static str,
    key: String,
    create_only: bool,
) -> StoreError {
    match code {
        404 => StoreError::NotFound { location, key },
        412 if create_only => StoreError::AlreadyExists { location, key },
        412 => StoreError::PreconditionFailed { location, key },
        401 | 403 => StoreError::PermissionDenied { location, key, message },
        408 | 429 | 500..=599 => StoreError::Transient { location, key, message },
        400..=499 => StoreError::Refused { location, operation, key, message },
        _ => StoreError::Other { location, operation, key, message },
    }
}

#[cfg(test)]
mod tests {
    use gcloud_storage::http::error::ErrorResponse;

    use super::*;
    use crate::error::{Classify as _, ErrorKind};

    fn answer(code: u16, create_only: bool) -> StoreError {
        let location = Location::Gcs { bucket: "b".into(), prefix: String::new() };
        let e = GcsError::Response(ErrorResponse { code, errors: Vec::new(), message: format!("status {code}") });
        map_error(&location, e, "put", "k", create_only)
    }

    #[test]
    fn statuses_become_kinds() {
        assert!(matches!(answer(404, false), StoreError::NotFound { .. }));
        assert!(matches!(answer(412, true), StoreError::AlreadyExists { .. }));
        assert!(matches!(answer(412, false), StoreError::PreconditionFailed { .. }));
        for (code, kind) in [
            (401, ErrorKind::Refused),
            (403, ErrorKind::Refused),
            (400, ErrorKind::Refused),
            (408, ErrorKind::Transient),
            (429, ErrorKind::Transient),
            (500, ErrorKind::Transient),
            (503, ErrorKind::Transient),
            (302, ErrorKind::Internal),
        ] {
            assert_eq!(answer(code, false).kind(), kind, "{code}");
        }
        let e = answer(400, false).to_string();
        assert_eq!(e, "gs://b: put \"k\" failed: status 400");
    }

    #[test]
    fn a_retention_refusal_is_told_apart_from_a_missing_right() {
        // The body GCS answers a delete of an object younger than the bucket's retention policy.
        let body = r#"{"error": {"code": 403,
            "message": "Object 'b/db/main/app/x/manifest.json' is subject to bucket's retention policy or object retention and cannot be deleted or overwritten until 2026-12-26T02:00:00Z",
            "errors": [{"message": "Object 'b/db/main/app/x/manifest.json' is subject to bucket's retention policy or object retention and cannot be deleted or overwritten until 2026-12-26T02:00:00Z",
                        "domain": "global", "reason": "retentionPolicyNotMet"}]}}"#;
        let wrapped: serde_json::Value = serde_json::from_str(body).expect("json");
        let response: ErrorResponse = serde_json::from_value(wrapped["error"].clone()).expect("error response");
        let location = Location::Gcs { bucket: "b".into(), prefix: String::new() };
        let e = map_error(&location, GcsError::Response(response), "delete", "db/main/app/x/manifest.json", false);
        assert!(e.is_retained(), "{e:?}");
        assert_eq!(e.kind(), ErrorKind::Refused);
        let text = e.to_string();
        assert!(text.contains("retention policy") && text.contains("until 2026-12-26T02:00:00Z"), "{text}");
        // Another 403 is a missing right, as before.
        assert!(matches!(answer(403, false), StoreError::PermissionDenied { .. }));
    }
}
