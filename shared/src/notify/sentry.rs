//! Optional error reporting to Sentry (`SENTRY_DSN`), beside the result events and Slack.
//!
//! What is reported:
//! - every failed run (job mode, `POST /run`, a program that could not start): one Sentry event
//!   per run, grouped by program and source ([`report_run`], called where every result is
//!   published), carrying the run's log lines as breadcrumbs;
//! - every `ERROR` log line written outside a run (a service's request failing, say a freshness
//!   check of `monitor` that cannot read the store). Inside a run (the [`RUN_SPAN`] span) error
//!   lines become breadcrumbs of the run's event instead, so one failure is one Sentry event.
//!
//! Secrets never leave: every event and breadcrumb goes through a [`Scrubber`] (`before_send`,
//! `before_breadcrumb`) built from the values of every secret variable the program was given
//! (the DSN itself, the database password and URL, webhook URLs, the API token) and from the
//! shapes secrets take in text (URL user-info, `Bearer …`, `password=…`, Slack webhook URLs).
//! Nothing personal is sent (`send_default_pii` off, no server name). The transport is reqwest
//! with lifeboat's rustls and timeouts.

use std::sync::Arc;
use std::time::Duration;

use sentry::integrations::tracing::EventMapping;
use sentry::protocol::{Breadcrumb, Event, Level};
use tracing_subscriber::layer::Context;
use tracing_subscriber::registry::LookupSpan;

use crate::config::{Env, Var, vars};
use crate::core::events::{Outcome, RunResult};
use crate::core::secret::{Scrubber, Secret};

/// The span a run executes in: error lines inside it are breadcrumbs of the run's report.
pub const RUN_SPAN: &str = "run";

/// How long reports still queued may take to leave when the program exits.
pub const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(5);

/// Keeps the Sentry client alive; dropping it flushes what is queued (at most
/// [`SHUTDOWN_TIMEOUT`]).
pub struct Reporting(#[allow(dead_code, reason = "held for its Drop, which flushes")] sentry::ClientInitGuard);

impl std::fmt::Debug for Reporting {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Reporting(sentry)")
    }
}

/// The Sentry scope of one run: its breadcrumbs (the run's log lines), whichever thread of the
/// runtime logs them, end up on the run's report.
#[derive(Clone)]
pub struct RunScope(Arc<sentry::Hub>);

impl std::fmt::Debug for RunScope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RunScope")
    }
}

impl Default for RunScope {
    fn default() -> Self {
        Self::new()
    }
}

impl RunScope {
    /// A fresh scope on the current client (breadcrumbs start empty).
    pub fn new() -> Self {
        Self(Arc::new(sentry::Hub::new_from_top(sentry::Hub::main())))
    }

    /// `future`, run in this scope (on every poll, on any thread).
    pub fn bind<F: std::future::Future>(&self, future: F) -> sentry::SentryFuture<F> {
        use sentry::SentryFutureExt as _;
        future.bind_hub(self.0.clone())
    }
}

/// The scrubber for what this program sends: the values of its secret variables (and the
/// password inside `DATABASE_URL`, percent-decoded), plus the usual shapes of secrets.
pub fn scrubber(env: &Env, program_vars: &[&Var]) -> Scrubber {
    let mut secrets: Vec<Secret> =
        program_vars.iter().filter(|v| v.secret).filter_map(|v| env.get(v.name)).map(Secret::new).collect();
    if let Some(password) = env
        .get(vars::DATABASE_URL.name)
        .and_then(|u| url::Url::parse(u).ok())
        .and_then(|u| u.password().and_then(crate::core::naming::decode_segment))
    {
        secrets.push(Secret::new(password));
    }
    Scrubber::new(secrets)
}

/// Starts reporting to `dsn`, scrubbing with `scrubber`. `None` (logged) when the client
/// cannot be built; reporting is never worth failing a backup for.
pub fn init(dsn: &Secret, scrubber: Scrubber) -> Option<Reporting> {
    let dsn = match dsn.expose().trim().parse::<sentry::types::Dsn>() {
        Ok(d) => d,
        Err(_) => {
            tracing::error!("SENTRY_DSN is not a Sentry DSN (value not shown): errors are not reported to Sentry");
            return None;
        }
    };
    let _ = rustls::crypto::ring::default_provider().install_default();
    let http = reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(10))
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("lifeboat/", env!("CARGO_PKG_VERSION")))
        .build();
    let http = match http {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e.without_url(), "cannot build the Sentry HTTP client: errors are not reported to Sentry");
            return None;
        }
    };
    let (events, breadcrumbs) = (scrubber.clone(), scrubber);
    let options = sentry::ClientOptions {
        dsn: Some(dsn),
        release: Some(concat!("lifeboat@", env!("CARGO_PKG_VERSION")).into()),
        send_default_pii: false,
        server_name: None,
        attach_stacktrace: false,
        shutdown_timeout: SHUTDOWN_TIMEOUT,
        before_send: Some(Arc::new(move |event| scrub_event(&events, event))),
        before_breadcrumb: Some(Arc::new(move |crumb| scrub_breadcrumb(&breadcrumbs, crumb))),
        transport: Some(Arc::new(move |options: &sentry::ClientOptions| {
            Arc::new(sentry::transports::ReqwestHttpTransport::with_client(options, http.clone()))
                as Arc<dyn sentry::Transport>
        })),
        ..sentry::ClientOptions::default()
    };
    let guard = sentry::init(options);
    guard.is_enabled().then(|| Reporting(guard))
}

/// Every string of the event scrubbed (through its JSON form, so no field is forgotten).
fn scrub_event(scrubber: &Scrubber, event: Event<'static>) -> Option<Event<'static>> {
    let mut json = serde_json::to_value(&event).ok()?;
    scrubber.scrub_json(&mut json);
    serde_json::from_value(json).ok()
}

fn scrub_breadcrumb(scrubber: &Scrubber, crumb: Breadcrumb) -> Option<Breadcrumb> {
    let mut json = serde_json::to_value(&crumb).ok()?;
    scrubber.scrub_json(&mut json);
    serde_json::from_value(json).ok()
}

/// Reports a failed run (nothing for other outcomes, nor when Sentry is off).
pub fn report_run(result: &RunResult) {
    if result.outcome != Outcome::Failure || sentry::Hub::current().client().is_none() {
        return;
    }
    let mut event = Event {
        level: Level::Error,
        message: Some(format!("{} failed: {}", result.program, result.summary)),
        logger: Some("lifeboat".into()),
        fingerprint: vec!["lifeboat-run".into(), result.program.clone().into(), result.source.clone().into()].into(),
        ..Event::default()
    };
    event.tags.insert("program".into(), result.program.clone());
    event.tags.insert("source".into(), result.source.clone());
    event.extra.insert("destination".into(), result.destination.clone().into());
    event.extra.insert("duration_ms".into(), result.duration_ms().into());
    let failed: Vec<serde_json::Value> = result
        .items
        .iter()
        .filter(|i| i.outcome == Outcome::Failure)
        .map(|i| serde_json::json!({"kind": i.kind, "name": i.name, "error": i.error}))
        .collect();
    if !failed.is_empty() {
        event.extra.insert("failed_items".into(), failed.into());
    }
    sentry::capture_event(event);
}

/// The tracing layer that feeds Sentry: `ERROR` lines outside a run become events, `INFO`,
/// `WARN` and in-run `ERROR` lines breadcrumbs, nothing else; tracing spans are not sent.
pub fn layer<S>() -> sentry::integrations::tracing::SentryLayer<S>
where
    S: tracing::Subscriber + for<'a> LookupSpan<'a>,
{
    sentry::integrations::tracing::layer().span_filter(|_| false).event_mapper(map_event::<S>)
}

fn map_event<S>(event: &tracing::Event<'_>, ctx: Context<'_, S>) -> EventMapping
where
    S: tracing::Subscriber + for<'a> LookupSpan<'a>,
{
    use sentry::integrations::tracing::{breadcrumb_from_event, event_from_event};
    let in_run = ctx.event_scope(event).is_some_and(|mut scope| scope.any(|span| span.name() == RUN_SPAN));
    match *event.metadata().level() {
        tracing::Level::ERROR if !in_run => EventMapping::Event(event_from_event(event, &ctx)),
        tracing::Level::ERROR | tracing::Level::WARN | tracing::Level::INFO => {
            EventMapping::Breadcrumb(breadcrumb_from_event(event, &ctx))
        }
        _ => EventMapping::Ignore,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_scrubber_knows_every_secret_variable_and_the_url_password() {
        let env = Env::from_pairs([
            ("PGPASSWORD", "pw"),
            ("DATABASE_URL", "postgresql://app:p%40ss@db/app"),
            ("SENTRY_DSN", "https://k3y@o1.ingest.sentry.io/7"),
            ("BACKUP_SOURCE", "main"),
        ]);
        let s = scrubber(&env, &[&vars::PGPASSWORD, &vars::DATABASE_URL, &vars::SENTRY_DSN, &vars::SOURCE]);
        let out = s.scrub("user pw, p@ss, https://k3y@o1.ingest.sentry.io/7, source main");
        assert!(!out.contains("pw,") && !out.contains("p@ss") && !out.contains("k3y"), "{out}");
        assert!(out.contains("source main"), "not secret: {out}");
    }

    #[test]
    fn events_and_breadcrumbs_are_scrubbed_everywhere() {
        let s = Scrubber::new([Secret::new("hunter2-secret")]);
        let mut event = Event { message: Some("failed: hunter2-secret".into()), ..Event::default() };
        event.extra.insert("url".into(), "https://hooks.slack.com/services/T/B/X".into());
        event.tags.insert("t".into(), "Bearer abcdefgh".into());
        let out = serde_json::to_string(&scrub_event(&s, event).expect("event")).expect("json");
        assert!(!out.contains("hunter2") && !out.contains("/services/") && !out.contains("abcdefgh"), "{out}");
        let crumb = Breadcrumb { message: Some("PGPASSWORD=hunter2-secret".into()), ..Breadcrumb::default() };
        let out = scrub_breadcrumb(&s, crumb).expect("crumb").message.unwrap_or_default();
        assert_eq!(out, "PGPASSWORD=[redacted]");
    }
}
