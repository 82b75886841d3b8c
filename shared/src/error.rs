//! The error policy of lifeboat, written once.
//!
//! 1. **One enum per module, with `thiserror`.** `StoreError`, `PgError`, `DbError`,
//!    `SnapshotError`, `ConfigError`, `PublishError`, `DeliveryError`, … Each variant carries
//!    the facts a person needs (which object, which database, which variable), never a secret:
//!    texts that come from a server or a tool are redacted before they are stored in an error.
//! 2. **Every error says what kind it is** ([`ErrorKind`], through [`Classify`]): whether trying
//!    again can help, whether the configuration is at fault, whether data failed a check. Callers
//!    decide on the kind (retry, exit code, alert wording), never on the text.
//! 3. **Context is added, not wrapped again and again.** A lower error becomes a variant of the
//!    higher one (`#[from]` / `#[error(transparent)]`) once, at the layer boundary; the message
//!    reads as one sentence with the details a person needs to act.
//! 4. **Errors are never turned into strings to be parsed later.** A value that a caller needs
//!    (the variable at fault, the object's key, the exit status) is a field.
//! 5. **`anyhow` only at the edge of a binary.** The library returns typed errors; a program
//!    turns a failure into a result event and an exit code (0 success, 1 failure, 2 bad
//!    configuration).
//! 6. **Messages guide.** A message ends with what to do when there is something to do
//!    ("check the service account's roles", "run with --help").

/// What kind of failure an error is; decides retries, exit codes and alert wording.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// The settings or arguments are wrong: fix the configuration (exit code 2 before any work).
    Config,
    /// A service was unreachable, slow or answered with a temporary failure (network, 429, 5xx):
    /// the same operation may succeed if tried again.
    Transient,
    /// A service refused for good (permission, quota, a 4xx that is not a rate limit).
    Refused,
    /// What was asked for does not exist (a backup, an object, a database).
    NotFound,
    /// What was asked would overwrite or harm something that exists; lifeboat refuses.
    Conflict,
    /// Data failed a check (checksum, size, format, row counts): never retried blindly.
    Integrity,
    /// The run was cancelled (termination signal).
    Cancelled,
    /// A local resource failed (disk, process, memory) or an unexpected state: a bug or the host.
    Internal,
}

impl ErrorKind {
    /// True when trying the same operation again may succeed.
    pub fn is_retryable(self) -> bool {
        matches!(self, Self::Transient)
    }
}

/// An error that knows its [`ErrorKind`].
pub trait Classify {
    /// The kind of this error.
    fn kind(&self) -> ErrorKind;

    /// True when trying the same operation again may succeed.
    fn is_retryable(&self) -> bool {
        self.kind().is_retryable()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_transient_failures_are_retried() {
        use ErrorKind::*;
        for kind in [Config, Refused, NotFound, Conflict, Integrity, Cancelled, Internal] {
            assert!(!kind.is_retryable(), "{kind:?}");
        }
        assert!(Transient.is_retryable());
    }
}
