//! The status page `health` serves to browsers: one self-contained HTML document (inline CSS and
//! SVG, no script, no external resource), built from the pieces in [`super::layout`]. Pure: rows
//! and time in, HTML out; every name in it is escaped by the template.

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use maud::{Markup, html};

use super::layout::{badge, card, colour, pill, shell, sparkline, verified_cell};
use crate::core::freshness::{Freshness, HISTORY, Limits, Status};
use crate::core::series::Kind;
use crate::core::units;

/// What a missing value shows.
const NONE: &str = "—";

/// Renders the page. `now` and `tz` set the "checked at" line; `limits` gives the staleness and
/// unverified limits and whether database backups must be encrypted (said in the subtitle).
pub fn render(rows: &[Freshness], now: DateTime<Utc>, tz: Tz, destination: &str, limits: &Limits) -> String {
    let bad = rows.iter().filter(|r| r.status != Status::Ok).count();
    let (badge_colour, headline) = if rows.is_empty() {
        (colour(Status::Missing), "no backups found".to_owned())
    } else if bad == 0 {
        (colour(Status::Ok), "all ok".to_owned())
    } else {
        (colour(Status::Failed), format!("{bad} of {} need attention", rows.len()))
    };
    let backups: usize = rows.iter().map(|r| r.complete_backups).sum();
    let stored: u64 = rows.iter().map(|r| r.total_bytes).sum();
    let newest = rows.iter().filter_map(|r| r.age_seconds).min();
    let newest_verified = rows.iter().filter_map(|r| r.verified_age_seconds).min();
    let body = html! {
        h1 { "lifeboat backup status" (badge(badge_colour, &headline)) }
        div.sub {
            "checked " (now.with_timezone(&tz).format("%Y-%m-%d %H:%M:%S")) " (" (tz.name()) ")"
            " · stale after " (units::duration(limits.max_age))
            " · unverified after " (units::duration(limits.max_unverified_age))
            @if limits.encryption_required { " · database backups must be encrypted" }
            " · " (destination)
        }
        div.cards {
            (card("sources", rows.len()))
            (card("newest backup", newest.map_or_else(|| NONE.to_owned(), |s| format!("{} ago", units::age(s)))))
            (card("newest verified backup", newest_verified.map_or_else(|| NONE.to_owned(), |s| format!("{} ago", units::age(s)))))
            (card("backups held", backups))
            (card("bytes stored", units::bytes(stored)))
        }
        table {
            thead {
                tr {
                    th { "status" } th { "source" } th { "kind" } th { "newest backup" }
                    th.num { "age" } th.num { "verified age" } th.num { "size" } th.num { "change" } th { "encrypted" }
                    th.num { "backups" } th.num { "stored" }
                    th { "last " (HISTORY) " sizes" }
                }
            }
            tbody {
                @for r in rows { (row(r)) }
                @if rows.is_empty() {
                    tr { td colspan="12" { "No backups found in the backup store." } }
                }
            }
        }
        footer { "JSON: " code { "GET /status" } " (200 when all ok, 503 otherwise) · refreshes every minute" }
    };
    shell("lifeboat — backup status", Some(60), body).into_string()
}

/// One source's row, bordered in its status colour.
fn row(r: &Freshness) -> Markup {
    let kind = match r.kind {
        Kind::Database => "database",
        Kind::Bucket => "bucket",
    };
    html! {
        tr.row style={ "--c:" (colour(r.status)) } {
            td { (pill(r.status)) }
            td { strong { (r.label()) } }
            td { (kind) }
            td.id { (r.newest_backup.as_deref().unwrap_or(NONE)) }
            td.num { (r.age_seconds.map_or_else(|| NONE.to_owned(), units::age)) }
            td.num { (verified_cell(r)) }
            td.num { (r.bytes.map_or_else(|| NONE.to_owned(), units::bytes)) }
            td.num {
                @match r.bytes_change {
                    None => (NONE),
                    Some(d) => span class=(if d < 0 { "down" } else { "up" }) { (units::bytes_change(d)) },
                }
            }
            td { (encrypted_cell(r.encrypted)) }
            td.num { (r.complete_backups) }
            td.num { (units::bytes(r.total_bytes)) }
            td { (sparkline(&r.recent_sizes, r.status)) }
        }
    }
}

/// The "encrypted" cell: a lock word for people, nothing where it does not apply.
fn encrypted_cell(encrypted: Option<bool>) -> Markup {
    match encrypted {
        Some(true) => html! { span.enc title="age-encrypted dump" { "yes" } },
        Some(false) => {
            html! { span.plain title="stored unencrypted (Google-managed encryption at rest only)" { "no" } }
        }
        None => html! { (NONE) },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(max_age_seconds: u64, encryption_required: bool) -> Limits {
        Limits { encryption_required, ..Limits::new(std::time::Duration::from_secs(max_age_seconds)) }
    }

    fn row(name: &str, status: Status, sizes: Vec<u64>) -> Freshness {
        Freshness {
            kind: Kind::Database,
            source: "main".into(),
            name: name.into(),
            status,
            newest_backup: Some("20261126T020000Z-1a2b3c4d".into()),
            age_seconds: Some(3 * 3600),
            bytes: sizes.last().copied(),
            encrypted: Some(true),
            bytes_change: Some(-2048),
            complete_backups: sizes.len(),
            total_bytes: sizes.iter().sum(),
            recent_sizes: sizes,
            newest_verified_backup: Some("20261125T020000Z-00000001".into()),
            verified_age_seconds: Some(27 * 3600),
            last_drill_outcome: Some(crate::core::series::DrillOutcome::Passed),
            last_drill_backup: Some("20261125T020000Z-00000001".into()),
        }
    }

    #[test]
    fn one_row_per_source_with_colour_and_chart() {
        let now = DateTime::parse_from_rfc3339("2026-11-26T08:00:00Z").expect("t").to_utc();
        let rows = [
            row("app", Status::Ok, vec![10, 20, 30]),
            row("<script>", Status::Stale, (1..=40).collect()),
            Freshness { newest_backup: None, age_seconds: None, bytes: None, ..row("gone", Status::Missing, vec![]) },
        ];
        let html = render(&rows, now, chrono_tz::Europe::Paris, "gs://b", &limits(25 * 3600, false));
        assert_eq!(html.matches(r#"<tr class="row""#).count(), 3);
        assert!(html.contains("checked 2026-11-26 09:00:00 (Europe/Paris)"), "{html}");
        assert!(html.contains("stale after 25h"), "{html}");
        assert!(html.contains("2 of 3 need attention"));
        assert!(html.contains("&lt;script&gt;") && !html.contains("<script>"), "escaped");
        assert!(html.contains(r#"<span class="pill">stale</span>"#));
        assert!(html.contains("#b35900"));
        assert_eq!(html.matches("<svg").count(), 3);
        assert!(html.contains("aria-label=\"no backups\""));
        assert!(!html.contains("http://") && !html.contains("https://"), "self-contained");
        assert!(html.contains(r#"<div class="k">backups held</div><div class="v">43</div>"#), "{html}");
        assert!(!html.contains("must be encrypted"));
    }

    #[test]
    fn the_encrypted_column_and_the_unencrypted_status_show() {
        let now = DateTime::parse_from_rfc3339("2026-11-26T08:00:00Z").expect("t").to_utc();
        let rows = [
            row("sealed", Status::Ok, vec![1]),
            Freshness { encrypted: Some(false), ..row("plain", Status::Unencrypted, vec![1]) },
            Freshness { kind: Kind::Bucket, encrypted: None, ..row("media", Status::Ok, vec![1]) },
        ];
        let html = render(&rows, now, chrono_tz::UTC, "gs://b", &limits(3600, true));
        assert!(html.contains("database backups must be encrypted"), "{html}");
        assert!(html.contains("<th>encrypted</th>"), "{html}");
        assert!(html.contains(r#"<span class="enc" title="age-encrypted dump">yes</span>"#), "{html}");
        assert!(html.contains(r#"<span class="plain""#) && html.contains(">no</span>"), "{html}");
        assert!(html.contains(r#"<span class="pill">unencrypted</span>"#), "{html}");
        assert!(html.contains("#bf3989"), "{html}");
        assert!(html.contains("1 of 3 need attention"), "{html}");
    }

    #[test]
    fn hostile_names_are_escaped_everywhere() {
        let now = DateTime::parse_from_rfc3339("2026-11-26T08:00:00Z").expect("t").to_utc();
        let hostile = r#"<script>alert("x")</script> & 'q'"#;
        let rows = [Freshness {
            source: "s\"><img src=x onerror=alert(1)>".into(),
            newest_backup: Some("<b>id</b>".into()),
            ..row(hostile, Status::Failed, vec![1])
        }];
        let html = render(&rows, now, chrono_tz::UTC, "gs://b/<i>&\"x\"", &limits(3600, false));
        assert!(!html.contains("<script") && !html.contains("<img") && !html.contains("<b>") && !html.contains("<i>"));
        assert!(html.contains("&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; &amp; 'q'"), "{html}");
        assert!(html.contains("s&quot;&gt;&lt;img src=x onerror=alert(1)&gt;"), "{html}");
        assert!(html.contains(r#"<td class="id">&lt;b&gt;id&lt;/b&gt;</td>"#), "{html}");
        assert!(html.contains("gs://b/&lt;i&gt;&amp;&quot;x&quot;"), "{html}");
    }

    #[test]
    fn no_rows_says_so() {
        let now = DateTime::parse_from_rfc3339("2026-11-26T08:00:00Z").expect("t").to_utc();
        let html = render(&[], now, chrono_tz::UTC, "file:///b", &limits(3600, false));
        assert!(html.contains("no backups found") && html.contains("No backups found in the backup store."));
        assert!(html.contains(r#"<div class="k">newest backup</div><div class="v">—</div>"#), "{html}");
        assert_eq!(html.matches(r#"<tr class="row""#).count(), 0);
    }

    #[test]
    fn the_verified_age_shows_beside_the_age() {
        use crate::core::series::DrillOutcome;
        let now = DateTime::parse_from_rfc3339("2026-11-26T08:00:00Z").expect("t").to_utc();
        let rows = [
            row("app", Status::Ok, vec![1]),
            Freshness {
                verified_age_seconds: None,
                newest_verified_backup: None,
                last_drill_outcome: Some(DrillOutcome::Failed),
                ..row("never", Status::Unverified, vec![1])
            },
        ];
        let html = render(&rows, now, chrono_tz::UTC, "gs://b", &limits(3600, false));
        assert!(html.contains("unverified after 8d"), "{html}");
        assert!(html.contains("<th class=\"num\">verified age</th>"), "{html}");
        assert!(html.contains(r#"<span title="20261125T020000Z-00000001">1d03h</span>"#), "{html}");
        assert!(html.contains(">never") && html.contains("last drill failed"), "{html}");
        assert!(html.contains(r#"<span class="pill">unverified</span>"#), "{html}");
        assert!(
            html.contains(r#"<div class="k">newest verified backup</div><div class="v">1d03h ago</div>"#),
            "{html}"
        );
    }
}
