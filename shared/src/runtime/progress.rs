//! Progress of long work, reported at a steady interval: a [`Progress`] holds a counter the
//! work adds to (from any thread: a dump's compressing thread, a snapshot's copy tasks) and a
//! reporter that, every `LIFEBOAT_PROGRESS_INTERVAL`, logs one line built by
//! [`crate::core::progress`] (`progress: dump of app: 1.2 GiB of ~4.0 GiB (30%), 45 MiB/s,
//! about 1m left, 27s elapsed`). The console shows the newest such line of a running local
//! execution. In a terminal, [`Progress::with_bar`] draws an `indicatif` bar on stderr instead.

use std::io::IsTerminal as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::core::progress::{Reading, Unit};

/// What the work adds to; cheap to clone and to share between threads.
#[derive(Debug, Clone, Default)]
pub struct Counter {
    done: Arc<AtomicU64>,
    /// The estimated total; 0 = unknown.
    total: Arc<AtomicU64>,
}

impl Counter {
    /// Adds `n` done.
    pub fn add(&self, n: u64) {
        self.done.fetch_add(n, Ordering::Relaxed);
    }

    /// Done so far.
    pub fn done(&self) -> u64 {
        self.done.load(Ordering::Relaxed)
    }

    /// Sets the estimated total (once it is known).
    pub fn set_total(&self, total: u64) {
        self.total.store(total, Ordering::Relaxed);
    }

    fn total(&self) -> Option<u64> {
        Some(self.total.load(Ordering::Relaxed)).filter(|t| *t > 0)
    }
}

/// Long work being reported; reporting stops when it is finished or dropped.
#[derive(Debug)]
pub struct Progress {
    counter: Counter,
    what: String,
    unit: Unit,
    started: Instant,
    reporter: Option<tokio::task::JoinHandle<()>>,
    bar: Option<indicatif::ProgressBar>,
}

impl Progress {
    /// Starts reporting `what` every `interval` as log lines (a zero interval: never).
    pub fn start(what: impl Into<String>, unit: Unit, total: Option<u64>, interval: Duration) -> Self {
        let counter = Counter::default();
        if let Some(t) = total {
            counter.set_total(t);
        }
        let what = what.into();
        let started = Instant::now();
        let reporter = (!interval.is_zero()).then(|| {
            let (counter, what) = (counter.clone(), what.clone());
            tokio::spawn(async move {
                let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
                loop {
                    tick.tick().await;
                    let line = reading(&counter, started).line(&what, unit);
                    tracing::info!("progress: {line}");
                }
            })
        });
        Self { counter, what, unit, started, reporter, bar: None }
    }

    /// Like [`Progress::start`], but in a terminal (stderr is one) an `indicatif` bar replaces
    /// the log lines; elsewhere (a Cloud Run job, a pipe, the console's child) the lines stay.
    pub fn with_bar(what: impl Into<String>, unit: Unit, total: Option<u64>, interval: Duration) -> Self {
        if !std::io::stderr().is_terminal() {
            return Self::start(what, unit, total, interval);
        }
        let mut p = Self::start(what, unit, total, Duration::ZERO);
        let bar = match total {
            Some(t) => indicatif::ProgressBar::new(t),
            None => indicatif::ProgressBar::new_spinner(),
        };
        let template = match (unit, total.is_some()) {
            (Unit::Bytes, true) => "{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec}, {eta} left",
            (Unit::Bytes, false) => "{spinner} {msg} {bytes} {bytes_per_sec}",
            (Unit::Objects, true) => "{msg} [{bar:30}] {pos}/{len} objects, {per_sec}, {eta} left",
            (Unit::Objects, false) => "{spinner} {msg} {pos} objects {per_sec}",
        };
        if let Ok(style) = indicatif::ProgressStyle::with_template(template) {
            bar.set_style(style.progress_chars("=> "));
        }
        bar.set_message(p.what.clone());
        let (counter, shown) = (p.counter.clone(), bar.clone());
        p.reporter = Some(tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(200));
            loop {
                tick.tick().await;
                shown.set_position(counter.done());
            }
        }));
        p.bar = Some(bar);
        p
    }

    /// The counter the work adds to.
    pub fn counter(&self) -> &Counter {
        &self.counter
    }

    /// Stops reporting and logs the last line.
    pub fn finish(mut self) {
        self.stop();
        if let Some(bar) = self.bar.take() {
            bar.set_position(self.counter.done());
            bar.finish();
        }
        tracing::info!("progress: {} (done)", reading(&self.counter, self.started).line(&self.what, self.unit));
    }

    fn stop(&mut self) {
        if let Some(r) = self.reporter.take() {
            r.abort();
        }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.stop();
        if let Some(bar) = self.bar.take() {
            bar.abandon();
        }
    }
}

fn reading(counter: &Counter, started: Instant) -> Reading {
    Reading { done: counter.done(), total: counter.total(), elapsed: started.elapsed() }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_counter_is_shared_and_reporting_stops_when_finished() {
        let p = Progress::start("dump of app", Unit::Bytes, Some(4096), Duration::from_millis(20));
        let counter = p.counter().clone();
        let worker = std::thread::spawn(move || counter.add(1024));
        worker.join().expect("thread");
        p.counter().add(1024);
        tokio::time::sleep(Duration::from_millis(60)).await;
        let r = reading(p.counter(), p.started);
        assert_eq!((r.done, r.total), (2048, Some(4096)));
        assert!(p.reporter.as_ref().is_some_and(|h| !h.is_finished()), "reporting while running");
        p.finish();
        // A zero interval reports nothing and spawns nothing.
        let quiet = Progress::start("x", Unit::Objects, None, Duration::ZERO);
        assert!(quiet.reporter.is_none());
    }
}
