//! Who may call an HTTP endpoint: one function turns the request headers into a [`Caller`]
//! ([`AuthConfig::identify`]), then a per-route [`Access`] rule decides ([`AuthConfig::admit`]).
//! The server runs both on the request head, before a byte of the body is read.
//!
//! # Where an identity comes from
//!
//! - **On Cloud Run** (`K_SERVICE` set) the service is IAM-protected: the platform verified the
//!   caller's Google-signed ID token (signature, expiry, audience) before the request reached us
//!   and forwards the token with its signature removed. We read the `email` claim of the token
//!   Cloud Run verified: `X-Serverless-Authorization` when present (Cloud Run then verifies only
//!   that header and passes `Authorization` through untouched, so `Authorization` may hold
//!   anything the caller liked), else `Authorization`. When both are present, `Authorization`
//!   must name the same identity, or the request is refused: we cannot tell which one a proxy
//!   in front meant.
//! - **Elsewhere** nothing verified a JWT, and anyone can write an unsigned one: only the static
//!   token (`LIFEBOAT_API_TOKEN`, compared in constant time) authenticates. A JWT is refused.
//!
//! # `email_verified`
//!
//! Google's ID tokens carry `email_verified` as a JSON boolean: the Pub/Sub push token example
//! in Google's "Authentication for push subscriptions" page has `"email_verified": true`, and so
//! do the tokens of service accounts from the metadata server (`format=full`) and the IAM
//! Credentials `generateIdToken` call with `includeEmail`. The string form (`"true"`) only
//! appears in old Google Sign-In token-info answers, never in a token Cloud Run forwards. So:
//! boolean `true` is accepted; an absent claim only for a service account
//! (`…gserviceaccount.com`, addresses Google itself issues and nobody can register); anything
//! else — `false`, the strings `"true"`/`"false"`, a number — is refused.
//!
//! # Who may do what
//!
//! A program says per route who may call it ([`Access`]): anyone (`GET /healthz`, `health`'s
//! status page), or the members of one [`Role`]: the scheduler identities
//! (`LIFEBOAT_ALLOWED_INVOKERS`: `POST /run`, `monitor`'s `POST /check`), the Pub/Sub push
//! identities (`LIFEBOAT_PUSH_INVOKERS`: `monitor`'s `POST /pubsub` only), the console's admins
//! (`LIFEBOAT_ADMINS`: every action) and viewers (`LIFEBOAT_VIEWERS`, plus the admins: pages
//! and read-only API). The static token holder is the local operator and may do everything.
//! Off Cloud Run, read-only routes are open to anyone who reaches the port only while the
//! server listens on a loopback address (the default there, see `LIFEBOAT_BIND`).

use base64::Engine as _;
use http::HeaderMap;

use crate::config::AuthConfig;
use crate::core::secret::constant_time_eq;
use crate::error::{Classify, ErrorKind};

/// The header Cloud Run verifies instead of `Authorization` when both are sent.
pub const SERVERLESS_AUTHORIZATION: &str = "x-serverless-authorization";

/// The caller, once identified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    /// A Cloud Run-verified identity (the lower-cased e-mail of its ID token).
    Identity(String),
    /// The holder of the static API token (the local operator).
    Token,
    /// No credentials (admitted only by [`Access::Public`] routes and local reads).
    Anonymous,
}

impl Caller {
    /// How the caller is named in logs and audit events (never a credential).
    pub fn name(&self) -> &str {
        match self {
            Self::Identity(email) => email,
            Self::Token => "api-token",
            Self::Anonymous => "anonymous",
        }
    }
}

/// A group of identities a route may be restricted to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Cloud Scheduler and other invokers of `POST /run` / `POST /check` (`LIFEBOAT_ALLOWED_INVOKERS`).
    Scheduler,
    /// Pub/Sub push subscriptions (`LIFEBOAT_PUSH_INVOKERS`): `POST /pubsub` only.
    Push,
    /// Console admins (`LIFEBOAT_ADMINS`): every action.
    Admin,
    /// Console viewers (`LIFEBOAT_VIEWERS`) and admins: read-only pages and API.
    Viewer,
}

impl Role {
    /// The variable that lists the role's members.
    pub fn variable(self) -> &'static str {
        match self {
            Self::Scheduler => "LIFEBOAT_ALLOWED_INVOKERS",
            Self::Push => "LIFEBOAT_PUSH_INVOKERS",
            Self::Admin => "LIFEBOAT_ADMINS",
            Self::Viewer => "LIFEBOAT_VIEWERS or LIFEBOAT_ADMINS",
        }
    }
}

/// Who may call one route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Anyone, without credentials.
    Public,
    /// The token holder and the members of a role.
    Role(Role),
}

/// Why a request was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// No usable credentials: 401.
    #[error("missing or malformed credentials: send Authorization: Bearer <ID token or API token>")]
    Unauthenticated,
    /// A JWT off Cloud Run, where nothing verified it: 401.
    #[error(
        "ID tokens are trusted only on Cloud Run, which verifies them; here send Authorization: Bearer <LIFEBOAT_API_TOKEN>"
    )]
    UnverifiedToken,
    /// An ID token whose `email_verified` is not boolean `true` (nor absent for a service account): 401.
    #[error("the ID token's e-mail is not verified (email_verified must be true)")]
    EmailNotVerified,
    /// `X-Serverless-Authorization` and `Authorization` name different callers: 401.
    #[error("X-Serverless-Authorization and Authorization name different callers; send one identity")]
    Conflicting,
    /// Credentials of somebody not allowed on this route: 403.
    #[error("{caller} is not allowed to call this endpoint ({role} lists who may)", role = role.variable())]
    Forbidden {
        /// The caller's name.
        caller: String,
        /// The role the route needs.
        role: Role,
    },
}

impl AuthError {
    /// True for the refusals that answer 403 (known caller, wrong route); the others answer 401.
    pub fn is_forbidden(&self) -> bool {
        matches!(self, Self::Forbidden { .. })
    }
}

impl Classify for AuthError {
    /// Refusals for good: the same credentials get the same answer.
    fn kind(&self) -> ErrorKind {
        ErrorKind::Refused
    }
}

impl AuthConfig {
    /// True when nobody at all could be admitted to a role-restricted route.
    pub fn is_closed(&self) -> bool {
        self.api_token.is_none()
            && (!self.trust_id_tokens
                || (self.allowed_invokers.is_empty()
                    && self.push_invokers.is_empty()
                    && self.admins.is_empty()
                    && self.viewers.is_empty()))
    }

    /// Who is calling, from the request headers alone (see the module docs).
    pub fn identify(&self, headers: &HeaderMap) -> Result<Caller, AuthError> {
        let authorization = bearer(headers, http::header::AUTHORIZATION.as_str())?;
        if !self.trust_id_tokens {
            return match authorization {
                None => Ok(Caller::Anonymous),
                Some(token) if self.is_api_token(token) => Ok(Caller::Token),
                Some(token) if looks_like_jwt(token) => Err(AuthError::UnverifiedToken),
                Some(_) => Err(AuthError::Unauthenticated),
            };
        }
        match bearer(headers, SERVERLESS_AUTHORIZATION)? {
            Some(verified) => {
                let email = jwt_email(verified)?;
                match authorization {
                    None => Ok(Caller::Identity(email)),
                    Some(other) if jwt_email(other).is_ok_and(|e| e == email) => Ok(Caller::Identity(email)),
                    Some(_) => Err(AuthError::Conflicting),
                }
            }
            None => match authorization {
                None => Ok(Caller::Anonymous),
                Some(token) if self.is_api_token(token) => Ok(Caller::Token),
                Some(token) => jwt_email(token).map(Caller::Identity),
            },
        }
    }

    /// Whether `caller` may use a route with `access`.
    pub fn allows(&self, caller: &Caller, access: Access) -> Result<(), AuthError> {
        let Access::Role(role) = access else { return Ok(()) };
        let members: Vec<&String> = match role {
            Role::Scheduler => self.allowed_invokers.iter().collect(),
            Role::Push => self.push_invokers.iter().collect(),
            Role::Admin => self.admins.iter().collect(),
            Role::Viewer => self.viewers.iter().chain(&self.admins).collect(),
        };
        match caller {
            Caller::Token => Ok(()),
            Caller::Identity(email) if members.contains(&email) => Ok(()),
            Caller::Identity(email) => Err(AuthError::Forbidden { caller: email.clone(), role }),
            Caller::Anonymous if role == Role::Viewer && self.local_reads_open() => Ok(()),
            Caller::Anonymous => Err(AuthError::Unauthenticated),
        }
    }

    /// Identifies the caller and checks it against the route's rule.
    pub fn admit(&self, headers: &HeaderMap, access: Access) -> Result<Caller, AuthError> {
        if access == Access::Public {
            // A public route never refuses, but says who called when it can.
            return Ok(self.identify(headers).unwrap_or(Caller::Anonymous));
        }
        let caller = self.identify(headers)?;
        self.allows(&caller, access)?;
        Ok(caller)
    }

    /// Off Cloud Run and listening on loopback only: whoever reaches the port is on this machine.
    fn local_reads_open(&self) -> bool {
        !self.trust_id_tokens && self.bind.is_some_and(|ip| ip.is_loopback())
    }

    fn is_api_token(&self, token: &str) -> bool {
        self.api_token.as_ref().is_some_and(|t| constant_time_eq(token.as_bytes(), t.expose().as_bytes()))
    }
}

/// The bearer credential of header `name`: `None` when the header is absent; a header that is
/// present but not `Bearer <something>` is refused (rather than treated as absent, which would
/// let a malformed `X-Serverless-Authorization` fall back to `Authorization`).
fn bearer<'h>(headers: &'h HeaderMap, name: &str) -> Result<Option<&'h str>, AuthError> {
    let mut values = headers.get_all(name).iter();
    let Some(value) = values.next() else { return Ok(None) };
    if values.next().is_some() {
        return Err(AuthError::Conflicting);
    }
    let token = value
        .to_str()
        .ok()
        .and_then(|h| h.strip_prefix("Bearer ").or_else(|| h.strip_prefix("bearer ")))
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .ok_or(AuthError::Unauthenticated)?;
    Ok(Some(token))
}

fn looks_like_jwt(token: &str) -> bool {
    token.split('.').count() == 3
}

/// The lower-cased `email` claim of a JWT's payload whose e-mail is verified (the signature is
/// not checked: Cloud Run did, see the module docs).
fn jwt_email(token: &str) -> Result<String, AuthError> {
    let mut parts = token.split('.');
    let (Some(_header), Some(payload), Some(_signature), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(AuthError::Unauthenticated);
    };
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .map_err(|_| AuthError::Unauthenticated)?;
    let claims: serde_json::Value = serde_json::from_slice(&bytes).map_err(|_| AuthError::Unauthenticated)?;
    let email = claims.get("email").and_then(serde_json::Value::as_str).ok_or(AuthError::Unauthenticated)?;
    let email = email.trim().to_lowercase();
    if email.is_empty() || !email.contains('@') {
        return Err(AuthError::Unauthenticated);
    }
    match claims.get("email_verified") {
        Some(serde_json::Value::Bool(true)) => Ok(email),
        None if email.ends_with(".gserviceaccount.com") => Ok(email),
        _ => Err(AuthError::EmailNotVerified),
    }
}

/// Builds an unsigned JWT carrying `email` (what Cloud Run forwards). For tests and local tools.
pub fn unsigned_jwt_for(email: &str) -> String {
    jwt_with_claims(&serde_json::json!({"email": email, "email_verified": true}))
}

/// Builds an unsigned JWT with the given claims (tests: odd `email_verified` values).
pub fn jwt_with_claims(claims: &serde_json::Value) -> String {
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let header = b64.encode(br#"{"alg":"RS256","typ":"JWT"}"#);
    let payload = b64.encode(claims.to_string());
    format!("{header}.{payload}.SIGNATURE_REMOVED_BY_GOOGLE")
}

#[cfg(test)]
mod tests {
    use http::HeaderValue;

    use super::*;
    use crate::core::secret::Secret;

    const PUSH: &str = "push@p.iam.gserviceaccount.com";
    const SCHED: &str = "scheduler@p.iam.gserviceaccount.com";
    const TOKEN: &str = "local-token-0123456789";

    fn config(on_cloud_run: bool) -> AuthConfig {
        AuthConfig {
            allowed_invokers: vec![SCHED.into()],
            push_invokers: vec![PUSH.into()],
            admins: vec!["admin@example.com".into()],
            viewers: vec!["viewer@example.com".into()],
            api_token: Some(Secret::new(TOKEN)),
            trust_id_tokens: on_cloud_run,
            bind: Some(if on_cloud_run { [0, 0, 0, 0].into() } else { [127, 0, 0, 1].into() }),
        }
    }

    fn headers(pairs: &[(&str, String)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(http::HeaderName::from_bytes(k.as_bytes()).expect("name"), HeaderValue::from_str(v).expect("v"));
        }
        h
    }

    fn bearer_of(token: &str) -> String {
        format!("Bearer {token}")
    }

    #[test]
    fn on_cloud_run_an_allowed_identity_passes_its_route_only() {
        let c = config(true);
        let push = headers(&[("authorization", bearer_of(&unsigned_jwt_for("Push@p.iam.gserviceaccount.com")))]);
        assert_eq!(c.admit(&push, Access::Role(Role::Push)), Ok(Caller::Identity(PUSH.into())));
        let err = c.admit(&push, Access::Role(Role::Scheduler)).expect_err("push on /check");
        assert!(err.is_forbidden(), "{err}");
        assert!(err.to_string().contains("LIFEBOAT_ALLOWED_INVOKERS"), "{err}");
        let sched = headers(&[("authorization", bearer_of(&unsigned_jwt_for(SCHED)))]);
        assert!(c.admit(&sched, Access::Role(Role::Push)).expect_err("scheduler on /pubsub").is_forbidden());
        assert!(c.admit(&sched, Access::Role(Role::Scheduler)).is_ok());
    }

    #[test]
    fn off_cloud_run_jwts_are_refused_and_only_the_token_authenticates() {
        let c = config(false);
        let forged = headers(&[("authorization", bearer_of(&unsigned_jwt_for(SCHED)))]);
        assert_eq!(c.admit(&forged, Access::Role(Role::Scheduler)), Err(AuthError::UnverifiedToken));
        let serverless = headers(&[(SERVERLESS_AUTHORIZATION, bearer_of(&unsigned_jwt_for(SCHED)))]);
        assert_eq!(c.admit(&serverless, Access::Role(Role::Scheduler)), Err(AuthError::Unauthenticated));
        let token = headers(&[("authorization", bearer_of(TOKEN))]);
        for role in [Role::Scheduler, Role::Push, Role::Admin, Role::Viewer] {
            assert_eq!(c.admit(&token, Access::Role(role)), Ok(Caller::Token));
        }
        let wrong = headers(&[("authorization", bearer_of("local-token-0123456780"))]);
        assert_eq!(c.admit(&wrong, Access::Role(Role::Admin)), Err(AuthError::Unauthenticated));
    }

    #[test]
    fn serverless_authorization_is_the_verified_header_and_both_must_agree() {
        let c = config(true);
        let admin = unsigned_jwt_for("admin@example.com");
        let only = headers(&[(SERVERLESS_AUTHORIZATION, bearer_of(&admin))]);
        assert_eq!(c.admit(&only, Access::Role(Role::Admin)), Ok(Caller::Identity("admin@example.com".into())));
        let same = headers(&[(SERVERLESS_AUTHORIZATION, bearer_of(&admin)), ("authorization", bearer_of(&admin))]);
        assert!(c.admit(&same, Access::Role(Role::Admin)).is_ok());
        // The verified header names a viewer; the unverified one claims an admin.
        let lying = headers(&[
            (SERVERLESS_AUTHORIZATION, bearer_of(&unsigned_jwt_for("viewer@example.com"))),
            ("authorization", bearer_of(&admin)),
        ]);
        assert_eq!(c.admit(&lying, Access::Role(Role::Viewer)), Err(AuthError::Conflicting));
        let with_token = headers(&[(SERVERLESS_AUTHORIZATION, bearer_of(&admin)), ("authorization", bearer_of(TOKEN))]);
        assert_eq!(c.admit(&with_token, Access::Role(Role::Admin)), Err(AuthError::Conflicting));
        let twice =
            headers(&[(SERVERLESS_AUTHORIZATION, bearer_of(&admin)), (SERVERLESS_AUTHORIZATION, bearer_of(&admin))]);
        assert_eq!(c.admit(&twice, Access::Role(Role::Admin)), Err(AuthError::Conflicting));
        let garbage = headers(&[(SERVERLESS_AUTHORIZATION, "Basic x".into()), ("authorization", bearer_of(&admin))]);
        assert_eq!(c.admit(&garbage, Access::Role(Role::Admin)), Err(AuthError::Unauthenticated));
    }

    #[test]
    fn email_verified_must_be_boolean_true_or_absent_for_a_service_account() {
        let c = config(true);
        let with = |claims: serde_json::Value| headers(&[("authorization", bearer_of(&jwt_with_claims(&claims)))]);
        let admit = |h: &HeaderMap| c.admit(h, Access::Role(Role::Scheduler));
        assert!(admit(&with(serde_json::json!({"email": SCHED, "email_verified": true}))).is_ok());
        assert!(admit(&with(serde_json::json!({"email": SCHED}))).is_ok(), "absent, service account");
        for bad in
            [serde_json::json!(false), serde_json::json!("false"), serde_json::json!("true"), serde_json::json!(1)]
        {
            let h = with(serde_json::json!({"email": SCHED, "email_verified": bad}));
            assert_eq!(admit(&h), Err(AuthError::EmailNotVerified), "{bad}");
        }
        let person = with(serde_json::json!({"email": "admin@example.com"}));
        assert_eq!(c.admit(&person, Access::Role(Role::Admin)), Err(AuthError::EmailNotVerified));
    }

    #[test]
    fn viewers_read_admins_act() {
        let c = config(true);
        let viewer = headers(&[("authorization", bearer_of(&unsigned_jwt_for("viewer@example.com")))]);
        let admin = headers(&[("authorization", bearer_of(&unsigned_jwt_for("admin@example.com")))]);
        assert!(c.admit(&viewer, Access::Role(Role::Viewer)).is_ok());
        assert!(c.admit(&viewer, Access::Role(Role::Admin)).expect_err("viewer acts").is_forbidden());
        assert!(c.admit(&admin, Access::Role(Role::Viewer)).is_ok());
        assert!(c.admit(&admin, Access::Role(Role::Admin)).is_ok());
        assert_eq!(c.admit(&HeaderMap::new(), Access::Role(Role::Viewer)), Err(AuthError::Unauthenticated));
    }

    #[test]
    fn local_reads_are_open_only_on_loopback_off_cloud_run() {
        let none = HeaderMap::new();
        assert_eq!(config(false).admit(&none, Access::Role(Role::Viewer)), Ok(Caller::Anonymous));
        assert_eq!(config(false).admit(&none, Access::Role(Role::Admin)), Err(AuthError::Unauthenticated));
        let everywhere = AuthConfig { bind: Some([0, 0, 0, 0].into()), ..config(false) };
        assert_eq!(everywhere.admit(&none, Access::Role(Role::Viewer)), Err(AuthError::Unauthenticated));
        assert_eq!(config(true).admit(&none, Access::Role(Role::Viewer)), Err(AuthError::Unauthenticated));
        assert_eq!(config(true).admit(&none, Access::Public), Ok(Caller::Anonymous));
    }

    #[test]
    fn missing_or_garbage_credentials_are_unauthenticated() {
        let c = config(true);
        for value in ["Basic abc", "Bearer ", "Bearer not-a-jwt", "Bearer a.!!!.c", "Bearer a.e30.c"] {
            let h = headers(&[("authorization", value.to_owned())]);
            assert_eq!(c.admit(&h, Access::Role(Role::Scheduler)), Err(AuthError::Unauthenticated), "{value}");
        }
    }

    #[test]
    fn closed_when_nothing_configured() {
        assert!(AuthConfig::default().is_closed());
        assert!(AuthConfig { trust_id_tokens: false, ..config(false) }.api_token.is_some());
        let jwt_only = AuthConfig { api_token: None, ..config(false) };
        assert!(jwt_only.is_closed(), "off Cloud Run identities cannot get in");
    }
}
