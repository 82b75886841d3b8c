//! Alerts: what `monitor` tells people, built from result events and freshness incidents, and
//! rendered for Slack (`text` plus Block Kit `blocks`) or as plain JSON for a generic webhook.
//! Pure: no network here (delivery is [`crate::notify::slack`]).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::core::events::{Event, Outcome};
use crate::core::freshness::{Freshness, Limits, Status};
use crate::core::series::Kind;
use crate::core::units;

/// How bad it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Something failed or backups are missing/stale.
    Failure,
    /// Done, but deserves a look (e.g. a suspicious snapshot).
    Warning,
    /// An incident is over.
    Recovered,
}

/// One alert.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Alert {
    /// Unique id (webhook consumers may deduplicate on it).
    pub id: String,
    /// Severity.
    pub severity: Severity,
    /// What happened, one line (`db-backup failed`).
    pub title: String,
    /// Which source (`main/app`, `gs://media`).
    pub source: String,
    /// Why, possibly several lines.
    pub reason: String,
    /// When it happened.
    pub at: DateTime<Utc>,
    /// The command that reruns the job, when there is one.
    pub rerun: Option<String>,
    /// Extra facts, in order (`program`, `backup`, `destination`…).
    pub facts: Vec<(String, String)>,
    /// Where the alert comes from (`event …`, `freshness check`).
    pub origin: String,
}

/// How to print rerun commands: `gcloud run jobs execute JOB --region REGION [--project P]`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Rerun {
    /// Cloud Run region of the jobs.
    pub region: Option<String>,
    /// Project.
    pub project: Option<String>,
}

impl Rerun {
    /// The command that runs `job` now.
    pub fn command(&self, job: &str) -> String {
        let mut c = format!("gcloud run jobs execute {job} --region {}", self.region.as_deref().unwrap_or("REGION"));
        if let Some(p) = &self.project {
            c.push_str(&format!(" --project {p}"));
        }
        c
    }

    /// The command for a program's job, when it is a scheduled job that can simply be rerun.
    pub fn for_program(&self, program: &str) -> Option<String> {
        matches!(program, "db-backup" | "storage-backup" | "prune" | "drill").then(|| self.command(program))
    }
}

/// The alert for a result event; `None` for a success.
pub fn from_event(event: &Event, message_id: &str, rerun: &Rerun) -> Option<Alert> {
    let d = &event.data;
    let severity = match d.outcome {
        Outcome::Success => return None,
        Outcome::Failure => Severity::Failure,
        Outcome::Warning => Severity::Warning,
    };
    let bad: Vec<_> = d.items.iter().filter(|i| i.outcome != Outcome::Success).collect();
    let source = if bad.is_empty() {
        d.source.clone()
    } else {
        format!("{}: {}", d.source, bad.iter().map(|i| i.name.as_str()).collect::<Vec<_>>().join(", "))
    };
    let mut reason = d.summary.clone();
    for i in &bad {
        if let Some(e) = &i.error {
            reason.push_str(&format!("\n{}: {e}", i.name));
        }
    }
    let mut facts = vec![("Program".to_owned(), d.program.clone())];
    facts.push(("Destination".to_owned(), d.destination.clone()));
    facts.push(("Duration".to_owned(), format!("{:.1} s", d.duration_ms() as f64 / 1000.0)));
    if let Some(id) = bad.iter().find_map(|i| i.backup_id.clone()) {
        facts.push(("Backup".to_owned(), id));
    }
    Some(Alert {
        id: format!("event:{}", event.id),
        severity,
        title: match severity {
            Severity::Warning => format!("{} finished with a warning", d.program),
            _ => format!("{} failed", d.program),
        },
        source,
        reason,
        at: d.finished_at,
        rerun: rerun.for_program(&d.program),
        facts,
        origin: format!("result event {} (Pub/Sub message {message_id})", event.id),
    })
}

/// An incident of failed runs of one program for one source, as the recovery message tells it.
#[derive(Debug, Clone, Copy)]
pub struct FailedRuns<'a> {
    /// The program.
    pub program: &'a str,
    /// The source.
    pub source: &'a str,
    /// When the first failed run finished.
    pub since: DateTime<Utc>,
    /// How many runs failed.
    pub failures: u32,
    /// The latest failure's summary.
    pub last_summary: &'a str,
}

/// The alert that says the runs of `failed`'s program and source succeed again: a run finished
/// at `succeeded_at`, seen at `now`.
pub fn run_recovered(failed: FailedRuns<'_>, succeeded_at: DateTime<Utc>, now: DateTime<Utc>) -> Alert {
    let lasted = units::age((succeeded_at - failed.since).num_seconds());
    let runs =
        if failed.failures == 1 { "1 failed run".to_owned() } else { format!("{} failed runs", failed.failures) };
    Alert {
        id: format!("run:{}:{}:recovered:{}", failed.program, failed.source, succeeded_at.timestamp()),
        severity: Severity::Recovered,
        title: format!("{} recovered", failed.program),
        source: failed.source.to_owned(),
        reason: format!(
            "a run finished successfully after {runs}; the incident lasted {lasted} (last failure: {})",
            failed.last_summary
        ),
        at: now,
        rerun: None,
        facts: vec![
            ("Program".to_owned(), failed.program.to_owned()),
            ("Failed runs".to_owned(), failed.failures.to_string()),
        ],
        origin: "result events".to_owned(),
    }
}

/// What changed about a source's freshness.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Change {
    /// It turned bad: a new incident.
    Opened,
    /// Still bad after the reminder interval.
    Reminder,
    /// Ok again.
    Recovered,
}

fn job_for(kind: Kind) -> &'static str {
    match kind {
        Kind::Database => "db-backup",
        Kind::Bucket => "storage-backup",
    }
}

/// Why a row is not ok, in words.
pub fn explain(row: &Freshness, limits: &Limits) -> String {
    let newest = match (&row.newest_backup, row.age_seconds) {
        (Some(id), Some(age)) => format!("newest complete backup {id} is {} old", units::age(age)),
        _ => "no complete backup".to_owned(),
    };
    let verified = match (&row.newest_verified_backup, row.verified_age_seconds) {
        (Some(id), Some(age)) => format!("newest verified backup {id} is {} old", units::age(age)),
        _ => "no backup was ever verified by a drill".to_owned(),
    };
    match row.status {
        Status::Ok if row.newest_verified_backup.is_some() => format!("{newest}; {verified}"),
        Status::Ok => newest,
        Status::Stale => format!("{newest}, older than the limit of {}", units::duration(limits.max_age)),
        Status::Unverified => {
            let limit = units::duration(limits.max_unverified_age);
            let why = if row.newest_verified_backup.is_some() {
                format!("{verified}, older than the limit of {limit}")
            } else {
                format!("{verified}, and backups have been held for longer than the limit of {limit}")
            };
            format!("{why} ({newest}): no drill proved that a recent backup restores; check the drill job's last runs")
        }
        Status::Failed => format!("the newest run left no manifest: it failed ({newest})"),
        Status::Suspicious => format!("the newest backup is flagged suspicious ({newest})"),
        Status::Unencrypted => format!(
            "{newest} and is NOT encrypted although BACKUP_ENCRYPTION_RECIPIENTS is set: check db-backup's \
             configuration (it must have the same recipients), then run a new backup"
        ),
        Status::Missing => "no complete backup found in the backup store".to_owned(),
    }
}

/// The alert for a freshness change. `opened_at` is when the incident began.
pub fn from_change(
    change: Change,
    row: &Freshness,
    opened_at: DateTime<Utc>,
    now: DateTime<Utc>,
    limits: &Limits,
    rerun: &Rerun,
) -> Alert {
    let label = row.label();
    let status = row.status.name();
    let open_for = units::age((now - opened_at).num_seconds());
    let (severity, title, reason) = match change {
        Change::Opened => (
            if row.status == Status::Suspicious { Severity::Warning } else { Severity::Failure },
            format!("{label} backups are {status}"),
            explain(row, limits),
        ),
        Change::Reminder => (
            if row.status == Status::Suspicious { Severity::Warning } else { Severity::Failure },
            format!("still {status}: {label} backups"),
            format!("{} (open for {open_for})", explain(row, limits)),
        ),
        Change::Recovered => (
            Severity::Recovered,
            format!("{label} backups recovered"),
            format!("{}; the incident lasted {open_for}", explain(row, limits)),
        ),
    };
    let mut facts = vec![("Status".to_owned(), status.to_owned())];
    if let Some(b) = row.bytes {
        facts.push(("Size".to_owned(), units::bytes(b)));
    }
    facts.push(("Backups held".to_owned(), row.complete_backups.to_string()));
    if let Some(age) = row.verified_age_seconds {
        facts.push(("Verified age".to_owned(), units::age(age)));
    }
    let job = if row.status == Status::Unverified { "drill" } else { job_for(row.kind) };
    Alert {
        id: format!("check:{label}:{change:?}:{}", now.timestamp()).to_lowercase(),
        severity,
        title,
        source: label,
        reason,
        at: now,
        rerun: (change != Change::Recovered).then(|| rerun.command(job)),
        facts,
        origin: "freshness check".to_owned(),
    }
}

/// Escapes text for Slack mrkdwn: `&`, `<` and `>` are Slack's control characters (`<!channel>`
/// pings everyone, `<https://x|text>` disguises a link), so every text that comes from an
/// event, a name or a server message goes through here, in the top-level `text` as in blocks.
pub fn mrkdwn(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

/// [`mrkdwn`] for the inside of a ```` ``` ```` block: a ```` ``` ```` in the text would close
/// the block early, so backticks are broken up with a zero-width space.
fn mrkdwn_code(text: &str) -> String {
    mrkdwn(text).replace("``", "`\u{200b}`")
}

/// Shortens `text` to at most `max` characters, marking the cut.
fn cap(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_owned();
    }
    let mut s: String = text.chars().take(max.saturating_sub(1)).collect();
    s.push('…');
    s
}

impl Alert {
    fn emoji(&self) -> &'static str {
        match self.severity {
            Severity::Failure => ":red_circle:",
            Severity::Warning => ":warning:",
            Severity::Recovered => ":white_check_mark:",
        }
    }

    /// The one-line text (Slack's notification and fallback text).
    pub fn text(&self) -> String {
        let first = self.reason.lines().next().unwrap_or_default();
        if self.title.contains(&self.source) {
            cap(&format!("{} {}: {}", self.emoji(), self.title, first), 600)
        } else {
            cap(&format!("{} {} ({}): {}", self.emoji(), self.title, self.source, first), 600)
        }
    }

    /// The Slack incoming-webhook payload: `text` plus `blocks`.
    pub fn slack_payload(&self) -> serde_json::Value {
        let when = format!(
            "<!date^{}^{{date_short_pretty}} {{time}}|{}>",
            self.at.timestamp(),
            self.at.format("%Y-%m-%d %H:%M:%S UTC")
        );
        let mut fields = vec![
            serde_json::json!({"type": "mrkdwn", "text": format!("*Source*\n{}", cap(&mrkdwn(&self.source), 1900))}),
            serde_json::json!({"type": "mrkdwn", "text": format!("*When*\n{when}")}),
        ];
        for (k, v) in self.facts.iter().take(8) {
            fields.push(
                serde_json::json!({"type": "mrkdwn", "text": format!("*{}*\n{}", mrkdwn(k), cap(&mrkdwn(v), 1900))}),
            );
        }
        let mut blocks = vec![
            serde_json::json!({"type": "header", "text": {"type": "plain_text", "text": cap(&format!("{} {}", self.emoji(), self.title), 150), "emoji": true}}),
            serde_json::json!({"type": "section", "fields": fields}),
            serde_json::json!({"type": "section", "text": {"type": "mrkdwn", "text": format!("*Reason*\n```{}```", cap(&mrkdwn_code(&self.reason), 2800))}}),
        ];
        if let Some(cmd) = &self.rerun {
            blocks.push(serde_json::json!({"type": "section", "text": {"type": "mrkdwn", "text": format!("*Rerun*\n`{}`", mrkdwn(cmd))}}));
        }
        blocks.push(serde_json::json!({"type": "context", "elements": [{"type": "mrkdwn", "text": cap(&format!("lifeboat monitor · {}", mrkdwn(&self.origin)), 2900)}]}));
        // Previews of links someone put in a name or a message are not fetched either.
        serde_json::json!({ "text": mrkdwn(&self.text()), "blocks": blocks, "unfurl_links": false, "unfurl_media": false })
    }

    /// The generic webhook payload: the alert as JSON, with a schema name.
    pub fn webhook_payload(&self) -> serde_json::Value {
        let mut v = serde_json::to_value(self).unwrap_or_default();
        if let Some(o) = v.as_object_mut() {
            o.insert("schema".into(), "lifeboat.alert/v1".into());
            o.insert("text".into(), self.text().into());
            o.insert(
                "facts".into(),
                self.facts.iter().map(|(k, v)| (k.clone(), serde_json::Value::from(v.clone()))).collect(),
            );
        }
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::events::{ItemResult, RunResult, SCHEMA_VERSION};

    fn event(outcome: Outcome) -> Event {
        let t = DateTime::parse_from_rfc3339("2026-11-26T02:00:00Z").expect("t").to_utc();
        Event::new(RunResult {
            schema_version: SCHEMA_VERSION,
            program: "db-backup".into(),
            source: "main".into(),
            outcome,
            summary: "1 of 2 databases failed".into(),
            started_at: t,
            finished_at: t + chrono::Duration::seconds(90),
            destination: "gs://b".into(),
            items: vec![
                ItemResult {
                    kind: "database".into(),
                    name: "app".into(),
                    outcome: Outcome::Failure,
                    error: Some("pg_dump exited with status 1: <connection refused>".into()),
                    backup_id: None,
                    figures: Default::default(),
                },
                ItemResult {
                    kind: "database".into(),
                    name: "billing".into(),
                    outcome: Outcome::Success,
                    error: None,
                    backup_id: Some("x".into()),
                    figures: Default::default(),
                },
            ],
            figures: Default::default(),
        })
    }

    #[test]
    fn failure_event_becomes_a_slack_message_with_rerun_command() {
        let rerun = Rerun { region: Some("europe-west1".into()), project: Some("acme".into()) };
        assert_eq!(from_event(&event(Outcome::Success), "1", &rerun), None);
        let alert = from_event(&event(Outcome::Failure), "123", &rerun).expect("alert");
        assert_eq!(alert.title, "db-backup failed");
        assert_eq!(alert.source, "main: app");
        assert!(alert.reason.contains("app: pg_dump exited with status 1"), "{}", alert.reason);
        let cmd = "gcloud run jobs execute db-backup --region europe-west1 --project acme";
        assert_eq!(alert.rerun.as_deref(), Some(cmd));
        let p = alert.slack_payload();
        assert!(p["text"].as_str().expect("text").starts_with(":red_circle: db-backup failed (main: app)"));
        let blocks = p["blocks"].as_array().expect("blocks");
        assert_eq!(blocks[0]["type"], "header");
        let all = p.to_string();
        assert!(all.contains(cmd), "{all}");
        assert!(all.contains("&lt;connection refused&gt;"), "mrkdwn escaped: {all}");
        assert!(all.contains("<!date^1795658490^"), "{all}");
        let w = alert.webhook_payload();
        assert_eq!(w["schema"], "lifeboat.alert/v1");
        assert_eq!(w["severity"], "failure");
        assert_eq!(w["facts"]["Program"], "db-backup");
        let warn = from_event(&event(Outcome::Warning), "1", &Rerun::default()).expect("alert");
        assert_eq!(warn.severity, Severity::Warning);
        assert_eq!(warn.rerun.as_deref(), Some("gcloud run jobs execute db-backup --region REGION"));
    }

    #[test]
    fn freshness_changes_read_well() {
        let now = DateTime::parse_from_rfc3339("2026-11-26T08:00:00Z").expect("t").to_utc();
        let row = Freshness {
            kind: Kind::Bucket,
            source: "media".into(),
            name: "snapshots".into(),
            status: Status::Stale,
            newest_backup: Some("20261125T070000Z-00000001".into()),
            age_seconds: Some(25 * 3600 + 60),
            bytes: Some(2048),
            encrypted: Some(true),
            bytes_change: None,
            complete_backups: 4,
            total_bytes: 9000,
            recent_sizes: vec![],
            newest_verified_backup: None,
            verified_age_seconds: None,
            last_drill_outcome: None,
            last_drill_backup: None,
        };
        let max = &Limits::new(std::time::Duration::from_secs(25 * 3600));
        let a = from_change(Change::Opened, &row, now, now, max, &Rerun::default());
        assert_eq!(a.title, "gs://media backups are stale");
        assert!(a.reason.contains("is 1d01h old, older than the limit of 25h"), "{}", a.reason);
        assert_eq!(a.rerun.as_deref(), Some("gcloud run jobs execute storage-backup --region REGION"));
        let ok = Freshness { status: Status::Ok, ..row };
        let r = from_change(Change::Recovered, &ok, now - chrono::Duration::hours(3), now, max, &Rerun::default());
        assert_eq!((r.severity, r.rerun.clone()), (Severity::Recovered, None));
        assert!(r.reason.ends_with("the incident lasted 3h00m"), "{}", r.reason);
        assert!(r.text().starts_with(":white_check_mark: gs://media backups recovered"));
    }

    #[test]
    fn long_texts_are_capped_for_slack() {
        let mut a = from_event(&event(Outcome::Failure), "1", &Rerun::default()).expect("alert");
        a.reason = "x".repeat(10_000);
        a.title = "t".repeat(500);
        let p = a.slack_payload();
        assert!(p["blocks"][0]["text"]["text"].as_str().expect("header").chars().count() <= 150);
        assert!(p["blocks"][2]["text"]["text"].as_str().expect("reason").chars().count() <= 3000);
        assert!(p["text"].as_str().expect("text").chars().count() <= 600 + 4 * 3);
    }

    #[test]
    fn text_and_blocks_are_escaped_for_mrkdwn() {
        let mut e = event(Outcome::Failure);
        e.data.items[0].name = "<!channel> x".into();
        e.data.summary = "<https://evil.example|fix> & ```<!here>```".into();
        let p = from_event(&e, "1", &Rerun::default()).expect("alert").slack_payload();
        let text = p["text"].as_str().expect("text");
        assert!(
            text.contains("&lt;!channel&gt; x") && text.contains("&lt;https://evil.example|fix&gt; &amp;"),
            "{text}"
        );
        let raw = p.to_string();
        assert!(!raw.contains("<!channel") && !raw.contains("<!here") && !raw.contains("<https"), "{raw}");
        let reason = p["blocks"][2]["text"]["text"].as_str().expect("reason");
        assert_eq!(reason.matches("```").count(), 2, "the code block is not closed early: {reason}");
    }

    #[test]
    fn an_unverified_source_reads_well_and_points_at_the_drill() {
        let now = DateTime::parse_from_rfc3339("2026-12-02T08:00:00Z").expect("t").to_utc();
        let row = Freshness {
            kind: Kind::Database,
            source: "main".into(),
            name: "app".into(),
            status: Status::Unverified,
            newest_backup: Some("20261202T020000Z-00000009".into()),
            age_seconds: Some(6 * 3600),
            bytes: Some(2048),
            encrypted: None,
            bytes_change: None,
            complete_backups: 10,
            total_bytes: 9000,
            recent_sizes: vec![],
            newest_verified_backup: Some("20261122T020000Z-00000001".into()),
            verified_age_seconds: Some(10 * 86_400 + 6 * 3600),
            last_drill_outcome: None,
            last_drill_backup: None,
        };
        let limits = Limits::new(std::time::Duration::from_secs(25 * 3600));
        let a = from_change(Change::Opened, &row, now, now, &limits, &Rerun::default());
        assert_eq!(a.title, "main/app backups are unverified");
        assert!(
            a.reason.starts_with(
                "newest verified backup 20261122T020000Z-00000001 is 10d06h old, older than the limit of 8d"
            ),
            "{}",
            a.reason
        );
        assert_eq!(a.rerun.as_deref(), Some("gcloud run jobs execute drill --region REGION"));
        assert!(a.facts.contains(&("Verified age".to_owned(), "10d06h".to_owned())));
        let never = Freshness { newest_verified_backup: None, verified_age_seconds: None, ..row.clone() };
        assert!(
            from_change(Change::Opened, &never, now, now, &limits, &Rerun::default())
                .reason
                .starts_with("no backup was ever verified by a drill")
        );
        let ok = Freshness { status: Status::Ok, verified_age_seconds: Some(3600), ..row };
        let r = from_change(Change::Recovered, &ok, now - chrono::Duration::days(2), now, &limits, &Rerun::default());
        assert!(r.reason.contains("newest verified backup 20261122T020000Z-00000001 is 1h00m old"), "{}", r.reason);
        assert_eq!(
            Rerun::default().for_program("drill").as_deref(),
            Some("gcloud run jobs execute drill --region REGION")
        );
    }
}
