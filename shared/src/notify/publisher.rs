//! Publishers of result events: Pub/Sub (`gcloud-pubsub`; the emulator when
//! `PUBSUB_EMULATOR_HOST` is set), or the log when no topic is configured.
//!
//! On Pub/Sub the message data is the whole event (structured mode) and the CloudEvents
//! attributes are repeated as `ce-*` message attributes (binary mode) so subscriptions can filter.

use std::fmt;

use async_trait::async_trait;
use gcloud_gax::grpc::Code;

use crate::core::events::Event;
use crate::core::net::NetLimits;
use crate::error::{Classify, ErrorKind};

/// Why publishing failed.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    /// No usable Google credentials (outside Cloud Run: `GOOGLE_APPLICATION_CREDENTIALS`).
    #[error("cannot connect to Pub/Sub: {0}")]
    Credentials(String),
    /// Could not reach Pub/Sub.
    #[error("cannot connect to Pub/Sub: {0}")]
    Connect(String),
    /// The publish call failed.
    #[error("publishing to {topic} failed: {message}")]
    Publish {
        /// Topic.
        topic: String,
        /// Pub/Sub's status code: whether trying again can help.
        code: Code,
        /// What happened.
        message: String,
    },
    /// Pub/Sub accepted the call but named no message.
    #[error("publishing to {topic} failed: no message id returned")]
    NoMessageId {
        /// Topic.
        topic: String,
    },
}

impl Classify for PublishError {
    fn kind(&self) -> ErrorKind {
        match self {
            Self::Credentials(_) => ErrorKind::Config,
            Self::Connect(_) => ErrorKind::Transient,
            Self::Publish { code, .. } => match code {
                Code::Unavailable
                | Code::DeadlineExceeded
                | Code::ResourceExhausted
                | Code::Aborted
                | Code::Internal
                | Code::Unknown
                | Code::Cancelled => ErrorKind::Transient,
                Code::NotFound => ErrorKind::NotFound,
                Code::InvalidArgument | Code::FailedPrecondition | Code::OutOfRange => ErrorKind::Config,
                Code::PermissionDenied | Code::Unauthenticated | Code::Unimplemented | Code::AlreadyExists => {
                    ErrorKind::Refused
                }
                Code::Ok | Code::DataLoss => ErrorKind::Internal,
            },
            Self::NoMessageId { .. } => ErrorKind::Internal,
        }
    }
}

/// Something that delivers result events.
#[async_trait]
pub trait Publisher: Send + Sync + fmt::Debug {
    /// Delivers the event; returns the message id.
    async fn publish(&self, event: &Event) -> Result<String, PublishError>;
}

/// Writes events to the log only (no topic configured).
#[derive(Debug, Default)]
pub struct LogPublisher;

#[async_trait]
impl Publisher for LogPublisher {
    async fn publish(&self, event: &Event) -> Result<String, PublishError> {
        tracing::info!(event = %event.to_json(), "result event (no LIFEBOAT_RESULTS_TOPIC configured, logged only)");
        Ok(event.id.clone())
    }
}

/// Publishes to a Pub/Sub topic (`gcloud-pubsub`; the emulator when `PUBSUB_EMULATOR_HOST` is set).
pub struct PubSubPublisher {
    publisher: gcloud_pubsub::publisher::Publisher,
    topic: String,
}

impl fmt::Debug for PubSubPublisher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PubSubPublisher").field("topic", &self.topic).finish_non_exhaustive()
    }
}

/// A Pub/Sub client for the project (emulator-aware), with the default [`NetLimits`].
pub async fn pubsub_client(
    project: Option<&str>,
    emulator: Option<&str>,
) -> Result<gcloud_pubsub::client::Client, PublishError> {
    pubsub_client_with(project, emulator, &NetLimits::default()).await
}

/// A Pub/Sub client whose gRPC calls obey `net`: the connect timeout, and the stall timeout as
/// the limit of each call (a publish is one small request).
pub async fn pubsub_client_with(
    project: Option<&str>,
    emulator: Option<&str>,
    net: &NetLimits,
) -> Result<gcloud_pubsub::client::Client, PublishError> {
    use gcloud_gax::conn::{ConnectionOptions, Environment};
    use gcloud_pubsub::client::{Client, ClientConfig};
    let connection_option = ConnectionOptions {
        timeout: Some(net.stall),
        connect_timeout: Some(net.connect),
        ..ConnectionOptions::default()
    };
    let config = match emulator {
        Some(host) => ClientConfig {
            project_id: Some(project.unwrap_or("lifeboat-local").to_owned()),
            environment: Environment::Emulator(host.to_owned()),
            connection_option,
            ..ClientConfig::default()
        },
        None => ClientConfig { project_id: project.map(str::to_owned), connection_option, ..ClientConfig::default() }
            .with_auth()
            .await
            .map_err(|e| PublishError::Credentials(e.to_string()))?,
    };
    Client::new(config).await.map_err(|e| PublishError::Connect(e.to_string()))
}

impl PubSubPublisher {
    /// Connects to `topic` (an id, or `projects/P/topics/T`), with the default [`NetLimits`].
    pub async fn connect(topic: &str, project: Option<&str>, emulator: Option<&str>) -> Result<Self, PublishError> {
        Self::connect_with(topic, project, emulator, &NetLimits::default()).await
    }

    /// Connects to `topic`; every call obeys `net`.
    pub async fn connect_with(
        topic: &str,
        project: Option<&str>,
        emulator: Option<&str>,
        net: &NetLimits,
    ) -> Result<Self, PublishError> {
        let (project, id) = match topic.strip_prefix("projects/").and_then(|r| r.split_once("/topics/")) {
            Some((p, t)) => (Some(p), t),
            None => (project, topic),
        };
        let client = pubsub_client_with(project, emulator, net).await?;
        let publisher = client.topic(id).new_publisher(None);
        Ok(Self { publisher, topic: client.fully_qualified_topic_name(id) })
    }
}

#[async_trait]
impl Publisher for PubSubPublisher {
    async fn publish(&self, event: &Event) -> Result<String, PublishError> {
        let message = gcloud_googleapis::pubsub::v1::PubsubMessage {
            data: event.to_json().into_bytes(),
            attributes: event.attributes(),
            ..Default::default()
        };
        let ids = self.publisher.publish_immediately(vec![message], None).await.map_err(|e| PublishError::Publish {
            topic: self.topic.clone(),
            code: e.code(),
            message: e.message().to_owned(),
        })?;
        ids.into_iter().next().ok_or_else(|| PublishError::NoMessageId { topic: self.topic.clone() })
    }
}
