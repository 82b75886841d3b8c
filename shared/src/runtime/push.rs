//! Pub/Sub push: the JSON envelope Pub/Sub POSTs to a push endpoint.
//!
//! ```json
//! {"message": {"data": "<base64>", "attributes": {"k": "v"}, "messageId": "123",
//!              "message_id": "123", "publishTime": "2026-…Z", "publish_time": "2026-…Z"},
//!  "subscription": "projects/P/subscriptions/S"}
//! ```
//!
//! Pub/Sub sends both the camelCase and the snake_case spelling of `messageId`/`publishTime`;
//! either is accepted.

use std::collections::BTreeMap;

use base64::Engine as _;
use chrono::{DateTime, Utc};
use serde::Deserialize;

use crate::error::{Classify, ErrorKind};

/// A message received through a push subscription.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PushMessage {
    /// The decoded data.
    pub data: Vec<u8>,
    /// Attributes.
    pub attributes: BTreeMap<String, String>,
    /// Pub/Sub's message id (the same on every redelivery).
    pub message_id: String,
    /// When it was published.
    pub publish_time: Option<DateTime<Utc>>,
    /// The subscription that delivered it.
    pub subscription: String,
}

/// Why a body is not a usable push envelope (answered with 400).
#[derive(Debug, thiserror::Error)]
pub enum PushError {
    /// Not JSON of the envelope's shape.
    #[error("not a Pub/Sub push envelope: {0}")]
    Malformed(#[from] serde_json::Error),
    /// No message id.
    #[error("the push envelope has no message.messageId")]
    NoMessageId,
    /// The message id cannot be used as a name.
    #[error("message id {0:?} is not 1-200 letters, digits, '-', '_' or '.'")]
    BadMessageId(String),
    /// No data.
    #[error("the pushed message has no data")]
    NoData,
    /// Data is not base64.
    #[error("message.data is not base64: {0}")]
    Base64(#[from] base64::DecodeError),
}

impl Classify for PushError {
    /// The body failed a format check: sending the same body again cannot help.
    fn kind(&self) -> ErrorKind {
        ErrorKind::Integrity
    }
}

#[derive(Deserialize)]
struct Envelope {
    message: Message,
    #[serde(default)]
    subscription: String,
}

#[derive(Deserialize)]
struct Message {
    #[serde(default)]
    data: Option<String>,
    #[serde(default)]
    attributes: Option<BTreeMap<String, String>>,
    #[serde(default, rename = "messageId")]
    message_id_camel: Option<String>,
    #[serde(default, rename = "message_id")]
    message_id_snake: Option<String>,
    #[serde(default, rename = "publishTime")]
    publish_time_camel: Option<DateTime<Utc>>,
    #[serde(default, rename = "publish_time")]
    publish_time_snake: Option<DateTime<Utc>>,
}

/// Parses and checks a push envelope.
pub fn parse(body: &[u8]) -> Result<PushMessage, PushError> {
    let e: Envelope = serde_json::from_slice(body)?;
    let m = e.message;
    let message_id =
        m.message_id_camel.or(m.message_id_snake).filter(|s| !s.is_empty()).ok_or(PushError::NoMessageId)?;
    if message_id.len() > 200
        || !message_id.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        || message_id.starts_with('.')
    {
        return Err(PushError::BadMessageId(message_id.chars().take(40).collect()));
    }
    let data = m.data.filter(|d| !d.is_empty()).ok_or(PushError::NoData)?;
    let data = base64::engine::general_purpose::STANDARD.decode(data.trim())?;
    Ok(PushMessage {
        data,
        attributes: m.attributes.unwrap_or_default(),
        message_id,
        publish_time: m.publish_time_camel.or(m.publish_time_snake),
        subscription: e.subscription,
    })
}

/// The envelope Pub/Sub would push for a message (tests and local tools).
pub fn envelope(
    data: &[u8],
    attributes: &BTreeMap<String, String>,
    message_id: &str,
    publish_time: DateTime<Utc>,
    subscription: &str,
) -> serde_json::Value {
    let time = publish_time.to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    serde_json::json!({
        "message": {
            "data": base64::engine::general_purpose::STANDARD.encode(data),
            "attributes": attributes,
            "messageId": message_id,
            "message_id": message_id,
            "publishTime": time,
            "publish_time": time,
        },
        "subscription": subscription,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_real_envelope_with_both_spellings() {
        let body = br#"{"message":{"attributes":{"outcome":"failure"},"data":"eyJhIjoxfQ==","messageId":"2070443601311540","message_id":"2070443601311540","publishTime":"2021-02-26T19:13:55.749Z","publish_time":"2021-02-26T19:13:55.749Z"},"subscription":"projects/myproject/subscriptions/mysubscription"}"#;
        let m = parse(body).expect("valid");
        assert_eq!(m.data, br#"{"a":1}"#);
        assert_eq!(m.message_id, "2070443601311540");
        assert_eq!(m.attributes["outcome"], "failure");
        assert_eq!(m.subscription, "projects/myproject/subscriptions/mysubscription");
        assert!(m.publish_time.is_some());
        let t = DateTime::parse_from_rfc3339("2026-11-26T02:00:00Z").expect("t").to_utc();
        let built = envelope(b"hi", &BTreeMap::new(), "42", t, "projects/p/subscriptions/s");
        assert_eq!(parse(built.to_string().as_bytes()).expect("own envelope").data, b"hi");
    }

    #[test]
    fn refuses_malformed_envelopes_with_a_reason() {
        let cases: [(&[u8], &str); 7] = [
            (b"", "not a Pub/Sub push envelope"),
            (b"[1,2]", "not a Pub/Sub push envelope"),
            (br#"{"subscription":"s"}"#, "missing field `message`"),
            (br#"{"message":{"data":"eA=="}}"#, "no message.messageId"),
            (br#"{"message":{"messageId":"../x","data":"eA=="}}"#, "is not 1-200"),
            (br#"{"message":{"messageId":"1"}}"#, "has no data"),
            (br#"{"message":{"messageId":"1","data":"%%%"}}"#, "not base64"),
        ];
        for (body, reason) in cases {
            let e = parse(body).expect_err("malformed");
            assert!(e.to_string().contains(reason), "{e} should mention {reason}");
        }
    }
}
