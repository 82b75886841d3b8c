//! Running `pg_dump` and `pg_restore`: one way to start them, read what they say, and end them.
//!
//! - They connect through the libpq environment of a [`Connection`] (never the command line).
//! - Their stderr is read while they run and only its end is kept ([`STDERR_TAIL`] bytes: the
//!   error comes last), so a chatty tool cannot fill memory nor block on a full pipe.
//! - They die with their handle (`kill_on_drop`), and cancellation kills them and waits for
//!   their end, so no tool outlives the run that started it.
//! - How they ended is a value ([`Exit`]): the exit status stays typed until it is shown.

use std::path::Path;
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use tokio::io::AsyncReadExt as _;
use tokio::process::{Child, Command};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::{Connection, PgError};

/// Bytes of a tool's stderr kept for the failure message (the end of it: errors come last).
pub const STDERR_TAIL: usize = 8 * 1024;
/// How long the stderr of a tool that ended may take to be read to its end (a grandchild that
/// still holds the pipe must not hang the run).
const STDERR_GRACE: Duration = Duration::from_secs(5);

/// A command running `program` against `database`, with the libpq environment of `conn`.
/// lifeboat's own secrets (the backup decryption key, webhooks, the API token) are taken out of
/// its environment: they are not the tool's business, and a process's environment can be read
/// by its user (`/proc/PID/environ`) and lands in crash reports. The password is set again by
/// [`Connection::apply_env`] when there is one.
pub fn command(program: &Path, conn: &Connection, database: &str) -> Command {
    let mut cmd = Command::new(program);
    for (_, group) in crate::config::vars::GROUPS {
        for var in group.iter().filter(|v| v.secret) {
            cmd.env_remove(var.name);
        }
    }
    conn.apply_env(&mut cmd, database);
    cmd
}

/// A running tool.
#[derive(Debug)]
pub struct ToolProcess {
    tool: &'static str,
    child: Child,
    stderr: JoinHandle<String>,
}

/// How a tool ended.
#[derive(Debug)]
pub struct Exit {
    /// `pg_dump` or `pg_restore`.
    pub tool: &'static str,
    /// Its exit status.
    pub status: ExitStatus,
    /// The end of its stderr, redacted.
    pub stderr: String,
}

impl ToolProcess {
    /// Starts `cmd` as `tool`. Its stderr is read in the background; its stdin and stdout are
    /// what the caller set on `cmd`. The tool is killed if this handle is dropped.
    pub fn spawn(tool: &'static str, mut cmd: Command) -> Result<Self, PgError> {
        let program = cmd.as_std().get_program().to_string_lossy().into_owned();
        cmd.stderr(Stdio::piped()).kill_on_drop(true);
        let mut child = cmd
            .spawn()
            .map_err(|e| PgError::Tool { tool: tool.into(), message: format!("cannot start {program}: {e}") })?;
        let stderr =
            child.stderr.take().ok_or(PgError::Process { tool, message: "its stderr is not a pipe".into() })?;
        Ok(Self { tool, child, stderr: tokio::spawn(stderr_tail(stderr)) })
    }

    /// The tool's stdout (piped by the caller) as a blocking file, for a thread to read.
    pub fn stdout(&mut self) -> Result<std::fs::File, PgError> {
        let out = self.child.stdout.take().ok_or_else(|| self.fail("its stdout is not a pipe"))?;
        out.into_owned_fd().map(std::fs::File::from).map_err(|e| self.fail(format!("cannot read its output: {e}")))
    }

    /// The tool's stdin (piped by the caller) as a blocking file, for a thread to write; the
    /// tool sees the end of its input when the file is dropped.
    pub fn stdin(&mut self) -> Result<std::fs::File, PgError> {
        let input = self.child.stdin.take().ok_or_else(|| self.fail("its stdin is not a pipe"))?;
        input.into_owned_fd().map(std::fs::File::from).map_err(|e| self.fail(format!("cannot write to it: {e}")))
    }

    /// Kills the tool without waiting (its output is of no use any more); [`Self::wait`] or
    /// [`Self::stop`] still reaps it.
    pub fn kill(&mut self) {
        let _ = self.child.start_kill();
    }

    /// Kills the tool and waits until it is gone; what it said is dropped.
    pub async fn stop(mut self) {
        let _ = self.child.start_kill();
        let _ = self.child.wait().await;
        self.stderr.abort();
    }

    /// Waits for the tool to end and returns how, with the end of its stderr passed through
    /// `redact`. `None` when `cancel` fired first: the tool has then been killed and reaped.
    pub async fn wait(
        mut self,
        cancel: &CancellationToken,
        redact: &(dyn Fn(&str) -> String + Sync),
    ) -> Option<Result<Exit, PgError>> {
        let status = match cancel.run_until_cancelled(self.child.wait()).await {
            Some(Ok(status)) => status,
            Some(Err(e)) => {
                self.stderr.abort();
                return Some(Err(self.fail(format!("cannot wait for it: {e}"))));
            }
            None => {
                self.stop().await;
                return None;
            }
        };
        let stderr = match tokio::time::timeout(STDERR_GRACE, self.stderr).await {
            Ok(Ok(text)) => redact(&text),
            _ => String::new(),
        };
        Some(Ok(Exit { tool: self.tool, status, stderr }))
    }

    fn fail(&self, message: impl Into<String>) -> PgError {
        PgError::Process { tool: self.tool, message: message.into() }
    }
}

impl Exit {
    /// `Ok` when the tool exited 0 (what it still wrote on stderr is logged as a warning),
    /// otherwise [`PgError::ToolFailed`] with the end of its stderr.
    pub fn check(self) -> Result<(), PgError> {
        if !self.status.success() {
            return Err(PgError::ToolFailed { tool: self.tool, status: self.status, stderr: self.stderr });
        }
        if !self.stderr.is_empty() {
            tracing::warn!(tool = self.tool, stderr = self.stderr, "the tool succeeded with messages on stderr");
        }
        Ok(())
    }
}

/// Keeps the last [`STDERR_TAIL`] bytes a child writes to stderr (`…` marks a cut).
async fn stderr_tail(mut stderr: tokio::process::ChildStderr) -> String {
    let mut kept: Vec<u8> = Vec::new();
    let mut dropped = false;
    let mut chunk = [0u8; 8192];
    loop {
        match stderr.read(&mut chunk).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                kept.extend_from_slice(&chunk[..n]);
                if kept.len() > STDERR_TAIL {
                    kept.drain(..kept.len() - STDERR_TAIL);
                    dropped = true;
                }
            }
        }
    }
    let text = String::from_utf8_lossy(&kept).trim().to_owned();
    if dropped { format!("…{text}") } else { text }
}

/// `exit code 1`, `killed by signal 9 (SIGKILL)`.
pub fn describe_status(status: ExitStatus) -> String {
    if let Some(code) = status.code() {
        return format!("exit code {code}");
    }
    #[cfg(unix)]
    {
        use std::os::unix::process::ExitStatusExt as _;
        if let Some(sig) = status.signal() {
            let name = match sig {
                6 => " (SIGABRT)",
                9 => " (SIGKILL)",
                11 => " (SIGSEGV)",
                13 => " (SIGPIPE)",
                15 => " (SIGTERM)",
                _ => "",
            };
            return format!("killed by signal {sig}{name}");
        }
    }
    status.to_string()
}

/// `: <stderr>` after a failure message, or nothing when the tool said nothing.
pub(super) fn stderr_suffix(stderr: &str) -> String {
    let s = stderr.trim();
    if s.is_empty() { String::new() } else { format!(": {s}") }
}

#[cfg(test)]
mod tests {
    use std::os::unix::process::ExitStatusExt as _;

    use super::*;
    use crate::error::{Classify as _, ErrorKind};

    #[test]
    fn tools_never_inherit_lifeboats_secrets() {
        let env = crate::config::Env::from_pairs([("PGHOST", "/tmp"), ("PGPASSWORD", "pw-for-the-tool")]);
        let mut r = crate::config::Reader::new(&env);
        let conn = Connection::read(&mut r).expect("connection");
        let cmd = command(Path::new("pg_restore"), &conn, "app");
        let envs: std::collections::BTreeMap<_, _> = cmd.as_std().get_envs().collect();
        for name in ["BACKUP_ENCRYPTION_IDENTITY", "SLACK_WEBHOOK_URL", "ALERT_WEBHOOK_URL", "LIFEBOAT_API_TOKEN"] {
            assert_eq!(envs.get(std::ffi::OsStr::new(name)), Some(&None), "{name} is not removed");
        }
        assert_eq!(envs.get(std::ffi::OsStr::new("PGPASSWORD")), Some(&Some(std::ffi::OsStr::new("pw-for-the-tool"))));
    }

    fn sh(script: &str) -> Command {
        let mut c = Command::new("sh");
        c.arg("-c").arg(script).stdin(Stdio::null()).stdout(Stdio::null());
        c
    }

    #[test]
    fn tool_failures_show_stderr_only_when_present() {
        let exit_1 = ExitStatus::from_raw(1 << 8);
        let e = PgError::ToolFailed { tool: "pg_dump", status: exit_1, stderr: "  \n".into() };
        assert_eq!(e.to_string(), "pg_dump failed (exit code 1)");
        assert_eq!(e.kind(), ErrorKind::Refused);
        let e = PgError::ToolFailed { tool: "pg_dump", status: exit_1, stderr: "no such db\n".into() };
        assert_eq!(e.to_string(), "pg_dump failed (exit code 1): no such db");
        let e = PgError::ToolFailed { tool: "pg_restore", status: ExitStatus::from_raw(9), stderr: String::new() };
        assert_eq!(e.to_string(), "pg_restore failed (killed by signal 9 (SIGKILL))");
        assert_eq!(e.kind(), ErrorKind::Internal);
    }

    #[tokio::test]
    async fn the_end_of_stderr_is_kept_and_redacted() {
        let p = ToolProcess::spawn(
            "pg_dump",
            sh("head -c 20000 /dev/zero | tr '\\0' x >&2; printf ' hunter2 last' >&2; exit 3"),
        )
        .expect("spawn");
        let exit = p.wait(&CancellationToken::new(), &|t: &str| t.replace("hunter2", "[redacted]")).await;
        let exit = exit.expect("not cancelled").expect("waited");
        assert_eq!(exit.status.code(), Some(3));
        assert!(exit.stderr.starts_with('…') && exit.stderr.ends_with("[redacted] last"), "{}", &exit.stderr[..20]);
        let grown = "[redacted]".len() - "hunter2".len();
        assert_eq!(exit.stderr.len(), '…'.len_utf8() + STDERR_TAIL + grown, "the last {STDERR_TAIL} bytes, redacted");
        let e = exit.check().expect_err("exit 3");
        assert!(e.to_string().starts_with("pg_dump failed (exit code 3): …xxx"), "{e}");
        let ok = ToolProcess::spawn("pg_restore", sh("echo warning >&2")).expect("spawn");
        ok.wait(&CancellationToken::new(), &|t: &str| t.to_owned())
            .await
            .expect("ran")
            .expect("waited")
            .check()
            .expect("0");
    }

    #[tokio::test]
    async fn cancellation_kills_the_tool() {
        let cancel = CancellationToken::new();
        let p = ToolProcess::spawn("pg_restore", sh("exec sleep 30")).expect("spawn");
        let pid = p.child.id().expect("running");
        cancel.cancel();
        let started = std::time::Instant::now();
        assert!(p.wait(&cancel, &|t: &str| t.to_owned()).await.is_none());
        assert!(started.elapsed() < Duration::from_secs(10));
        assert!(!Path::new(&format!("/proc/{pid}")).exists(), "the tool was reaped");
    }

    #[tokio::test]
    async fn a_missing_tool_is_a_configuration_problem() {
        let e = ToolProcess::spawn("pg_dump", Command::new("/nonexistent/pg_dump")).expect_err("missing");
        assert!(e.to_string().contains("cannot start /nonexistent/pg_dump"), "{e}");
        assert_eq!(e.kind(), ErrorKind::Config);
    }
}
