//! End-to-end tests against real services: the local directory store, fake-gcs-server, the
//! Pub/Sub emulator, PostgreSQL, real HTTP servers, and the programs' binaries. One test binary;
//! one module per program, a few that every program shares, and `support` for the fixtures.

// The programs.
mod console;
mod db_backup;
mod drill;
mod health;
mod monitor;
mod prune;
mod restore;
mod storage_backup;

// What they share: the runtime (CLI, job and service mode, logs), result events, the stores.
mod events;
mod runtime;
mod store_conformance;

mod support;
