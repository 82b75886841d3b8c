//! `monitor` (a Cloud Run service): turns result events and freshness checks into alerts.
//!
//! - `POST /pubsub`: a Pub/Sub push envelope carrying a result event. A failure or warning
//!   becomes one Slack alert (and one on the optional generic webhook); a failure also opens the
//!   incident of its program and source, which the next newer success of the same pair closes
//!   with one "recovered" message (see [`crate::core::incidents::IncidentBook::close_run`]).
//!   Each event has a record under `state/monitor/messages/` (in the state store,
//!   `LIFEBOAT_STATE_DESTINATION`) created create-only, keyed by the
//!   subscription and the CloudEvent's source, type and id (never by the sender-chosen message
//!   id alone), so a redelivered event is handled once, on any instance. Slack 429/5xx (or no
//!   answer): the record says "retry" and Pub/Sub gets a non-2xx answer (with `Retry-After` when
//!   Slack gave one) so it redelivers; other 4xx: logged and acknowledged. Malformed envelopes or
//!   events: 400 with the reason; events of an unknown program, or about a source, destination,
//!   database or bucket this deployment does not run: 422 (Pub/Sub dead-letters them).
//!   Events of `health` and `monitor` are evaluations, alerted on by `/check`: acknowledged.
//! - `POST /check` (Cloud Scheduler), and job mode: the freshness evaluation of `health`, fed to
//!   the alert state machine in `state/monitor/incidents.json` (see [`crate::core::incidents`]):
//!   one alert when a source turns bad (stale, failed, missing, suspicious, unencrypted, or
//!   unverified: no recent backup restored by a drill), at most one reminder per
//!   `ALERT_REMINDER_INTERVAL`, one "recovered" message. A failed `drill` run is a failure event:
//!   it alerts at once, like a failed backup. Updates are compare-and-swap on the object's generation, so two
//!   instances never send the same alert.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use clap::Parser;
use futures::TryStreamExt as _;
use http::{Method, StatusCode};

use crate::config::{Reader, Var, vars};
use crate::core::alerts::{Alert, Change, Rerun};
use crate::core::events::{Event, KNOWN_PROGRAMS, Outcome, RunResult};
use crate::core::freshness::{Freshness, Limits, Status};
use crate::core::incidents::{
    CLAIM_LEASE, INCIDENTS_KEY, IncidentBook, MESSAGE_RETENTION, MESSAGES_PREFIX, MessageRecord, MessageState,
    Settlement, StateError, Verdict,
};
use crate::core::secret::Secret;
use crate::core::source::SourceSpec;
use crate::error::Classify as _;
use crate::notify::slack::{Channel, DeliveryError, Format};
use crate::runtime::auth::{Access, Role};
use crate::runtime::http::{HttpRequest, HttpResponse};
use crate::runtime::{self, Program, ProgramSpec, RunContext, Services, StartError};
use crate::store::{ObjectStore, ObjectStoreExt as _, Precondition, PutOptions, StoreError};

/// The program's specification.
pub static SPEC: ProgramSpec =
    ProgramSpec { name: "monitor", vars: &[vars::MONITOR, &[&vars::DATABASES, &vars::SOURCE_BUCKETS]] };

/// Receives result events (Pub/Sub push, POST /pubsub) and freshness checks (POST /check; job
/// mode runs one check); alerts Slack once per failure or incident, reminds at most once per
/// ALERT_REMINDER_INTERVAL, and says when a source recovered.
#[derive(Debug, Clone, Default, Parser)]
pub struct Cli {
    /// The runtime's flags (`--once`), read by the runtime.
    #[command(flatten)]
    pub runtime: runtime::Args,
}

/// Largest state object read.
const MAX_STATE_BYTES: u64 = 16 * 1024 * 1024;
/// Conditional-write attempts before giving up (the next check or redelivery tries again).
const CAS_ATTEMPTS: usize = 10;

/// Settings of `monitor`.
#[derive(Debug, Clone)]
pub struct Config {
    /// Stale and unverified limits, and whether database backups must be encrypted.
    pub limits: Limits,
    /// Slack incoming webhook.
    pub slack: Option<Secret>,
    /// Generic JSON webhook.
    pub webhook: Option<Secret>,
    /// At most one reminder per this interval.
    pub reminder: Duration,
    /// Databases that must have backups.
    pub expected: Vec<String>,
    /// Buckets that must have snapshots (`SOURCE_BUCKETS`, read as `storage-backup` reads it).
    pub expected_buckets: Vec<SourceSpec>,
    /// Region of the jobs (rerun commands).
    pub region: Option<String>,
}

fn webhook_url(r: &mut Reader<'_>, var: &Var) -> Option<Secret> {
    let url = r.secret(var)?;
    let ok = reqwest::Url::parse(url.expose()).is_ok_and(|u| matches!(u.scheme(), "http" | "https") && u.has_host());
    if !ok {
        r.problem(var.name, "is not an http:// or https:// URL (value not shown: it is a secret)");
    }
    Some(url)
}

/// Reads the settings.
pub fn read(r: &mut Reader<'_>, _cli: Option<Cli>) -> Option<Config> {
    let limits = crate::config::limits(r);
    let slack = webhook_url(r, &vars::SLACK_WEBHOOK_URL);
    let webhook = webhook_url(r, &vars::ALERT_WEBHOOK_URL);
    let reminder = r.duration(&vars::REMINDER_INTERVAL);
    let expected = r.names(&vars::DATABASES);
    let expected_buckets = r.sources();
    let region = r.text(&vars::REGION);
    Some(Config { limits: limits?, slack, webhook, reminder: reminder?, expected, expected_buckets, region })
}

/// Why a check failed.
#[derive(Debug, thiserror::Error)]
pub enum MonitorError {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The stored state is unusable.
    #[error(transparent)]
    State(#[from] StateError),
    /// Other instances kept changing the state.
    #[error("the incident state kept changing under {CAS_ATTEMPTS} attempts; the next check retries")]
    Contended,
}

/// What one alert's delivery achieved.
#[derive(Debug, Default)]
struct Delivery {
    /// Channels done with it (delivered, or refused for good).
    settled: BTreeSet<String>,
    /// The first failure worth retrying.
    retry: Option<DeliveryError>,
}

/// What a check found and did.
#[derive(Debug)]
pub struct CheckReport {
    /// The evaluation.
    pub rows: Vec<Freshness>,
    /// State changes raised (`opened`, `reminder`, `recovered`) with the source's label.
    pub transitions: Vec<(Change, String)>,
    /// Alerts this check delivered everywhere.
    pub delivered: usize,
    /// Alerts this check tried but could not deliver everywhere (retried later).
    pub pending: usize,
    /// The first retryable delivery failure.
    pub retry: Option<DeliveryError>,
}

/// The program.
#[derive(Debug)]
pub struct App {
    services: Services,
    config: Config,
    channels: Vec<Channel>,
    rerun: Rerun,
    /// Channels that asked us (429 + Retry-After) not to call before a time.
    blocked: Mutex<BTreeMap<String, DateTime<Utc>>>,
}

/// Builds the program.
pub async fn start(services: Services, config: Config) -> Result<App, StartError> {
    let mut channels = Vec::new();
    if let Some(url) = &config.slack {
        channels.push(Channel::new("slack", url, Format::Slack)?);
    }
    if let Some(url) = &config.webhook {
        channels.push(Channel::new("webhook", url, Format::Json)?);
    }
    if channels.is_empty() {
        tracing::warn!("neither SLACK_WEBHOOK_URL nor ALERT_WEBHOOK_URL is set: alerts are only logged");
    }
    let rerun = Rerun { region: config.region.clone(), project: services.common.project.clone() };
    Ok(App { services, config, channels, rerun, blocked: Mutex::new(BTreeMap::new()) })
}

fn json_options(precondition: Precondition) -> PutOptions {
    PutOptions { precondition, content_type: Some("application/json".into()), ..PutOptions::default() }
}

/// Reads an object with the generation its content belongs to (`None` when absent).
async fn read_versioned(store: &dyn ObjectStore, key: &str) -> Result<Option<(Bytes, i64)>, StoreError> {
    loop {
        let before = match store.stat(key).await {
            Ok(m) => m.generation,
            Err(e) if e.is_not_found() => return Ok(None),
            Err(e) => return Err(e),
        };
        let bytes = match store.read_all(key, MAX_STATE_BYTES).await {
            Ok(b) => b,
            Err(e) if e.is_not_found() => return Ok(None),
            Err(e) => return Err(e),
        };
        match store.stat(key).await {
            Ok(m) if m.generation == before => return Ok(Some((bytes, before))),
            Ok(_) => continue, // rewritten meanwhile: read again
            Err(e) if e.is_not_found() => return Ok(None),
            Err(e) => return Err(e),
        }
    }
}

fn is_conflict(e: &StoreError) -> bool {
    matches!(e, StoreError::PreconditionFailed { .. } | StoreError::AlreadyExists { .. })
}

impl App {
    /// Where the incident state and the message records live (`LIFEBOAT_STATE_DESTINATION`;
    /// the backup store only reads as far as monitor is concerned).
    fn state(&self) -> &dyn ObjectStore {
        &*self.services.state
    }

    fn channel_names(&self) -> Vec<&str> {
        self.channels.iter().map(Channel::name).collect()
    }

    fn blocked_until(&self, channel: &str, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let blocked = self.blocked.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        blocked.get(channel).copied().filter(|until| *until > now)
    }

    fn block(&self, channel: &str, until: DateTime<Utc>) {
        let mut blocked = self.blocked.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        blocked.insert(channel.to_owned(), until);
    }

    /// Sends `alert` to every channel not in `already`.
    async fn deliver(&self, alert: &Alert, already: &BTreeSet<String>, now: DateTime<Utc>) -> Delivery {
        let mut out = Delivery::default();
        if self.channels.is_empty() {
            tracing::warn!(alert_id = alert.id, text = alert.text(), "alert (no channel configured: logged only)");
            return out;
        }
        for channel in &self.channels {
            let name = channel.name();
            if already.contains(name) {
                continue;
            }
            if let Some(until) = self.blocked_until(name, now) {
                let wait = (until - now).to_std().unwrap_or_default();
                tracing::warn!(
                    channel = name,
                    alert_id = alert.id,
                    wait_s = wait.as_secs(),
                    "channel asked us to wait"
                );
                out.retry.get_or_insert(DeliveryError::RateLimited { channel: name.into(), retry_after: Some(wait) });
                continue;
            }
            match channel.send(alert, now).await {
                Ok(()) => {
                    tracing::info!(channel = name, alert_id = alert.id, title = alert.title, "alert delivered");
                    out.settled.insert(name.to_owned());
                }
                Err(e) if e.is_retryable() => {
                    tracing::warn!(channel = name, alert_id = alert.id, error = %e, "alert not delivered; will retry");
                    if let DeliveryError::RateLimited { retry_after: Some(wait), .. } = &e {
                        self.block(name, now + chrono::Duration::from_std(*wait).unwrap_or_default());
                    }
                    out.retry.get_or_insert(e);
                }
                Err(e) => {
                    tracing::error!(channel = name, alert_id = alert.id, error = %e, "alert refused; not retried");
                    out.settled.insert(name.to_owned());
                }
            }
        }
        out
    }

    /// Why a well-formed event is not one this deployment runs: an unknown program, another
    /// source or destination, or a database or bucket that is not expected here. Such an event
    /// is refused (4xx): Pub/Sub retries it and then dead-letters it, where it is seen.
    fn foreign(&self, event: &Event) -> Option<String> {
        let d = &event.data;
        if !KNOWN_PROGRAMS.contains(&d.program.as_str()) {
            return Some(format!("program {:?} is not a lifeboat program", d.program));
        }
        let common = &self.services.common;
        if d.source != common.source {
            return Some(format!("source {:?} is not this deployment's (BACKUP_SOURCE={})", d.source, common.source));
        }
        let destination = common.destination.to_string();
        if d.destination != destination {
            return Some(format!("destination {:?} is not this deployment's ({destination})", d.destination));
        }
        let databases: Vec<&str> = self.config.expected.iter().map(String::as_str).collect();
        let buckets: Vec<&str> = self.config.expected_buckets.iter().map(|b| b.bucket.as_str()).collect();
        // `drill` reports on both kinds, under the same names as the backups it drilled.
        let checks: &[(&str, &[&str])] = match d.program.as_str() {
            "db-backup" => &[("database", &databases)],
            "storage-backup" => &[("bucket", &buckets)],
            "drill" => &[("database", &databases), ("bucket", &buckets)],
            _ => &[],
        };
        for (kind, expected) in checks {
            if !expected.is_empty()
                && let Some(item) = d.items.iter().find(|i| i.kind == *kind && !expected.contains(&i.name.as_str()))
            {
                return Some(format!("{kind} {:?} is not one this deployment backs up", item.name));
            }
        }
        None
    }

    /// Changes the incident book with `change`, compare-and-swap on its generation (re-read and
    /// re-applied when another instance wrote first); returns what `change` returned.
    async fn update_book<T>(&self, mut change: impl FnMut(&mut IncidentBook) -> T) -> Result<T, MonitorError> {
        for _ in 0..CAS_ATTEMPTS {
            let (book, generation) = self.read_book().await?;
            let mut next = book.clone();
            let out = change(&mut next);
            if next == book {
                return Ok(out);
            }
            match self.write_book(&next, generation).await {
                Ok(()) => return Ok(out),
                Err(e) if is_conflict(&e) => tracing::debug!("incident state changed concurrently; retrying"),
                Err(e) => return Err(e.into()),
            }
        }
        Err(MonitorError::Contended)
    }

    /// Writes an event's record (best effort: the next delivery of the event retries anyway).
    async fn save_record(&self, key: &str, record: &MessageRecord, generation: i64) {
        let options = json_options(Precondition::GenerationMatches(generation));
        if let Err(e) = self.state().put(key, Bytes::from(record.to_json()), options).await {
            tracing::warn!(event_id = record.event_id, error = %e, "could not record the event's handling");
        }
    }

    /// Handles one Pub/Sub push request body (at the clock's "now").
    pub async fn handle_push(&self, body: &[u8]) -> HttpResponse {
        let now = self.services.clock.now();
        let message = match crate::runtime::push::parse(body) {
            Ok(m) => m,
            Err(e) => {
                tracing::warn!(error = %e, "refused a push request");
                return HttpResponse::error(StatusCode::BAD_REQUEST, e);
            }
        };
        let id = message.message_id.clone();
        let event = match Event::from_json(&message.data) {
            Ok(e) => e,
            Err(e) => {
                tracing::warn!(message_id = id, error = %e, "refused a pushed message");
                return HttpResponse::error(StatusCode::BAD_REQUEST, format!("message {id}: {e}"));
            }
        };
        if let Some(why) = self.foreign(&event) {
            tracing::warn!(message_id = id, event_id = event.id, why, "refused an event this deployment does not run");
            return HttpResponse::error(
                StatusCode::UNPROCESSABLE_ENTITY,
                format!("message {id}: event {} is not this deployment's: {why}", event.id),
            );
        }
        let program = event.data.program.as_str();
        if matches!(program, "health" | "monitor") {
            tracing::debug!(message_id = id, program, "evaluation event: freshness is alerted on by POST /check");
            return ack("ignored", &id);
        }
        let key = MessageRecord::key(&message.subscription, &event.source, &event.kind, &event.id);
        let mut record = MessageRecord {
            state: MessageState::Sending,
            claimed_by: uuid::Uuid::new_v4().to_string(),
            claimed_at: now,
            settled: BTreeSet::new(),
            event_id: event.id.clone(),
            event_source: event.source.clone(),
            subscription: message.subscription.clone(),
            message_id: id.clone(),
            program: program.to_owned(),
            outcome: event.data.outcome,
            attempts: 0,
        };
        let generation = match self.claim_message(&key, &mut record, now).await {
            Ok(Claimed::Mine(g)) => g,
            Ok(Claimed::Duplicate) => {
                tracing::info!(message_id = id, event_id = event.id, "duplicate delivery: already handled");
                return ack("duplicate", &id);
            }
            Ok(Claimed::InFlight) => {
                tracing::info!(message_id = id, "another instance is handling this event right now");
                return HttpResponse::error(
                    StatusCode::CONFLICT,
                    format!("message {id} is being handled; retry later"),
                );
            }
            Err(e) => {
                tracing::error!(message_id = id, error = %e, "cannot record the event");
                return HttpResponse::error(
                    StatusCode::SERVICE_UNAVAILABLE,
                    format!("cannot record message {id}: {e}"),
                );
            }
        };
        let answer = match event.data.outcome {
            Outcome::Success => self.recover(&event, &mut record, now).await,
            Outcome::Failure | Outcome::Warning => self.alert_failure(&event, &mut record, now).await,
        };
        record.attempts += 1;
        record.state = match &answer {
            Ok(None) => MessageState::Done,
            Ok(Some(_)) | Err(_) => MessageState::Retry,
        };
        self.save_record(&key, &record, generation).await;
        match answer {
            Ok(None) if event.data.outcome == Outcome::Success => {
                ack(if record.settled.is_empty() { "ok" } else { "recovered" }, &id)
            }
            Ok(None) => ack("alerted", &id),
            Ok(Some(e)) => retry_response(&e, &format!("message {id}: {e}")),
            Err(e) => {
                tracing::error!(message_id = id, error = %e, "cannot update the incident state");
                HttpResponse::error(StatusCode::SERVICE_UNAVAILABLE, format!("message {id}: {e}"))
            }
        }
    }

    /// A failed run (or one with a warning): a failure opens (or joins) the incident of its
    /// program and source, then the alert goes to every channel the record does not list yet.
    /// `Ok(Some(e))`: a delivery worth retrying failed.
    async fn alert_failure(
        &self,
        event: &Event,
        record: &mut MessageRecord,
        now: DateTime<Utc>,
    ) -> Result<Option<DeliveryError>, MonitorError> {
        let d = &event.data;
        if d.outcome == Outcome::Failure {
            let open = self.update_book(|book| book.open_run(&d.program, &d.source, d.finished_at, &d.summary)).await?;
            tracing::info!(program = d.program, source = d.source, open, "failed run recorded");
        }
        let Some(alert) = crate::core::alerts::from_event(event, &record.message_id, &self.rerun) else {
            return Ok(None);
        };
        let delivery = self.deliver(&alert, &record.settled, now).await;
        record.settled.extend(delivery.settled);
        Ok(delivery.retry)
    }

    /// A successful run: closes the open incident of its program and source, if any, and says
    /// so once. The "recovered" alert is queued and claimed in the same conditional write that
    /// closes the incident, so of two instances only one sends it; one it could not deliver
    /// stays in the outbox for the next check. The channels it reached are noted in the record.
    async fn recover(
        &self,
        event: &Event,
        record: &mut MessageRecord,
        now: DateTime<Utc>,
    ) -> Result<Option<DeliveryError>, MonitorError> {
        let d = &event.data;
        let token = record.claimed_by.clone();
        let claimed = self
            .update_book(|book| {
                let id = book.close_run(&d.program, &d.source, d.finished_at, now)?;
                book.claim_alert(&id, &token, now)
            })
            .await?;
        let Some(entry) = claimed else { return Ok(None) };
        tracing::info!(program = d.program, source = d.source, "incident of failed runs closed");
        let delivery = self.deliver(&entry.alert, &entry.settled, now).await;
        record.settled.extend(delivery.settled.iter().cloned());
        let channels = self.channel_names();
        let settlement = Settlement { alert_id: entry.alert.id.clone(), settled: delivery.settled };
        if let Err(e) = self.update_book(|book| book.settle(&token, std::slice::from_ref(&settlement), &channels)).await
        {
            // The claim expires after the lease; the next check delivers what is left.
            tracing::warn!(error = %e, "could not record the recovery's delivery");
        }
        Ok(delivery.retry)
    }

    async fn claim_message(
        &self,
        key: &str,
        record: &mut MessageRecord,
        now: DateTime<Utc>,
    ) -> Result<Claimed, MonitorError> {
        for _ in 0..CAS_ATTEMPTS {
            let created =
                self.state().put(key, Bytes::from(record.to_json()), json_options(Precondition::DoesNotExist)).await;
            match created {
                Ok(meta) => return Ok(Claimed::Mine(meta.generation)),
                Err(e) if is_conflict(&e) => {}
                Err(e) => return Err(e.into()),
            }
            let Some((bytes, generation)) = read_versioned(self.state(), key).await? else { continue };
            let existing = match MessageRecord::from_json(&bytes) {
                Ok(r) => Some(r),
                Err(e) => {
                    tracing::error!(key, error = %e, "unreadable message record: replacing it");
                    None
                }
            };
            if let Some(existing) = &existing {
                match existing.verdict(now, CLAIM_LEASE) {
                    Verdict::Duplicate => return Ok(Claimed::Duplicate),
                    Verdict::InFlight => return Ok(Claimed::InFlight),
                    Verdict::TakeOver => {
                        record.settled = existing.settled.clone();
                        record.attempts = existing.attempts;
                    }
                }
            }
            let options = json_options(Precondition::GenerationMatches(generation));
            match self.state().put(key, Bytes::from(record.to_json()), options).await {
                Ok(meta) => return Ok(Claimed::Mine(meta.generation)),
                Err(e) if is_conflict(&e) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(MonitorError::Contended)
    }

    async fn read_book(&self) -> Result<(IncidentBook, Option<i64>), MonitorError> {
        Ok(match read_versioned(self.state(), INCIDENTS_KEY).await? {
            Some((bytes, generation)) => (IncidentBook::from_json(&bytes)?, Some(generation)),
            None => (IncidentBook::default(), None),
        })
    }

    async fn write_book(&self, book: &IncidentBook, generation: Option<i64>) -> Result<(), StoreError> {
        let precondition = generation.map_or(Precondition::DoesNotExist, Precondition::GenerationMatches);
        self.state().put(INCIDENTS_KEY, Bytes::from(book.to_json()), json_options(precondition)).await.map(|_| ())
    }

    /// Runs one freshness check at `now`: evaluate, move the incident state, deliver alerts.
    pub async fn check_at(&self, now: DateTime<Utc>) -> Result<CheckReport, MonitorError> {
        let common = &self.services.common;
        let expected = crate::core::freshness::expected_series(
            &common.source,
            &self.config.expected,
            &self.config.expected_buckets,
        );
        let rows = crate::inventory::assess(&*self.services.store, &common.source, &expected, now, &self.config.limits)
            .await?;
        let token = uuid::Uuid::new_v4().to_string();

        // 1. Move the state and claim the alerts to send, in one conditional write.
        let mut outcome = None;
        for _ in 0..CAS_ATTEMPTS {
            let (book, generation) = self.read_book().await?;
            let (mut next, transitions) =
                book.advance(&rows, now, self.config.reminder, &self.config.limits, &self.rerun);
            let claimed = next.claim(&token, now, CLAIM_LEASE);
            if next == book {
                outcome = Some((claimed, transitions));
                break;
            }
            match self.write_book(&next, generation).await {
                Ok(()) => {
                    outcome = Some((claimed, transitions));
                    break;
                }
                Err(e) if is_conflict(&e) => tracing::debug!("incident state changed concurrently; recomputing"),
                Err(e) => return Err(e.into()),
            }
        }
        let Some((claimed, transitions)) = outcome else { return Err(MonitorError::Contended) };
        for t in &transitions {
            tracing::info!(source = t.row.label(), change = ?t.change, status = t.row.status.name(), "incident");
        }

        // 2. Deliver what this check claimed.
        let mut settlements = Vec::new();
        let mut retry = None;
        let (mut delivered, mut pending) = (0, 0);
        let channels = self.channel_names();
        for entry in &claimed {
            let d = self.deliver(&entry.alert, &entry.settled, now).await;
            let done = channels.iter().all(|c| entry.settled.contains(*c) || d.settled.contains(*c));
            if done {
                delivered += 1;
            } else {
                pending += 1;
            }
            if retry.is_none() {
                retry = d.retry;
            }
            settlements.push(Settlement { alert_id: entry.alert.id.clone(), settled: d.settled });
        }

        // 3. Record the deliveries.
        if !settlements.is_empty() {
            let mut recorded = false;
            for _ in 0..CAS_ATTEMPTS {
                let (mut book, generation) = self.read_book().await?;
                book.settle(&token, &settlements, &channels);
                match self.write_book(&book, generation).await {
                    Ok(()) => {
                        recorded = true;
                        break;
                    }
                    Err(e) if is_conflict(&e) => continue,
                    Err(e) => return Err(e.into()),
                }
            }
            if !recorded {
                // The claims expire after the lease; the alerts may then be sent once more.
                tracing::warn!("could not record deliveries: incident state contended");
            }
        }
        self.forget_old_messages(now).await;
        Ok(CheckReport {
            rows,
            transitions: transitions.iter().map(|t| (t.change, t.row.label())).collect(),
            delivered,
            pending,
            retry,
        })
    }

    /// Deletes message records older than [`MESSAGE_RETENTION`] (best effort).
    async fn forget_old_messages(&self, now: DateTime<Utc>) {
        let limit = chrono::Duration::from_std(MESSAGE_RETENTION).unwrap_or(chrono::Duration::MAX);
        let old: Result<Vec<_>, _> = self
            .state()
            .list_all(MESSAGES_PREFIX)
            .try_filter(|o| futures::future::ready(now - o.updated > limit))
            .try_collect()
            .await;
        match old {
            Ok(old) => {
                for o in old {
                    if let Err(e) = self.state().delete(&o.key).await {
                        tracing::warn!(key = o.key, error = %e, "cannot delete an old message record");
                    }
                }
            }
            Err(e) => tracing::warn!(error = %e, "cannot list message records"),
        }
    }

    /// Runs one check at the clock's "now".
    pub async fn check(&self) -> Result<CheckReport, MonitorError> {
        self.check_at(self.services.clock.now()).await
    }
}

enum Claimed {
    Mine(i64),
    Duplicate,
    InFlight,
}

fn ack(status: &str, message_id: &str) -> HttpResponse {
    HttpResponse::json(StatusCode::OK, &serde_json::json!({ "status": status, "message_id": message_id }))
}

/// A non-2xx answer that makes the caller (Pub/Sub, Scheduler) come back, with `Retry-After`.
fn retry_response(e: &DeliveryError, reason: &str) -> HttpResponse {
    let status = match e {
        DeliveryError::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
        _ => StatusCode::SERVICE_UNAVAILABLE,
    };
    let mut response = HttpResponse::error(status, reason);
    if let Some(wait) = e.retry_after() {
        response.headers.push(("retry-after", wait.as_secs().max(1).to_string()));
    }
    response
}

fn report_json(r: &CheckReport) -> serde_json::Value {
    serde_json::json!({
        "sources": r.rows.iter().map(|row| serde_json::json!({
            "source": row.label(),
            "status": row.status.name(),
            "age_seconds": row.age_seconds,
            "newest_backup": row.newest_backup,
        })).collect::<Vec<_>>(),
        "changes": r.transitions.iter().map(|(c, s)| serde_json::json!({"source": s, "change": c})).collect::<Vec<_>>(),
        "alerts_delivered": r.delivered,
        "alerts_pending": r.pending,
    })
}

#[async_trait]
impl Program for App {
    async fn run(&self, ctx: RunContext) -> RunResult {
        let mut result = self.services.result(SPEC.name, ctx.started);
        match self.check().await {
            Ok(r) => {
                let bad = r.rows.iter().filter(|row| row.status != Status::Ok).count();
                result.outcome = if r.retry.is_some() { Outcome::Failure } else { Outcome::Success };
                let mut summary = format!(
                    "checked {} sources ({bad} not ok); {} alerts delivered, {} pending",
                    r.rows.len(),
                    r.delivered,
                    r.pending
                );
                if let Some(e) = &r.retry {
                    summary.push_str(&format!(": {e}"));
                }
                result.summary = summary;
                result.figures = BTreeMap::from([
                    ("sources".into(), serde_json::json!(r.rows.len())),
                    ("not_ok".into(), serde_json::json!(bad)),
                    ("changes".into(), serde_json::json!(r.transitions.len())),
                    ("alerts_delivered".into(), serde_json::json!(r.delivered)),
                    ("alerts_pending".into(), serde_json::json!(r.pending)),
                ]);
            }
            Err(e) => {
                result.outcome = Outcome::Failure;
                result.summary = format!("freshness check failed: {e}");
            }
        }
        result.finished_at = Utc::now();
        result
    }

    /// `/pubsub` is for the push identities only, `/check` for the scheduler's.
    fn access(&self, method: &Method, path: &str) -> Access {
        match (method, path) {
            (&Method::POST, "/pubsub") => Access::Role(Role::Push),
            (&Method::GET | &Method::HEAD, _) => Access::Public,
            _ => Access::Role(Role::Scheduler),
        }
    }

    async fn route(&self, request: &HttpRequest) -> Option<HttpResponse> {
        if request.method != Method::POST {
            return None;
        }
        match request.path.as_str() {
            "/pubsub" => Some(self.handle_push(&request.body).await),
            "/check" => Some(match self.check().await {
                Ok(r) => match &r.retry {
                    None => HttpResponse::json(StatusCode::OK, &report_json(&r)),
                    Some(e) => {
                        let mut resp = retry_response(e, &format!("alerts pending: {e}"));
                        resp.body = Bytes::from(report_json(&r).to_string());
                        resp
                    }
                },
                Err(e) => {
                    tracing::error!(error = %e, "freshness check failed");
                    HttpResponse::error(StatusCode::SERVICE_UNAVAILABLE, format!("freshness check failed: {e}"))
                }
            }),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Env;

    #[test]
    fn webhook_urls_are_validated_without_echoing_them() {
        let env =
            Env::from_pairs([("SLACK_WEBHOOK_URL", "hooks.slack.com/T/B/NOTSHOWN"), ("ALERT_REMINDER_INTERVAL", "0s")]);
        let mut r = Reader::new(&env);
        let _ = read(&mut r, Some(Cli::default()));
        let err = r.finish().expect_err("invalid");
        let text = err.to_string();
        assert!(text.contains("SLACK_WEBHOOK_URL") && text.contains("ALERT_REMINDER_INTERVAL"), "{text}");
        assert!(!text.contains("NOTSHOWN"), "{text}");
    }

    #[test]
    fn retry_responses_carry_retry_after() {
        let e = DeliveryError::RateLimited { channel: "slack".into(), retry_after: Some(Duration::from_secs(7)) };
        let r = retry_response(&e, "x");
        assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(r.headers, [("retry-after", "7".to_owned())]);
        let e = DeliveryError::Unavailable { channel: "slack".into(), status: 500, retry_after: None };
        assert_eq!(retry_response(&e, "x").status, StatusCode::SERVICE_UNAVAILABLE);
    }
}
