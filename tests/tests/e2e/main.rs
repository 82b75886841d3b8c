//! End-to-end tests against real services: the local directory store, fake-gcs-server, the
//! Pub/Sub emulator, real HTTP servers, and the programs' binaries. One test binary, many modules.

mod binaries;
mod db;
mod db_binaries;
mod db_support;
mod events;
mod fake_backups;
mod health;
mod monitor;
mod prune;
mod service;
mod slack;
mod snapshots;
mod store_conformance;
mod support;
