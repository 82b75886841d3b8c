//! The monitor's state, kept in the backup store under `state/monitor/` so it survives restarts
//! and is shared by every instance. Pure: the types, the alert state machine and the claim rules;
//! `monitor` reads and writes them with generation preconditions (compare-and-swap).
//!
//! - `state/monitor/incidents.json`, an [`IncidentBook`]: the open freshness incidents and an
//!   outbox of alerts to deliver. One check moves the book from one state to the next
//!   ([`IncidentBook::advance`]) and claims the alerts it will send ([`IncidentBook::claim`]) in
//!   a single conditional write, so of two racing instances only one sends each alert; after
//!   delivery it records what was delivered ([`IncidentBook::settle`]). An alert whose delivery
//!   failed, or whose sender died (claim older than [`CLAIM_LEASE`]), is sent by a later check.
//!   The same book holds the incidents of failed runs ([`RunIncident`], one per program and
//!   source): a failure event opens one ([`IncidentBook::open_run`]), the next success event of
//!   the same pair closes it and queues one "recovered" alert ([`IncidentBook::close_run`]), in
//!   the same conditional write, so of two instances only one says it.
//! - `state/monitor/messages/<key>`, a [`MessageRecord`] per result event received, created
//!   create-only: a second delivery of the same event finds it ([`MessageRecord::verdict`]). The
//!   key ([`MessageRecord::key`]) is a digest of the subscription and the CloudEvent's `source`,
//!   `type` and `id`, never of Pub/Sub's `messageId` alone: a message id can be chosen by
//!   whoever posts, and an earlier post under the id of a later real failure must not make that
//!   failure a "duplicate".

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::core::alerts::{Alert, Change, FailedRuns, Rerun, from_change};
use crate::core::events::Outcome;
use crate::core::freshness::{Freshness, Limits, Status};
use crate::core::series::Kind;

/// Key of the incident book.
pub const INCIDENTS_KEY: &str = "state/monitor/incidents.json";
/// Prefix of the per-message records.
pub const MESSAGES_PREFIX: &str = "state/monitor/messages/";
/// A claim older than this is considered abandoned (its holder crashed) and may be taken over.
pub const CLAIM_LEASE: Duration = Duration::from_secs(120);
/// Message records older than this are removed (Pub/Sub retains messages at most 7 days).
pub const MESSAGE_RETENTION: Duration = Duration::from_secs(8 * 24 * 3600);
/// Format version of the book.
pub const BOOK_VERSION: u32 = 1;

/// An open freshness incident of one source.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Incident {
    /// Database or bucket.
    pub kind: Kind,
    /// Source.
    pub source: String,
    /// Name.
    pub name: String,
    /// The current (bad) status.
    pub status: Status,
    /// When it turned bad.
    pub opened_at: DateTime<Utc>,
    /// When the last alert or reminder was raised.
    pub last_alert_at: DateTime<Utc>,
    /// Reminders raised so far.
    pub reminders: u32,
}

/// An alert waiting for delivery.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutboxEntry {
    /// The alert.
    pub alert: Alert,
    /// Channels done with it (delivered, or refused it for good).
    #[serde(default)]
    pub settled: BTreeSet<String>,
    /// The check that is delivering it.
    #[serde(default)]
    pub claimed_by: Option<String>,
    /// Since when.
    #[serde(default)]
    pub claimed_at: Option<DateTime<Utc>>,
    /// Delivery attempts so far.
    #[serde(default)]
    pub attempts: u32,
}

/// An open incident of failed runs of one program for one source.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunIncident {
    /// The program (`db-backup`…).
    pub program: String,
    /// The source (`BACKUP_SOURCE`).
    pub source: String,
    /// When the first failed run of the incident finished.
    pub opened_at: DateTime<Utc>,
    /// When the latest failed run finished (a success must be newer to close the incident).
    pub last_failure_at: DateTime<Utc>,
    /// Failed runs seen.
    pub failures: u32,
    /// The latest failure's summary.
    pub summary: String,
}

/// The incident state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IncidentBook {
    /// [`BOOK_VERSION`].
    pub version: u32,
    /// Open incidents by source key (`database:main/app`).
    #[serde(default)]
    pub incidents: BTreeMap<String, Incident>,
    /// Open incidents of failed runs by [`run_key`] (`db-backup main`).
    #[serde(default)]
    pub runs: BTreeMap<String, RunIncident>,
    /// When the newest successful run of each [`run_key`] finished (Pub/Sub delivers out of
    /// order: a failure older than this opens no incident).
    #[serde(default)]
    pub last_success: BTreeMap<String, DateTime<Utc>>,
    /// Alerts not yet delivered everywhere.
    #[serde(default)]
    pub outbox: Vec<OutboxEntry>,
}

impl Default for IncidentBook {
    fn default() -> Self {
        Self {
            version: BOOK_VERSION,
            incidents: BTreeMap::new(),
            runs: BTreeMap::new(),
            last_success: BTreeMap::new(),
            outbox: Vec::new(),
        }
    }
}

/// The key of a program and source in [`IncidentBook::runs`].
pub fn run_key(program: &str, source: &str) -> String {
    format!("{program} {source}")
}

/// Why the stored state cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// Not JSON of the expected shape.
    #[error("unreadable monitor state: {0}")]
    Malformed(#[from] serde_json::Error),
    /// A newer format.
    #[error("monitor state version {0} is newer than this monitor understands; upgrade lifeboat")]
    Unsupported(u32),
}

/// One transition of the alert state machine.
#[derive(Debug, Clone, PartialEq)]
pub struct Transition {
    /// What changed.
    pub change: Change,
    /// The source's current evaluation.
    pub row: Freshness,
    /// When its incident began.
    pub opened_at: DateTime<Utc>,
}

/// The key of a source in the book.
pub fn source_key(row: &Freshness) -> String {
    match row.kind {
        Kind::Database => format!("database:{}", row.label()),
        Kind::Bucket => format!("bucket:{}", row.label()),
    }
}

/// The alert state machine: from the open incidents and a fresh evaluation to the next
/// incidents and what to tell people. A source that turns bad opens an incident (one alert);
/// while it stays bad, one reminder per `reminder` interval; when ok again, one recovery.
/// Incidents of sources no longer evaluated are closed silently.
///
/// Changes between bad statuses are tracked without alerting, with one exception: an incident
/// that is only `unverified` (the mildest status, and one that may stay open for days while
/// drills are broken) and turns into another bad status (stale, failed…) becomes a new incident
/// with its own alert, so an open unverified incident never hides a backup that stops.
pub fn step(
    incidents: &BTreeMap<String, Incident>,
    rows: &[Freshness],
    now: DateTime<Utc>,
    reminder: Duration,
) -> (BTreeMap<String, Incident>, Vec<Transition>) {
    let reminder = crate::core::units::to_chrono(reminder);
    let mut next = BTreeMap::new();
    let mut transitions = Vec::new();
    for row in rows {
        let key = source_key(row);
        match (incidents.get(&key), row.status) {
            (None, Status::Ok) => {}
            (Some(open), Status::Ok) => {
                transitions.push(Transition { change: Change::Recovered, row: row.clone(), opened_at: open.opened_at });
            }
            // The incident goes on (unless only unverified so far and now worse: see below).
            (Some(open), status) if open.status != Status::Unverified || status == Status::Unverified => {
                let mut open = open.clone();
                open.status = status;
                if now - open.last_alert_at >= reminder {
                    open.last_alert_at = now;
                    open.reminders += 1;
                    transitions.push(Transition {
                        change: Change::Reminder,
                        row: row.clone(),
                        opened_at: open.opened_at,
                    });
                }
                next.insert(key, open);
            }
            // A new incident, or an unverified one that turned into another bad status.
            (_, status) => {
                let incident = Incident {
                    kind: row.kind,
                    source: row.source.clone(),
                    name: row.name.clone(),
                    status,
                    opened_at: now,
                    last_alert_at: now,
                    reminders: 0,
                };
                next.insert(key, incident);
                transitions.push(Transition { change: Change::Opened, row: row.clone(), opened_at: now });
            }
        }
    }
    (next, transitions)
}

/// What one delivery achieved for one alert.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settlement {
    /// The alert's id.
    pub alert_id: String,
    /// Channels now done with it.
    pub settled: BTreeSet<String>,
}

impl IncidentBook {
    /// Parses a stored book.
    pub fn from_json(bytes: &[u8]) -> Result<Self, StateError> {
        let b: Self = serde_json::from_slice(bytes)?;
        if b.version > BOOK_VERSION {
            return Err(StateError::Unsupported(b.version));
        }
        Ok(b)
    }

    /// The stored form.
    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec_pretty(self).unwrap_or_default()
    }

    /// The next book after evaluating `rows` at `now`: incidents moved by [`step`], one alert per
    /// transition appended to the outbox. Also returns the transitions.
    pub fn advance(
        &self,
        rows: &[Freshness],
        now: DateTime<Utc>,
        reminder: Duration,
        limits: &Limits,
        rerun: &Rerun,
    ) -> (Self, Vec<Transition>) {
        let (incidents, transitions) = step(&self.incidents, rows, now, reminder);
        let mut next = Self { version: BOOK_VERSION, incidents, ..self.clone() };
        for t in &transitions {
            next.outbox.push(OutboxEntry {
                alert: from_change(t.change, &t.row, t.opened_at, now, limits, rerun),
                settled: BTreeSet::new(),
                claimed_by: None,
                claimed_at: None,
                attempts: 0,
            });
        }
        (next, transitions)
    }

    /// A failed run of `program` for `source` that finished at `failed_at`: opens the pair's
    /// incident, or adds to the open one. Returns whether an incident is open for it now: a
    /// failure older than the pair's last success (delivered late) opens none.
    pub fn open_run(&mut self, program: &str, source: &str, failed_at: DateTime<Utc>, summary: &str) -> bool {
        let key = run_key(program, source);
        if self.last_success.get(&key).is_some_and(|ok| *ok >= failed_at) {
            return self.runs.contains_key(&key);
        }
        let incident = self.runs.entry(key).or_insert_with(|| RunIncident {
            program: program.to_owned(),
            source: source.to_owned(),
            opened_at: failed_at,
            last_failure_at: failed_at,
            failures: 0,
            summary: String::new(),
        });
        if failed_at >= incident.last_failure_at || incident.failures == 0 {
            incident.last_failure_at = failed_at;
            incident.summary = summary.to_owned();
        }
        incident.opened_at = incident.opened_at.min(failed_at);
        incident.failures += 1;
        true
    }

    /// A successful run of `program` for `source` that finished at `succeeded_at`, seen at
    /// `now`: closes the pair's open incident when the success is newer than its last failure,
    /// and queues one "recovered" alert. Returns the alert's id when it did.
    pub fn close_run(
        &mut self,
        program: &str,
        source: &str,
        succeeded_at: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Option<String> {
        let key = run_key(program, source);
        let newest = self.last_success.get(&key).map_or(succeeded_at, |t| (*t).max(succeeded_at));
        self.last_success.insert(key.clone(), newest);
        if self.runs.get(&key).is_none_or(|open| open.last_failure_at >= succeeded_at) {
            return None;
        }
        let open = self.runs.remove(&key)?;
        let failed = FailedRuns {
            program: &open.program,
            source: &open.source,
            since: open.opened_at,
            failures: open.failures,
            last_summary: &open.summary,
        };
        let alert = crate::core::alerts::run_recovered(failed, succeeded_at, now);
        let id = alert.id.clone();
        self.outbox.push(OutboxEntry {
            alert,
            settled: BTreeSet::new(),
            claimed_by: None,
            claimed_at: None,
            attempts: 0,
        });
        Some(id)
    }

    /// Claims, for `token`, every outbox entry nobody holds (or whose claim is older than
    /// `lease`), and returns copies of them: the alerts this check must deliver.
    pub fn claim(&mut self, token: &str, now: DateTime<Utc>, lease: Duration) -> Vec<OutboxEntry> {
        let lease = crate::core::units::to_chrono(lease);
        let mut claimed = Vec::new();
        for e in &mut self.outbox {
            let free = match (&e.claimed_by, e.claimed_at) {
                (None, _) | (Some(_), None) => true,
                (Some(_), Some(at)) => now - at >= lease,
            };
            if free {
                e.claimed_by = Some(token.to_owned());
                e.claimed_at = Some(now);
                claimed.push(e.clone());
            }
        }
        claimed
    }

    /// Claims, for `token`, the outbox entry of alert `id` when nobody holds it; returns a copy.
    pub fn claim_alert(&mut self, id: &str, token: &str, now: DateTime<Utc>) -> Option<OutboxEntry> {
        let e = self.outbox.iter_mut().find(|e| e.alert.id == id && e.claimed_by.is_none())?;
        e.claimed_by = Some(token.to_owned());
        e.claimed_at = Some(now);
        Some(e.clone())
    }

    /// Records deliveries made under `token`: entries settled on every one of `channels` leave
    /// the outbox, the others are released for a later check.
    pub fn settle(&mut self, token: &str, results: &[Settlement], channels: &[&str]) {
        for r in results {
            if let Some(e) =
                self.outbox.iter_mut().find(|e| e.alert.id == r.alert_id && e.claimed_by.as_deref() == Some(token))
            {
                e.settled.extend(r.settled.iter().cloned());
                e.attempts += 1;
                e.claimed_by = None;
                e.claimed_at = None;
            }
        }
        self.outbox.retain(|e| e.claimed_by.is_some() || !channels.iter().all(|c| e.settled.contains(*c)));
    }
}

/// Where a message's alert stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MessageState {
    /// An instance is delivering it.
    Sending,
    /// A delivery failed in a way a retry may fix; the next delivery of the message retries.
    Retry,
    /// Handled: later deliveries of the message are duplicates.
    Done,
}

/// The record of one result event received.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MessageRecord {
    /// State.
    pub state: MessageState,
    /// Which request holds it.
    pub claimed_by: String,
    /// Since when.
    pub claimed_at: DateTime<Utc>,
    /// Channels done with the alert.
    #[serde(default)]
    pub settled: BTreeSet<String>,
    /// The result event's id.
    pub event_id: String,
    /// The result event's `source` (`//lifeboat/<program>/<source>`).
    #[serde(default)]
    pub event_source: String,
    /// The subscription that delivered it.
    #[serde(default)]
    pub subscription: String,
    /// Pub/Sub's message id of the delivery that created the record (for people only).
    #[serde(default)]
    pub message_id: String,
    /// The program that sent it.
    pub program: String,
    /// Its outcome.
    pub outcome: Outcome,
    /// Deliveries attempted.
    #[serde(default)]
    pub attempts: u32,
}

/// What to do with a message whose record already exists.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Already handled: acknowledge, send nothing.
    Duplicate,
    /// Another instance is sending it right now: answer non-2xx so Pub/Sub comes back later.
    InFlight,
    /// Retry it (after a failed delivery, or a claim whose holder died).
    TakeOver,
}

impl MessageRecord {
    /// The key of an event's record: a SHA-256 digest of the subscription and the CloudEvent's
    /// `source`, `type` and `id` (each length-prefixed, so no two tuples share a digest input).
    /// A redelivery of the same event has the same key; another event posted under the same
    /// Pub/Sub message id does not.
    pub fn key(subscription: &str, source: &str, kind: &str, id: &str) -> String {
        use sha2::Digest as _;
        let mut hash = sha2::Sha256::new();
        for part in [subscription, source, kind, id] {
            hash.update((part.len() as u64).to_be_bytes());
            hash.update(part.as_bytes());
        }
        format!("{MESSAGES_PREFIX}{}", hex::encode(hash.finalize()))
    }

    /// Decides on a message that has this record, at `now`.
    pub fn verdict(&self, now: DateTime<Utc>, lease: Duration) -> Verdict {
        match self.state {
            MessageState::Done => Verdict::Duplicate,
            MessageState::Retry => Verdict::TakeOver,
            MessageState::Sending if now - self.claimed_at < crate::core::units::to_chrono(lease) => Verdict::InFlight,
            MessageState::Sending => Verdict::TakeOver,
        }
    }

    /// Parses a stored record.
    pub fn from_json(bytes: &[u8]) -> Result<Self, StateError> {
        Ok(serde_json::from_slice(bytes)?)
    }

    /// The stored form.
    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(t: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(t).expect("t").to_utc()
    }

    fn row(status: Status) -> Freshness {
        Freshness {
            kind: Kind::Database,
            source: "main".into(),
            name: "app".into(),
            status,
            newest_backup: Some("20261125T020000Z-00000001".into()),
            age_seconds: Some(3600),
            bytes: Some(10),
            encrypted: None,
            bytes_change: None,
            complete_backups: 1,
            total_bytes: 10,
            recent_sizes: vec![10],
            newest_verified_backup: None,
            verified_age_seconds: None,
            last_drill_outcome: None,
            last_drill_backup: None,
        }
    }

    const HOUR: Duration = Duration::from_secs(3600);
    const DAY: Duration = Duration::from_secs(24 * 3600);

    fn changes(t: &[Transition]) -> Vec<Change> {
        t.iter().map(|t| t.change).collect()
    }

    #[test]
    fn one_alert_per_incident_reminders_and_one_recovery() {
        let t0 = at("2026-11-26T08:00:00Z");
        let none = BTreeMap::new();
        let (open, t) = step(&none, &[row(Status::Ok)], t0, DAY);
        assert!(open.is_empty() && t.is_empty(), "ok stays quiet");

        let (open, t) = step(&none, &[row(Status::Stale)], t0, DAY);
        assert_eq!(changes(&t), [Change::Opened]);
        let (open2, t) = step(&open, &[row(Status::Stale)], t0 + HOUR, DAY);
        assert!(t.is_empty(), "no second alert while it stays stale");
        assert_eq!(open2, open);
        // Status changes are tracked without alerting; the reminder comes after the interval.
        let (open3, t) = step(&open2, &[row(Status::Failed)], t0 + chrono::Duration::hours(23), DAY);
        assert!(t.is_empty());
        assert_eq!(open3["database:main/app"].status, Status::Failed);
        let (open4, t) = step(&open3, &[row(Status::Failed)], t0 + chrono::Duration::hours(24), DAY);
        assert_eq!(changes(&t), [Change::Reminder]);
        assert_eq!(open4["database:main/app"].reminders, 1);
        let (open5, t) = step(&open4, &[row(Status::Failed)], t0 + chrono::Duration::hours(30), DAY);
        assert!(t.is_empty(), "at most one reminder per interval");
        let (closed, t) = step(&open5, &[row(Status::Ok)], t0 + chrono::Duration::hours(31), DAY);
        assert_eq!(changes(&t), [Change::Recovered]);
        assert_eq!(t[0].opened_at, t0);
        assert!(closed.is_empty());
        let (_, t) = step(&closed, &[row(Status::Ok)], t0 + chrono::Duration::hours(32), DAY);
        assert!(t.is_empty(), "one recovery message only");
        // A source that disappears from the evaluation is closed silently.
        let (gone, t) = step(&open, &[], t0 + HOUR, DAY);
        assert!(gone.is_empty() && t.is_empty());
    }

    #[test]
    fn unverified_alerts_once_recovers_once_and_never_hides_a_stale_source() {
        let t0 = at("2026-11-26T08:00:00Z");
        let h = |n: i64| t0 + chrono::Duration::hours(n);
        let (open, t) = step(&BTreeMap::new(), &[row(Status::Unverified)], t0, DAY);
        assert_eq!(changes(&t), [Change::Opened]);
        let (open, t) = step(&open, &[row(Status::Unverified)], h(1), DAY);
        assert!(t.is_empty(), "once per incident");
        // It stops backing up too: a new alert at once, not at the next reminder.
        let (stale, t) = step(&open, &[row(Status::Stale)], h(2), DAY);
        assert_eq!(changes(&t), [Change::Opened]);
        assert_eq!((stale["database:main/app"].status, stale["database:main/app"].opened_at), (Status::Stale, h(2)));
        // Backups resume, drills still missing: the incident stays open, quietly.
        let (back, t) = step(&stale, &[row(Status::Unverified)], h(3), DAY);
        assert!(t.is_empty());
        assert_eq!(back["database:main/app"].status, Status::Unverified);
        let (closed, t) = step(&back, &[row(Status::Ok)], h(4), DAY);
        assert_eq!(changes(&t), [Change::Recovered]);
        assert!(closed.is_empty());
    }

    #[test]
    fn missing_failed_and_suspicious_open_incidents_too() {
        let t0 = at("2026-11-26T08:00:00Z");
        for s in [Status::Missing, Status::Failed, Status::Suspicious, Status::Unencrypted, Status::Unverified] {
            let (open, t) = step(&BTreeMap::new(), &[row(s)], t0, DAY);
            assert_eq!((changes(&t), open.len()), (vec![Change::Opened], 1), "{s:?}");
        }
    }

    #[test]
    fn racing_checks_claim_each_alert_once() {
        let t0 = at("2026-11-26T08:00:00Z");
        let stored = IncidentBook::default();
        // Both instances read the same book and compute the same next state.
        let (mut a, _) = stored.advance(&[row(Status::Stale)], t0, DAY, &Limits::new(DAY), &Rerun::default());
        let (mut b, _) = stored.advance(&[row(Status::Stale)], t0, DAY, &Limits::new(DAY), &Rerun::default());
        assert_eq!(a.claim("a", t0, CLAIM_LEASE).len(), 1);
        assert_eq!(b.claim("b", t0, CLAIM_LEASE).len(), 1);
        // Only one conditional write wins (say a's). b re-reads a's book and recomputes:
        let stored = IncidentBook::from_json(&a.to_json()).expect("round trip");
        let (mut b, t) = stored.advance(&[row(Status::Stale)], t0, DAY, &Limits::new(DAY), &Rerun::default());
        assert!(t.is_empty(), "the incident is already open");
        assert!(b.claim("b", t0, CLAIM_LEASE).is_empty(), "a holds the only alert");
        // a delivers to slack only (the webhook failed): the alert stays, released.
        let id = a.outbox[0].alert.id.clone();
        let mut after = stored.clone();
        after.settle(
            "a",
            &[Settlement { alert_id: id.clone(), settled: BTreeSet::from(["slack".into()]) }],
            &["slack", "webhook"],
        );
        assert_eq!(after.outbox.len(), 1);
        assert_eq!(after.outbox[0].claimed_by, None);
        // The next check claims it again; delivering to the webhook empties the outbox.
        let claimed = after.claim("c", t0 + HOUR, CLAIM_LEASE);
        assert_eq!(claimed[0].settled, BTreeSet::from(["slack".to_owned()]), "slack is not sent twice");
        after.settle(
            "c",
            &[Settlement { alert_id: id, settled: BTreeSet::from(["webhook".into()]) }],
            &["slack", "webhook"],
        );
        assert!(after.outbox.is_empty());
    }

    #[test]
    fn abandoned_claims_are_taken_over_after_the_lease() {
        let t0 = at("2026-11-26T08:00:00Z");
        let (mut book, _) =
            IncidentBook::default().advance(&[row(Status::Missing)], t0, DAY, &Limits::new(DAY), &Rerun::default());
        assert_eq!(book.claim("dead", t0, CLAIM_LEASE).len(), 1);
        assert!(book.claim("x", t0 + chrono::Duration::seconds(119), CLAIM_LEASE).is_empty());
        assert_eq!(book.claim("x", t0 + chrono::Duration::seconds(120), CLAIM_LEASE).len(), 1);
        // A settlement from the dead claimant no longer applies.
        let id = book.outbox[0].alert.id.clone();
        book.settle("dead", &[Settlement { alert_id: id, settled: BTreeSet::from(["slack".into()]) }], &["slack"]);
        assert_eq!(book.outbox.len(), 1);
    }

    #[test]
    fn a_failed_run_opens_an_incident_the_next_success_closes_it_once() {
        let t0 = at("2026-11-26T02:00:00Z");
        let hour = chrono::Duration::hours(1);
        let mut book = IncidentBook::default();
        assert!(book.close_run("db-backup", "main", t0, t0).is_none(), "nothing open: no message");
        assert!(book.open_run("db-backup", "main", t0 + hour, "1 of 1 databases failed"));
        assert!(book.open_run("db-backup", "main", t0 + hour * 2, "again"), "a second failure joins it");
        assert_eq!(book.runs["db-backup main"].failures, 2);
        assert_eq!(book.runs["db-backup main"].opened_at, t0 + hour);
        // A success older than the last failure (delivered late) closes nothing.
        assert!(book.close_run("db-backup", "main", t0 + hour + hour / 2, t0 + hour * 3).is_none());
        assert_eq!(book.runs.len(), 1);
        // Another program or source does not close it either.
        assert!(book.close_run("prune", "main", t0 + hour * 4, t0 + hour * 4).is_none());
        assert!(book.close_run("db-backup", "other", t0 + hour * 4, t0 + hour * 4).is_none());
        let id = book.close_run("db-backup", "main", t0 + hour * 3, t0 + hour * 3).expect("recovered");
        assert!(book.runs.is_empty());
        assert_eq!(book.outbox.len(), 1);
        let alert = &book.outbox[0].alert;
        assert_eq!((alert.id.as_str(), alert.severity), (id.as_str(), crate::core::alerts::Severity::Recovered));
        assert!(alert.title.contains("db-backup") && alert.reason.contains("2 failed runs"), "{alert:?}");
        // The same success again (another instance, after re-reading the book) says nothing more.
        let mut again = IncidentBook::from_json(&book.to_json()).expect("round trip");
        assert!(again.close_run("db-backup", "main", t0 + hour * 3, t0 + hour * 3).is_none());
        assert_eq!(again.outbox.len(), 1);
        // A failure older than the last success, delivered late, opens nothing.
        assert!(!again.open_run("db-backup", "main", t0 + hour * 2 + hour / 2, "late"));
        assert!(again.runs.is_empty());
        // The freshness check keeps the run incidents.
        let (next, _) = again.advance(&[row(Status::Ok)], t0, DAY, &Limits::new(DAY), &Rerun::default());
        assert_eq!(next.last_success, again.last_success);
    }

    #[test]
    fn message_verdicts() {
        let t0 = at("2026-11-26T08:00:00Z");
        let rec = |state| MessageRecord {
            state,
            claimed_by: "x".into(),
            claimed_at: t0,
            settled: BTreeSet::new(),
            event_id: "e".into(),
            event_source: "//lifeboat/db-backup/main".into(),
            subscription: "projects/p/subscriptions/s".into(),
            message_id: "1".into(),
            program: "db-backup".into(),
            outcome: Outcome::Failure,
            attempts: 0,
        };
        assert_eq!(rec(MessageState::Done).verdict(t0, CLAIM_LEASE), Verdict::Duplicate);
        assert_eq!(rec(MessageState::Retry).verdict(t0, CLAIM_LEASE), Verdict::TakeOver);
        assert_eq!(
            rec(MessageState::Sending).verdict(t0 + chrono::Duration::seconds(5), CLAIM_LEASE),
            Verdict::InFlight
        );
        assert_eq!(
            rec(MessageState::Sending).verdict(t0 + chrono::Duration::minutes(3), CLAIM_LEASE),
            Verdict::TakeOver
        );
        let r = rec(MessageState::Done);
        assert_eq!(MessageRecord::from_json(&r.to_json()).expect("round trip"), r);
        let key = |sub: &str, src: &str, id: &str| MessageRecord::key(sub, src, "dev.lifeboat.db-backup.result", id);
        let k = key("projects/p/subscriptions/s", "//lifeboat/db-backup/main", "e1");
        assert!(k.starts_with("state/monitor/messages/") && k.len() == "state/monitor/messages/".len() + 64, "{k}");
        assert_eq!(k, key("projects/p/subscriptions/s", "//lifeboat/db-backup/main", "e1"), "stable");
        assert_ne!(k, key("projects/p/subscriptions/s", "//lifeboat/db-backup/main", "e2"), "another event");
        assert_ne!(k, key("projects/p/subscriptions/t", "//lifeboat/db-backup/main", "e1"), "another subscription");
        assert_ne!(k, key("projects/p/subscriptions/s", "//lifeboat/db-backup/other", "e1"), "another source");
        assert_ne!(key("a", "bc", "d"), key("ab", "c", "d"), "parts cannot slide into each other");
        assert!(IncidentBook::from_json(br#"{"version":99}"#).is_err());
        assert_eq!(IncidentBook::from_json(br#"{"version":1}"#).expect("minimal"), IncidentBook::default());
    }
}
