//! What a program is built from ([`Services`]), why building it can fail ([`StartError`]), and
//! publishing a run's result.

use std::sync::Arc;

use chrono::{DateTime, Utc};

use crate::config::{Common, Env};
use crate::core::clock::Clock;
use crate::core::events::{Event, RunResult};
use crate::error::{Classify, ErrorKind};
use crate::notify::publisher::{LogPublisher, PubSubPublisher, PublishError, Publisher};
use crate::notify::slack::ChannelError;
use crate::postgres::PgError;
use crate::store::{DynStore, StoreError};

/// The services a program is built from.
#[derive(Debug, Clone)]
pub struct Services {
    /// The environment snapshot.
    pub env: Env,
    /// Shared settings.
    pub common: Common,
    /// The backup store.
    pub store: DynStore,
    /// The state store (`LIFEBOAT_STATE_DESTINATION`): monitor state and claims, under `state/`.
    /// The backup store itself unless configured otherwise.
    pub state: DynStore,
    /// Where result events go.
    pub publisher: Arc<dyn Publisher>,
    /// Where "now" comes from: the system clock, or a manual one a test injects.
    pub clock: Clock,
}

impl Services {
    /// Services on the system clock.
    /// The state store is the backup store until [`Services::with_state`] says otherwise.
    pub fn new(env: Env, common: Common, store: DynStore, publisher: Arc<dyn Publisher>) -> Self {
        let state = store.clone();
        Self { env, common, store, state, publisher, clock: Clock::system() }
    }

    /// The same services with their state in `state`.
    #[must_use]
    pub fn with_state(mut self, state: DynStore) -> Self {
        self.state = state;
        self
    }

    /// The same services on `clock` (tests inject time).
    #[must_use]
    pub fn with_clock(mut self, clock: Clock) -> Self {
        self.clock = clock;
        self
    }

    /// A result skeleton for `program`, started at `started`, from this source to this store.
    pub fn result(&self, program: &str, started: DateTime<Utc>) -> RunResult {
        RunResult::new(program, &self.common.source, self.common.destination.to_string(), started)
    }
}

/// A start-up failure after the configuration was valid: the backup store, Pub/Sub, the
/// database settings or an alert channel cannot be used. The program then publishes a failure
/// and exits 1.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The backup store (or a source store) cannot be opened.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The results topic cannot be reached.
    #[error(transparent)]
    Publish(#[from] PublishError),
    /// The PostgreSQL connection settings cannot be resolved.
    #[error(transparent)]
    Postgres(#[from] PgError),
    /// An alert channel cannot be set up.
    #[error(transparent)]
    Channel(#[from] ChannelError),
    /// The console's job executor cannot be set up.
    #[error("cannot set up the job executor: {0}")]
    Executor(String),
}

impl Classify for StartError {
    fn kind(&self) -> ErrorKind {
        match self {
            Self::Publish(e) => e.kind(),
            Self::Channel(e) => e.kind(),
            Self::Executor(_) => ErrorKind::Config,
            Self::Store(e) => e.kind(),
            Self::Postgres(e) => e.kind(),
        }
    }
}

/// The publisher of result events: the topic's, or the log when no topic is set.
pub(super) async fn connect_publisher(common: &Common, env: &Env) -> Result<Arc<dyn Publisher>, PublishError> {
    Ok(match &common.results_topic {
        Some(topic) => Arc::new(
            PubSubPublisher::connect_with(
                topic,
                common.project.as_deref(),
                env.get("PUBSUB_EMULATOR_HOST"),
                &common.net,
            )
            .await?,
        ),
        None => Arc::new(LogPublisher),
    })
}

/// Publishes the failure of a program that could not start.
pub(super) async fn publish_start_failure(program: &str, common: &Common, publisher: &dyn Publisher, e: &StartError) {
    tracing::error!(error = %e, kind = ?e.kind(), "start-up failed");
    let result = RunResult::new(program, &common.source, common.destination.to_string(), Utc::now())
        .failed(format!("{program} could not start: {e}"));
    publish(publisher, result).await;
}

/// Publishes a result, logging (not failing) when that is impossible; a failed run is also
/// reported to Sentry when it is on ([`crate::notify::sentry::report_run`]). Every result of
/// every program passes here.
pub async fn publish(publisher: &dyn Publisher, result: RunResult) -> Event {
    crate::notify::sentry::report_run(&result);
    let event = Event::new(result);
    match publisher.publish(&event).await {
        Ok(id) => {
            tracing::info!(message_id = id, outcome = ?event.data.outcome, summary = event.data.summary, "result published")
        }
        Err(e) => {
            tracing::error!(error = %e, summary = event.data.summary, "could not publish the result event")
        }
    }
    event
}
