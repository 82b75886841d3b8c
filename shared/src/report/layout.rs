//! The pieces every lifeboat page is built from: the page shell (inline CSS, no script, no
//! external resource), the status colours, pills, badges, figure cards and the size sparkline.
//!
//! Pages are `maud` templates: checked at compile time, and every value put into them is
//! HTML-escaped unless it is wrapped in `PreEscaped` on purpose (only the constant style sheet is).

use maud::{DOCTYPE, Markup, PreEscaped, Render, html};

use crate::core::freshness::{HISTORY, Status};
use crate::core::units;

/// The style sheet of every page, inlined so a page is one self-contained document.
pub const STYLE: &str = r#"
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

/// A whole page: `title` in the tab, `body` inside; reloads itself every `refresh_seconds`.
pub fn shell(title: &str, refresh_seconds: Option<u32>, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width,initial-scale=1";
                @if let Some(seconds) = refresh_seconds {
                    meta http-equiv="refresh" content=(seconds);
                }
                title { (title) }
                style { (PreEscaped(STYLE)) }
            }
            body { (body) }
        }
    }
}

/// The colour of a status (row border, pill, newest sparkline bar).
pub fn colour(status: Status) -> &'static str {
    match status {
        Status::Ok => "#1a7f37",
        Status::Stale => "#b35900",
        Status::Failed => "#cf222e",
        Status::Suspicious => "#8250df",
        Status::Unencrypted => "#bf3989",
        Status::Unverified => "#9a6700",
        Status::Missing => "#6e7781",
    }
}

/// A status word on the status colour of the enclosing `--c` (set by a `tr.row` or any parent).
pub fn pill(status: Status) -> Markup {
    html! { span.pill { (status.name()) } }
}

/// A source's verified age for people: `3d02h`, `never` where it has backups but no verified
/// one, `—` where it has no backup; a failed newest drill says so.
pub fn verified_cell(r: &crate::core::freshness::Freshness) -> Markup {
    use crate::core::series::DrillOutcome;
    html! {
        @match (r.verified_age_seconds, r.complete_backups) {
            (Some(s), _) => span title=[r.newest_verified_backup.as_deref()] { (units::age(s)) },
            (None, 0) => "—",
            (None, _) => "never",
        }
        @if r.last_drill_outcome == Some(DrillOutcome::Failed) {
            " " span.pill style={ "--c:" (colour(Status::Failed)) } title=[r.last_drill_backup.as_deref()] { "last drill failed" }
        }
    }
}

/// A headline badge: white `text` on `colour`.
pub fn badge(colour: &str, text: &str) -> Markup {
    html! { span.badge style={ "background:" (colour) } { (text) } }
}

/// One figure card: a small upper-case `key` over a large `value`.
pub fn card(key: &str, value: impl Render) -> Markup {
    html! { div.card { div.k { (key) } div.v { (value) } } }
}

/// Sizes of the last backups as a tiny bar chart (oldest left, newest right in the status colour).
pub fn sparkline(sizes: &[u64], status: Status) -> Markup {
    const W: usize = 150;
    const H: usize = 32;
    let slot = W / HISTORY;
    let sizes = &sizes[sizes.len().saturating_sub(HISTORY)..];
    if sizes.is_empty() {
        return html! {
            svg.spark width=(W) height=(H) viewBox={ "0 0 " (W) " " (H) } role="img" aria-label="no backups" {
                line x1="0" y1=(H - 1) x2=(W) y2=(H - 1) stroke="#d0d7de" stroke-dasharray="3 3" {}
            }
        };
    }
    let max = sizes.iter().copied().max().unwrap_or(0).max(1);
    let min = sizes.iter().copied().min().unwrap_or(0);
    let offset = W - sizes.len() * slot;
    let n = sizes.len();
    html! {
        svg.spark width=(W) height=(H) viewBox={ "0 0 " (W) " " (H) } role="img"
            aria-label={ "sizes of the last " (n) " backups" } {
            title { "last " (n) " backups: " (units::bytes(min)) " to " (units::bytes(max)) }
            @for (i, &size) in sizes.iter().enumerate() {
                @let h = bar_height(size, max, H);
                @let fill = if i + 1 == n { colour(status) } else { "#8c959f" };
                rect x=(offset + i * slot) y=(H - h) width=(slot - 1) height=(h) fill=(fill) {
                    title { (units::bytes(size)) }
                }
            }
        }
    }
}

/// Height of one bar in a chart `height` high: in proportion to `max`, at least 2 px for a
/// non-empty backup (1 px for an empty one) so that every backup shows.
fn bar_height(size: u64, max: u64, height: usize) -> usize {
    let h = (size as f64 / max as f64) * (height - 2) as f64;
    h.round().max(if size > 0 { 2.0 } else { 1.0 }) as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sparkline_scales_to_the_largest_backup() {
        let svg = sparkline(&[50, 100], Status::Ok).into_string();
        assert_eq!(svg.matches("<rect").count(), 2);
        assert!(svg.contains(r##"height="15" fill="#8c959f""##), "{svg}");
        assert!(svg.contains(r##"height="30" fill="#1a7f37""##), "{svg}");
        assert!(svg.contains("<title>last 2 backups: 50 B to 100 B</title>"), "{svg}");
    }

    #[test]
    fn sparkline_of_nothing_is_a_dashed_baseline_and_keeps_the_last_bars() {
        let empty = sparkline(&[], Status::Missing).into_string();
        assert!(empty.contains(r#"aria-label="no backups""#) && empty.contains("<line "), "{empty}");
        assert!(!empty.contains("<rect"), "{empty}");
        let many: Vec<u64> = (1..=40).collect();
        let svg = sparkline(&many, Status::Stale).into_string();
        assert_eq!(svg.matches("<rect").count(), HISTORY);
        assert!(svg.contains(r##"height="30" fill="#b35900""##), "the newest is the tallest: {svg}");
    }

    #[test]
    fn shell_escapes_what_it_is_given_but_not_its_style_sheet() {
        let page = shell("a <b> & \"c\"", Some(60), html! { p { "x" } }).into_string();
        assert!(page.starts_with("<!DOCTYPE html><html lang=\"en\">"), "{page}");
        assert!(page.contains("<title>a &lt;b&gt; &amp; &quot;c&quot;</title>"), "{page}");
        assert!(page.contains(r#"<meta http-equiv="refresh" content="60">"#), "{page}");
        assert!(page.contains("font:14px/1.45 system-ui,-apple-system,\"Segoe UI\""), "the CSS is verbatim");
        assert!(!shell("t", None, html! {}).into_string().contains("refresh"));
    }

    #[test]
    fn pills_badges_and_cards() {
        assert_eq!(pill(Status::Stale).into_string(), r#"<span class="pill">stale</span>"#);
        assert_eq!(
            badge("#1a7f37", "all <ok>").into_string(),
            r##"<span class="badge" style="background:#1a7f37">all &lt;ok&gt;</span>"##
        );
        assert_eq!(
            card("sources", 4).into_string(),
            r#"<div class="card"><div class="k">sources</div><div class="v">4</div></div>"#
        );
    }
}
