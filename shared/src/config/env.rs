//! The environment a program reads: a snapshot taken once at start (or a map in tests), so
//! reading configuration is pure and repeatable.

use std::collections::BTreeMap;

/// A snapshot of the environment (the process's, or a map in tests).
#[derive(Debug, Clone, Default)]
pub struct Env(BTreeMap<String, String>);

impl Env {
    /// The current process environment.
    pub fn from_process() -> Self {
        Self(std::env::vars_os().filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?))).collect())
    }

    /// An environment made of the given pairs (tests, embedded defaults).
    pub fn from_pairs<K: Into<String>, V: Into<String>>(pairs: impl IntoIterator<Item = (K, V)>) -> Self {
        Self(pairs.into_iter().map(|(k, v)| (k.into(), v.into())).collect())
    }

    /// The raw value; an empty string counts as unset.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0.get(name).map(String::as_str).filter(|v| !v.trim().is_empty())
    }

    /// Sets a value (builder style, for tests).
    #[must_use]
    pub fn with(mut self, name: &str, value: &str) -> Self {
        self.0.insert(name.to_owned(), value.to_owned());
        self
    }

    /// True when running on Cloud Run (a service sets `K_SERVICE`, a job `CLOUD_RUN_JOB`).
    pub fn on_cloud_run(&self) -> bool {
        self.get("K_SERVICE").is_some() || self.get("CLOUD_RUN_JOB").is_some()
    }
}
