//! Who may call state-changing HTTP endpoints.
//!
//! On Cloud Run the platform verifies the caller's Google-signed ID token before the request
//! reaches us and strips the signature, so we read only the `email` claim of the JWT payload and
//! check it against an allow-list. For local use a static bearer token can be configured.

use base64::Engine as _;

use crate::config::AuthConfig;
use crate::core::secret::constant_time_eq;
use crate::error::{Classify, ErrorKind};

/// The caller, once admitted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    /// A Cloud Run-verified identity.
    Identity(String),
    /// The holder of the static API token.
    Token,
}

/// Why a request was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// No usable credentials: 401.
    #[error("missing or malformed credentials: send Authorization: Bearer <ID token or API token>")]
    Unauthenticated,
    /// Credentials of somebody not on the allow-list: 403.
    #[error("{0} is not allowed to call this endpoint (LIFEBOAT_ALLOWED_INVOKERS)")]
    Forbidden(String),
}

impl Classify for AuthError {
    /// Both are refusals for good: the same credentials get the same answer.
    fn kind(&self) -> ErrorKind {
        ErrorKind::Refused
    }
}

impl AuthConfig {
    /// Decides on an `Authorization` header value.
    pub fn authorize(&self, authorization: Option<&str>) -> Result<Caller, AuthError> {
        let token = authorization
            .and_then(|h| h.strip_prefix("Bearer ").or_else(|| h.strip_prefix("bearer ")))
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .ok_or(AuthError::Unauthenticated)?;
        if let Some(expected) = &self.api_token
            && constant_time_eq(token.as_bytes(), expected.expose().as_bytes())
        {
            return Ok(Caller::Token);
        }
        let email = jwt_email(token).ok_or(AuthError::Unauthenticated)?;
        if self.allowed_invokers.iter().any(|a| a == &email) {
            Ok(Caller::Identity(email))
        } else {
            Err(AuthError::Forbidden(email))
        }
    }
}

/// The lower-cased `email` claim of a JWT's payload (signature not checked: see module docs).
fn jwt_email(token: &str) -> Option<String> {
    let mut parts = token.split('.');
    let (_header, payload) = (parts.next()?, parts.next()?);
    parts.next()?; // a JWT has three parts, even when Cloud Run has emptied the signature
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(payload.trim_end_matches('=')).ok()?;
    let claims: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    if claims.get("email_verified").and_then(serde_json::Value::as_bool) == Some(false) {
        return None;
    }
    claims.get("email")?.as_str().map(str::to_lowercase)
}

/// Builds an unsigned JWT carrying `email` (what Cloud Run forwards). For tests and local tools.
pub fn unsigned_jwt_for(email: &str) -> String {
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let header = b64.encode(br#"{"alg":"RS256","typ":"JWT"}"#);
    let payload = b64.encode(serde_json::json!({"email": email, "email_verified": true}).to_string());
    format!("{header}.{payload}.SIGNATURE_REMOVED_BY_GOOGLE")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::secret::Secret;

    fn config() -> AuthConfig {
        AuthConfig {
            allowed_invokers: vec!["push@p.iam.gserviceaccount.com".into()],
            api_token: Some(Secret::new("local-token-0123456789")),
        }
    }

    #[test]
    fn allowed_identity_passes() {
        let jwt = unsigned_jwt_for("Push@p.iam.gserviceaccount.com");
        assert_eq!(
            config().authorize(Some(&format!("Bearer {jwt}"))),
            Ok(Caller::Identity("push@p.iam.gserviceaccount.com".into()))
        );
    }

    #[test]
    fn other_identity_is_forbidden() {
        let jwt = unsigned_jwt_for("intruder@evil.example");
        assert_eq!(
            config().authorize(Some(&format!("Bearer {jwt}"))),
            Err(AuthError::Forbidden("intruder@evil.example".into()))
        );
    }

    #[test]
    fn missing_or_garbage_credentials_are_unauthenticated() {
        let c = config();
        assert_eq!(c.authorize(None), Err(AuthError::Unauthenticated));
        assert_eq!(c.authorize(Some("Basic abc")), Err(AuthError::Unauthenticated));
        assert_eq!(c.authorize(Some("Bearer ")), Err(AuthError::Unauthenticated));
        assert_eq!(c.authorize(Some("Bearer not-a-jwt")), Err(AuthError::Unauthenticated));
        assert_eq!(c.authorize(Some("Bearer a.!!!.c")), Err(AuthError::Unauthenticated));
    }

    #[test]
    fn static_token_passes_and_wrong_token_does_not() {
        let c = config();
        assert_eq!(c.authorize(Some("Bearer local-token-0123456789")), Ok(Caller::Token));
        assert_eq!(c.authorize(Some("Bearer local-token-0123456780")), Err(AuthError::Unauthenticated));
    }

    #[test]
    fn unverified_email_is_refused() {
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let payload = b64.encode(r#"{"email":"push@p.iam.gserviceaccount.com","email_verified":false}"#);
        let jwt = format!("e30.{payload}.");
        assert_eq!(config().authorize(Some(&format!("Bearer {jwt}"))), Err(AuthError::Unauthenticated));
    }

    #[test]
    fn closed_when_nothing_configured() {
        assert!(AuthConfig::default().is_closed());
        assert_eq!(
            AuthConfig::default().authorize(Some(&format!("Bearer {}", unsigned_jwt_for("a@b")))),
            Err(AuthError::Forbidden("a@b".into()))
        );
    }
}
