//! End-to-end tests against real services: the local directory store, fake-gcs-server, the
//! Pub/Sub emulator, real HTTP servers, and the programs' binaries. One test binary, many modules.

mod binaries;
mod events;
mod service;
mod snapshots;
mod store_conformance;
mod support;
