//! Delivering alerts over HTTP: a Slack incoming webhook, or a generic JSON webhook.
//!
//! The webhook URL is a [`Secret`]: it is never logged, and every error message is built
//! without it (reqwest's URL is stripped, and the text is redacted once more for safety).
//! Answers are classified for the caller: 2xx delivered; 429 rate-limited (with the
//! `Retry-After` delay); 408 and 5xx worth retrying; network failures worth retrying; any other
//! 4xx a permanent refusal.

use std::fmt;
use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::core::alerts::Alert;
use crate::core::secret::Secret;
use crate::error::{Classify, ErrorKind};

/// Timeout of one delivery.
pub const TIMEOUT: Duration = Duration::from_secs(10);

/// What the endpoint expects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Slack's incoming-webhook payload (`text` plus `blocks`).
    Slack,
    /// The alert as JSON ([`Alert::webhook_payload`]).
    Json,
}

/// Why an alert was not delivered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DeliveryError {
    /// 429.
    #[error("{channel} is rate-limiting alerts (429){}", hint(.retry_after))]
    RateLimited {
        /// Channel name.
        channel: String,
        /// How long it asked us to wait.
        retry_after: Option<Duration>,
    },
    /// 408 or 5xx.
    #[error("{channel} answered {status}; the alert will be retried{}", hint(.retry_after))]
    Unavailable {
        /// Channel name.
        channel: String,
        /// HTTP status.
        status: u16,
        /// How long it asked us to wait.
        retry_after: Option<Duration>,
    },
    /// Any other non-2xx answer: not retried.
    #[error("{channel} refused the alert ({status}: {body}); it is not retried")]
    Rejected {
        /// Channel name.
        channel: String,
        /// HTTP status.
        status: u16,
        /// The start of the answer (Slack says e.g. `channel_not_found`).
        body: String,
    },
    /// No answer (connection refused, timeout…).
    #[error("cannot reach {channel}: {message}; the alert will be retried")]
    Network {
        /// Channel name.
        channel: String,
        /// What happened (without the URL).
        message: String,
    },
}

fn hint(retry_after: &Option<Duration>) -> String {
    retry_after.map(|d| format!("; retry after {} s", d.as_secs())).unwrap_or_default()
}

impl Classify for DeliveryError {
    /// Rate limits, 408/5xx answers and no answer at all are transient (delivered again later);
    /// any other refusal is for good.
    fn kind(&self) -> ErrorKind {
        match self {
            Self::RateLimited { .. } | Self::Unavailable { .. } | Self::Network { .. } => ErrorKind::Transient,
            Self::Rejected { .. } => ErrorKind::Refused,
        }
    }
}

impl DeliveryError {
    /// The delay the endpoint asked for.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::RateLimited { retry_after, .. } | Self::Unavailable { retry_after, .. } => *retry_after,
            _ => None,
        }
    }
}

/// Why a channel cannot be set up.
#[derive(Debug, thiserror::Error)]
pub enum ChannelError {
    /// The URL is not http(s) (its value is not shown).
    #[error("the {0} URL is not an http:// or https:// URL (value not shown: it is a secret)")]
    BadUrl(String),
    /// The HTTP client cannot be built.
    #[error("cannot build the HTTP client: {0}")]
    Client(String),
}

impl Classify for ChannelError {
    fn kind(&self) -> ErrorKind {
        match self {
            Self::BadUrl(_) => ErrorKind::Config,
            Self::Client(_) => ErrorKind::Internal,
        }
    }
}

/// One place alerts go.
#[derive(Clone)]
pub struct Channel {
    name: String,
    url: Secret,
    format: Format,
    http: reqwest::Client,
}

impl fmt::Debug for Channel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Channel").field("name", &self.name).field("format", &self.format).finish_non_exhaustive()
    }
}

impl Channel {
    /// A channel named `name` posting to `url`.
    pub fn new(name: &str, url: &Secret, format: Format) -> Result<Self, ChannelError> {
        let ok =
            reqwest::Url::parse(url.expose()).is_ok_and(|u| matches!(u.scheme(), "http" | "https") && u.has_host());
        if !ok {
            return Err(ChannelError::BadUrl(name.to_owned()));
        }
        let _ = rustls::crypto::ring::default_provider().install_default();
        let http = reqwest::Client::builder()
            .timeout(TIMEOUT)
            .connect_timeout(Duration::from_secs(5))
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("lifeboat-monitor/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| ChannelError::Client(url.redact_in(&e.without_url().to_string())))?;
        Ok(Self { name: name.to_owned(), url: url.clone(), format, http })
    }

    /// The channel's name (`slack`, `webhook`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Posts `alert`; `now` resolves a `Retry-After` given as an HTTP date.
    pub async fn send(&self, alert: &Alert, now: DateTime<Utc>) -> Result<(), DeliveryError> {
        let body = match self.format {
            Format::Slack => alert.slack_payload(),
            Format::Json => alert.webhook_payload(),
        };
        let response = self.http.post(self.url.expose()).json(&body).send().await.map_err(|e| {
            DeliveryError::Network { channel: self.name.clone(), message: self.describe(&e.without_url()) }
        })?;
        let status = response.status();
        if status.is_success() {
            return Ok(());
        }
        let retry_after = response
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| parse_retry_after(v, now));
        let code = status.as_u16();
        let text = response.text().await.unwrap_or_default();
        let body: String = self.url.redact_in(text.trim()).chars().take(200).collect();
        Err(match code {
            429 => DeliveryError::RateLimited { channel: self.name.clone(), retry_after },
            408 | 500..=599 => DeliveryError::Unavailable { channel: self.name.clone(), status: code, retry_after },
            _ => DeliveryError::Rejected { channel: self.name.clone(), status: code, body },
        })
    }

    /// An error and its causes as one line, without the URL.
    fn describe(&self, e: &dyn std::error::Error) -> String {
        let mut text = e.to_string();
        let mut source = e.source();
        while let Some(s) = source {
            text.push_str(": ");
            text.push_str(&s.to_string());
            source = s.source();
        }
        self.url.redact_in(&text)
    }
}

/// `Retry-After`: delay seconds or an HTTP date (RFC 9110).
pub fn parse_retry_after(value: &str, now: DateTime<Utc>) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = DateTime::parse_from_rfc2822(value).ok()?.to_utc();
    Some((at - now).to_std().unwrap_or(Duration::ZERO))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_in_seconds_or_as_a_date() {
        let now = DateTime::parse_from_rfc3339("2015-10-21T07:27:30Z").expect("t").to_utc();
        assert_eq!(parse_retry_after("2", now), Some(Duration::from_secs(2)));
        assert_eq!(parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now), Some(Duration::from_secs(30)));
        assert_eq!(parse_retry_after("Wed, 21 Oct 2015 07:00:00 GMT", now), Some(Duration::ZERO));
        assert_eq!(parse_retry_after("soon", now), None);
    }

    #[test]
    fn only_refusals_are_not_retried() {
        let channel = || "slack".to_owned();
        let transient = [
            DeliveryError::RateLimited { channel: channel(), retry_after: None },
            DeliveryError::Unavailable { channel: channel(), status: 503, retry_after: None },
            DeliveryError::Network { channel: channel(), message: "connection refused".into() },
        ];
        for e in transient {
            assert!(e.is_retryable(), "{e}");
        }
        let refused = DeliveryError::Rejected { channel: channel(), status: 404, body: "no_service".into() };
        assert_eq!((refused.kind(), refused.is_retryable()), (ErrorKind::Refused, false));
    }

    #[test]
    fn bad_urls_are_refused_without_showing_them() {
        let secret = Secret::new("hooks.slack.com/services/T000/B000/XXXXSECRET");
        let e = Channel::new("slack", &secret, Format::Slack).expect_err("no scheme");
        assert_eq!(e.kind(), ErrorKind::Config);
        assert!(!e.to_string().contains("XXXXSECRET"), "{e}");
        let ok = Channel::new("slack", &Secret::new("https://hooks.slack.com/services/T/B/SECRET"), Format::Slack)
            .expect("valid");
        assert!(!format!("{ok:?}").contains("SECRET"));
    }

    #[tokio::test]
    async fn unreachable_endpoint_errors_never_contain_the_url() {
        // A port bound for the whole test but never listened on: connections are refused, and no
        // other test can take the number meanwhile.
        let socket = tokio::net::TcpSocket::new_v4().expect("socket");
        socket.bind(([127, 0, 0, 1], 0).into()).expect("bind 127.0.0.1:0");
        let port = socket.local_addr().expect("bound address").port();
        let secret = Secret::new(format!("http://127.0.0.1:{port}/services/T000/B000/TOPSECRETTOKEN"));
        let ch = Channel::new("slack", &secret, Format::Slack).expect("channel");
        let alert = Alert {
            id: "x".into(),
            severity: crate::core::alerts::Severity::Failure,
            title: "t".into(),
            source: "s".into(),
            reason: "r".into(),
            at: Utc::now(),
            rerun: None,
            facts: vec![],
            origin: "test".into(),
        };
        let e = ch.send(&alert, Utc::now()).await.expect_err("nothing listens");
        assert_eq!(e.kind(), ErrorKind::Transient);
        assert!(e.is_retryable());
        let text = format!("{e} {e:?}");
        assert!(!text.contains("TOPSECRETTOKEN") && !text.contains("/services/"), "{text}");
    }
}
