//! Service mode over a real socket: health, authentication, one run at a time, graceful stop.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use lifeboat_core::config::{Common, Env, Reader};
use lifeboat_core::core::events::{Outcome, RunResult};
use lifeboat_core::notify::publisher::LogPublisher;
use lifeboat_core::runtime::auth::unsigned_jwt_for;
use lifeboat_core::runtime::{App, Program, ProgramSpec, RunContext, Services, serve};
use tokio::sync::Notify;

use crate::support::local_store;

static SPEC: ProgramSpec = ProgramSpec { name: "slow", vars: &[] };

/// A program that blocks until released, so a second request can arrive mid-run.
struct Slow {
    services: Services,
    release: Arc<Notify>,
    started: Arc<Notify>,
    runs: AtomicUsize,
}

#[async_trait]
impl Program for Slow {
    async fn run(&self, ctx: RunContext) -> RunResult {
        self.runs.fetch_add(1, Ordering::SeqCst);
        self.started.notify_one();
        self.release.notified().await;
        let mut r = self.services.result(SPEC.name, ctx.started);
        r.summary = "released".into();
        r.outcome = Outcome::Success;
        r
    }
}

const TOKEN: &str = "local-test-token-0123456789";
const INVOKER: &str = "scheduler@proj.iam.gserviceaccount.com";

#[tokio::test]
async fn service_mode_authenticates_serialises_runs_and_stops_gracefully() {
    let (dir, store) = local_store();
    let env = Env::from_pairs([
        ("LIFEBOAT_DESTINATION", format!("file://{}", dir.path().display())),
        ("LIFEBOAT_API_TOKEN", TOKEN.to_owned()),
        ("LIFEBOAT_ALLOWED_INVOKERS", INVOKER.to_owned()),
    ]);
    let mut r = Reader::new(&env);
    let common = Common::read(&mut r).expect("common");
    r.finish().expect("valid config");
    let services = Services::new(env, common, store, Arc::new(LogPublisher));
    let release = Arc::new(Notify::new());
    let started = Arc::new(Notify::new());
    let program = Arc::new(Slow {
        services: services.clone(),
        release: release.clone(),
        started: started.clone(),
        runs: AtomicUsize::new(0),
    });
    let app = App::new(&SPEC, program.clone(), services);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("addr"));
    let stop = Arc::new(Notify::new());
    let server = tokio::spawn({
        let stop = stop.clone();
        async move { serve(listener, app, async move { stop.notified().await }).await }
    });
    let http = reqwest::Client::new();

    let health = http.get(format!("{base}/healthz")).send().await.expect("healthz");
    assert_eq!(health.status(), 200);
    assert_eq!(health.json::<serde_json::Value>().await.expect("json")["status"], "ok");

    let anonymous = http.post(format!("{base}/run")).send().await.expect("anonymous run");
    assert_eq!(anonymous.status(), 401);
    assert!(anonymous.text().await.expect("body").contains("credentials"));
    let stranger = http
        .post(format!("{base}/run"))
        .bearer_auth(unsigned_jwt_for("stranger@evil.example"))
        .send()
        .await
        .expect("stranger");
    assert_eq!(stranger.status(), 403);
    let wrong_token =
        http.post(format!("{base}/run")).bearer_auth("not-the-token-at-all-000").send().await.expect("wrong token");
    assert_eq!(wrong_token.status(), 401);
    assert_eq!(program.runs.load(Ordering::SeqCst), 0, "refused requests never run the program");

    // An allowed identity starts a run; a second request while it runs gets 409.
    let first = tokio::spawn({
        let (http, base) = (http.clone(), base.clone());
        async move { http.post(format!("{base}/run")).bearer_auth(unsigned_jwt_for(INVOKER)).send().await }
    });
    tokio::time::timeout(Duration::from_secs(10), started.notified()).await.expect("run started");
    let second = http.post(format!("{base}/run")).bearer_auth(TOKEN).send().await.expect("second run");
    assert_eq!(second.status(), 409);
    release.notify_one();
    let first = first.await.expect("join").expect("first run");
    assert_eq!(first.status(), 200);
    let body: serde_json::Value = first.json().await.expect("json");
    assert_eq!(body["outcome"], "success");
    assert_eq!(body["summary"], "released");
    assert_eq!(program.runs.load(Ordering::SeqCst), 1);

    let unknown = http.get(format!("{base}/nope")).send().await.expect("unknown");
    assert_eq!(unknown.status(), 404);
    let wrong_method = http.get(format!("{base}/run")).send().await.expect("GET /run");
    assert_eq!(wrong_method.status(), 405);
    let too_big = http.post(format!("{base}/run")).bearer_auth(TOKEN).body(vec![b'x'; 2 * 1024 * 1024]).send().await;
    if let Ok(resp) = too_big {
        assert_eq!(resp.status(), 413);
    }

    stop.notify_one();
    tokio::time::timeout(Duration::from_secs(10), server).await.expect("server stops").expect("join");
    assert!(http.get(format!("{base}/healthz")).send().await.is_err(), "no longer listening");
}
