//! Values that must never reach a log, an event or an error message.

use std::fmt;

/// A secret value (database password, Slack webhook URL, API token).
///
/// `Debug` and `Display` print `[redacted]`; the value is only reachable through
/// [`Secret::expose`], which makes every use greppable.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret value.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The secret itself. Call only where the value is handed to the thing that needs it.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Removes this secret from `text` (a server's message, a tool's stderr…), whatever its
    /// length; see [`redact`].
    pub fn redact_in(&self, text: &str) -> String {
        redact(text, &self.0)
    }
}

/// What replaces a secret.
pub const REDACTED: &str = "[redacted]";

/// Secrets at least this long are removed wherever they occur, even inside a longer word: an
/// accidental match is then implausible, and a secret glued to other text is still a secret.
pub const ANYWHERE_FROM: usize = 8;

/// Removes `secret` from `text`, whatever its length, without destroying the message.
///
/// Replacing every substring works for long secrets but not for short ones: a one-character
/// password `a` would turn `password authentication failed` into garbage, and skipping short
/// secrets (what this did before) prints a three-character password whenever the text holds
/// it. So: a secret of [`ANYWHERE_FROM`] characters or more is replaced wherever it occurs;
/// a shorter one is replaced wherever it stands as a token of its own, i.e. where it is not
/// glued to a letter or digit on either side (`user "ab"`, `pw=ab;`, `:ab@` are replaced, the
/// `ab` inside `table` is not: that one tells nobody the password). Occurrences may overlap;
/// adjacent or overlapping ones become one [`REDACTED`].
pub fn redact(text: &str, secret: &str) -> String {
    if secret.is_empty() || text.len() < secret.len() {
        return text.to_owned();
    }
    let anywhere = secret.chars().count() >= ANYWHERE_FROM;
    let (first, last) = (secret.chars().next(), secret.chars().next_back());
    let glued = |neighbour: Option<char>, edge: Option<char>| matches!((neighbour, edge), (Some(n), Some(e)) if n.is_alphanumeric() && e.is_alphanumeric());
    // Byte ranges to hide, found at every char boundary (so overlapping occurrences count).
    let mut hide: Vec<(usize, usize)> = Vec::new();
    for (i, _) in text.char_indices() {
        if !text[i..].starts_with(secret) {
            continue;
        }
        let end = i + secret.len();
        let standalone = !glued(text[..i].chars().next_back(), first) && !glued(text[end..].chars().next(), last);
        if anywhere || standalone {
            match hide.last_mut() {
                Some((_, e)) if *e >= i => *e = end.max(*e),
                _ => hide.push((i, end)),
            }
        }
    }
    let mut out = String::with_capacity(text.len());
    let mut at = 0;
    for (start, end) in hide {
        out.push_str(&text[at..start]);
        out.push_str(REDACTED);
        at = end;
    }
    out.push_str(&text[at..]);
    out
}

/// True when `secret` appears in `text` in a form [`redact`] would remove (tests and checks use
/// it to assert that nothing leaked).
pub fn appears_in(text: &str, secret: &str) -> bool {
    redact(text, secret) != text
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret([redacted])")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

/// Removes secrets from texts bound for a third party (Sentry): the values of the secret
/// variables this program was given (each with [`redact`]), and, whatever their value, the shapes
/// secrets take in text: the user-info of a URL (`postgresql://u:pw@h`, a Sentry DSN's key),
/// `Authorization` schemes (`Bearer …`), `password=…`-like pairs and Slack webhook URLs.
#[derive(Clone)]
pub struct Scrubber {
    secrets: Vec<Secret>,
    patterns: Vec<(regex::Regex, &'static str)>,
}

impl fmt::Debug for Scrubber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Scrubber").field("secrets", &self.secrets.len()).finish_non_exhaustive()
    }
}

/// The shapes [`Scrubber`] removes, and what replaces each.
const PATTERNS: &[(&str, &str)] = &[
    // Slack incoming webhooks: the path is the credential.
    (r"(?i)https?://hooks\.slack\.com/[^\s\x22'<>]*", "[redacted webhook URL]"),
    // user-info of any URL: `scheme://user:password@`, `https://KEY@o1.ingest.sentry.io/1`.
    (r"(?i)\b([a-z][a-z0-9+.-]*://)[^/\s@\x22'<>]+@", "${1}[redacted]@"),
    // Authorization header values.
    (r"(?i)\b(bearer|basic|token)(\s+)[a-z0-9._~+/=-]{6,}", "${1}${2}[redacted]"),
    // password=…, PGPASSWORD: …, api_key="…", "token": "…" (JSON too).
    (
        r#"(?i)\b((?:pg)?password|passwd|pwd|secret|token|api[_-]?key|access[_-]?key|dsn|webhook[_-]?url)(\x22?\s*[=:]\s*)("[^"]*"|'[^']*'|[^\s\x22']+)"#,
        "${1}${2}[redacted]",
    ),
];

impl Scrubber {
    /// A scrubber of `secrets` and of the usual shapes of secrets.
    pub fn new(secrets: impl IntoIterator<Item = Secret>) -> Self {
        let patterns =
            PATTERNS.iter().filter_map(|(p, with)| regex::Regex::new(p).ok().map(|re| (re, *with))).collect();
        Self { secrets: secrets.into_iter().filter(|s| !s.expose().is_empty()).collect(), patterns }
    }

    /// `text` without any secret.
    pub fn scrub(&self, text: &str) -> String {
        let mut out = text.to_owned();
        for s in &self.secrets {
            out = s.redact_in(&out);
        }
        for (re, with) in &self.patterns {
            if re.is_match(&out) {
                out = re.replace_all(&out, *with).into_owned();
            }
        }
        out
    }

    /// Every string of `value` (keys included) scrubbed.
    pub fn scrub_json(&self, value: &mut serde_json::Value) {
        match value {
            serde_json::Value::String(s) => *s = self.scrub(s),
            serde_json::Value::Array(items) => items.iter_mut().for_each(|v| self.scrub_json(v)),
            serde_json::Value::Object(map) => {
                let entries = std::mem::take(map);
                for (k, mut v) in entries {
                    self.scrub_json(&mut v);
                    map.insert(self.scrub(&k), v);
                }
            }
            _ => {}
        }
    }
}

/// Constant-time comparison, so a token check does not leak how many bytes matched.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_and_display_hide_the_value() {
        let s = Secret::new("hunter2-very-secret");
        assert_eq!(format!("{s:?}"), "Secret([redacted])");
        assert_eq!(format!("{s}"), "[redacted]");
        assert!(!format!("{:?}", Some(&s)).contains("hunter2"));
        assert_eq!(s.expose(), "hunter2-very-secret");
    }

    #[test]
    fn redacts_in_text() {
        let s = Secret::new("p4ssw0rd");
        assert_eq!(s.redact_in("FATAL: password p4ssw0rd rejected"), "FATAL: password [redacted] rejected");
    }

    #[test]
    fn short_secrets_are_redacted_as_tokens_without_destroying_the_message() {
        let text = r#"FATAL: password authentication failed for user "p" (p@db:5432)"#;
        assert_eq!(
            redact(text, "p"),
            r#"FATAL: password authentication failed for user "[redacted]" ([redacted]@db:5432)"#
        );
        assert_eq!(
            redact("could not connect as abc: abc; table abcd", "abc"),
            "could not connect as [redacted]: [redacted]; table abcd"
        );
        assert_eq!(redact("a-a-a", "a-a"), "[redacted]", "overlapping occurrences");
        assert_eq!(redact("x=!?", "!?"), "x=[redacted]", "a secret of punctuation is never glued");
        assert_eq!(redact("ün ü", "ü"), "ün [redacted]");
        assert_eq!(redact("", "a"), "");
        assert_eq!(redact("abc", ""), "abc");
        assert_eq!(Secret::new("p").redact_in("pw p"), "pw [redacted]");
    }

    #[test]
    fn long_secrets_are_redacted_anywhere() {
        assert_eq!(redact("xxhunter2-secretyy", "hunter2-secret"), "xx[redacted]yy");
        assert!(!appears_in("table", "abc"));
        assert!(appears_in("user abc", "abc"));
    }

    proptest::proptest! {
        /// Whatever the text and the secret, the secret never stands as a token of its own in
        /// the output (and a long one never appears at all), and text without it is unchanged.
        #[test]
        fn no_secret_survives(
            secret in "[a-z0-9!@ ]{1,10}",
            parts in proptest::collection::vec("[a-z0-9 \"':@=]{0,6}", 0..6),
        ) {
            let text = parts.join(&secret);
            let out = redact(&text, &secret);
            // (The marker itself may hold the secret, say `e`: look around it, not into it.)
            let around = out.replace(REDACTED, "\u{1}");
            proptest::prop_assert!(!appears_in(&around, &secret), "{text:?} → {out:?}");
            if secret.chars().count() >= ANYWHERE_FROM {
                proptest::prop_assert!(!around.contains(&secret), "{text:?} → {out:?}");
            }
            if !text.contains(&secret) {
                proptest::prop_assert_eq!(out, text);
            }
        }
    }

    #[test]
    fn the_scrubber_removes_given_secrets_and_the_shapes_of_secrets() {
        let s = Scrubber::new([Secret::new("pw"), Secret::new("hunter2-very-secret"), Secret::new("")]);
        let cases = [
            ("FATAL: password authentication failed for user \"pw\"", "for user \"[redacted]\""),
            ("xxhunter2-very-secretyy", "xx[redacted]yy"),
            ("postgresql://app:s3cr%40t@db.internal:5432/app", "postgresql://[redacted]@db.internal:5432/app"),
            ("dsn https://0123456789abcdef0123456789abcdef@o1.ingest.sentry.io/42", "https://[redacted]@o1"),
            ("POST https://hooks.slack.com/services/T000/B000/XXXX failed", "POST [redacted webhook URL] failed"),
            ("Authorization: Bearer eyJhbGciOiJSUzI1NiJ9.e30.sig", "Bearer [redacted]"),
            ("PGPASSWORD=Tr0ub4dor&3 pg_dump", "PGPASSWORD=[redacted] pg_dump"),
            ("{\"token\": \"abc.def\"}", "{\"token\": [redacted]}"),
            ("api_key='k-123' ok", "api_key=[redacted] ok"),
        ];
        for (text, expected) in cases {
            let out = s.scrub(text);
            assert!(out.contains(expected), "{text:?} → {out:?}, expected {expected:?}");
        }
        assert_eq!(s.scrub("password authentication failed"), "password authentication failed");
        let mut v = serde_json::json!({"m": ["user pw"], "hunter2-very-secret": 1, "n": 2});
        s.scrub_json(&mut v);
        assert_eq!(v, serde_json::json!({"m": ["user [redacted]"], "[redacted]": 1, "n": 2}));
    }

    #[test]
    fn constant_time_eq_works() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"abcd"));
    }
}
