//! The programs' real binaries (built by `cargo test` into the same target dir), run with a clean
//! environment so the developer's variables do not leak in.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt as _, BufReader};

use super::require_env;

/// The path of a workspace binary or example (`examples/NAME`).
pub fn binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    // target/<profile>/deps/e2e-HASH → target/<profile>/<name>
    let dir = exe.parent().and_then(|d| d.parent()).expect("target dir");
    let path = dir.join(name);
    assert!(path.is_file(), "{} is not built: run `cargo build --workspace` first", path.display());
    path
}

/// `name` with a clean environment: only `PATH` and `HOME`.
pub fn command(name: &str, home: &Path) -> Command {
    let mut c = Command::new(binary(name));
    c.env_clear().env("PATH", std::env::var("PATH").unwrap_or_default()).env("HOME", home);
    c
}

/// `name --once` (job mode) backing up into `destination`, with the stack's storage emulator.
/// Arguments added later come after `--once`.
pub fn job(name: &str, home: &Path, destination: &str) -> Command {
    let mut c = command(name, home);
    c.env("STORAGE_EMULATOR_HOST", require_env("STORAGE_EMULATOR_HOST"))
        .env("LIFEBOAT_DESTINATION", destination)
        .arg("--once");
    c
}

/// A binary in service mode on `PORT=0`: the kernel picks a free port when the program binds,
/// and the program says which in its `serving` log line (`addr=0.0.0.0:PORT`).
#[derive(Debug)]
pub struct Service {
    /// The running process.
    pub child: tokio::process::Child,
    /// `http://127.0.0.1:PORT`.
    pub base: String,
    /// The address the service said it listens on (`127.0.0.1:PORT` off Cloud Run by default).
    pub addr: SocketAddr,
}

impl Service {
    /// Starts `command` with `PORT=0` and waits (15 s at most) for the address it serves on.
    /// Its log is read from stderr (text) and stdout (JSON, on Cloud Run), and drained in the
    /// background afterwards.
    pub async fn start(mut command: Command) -> Self {
        command.env("PORT", "0").stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = tokio::process::Command::from(command).kill_on_drop(true).spawn().expect("spawn service");
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<String>();
        let stderr = BufReader::new(child.stderr.take().expect("stderr")).lines();
        let stdout = BufReader::new(child.stdout.take().expect("stdout")).lines();
        for mut lines in [Box::new(stderr) as Box<dyn LineSource>, Box::new(stdout)] {
            let tx = tx.clone();
            tokio::spawn(async move {
                while let Some(line) = lines.next().await {
                    let _ = tx.send(line);
                }
            });
        }
        drop(tx);
        let mut seen = Vec::new();
        let addr = tokio::time::timeout(Duration::from_secs(15), async {
            while let Some(line) = rx.recv().await {
                if let Some(addr) = serving_addr(&line) {
                    return Some(addr);
                }
                seen.push(line);
            }
            None
        })
        .await
        .ok()
        .flatten()
        .unwrap_or_else(|| panic!("the service never logged its address; its log:\n{}", seen.join("\n")));
        tokio::spawn(async move { while rx.recv().await.is_some() {} });
        Self { child, base: format!("http://127.0.0.1:{}", addr.port()), addr }
    }
}

/// Lines of a child's stdout or stderr.
#[async_trait::async_trait]
trait LineSource: Send {
    async fn next(&mut self) -> Option<String>;
}

#[async_trait::async_trait]
impl<R: tokio::io::AsyncBufRead + Unpin + Send> LineSource for tokio::io::Lines<R> {
    async fn next(&mut self) -> Option<String> {
        self.next_line().await.ok().flatten()
    }
}

/// The address of a `serving` log line, in text (`addr=…`, maybe with colour codes) or JSON
/// (`"addr":"…"`) form.
fn serving_addr(line: &str) -> Option<SocketAddr> {
    if !line.contains("serving") {
        return None;
    }
    let plain = strip_ansi(line);
    let (_, rest) = plain.split_once("addr=").or_else(|| plain.split_once("\"addr\":\""))?;
    let end = rest.find(|c: char| c.is_whitespace() || c == '"').unwrap_or(rest.len());
    rest[..end].parse().ok()
}

/// `text` without ANSI colour sequences (`ESC [ … m`).
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

#[test]
fn the_serving_line_gives_the_address_in_text_and_json() {
    let coloured = "\u{1b}[2m2026-12-02T09:24:19Z\u{1b}[0m \u{1b}[32m INFO\u{1b}[0m serving \u{1b}[3maddr\u{1b}[0m\u{1b}[2m=\u{1b}[0m0.0.0.0:35605 \u{1b}[3mprogram\u{1b}[0m";
    assert_eq!(serving_addr(coloured), Some("0.0.0.0:35605".parse().expect("addr")));
    let json = r#"{"severity":"INFO","message":"serving","addr":"0.0.0.0:8080","program":"prune"}"#;
    assert_eq!(serving_addr(json), Some("0.0.0.0:8080".parse().expect("addr")));
    assert_eq!(serving_addr("INFO shutting down addr=0.0.0.0:1"), None);
}
