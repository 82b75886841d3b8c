//! `storage-backup`: see `lifeboat_core::programs::storage_backup`.

use std::process::ExitCode;

use lifeboat_core::programs::storage_backup;

fn main() -> ExitCode {
    lifeboat_core::runtime::main(&storage_backup::SPEC, storage_backup::read, storage_backup::start)
}
