//! Job executions as child processes: the sibling binaries (next to the running executable, as
//! `cargo build` and the container image lay them out), run with `--once` and the console's own
//! environment plus the request's overrides. Their output (stdout and stderr) is read line by
//! line; the last [`OUTPUT_LINES`] are kept, and the newest `progress:` line is what a page
//! shows while one runs. One execution per job at a time: a second request gets
//! [`ExecError::Busy`] (two local prunes or restores at once help nobody).

use std::collections::VecDeque;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{Arc, Mutex, PoisonError};

use async_trait::async_trait;
use chrono::Utc;
use tokio::io::{AsyncBufReadExt as _, AsyncRead, BufReader};

use super::{ExecError, Execution, Executor, Job, JobRequest, State};

/// Output lines kept per execution.
pub const OUTPUT_LINES: usize = 200;
/// Executions remembered (oldest forgotten first).
const REMEMBERED: usize = 100;

/// Runs jobs as child processes of this one.
#[derive(Debug)]
pub struct Local {
    dir: PathBuf,
    runs: Mutex<VecDeque<Arc<Mutex<Execution>>>>,
}

impl Local {
    /// Runs the binaries in `dir`.
    pub fn new(dir: PathBuf) -> Self {
        Self { dir, runs: Mutex::new(VecDeque::new()) }
    }

    /// Runs the binaries next to the running executable.
    pub fn beside_current_exe() -> std::io::Result<Self> {
        let exe = std::env::current_exe()?;
        let dir = exe.parent().map(PathBuf::from).unwrap_or_default();
        Ok(Self::new(dir))
    }

    fn find(&self, job: Job, id: &str) -> Option<Arc<Mutex<Execution>>> {
        let runs = self.runs.lock().unwrap_or_else(PoisonError::into_inner);
        runs.iter().find(|r| lock(r).job == job.name() && lock(r).id == id).cloned()
    }
}

fn lock(run: &Mutex<Execution>) -> std::sync::MutexGuard<'_, Execution> {
    run.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Keeps a line of output: the last [`OUTPUT_LINES`], and the newest progress line.
fn record(run: &Mutex<Execution>, line: String) {
    let mut e = lock(run);
    if let Some(at) = line.find("progress: ") {
        e.progress = Some(line[at + "progress: ".len()..].trim().to_owned());
    }
    e.output.push(line);
    if e.output.len() > OUTPUT_LINES {
        let extra = e.output.len() - OUTPUT_LINES;
        e.output.drain(..extra);
    }
}

async fn read_lines(run: Arc<Mutex<Execution>>, pipe: impl AsyncRead + Unpin) {
    let mut lines = BufReader::new(pipe).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        record(&run, strip_ansi(&line));
    }
}

/// `text` without ANSI colour sequences.
fn strip_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

#[async_trait]
impl Executor for Local {
    async fn start(&self, request: &JobRequest, started_by: &str) -> Result<Execution, ExecError> {
        let job = request.job;
        let now = Utc::now();
        let id = format!(
            "{}-{}-{}",
            job.name(),
            now.format("%Y%m%dt%H%M%S").to_string().to_lowercase(),
            &uuid::Uuid::new_v4().simple().to_string()[..5]
        );
        let run = {
            let mut runs = self.runs.lock().unwrap_or_else(PoisonError::into_inner);
            if runs.iter().any(|r| lock(r).job == job.name() && !lock(r).state.is_final()) {
                return Err(ExecError::Busy(job.name().to_owned()));
            }
            let execution = Execution {
                job: job.name().to_owned(),
                id: id.clone(),
                name: format!("local/{}/{id}", job.name()),
                state: State::Running,
                created_at: now,
                finished_at: None,
                args: request.args.clone(),
                env: request.env.iter().cloned().collect(),
                started_by: Some(started_by.to_owned()),
                progress: None,
                output: Vec::new(),
                message: None,
                log_uri: None,
            };
            let run = Arc::new(Mutex::new(execution));
            runs.push_front(run.clone());
            runs.truncate(REMEMBERED);
            run
        };
        let mut command = tokio::process::Command::new(self.dir.join(job.name()));
        command
            .arg("--once")
            .args(&request.args)
            .envs(request.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            // The child is a job, not a second server: the console's PORT must not leak in.
            .env_remove("PORT")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(false);
        let mut child = match command.spawn() {
            Ok(c) => c,
            Err(source) => {
                let mut e = lock(&run);
                e.state = State::Failed;
                e.finished_at = Some(Utc::now());
                e.message = Some(format!("cannot start {}: {source}", self.dir.join(job.name()).display()));
                return Err(ExecError::Spawn { job: job.name().to_owned(), source });
            }
        };
        tracing::info!(job = job.name(), execution = id, started_by, args = ?request.args, "execution started");
        let stdout = child.stdout.take().map(|p| tokio::spawn(read_lines(run.clone(), p)));
        let stderr = child.stderr.take().map(|p| tokio::spawn(read_lines(run.clone(), p)));
        let watched = run.clone();
        tokio::spawn(async move {
            let status = child.wait().await;
            for reader in [stdout, stderr].into_iter().flatten() {
                let _ = reader.await;
            }
            let mut e = lock(&watched);
            e.finished_at = Some(Utc::now());
            match status {
                Ok(s) if s.success() => {
                    e.state = State::Succeeded;
                    e.message = Some("exit code 0".into());
                }
                Ok(s) => {
                    e.state = State::Failed;
                    e.message = Some(match s.code() {
                        Some(code) => format!("exit code {code}"),
                        None => "killed by a signal".into(),
                    });
                }
                Err(err) => {
                    e.state = State::Failed;
                    e.message = Some(format!("lost the process: {err}"));
                }
            }
            tracing::info!(job = e.job, execution = e.id, state = e.state.name(), "execution ended");
        });
        Ok(lock(&run).clone())
    }

    async fn get(&self, job: Job, id: &str) -> Result<Execution, ExecError> {
        self.find(job, id).map(|r| lock(&r).clone()).ok_or_else(|| ExecError::NotFound(format!("{}/{id}", job.name())))
    }

    async fn recent(&self, limit: usize) -> Result<Vec<Execution>, ExecError> {
        let runs = self.runs.lock().unwrap_or_else(PoisonError::into_inner);
        Ok(runs.iter().take(limit).map(|r| lock(r).clone()).collect())
    }

    fn follows(&self) -> &'static str {
        "Local execution: its output is read as it runs; the newest progress line and the last lines are shown."
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn progress_lines_are_picked_from_the_output_and_the_output_is_bounded() {
        let run = Mutex::new(Execution {
            job: "db-backup".into(),
            id: "x".into(),
            name: "local/db-backup/x".into(),
            state: State::Running,
            created_at: Utc::now(),
            finished_at: None,
            args: vec![],
            env: Default::default(),
            started_by: None,
            progress: None,
            output: vec![],
            message: None,
            log_uri: None,
        });
        record(&run, "2026-12-02T10:00:00Z  INFO progress: dump of app: 5.0 MiB, 1.0 MiB/s, 5s elapsed".into());
        for i in 0..OUTPUT_LINES + 10 {
            record(&run, format!("line {i}"));
        }
        let e = lock(&run);
        assert_eq!(e.progress.as_deref(), Some("dump of app: 5.0 MiB, 1.0 MiB/s, 5s elapsed"));
        assert_eq!(e.output.len(), OUTPUT_LINES);
        assert_eq!(e.output.last().map(String::as_str), Some("line 209"));
        assert_eq!(strip_ansi("\u{1b}[32m INFO\u{1b}[0m ok"), " INFO ok");
    }
}
