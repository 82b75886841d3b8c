//! Configuration: every setting is declared once (a [`Var`]: name, default, meaning), and that
//! one declaration drives parsing, validation, `--help` and the README's reference.
//!
//! Reading never stops at the first problem: a [`Reader`] collects every problem and
//! [`Reader::finish`] reports them together, so a user fixes a deployment in one round trip.

mod env;
pub mod vars;

pub use env::Env;

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use crate::core::location::Location;
use crate::core::secret::Secret;
use crate::core::source::SourceSpec;

/// One environment variable a program reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Var {
    /// The variable's name.
    pub name: &'static str,
    /// The default, as the user would write it; `None` when unset means "off" or "required".
    pub default: Option<&'static str>,
    /// What it means, one or two sentences.
    pub help: &'static str,
    /// Secret values are never printed, logged or echoed in errors.
    pub secret: bool,
}

/// One problem with one variable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The variable (or command-line argument) at fault.
    pub name: String,
    /// What is wrong and what is expected. Never contains a secret's value.
    pub message: String,
}

/// Every configuration problem found, reported at once (exit code 2).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigError {
    /// The problems, in the order the variables were read.
    pub problems: Vec<Problem>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.problems.len();
        write!(f, "invalid configuration ({n} problem{}):", if n == 1 { "" } else { "s" })?;
        for p in &self.problems {
            write!(f, "\n  - {}: {}", p.name, p.message)?;
        }
        write!(f, "\nRun with --help to see every variable, its default and its meaning.")
    }
}

impl crate::error::Classify for ConfigError {
    fn kind(&self) -> crate::error::ErrorKind {
        crate::error::ErrorKind::Config
    }
}

impl ConfigError {
    /// A single problem.
    pub fn single(name: impl Into<String>, message: impl Into<String>) -> Self {
        Self { problems: vec![Problem { name: name.into(), message: message.into() }] }
    }
}

/// Reads typed values from an [`Env`], collecting problems instead of failing fast.
#[derive(Debug)]
pub struct Reader<'a> {
    env: &'a Env,
    problems: Vec<Problem>,
}

impl<'a> Reader<'a> {
    /// A reader over `env`.
    pub fn new(env: &'a Env) -> Self {
        Self { env, problems: Vec::new() }
    }

    /// The environment being read.
    pub fn env(&self) -> &'a Env {
        self.env
    }

    /// Records a problem with `name`.
    pub fn problem(&mut self, name: &str, message: impl Into<String>) {
        self.problems.push(Problem { name: name.to_owned(), message: message.into() });
    }

    /// The value or its default, as text.
    pub fn text(&mut self, var: &Var) -> Option<String> {
        self.env.get(var.name).map(|v| v.trim().to_owned()).or_else(|| var.default.map(str::to_owned))
    }

    /// A value that must be present.
    pub fn required(&mut self, var: &Var) -> Option<String> {
        let v = self.text(var);
        if v.is_none() {
            self.problem(var.name, format!("is required: {}", var.help));
        }
        v
    }

    /// A secret value (never echoed back in a problem).
    pub fn secret(&mut self, var: &Var) -> Option<Secret> {
        self.env.get(var.name).map(Secret::new)
    }

    /// A value parsed with `FromStr`, its default when unset.
    pub fn parse<T>(&mut self, var: &Var, expected: &str) -> Option<T>
    where
        T: FromStr,
    {
        let raw = self.text(var)?;
        match raw.parse::<T>() {
            Ok(v) => Some(v),
            Err(_) => {
                let shown = if var.secret { "[redacted]".to_owned() } else { format!("{raw:?}") };
                self.problem(var.name, format!("{shown} is not {expected}"));
                None
            }
        }
    }

    /// A whole number in `min..=max`.
    pub fn number_in(&mut self, var: &Var, min: u64, max: u64) -> Option<u64> {
        let v: u64 = self.parse(var, &format!("a whole number from {min} to {max}"))?;
        if (min..=max).contains(&v) {
            Some(v)
        } else {
            self.problem(var.name, format!("{v} is out of range: expected {min} to {max}"));
            None
        }
    }

    /// A boolean: true/false, 1/0, yes/no, on/off.
    pub fn boolean(&mut self, var: &Var) -> Option<bool> {
        let raw = self.text(var)?;
        match raw.to_ascii_lowercase().as_str() {
            "1" | "true" | "yes" | "on" => Some(true),
            "0" | "false" | "no" | "off" => Some(false),
            _ => {
                self.problem(var.name, format!("{raw:?} is not a boolean: use true or false"));
                None
            }
        }
    }

    /// A duration such as `25h`, `90m`, `1h 30m`, `30s`.
    pub fn duration(&mut self, var: &Var) -> Option<Duration> {
        let raw = self.text(var)?;
        match humantime::parse_duration(&raw) {
            Ok(d) if !d.is_zero() => Some(d),
            Ok(_) => {
                self.problem(var.name, "must be longer than zero");
                None
            }
            Err(e) => {
                self.problem(var.name, format!("{raw:?} is not a duration ({e}); write it like 25h, 90m or 1h30m"));
                None
            }
        }
    }

    /// A duration where zero (`0s`) is allowed and means "off".
    pub fn duration_or_off(&mut self, var: &Var) -> Option<Duration> {
        let raw = self.text(var)?;
        match humantime::parse_duration(&raw) {
            Ok(d) => Some(d),
            Err(e) => {
                self.problem(var.name, format!("{raw:?} is not a duration ({e}); write it like 30s, or 0s for off"));
                None
            }
        }
    }

    /// A duration no longer than `max` (see [`Reader::duration`]).
    pub fn duration_at_most(&mut self, var: &Var, max: Duration, why: &str) -> Option<Duration> {
        let d = self.duration(var)?;
        if d > max {
            let shown = self.text(var).unwrap_or_default();
            self.problem(var.name, format!("{shown:?} is longer than {}: {why}", crate::core::units::duration(max)));
            return None;
        }
        Some(d)
    }

    /// A comma-separated list; empty items are dropped.
    pub fn list(&mut self, var: &Var) -> Vec<String> {
        self.text(var)
            .map(|v| v.split(',').map(str::trim).filter(|s| !s.is_empty()).map(str::to_owned).collect())
            .unwrap_or_default()
    }

    /// A comma-separated list of names, each given once: an empty item (`a,,b`, a trailing
    /// comma, `,,`) or a name listed twice is a problem, never silently dropped (`,,` would
    /// otherwise mean "no list", i.e. every database). Unset means the empty list.
    pub fn names(&mut self, var: &Var) -> Vec<String> {
        let Some(raw) = self.text(var) else { return Vec::new() };
        let mut names: Vec<String> = Vec::new();
        for (i, item) in raw.split(',').map(str::trim).enumerate() {
            if item.is_empty() {
                self.problem(var.name, format!("item {} of {raw:?} is empty (remove the extra comma)", i + 1));
            } else if names.iter().any(|n| n == item) {
                self.problem(var.name, format!("{item:?} is listed twice"));
            } else {
                names.push(item.to_owned());
            }
        }
        names
    }

    /// `SOURCE_BUCKETS`, parsed by the one parser every program shares ([`SourceSpec`]): each
    /// item once, each bucket once, and of the destination's kind (snapshots are server-side
    /// copies, so a gs:// source needs a gs:// destination and a file:// source a file:// one).
    pub fn sources(&mut self) -> Vec<SourceSpec> {
        let var = &vars::SOURCE_BUCKETS;
        let destination = destination(self.env).ok();
        let mut sources: Vec<SourceSpec> = Vec::new();
        for item in self.names(var) {
            match item.parse::<SourceSpec>() {
                Ok(s) if sources.iter().any(|o| o.bucket == s.bucket) => {
                    self.problem(var.name, format!("{:?} is listed twice; each bucket may appear once", s.bucket));
                }
                Ok(s) => {
                    if let Some(d) = &destination
                        && !same_kind(&s.location, d)
                    {
                        self.problem(
                            var.name,
                            format!(
                                "{s} cannot be snapshotted into {d}: copies are server-side, so sources and \
                                 the destination must both be gs:// (or both file://)"
                            ),
                        );
                    }
                    sources.push(s);
                }
                Err(e) => self.problem(var.name, e.to_string()),
            }
        }
        sources
    }

    /// An IANA time zone name.
    pub fn timezone(&mut self, var: &Var) -> Option<chrono_tz::Tz> {
        let raw = self.text(var)?;
        match raw.parse::<chrono_tz::Tz>() {
            Ok(tz) => Some(tz),
            Err(_) => {
                self.problem(var.name, format!("{raw:?} is not an IANA time zone name (like UTC or Europe/Paris)"));
                None
            }
        }
    }

    /// A cron expression as Cloud Scheduler takes it (unix-cron: minute, hour, day of month, month,
    /// day of week). Terraform hands it to Cloud Scheduler, which would refuse a bad one only at
    /// `terraform apply`; checking it here reports it with every other problem, before a deploy.
    pub fn cron(&mut self, var: &Var) -> Option<String> {
        let raw = self.text(var)?;
        match check_cron(&raw) {
            Ok(()) => Some(raw),
            Err(why) => {
                self.problem(
                    var.name,
                    format!("{raw:?} is not a five-field cron expression like \"0 2 * * *\": {why}"),
                );
                None
            }
        }
    }

    /// Ends reading: `Ok` when no problem was recorded, otherwise every problem at once.
    pub fn finish(self) -> Result<(), ConfigError> {
        if self.problems.is_empty() { Ok(()) } else { Err(ConfigError { problems: self.problems }) }
    }

    /// Moves the problems of another (sub-)reader into this one.
    pub fn absorb(&mut self, other: ConfigError) {
        self.problems.extend(other.problems);
    }
}

/// Checks a unix-cron expression: croner parses the five fields (ranges, steps, lists, names,
/// bounds); what croner accepts beyond standard cron (`@daily`, `L`, `W`, `#`, `?`, seconds or
/// year fields) Cloud Scheduler refuses, so it is refused here too.
fn check_cron(expr: &str) -> Result<(), String> {
    if let Some(c) = expr.chars().find(|c| matches!(c, '@' | '#' | '?')) {
        return Err(format!("{c:?} is not standard cron"));
    }
    let fields: Vec<&str> = expr.split_whitespace().collect();
    if fields.len() != 5 {
        return Err(format!("it has {} fields", fields.len()));
    }
    // Numbers, `*`, and the three-letter names of months and weekdays: no `L`/`W` modifiers.
    for field in &fields {
        for atom in field.split([',', '-', '/']) {
            let number_or_star = atom == "*" || atom.bytes().all(|b| b.is_ascii_digit());
            let name = atom.len() == 3 && atom.bytes().all(|b| b.is_ascii_alphabetic());
            if !(number_or_star || name) {
                return Err(format!("{atom:?} in {field:?} is not a number, * or a month or weekday name"));
            }
        }
    }
    croner::parser::CronParser::builder()
        .seconds(croner::parser::Seconds::Disallowed)
        .year(croner::parser::Year::Disallowed)
        .build()
        .parse(expr)
        .map(drop)
        .map_err(|e| e.to_string())
}

/// The backup destination: `LIFEBOAT_DESTINATION`, else `gs://BACKUP_BUCKET_NAME`, else the
/// embedded `file://` default. On error, the problem names the variable at fault.
pub fn destination(env: &Env) -> Result<Location, Problem> {
    let problem = |var: &Var, e: crate::core::location::LocationError| Problem {
        name: var.name.to_owned(),
        message: e.to_string(),
    };
    match (env.get(vars::DESTINATION.name), env.get(vars::BACKUP_BUCKET_NAME.name)) {
        (Some(url), _) => url.trim().parse().map_err(|e| problem(&vars::DESTINATION, e)),
        (None, Some(bucket)) => {
            format!("gs://{}", bucket.trim()).parse().map_err(|e| problem(&vars::BACKUP_BUCKET_NAME, e))
        }
        (None, None) => Ok(Location::embedded_default(env.get("HOME"))),
    }
}

fn same_kind(a: &Location, b: &Location) -> bool {
    matches!((a, b), (Location::Gcs { .. }, Location::Gcs { .. }) | (Location::Local { .. }, Location::Local { .. }))
}

/// The longest `BACKUP_MAX_AGE`: 32 days. The rarest schedule lifeboat is meant for is monthly
/// (`0 2 1 * *`), whose runs are up to 31 days apart, plus a day for the run itself; a longer
/// limit would let a source go without any backup for more than a month before anyone is told,
/// which is no longer an alarm (and a typo like `2500h` would silence it for good).
pub const MAX_MAX_AGE: Duration = Duration::from_secs(32 * 24 * 3600);

/// Reads `BACKUP_MAX_AGE`, bounded by [`MAX_MAX_AGE`].
pub fn max_age(r: &mut Reader<'_>) -> Option<Duration> {
    r.duration_at_most(
        &vars::MAX_AGE,
        MAX_MAX_AGE,
        "the longest gap between monthly runs (31 days) plus a day; a longer limit would silence the staleness alarm",
    )
}

/// Reads `BACKUP_MAX_UNVERIFIED_AGE`, bounded by [`MAX_MAX_AGE`] as `BACKUP_MAX_AGE` is.
pub fn max_unverified_age(r: &mut Reader<'_>) -> Option<Duration> {
    r.duration_at_most(
        &vars::MAX_UNVERIFIED_AGE,
        MAX_MAX_AGE,
        "a monthly drill (31 days) plus a day; a longer limit would silence the unverified alarm",
    )
}

/// Reads the limits `health`, `monitor` and `console` judge sources by: `BACKUP_MAX_AGE`,
/// `BACKUP_MAX_UNVERIFIED_AGE`, and whether `BACKUP_ENCRYPTION_RECIPIENTS` is set.
pub fn limits(r: &mut Reader<'_>) -> Option<crate::core::freshness::Limits> {
    let max_age = max_age(r);
    let max_unverified_age = max_unverified_age(r);
    let recipients = crate::db::encryption::read_recipients(r);
    Some(crate::core::freshness::Limits {
        max_age: max_age?,
        max_unverified_age: max_unverified_age?,
        encryption_required: recipients?.is_some(),
    })
}

/// Where state lives (`LIFEBOAT_STATE_DESTINATION`), else the backup destination itself.
pub fn state_destination(env: &Env, destination: &Location) -> Result<Location, Problem> {
    match env.get(vars::STATE_DESTINATION.name) {
        Some(url) => url.trim().parse().map_err(|e: crate::core::location::LocationError| Problem {
            name: vars::STATE_DESTINATION.name.to_owned(),
            message: e.to_string(),
        }),
        None => Ok(destination.clone()),
    }
}

/// Settings every program shares.
#[derive(Debug, Clone)]
pub struct Common {
    /// Where backups live (`gs://bucket/prefix` or `file:///path`).
    pub destination: Location,
    /// Where state that changes sooner than backups may lives (monitor state, claims, under
    /// `state/`): `LIFEBOAT_STATE_DESTINATION`, else [`Common::destination`].
    pub state_destination: Location,
    /// The logical name of the backed-up system (`db/<source>/…`).
    pub source: String,
    /// Pub/Sub topic for result events; `None` = log only.
    pub results_topic: Option<String>,
    /// Google Cloud project (for Pub/Sub).
    pub project: Option<String>,
    /// Time zone for schedules and retention calendars.
    pub timezone: chrono_tz::Tz,
    /// Days a backup is kept at least (retention floor).
    pub retention_days: u32,
    /// Who may call state-changing HTTP endpoints.
    pub auth: AuthConfig,
    /// Chunk size of resumable uploads, in bytes.
    pub upload_chunk_bytes: usize,
    /// Connect and stall timeouts and attempts of every network request.
    pub net: crate::core::net::NetLimits,
    /// Notification e-mails (documented for Terraform; shown in alerts).
    pub alert_emails: Vec<String>,
    /// Where failed runs and errors are reported besides the result event (optional).
    pub sentry_dsn: Option<Secret>,
    /// How often long work logs a progress line (zero: never).
    pub progress_interval: Duration,
}

impl Common {
    /// Reads the shared settings, recording problems in `r`.
    pub fn read(r: &mut Reader<'_>) -> Option<Self> {
        use vars::*;
        let destination = match destination(r.env()) {
            Ok(l) => Some(l),
            Err(p) => {
                r.problems.push(p);
                None
            }
        };
        let state_destination = match destination.as_ref().map(|d| state_destination(r.env(), d)) {
            Some(Ok(l)) => Some(l),
            Some(Err(p)) => {
                r.problems.push(p);
                None
            }
            None => None,
        };
        let source = r.text(&SOURCE).unwrap_or_default();
        if !crate::core::naming::is_valid_segment(&source) {
            r.problem(SOURCE.name, format!("{source:?} must be 1-100 characters of letters, digits, '-', '_' or '.'"));
        }
        let results_topic = r.text(&RESULTS_TOPIC);
        let project = r.text(&PROJECT);
        let timezone = r.timezone(&TIMEZONE);
        let retention_days = r.number_in(&RETENTION_DAYS, 1, 36_500);
        let alert_emails = r.list(&ALERT_EMAILS);
        for e in &alert_emails {
            if !e.contains('@') {
                r.problem(ALERT_EMAILS.name, format!("{e:?} is not an e-mail address"));
            }
        }
        r.cron(&SCHEDULE);
        let chunk_mib = r.number_in(&UPLOAD_CHUNK_MIB, 1, 1024);
        let connect =
            r.duration_at_most(&CONNECT_TIMEOUT, Duration::from_secs(300), "a connection that takes longer is lost");
        let stall = r.duration_at_most(
            &STALL_TIMEOUT,
            Duration::from_secs(3600),
            "a request that long without progress is lost",
        );
        let attempts = r.number_in(&REQUEST_ATTEMPTS, 1, 20);
        let progress_interval = r.duration_or_off(&PROGRESS_INTERVAL);
        let auth = AuthConfig::read(r);
        let sentry_dsn = r.secret(&SENTRY_DSN);
        if let Some(dsn) = &sentry_dsn
            && !is_sentry_dsn(dsn.expose())
        {
            r.problem(
                SENTRY_DSN.name,
                "is not a Sentry DSN like https://KEY@o0.ingest.sentry.io/PROJECT (value not shown: it is a secret)",
            );
        }
        if results_topic.is_some() && project.is_none() && r.env().get("PUBSUB_EMULATOR_HOST").is_none() {
            // On Cloud Run the project comes from the metadata server; elsewhere it must be given.
            if !r.env().on_cloud_run() {
                r.problem(PROJECT.name, "is required when LIFEBOAT_RESULTS_TOPIC is set outside Cloud Run");
            }
        }
        Some(Self {
            destination: destination?,
            state_destination: state_destination?,
            source,
            results_topic,
            project,
            timezone: timezone?,
            retention_days: u32::try_from(retention_days?).ok()?,
            auth: auth?,
            upload_chunk_bytes: usize::try_from(chunk_mib?).ok()? * 1024 * 1024,
            net: crate::core::net::NetLimits {
                connect: connect?,
                stall: stall?,
                attempts: u32::try_from(attempts?).ok()?,
            },
            alert_emails,
            sentry_dsn,
            progress_interval: progress_interval?,
        })
    }
}

/// A Sentry DSN: `http(s)://PUBLIC_KEY@HOST[:PORT][/PATH]/PROJECT_ID`.
fn is_sentry_dsn(text: &str) -> bool {
    url::Url::parse(text.trim()).is_ok_and(|u| {
        matches!(u.scheme(), "http" | "https")
            && u.has_host()
            && !u.username().is_empty()
            && u.path_segments().and_then(|mut s| s.next_back()).is_some_and(|p| !p.is_empty())
    })
}

/// The authentication settings; what they mean is in [`crate::runtime::auth`].
#[derive(Debug, Clone, Default)]
pub struct AuthConfig {
    /// Scheduler identities: `POST /run`, `POST /check` (lower-cased e-mails).
    pub allowed_invokers: Vec<String>,
    /// Pub/Sub push identities: `POST /pubsub` only.
    pub push_invokers: Vec<String>,
    /// Console admins: every action.
    pub admins: Vec<String>,
    /// Console viewers: pages and the read-only API (admins may read too).
    pub viewers: Vec<String>,
    /// A static bearer token for local use.
    pub api_token: Option<Secret>,
    /// True on Cloud Run (`K_SERVICE` set): the platform verified the ID tokens it forwards.
    pub trust_id_tokens: bool,
    /// The address the HTTP server listens on.
    pub bind: Option<std::net::IpAddr>,
}

impl AuthConfig {
    /// Reads the settings, recording problems in `r`.
    pub fn read(r: &mut Reader<'_>) -> Option<Self> {
        let emails = |r: &mut Reader<'_>, var: &Var| -> Vec<String> {
            let list: Vec<String> = r.list(var).into_iter().map(|e| e.to_lowercase()).collect();
            for e in &list {
                if !e.contains('@') {
                    r.problem(var.name, format!("{e:?} is not an e-mail address"));
                }
            }
            list
        };
        let allowed_invokers = emails(r, &vars::ALLOWED_INVOKERS);
        let push_invokers = emails(r, &vars::PUSH_INVOKERS);
        // The console's lists (declared in its group, read here so the server checks them).
        let admins = emails(r, &vars::ADMINS);
        let viewers = emails(r, &vars::VIEWERS);
        let api_token = r.secret(&vars::API_TOKEN);
        if let Some(t) = &api_token
            && t.expose().len() < 16
        {
            r.problem(vars::API_TOKEN.name, "must be at least 16 characters long");
        }
        let trust_id_tokens = r.env().get(vars::K_SERVICE.name).is_some();
        let bind = match r.text(&vars::BIND) {
            Some(raw) => match raw.parse::<std::net::IpAddr>() {
                Ok(ip) => Some(ip),
                Err(_) => {
                    r.problem(vars::BIND.name, format!("{raw:?} is not an IP address (like 127.0.0.1 or 0.0.0.0)"));
                    None
                }
            },
            None if trust_id_tokens => Some(std::net::IpAddr::from([0, 0, 0, 0])),
            None => Some(std::net::IpAddr::from([127, 0, 0, 1])),
        };
        Some(Self { allowed_invokers, push_invokers, admins, viewers, api_token, trust_id_tokens, bind })
    }
}

/// Help text for a list of variables: name, default, meaning.
pub fn describe_vars(vars: &[&Var]) -> String {
    let mut out = String::new();
    for v in vars {
        let default = match (v.default, v.secret) {
            (_, true) => " (secret)".to_owned(),
            (Some(d), false) => format!(" (default: {d})"),
            (None, false) => String::new(),
        };
        out.push_str(&format!("  {}{default}\n      {}\n", v.name, v.help));
    }
    out
}

/// Markdown table of the variables (the README's reference is generated from this).
pub fn markdown_table(vars: &[&Var]) -> String {
    let mut out = String::from("| variable | default | meaning |\n|---|---|---|\n");
    for v in vars {
        let default = match (v.default, v.secret) {
            (_, true) => "secret".to_owned(),
            (Some(d), false) => format!("`{d}`"),
            (None, false) => "—".to_owned(),
        };
        out.push_str(&format!("| `{}` | {default} | {} |\n", v.name, v.help.replace('|', "\\|").replace('<', "&lt;")));
    }
    out
}

/// The README's configuration reference, generated from the declarations.
pub fn reference_markdown() -> String {
    let mut out = String::new();
    for (title, group) in vars::GROUPS {
        out.push_str(&format!("\n#### {title}\n\n{}", markdown_table(group)));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The README's reference must match the declarations; `LIFEBOAT_BLESS=1` rewrites it.
    #[test]
    fn readme_configuration_reference_is_current() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../README.md");
        let readme = std::fs::read_to_string(&path).expect("README.md");
        let (start, end) = ("<!-- config-reference:start -->\n", "<!-- config-reference:end -->");
        let i = readme.find(start).expect("start marker") + start.len();
        let j = readme.find(end).expect("end marker");
        let generated = reference_markdown();
        if readme[i..j] != generated {
            if std::env::var("LIFEBOAT_BLESS").is_ok() {
                std::fs::write(&path, format!("{}{generated}{}", &readme[..i], &readme[j..])).expect("write README");
            } else {
                panic!(
                    "README.md's configuration reference is out of date: run LIFEBOAT_BLESS=1 cargo test -p lifeboat-core readme"
                );
            }
        }
    }

    #[test]
    fn state_destination_defaults_to_the_backup_destination() {
        let env = Env::from_pairs([("LIFEBOAT_DESTINATION", "gs://aaa/p")]);
        assert_eq!(read_common(&env).expect("valid").state_destination.to_string(), "gs://aaa/p");
        let env = env.with("LIFEBOAT_STATE_DESTINATION", "gs://aaa-state/p");
        let c = read_common(&env).expect("valid");
        assert_eq!(
            (c.destination.to_string(), c.state_destination.to_string()),
            ("gs://aaa/p".into(), "gs://aaa-state/p".into())
        );
        let env = env.with("LIFEBOAT_STATE_DESTINATION", "s3://nope");
        let err = read_common(&env).expect_err("invalid");
        assert_eq!(err.problems.iter().map(|p| p.name.as_str()).collect::<Vec<_>>(), ["LIFEBOAT_STATE_DESTINATION"]);
    }

    fn read_common(env: &Env) -> Result<Common, ConfigError> {
        let mut r = Reader::new(env);
        let c = Common::read(&mut r);
        r.finish()?;
        Ok(c.expect("no problems means a value"))
    }

    #[test]
    fn defaults_are_valid() {
        let env = Env::from_pairs([("HOME", "/home/u")]);
        let c = read_common(&env).expect("defaults parse");
        assert_eq!(c.retention_days, 30);
        assert_eq!(c.timezone, chrono_tz::UTC);
        assert_eq!(c.source, "main");
        assert_eq!(c.destination.to_string(), "file:///home/u/.local/share/lifeboat/backups");
        assert_eq!(c.upload_chunk_bytes, 8 * 1024 * 1024);
    }

    #[test]
    fn network_limits_are_read_and_bounded() {
        let env = Env::from_pairs([("HOME", "/home/u")]);
        assert_eq!(read_common(&env).expect("defaults").net, crate::core::net::NetLimits::default());
        let env = Env::from_pairs([
            ("HOME", "/home/u"),
            ("LIFEBOAT_CONNECT_TIMEOUT", "500ms"),
            ("LIFEBOAT_STALL_TIMEOUT", "2s"),
            ("LIFEBOAT_REQUEST_ATTEMPTS", "1"),
        ]);
        let net = read_common(&env).expect("valid").net;
        assert_eq!((net.connect, net.stall, net.attempts), (Duration::from_millis(500), Duration::from_secs(2), 1));
        let env = Env::from_pairs([
            ("HOME", "/home/u"),
            ("LIFEBOAT_CONNECT_TIMEOUT", "0s"),
            ("LIFEBOAT_STALL_TIMEOUT", "2d"),
            ("LIFEBOAT_REQUEST_ATTEMPTS", "0"),
        ]);
        let err = read_common(&env).expect_err("invalid");
        let names: Vec<_> = err.problems.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["LIFEBOAT_CONNECT_TIMEOUT", "LIFEBOAT_STALL_TIMEOUT", "LIFEBOAT_REQUEST_ATTEMPTS"]);
    }

    #[test]
    fn destination_takes_precedence_over_bucket_name() {
        let env = Env::from_pairs([("LIFEBOAT_DESTINATION", "gs://aaa/p"), ("BACKUP_BUCKET_NAME", "bbb")]);
        assert_eq!(read_common(&env).expect("valid").destination.to_string(), "gs://aaa/p");
        let env = Env::from_pairs([("BACKUP_BUCKET_NAME", "bbb")]);
        assert_eq!(read_common(&env).expect("valid").destination.to_string(), "gs://bbb");
    }

    #[test]
    fn every_problem_is_reported_at_once() {
        let env = Env::from_pairs([
            ("LIFEBOAT_DESTINATION", "s3://nope"),
            ("BACKUP_RETENTION_DAYS", "thirty"),
            ("BACKUP_TIMEZONE", "Mars/Olympus"),
            ("BACKUP_ALERT_EMAILS", "ops@example.com,nobody"),
            ("BACKUP_SCHEDULE", "daily"),
        ]);
        let err = read_common(&env).expect_err("invalid");
        let names: Vec<_> = err.problems.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "LIFEBOAT_DESTINATION",
                "BACKUP_TIMEZONE",
                "BACKUP_RETENTION_DAYS",
                "BACKUP_ALERT_EMAILS",
                "BACKUP_SCHEDULE"
            ]
        );
        let text = err.to_string();
        assert!(text.starts_with("invalid configuration (5 problems):"), "{text}");
        assert!(text.contains("\"thirty\" is not a whole number from 1 to 36500"), "{text}");
    }

    #[test]
    fn standard_cron_expressions_pass() {
        for good in [
            "0 2 * * *",
            "*/15 * * * *",
            "30 1,13 * * 1-5",
            "0 3 1 * *",
            "0 4 * JAN,JUL SUN",
            "5 0-23/2 * * mon-fri",
            "59 23 31 12 7",
            "  0 2 * * *  ",
        ] {
            assert_eq!(check_cron(good), Ok(()), "{good}");
            let env = Env::from_pairs([("BACKUP_SCHEDULE", good)]);
            assert!(read_common(&env).is_ok(), "{good}");
        }
    }

    #[test]
    fn bad_cron_expressions_are_configuration_problems() {
        for bad in [
            "99 99 99 99 99",
            "60 * * * *",
            "0 24 * * *",
            "0 2 32 * *",
            "0 2 * 13 *",
            "0 2 * * 8",
            "0 2 * *",
            "0 0 2 * * *",
            "0 2 * * * 2027",
            "daily",
            "@daily",
            "0 2 L * *",
            "0 2 * * 1#2",
            "0 2 ? * *",
            "0 2 15W * *",
            "5-1 * * * *",
            "*/0 * * * *",
            "0 2 * FOO *",
        ] {
            assert!(check_cron(bad).is_err(), "{bad:?} passed");
            let env = Env::from_pairs([("BACKUP_SCHEDULE", bad), ("BACKUP_RETENTION_DAYS", "0")]);
            let err = read_common(&env).expect_err(bad);
            let names: Vec<_> = err.problems.iter().map(|p| p.name.as_str()).collect();
            assert_eq!(names, ["BACKUP_RETENTION_DAYS", "BACKUP_SCHEDULE"], "{bad:?}: {err}");
            assert!(err.to_string().contains("is not a five-field cron expression"), "{err}");
        }
        assert!(check_cron("").is_err(), "an empty variable is unset (the default applies), never parsed as cron");
    }

    #[test]
    fn a_sentry_dsn_is_checked_without_being_shown() {
        let env = Env::from_pairs([("SENTRY_DSN", "https://abcdef0123456789@o1.ingest.sentry.io/42")]);
        assert!(read_common(&env).expect("valid").sentry_dsn.is_some());
        for bad in [
            "abcdef0123456789",
            "https://o1.ingest.sentry.io/42",
            "https://abcdef0123456789@o1.ingest.sentry.io/",
            "ftp://k@h/1",
        ] {
            let env = Env::from_pairs([("SENTRY_DSN", bad)]);
            let e = read_common(&env).expect_err(bad);
            assert_eq!(e.problems[0].name, "SENTRY_DSN");
            assert!(!e.to_string().contains("abcdef0123456789"), "{e}");
        }
    }

    #[test]
    fn secrets_are_not_echoed_in_problems() {
        let env = Env::from_pairs([("LIFEBOAT_API_TOKEN", "short")]);
        let err = read_common(&env).expect_err("token too short");
        assert!(!err.to_string().contains("short\""), "{err}");
        assert!(err.to_string().contains("LIFEBOAT_API_TOKEN"), "{err}");
    }

    proptest::proptest! {
        /// Any comma-separated text: either the names come back trimmed, non-empty and each
        /// once, or every empty or repeated item is a problem of that variable.
        #[test]
        fn names_are_never_empty_or_repeated(items in proptest::collection::vec("[ ab,]{0,3}", 1..6)) {
            let raw = items.join(",");
            let env = Env::from_pairs([("BACKUP_DATABASES", raw.as_str())]);
            let mut r = Reader::new(&env);
            let names = r.names(&vars::DATABASES);
            let problems = r.finish().err().map(|e| e.problems).unwrap_or_default();
            proptest::prop_assert!(names.iter().all(|n| !n.is_empty() && n.trim() == n));
            let mut unique = names.clone();
            unique.sort();
            unique.dedup();
            proptest::prop_assert_eq!(unique.len(), names.len());
            let given: Vec<&str> = raw.split(',').map(str::trim).collect();
            if raw.trim().is_empty() {
                proptest::prop_assert!(names.is_empty() && problems.is_empty(), "blank is unset");
            } else {
                proptest::prop_assert_eq!(names.len() + problems.len(), given.len());
                proptest::prop_assert!(problems.iter().all(|p| p.name == "BACKUP_DATABASES"));
            }
        }
    }

    #[test]
    fn max_age_is_bounded() {
        let read = |v: &str| {
            let env = Env::from_pairs([("BACKUP_MAX_AGE", v)]);
            let mut r = Reader::new(&env);
            let d = max_age(&mut r);
            r.finish().map(|()| d.expect("a value"))
        };
        assert_eq!(read("25h"), Ok(Duration::from_secs(25 * 3600)));
        assert_eq!(read("32days"), Ok(MAX_MAX_AGE));
        for too_long in ["32days 1s", "1000h", "1y"] {
            let e = read(too_long).expect_err(too_long);
            assert_eq!(e.problems[0].name, "BACKUP_MAX_AGE");
            assert!(e.problems[0].message.contains("is longer than 32d"), "{e}");
        }
    }

    #[test]
    fn destinations_follow_gcs_rules() {
        for (var, bad) in [
            ("LIFEBOAT_DESTINATION", "gs://a..b"),
            ("LIFEBOAT_DESTINATION", "gs://goog-x"),
            ("LIFEBOAT_DESTINATION", "gs://b-1/x\r\ny"),
            ("BACKUP_BUCKET_NAME", "my-google"),
        ] {
            let env = Env::from_pairs([(var, bad)]);
            let e = read_common(&env).expect_err(bad);
            assert_eq!(e.problems.len(), 1, "{e}");
            assert_eq!(e.problems[0].name, var, "{e}");
        }
    }

    #[test]
    fn a_zero_progress_interval_turns_the_lines_off_but_zero_elsewhere_is_a_problem() {
        let env = Env::from_pairs([("LIFEBOAT_PROGRESS_INTERVAL", "0s"), ("D", "0s")]);
        let mut r = Reader::new(&env);
        assert_eq!(r.duration_or_off(&vars::PROGRESS_INTERVAL), Some(Duration::ZERO));
        const D: Var = Var { name: "D", default: None, help: "", secret: false };
        assert_eq!(r.duration(&D), None);
        let problems = r.finish().expect_err("zero D").problems;
        assert_eq!(problems.len(), 1, "{problems:?}");
        let env = Env::from_pairs([("LIFEBOAT_PROGRESS_INTERVAL", "often")]);
        let mut r = Reader::new(&env);
        assert_eq!(r.duration_or_off(&vars::PROGRESS_INTERVAL), None);
        assert!(r.finish().is_err());
    }

    #[test]
    fn durations_and_booleans() {
        const D: Var = Var { name: "D", default: Some("25h"), help: "", secret: false };
        const B: Var = Var { name: "B", default: None, help: "", secret: false };
        let env = Env::from_pairs([("B", "yes")]);
        let mut r = Reader::new(&env);
        assert_eq!(r.duration(&D), Some(Duration::from_secs(25 * 3600)));
        assert_eq!(r.boolean(&B), Some(true));
        r.finish().expect("fine");
        let env = Env::from_pairs([("D", "soon"), ("B", "maybe")]);
        let mut r = Reader::new(&env);
        assert_eq!(r.duration(&D), None);
        assert_eq!(r.boolean(&B), None);
        assert_eq!(r.finish().expect_err("bad").problems.len(), 2);
    }
}
