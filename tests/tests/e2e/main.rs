//! End-to-end tests against real services: the local directory store, fake-gcs-server, the
//! Pub/Sub emulator, real HTTP servers, and the programs' binaries. One test binary, many modules.

mod db_backup;
mod db_binaries;
mod events;
mod health;
mod monitor;
mod prune;
mod runtime;
mod service;
mod storage_backup;
mod store_conformance;
mod support;
