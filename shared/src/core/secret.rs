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
    fn constant_time_eq_works() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"abcd"));
    }
}
