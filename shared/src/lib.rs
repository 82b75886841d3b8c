//! lifeboat-core: the library every lifeboat program stands on.
//!
//! The folders are the layers; imports point one way, down:
//!
//! ```text
//! programs/   one module per binary: its settings, its command line, wiring; nothing else
//!    │        imports a program but its `functions/<name>` binary
//!    ▼
//! db/ bucket/ inventory report/     the domain: database backups and restores, bucket
//!    │                              snapshots and restores, what the store holds, the status page
//!    ▼
//! store/ postgres/ notify/ runtime/ the edges, one folder each: the object store (GCS, local
//! jobs/                             directory), PostgreSQL and its tools, Pub/Sub and Slack, the
//!    │                              job/HTTP runtime, job executions (Cloud Run Admin API or
//!    │                              child processes)
//!    ▼
//! config/     every setting declared once; reading the environment, all problems at once
//!    ▼
//! core/       pure: naming, manifests, series, freshness, retention plan, incidents, alert
//!             text, event schema, units, clock, secrets. No I/O.
//! ```
//!
//! The error policy, written once, opens [`error`].

pub mod bucket;
pub mod config;
pub mod core;
pub mod db;
pub mod error;
pub mod inventory;
pub mod jobs;
pub mod notify;
pub mod postgres;
pub mod programs;
pub mod report;
pub mod runtime;
pub mod store;
