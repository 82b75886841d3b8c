//! lifeboat-core: the library every lifeboat program stands on.
//!
//! Pure core (no network, no disk): [`config`], [`catalog`], [`events`] (schema), and the
//! planning modules. Edges, each behind a small trait and tested against real services:
//! [`store`] (GCS, local directory), [`events`] publishers (Pub/Sub, log), the HTTP runtime.

pub mod alerts;
pub mod auth;
pub mod catalog;
pub mod clock;
pub mod config;
pub mod dump;
pub mod events;
pub mod freshness;
pub mod http;
pub mod inventory;
pub mod logging;
pub mod manifest;
pub mod monitor_state;
pub mod notify;
pub mod pg;
pub mod programs;
pub mod push;
pub mod retention;
pub mod runtime;
pub mod secret;
pub mod snapshot;
pub mod snapshot_format;
pub mod status_page;
pub mod store;
pub mod units;
