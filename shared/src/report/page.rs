//! The status page `health` serves to browsers: one self-contained HTML document (inline CSS and
//! SVG, no script, no external resource). Pure: rows and time in, HTML out.

use std::fmt::Write as _;
use std::time::Duration;

use chrono::{DateTime, Utc};
use chrono_tz::Tz;

use crate::core::freshness::{Freshness, HISTORY, Status};
use crate::core::units;

/// Escapes text for HTML content and attribute values.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn colour(status: Status) -> &'static str {
    match status {
        Status::Ok => "#1a7f37",
        Status::Stale => "#b35900",
        Status::Failed => "#cf222e",
        Status::Suspicious => "#8250df",
        Status::Missing => "#6e7781",
    }
}

/// A tiny bar chart of backup sizes (oldest left, newest right, in the status colour).
pub fn sparkline(sizes: &[u64], status: Status) -> String {
    const W: usize = 150;
    const H: usize = 32;
    let slot = W / HISTORY;
    let sizes = &sizes[sizes.len().saturating_sub(HISTORY)..];
    if sizes.is_empty() {
        return format!(
            r##"<svg class="spark" width="{W}" height="{H}" viewBox="0 0 {W} {H}" role="img" aria-label="no backups"><line x1="0" y1="{y}" x2="{W}" y2="{y}" stroke="#d0d7de" stroke-dasharray="3 3"/></svg>"##,
            y = H - 1
        );
    }
    let max = sizes.iter().copied().max().unwrap_or(0).max(1);
    let min = sizes.iter().copied().min().unwrap_or(0);
    let mut svg = format!(
        r#"<svg class="spark" width="{W}" height="{H}" viewBox="0 0 {W} {H}" role="img" aria-label="sizes of the last {n} backups"><title>last {n} backups: {lo} to {hi}</title>"#,
        n = sizes.len(),
        lo = units::bytes(min),
        hi = units::bytes(max),
    );
    let offset = W - sizes.len() * slot;
    for (i, &size) in sizes.iter().enumerate() {
        let h = ((size as f64 / max as f64) * (H - 2) as f64).round().max(if size > 0 { 2.0 } else { 1.0 }) as usize;
        let fill = if i + 1 == sizes.len() { colour(status) } else { "#8c959f" };
        let _ = write!(
            svg,
            r#"<rect x="{x}" y="{y}" width="{w}" height="{h}" fill="{fill}"><title>{b}</title></rect>"#,
            x = offset + i * slot,
            y = H - h,
            w = slot - 1,
            b = units::bytes(size),
        );
    }
    svg.push_str("</svg>");
    svg
}

const STYLE: &str = r#"
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,Helvetica,Arial,sans-serif;margin:24px;color:#1f2328;background:#f6f8fa}
h1{font-size:20px;margin:0 0 4px}
.sub{color:#59636e;margin-bottom:16px}
.badge{display:inline-block;padding:2px 10px;border-radius:12px;color:#fff;font-weight:600;font-size:13px;vertical-align:middle;margin-left:8px}
.cards{display:flex;gap:12px;margin:0 0 16px}
.card{background:#fff;border:1px solid #d0d7de;border-radius:8px;padding:10px 16px;min-width:150px}
.card .v{font-size:20px;font-weight:600}
.card .k{color:#59636e;font-size:12px;text-transform:uppercase;letter-spacing:.04em}
table{border-collapse:collapse;background:#fff;border:1px solid #d0d7de;border-radius:8px;width:100%}
th,td{padding:8px 12px;text-align:left;border-bottom:1px solid #eaeef2;white-space:nowrap}
th{font-size:12px;color:#59636e;text-transform:uppercase;letter-spacing:.04em;background:#f6f8fa}
td.num{text-align:right;font-variant-numeric:tabular-nums}
tr.row td:first-child{border-left:6px solid var(--c)}
.pill{display:inline-block;padding:1px 9px;border-radius:10px;color:#fff;background:var(--c);font-weight:600;font-size:12px}
.id{color:#59636e;font-family:ui-monospace,SFMono-Regular,Menlo,monospace;font-size:12px}
.down{color:#cf222e}.up{color:#1a7f37}
footer{color:#59636e;font-size:12px;margin-top:12px}
"#;

/// Renders the page. `now` and `tz` set the "checked at" line; `max_age` is the staleness limit.
pub fn render(rows: &[Freshness], now: DateTime<Utc>, tz: Tz, destination: &str, max_age: Duration) -> String {
    let bad = rows.iter().filter(|r| r.status != Status::Ok).count();
    let all_ok = bad == 0 && !rows.is_empty();
    let (badge_colour, badge) = if rows.is_empty() {
        (colour(Status::Missing), "no backups found".to_owned())
    } else if all_ok {
        (colour(Status::Ok), "all ok".to_owned())
    } else {
        (colour(Status::Failed), format!("{bad} of {} need attention", rows.len()))
    };
    let backups: usize = rows.iter().map(|r| r.complete_backups).sum();
    let stored: u64 = rows.iter().map(|r| r.total_bytes).sum();
    let newest = rows.iter().filter_map(|r| r.age_seconds).min();
    let max_age_text = units::duration(max_age);

    let mut html = String::with_capacity(8192);
    let _ = write!(
        html,
        r#"<!doctype html><html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width,initial-scale=1"><meta http-equiv="refresh" content="60"><title>lifeboat — backup status</title><style>{STYLE}</style></head><body>
<h1>lifeboat backup status<span class="badge" style="background:{badge_colour}">{badge}</span></h1>
<div class="sub">checked {checked} ({tz}) · stale after {max_age} · {dest}</div>
<div class="cards">
<div class="card"><div class="k">sources</div><div class="v">{sources}</div></div>
<div class="card"><div class="k">newest backup</div><div class="v">{newest}</div></div>
<div class="card"><div class="k">backups held</div><div class="v">{backups}</div></div>
<div class="card"><div class="k">bytes stored</div><div class="v">{stored}</div></div>
</div>
<table><thead><tr><th>status</th><th>source</th><th>kind</th><th>newest backup</th><th class="num">age</th><th class="num">size</th><th class="num">change</th><th class="num">backups</th><th class="num">stored</th><th>last {history} sizes</th></tr></thead><tbody>
"#,
        checked = now.with_timezone(&tz).format("%Y-%m-%d %H:%M:%S"),
        tz = escape(tz.name()),
        max_age = escape(&max_age_text),
        dest = escape(destination),
        sources = rows.len(),
        newest = newest.map_or_else(|| "—".to_owned(), |s| format!("{} ago", units::age(s))),
        backups = backups,
        stored = units::bytes(stored),
        history = HISTORY,
    );
    for r in rows {
        let c = colour(r.status);
        let change = match r.bytes_change {
            None => "—".to_owned(),
            Some(d) => {
                let class = if d < 0 { "down" } else { "up" };
                format!(r#"<span class="{class}">{}</span>"#, escape(&units::bytes_change(d)))
            }
        };
        let _ = writeln!(
            html,
            r#"<tr class="row" style="--c:{c}"><td><span class="pill">{status}</span></td><td><strong>{label}</strong></td><td>{kind}</td><td class="id">{id}</td><td class="num">{age}</td><td class="num">{size}</td><td class="num">{change}</td><td class="num">{count}</td><td class="num">{total}</td><td>{spark}</td></tr>"#,
            status = r.status.name(),
            label = escape(&r.label()),
            kind = match r.kind {
                crate::core::series::Kind::Database => "database",
                crate::core::series::Kind::Bucket => "bucket",
            },
            id = escape(r.newest_backup.as_deref().unwrap_or("—")),
            age = r.age_seconds.map_or_else(|| "—".to_owned(), units::age),
            size = r.bytes.map_or_else(|| "—".to_owned(), units::bytes),
            count = r.complete_backups,
            total = units::bytes(r.total_bytes),
            spark = sparkline(&r.recent_sizes, r.status),
        );
    }
    if rows.is_empty() {
        html.push_str(r#"<tr><td colspan="10">No backups found in the backup store.</td></tr>"#);
    }
    let _ = write!(
        html,
        "</tbody></table>\n<footer>JSON: <code>GET /status</code> (200 when all ok, 503 otherwise) · refreshes every minute</footer>\n</body></html>\n"
    );
    html
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::series::Kind;

    fn row(name: &str, status: Status, sizes: Vec<u64>) -> Freshness {
        Freshness {
            kind: Kind::Database,
            source: "main".into(),
            name: name.into(),
            status,
            newest_backup: Some("20261126T020000Z-1a2b3c4d".into()),
            age_seconds: Some(3 * 3600),
            bytes: sizes.last().copied(),
            bytes_change: Some(-2048),
            complete_backups: sizes.len(),
            total_bytes: sizes.iter().sum(),
            recent_sizes: sizes,
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
        let html = render(&rows, now, chrono_tz::Europe::Paris, "gs://b", Duration::from_secs(25 * 3600));
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
    }

    #[test]
    fn sparkline_scales_to_the_largest_backup() {
        let svg = sparkline(&[50, 100], Status::Ok);
        assert_eq!(svg.matches("<rect").count(), 2);
        assert!(svg.contains(r##"height="15" fill="#8c959f""##), "{svg}");
        assert!(svg.contains(r##"height="30" fill="#1a7f37""##), "{svg}");
    }
}
