//! Network limits (`LIFEBOAT_CONNECT_TIMEOUT`, `LIFEBOAT_STALL_TIMEOUT`,
//! `LIFEBOAT_REQUEST_ATTEMPTS`): a frozen storage endpoint — a real TCP server that accepts and
//! then never answers, or that sends an answer's headers and then no more bytes — makes the real
//! binaries fail in bounded time, with a clear error and nothing written.

use std::io::{Read as _, Write as _};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::support::binaries::job;
use crate::support::postgres::TestDb;
use crate::support::unique;

/// How a frozen endpoint misbehaves.
#[derive(Debug, Clone, Copy)]
enum Freeze {
    /// Accepts, reads the request, never answers.
    Silent,
    /// Reads the request head, answers `200` headers announcing a body, then sends one byte of
    /// it and nothing more.
    HeadersThenStall,
}

/// A real TCP server on 127.0.0.1 that freezes every connection; it records the request heads it
/// saw and keeps every connection open until it is dropped (the test's end).
struct FrozenEndpoint {
    port: u16,
    heads: Arc<Mutex<Vec<String>>>,
}

impl FrozenEndpoint {
    fn start(freeze: Freeze) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let heads = Arc::new(Mutex::new(Vec::new()));
        let seen = Arc::clone(&heads);
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { return };
                let seen = Arc::clone(&seen);
                std::thread::spawn(move || serve(stream, freeze, &seen));
            }
        });
        Self { port, heads }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn heads(&self) -> Vec<String> {
        self.heads.lock().expect("lock").clone()
    }
}

fn serve(mut stream: TcpStream, freeze: Freeze, seen: &Mutex<Vec<String>>) {
    let mut head = Vec::new();
    let mut buf = [0u8; 8192];
    let mut answered = false;
    loop {
        let n = match stream.read(&mut buf) {
            Ok(0) | Err(_) => return, // the client gave up: good
            Ok(n) => n,
        };
        if answered {
            continue; // swallow whatever else comes, never answer again
        }
        head.extend_from_slice(&buf[..n]);
        if let Some(end) = head.windows(4).position(|w| w == b"\r\n\r\n") {
            let text = String::from_utf8_lossy(&head[..end]).lines().next().unwrap_or_default().to_owned();
            seen.lock().expect("lock").push(text);
            answered = true;
            if let Freeze::HeadersThenStall = freeze {
                let _ = stream
                    .write_all(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 4096\r\n\r\n{");
                let _ = stream.flush();
            }
        }
    }
}

/// The limits the runs get: small, so the bound is small.
const LIMITS: [(&str, &str); 3] =
    [("LIFEBOAT_CONNECT_TIMEOUT", "1s"), ("LIFEBOAT_STALL_TIMEOUT", "1s"), ("LIFEBOAT_REQUEST_ATTEMPTS", "2")];

/// Runs `command` to its end, killing it (and failing the test) when it outlives `limit`.
fn run_bounded(mut command: std::process::Command, limit: Duration) -> (std::process::ExitStatus, String, Duration) {
    let log = tempfile::NamedTempFile::new().expect("log file");
    command.stdout(std::process::Stdio::null()).stderr(log.reopen().expect("log"));
    let started = Instant::now();
    let mut child = command.spawn().expect("spawn");
    loop {
        if let Some(status) = child.try_wait().expect("wait") {
            let stderr = std::fs::read_to_string(log.path()).unwrap_or_default();
            return (status, stderr, started.elapsed());
        }
        if started.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            let stderr = std::fs::read_to_string(log.path()).unwrap_or_default();
            panic!("still running after {limit:?} against a frozen endpoint; its log:\n{stderr}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Every request may take 2 attempts × (1 s connect + 1 s stall) + a backoff wait under 1 s; a
/// run makes a handful of such requests in sequence before it gives up (store checks, the
/// failure paths). 40 s is far above that and far below "never" (or the 100 s of before).
const BOUND: Duration = Duration::from_secs(40);

fn assert_failed_cleanly(
    program: &str,
    freeze: Freeze,
    endpoint: &FrozenEndpoint,
    out: (std::process::ExitStatus, String, Duration),
) {
    let (status, stderr, elapsed) = out;
    assert_eq!(status.code(), Some(1), "{program} against a {freeze:?} endpoint must fail (exit 1): {stderr}");
    assert!(elapsed < BOUND, "{program} took {elapsed:?}");
    assert!(stderr.contains("timed out"), "{program}: the error says the request timed out: {stderr}");
    let heads = endpoint.heads();
    assert!(!heads.is_empty(), "{program} never reached the endpoint");
    assert!(
        !heads.iter().any(|h| h.contains("manifest") || h.contains("header")),
        "{program} tried to write a completion object: {heads:?}"
    );
}

#[test]
fn storage_backup_fails_in_bounded_time_against_a_frozen_endpoint() {
    for freeze in [Freeze::Silent, Freeze::HeadersThenStall] {
        let endpoint = FrozenEndpoint::start(freeze);
        let home = tempfile::tempdir().expect("home");
        let mut c = job("storage-backup", home.path(), &format!("gs://{}", unique("lb-frozen-backups")));
        c.env("STORAGE_EMULATOR_HOST", endpoint.url())
            .env("SOURCE_BUCKETS", format!("gs://{}", unique("lb-frozen-src")))
            .envs(LIMITS);
        let out = run_bounded(c, BOUND * 2);
        assert_failed_cleanly("storage-backup", freeze, &endpoint, out);
    }
}

#[test]
fn db_backup_fails_in_bounded_time_against_a_frozen_endpoint() {
    let db = TestDb::create("lb-frozen");
    db.sql("CREATE TABLE t (id int PRIMARY KEY); INSERT INTO t SELECT generate_series(1, 100);");
    for freeze in [Freeze::Silent, Freeze::HeadersThenStall] {
        let endpoint = FrozenEndpoint::start(freeze);
        let home = tempfile::tempdir().expect("home");
        let mut c = job("db-backup", home.path(), &format!("gs://{}", unique("lb-frozen-backups")));
        c.envs(db.server.vars())
            .env("STORAGE_EMULATOR_HOST", endpoint.url())
            .env("BACKUP_DATABASES", &db.name)
            .envs(LIMITS);
        let out = run_bounded(c, BOUND * 2);
        assert_failed_cleanly("db-backup", freeze, &endpoint, out);
    }
}
