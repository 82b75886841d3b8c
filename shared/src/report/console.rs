//! The console's pages: the overview (one row per source, with its actions), one page per
//! database or bucket (its backups or snapshots, sizes, checksums, drills; the restore form),
//! the recent executions and one execution followed to its end. Built from the pieces in
//! [`super::layout`]; every value is escaped by the template. Pure: data in, HTML out.
//!
//! The only script ([`SCRIPT`]) sends the action forms as `POST` with a JSON body and an
//! `Authorization` header (the token given once in the URL fragment, kept in the tab's
//! `sessionStorage`; behind `gcloud run services proxy` the proxy adds the identity), then opens
//! the execution's page. Without script, nothing is sent: reading needs none.

use std::time::Duration;

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use maud::{Markup, PreEscaped, html};

use super::layout::{badge, card, colour, pill, shell, sparkline, verified_cell};
use crate::core::freshness::{Freshness, Limits, Status};
use crate::core::series::Kind;
use crate::core::units;
use crate::inventory::BackupDetail;
use crate::jobs::{Execution, State};

/// What a missing value shows.
const NONE: &str = "—";

/// The console's own style, beside the shared sheet: navigation, forms, buttons, phone widths.
const CONSOLE_STYLE: &str = r#"
nav{margin:0 0 14px}nav a{margin-right:14px;color:#0969da;text-decoration:none;font-weight:600}
.scroll{overflow-x:auto;-webkit-overflow-scrolling:touch}
.cards{flex-wrap:wrap}
form.act{display:inline-flex;gap:6px;align-items:center;flex-wrap:wrap;margin:0}
form.box{background:#fff;border:1px solid #d0d7de;border-radius:8px;padding:12px 16px;margin:12px 0;display:flex;flex-wrap:wrap;gap:8px;align-items:flex-end}
form.box label{display:flex;flex-direction:column;font-size:12px;color:#59636e;gap:2px}
input{font:inherit;padding:4px 6px;border:1px solid #d0d7de;border-radius:6px}
button{font:inherit;font-weight:600;padding:4px 12px;border-radius:6px;border:1px solid #1f883d;background:#1f883d;color:#fff;cursor:pointer}
button.warn{background:#cf222e;border-color:#cf222e}button.plain{background:#f6f8fa;color:#1f2328;border-color:#d0d7de}
.result{color:#cf222e;font-size:12px}
pre{background:#0d1117;color:#e6edf3;padding:10px;border-radius:8px;overflow-x:auto;font-size:12px;white-space:pre-wrap}
@media (max-width:640px){body{margin:10px}th,td{padding:6px 8px}.card{min-width:120px}}
"#;

/// The script of every console page: action forms become JSON `POST`s with an auth header.
pub const SCRIPT: &str = r#"
(function () {
  var m = location.hash.match(/token=([^&]+)/);
  if (m) {
    sessionStorage.setItem('lifeboat-token', decodeURIComponent(m[1]));
    history.replaceState(null, '', location.pathname + location.search);
  }
  function headers() {
    var h = {'Content-Type': 'application/json'};
    var t = sessionStorage.getItem('lifeboat-token');
    if (t) { h['Authorization'] = 'Bearer ' + t; }
    return h;
  }
  document.querySelectorAll('form[data-action]').forEach(function (f) {
    f.addEventListener('submit', function (ev) {
      ev.preventDefault();
      if (f.dataset.confirm && !window.confirm(f.dataset.confirm)) { return; }
      var body = {};
      Array.prototype.forEach.call(f.elements, function (el) {
        if (!el.name) { return; }
        if (el.type === 'checkbox') { body[el.name] = el.checked; }
        else if (el.value !== '') { body[el.name] = el.value; }
      });
      var out = f.querySelector('.result');
      out.textContent = 'starting…';
      fetch(f.dataset.action, {method: 'POST', headers: headers(), body: JSON.stringify(body)})
        .then(function (r) { return r.json().then(function (j) { return [r.status, j]; }); })
        .then(function (x) {
          if (x[0] === 202 && x[1].executions && x[1].executions.length) {
            location.href = x[1].executions[0].url;
          } else {
            out.textContent = x[1].error || ('HTTP ' + x[0]);
          }
        })
        .catch(function (e) { out.textContent = String(e); });
    });
  });
})();
"#;

/// The console's page around `body`: the shared shell, navigation, the console's style and
/// script. `refresh` reloads the page (a running execution).
fn page(title: &str, refresh: Option<u32>, body: Markup) -> String {
    let inner = html! {
        style { (PreEscaped(CONSOLE_STYLE)) }
        nav { a href="/" { "Overview" } a href="/executions" { "Executions" } a href="/api/openapi.yaml" { "API" } }
        (body)
        script { (PreEscaped(SCRIPT)) }
    };
    shell(title, refresh, inner).into_string()
}

/// An action button: a form the script sends to `action` as JSON.
fn action_button(action: &str, label: &str, class: &str, confirm: Option<&str>) -> Markup {
    html! {
        form.act data-action=(action) data-confirm=[confirm] {
            button class=(class) type="submit" { (label) }
            span.result {}
        }
    }
}

/// The age of the newest drill-verified backup of a row.
pub fn verified_age(row: &Freshness) -> Option<i64> {
    row.verified_age_seconds
}

fn source_url(r: &Freshness) -> String {
    match r.kind {
        Kind::Database => format!("/sources/db/{}", url_segment(&r.name)),
        Kind::Bucket => format!("/sources/bucket/{}", url_segment(&r.source)),
    }
}

/// What a path segment escapes: everything but letters, digits and `-._~` (RFC 3986 unreserved).
const SEGMENT: &percent_encoding::AsciiSet =
    &percent_encoding::NON_ALPHANUMERIC.remove(b'-').remove(b'.').remove(b'_').remove(b'~');

/// A path segment, percent-encoded.
pub fn url_segment(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, SEGMENT).to_string()
}

fn age(seconds: Option<i64>) -> String {
    seconds.map_or_else(|| NONE.to_owned(), units::age)
}

/// The overview: a headline, figures, one row per source with its action, recent executions.
pub fn overview(
    rows: &[Freshness],
    executions: &[Execution],
    now: DateTime<Utc>,
    tz: Tz,
    destination: &str,
    limits: &Limits,
) -> String {
    let bad = rows.iter().filter(|r| r.status != Status::Ok).count();
    let (badge_colour, headline) = match (rows.is_empty(), bad) {
        (true, _) => (colour(Status::Missing), "no backups found".to_owned()),
        (false, 0) => (colour(Status::Ok), "all ok".to_owned()),
        (false, n) => (colour(Status::Failed), format!("{n} of {} need attention", rows.len())),
    };
    let body = html! {
        h1 { "lifeboat console" (badge(badge_colour, &headline)) }
        div.sub {
            "checked " (now.with_timezone(&tz).format("%Y-%m-%d %H:%M:%S")) " (" (tz.name()) ")"
            " · stale after " (units::duration(limits.max_age))
            " · unverified after " (units::duration(limits.max_unverified_age)) " · " (destination)
        }
        div.cards {
            (card("sources", rows.len()))
            (card("newest backup", rows.iter().filter_map(|r| r.age_seconds).min().map_or_else(|| NONE.to_owned(), |s| format!("{} ago", units::age(s)))))
            (card("newest verified backup", rows.iter().filter_map(verified_age).min().map_or_else(|| NONE.to_owned(), |s| format!("{} ago", units::age(s)))))
            (card("backups held", rows.iter().map(|r| r.complete_backups).sum::<usize>()))
            (card("bytes stored", units::bytes(rows.iter().map(|r| r.total_bytes).sum())))
        }
        div.cards {
            (action_button("/api/backup", "Full backup now", "", None))
            (action_button("/api/prune/preview", "Prune preview", "plain", None))
            (action_button("/api/prune/apply", "Prune now", "warn", Some("Delete the backups the retention policy no longer keeps?")))
        }
        div.scroll { table {
            thead { tr {
                th { "status" } th { "source" } th { "action" } th { "newest backup" } th.num { "age" }
                th.num { "verified age" }
                th.num { "size" } th.num { "backups" } th.num { "stored" } th { "sizes" }
            } }
            tbody {
                @for r in rows {
                    tr.row.source style={ "--c:" (colour(r.status)) } data-name=(r.label()) {
                        td { (pill(r.status)) }
                        td { a href=(source_url(r)) { strong { (r.label()) } } br; span.sub { (match r.kind { Kind::Database => "database", Kind::Bucket => "bucket" }) } }
                        td { @match r.kind {
                            Kind::Database => (action_button(&format!("/api/databases/{}/backup", url_segment(&r.name)), "Back up now", "", None)),
                            Kind::Bucket => (action_button(&format!("/api/buckets/{}/snapshot", url_segment(&r.source)), "Snapshot now", "", None)),
                        } }
                        td.id { (r.newest_backup.as_deref().unwrap_or(NONE)) }
                        td.num { (age(r.age_seconds)) }
                        td.num.verified { (verified_cell(r)) }
                        td.num { (r.bytes.map_or_else(|| NONE.to_owned(), units::bytes)) }
                        td.num.count { (r.complete_backups) }
                        td.num { (units::bytes(r.total_bytes)) }
                        td { (sparkline(&r.recent_sizes, r.status)) }
                    }
                }
                @if rows.is_empty() { tr { td colspan="11" { "No sources: set BACKUP_DATABASES / SOURCE_BUCKETS, or back something up." } } }
            }
        } }
        h2 { "Recent executions" }
        (execution_table(executions))
    };
    page("lifeboat console", Some(60), body)
}

fn state_colour(state: State) -> &'static str {
    match state {
        State::Succeeded => colour(Status::Ok),
        State::Failed => colour(Status::Failed),
        State::Cancelled => colour(Status::Missing),
        State::Running | State::Pending => "#0969da",
    }
}

fn execution_url(e: &Execution) -> String {
    format!("/executions/{}/{}", url_segment(&e.job), url_segment(&e.id))
}

fn execution_table(executions: &[Execution]) -> Markup {
    html! {
        div.scroll { table.executions {
            thead { tr { th { "state" } th { "job" } th { "execution" } th { "started" } th { "by" } th { "progress / outcome" } } }
            tbody {
                @for e in executions {
                    tr.row.execution style={ "--c:" (state_colour(e.state)) } {
                        td { span.pill { (e.state.name()) } }
                        td { (e.job) }
                        td.id { a href=(execution_url(e)) { (e.id) } }
                        td { (e.created_at.format("%Y-%m-%d %H:%M:%S")) }
                        td { (e.started_by.as_deref().unwrap_or(NONE)) }
                        td { (e.progress.as_deref().or(e.message.as_deref()).unwrap_or(NONE)) }
                    }
                }
                @if executions.is_empty() { tr { td colspan="6" { "No executions yet." } } }
            }
        } }
    }
}

/// The recent executions.
pub fn executions(executions: &[Execution], follows: &str) -> String {
    let body = html! {
        h1 { "Executions" }
        div.sub { (follows) }
        (execution_table(executions))
    };
    page("lifeboat — executions", Some(10), body)
}

/// One execution, reloaded every 2 s until it ends.
pub fn execution(e: &Execution, follows: &str) -> String {
    let body = html! {
        h1 { (e.job) " " span.id { (e.id) } (badge(state_colour(e.state), e.state.name())) }
        div.sub { (follows) }
        div.cards {
            (card("state", e.state.name()))
            (card("started", e.created_at.format("%Y-%m-%d %H:%M:%S UTC").to_string()))
            (card("ended", e.finished_at.map_or_else(|| NONE.to_owned(), |t| t.format("%H:%M:%S UTC").to_string())))
            (card("started by", e.started_by.as_deref().unwrap_or(NONE)))
        }
        p { strong { "arguments: " } code { (e.args.join(" ")) } }
        @for (k, v) in &e.env { p { strong { "environment: " } code { (k) "=" (v) } } }
        @if let Some(p) = &e.progress { p.progress { strong { "progress: " } (p) } }
        @if let Some(m) = &e.message { p.outcome { strong { "outcome: " } (m) } }
        @if let Some(uri) = &e.log_uri { p { a href=(uri) { "logs in Cloud Logging" } } }
        @if !e.output.is_empty() { h2 { "output" } pre.output { @for line in &e.output { (line) "\n" } } }
    };
    let refresh = if e.state.is_final() { None } else { Some(2) };
    page(&format!("{} {} — {}", e.job, e.id, e.state.name()), refresh, body)
}

fn drill_colour(outcome: Option<&str>) -> &'static str {
    match outcome {
        Some("passed") => colour(Status::Ok),
        Some("failed") => colour(Status::Failed),
        _ => colour(Status::Missing),
    }
}

/// A drill's figures (and its error) as a tooltip.
fn drill_title(d: &crate::inventory::DrillSummary) -> String {
    let mut parts = Vec::new();
    if let Some(t) = &d.finished_at {
        parts.push(format!("finished {t}"));
    }
    if let Some(b) = d.bytes {
        parts.push(format!("{} verified", units::bytes(b)));
    }
    if let (Some(t), Some(r)) = (d.tables, d.rows) {
        parts.push(format!("{t} tables, {r} rows"));
    }
    if let Some(n) = d.objects_sampled {
        parts.push(format!("{n} objects compared"));
    }
    if let Some(e) = &d.error {
        parts.push(format!("error: {e}"));
    }
    parts.join("; ")
}

/// The page of one database or bucket: its backups with sizes, checksums and drills, and the
/// restore form.
pub fn source(
    kind: Kind,
    name: &str,
    row: Option<&Freshness>,
    backups: &[BackupDetail],
    backup_bucket: Option<&str>,
) -> String {
    let (title, action_path) = match kind {
        Kind::Database => (format!("database {name}"), format!("/api/databases/{}", url_segment(name))),
        Kind::Bucket => (format!("bucket {name}"), format!("/api/buckets/{}", url_segment(name))),
    };
    // Shown once the manifests say (W13's encrypted dumps).
    let any_encryption = backups.iter().any(|b| b.encrypted.is_some());
    let body = html! {
        h1 { (title) @if let Some(r) = row { (badge(colour(r.status), r.status.name())) } }
        div.cards {
            @if let Some(r) = row {
                (card("newest backup", age(r.age_seconds)))
                (card("newest verified backup", verified_cell(r)))
                (card("backups held", r.complete_backups))
                (card("bytes stored", units::bytes(r.total_bytes)))
            }
            @match kind {
                Kind::Database => (action_button(&format!("{action_path}/backup"), "Back up now", "", None)),
                Kind::Bucket => (action_button(&format!("{action_path}/snapshot"), "Snapshot now", "", None)),
            }
        }
        @if let Some(r) = row { p { "sizes of the last backups: " (sparkline(&r.recent_sizes, r.status)) } }
        div.scroll { table.backups {
            thead { tr {
                th { "id" } th { "complete" } th.num { "stored" }
                @match kind {
                    Kind::Database => { th.num { "dump" } th { "sha-256" } th { "crc32c" } @if any_encryption { th { "encrypted" } } }
                    Kind::Bucket => { th.num { "objects" } }
                }
                th { "verified" } th { "drills" }
            } }
            tbody {
                @for b in backups {
                    tr.backup {
                        td.id { (b.id) }
                        td { @if b.suspicious { "suspicious" } @else if b.complete { "yes" } @else { "no (running or failed)" } }
                        td.num { (units::bytes(b.bytes)) }
                        @match kind {
                            Kind::Database => {
                                td.num { (b.uncompressed_bytes.map_or_else(|| NONE.to_owned(), units::bytes)) }
                                td.id title=[b.sha256.as_deref()] { (b.sha256.as_deref().map_or(NONE, |s| &s[..s.len().min(16)])) }
                                td.id { (b.crc32c.as_deref().unwrap_or(NONE)) }
                                @if any_encryption { td { (match b.encrypted { Some(true) => "yes", Some(false) => "no", None => NONE }) } }
                            }
                            Kind::Bucket => { td.num { (b.objects.map_or_else(|| NONE.to_owned(), |n| n.to_string())) } }
                        }
                        td.verified { @if b.verified { "yes" } @else { (NONE) } }
                        td.drills {
                            @for d in &b.drills {
                                span.pill.drill style={ "--c:" (drill_colour(d.outcome.as_deref())) } title=(drill_title(d)) {
                                    (d.outcome.as_deref().unwrap_or("?"))
                                    @if let Some(rto) = d.rto_seconds { " · RTO " (units::duration(Duration::from_secs(rto.max(0.0).round() as u64))) }
                                    @if let Some(n) = d.objects_checked { " · " (n) " checked" }
                                }
                                " "
                            }
                            @if b.drills.is_empty() { (NONE) }
                        }
                    }
                }
                @if backups.is_empty() { tr { td colspan="8" { "No backups yet." } } }
            }
        } }
        @match kind {
            Kind::Database => {
                h2 { "Restore" }
                form.box data-action={ (action_path) "/restore" } data-confirm={ "Restore " (name) " into the target database?" } {
                    label { "backup id (empty: newest)" input name="backup_id" placeholder="20261126T020000Z-1a2b3c4d"; }
                    label { "or newest before (RFC 3339)" input name="before" placeholder="2026-11-26T03:00:00Z"; }
                    label { "target database" input name="target" required; }
                    label { "target again, to confirm" input name="confirm_target" required; }
                    button.warn type="submit" { "Restore" }
                    span.result {}
                }
            }
            Kind::Bucket => {
                h2 { "Restore" }
                form.box data-action={ (action_path) "/restore" } {
                    label { "snapshot (empty: newest)" input name="snapshot"; }
                    label { "or newest before (RFC 3339)" input name="before"; }
                    label { "target bucket" input name="target_bucket" required; }
                    label { "target prefix" input name="target_prefix"; }
                    label { "dry run first" input type="checkbox" name="dry_run" checked; }
                    label { "target bucket again (real runs)" input name="confirm_target"; }
                    button.warn type="submit" { "Restore" }
                    span.result {}
                }
                @if let Some(b) = backup_bucket { div.sub { "The backup store's bucket (" (b) ") is never a target." } }
            }
        }
    };
    page(&format!("lifeboat — {title}"), Some(60), body)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn row(name: &str) -> Freshness {
        Freshness {
            kind: Kind::Database,
            source: "main".into(),
            name: name.into(),
            status: Status::Ok,
            newest_backup: Some("20261126T020000Z-1a2b3c4d".into()),
            age_seconds: Some(3600),
            bytes: Some(10),
            bytes_change: None,
            complete_backups: 1,
            total_bytes: 10,
            recent_sizes: vec![10],
            newest_verified_backup: None,
            verified_age_seconds: Some(2 * 86_400),
            last_drill_outcome: None,
            last_drill_backup: None,
            encrypted: None,
        }
    }

    fn execution(state: State) -> Execution {
        Execution {
            job: "db-backup".into(),
            id: "db-backup-x".into(),
            name: "local/db-backup/db-backup-x".into(),
            state,
            created_at: Utc::now(),
            finished_at: None,
            args: vec![],
            env: BTreeMap::from([("BACKUP_DATABASES".into(), "<b>app</b>".into())]),
            started_by: Some("admin@example.com".into()),
            progress: Some("dump of app: 1.0 MiB".into()),
            output: vec!["<script>alert(1)</script>".into()],
            message: None,
            log_uri: None,
        }
    }

    #[test]
    fn the_overview_has_a_backup_button_per_database_and_escapes_names() {
        let html = overview(
            &[row("app"), row("<img src=x>")],
            &[],
            Utc::now(),
            chrono_tz::UTC,
            "file:///b",
            &Limits::new(Duration::from_secs(3600)),
        );
        assert!(html.contains(r#"data-action="/api/databases/app/backup""#), "{html}");
        assert!(html.contains("/api/databases/%3Cimg%20src%3Dx%3E/backup"), "{html}");
        assert!(!html.contains("<img src=x>"));
        assert_eq!(html.matches("Back up now").count(), 2);
        assert!(html.contains("<th class=\"num\">verified age</th>"), "{html}");
        assert!(html.contains("unverified after 8d"), "{html}");
        assert_eq!(html.matches(r#"<td class="num verified"><span>2d00h</span></td>"#).count(), 2, "{html}");
        let never = Freshness { verified_age_seconds: None, ..row("app") };
        let html =
            overview(&[never], &[], Utc::now(), chrono_tz::UTC, "file:///b", &Limits::new(Duration::from_secs(1)));
        assert!(html.contains(r#"<td class="num verified">never</td>"#), "{html}");
    }

    #[test]
    fn a_source_page_lists_backups_with_checksums_drills_and_the_restore_form() {
        use crate::inventory::DrillSummary;
        let backup = |id: &str, drills: Vec<DrillSummary>, encrypted: Option<bool>| BackupDetail {
            id: id.into(),
            started_at: Utc::now(),
            complete: true,
            suspicious: false,
            bytes: 2048,
            stored_bytes: Some(2000),
            uncompressed_bytes: Some(10_000),
            objects: None,
            sha256: Some("e894dc48ad18cb82486db0c56d895baacf9b831b4cea5a129a22df00860d67eb".into()),
            crc32c: Some("KNZfYg==".into()),
            encrypted,
            verified: drills.iter().any(|d| d.outcome.as_deref() == Some("passed")),
            drills,
        };
        let drill = |outcome: &str| DrillSummary {
            key: format!("db/main/app/x/drills/{outcome}.json"),
            outcome: Some(outcome.into()),
            started_at: None,
            finished_at: None,
            rto_seconds: Some(95.0),
            bytes: Some(2048),
            tables: Some(3),
            rows: Some(1000),
            objects_checked: None,
            objects_sampled: None,
            error: (outcome == "failed").then(|| "<b>row counts differ</b>".to_owned()),
        };
        let html = source(
            Kind::Database,
            "app",
            Some(&row("app")),
            &[
                backup("20261126T020000Z-1a2b3c4d", vec![drill("failed")], None),
                backup("20261125T020000Z-00000001", vec![drill("passed")], None),
                backup("20261124T020000Z-00000001", vec![], None),
            ],
            None,
        );
        assert_eq!(html.matches(r#"<tr class="backup">"#).count(), 3);
        assert!(html.contains("e894dc48ad18cb82") && html.contains("KNZfYg=="), "{html}");
        assert!(html.contains("passed · RTO 1m35s") || html.contains("passed · RTO 95s"), "{html}");
        assert!(html.contains("failed · RTO"), "{html}");
        assert!(html.contains("3 tables, 1000 rows; error: &lt;b&gt;row counts differ&lt;/b&gt;"), "{html}");
        assert_eq!(html.matches(r#"<td class="verified">yes</td>"#).count(), 1, "{html}");
        assert!(
            html.contains(r#"<div class="k">newest verified backup</div><div class="v"><span>2d00h</span></div>"#),
            "{html}"
        );
        assert!(
            html.contains(r#"name="confirm_target""#) && html.contains(r#"data-action="/api/databases/app/restore""#)
        );
        assert!(!html.contains("encrypted"), "no column before any manifest says");
        let html =
            source(Kind::Database, "app", None, &[backup("20261126T020000Z-1a2b3c4d", vec![], Some(true))], None);
        assert!(html.contains("<th>encrypted</th>") && html.contains("<td>yes</td>"), "{html}");
    }

    #[test]
    fn a_running_execution_refreshes_and_a_finished_one_does_not() {
        let running = super::execution(&execution(State::Running), "local");
        assert!(running.contains(r#"http-equiv="refresh" content="2""#));
        assert!(running.contains("dump of app: 1.0 MiB") && running.contains("&lt;script&gt;alert(1)"));
        assert!(running.contains("BACKUP_DATABASES=&lt;b&gt;app&lt;/b&gt;"));
        let done = super::execution(&execution(State::Succeeded), "local");
        assert!(!done.contains("http-equiv"));
    }
}
